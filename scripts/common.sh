# shellcheck shell=bash
# Helpers shared by the launch scripts in this folder; sourced, not run.
#
# Conventions of every launcher:
# * paths given on the command line are relative to the directory the user is in; they are made absolute
#   before any rank starts, because ranks run in their own working directories;
# * CONFIG may also be given relative to the repository (configs/x.yaml works from scripts/ too);
# * the merged configuration (YAML <- overrides) is checked by src/app/config.py before anything starts,
#   so a typo is one error line instead of N failing ranks;
# * the interpreter is $PYTHON, else `python` (or `python3`) on PATH; its directory is put first on PATH,
#   because msrun starts its workers as `python ...` from PATH.

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# Config keys whose values are paths (made absolute); `auto` / `none` keep their meaning.
PATH_KEYS="train_url data_url pretrained resume preprocess_path result_path"

# check_usage MIN ARGS...: -h/--help prints the calling script's usage(); fewer than MIN arguments is an error.
check_usage() {
    local min="$1"
    shift
    if [[ ${1:-} == -h || ${1:-} == --help ]]; then
        usage
        exit 0
    fi
    if (($# < min)); then
        usage >&2
        exit 1
    fi
}

die() {
    echo "error: $*" >&2
    exit 2
}

abspath() {
    realpath -m -s -- "$1" # -s: keep symlinks (a venv's python is a symlink to the base interpreter)
}

# find_file WHAT PATH DIR...: the absolute path of the file PATH. A relative PATH is looked up from the current
# folder first, then from each DIR: the ModelZoo scripts cd into their job folder (./train_standalone, ...) before
# they read CONFIG_PATH / CHECKPOINT_PATH, so a path written for them is relative to that folder. The error names
# each folder tried once, then FIND_HINT if set.
find_file() {
    local what="$1" path="$2" dir candidate tried="" seen=$'\n'
    shift 2
    if [[ $path == /* ]]; then
        [[ -f $path ]] || die "$what '$path' does not exist${FIND_HINT:+.$FIND_HINT}"
        abspath "$path"
        return 0
    fi
    for dir in "$(pwd)" "$@"; do
        dir="$(abspath "$dir")"
        [[ $seen != *$'\n'"$dir"$'\n'* ]] || continue
        seen+="$dir"$'\n'
        tried+="${tried:+, }$dir"
        candidate="$(abspath "$dir/$path")" # lexically: the job folder need not exist yet
        if [[ -f $candidate ]]; then
            echo "$candidate"
            return 0
        fi
    done
    die "$what '$path' not found (looked in $tried)${FIND_HINT:+.$FIND_HINT}"
}

# resolve_config CONFIG [JOB_DIR]: the YAML file's absolute path, from the current folder, the job folder, then the
# repository (configs/x.yaml works from anywhere). A missing file names the configs this repository ships.
resolve_config() {
    local name dir hint
    name="$(basename -- "$1")"
    hint=" This repository ships configs/<model>.yaml (the official recipe: EMA, repeated augmentation, total batch \
1024, cooldown) and configs/modelzoo/vig_{ti,s,b}_patch16_224.yaml (the MindSpore ModelZoo's recipe)"
    for dir in configs configs/modelzoo; do
        [[ ! -f $REPO_ROOT/$dir/$name ]] || hint=" Did you mean $dir/$name?$hint"
    done
    FIND_HINT="$hint" find_file "config file" "$1" "${@:2}" "$REPO_ROOT"
}

# find_python: sets PYTHON to an absolute interpreter path and puts its directory first on PATH.
find_python() {
    local py="${PYTHON:-}"
    if [[ -z $py ]]; then
        py="$(command -v python || command -v python3 || true)"
        [[ -n $py ]] || die "no python on PATH: activate the environment that has mindspore, or set PYTHON=/path/to/python"
    fi
    py="$(command -v -- "$py" || true)"
    [[ -n $py && -x $py ]] || die "PYTHON='${PYTHON:-}' is not an executable interpreter"
    PYTHON="$(abspath "$py")"
    PATH="$(dirname -- "$PYTHON"):$PATH"
    export PATH PYTHON
}

# require_modules MODULE...: fail early, with the install hint, if the interpreter lacks a module.
require_modules() {
    "$PYTHON" - "$@" <<'PY' || die "the interpreter $PYTHON lacks the modules above: pip install -r $REPO_ROOT/requirements.txt"
import importlib.util
import sys

missing = [m for m in sys.argv[1:] if importlib.util.find_spec(m) is None]
if missing:
    print(f"missing python modules: {', '.join(missing)}", file=sys.stderr)
    sys.exit(1)
PY
}

# normalise_extras ARG...: sets EXTRA to the extra `--key value` pairs (also -a/-j; `--key=value` split in two,
# path values made absolute); anything else is a usage error.
normalise_extras() {
    EXTRA=()
    local key value
    while (($#)); do
        key="$1"
        [[ $key == --?* || $key =~ ^-[a-zA-Z]$ ]] ||
            die "unexpected argument '$key': extra options are --key value pairs (see --help)"
        if [[ $key == *=* ]]; then
            value="${key#*=}"
            key="${key%%=*}"
            shift
        else
            (($# >= 2)) || die "option $key needs a value"
            value="$2"
            shift 2
        fi
        [[ $value != --* ]] || die "option $key needs a value (got '$value')"
        [[ $key != --config && $key != --vig_config ]] || die "give the config file as the first argument, not as $key"
        if [[ " $PATH_KEYS " == *" ${key#--} "* ]]; then
            case "${value,,}" in
                auto | none | null | "") ;;
                *) value="$(abspath "$value")" ;;
            esac
        fi
        EXTRA+=("$key" "$value")
    done
}

# read_config ARG...: checks the merged configuration of train.py/eval.py ARG... without starting MindSpore
# and sets CFG_<key> for the keys the launchers need (paths as train.py will see them).
# shellcheck disable=SC2034  # the CFG_ variables are read by the scripts that source this file
read_config() {
    local lines line value
    lines="$(cd "$REPO_ROOT" && "$PYTHON" - "$@" <<'PY'
import sys

from src.app.config import ConfigError, load_config

try:
    cfg = load_config(sys.argv[1:])
except ConfigError as err:
    print(f"error: {err}", file=sys.stderr)
    sys.exit(2)
for key in ("set", "data_url", "train_url", "resume", "pretrained", "device_target"):
    value = cfg[key]
    print(f"{key}={'' if value is None else value}")
PY
    )" || exit 2
    while IFS= read -r line; do
        value="${line#*=}"
        case "${line%%=*}" in
            set) CFG_set="$value" ;;
            data_url) CFG_data_url="$value" ;;
            train_url) CFG_train_url="$value" ;;
            resume) CFG_resume="$value" ;;
            pretrained) CFG_pretrained="$value" ;;
            device_target) CFG_device_target="$value" ;;
        esac
    done <<<"$lines"
}

# check_data ROOT SPLIT...: an ImageNet-style root must hold the splits; the digits demo set is written on first use.
check_data() {
    local root="$1" split
    shift
    [[ $CFG_set != digits && $root != *://* ]] || return 0
    for split in "$@"; do
        [[ -d $root/$split ]] || die "DATA_PATH '$root' has no $split/ folder of class subfolders"
    done
}

# refuse_to_overwrite: a train_url holding checkpoints is continued only when asked (--resume).
refuse_to_overwrite() {
    if [[ -z $CFG_resume ]] && compgen -G "$CFG_train_url/*.ckpt" >/dev/null; then
        die "'$CFG_train_url' already holds checkpoints of an earlier run: add --resume auto to continue it, \
--train_url DIR to start another run, or move it away"
    fi
}

check_device_target() {
    case "$1" in
        Ascend | GPU | CPU) ;;
        *) die "DEVICE_TARGET must be Ascend, GPU or CPU, got '$1'" ;;
    esac
}

# device_args ARGS...: the optional DEVICE_TARGET and DEVICE_ID positional arguments in front of the
# --key value overrides. Sets DEVICE_ARGS (the train.py/eval.py flags) and DEVICE_SHIFT (arguments used).
device_args() {
    DEVICE_ARGS=()
    DEVICE_SHIFT=0
    if (($#)) && [[ $1 != --* ]]; then
        check_device_target "$1"
        DEVICE_ARGS+=(--device_target "$1")
        DEVICE_SHIFT=1
        shift
    fi
    if (($#)) && [[ $1 != --* ]]; then
        check_count DEVICE_ID "$1" 0
        DEVICE_ARGS+=(--device_id "$1")
        DEVICE_SHIFT=$((DEVICE_SHIFT + 1))
    fi
}

check_count() { # check_count NAME VALUE MIN
    if ! [[ $2 =~ ^[0-9]+$ ]] || ((10#$2 < $3)); then
        die "$1 must be an integer >= $3, got '$2'"
    fi
}

# optional_count NAME MIN ARGS...: NAME takes the first of ARGS when it is there and not an option (an integer
# >= MIN); TAKEN is 1 then, else 0, for the caller's `shift "$TAKEN"`.
optional_count() {
    local name="$1" min="$2"
    shift 2
    TAKEN=0
    if (($#)) && [[ $1 != --* ]]; then
        check_count "$name" "$1" "$min"
        printf -v "$name" '%d' "$((10#$1))"
        # shellcheck disable=SC2034  # read by the caller
        TAKEN=1
    fi
}

# one_device_job DEVICE_ID CONFIG_PATH WORK_DIR [--key value ...]: the setup of the ModelZoo's one-device
# scripts. Exports DEVICE_ID (RANK_SIZE=DEVICE_NUM=1, no rank table); sets CONFIG, WORK_DIR and ARGS (the config,
# the device, then the user's overrides) and reads the configuration (CFG_*).
one_device_job() {
    check_count DEVICE_ID "$1" 0
    export DEVICE_ID="$((10#$1))" RANK_SIZE=1 DEVICE_NUM=1
    unset RANK_TABLE_FILE RANK_ID
    CONFIG="$(resolve_config "$2" "$3")"
    # shellcheck disable=SC2034  # read by the caller
    WORK_DIR="$3"
    shift 3
    normalise_extras "$@"
    find_python
    require_modules mindspore yaml
    ARGS=(--config "$CONFIG" --device_id "$DEVICE_ID" --device_target Ascend "${EXTRA[@]+"${EXTRA[@]}"}")
    read_config "${ARGS[@]}"
}

free_port() {
    "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# log_header LOG CMD...: a separator line with the date and the command (logs are appended, never replaced).
log_header() {
    local log="$1"
    shift
    printf '==== %s: %s\n' "$(date '+%F %T')" "$*" >>"$log"
}

# paths_from_yaml DIR KEY...: the KEYs (data_url, train_url, pretrained) of the merged configuration (read_config
# first) as --key value arguments in PATHS, relative ones resolved against DIR: the ModelZoo ran train.py in the
# working folder, so a YAML's relative paths (`data_url: ../data/imagenet`) mean the same here.
paths_from_yaml() {
    local dir="$1" key var value
    shift
    PATHS=()
    for key in "$@"; do
        var="CFG_$key"
        value="${!var:-}"
        [[ -n $value ]] || continue
        [[ $value == /* || $value == *://* ]] || value="$(abspath "$dir/$value")"
        PATHS+=("--$key" "$value")
    done
}

dry_run() { [[ ${DRY_RUN:-0} == 1 ]]; }

# launch_one ENTRY WORK_DIR LOG ARG...: python ENTRY ARG... in the foreground in WORK_DIR, output appended to
# LOG and shown; with DRY_RUN=1 only the plan is printed.
launch_one() {
    local entry="$1" dir="$2" log="$3"
    shift 3
    if dry_run; then
        printf 'plan: cwd %s log %s:' "$dir" "$log"
        printf ' %q' "$PYTHON" "$REPO_ROOT/$entry" "$@"
        echo
        return 0
    fi
    mkdir -p "$dir"
    cd "$dir" || exit 2 # MindSpore's own files (rank_0/, kernel_meta/, ...) land here, not in the repository
    log_header "$log" "$PYTHON" "$REPO_ROOT/$entry" "$@"
    "$PYTHON" "$REPO_ROOT/$entry" "$@" 2>&1 | tee -a "$log"
}

# rank_table_devices TABLE RANK_SIZE RANK_START: "rank device" lines of the ranks this server runs, i.e. the
# server of the table that holds rank RANK_START, whose ranks must be RANK_START..RANK_START+devices-1.
rank_table_devices() {
    "$PYTHON" - "$@" <<'PY'
import json
import sys

path, size, start = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
try:
    with open(path, encoding="utf-8") as handle:
        table = json.load(handle)
    servers = [{int(d["rank_id"]): int(d["device_id"]) for d in s["device"]} for s in table["server_list"]]
except (OSError, ValueError, KeyError, TypeError) as err:
    sys.exit(f"error: cannot read the devices of rank table {path}: {err!r} (expected a version 1.0 table "
             "with server_list[].device[].rank_id/device_id)")
ranks = sorted(r for server in servers for r in server)
if ranks != list(range(size)):
    sys.exit(f"error: {path} has ranks 0..{len(ranks) - 1} on {len(servers)} server(s), RANK_SIZE is {size}")
mine = [server for server in servers if start in server]
if not mine:
    sys.exit(f"error: RANK_START {start} is not a rank of {path} (ranks 0..{size - 1})")
local = sorted(mine[0])
if local[0] != start or local != list(range(start, start + len(local))):
    sys.exit(f"error: the server of rank {start} in {path} runs ranks {local}; RANK_START must be its first, "
             f"{local[0]}, and its ranks consecutive")
for rank in local:
    print(rank, mine[0][rank])
PY
}

# launch_rank_table TABLE RANK_SIZE RANK_START ARG...: one `train.py ARG...` per device of this server (the
# ModelZoo layout): rank r in ./train_parallel<r> with its log.txt, RANK_ID/DEVICE_ID/RANK_SIZE/DEVICE_NUM
# from the table, bound to its share of the CPU cores with taskset. Waits for all; when one fails the
# others are stopped. DRY_RUN=1 prints the per-rank plan.
launch_rank_table() {
    local table="$1" size="$2" start="$3" plan rank device i dir cores per first last rc status=0 stopping=0
    local running pid
    shift 3
    plan="$(rank_table_devices "$table" "$size" "$start")" || exit 2
    local -a RANKS=() DEVICES=()
    while read -r rank device; do
        RANKS+=("$rank")
        DEVICES+=("$device")
    done <<<"$plan"
    cores="$(nproc --all 2>/dev/null || getconf _NPROCESSORS_ONLN)"
    per=$((cores / ${#RANKS[@]}))
    ((per >= 1)) || per=1
    local -a BIND=()
    command -v taskset >/dev/null || echo "warning: taskset not found: ranks are not bound to CPU cores" >&2
    echo "rank table $table: ranks ${RANKS[0]}..${RANKS[-1]} of $size on this server, $cores CPU cores"
    PIDS=()
    trap 'echo "stopping all ranks" >&2; kill "${PIDS[@]}" 2>/dev/null || true; exit 130' INT TERM
    for i in "${!RANKS[@]}"; do
        rank="${RANKS[i]}"
        dir="$(pwd)/train_parallel$rank"
        first=$(((i * per) % cores))
        last=$((first + per - 1))
        BIND=()
        ! command -v taskset >/dev/null || BIND=(taskset -c "$first-$last")
        if dry_run; then
            printf 'plan: rank %s device %s cores %s-%s cwd %s log %s/log.txt:' "$rank" "${DEVICES[i]}" "$first" \
                "$last" "$dir" "$dir"
            printf ' %q' "RANK_TABLE_FILE=$table" "RANK_SIZE=$size" "DEVICE_NUM=$size" "RANK_ID=$rank" \
                "DEVICE_ID=${DEVICES[i]}" "${BIND[@]+"${BIND[@]}"}" "$PYTHON" "$REPO_ROOT/train.py" "$@"
            echo
            continue
        fi
        mkdir -p "$dir"
        log_header "$dir/log.txt" "RANK_ID=$rank DEVICE_ID=${DEVICES[i]}" "$PYTHON" "$REPO_ROOT/train.py" "$@"
        (
            cd "$dir" || exit 2
            exec env RANK_TABLE_FILE="$table" RANK_SIZE="$size" DEVICE_NUM="$size" RANK_ID="$rank" \
                DEVICE_ID="${DEVICES[i]}" "${BIND[@]+"${BIND[@]}"}" "$PYTHON" "$REPO_ROOT/train.py" "$@"
        ) >>"$dir/log.txt" 2>&1 &
        PIDS+=("$!")
        echo "rank $rank: device ${DEVICES[i]}, cores $first-$last, pid $!, log $dir/log.txt"
    done
    dry_run && return 0
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
                echo "rank ${RANKS[i]} stopped" >&2
            elif ((rc != 0)); then
                echo "rank ${RANKS[i]} failed with exit status $rc: see $(pwd)/train_parallel${RANKS[i]}/log.txt" >&2
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

# launch_msrun DIR WORKER_NUM LOCAL_WORKER_NUM MASTER_ADDR MASTER_PORT NODE_RANK ARG...: msrun starts this
# node's LOCAL_WORKER_NUM of the WORKER_NUM ranks of `train.py ARG...` (the node whose address is
# MASTER_ADDR also runs the scheduler); working directory DIR, one log per rank in DIR/msrun_log (several
# nodes: DIR/msrun_log_node<NODE_RANK>, so that nodes sharing a folder keep their own logs).
launch_msrun() {
    local dir="$1" workers="$2" local_workers="$3" addr="$4" port="$5" node="$6" log_dir=msrun_log interrupted=0 rc=0
    shift 6
    ((local_workers == workers)) || log_dir="msrun_log_node$node"
    local cmd=(msrun "--worker_num=$workers" "--local_worker_num=$local_workers" "--master_addr=$addr"
        "--master_port=$port" "--node_rank=$node" --join=True "--log_dir=$log_dir"
        "--cluster_time_out=${MSRUN_TIMEOUT:-600}" --tail_worker_log=0 "$REPO_ROOT/train.py" "$@")
    # msrun starts a scheduler wherever MASTER_ADDR is an address of the host (MindSpore 2.10,
    # mindspore/parallel/cluster/process_entity/_api.py: `if self.is_master ...: self.start_scheduler()`), so a node
    # above 0 on the master's host starts a second one, which cannot bind the port: say so before it happens.
    if ((node > 0)) && "$PYTHON" -c 'import socket, sys; socket.socket().bind((socket.gethostbyname(sys.argv[1]), 0))' \
        "$addr" 2>/dev/null; then
        echo "warning: MASTER_ADDR $addr is an address of this host, so msrun starts a second scheduler for node $node \
here, which fails beside node 0's and makes this launcher exit 1 even when its workers train; run node ranks above 0 \
on other servers, or every rank of this host as one node: bash scripts/run_distribute_train.sh CONFIG DATA_PATH \
RANK_SIZE" >&2
    fi
    if dry_run; then
        printf 'plan: node %s: ranks %s..%s of %s, cwd %s, logs %s/%s/worker_<i>.log:' "$node" \
            "$((node * local_workers))" "$((node * local_workers + local_workers - 1))" "$workers" "$dir" "$dir" "$log_dir"
        printf ' %q' "${cmd[@]}"
        echo
        return 0
    fi
    command -v msrun >/dev/null || die "msrun not found next to $PYTHON: is mindspore installed in that environment?"
    if ! python -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("mindspore") is None)' 2>/dev/null; then
        die "msrun starts its workers as 'python' from PATH (here: $(command -v python || echo none)), which has no \
mindspore: set PYTHON to the 'python' of an environment with mindspore"
    fi
    unset RANK_TABLE_FILE RANK_ID # msrun assigns ranks and devices itself
    mkdir -p "$dir"
    cd "$dir" || exit 2 # MindSpore's own files (rank_*/, kernel_meta/, ...) land here, not in the repository
    if [[ -d $log_dir ]]; then # msrun rewrites worker_<i>.log: keep the previous run's logs
        mv "$log_dir" "$log_dir.$(date +%Y%m%d-%H%M%S)"
    fi
    echo "msrun: node $node, $local_workers of $workers ranks, master $addr:$port, logs in $dir/$log_dir/worker_<i>.log"
    log_header log.txt "${cmd[@]}"
    trap 'interrupted=1' INT # msrun stops its workers on Ctrl+C but then exits with status 0
    "${cmd[@]}" 2>&1 | tee -a log.txt || rc=$?
    trap - INT
    if ((interrupted)); then
        echo "interrupted" >&2
        return 130
    fi
    if ((rc != 0 && node > 0)) && [[ -f $log_dir/scheduler.log ]]; then
        echo "msrun exit status $rc comes from the scheduler it started for node $node: MASTER_ADDR $addr is an \
address of this host (see the warning above); the workers' own results are in $dir/$log_dir/worker_<i>.log" >&2
    elif ((rc != 0)); then
        echo "distributed training failed (msrun exit status $rc): see $dir/$log_dir/worker_<i>.log" >&2
    fi
    return "$rc"
}
