#!/usr/bin/env bash
# The Braid demo (`make demo`): two local braidd agents with two soft NICs each, an 8-QP virtual
# QP between them, 1 GiB moved and verified, then how the bytes spread over QPs and NICs and where
# the metrics are. The agents serve mutual TLS with certificates from a CA the demo makes for
# itself (openssl), and know the demo's client by its certificate. Stops the agents it started,
# whatever happens.
set -euo pipefail
BUILD=${1:-build}
BRAIDD="$BUILD/server/braidd"
CTL="$BUILD/client_sdk/braidctl"
DIR=$(mktemp -d /dev/shm/braid-demo-XXXXXX)
CLEANUP_DIR=$DIR
# shellcheck source=scripts/background.sh
source "$(dirname "${BASH_SOURCE[0]}")/background.sh"

PKI="$DIR/pki"
mkdir -p "$PKI"
issue() {  # name san: a P-256 key and a certificate from the demo CA
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$PKI/$1.key" \
    -out "$PKI/$1.csr" -subj "/CN=$1" 2>/dev/null
  printf 'subjectAltName=%s\n' "$2" > "$PKI/$1.ext"
  openssl x509 -req -in "$PKI/$1.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
    -days 1 -extfile "$PKI/$1.ext" -out "$PKI/$1.crt" 2>/dev/null
}
echo "== a CA for the demo, certificates for two agents and one client"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$PKI/ca.key" \
  -out "$PKI/ca.crt" -subj "/CN=braid demo CA" -days 1 2>/dev/null
issue node-a "URI:spiffe://braid-demo/agent/node-a,IP:127.0.0.1"
issue node-b "URI:spiffe://braid-demo/agent/node-b,IP:127.0.0.1"
issue demo-client "URI:spiffe://braid-demo/client"

start_agent() {  # name nic0 nic1 grpc_port metrics_port
  mkdir -p "$DIR/$1"
  "$BRAIDD" --agent-id "$1" --soft-nic "soft0=$2" --soft-nic "soft1=$3" \
    --grpc-tcp "127.0.0.1:$4" --metrics "127.0.0.1:$5" --soft-port 18600 \
    --region-dir "$DIR/$1" --log-level warn \
    --tls-cert "$PKI/$1.crt" --tls-key "$PKI/$1.key" --tls-ca "$PKI/ca.crt" \
    --identity spiffe://braid-demo/client=operator \
    --identity spiffe://braid-demo/agent/node-a=peer --identity spiffe://braid-demo/agent/node-b=peer &
  pids+=($!)
}
CTL_TLS=(--tls-ca "$PKI/ca.crt" --tls-cert "$PKI/demo-client.crt" --tls-key "$PKI/demo-client.key")
ctl() { "$CTL" "${CTL_TLS[@]}" "$@"; }

echo "== starting two agents (soft NICs 127.0.10.1-2 and 127.0.20.1-2)"
start_agent node-a 127.0.10.1 127.0.10.2 7601 9465
start_agent node-b 127.0.20.1 127.0.20.2 7602 9466
ctl --agent 127.0.0.1:7601 info
ctl --agent 127.0.0.1:7602 info
ctl --agent 127.0.0.1:7601 devices
echo "without a client certificate the agent does not answer:"
if "$CTL" --tls-ca "$PKI/ca.crt" --agent 127.0.0.1:7601 info 2>&1; then exit 1; fi

echo
echo "== 1 GiB from node-a to node-b: 8-QP SPRAY virtual QP, 1 MiB writes, verified"
ctl --agent 127.0.0.1:7601 bench --peer 127.0.0.1:7602 --qps 8 --size 1M --total 1G --verify

echo
echo "== metrics: http://127.0.0.1:9465/metrics (node-a), http://127.0.0.1:9466/metrics (node-b)"
exec 3<>/dev/tcp/127.0.0.1/9465
printf 'GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3
grep -E '^braid_(device_bytes_total|virtual_wr_completions_total|physical_qps)\{' <&3 |
  grep -v ' 0$' || true
exec 3<&-
echo
echo "== stopping the agents"
