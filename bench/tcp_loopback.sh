#!/usr/bin/env bash
# The soft provider over TCP on loopback next to iperf3 from the same run (issue 5's benchmark).
#
# The 1 MiB WRITE ratio is the figure that matters, and one 3-second sample of each side swings by
# +-10% on a shared 2-core VM. So the script alternates: ROUNDS rounds (5) of iperf3 (one stream,
# 1 MiB writes, ROUND_SECONDS) followed at once by braid_tcp_bench --write-only (1 and 4 soft QPs,
# two processes, soft NICs 127.0.0.1 and 127.0.0.2, ROUND_SECONDS each). It prints every round,
# then the median of each column and the ratios of the medians; the other figures (READ, 4 KiB,
# latency) come from one run after, with their ratios to the iperf3 median.
set -euo pipefail
# Usage: tcp_loopback.sh [braid_tcp_bench [its extra flags, e.g. --qp-window=0]]
BIN=${1:-build/bench/braid_tcp_bench}
shift || true
PORT=${IPERF_PORT:-5299}
ROUNDS=${ROUNDS:-5}
ROUND_SECONDS=${ROUND_SECONDS:-2}

iperf_once() {
  iperf3 -s -p "$PORT" -1 >/dev/null 2>&1 &
  local server=$!
  sleep 0.3
  local json
  json=$(timeout 30 iperf3 -c 127.0.0.1 -p "$PORT" -l 1M -t "$ROUND_SECONDS" -J)
  wait "$server" 2>/dev/null || true
  # bits_per_second of "sum_received", in GB/s (10^9 bytes).
  printf '%s\n' "$json" | awk '/"sum_received"/ {f=1} f && /"bits_per_second"/ {gsub(/[",]/, "", $2); printf "%.3f", $2 / 8e9; exit}'
}

median() { sort -g | awk '{v[NR] = $1} END {if (NR % 2) printf "%.3f", v[(NR + 1) / 2]; else printf "%.3f", (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }

rows=$(mktemp)
trap 'rm -f "$rows"' EXIT
printf '%-6s %10s %14s %14s   (GB/s; each round: iperf3, then braid, %s s each)\n' \
  round iperf3 "1 QP WRITE" "4 QP WRITE" "$ROUND_SECONDS"
for ((r = 1; r <= ROUNDS; ++r)); do
  ip=$(iperf_once)
  out=$("$BIN" --write-only --seconds="$ROUND_SECONDS" "$@")
  w1=$(printf '%s\n' "$out" | awk '/^1 soft QP, 1 MiB RDMA WRITE/ {print $(NF - 1)}')
  w4=$(printf '%s\n' "$out" | awk '/^4 soft QPs, 1 MiB RDMA WRITE/ {print $(NF - 1)}')
  printf '%-6s %10s %14s %14s\n' "$r" "$ip" "$w1" "$w4"
  echo "$ip $w1 $w4" >>"$rows"
done
ip=$(awk '{print $1}' "$rows" | median)
w1=$(awk '{print $2}' "$rows" | median)
w4=$(awk '{print $3}' "$rows" | median)
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
echo "medians of $ROUNDS rounds:"
printf '%-46s %10.3f %-6s\n' "iperf3, one stream, 1 MiB writes" "$ip" "GB/s"
printf '%-46s %10.3f %-6s  ratio to iperf3 %s\n' "1 soft QP, 1 MiB RDMA WRITE, depth 16" "$w1" "GB/s" "$(ratio "$w1" "$ip")"
printf '%-46s %10.3f %-6s  ratio to iperf3 %s\n' "4 soft QPs, 1 MiB RDMA WRITE, depth 16 each" "$w4" "GB/s" "$(ratio "$w4" "$ip")"
echo "one run, ratios to the iperf3 median:"
"$BIN" --skip-write "$@" "$ip"
