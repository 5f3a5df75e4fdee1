# Sourced by the benchmarks that run two local braidd agents (two soft NICs each, plaintext,
# addresses in 127.0.0.0/8 only): makes the work directory DIR (removed on exit, with the agents
# stopped: scripts/background.sh) and defines start_agent and wait_for_agents.
# Needs BRAIDD (the binary) and a name prefix for the directory as $1.
DIR=$(mktemp -d "/dev/shm/braid-$1-XXXXXX")
CLEANUP_DIR=$DIR
# shellcheck source=scripts/background.sh
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/background.sh"

# start_agent NAME NIC0_IP NIC1_IP GRPC_PORT METRICS_PORT SOFT_PORT: serves gRPC on 127.0.0.1
# and on $DIR/NAME.sock (its local sessions on $DIR/NAME.sock.session).
start_agent() {
  mkdir -p "$DIR/$1"
  "$BRAIDD" --agent-id "$1" --soft-nic "soft0=$2" --soft-nic "soft1=$3" \
    --grpc-tcp "127.0.0.1:$4" --grpc-unix "$DIR/$1.sock" --metrics "127.0.0.1:$5" \
    --soft-port "$6" --region-dir "$DIR/$1" --log-level warn \
    --plaintext --anonymous-role admin >/dev/null 2>&1 &
  pids+=($!)
}

# wait_for_agents NAME...: until each one's session socket is there (10 s at most).
wait_for_agents() {
  for name in "$@"; do
    for _ in $(seq 100); do [ -S "$DIR/$name.sock.session" ] && break; sleep 0.1; done
  done
}
