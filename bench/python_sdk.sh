#!/usr/bin/env bash
# The Python SDK against the C++ SDK, same agents, same run: two local braidd agents (two soft
# NICs each, plaintext, 127.0.0.0/8 only); the clients reach node-a over its Unix socket (the
# rings) or over TCP (PATH=grpc). Each side runs `rounds` times, alternating; medians printed.
# Usage: python_sdk.sh BUILD_DIR [ring|grpc] [rounds]
set -euo pipefail
BUILD=${1:-build}
PATH_KIND=${2:-ring}
ROUNDS=${3:-3}
BRAIDD="$BUILD/server/braidd"
# shellcheck source=bench/local_agents.sh
source "$(dirname "${BASH_SOURCE[0]}")/local_agents.sh" py-bench
start_agent node-a 127.0.31.1 127.0.31.2 7661 9501 18660
start_agent node-b 127.0.41.1 127.0.41.2 7662 9502 18660
wait_for_agents node-a node-b
A="unix:$DIR/node-a.sock"
[ "$PATH_KIND" = grpc ] && A=127.0.0.1:7661
B=127.0.0.1:7662

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
: > "$DIR/cpp.txt"
: > "$DIR/py.txt"
for _ in $(seq "$ROUNDS"); do
  "$BUILD/bench/braid_sdk_bench" "$A" "$B" >> "$DIR/cpp.txt"
  PYTHONPATH="$BUILD/python" /usr/bin/python3 "$(dirname "${BASH_SOURCE[0]}")/python_sdk_bench.py" \
    "$A" "$B" >> "$DIR/py.txt"
done
pick() { awk -v k="$2" '$2 == k {print $3}' "$1" | median; }
cw=$(pick "$DIR/cpp.txt" 1MiB_write_gbs); pw=$(pick "$DIR/py.txt" 1MiB_write_gbs)
cs=$(pick "$DIR/cpp.txt" 4KiB_batch_mops); ps=$(pick "$DIR/py.txt" 4KiB_batch_mops)
echo "Python SDK vs C++ SDK, same agents, client to node-a: $PATH_KIND (median of $ROUNDS rounds each)"
printf '%-26s %10s %10s %8s\n' "" "C++" "Python" "Py/C++"
printf '%-26s %10s %10s %8s\n' "1 MiB WRITE, GB/s" "$cw" "$pw" "$(awk -v p="$pw" -v c="$cw" 'BEGIN{printf "%.2f", p/c}')"
printf '%-26s %10s %10s %8s\n' "4 KiB batch submit, Mops/s" "$cs" "$ps" "$(awk -v p="$ps" -v c="$cs" 'BEGIN{printf "%.2f", p/c}')"
