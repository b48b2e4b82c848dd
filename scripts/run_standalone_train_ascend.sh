#!/bin/bash
# The MindSpore ModelZoo ViG command: train on one device, paths from the YAML.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
    cat <<'EOT'
Usage: bash scripts/run_standalone_train_ascend.sh [DEVICE_ID] [CONFIG_PATH] [--key value ...]

  DEVICE_ID    device to train on
  CONFIG_PATH  YAML file, e.g. configs/modelzoo/vig_s_patch16_224.yaml (the ModelZoo recipe) or
               configs/vig_s_224_gelu.yaml (the official one); relative paths from the current folder, else (as
               the ModelZoo's) from ./train_standalone, else from the repository
  --key value  overrides of config keys, e.g. --epochs 10 --device_target CPU

As the ModelZoo script: runs train.py --device_target Ascend in ./train_standalone with DEVICE_ID, RANK_SIZE=1
and DEVICE_NUM=1 in the environment, output in ./train_standalone/log.txt. data_url, train_url and pretrained
come from the YAML; relative ones are relative to ./train_standalone (so `data_url: ../data/imagenet` means
./data/imagenet here). Unlike the ModelZoo script it runs in the foreground and deletes nothing: a train_url
that holds checkpoints is only continued with --resume auto. Environment: PYTHON, DRY_RUN=1 (print only).
EOT
}

check_usage 2 "$@"
one_device_job "$1" "$2" "$(pwd)/train_standalone" "${@:3}"
paths_from_yaml "$WORK_DIR" data_url train_url pretrained
ARGS+=("${PATHS[@]}")
read_config "${ARGS[@]}"
check_data "$CFG_data_url" train val
refuse_to_overwrite
echo "training $CONFIG on $CFG_device_target $DEVICE_ID in $WORK_DIR; outputs in $CFG_train_url"
launch_one train.py "$WORK_DIR" "$WORK_DIR/log.txt" "${ARGS[@]}"
