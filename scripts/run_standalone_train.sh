#!/bin/bash
# Train on one device.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
    cat <<'EOF'
Usage: bash scripts/run_standalone_train.sh CONFIG DATA_PATH [DEVICE_TARGET] [DEVICE_ID] [--key value ...]

  CONFIG         YAML file, e.g. configs/vig_ti_224_gelu.yaml (relative to here or to the repository)
  DATA_PATH      dataset root with train/ and val/ class folders (set: digits writes the demo data there)
  DEVICE_TARGET  Ascend, GPU or CPU (default: the config's device_target)
  DEVICE_ID      device to train on (default: 0)
  --key value    overrides of config keys, e.g. --epochs 10 --batch_size 64 --resume auto

Runs in the foreground in ./train_standalone (created in the current directory), which also receives
the checkpoints, train.log, metrics and curves unless --train_url DIR puts them elsewhere. The whole
console output is appended to ./train_standalone/log.txt. An output folder that already holds
checkpoints is only continued with --resume auto. Environment: PYTHON (interpreter to use), DRY_RUN=1
(print the command only).
EOF
}

check_usage 2 "$@"
CONFIG="$(resolve_config "$1")"
DATA_PATH="$(abspath "$2")"
shift 2
device_args "$@"
shift "$DEVICE_SHIFT"
normalise_extras "$@"
find_python
require_modules mindspore yaml

WORK_DIR="$(pwd)/train_standalone"
ARGS=(--config "$CONFIG" --data_url "$DATA_PATH" --train_url "$WORK_DIR")
ARGS+=("${DEVICE_ARGS[@]+"${DEVICE_ARGS[@]}"}")
ARGS+=("${EXTRA[@]+"${EXTRA[@]}"}") # later options win: the user's --train_url replaces the default
read_config "${ARGS[@]}"
check_data "$DATA_PATH" train val
refuse_to_overwrite

echo "training $CONFIG on $CFG_device_target in $WORK_DIR; outputs in $CFG_train_url; log $WORK_DIR/log.txt"
launch_one train.py "$WORK_DIR" "$WORK_DIR/log.txt" "${ARGS[@]}"
