# Sourced by scripts that start processes in the background: append each one's pid to `pids`
# (pids+=($!)); on exit, whatever happens, each is stopped and waited for, and the directory named
# by CLEANUP_DIR (if set) is removed.
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ -n "${CLEANUP_DIR:-}" ]; then rm -rf "$CLEANUP_DIR"; fi
}
trap cleanup EXIT
