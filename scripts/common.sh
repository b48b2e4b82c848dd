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

# resolve_config CONFIG: the YAML file's absolute path, relative to the current directory or the repository.
resolve_config() {
    if [[ -f $1 ]]; then
        abspath "$1"
    elif [[ $1 != /* && -f $REPO_ROOT/$1 ]]; then
        abspath "$REPO_ROOT/$1"
    else
        die "config file '$1' not found (looked in $(pwd) and $REPO_ROOT)"
    fi
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

# normalise_extras ARG...: sets EXTRA to the extra `--key value` pairs (`--key=value` split in two,
# path values made absolute); anything else is a usage error.
normalise_extras() {
    EXTRA=()
    local key value
    while (($#)); do
        key="$1"
        [[ $key == --?* ]] || die "unexpected argument '$key': extra options are --key value pairs (see --help)"
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
for key in ("set", "train_url", "resume", "pretrained", "device_target"):
    value = cfg[key]
    print(f"{key}={'' if value is None else value}")
PY
    )" || exit 2
    while IFS= read -r line; do
        value="${line#*=}"
        case "${line%%=*}" in
            set) CFG_set="$value" ;;
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
    [[ $CFG_set != digits ]] || return 0
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

free_port() {
    "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# log_header LOG CMD...: a separator line with the date and the command (logs are appended, never replaced).
log_header() {
    local log="$1"
    shift
    printf '==== %s: %s\n' "$(date '+%F %T')" "$*" >>"$log"
}
