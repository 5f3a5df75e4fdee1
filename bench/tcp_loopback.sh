#!/usr/bin/env bash
# The soft provider over TCP on loopback next to iperf3 from the same run (issue 5's benchmark):
# iperf3 one stream with 1 MiB writes, then braid_tcp_bench (two processes, soft NICs 127.0.0.1
# and 127.0.0.2) with each figure's ratio to iperf3.
set -euo pipefail
BIN=${1:-build/bench/braid_tcp_bench}
PORT=${IPERF_PORT:-5299}
iperf3 -s -p "$PORT" -1 >/dev/null 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
sleep 0.5
json=$(timeout 30 iperf3 -c 127.0.0.1 -p "$PORT" -l 1M -t 3 -J)
wait "$server" 2>/dev/null || true
# bits_per_second of "sum_received", in GB/s (10^9 bytes).
gbps=$(printf '%s\n' "$json" | awk '/"sum_received"/ {f=1} f && /"bits_per_second"/ {gsub(/[",]/, "", $2); printf "%.3f", $2 / 8e9; exit}')
"$BIN" "$gbps"
