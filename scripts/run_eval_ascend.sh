#!/bin/bash
# The MindSpore ModelZoo ViG command: evaluate a checkpoint on one device, data path from the YAML.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
    cat <<'EOT'
Usage: bash scripts/run_eval_ascend.sh [DEVICE_ID] [CONFIG_PATH] [CHECKPOINT_PATH] [--key value ...]

  DEVICE_ID        device to evaluate on
  CONFIG_PATH      YAML file of the checkpoint's model
  CHECKPOINT_PATH  .ckpt file of this project (ModelZoo ViG checkpoints cannot load: see README)
  --key value      overrides of config keys, e.g. --device_target CPU --use_ema true

As the ModelZoo script: runs eval.py --device_target Ascend in ./evaluation_ascend, output in
./evaluation_ascend/eval.log; data_url comes from the YAML, relative to ./evaluation_ascend. Unlike the
ModelZoo script it runs in the foreground and deletes nothing. Environment: PYTHON, DRY_RUN=1.
EOT
}

check_usage 3 "$@"
check_count DEVICE_ID "$1" 0
export DEVICE_ID="$((10#$1))" RANK_SIZE=1 DEVICE_NUM=1
unset RANK_TABLE_FILE RANK_ID
CONFIG="$(resolve_config "$2")"
CHECKPOINT="$(abspath "$3")"
[[ -f $CHECKPOINT ]] || die "checkpoint '$3' does not exist"
shift 3
normalise_extras "$@"
find_python
require_modules mindspore yaml

WORK_DIR="$(pwd)/evaluation_ascend"
ARGS=(--config "$CONFIG" --device_id "$DEVICE_ID" --device_target Ascend "${EXTRA[@]+"${EXTRA[@]}"}")
read_config "${ARGS[@]}"
paths_from_yaml "$WORK_DIR" data_url
ARGS+=("${PATHS[@]}" --pretrained "$CHECKPOINT")
read_config "${ARGS[@]}"
check_data "$CFG_data_url" val
echo "evaluating $CHECKPOINT on $CFG_device_target $DEVICE_ID; log $WORK_DIR/eval.log"
launch_one eval.py "$WORK_DIR" "$WORK_DIR/eval.log" "${ARGS[@]}"
