#!/bin/bash
# The MindSpore ModelZoo ViG command: evaluate a checkpoint on one device, data path from the YAML.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
    cat <<'EOT'
Usage: bash scripts/run_eval_ascend.sh [DEVICE_ID] [CONFIG_PATH] [CHECKPOINT_PATH] [--key value ...]

  DEVICE_ID        device to evaluate on
  CONFIG_PATH      YAML file of the checkpoint's model; relative paths from the current folder, else (as the
                   ModelZoo's) from ./evaluation_ascend, else from the repository
  CHECKPOINT_PATH  .ckpt file of this project (ModelZoo ViG checkpoints cannot load: see README); relative paths
                   from the current folder, else (as the ModelZoo's) from ./evaluation_ascend
  --key value      overrides of config keys, e.g. --device_target CPU --use_ema true

As the ModelZoo script: runs eval.py --device_target Ascend in ./evaluation_ascend, output in
./evaluation_ascend/eval.log; data_url comes from the YAML, relative to ./evaluation_ascend. Unlike the
ModelZoo script it runs in the foreground and deletes nothing. Environment: PYTHON, DRY_RUN=1.
EOT
}

check_usage 3 "$@"
CHECKPOINT="$(find_file checkpoint "$3" "$(pwd)/evaluation_ascend")"
one_device_job "$1" "$2" "$(pwd)/evaluation_ascend" "${@:4}"
paths_from_yaml "$WORK_DIR" data_url
ARGS+=("${PATHS[@]}" --pretrained "$CHECKPOINT")
read_config "${ARGS[@]}"
check_data "$CFG_data_url" val
echo "evaluating $CHECKPOINT on $CFG_device_target $DEVICE_ID; log $WORK_DIR/eval.log"
launch_one eval.py "$WORK_DIR" "$WORK_DIR/eval.log" "${ARGS[@]}"
