#!/bin/bash
# Data-parallel training: msrun on one or several nodes, or an HCCL rank table on Ascend.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
    cat <<'EOT'
Usage: bash scripts/run_distribute_train.sh CONFIG DATA_PATH RANK_SIZE [--key value ...]
       bash scripts/run_distribute_train.sh CONFIG DATA_PATH RANK_SIZE LOCAL_WORKER_NUM MASTER_ADDR MASTER_PORT NODE_RANK [--key value ...]
       bash scripts/run_distribute_train.sh CONFIG DATA_PATH RANK_SIZE RANK_TABLE_FILE [RANK_START] [--key value ...]

  CONFIG           YAML file, e.g. configs/vig_ti_224_gelu.yaml (relative to here or to the repository)
  DATA_PATH        dataset root with train/ and val/ class folders; each rank trains on 1/RANK_SIZE of it
  RANK_SIZE        number of ranks in total (all nodes)
  msrun (CPU, GPU, or Ascend without a rank table): working directory ./train_distribute, one log per rank in
                   ./train_distribute/msrun_log/worker_<i>.log, rank 0's output also on the console.
    LOCAL_WORKER_NUM MASTER_ADDR MASTER_PORT NODE_RANK
                   several nodes: run the script on every node with the same RANK_SIZE, MASTER_ADDR (an address
                   of node 0, which runs the scheduler) and MASTER_PORT; node NODE_RANK (0, 1, ...) runs ranks
                   NODE_RANK*LOCAL_WORKER_NUM onwards. Omitted: one node runs all ranks over loopback.
  RANK_TABLE_FILE  Ascend: HCCL rank table (JSON). One `train.py` per device of this server, rank r in
                   ./train_parallel<r> with its log in ./train_parallel<r>/log.txt, DEVICE_ID from the table,
                   bound to its share of the CPU cores (taskset).
    RANK_START     first rank of this server in a table spanning several servers (default 0)
  --key value      overrides of config keys, e.g. --epochs 10 --batch_size 64 --resume auto
                   (batch_size is per device)

All ranks of a node share one output folder, ./train_distribute unless --train_url DIR is given: rank 0 writes
the checkpoints, train.log, metrics and curves there, rank i>0 its own train_rank<i>.log. A folder that already
holds checkpoints is only continued with --resume auto. The script waits for its ranks and fails if one fails
(the others are then stopped); use nohup for long runs.
Environment: PYTHON (interpreter), MASTER_PORT (single-node msrun scheduler port; default: a free port),
MSRUN_TIMEOUT (seconds msrun waits for all ranks to join; default 600), DRY_RUN=1 (print the plan only).
EOT
}

check_usage 3 "$@"
CONFIG="$(resolve_config "$1")"
DATA_PATH="$(abspath "$2")"
RANK_SIZE="$3"
check_count RANK_SIZE "$RANK_SIZE" 1
RANK_SIZE=$((10#$RANK_SIZE))
shift 3
TABLE=""
RANK_START=0
NODE=()
if (($#)) && [[ $1 =~ ^[0-9]+$ ]]; then # LOCAL_WORKER_NUM MASTER_ADDR MASTER_PORT NODE_RANK
    (($# >= 4)) || die "several msrun nodes need LOCAL_WORKER_NUM MASTER_ADDR MASTER_PORT NODE_RANK (see --help)"
    check_count LOCAL_WORKER_NUM "$1" 1
    [[ $2 != --* && -n $2 ]] || die "MASTER_ADDR missing (see --help)"
    check_count MASTER_PORT "$3" 1024
    check_count NODE_RANK "$4" 0
    NODE=("$((10#$1))" "$2" "$((10#$3))" "$((10#$4))")
    ((NODE[0] <= RANK_SIZE && (NODE[3] + 1) * NODE[0] <= RANK_SIZE)) ||
        die "node $4 with $1 workers does not fit in RANK_SIZE $RANK_SIZE"
    shift 4
elif (($#)) && [[ $1 != --* ]]; then
    TABLE="$(abspath "$1")"
    [[ -f $TABLE ]] || die "rank table '$TABLE' does not exist"
    shift
    optional_count RANK_START 0 "$@"
    shift "$TAKEN"
fi
normalise_extras "$@"
find_python
require_modules mindspore yaml

OUT_DIR="$(pwd)/train_distribute"
ARGS=(--config "$CONFIG" --data_url "$DATA_PATH" --train_url "$OUT_DIR")
ARGS+=("${EXTRA[@]+"${EXTRA[@]}"}") # later options win: the user's --train_url replaces the default
ARGS+=(--distribute true)
read_config "${ARGS[@]}"
check_data "$DATA_PATH" train val
refuse_to_overwrite
dry_run || mkdir -p "$CFG_train_url"

echo "training $CONFIG on $RANK_SIZE x $CFG_device_target; outputs in $CFG_train_url"
if [[ -n $TABLE ]]; then
    launch_rank_table "$TABLE" "$RANK_SIZE" "$RANK_START" "${ARGS[@]}"
elif ((${#NODE[@]})); then
    launch_msrun "$OUT_DIR" "$RANK_SIZE" "${NODE[@]}" "${ARGS[@]}"
else
    PORT="${MASTER_PORT:-}"
    [[ -n $PORT ]] || PORT="$(free_port)"
    check_count MASTER_PORT "$PORT" 1024
    launch_msrun "$OUT_DIR" "$RANK_SIZE" "$RANK_SIZE" 127.0.0.1 "$PORT" 0 "${ARGS[@]}"
fi
dry_run || echo "done: checkpoints and logs in $CFG_train_url"
