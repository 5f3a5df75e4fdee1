#!/usr/bin/env bash
# braidctl copy against braidctl bench, same agents, same run: two local braidd agents (two soft
# NICs each, plaintext, 127.0.0.0/8 only); the client reaches node-a over its Unix socket, so the
# SDK takes the local session's rings (or over TCP with PATH=grpc: the Transfer stream). A 2 GiB
# file in /dev/shm is copied (sha256 compared), next to `bench` moving the same amount.
# Usage: braidctl_copy.sh BUILD_DIR [ring|grpc] [rounds]
set -euo pipefail
BUILD=${1:-build}
PATH_KIND=${2:-ring}
ROUNDS=${3:-3}
BRAIDD="$BUILD/server/braidd"
CTL="$BUILD/client_sdk/braidctl"
# shellcheck source=bench/local_agents.sh
source "$(dirname "${BASH_SOURCE[0]}")/local_agents.sh" copy-bench
start_agent node-a 127.0.30.1 127.0.30.2 7651 9491 18650
start_agent node-b 127.0.40.1 127.0.40.2 7652 9492 18650
A="unix:$DIR/node-a.sock"
[ "$PATH_KIND" = grpc ] && A=127.0.0.1:7651
for _ in $(seq 100); do "$CTL" --agent "$A" health >/dev/null 2>&1 && break; sleep 0.1; done
for _ in $(seq 100); do "$CTL" --agent 127.0.0.1:7652 health >/dev/null 2>&1 && break; sleep 0.1; done

head -c $((2 << 30)) /dev/urandom > "$DIR/src.bin"
echo "round  bench GB/s  copy GB/s  copy/bench  sha256  (2 GiB; client to node-a: $PATH_KIND;"
echo "                                                  round 1 writes a new file, later rounds overwrite it)"
ratios=()
for r in $(seq "$ROUNDS"); do
  bench=$("$CTL" --json --agent "$A" bench --peer 127.0.0.1:7652 --size 4M --total 2G)
  copy=$("$CTL" --json --agent "$A" copy --peer 127.0.0.1:7652 "$DIR/src.bin" "$DIR/dst.bin")
  b=$(sed -E 's/.*"gb_per_s": ([0-9.]+).*/\1/' <<<"$bench")
  bytes=$(sed -E 's/.*"bytes": ([0-9]+).*/\1/' <<<"$copy")
  secs=$(sed -E 's/.*"seconds": ([0-9.]+).*/\1/' <<<"$copy")
  same=$(sed -E 's/.*"identical": (true|false).*/\1/' <<<"$copy")
  c=$(awk -v b="$bytes" -v s="$secs" 'BEGIN { printf "%.3f", b / s / 1e9 }')
  ratio=$(awk -v c="$c" -v b="$b" 'BEGIN { printf "%.2f", c / b }')
  ratios+=("$ratio")
  sums=$(sha256sum "$DIR/src.bin" "$DIR/dst.bin" | awk '{print $1}' | uniq | wc -l)
  printf '%-6s %10s %10s %11s  %s\n' "$r" "$b" "$c" "$ratio" \
    "$([ "$same" = true ] && [ "$sums" = 1 ] && echo equal || echo DIFFERENT)"
  [ "$same" = true ] && [ "$sums" = 1 ] || exit 1
done
printf 'median copy/bench: %s\n' "$(printf '%s\n' "${ratios[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')"
