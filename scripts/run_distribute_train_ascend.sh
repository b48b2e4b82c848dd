#!/bin/bash
# The MindSpore ModelZoo ViG command: data-parallel training with an HCCL rank table, paths from the YAML.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
    cat <<'EOT'
Usage: bash scripts/run_distribute_train_ascend.sh [RANK_TABLE_FILE] [CONFIG_PATH] [RANK_SIZE] [RANK_START] [--key value ...]

  RANK_TABLE_FILE  HCCL rank table (JSON) of the job
  CONFIG_PATH      YAML file, e.g. configs/modelzoo/vig_s_patch16_224.yaml (the ModelZoo recipe) or
                   configs/vig_s_224_gelu.yaml (the official one); relative paths from the current folder, else
                   (as the ModelZoo's) from ./train_parallel<RANK_START>, else from the repository
  RANK_SIZE        ranks in the table, all servers (default: as many as the table lists)
  RANK_START       first rank of this server in a table spanning several servers (default 0); this server
                   runs ranks RANK_START..RANK_START+devices-1, its devices as the table lists them
  --key value      overrides of config keys, e.g. --epochs 10 --device_target Ascend

As the ModelZoo script: rank r runs in ./train_parallel<r> with its log in ./train_parallel<r>/log.txt, bound
to its share of the CPU cores (taskset). data_url, train_url and pretrained come from the YAML; relative
ones are relative to the working folder ./train_parallel<RANK_START> (so `data_url: ../data/imagenet` means
./data/imagenet here); all ranks share that train_url. Unlike the ModelZoo script it waits for the ranks and
deletes nothing. Environment: PYTHON, DRY_RUN=1 (print the per-rank plan only).
EOT
}

check_usage 2 "$@"
TABLE="$(find_file "rank table" "$1")"
CONFIG_ARG="$2"
shift 2
RANK_SIZE=""
RANK_START=0
optional_count RANK_SIZE 1 "$@"
shift "$TAKEN"
if [[ -n $RANK_SIZE ]]; then
    optional_count RANK_START 0 "$@"
    shift "$TAKEN"
fi
CONFIG="$(resolve_config "$CONFIG_ARG" "$(pwd)/train_parallel$RANK_START")"
normalise_extras "$@"
find_python
require_modules yaml
dry_run || require_modules mindspore
if [[ -z $RANK_SIZE ]]; then
    RANK_SIZE="$("$PYTHON" -c 'import json, sys; print(sum(len(s["device"]) for s in json.load(open(sys.argv[1]))["server_list"]))' "$TABLE")" ||
        die "cannot count the devices of rank table '$TABLE'"
fi

ARGS=(--config "$CONFIG" --device_target Ascend "${EXTRA[@]+"${EXTRA[@]}"}" --distribute true)
read_config "${ARGS[@]}"
paths_from_yaml "$(pwd)/train_parallel$RANK_START" data_url train_url pretrained
ARGS+=("${PATHS[@]}")
read_config "${ARGS[@]}"
check_data "$CFG_data_url" train val
[[ $CFG_device_target == Ascend ]] || die "an HCCL rank table starts Ascend ranks, but device_target is \
$CFG_device_target: train on Ascend, or on $CFG_device_target with msrun (scripts/run_distribute_train.sh)"
refuse_to_overwrite
dry_run || mkdir -p "$CFG_train_url"
echo "training $CONFIG on ranks $RANK_START.. of $RANK_SIZE x $CFG_device_target; outputs in $CFG_train_url"
launch_rank_table "$TABLE" "$RANK_SIZE" "$RANK_START" "${ARGS[@]}"
