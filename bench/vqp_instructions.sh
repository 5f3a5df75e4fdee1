#!/usr/bin/env bash
# Instructions per operation of the virtual layer over the null provider, counted by callgrind
# (repeatable, unlike time). vqp_icount performs an exact number of operations; callgrind collects
# only inside PostOnly (posts), PollOnly (completions) or RawPostPoll (the provider alone).
set -euo pipefail
BIN=${1:-build/bench/braid_vqp_icount}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

ir() {  # ir <shape> <function> -> "<instructions> <ops> <physical>"
  local out="$tmp/cg"
  local counts
  counts=$(valgrind --tool=callgrind --callgrind-out-file="$out" --toggle-collect="$2" \
           "$BIN" "$1" 2>/dev/null)
  echo "$(awk '/^summary:/{print $2}' "$out") $counts"
}

printf '%-22s %22s %30s\n' "shape" "post (per virtual WR)" "complete (per physical WC)"
read -r t _ ops _ phys <<<"$(ir raw RawPostPoll)"
printf '%-22s %22s %30s\n' "raw null post+poll" "$(awk -v t="$t" -v o="$ops" 'BEGIN{printf "%.1f", t/o}')" "(post and poll together)"
for shape in 1frag_1qp 1frag_4qp 16frag_4qp; do
  read -r tp _ ops _ phys <<<"$(ir "$shape" PostOnly)"
  read -r tc _ _ _ _ <<<"$(ir "$shape" PollOnly)"
  printf '%-22s %22s %30s\n' "write_$shape" \
    "$(awk -v t="$tp" -v o="$ops" 'BEGIN{printf "%.1f", t/o}')" \
    "$(awk -v t="$tc" -v p="$phys" 'BEGIN{printf "%.1f", t/p}')"
done
