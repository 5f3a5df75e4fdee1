#!/usr/bin/env bash
# The SDK as another project sees it: install Braid to a temporary prefix, build
# examples/sdk_hello with find_package(braid) against it, start two installed agents and run it;
# then the installed Python package (examples/python/orchestrator.py) against the same agents.
set -euo pipefail
SRC=$1
BUILD=$2
TMP=$(mktemp -d)
CLEANUP_DIR=$TMP
# shellcheck source=scripts/background.sh
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/background.sh"
cmake --install "$BUILD" --prefix "$TMP/prefix" >/dev/null
cmake -S "$SRC/examples/sdk_hello" -B "$TMP/build" -G Ninja -DCMAKE_PREFIX_PATH="$TMP/prefix" \
  >/dev/null
ninja -C "$TMP/build" >/dev/null
base=$((20000 + ($$ % 2500) * 16))
oct=$((100 + $$ % 150))
REGIONS=$(mktemp -d /dev/shm/braid-pkg-XXXXXX)  # region files belong in memory
trap 'cleanup; rm -rf "$REGIONS"' EXIT
for side in 1 2; do
  mkdir -p "$REGIONS/r$side"
  "$TMP/prefix/bin/braidd" --agent-id "pkg-$side" --soft-nic "soft0=127.$oct.$side.1" \
    --soft-nic "soft1=127.$oct.$side.2" --grpc-tcp "127.0.0.1:$((base + side))" --metrics "" \
    --soft-port $((base + 15)) --region-dir "$REGIONS/r$side" --log-level warn \
    --plaintext --anonymous-role admin &
  pids+=($!)
done
"$TMP/build/sdk_hello" "127.0.0.1:$((base + 1))" "127.0.0.1:$((base + 2))"
# The Python package, installed under the prefix as under /usr/local (where Debian's python3
# looks), driving the same installed agents.
PY_DIR=$(cd "$TMP/prefix" && ls -d lib/python3*/dist-packages)
/usr/bin/python3 -c "import sys; sys.exit('/usr/local/$PY_DIR' not in sys.path)"
PYTHONPATH="$TMP/prefix/$PY_DIR" /usr/bin/python3 "$SRC/examples/python/orchestrator.py" \
  --qps 2 "127.0.0.1:$((base + 1))" "127.0.0.1:$((base + 2))"
