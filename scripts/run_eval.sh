#!/bin/bash
# Evaluate a checkpoint on the validation split of one device.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
    cat <<'EOF'
Usage: bash scripts/run_eval.sh CONFIG DATA_PATH CHECKPOINT [DEVICE_TARGET] [DEVICE_ID] [--key value ...]

  CONFIG         YAML file of the checkpoint's model, e.g. configs/vig_ti_224_gelu.yaml
  DATA_PATH      dataset root with a val/ folder of class folders (set: digits writes the demo data there)
  CHECKPOINT     .ckpt file: one of ours (e.g. train_standalone/best.ckpt) or a converted official one
  DEVICE_TARGET  Ascend, GPU or CPU (default: the config's device_target)
  DEVICE_ID      device to evaluate on (default: 0)
  --key value    overrides of config keys, e.g. --use_ema true --batch_size 64 --crop_pct 0.9

Prints top-1, top-5 and the loss; the console output is appended to ./eval/log.txt (created in the
current directory, which is also the working directory of the run). Environment: PYTHON, DRY_RUN=1.
EOF
}

check_usage 3 "$@"
CONFIG="$(resolve_config "$1")"
DATA_PATH="$(abspath "$2")"
CHECKPOINT="$(abspath "$3")"
shift 3
[[ -f $CHECKPOINT ]] || die "checkpoint '$CHECKPOINT' does not exist"
device_args "$@"
shift "$DEVICE_SHIFT"
normalise_extras "$@"
find_python
require_modules mindspore yaml

ARGS=(--config "$CONFIG" --data_url "$DATA_PATH" --pretrained "$CHECKPOINT")
ARGS+=("${DEVICE_ARGS[@]+"${DEVICE_ARGS[@]}"}")
ARGS+=("${EXTRA[@]+"${EXTRA[@]}"}")
read_config "${ARGS[@]}"
check_data "$DATA_PATH" val

WORK_DIR="$(pwd)/eval"
echo "evaluating $CFG_pretrained on $CFG_device_target; log $WORK_DIR/log.txt"
launch_one eval.py "$WORK_DIR" "$WORK_DIR/log.txt" "${ARGS[@]}"
