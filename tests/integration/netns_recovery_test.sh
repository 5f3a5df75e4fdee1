#!/usr/bin/env bash
# Link faults with recovery: two network namespaces joined by four veth "NICs" (each
# shaped to the same rate with tc) plus a control link; one braidd per namespace with a soft NIC
# on each veth end. A stream of 1 MiB writes over an 8-QP VQP; one veth goes down mid-way and
# comes back. The driver checks: no failed transfer, data identical, dead QPs appear and are all
# recovered within twice the backoff cap after the link returns; it prints the throughput before,
# while down and after. Then two of four links down and all four; an operator drain under load;
# write-with-imm messages in flight when every link goes down (both schemes); a link flapping
# every 200 ms; the peer agent SIGKILLed and restarted; ports followed with no traffic (a link
# down and up, the peer started with every data link down). Removes everything it created. Exit 77 (skip) when not
# root.
set -euo pipefail
BRAIDD=$1
DRIVER=$2
RATE=${BRAID_NETNS_RATE:-1gbit}
if [ "$(id -u)" -ne 0 ] || ! ip netns add "braid-probe-$$" 2>/dev/null; then
  echo "SKIP: needs root and ip netns"
  exit 77
fi
ip netns del "braid-probe-$$"
NET=77
RATES=("$RATE" "$RATE" "$RATE" "$RATE")
source "$(dirname "$0")/netns_agents.sh"
echo "links: 4 x $RATE (tc tbf), control link separate; link 1 down at 2 s, up at 5 s"
ip netns exec "$A" "$DRIVER" --a 10.77.9.1:7600 --b 10.77.9.2:7600 --total-gib 4 --qps 8 \
  --down-at 2 --up-at 5 --backoff-cap-s 2 \
  --down-cmd "$DIR/link.sh 1 down" --up-cmd "$DIR/link.sh 1 up"
# Two links down, then all four, then all back (a fresh VQP, same agents).
echo "links 1,2 down at 2 s, 0,3 at 4 s, all up at 7 s"
ip netns exec "$A" "$DRIVER" --a 10.77.9.1:7600 --b 10.77.9.2:7600 --qps 8 --scenario all-down \
  --backoff-cap-s 2 --link-cmd "$DIR/link.sh"
# The agent's metrics agree: recoveries counted, no QP dead now.
metrics=$(ip netns exec "$A" bash -c 'exec 3<>/dev/tcp/10.77.9.1/9464;
  printf "GET /metrics HTTP/1.0\r\n\r\n" >&3; cat <&3')
echo "$metrics" | grep -E '^braid_(recoveries_total|dead_qps|qp_deaths_total|failovers_total)'
ok=$(echo "$metrics" | awk '/^braid_recoveries_total\{result="success"\}/ {s=$2}
  /^braid_dead_qps\{/ {d+=$2} END {print (s >= 1 && d == 0) ? "yes" : "no"}')
[ "$ok" = yes ] || { echo "FAIL: metrics do not show the recovery"; exit 1; }
# Operator drain of soft1 under load, then undrain (a fresh VQP).
echo "drain soft1 under load at 1 s, undrain at 3 s"
ip netns exec "$A" "$DRIVER" --a 10.77.9.1:7600 --b 10.77.9.2:7600 --qps 8 --scenario drain
# Every link down with write-with-imm messages in flight, both schemes (fresh VQPs).
for scheme in spray dqplb; do
  echo "all four links down with 8 write-with-imm messages in flight ($scheme), then up"
  ip netns exec "$A" "$DRIVER" --a 10.77.9.1:7600 --b 10.77.9.2:7600 --scenario imm-outage \
    --scheme "$scheme" --link-cmd "$DIR/link.sh"
done
# One link flapping every 200 ms under load.
echo "link 1 down/up every 200 ms for ${BRAID_FLAP_SECONDS:-30} s under 1 MiB writes"
ip netns exec "$A" "$DRIVER" --a 10.77.9.1:7600 --b 10.77.9.2:7600 --qps 8 --scenario flap \
  --flap-seconds "${BRAID_FLAP_SECONDS:-30}" --link-cmd "$DIR/link.sh"
# The peer agent SIGKILLed mid-stream, restarted, reconnected through the SDK; our old VQP, still
# recovering, must not touch the restarted peer's new VQP.
echo "peer agent SIGKILLed at 1 s, then restarted"
ip netns exec "$A" "$DRIVER" --a 10.77.9.1:7600 --b 10.77.9.2:7600 --qps 8 --scenario peer-kill \
  --kill-cmd "$DIR/agent.sh kill 2" --start-cmd "$DIR/agent.sh start 2"
# Ports followed with no traffic: link 1 down and up; the peer restarted with every data link down.
echo "link 1 down and up with no traffic; the peer restarted with every data link down, then up"
ip netns exec "$A" "$DRIVER" --a 10.77.9.1:7600 --b 10.77.9.2:7600 --scenario port \
  --link-cmd "$DIR/link.sh" --kill-cmd "$DIR/agent.sh kill 2" --start-cmd "$DIR/agent.sh start 2"
echo PASS
