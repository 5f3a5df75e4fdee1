#!/usr/bin/env bash
# Two network namespaces joined by two veth pairs, one soft NIC per veth end (braid_netns_peer):
# data over both links, then one veth down: that QP must end with RETRY_EXC_ERR within its
# configured timeout while the other keeps working. Removes everything it created.
# Needs root and iproute2; exits 77 (skipped) otherwise.
set -euo pipefail
BIN=${1:?usage: netns_two_nic_test.sh <braid_netns_peer>}
if [ "$(id -u)" -ne 0 ] || ! command -v ip >/dev/null; then
  echo "SKIP: needs root and iproute2"
  exit 77
fi
A="braidA$$"
B="braidB$$"
dir=$(mktemp -d)
cleanup() {
  ip netns del "$A" 2>/dev/null || true
  ip netns del "$B" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT
ip netns add "$A"
ip netns add "$B"
for i in 0 1; do
  ip link add "bA$i$$" type veth peer name "bB$i$$"
  ip link set "bA$i$$" netns "$A"
  ip link set "bB$i$$" netns "$B"
  ip -n "$A" addr add "10.20$((i + 1)).0.1/24" dev "bA$i$$"
  ip -n "$B" addr add "10.20$((i + 1)).0.2/24" dev "bB$i$$"
  ip -n "$A" link set "bA$i$$" up
  ip -n "$B" link set "bB$i$$" up
done
ip -n "$A" link set lo up
ip -n "$B" link set lo up
ip netns exec "$B" "$BIN" b "$dir" &
peer=$!
status=0
ip netns exec "$A" "$BIN" a "$dir" "bA1$$" || status=$?
touch "$dir/stop"
wait "$peer" || status=$?
# Nothing of ours may be left behind once cleanup has run (checked by the trap's caller: ctest).
exit "$status"
