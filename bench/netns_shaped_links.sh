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
NET=78
RATES=("${UNIT}mbit" "${UNIT}mbit" "${UNIT}mbit" "$((UNIT / 4))mbit")
source "$(dirname "$0")/../tests/integration/netns_agents.sh"
out=$(ip netns exec "$A" "$DRIVER" --a 10.78.9.1:7600 --b 10.78.9.2:7600 --qps 8 --scenario bench \
  --bench-seconds 10)
echo "$out"
gbs=$(echo "$out" | awk '/GB\/s/ {print $4}')
sum=$(awk -v u="$UNIT" 'BEGIN {printf "%.3f", 3.25 * u / 8000}')
even=$(awk -v u="$UNIT" 'BEGIN {printf "%.3f", 4 * 0.25 * u / 8000}')
awk -v g="$gbs" -v s="$sum" -v e="$even" 'BEGIN {
  printf "links 1, 1, 1, 0.25 x unit: sum %.3f GB/s (even striping would be held to %.3f GB/s)\n", s, e
  printf "64 MiB writes %.3f GB/s = %.2f of the sum (target >= 0.9)\n", g, g / s }'
