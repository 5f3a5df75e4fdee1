#!/usr/bin/env bash
# The soft TCP link next to libfabric's tcp provider, same run (issue 17): one QP (one libfabric
# MSG endpoint) between two processes on loopback, 16 operations in flight, 1 MiB WRITE and READ
# bandwidth and the 4 KiB WRITE rate, at two working sets: 64 MiB of both buffers (the operations
# walk through it, so the data is not in cache) and 1 MiB (it stays in cache).
#
# One sample of each swings by +-10% on a shared 2-core VM, so each working set gets ROUNDS (5)
# rounds of libfabric then Braid, ROUND_SECONDS (2) per figure; every round is printed, then the
# medians and Braid's ratio to libfabric's median.
set -euo pipefail
# Usage: libfabric_compare.sh [braid_tcp_bench [braid_libfabric_rma_bench]]
BRAID=${1:-build/bench/braid_tcp_bench}
FABRIC=${2:-build/bench/braid_libfabric_rma_bench}
ROUNDS=${ROUNDS:-5}
ROUND_SECONDS=${ROUND_SECONDS:-2}

median() { sort -g | awk '{v[NR] = $1} END {if (NR % 2) printf "%.3f", v[(NR + 1) / 2]; else printf "%.3f", (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
figures() {  # the three figures of one run, on one line
  awk '/^1 MiB RMA WRITE/ {w = $(NF - 1)} /^1 MiB RMA READ/ {r = $(NF - 1)}
       /^4 KiB RMA WRITE rate/ {s = $(NF - 1)} END {print w, r, s}'
}

rows=$(mktemp)
trap 'rm -f "$rows"' EXIT
for ws in $((64 << 20)) $((1 << 20)); do
  : >"$rows"
  echo "working set $((ws >> 20)) MiB, 16 in flight, $ROUND_SECONDS s per figure"
  printf '%-6s %-10s %12s %12s %14s\n' round stack "1M WRITE" "1M READ" "4K WRITE"
  printf '%-6s %-10s %12s %12s %14s\n' "" "" "GB/s" "GB/s" "Mops/s"
  for ((r = 1; r <= ROUNDS; ++r)); do
    f=$("$FABRIC" --seconds="$ROUND_SECONDS" --working-set="$ws" | figures)
    b=$("$BRAID" --rma-compare --seconds="$ROUND_SECONDS" --working-set="$ws" | figures)
    read -r fw fr fs <<<"$f"
    read -r bw br bs <<<"$b"
    printf '%-6s %-10s %12s %12s %14s\n' "$r" libfabric "$fw" "$fr" "$fs"
    printf '%-6s %-10s %12s %12s %14s\n' "" braid "$bw" "$br" "$bs"
    echo "$fw $fr $fs $bw $br $bs" >>"$rows"
  done
  med() { awk -v c="$1" '{print $c}' "$rows" | median; }
  fw=$(med 1) fr=$(med 2) fs=$(med 3) bw=$(med 4) br=$(med 5) bs=$(med 6)
  ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
  printf '%-17s %12s %12s %14s\n' "median libfabric" "$fw" "$fr" "$fs"
  printf '%-17s %12s %12s %14s\n' "median braid" "$bw" "$br" "$bs"
  printf '%-17s %12s %12s %14s   (goal: >= 1.00 each)\n' "braid/libfabric" \
    "$(ratio "$bw" "$fw")" "$(ratio "$br" "$fr")" "$(ratio "$bs" "$fs")"
  echo
done
