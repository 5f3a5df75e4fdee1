#!/usr/bin/env bash
# Unmodified perftest (Debian's `perftest`) between two processes on soft NICs through
# libbraid_verbs.so (LD_PRELOAD): ib_write_bw, ib_read_bw, ib_send_bw, ib_write_lat, ib_read_lat.
# Prints each tool's result table. Usage: soft_verbs_perftest.sh <libbraid_verbs.so> [size]
set -uo pipefail
LIB=$1
SIZE=${2:-65536}
B=$((100 + $$ % 150))
PORT=$((21000 + $$ % 10000))
export BRAID_SOFT_PORT=$((31000 + $$ % 10000))
status=0
for tool in ib_write_bw ib_read_bw ib_send_bw ib_write_lat ib_read_lat; do
  args=(-d soft0 -x 0 -p "$PORT" -s "$SIZE")
  [[ $tool == *_lat ]] && args=(-d soft0 -x 0 -p "$PORT" -s 64)
  LD_PRELOAD=$LIB BRAID_SOFT_NICS="soft0=127.$B.8.1" timeout 120 "$tool" "${args[@]}" \
    > /tmp/braid_perftest_server.$$ 2>&1 &
  server=$!
  sleep 0.5
  echo "== $tool ${args[*]}"
  LD_PRELOAD=$LIB BRAID_SOFT_NICS="soft0=127.$B.8.2" timeout 120 "$tool" "${args[@]}" 127.0.0.1 || {
    echo "FAIL: $tool client"; status=1; }
  wait $server || { echo "FAIL: $tool server:"; cat /tmp/braid_perftest_server.$$; status=1; }
  PORT=$((PORT + 1))
done
rm -f /tmp/braid_perftest_server.$$
exit $status
