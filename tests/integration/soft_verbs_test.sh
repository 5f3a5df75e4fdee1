#!/usr/bin/env bash
# libbraid_verbs.so under unmodified verbs programs (LD_PRELOAD, soft NICs on loopback):
#  1. the conformance suite's rdma-core instance, every test run (none may be skipped);
#  2. Debian's ibv_rc_pingpong between two processes, polling and with completion events (-e).
#  3. braid_soft_verbs_check: plain libibverbs calls (attribute-mask rules, refusals, a write,
#     a NIC taken down).
# Usage: soft_verbs_test.sh <libbraid_verbs.so> <braid_conformance_tests> <braid_soft_verbs_check>
set -euo pipefail
LIB=$1
CONFORMANCE=$2
CHECK=$3
B=$((100 + $$ % 150))  # 127.<B>.x.y: concurrent runs use other addresses
PORT=$((20000 + $$ % 10000))
export BRAID_SOFT_PORT=$((30000 + $$ % 10000))
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

echo "== conformance suite, rdma-core instance, through $LIB"
LD_PRELOAD=$LIB BRAID_SOFT_NICS="soft0=127.$B.9.1,soft1=127.$B.9.2" \
  "$CONFORMANCE" --gtest_filter='*/Ibverbs' > "$out/conformance.txt" 2>&1 || {
  cat "$out/conformance.txt"; echo "FAIL: conformance"; exit 1; }
grep -E "^\[  PASSED  \]|^\[  SKIPPED \]|^\[  FAILED  \]" "$out/conformance.txt"
if grep -q "SKIPPED" "$out/conformance.txt"; then echo "FAIL: tests were skipped"; exit 1; fi

echo "== braid_soft_verbs_check"
LD_PRELOAD=$LIB BRAID_SOFT_NICS="soft0=127.$B.9.3,soft1=127.$B.9.4" "$CHECK" --gtest_brief=1 || {
  echo "FAIL: braid_soft_verbs_check"; exit 1; }

if ! command -v ibv_rc_pingpong > /dev/null; then
  echo "FAIL: ibv_rc_pingpong missing (ibverbs-utils: scripts/install_deps.sh)"; exit 1
fi
for mode in "" "-e"; do
  echo "== ibv_rc_pingpong -g 0 $mode"
  LD_PRELOAD=$LIB BRAID_SOFT_NICS="soft0=127.$B.9.11" \
    timeout 60 ibv_rc_pingpong -d soft0 -g 0 -p "$PORT" $mode > "$out/server.txt" 2>&1 &
  server=$!
  sleep 0.5
  rc=0
  LD_PRELOAD=$LIB BRAID_SOFT_NICS="soft0=127.$B.9.12" \
    timeout 60 ibv_rc_pingpong -d soft0 -g 0 -p "$PORT" $mode 127.0.0.1 > "$out/client.txt" 2>&1 || rc=$?
  src=0
  wait $server || src=$?
  echo "client (exit $rc):"; cat "$out/client.txt"
  echo "server (exit $src):"; cat "$out/server.txt"
  if [[ $rc -ne 0 || $src -ne 0 ]]; then echo "FAIL: ibv_rc_pingpong $mode"; exit 1; fi
  grep -q "iters in" "$out/client.txt" || { echo "FAIL: no figures"; exit 1; }
  PORT=$((PORT + 1))
done
echo "PASS"
