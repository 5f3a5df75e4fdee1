#!/usr/bin/env bash
# Issue 9's shaped-links benchmark: four veth links between two namespaces shaped with tc to
# 1, 1, 1 and 0.25 units of rate (unit: BRAID_UNIT_MBIT, default 800 Mbit/s); an 8-QP VQP moves
# 64 MiB writes for 10 s; prints the throughput and its ratio to the sum of the link rates (even
# striping would be held to 4 x the slowest link). Needs root (network namespaces).
set -euo pipefail
BRAIDD=$1
DRIVER=$2
UNIT=${BRAID_UNIT_MBIT:-800}
if [ "$(id -u)" -ne 0 ]; then echo "needs root"; exit 0; fi
A="braid-ba-$$"
B="braid-bb-$$"
DIR=$(mktemp -d /dev/shm/braid-bench-XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  ip netns del "$A" 2>/dev/null || true
  ip netns del "$B" 2>/dev/null || true
  rm -rf "$DIR"
}
trap cleanup EXIT
ip netns add "$A"
ip netns add "$B"
ip -n "$A" link set lo up
ip -n "$B" link set lo up
rates=("$UNIT" "$UNIT" "$UNIT" $((UNIT / 4)))
for k in 0 1 2 3 9; do
  ip link add "ba$k-$$" netns "$A" type veth peer name "bb$k-$$" netns "$B"
  ip -n "$A" addr add "10.78.$k.1/24" dev "ba$k-$$"
  ip -n "$B" addr add "10.78.$k.2/24" dev "bb$k-$$"
  ip -n "$A" link set "ba$k-$$" up
  ip -n "$B" link set "bb$k-$$" up
  if [ "$k" != 9 ]; then
    for side in "$A ba" "$B bb"; do
      set -- $side
      ip netns exec "$1" tc qdisc add dev "$2$k-$$" root tbf rate "${rates[$k]}mbit" burst 1mb \
        latency 20ms
    done
  fi
done
for side in 1 2; do
  ns=$A; [ $side = 2 ] && ns=$B
  mkdir -p "$DIR/$side"
  ip netns exec "$ns" "$BRAIDD" --agent-id "bench-$side" --grpc-tcp "10.78.9.$side:7600" \
    --metrics "" --region-dir "$DIR/$side" --log-level warn \
    --soft-nic "soft0=10.78.0.$side" --soft-nic "soft1=10.78.1.$side" \
    --soft-nic "soft2=10.78.2.$side" --soft-nic "soft3=10.78.3.$side" &
  pids+=($!)
done
out=$(ip netns exec "$A" "$DRIVER" --a 10.78.9.1:7600 --b 10.78.9.2:7600 --qps 8 --scenario bench \
  --bench-seconds 10)
echo "$out"
gbs=$(echo "$out" | awk '/GB\/s/ {print $4}')
sum=$(awk -v u="$UNIT" 'BEGIN {printf "%.3f", 3.25 * u / 8000}')
even=$(awk -v u="$UNIT" 'BEGIN {printf "%.3f", 4 * 0.25 * u / 8000}')
awk -v g="$gbs" -v s="$sum" -v e="$even" 'BEGIN {
  printf "links 1, 1, 1, 0.25 x unit: sum %.3f GB/s (even striping would be held to %.3f GB/s)\n", s, e
  printf "64 MiB writes %.3f GB/s = %.2f of the sum (target >= 0.9)\n", g, g / s }'
