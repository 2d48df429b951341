#!/usr/bin/env bash
# Starts evcxr_jupyter with a persistent build folder (EVCXR_TMPDIR), so tch and the sgm crate
# are compiled once, not at every kernel start. Each running kernel holds a lock on its folder:
# a second notebook open at the same time gets the next folder (and builds it once).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILDS="$ROOT/.tools/evcxr-build"
mkdir -p "$BUILDS"
# The connection file Jupyter starts the kernel with (`--control_file RUNTIME_DIR/kernel-ID.json`)
# names the kernel: the homework's validate cell (sgm_homework::submission::server_notebook)
# asks the server which notebook that kernel's session holds now, after a rename too.
previous=""
for arg in "$@"; do
  if [[ $previous == --control_file ]]; then
    export SGM_KERNEL_CONNECTION_FILE="$arg"
  fi
  previous="$arg"
done
for slot in 0 1 2 3 4 5 6 7; do
  exec 9>"$BUILDS/slot-$slot.lock"
  if flock -n 9; then
    export EVCXR_TMPDIR="$BUILDS/slot-$slot"
    mkdir -p "$EVCXR_TMPDIR"
    # fd 9 stays open in evcxr_jupyter, keeping the lock for the kernel's lifetime.
    exec "$ROOT/.tools/evcxr/bin/evcxr_jupyter" "$@"
  fi
  exec 9>&-
done
echo "launch-kernel: all 8 evcxr build folders in $BUILDS are in use" >&2
exit 1
