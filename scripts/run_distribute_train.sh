#!/bin/bash
# Data-parallel training on RANK_SIZE devices of this machine: msrun, or an HCCL rank table on Ascend.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
    cat <<'EOF'
Usage: bash scripts/run_distribute_train.sh CONFIG DATA_PATH RANK_SIZE [RANK_TABLE_FILE] [--key value ...]

  CONFIG           YAML file, e.g. configs/vig_ti_224_gelu.yaml (relative to here or to the repository)
  DATA_PATH        dataset root with train/ and val/ class folders; each rank trains on 1/RANK_SIZE of it
  RANK_SIZE        number of ranks (devices) on this machine
  RANK_TABLE_FILE  Ascend only: HCCL rank table (JSON) of this server. Given: one `train.py` process per
                   device, rank i in ./train_parallel<i> with its log in ./train_parallel<i>/log.txt and
                   DEVICE_ID taken from the table. Omitted: msrun starts the ranks (CPU, GPU, or Ascend
                   without a rank table), working directory ./train_distribute, one log per rank in
                   ./train_distribute/msrun_log/worker_<i>.log, rank 0's output also on the console.
  --key value      overrides of config keys, e.g. --epochs 10 --batch_size 64 --resume auto
                   (batch_size is per device)

All ranks share one output folder, ./train_distribute unless --train_url DIR is given: rank 0 writes the
checkpoints, train.log, metrics and curves there, rank i>0 its own train_rank<i>.log. A folder that already
holds checkpoints is only continued with --resume auto. The script waits for all ranks and fails if one
fails (the others are then stopped); use nohup for long runs.
Environment: PYTHON (interpreter), MASTER_PORT (msrun scheduler port; default: a free port),
MSRUN_TIMEOUT (seconds msrun waits for all ranks to join; default 600).
EOF
}

check_usage 3 "$@"
CONFIG="$(resolve_config "$1")"
DATA_PATH="$(abspath "$2")"
RANK_SIZE="$3"
check_count RANK_SIZE "$RANK_SIZE" 1
RANK_SIZE=$((10#$RANK_SIZE))
shift 3
TABLE=""
if (($#)) && [[ $1 != --* ]]; then
    TABLE="$(abspath "$1")"
    [[ -f $TABLE ]] || die "rank table '$TABLE' does not exist"
    shift
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
mkdir -p "$CFG_train_url"

# Rank table: one process per device, each in its own working directory (the ModelZoo layout).
run_with_rank_table() {
    local devices i dir rc status=0 stopping=0 running pid
    # DEVICE_ID of rank i as the table says (a 4-device table may well list devices 4..7)
    devices="$("$PYTHON" - "$TABLE" "$RANK_SIZE" <<'PY'
import json
import sys

path, size = sys.argv[1], int(sys.argv[2])
try:
    with open(path, encoding="utf-8") as handle:
        table = json.load(handle)
    ranks = {int(d["rank_id"]): int(d["device_id"]) for s in table["server_list"] for d in s["device"]}
except (OSError, ValueError, KeyError, TypeError) as err:
    sys.exit(f"error: cannot read the devices of rank table {path}: {err!r} (expected a version 1.0 table "
             "with server_list[].device[].rank_id/device_id)")
if len(table["server_list"]) != 1:
    sys.exit(f"error: {path} lists {len(table['server_list'])} servers; this script launches the ranks of one server")
if sorted(ranks) != list(range(size)):
    sys.exit(f"error: {path} has ranks {sorted(ranks)}, RANK_SIZE is {size}")
print(" ".join(str(ranks[r]) for r in range(size)))
PY
    )" || exit 2
    read -r -a DEVICE_IDS <<<"$devices"
    export RANK_TABLE_FILE="$TABLE" RANK_SIZE
    PIDS=()
    trap 'echo "stopping all ranks" >&2; kill "${PIDS[@]}" 2>/dev/null || true; exit 130' INT TERM
    for ((i = 0; i < RANK_SIZE; i++)); do
        dir="$(pwd)/train_parallel$i"
        mkdir -p "$dir"
        log_header "$dir/log.txt" "RANK_ID=$i DEVICE_ID=${DEVICE_IDS[i]}" "$PYTHON" "$REPO_ROOT/train.py" "${ARGS[@]}"
        (
            cd "$dir"
            export RANK_ID="$i" DEVICE_ID="${DEVICE_IDS[i]}"
            exec "$PYTHON" "$REPO_ROOT/train.py" "${ARGS[@]}"
        ) >>"$dir/log.txt" 2>&1 &
        PIDS+=("$!")
        echo "rank $i: device ${DEVICE_IDS[i]}, pid $!, log $dir/log.txt"
    done
    # Wait for all; once one rank fails the others would wait in collectives forever: stop them.
    while :; do
        running=0
        for i in "${!PIDS[@]}"; do
            pid="${PIDS[i]}"
            [[ -n $pid ]] || continue
            if kill -0 "$pid" 2>/dev/null; then
                running=1
                continue
            fi
            rc=0
            wait "$pid" || rc=$?
            PIDS[i]=""
            if ((rc != 0 && stopping)); then
                echo "rank $i stopped" >&2
            elif ((rc != 0)); then
                echo "rank $i failed with exit status $rc: see $(pwd)/train_parallel$i/log.txt" >&2
                status=1
            fi
        done
        ((running)) || break
        if ((status && !stopping)); then
            stopping=1
            echo "stopping the other ranks" >&2
            for pid in "${PIDS[@]}"; do
                [[ -z $pid ]] || kill "$pid" 2>/dev/null || true
            done
        fi
        sleep 2
    done
    trap - INT TERM
    return "$status"
}

# msrun: one scheduler plus RANK_SIZE workers over loopback; it stops all workers when one fails.
run_with_msrun() {
    local port="${MASTER_PORT:-}" log_dir=msrun_log interrupted=0 rc=0
    command -v msrun >/dev/null || die "msrun not found next to $PYTHON: is mindspore installed in that environment?"
    if ! python -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("mindspore") is None)' 2>/dev/null; then
        die "msrun starts its workers as 'python' from PATH (here: $(command -v python || echo none)), which has no \
mindspore: set PYTHON to the 'python' of an environment with mindspore"
    fi
    [[ -n $port ]] || port="$(free_port)"
    check_count MASTER_PORT "$port" 1024
    unset RANK_TABLE_FILE RANK_ID # msrun assigns ranks and devices itself
    mkdir -p "$OUT_DIR"
    cd "$OUT_DIR" # MindSpore's own files (rank_*/, kernel_meta/, ...) land here, not in the repository
    if [[ -d $log_dir ]]; then # msrun rewrites worker_<i>.log: keep the previous run's logs
        mv "$log_dir" "$log_dir.$(date +%Y%m%d-%H%M%S)"
    fi
    local cmd=(msrun "--worker_num=$RANK_SIZE" "--local_worker_num=$RANK_SIZE" --master_addr=127.0.0.1
        "--master_port=$port" --join=True "--log_dir=$log_dir" "--cluster_time_out=${MSRUN_TIMEOUT:-600}"
        --tail_worker_log=0 "$REPO_ROOT/train.py" "${ARGS[@]}")
    echo "msrun: $RANK_SIZE ranks, port $port, logs in $OUT_DIR/$log_dir/worker_<i>.log"
    log_header log.txt "${cmd[@]}"
    trap 'interrupted=1' INT # msrun stops its workers on Ctrl+C but then exits with status 0
    "${cmd[@]}" 2>&1 | tee -a log.txt || rc=$?
    trap - INT
    if ((interrupted)); then
        echo "interrupted" >&2
        return 130
    fi
    if ((rc != 0)); then
        echo "distributed training failed (msrun exit status $rc): see $OUT_DIR/$log_dir/worker_<i>.log" >&2
    fi
    return "$rc"
}

echo "training $CONFIG on $RANK_SIZE x $CFG_device_target; outputs in $CFG_train_url"
if [[ -n $TABLE ]]; then
    run_with_rank_table
else
    run_with_msrun
fi
echo "done: checkpoints and logs in $CFG_train_url"
