#!/usr/bin/env bash
# Instructions per operation of the virtual layer, counted by callgrind (repeatable, unlike time).
# Collects only inside the benchmark's timed bodies and divides by the calls it saw:
#   post:      instructions in BraidBenchPostBatch  / VirtualQp::PostSend calls
#   complete:  instructions in BraidBenchPollAll    / VirtualQp::OnCompletion calls (physical)
#   raw:       instructions in BraidBenchRawPostPoll / NullQp::PostSend calls
set -euo pipefail
BIN=${1:-build/bench/braid_vqp_overhead_bench}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

count() {  # count <toggle function> <benchmark regex> <function whose calls are the ops>
  local out="$tmp/cg.$RANDOM"
  valgrind --tool=callgrind --compress-strings=no --callgrind-out-file="$out" \
    --toggle-collect="$1" "$BIN" --benchmark_filter="$2" --benchmark_min_time=0.01 >/dev/null 2>&1
  local total calls
  total=$(awk '/^summary:/{print $2}' "$out")
  calls=$(awk -v fn="cfn=$3" 'index($0, fn) == 1 {getline; split($1, a, "="); s += a[2]} END {print s + 0}' "$out")
  awk -v t="$total" -v c="$calls" 'BEGIN { if (c > 0) printf "%.1f", t / c; else printf "n/a" }'
}

printf '%-34s %s\n' "operation" "instructions/op"
printf '%-34s %s\n' "raw null post+poll" "$(count BraidBenchRawPostPoll '^raw/post_poll$' 'braid::testing::NullQp::PostSend')"
for shape in write_1frag_1qp write_1frag_4qp write_16frag_4qp; do
  printf '%-34s %s\n' "post $shape (per virtual WR)" \
    "$(count BraidBenchPostBatch "^post/$shape\$" 'braid::vqp::VirtualQp::PostSend(')"
  printf '%-34s %s\n' "complete $shape (per physical WC)" \
    "$(count BraidBenchPollAll "^complete/$shape\$" 'braid::vqp::VirtualQp::OnCompletion(')"
done
