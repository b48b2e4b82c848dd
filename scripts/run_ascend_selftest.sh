#!/bin/bash
# The first thing to run on a new Ascend machine: every family's O2 training step, an injected overflow, a float32
# forward against the CPU, the 310 export, with one table and a summary to paste into an issue.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
    cat <<'EOF'
Usage: bash scripts/run_ascend_selftest.sh [DEVICE_ID] [FAMILY ...] [--key value ...]

  DEVICE_ID    Ascend device to check (default 0; DEVICE_ID in the environment wins)
  FAMILY       vig, pvig, svig, graphconvnet, pgraphconvnet (default: all five)
  --key value  --image_size 224 --batch_size 8 --steps 4 --quick false; --device_target CPU runs the same
               checks on the CPU; --quick true keeps the first and last block of each stage (quicker)

Per family: compile and run the O2 training step, one step with an overflowing loss scale (must be skipped),
a float32 forward against the CPU, the MINDIR (and on Ascend AIR) export. Prints a table and a summary; exit
status 0 when every check passed. Log: ./ascend_selftest.log (appended). Environment: PYTHON.
EOF
}

if [[ ${1:-} == -h || ${1:-} == --help ]]; then
    usage
    exit 0
fi
DEVICE=0
optional_count DEVICE 0 "$@"
shift "$TAKEN"
FAMILIES=()
while (($#)) && [[ $1 != --* ]]; do
    FAMILIES+=("$1")
    shift
done
normalise_extras "$@"
find_python
require_modules mindspore yaml
LOG="$(pwd)/ascend_selftest.log"
CMD=("$PYTHON" "$REPO_ROOT/selftest.py" "${FAMILIES[@]+"${FAMILIES[@]}"}" --device_id "$DEVICE"
    "${EXTRA[@]+"${EXTRA[@]}"}")
log_header "$LOG" "${CMD[@]}"
"${CMD[@]}" 2>&1 | tee -a "$LOG" # MindSpore's own files (rank_0/, kernel_meta/) land in the current folder
