#!/bin/bash
# Offline inference on an Ascend 310 host: preprocess.py -> ascend310_infer (C++) -> postprocess.py.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
    cat <<'EOT'
Usage: bash scripts/run_infer_310.sh MINDIR_PATH DATA_PATH CONFIG [DEVICE_ID]

  MINDIR_PATH  export.py --file_format MINDIR output (batch size 1, the image_size of CONFIG)
  DATA_PATH    dataset root with a val/ folder of class folders
  CONFIG       YAML file of the model, as for eval.py (same preprocessing), e.g. configs/vig_ti_224_gelu.yaml
  DEVICE_ID    Ascend device id (default: $DEVICE_ID, else 0)

Each run writes into a new folder ./infer_310_<date>_<time>_<n>/ (preprocess_Result/, result_Files/ and the logs
build.log, preprocess.log, infer.log, acc.log); nothing of an earlier run is touched, and two runs never share a
folder. PREPROCESS_PATH=DIR reuses inputs an earlier run preprocessed with the same settings and files.
The C++ application is rebuilt when its sources changed since the last build (one build at a time).
Needs an Ascend 310 host with the CANN toolkit and the MindSpore Lite cloud-side inference package
(mindspore-lite-<version>-linux-<arch>, the version of the MindSpore that exported the model, from
https://www.mindspore.cn/lite/docs/en/master/use/downloads.html); elsewhere run `python infer.py` between
preprocess.py and postprocess.py.
Environment: DRY_RUN=1 (print the plan only, on any host), ASCEND_HOME (default /usr/local/Ascend), PYTHON,
PREPROCESS_PATH, LITE_HOME (the unpacked
MindSpore Lite package), MS_INFER_API (lite, or legacy with MINDSPORE_PATH for a MindSpore <= 2.1 Ascend 310
package) and MS_CXX11_ABI (see ascend310_infer/build.sh).
EOT
}

# run_stage NAME LOG CMD...: one stage with its output in a log; at the first failure show the end of the log
# (the Python entry points print one "error: ..." line there) and stop.
run_stage() {
    local name="$1" log="$2"
    shift 2
    echo "[$name] log: $log"
    if ! "$@" >"$log" 2>&1; then
        echo "error: $name failed; end of $log:" >&2
        tail -n 5 "$log" >&2
        exit 1
    fi
}

# source_hash: what the application is built from (sources, build files, API choice).
source_hash() {
    (
        cd "$REPO_ROOT/ascend310_infer"
        find src inc CMakeLists.txt build.sh -type f -print0 | sort -z | xargs -0 sha256sum
        echo "api=${MS_INFER_API:-lite} lite=${LITE_HOME:-} ms=${MINDSPORE_PATH:-} abi=${MS_CXX11_ABI:-}"
    ) | sha256sum | cut -d' ' -f1
}

check_usage 3 "$@"
(($# <= 4)) || {
    usage >&2
    exit 1
}
model="$(abspath "$1")"
data="$(abspath "$2")"
config="$(resolve_config "$3")"
device_id="${4:-${DEVICE_ID:-0}}"
check_count DEVICE_ID "$device_id" 0
[[ -f "$model" ]] || die "MINDIR_PATH $1 not found; export it with: python export.py --config CONFIG --pretrained CKPT --file_format MINDIR"
[[ "$model" == *.mindir ]] || die "MINDIR_PATH $1 is not a .mindir file"
[[ -d "$data/val" ]] || die "DATA_PATH $2 has no val/ folder (expected DATA_PATH/val/<class>/<image>)"
find_python

app="$REPO_ROOT/ascend310_infer/out/main"
# DRY_RUN=1: the plan of the three stages, on any host; nothing is built, written or run.
if dry_run; then
    work="$PWD/infer_310_$(date +%Y%m%d_%H%M%S)_XXXX"
    preprocess_path="$(abspath "${PREPROCESS_PATH:-$work/preprocess_Result}")"
    echo "model: $model"
    echo "data: $data/val, config: $config, device: $device_id, outputs: $work (a new folder)"
    [[ -d ${ASCEND_HOME:-/usr/local/Ascend} ]] || echo "note: no Ascend environment here (${ASCEND_HOME:-/usr/local/Ascend} \
missing; set ASCEND_HOME): a real run stops before the build"
    printf 'plan: build %q (log %s)\n' "$REPO_ROOT/ascend310_infer/build.sh" "$work/build.log"
    printf 'plan: preprocess (log %s):' "$work/preprocess.log"
    printf ' %q' "$PYTHON" "$REPO_ROOT/preprocess.py" --config "$config" --data_url "$data" --preprocess_path \
        "$preprocess_path"
    printf '\nplan: inference (log %s):' "$work/infer.log"
    printf ' %q' "$app" "--mindir_path=$model" "--input_path=$preprocess_path" "--result_path=$work/result_Files" \
        "--device_id=$device_id"
    printf '\nplan: accuracy (log %s):' "$work/acc.log"
    printf ' %q' "$PYTHON" "$REPO_ROOT/postprocess.py" --preprocess_path "$preprocess_path" --result_path \
        "$work/result_Files"
    echo
    exit 0
fi

# Check for Ascend before anything slow: without it the C++ step can neither build nor run.
ascend_home="${ASCEND_HOME:-/usr/local/Ascend}"
if [[ ! -d "$ascend_home" ]]; then
    die "no Ascend environment ($ascend_home missing; set ASCEND_HOME): the 310 step needs an Ascend 310 host with the CANN toolkit; on other machines run python infer.py (MINDIR or ONNX) between preprocess.py and postprocess.py"
fi
# The toolkit's own script sets LD_LIBRARY_PATH, ASCEND_OPP_PATH, ... for the app; where it lives depends on the
# CANN version and package.
for env_script in "$ascend_home/set_env.sh" "$ascend_home/ascend-toolkit/set_env.sh" "$ascend_home/nnae/set_env.sh" \
    "$ascend_home/bin/setenv.bash"; do
    if [[ -f "$env_script" ]]; then
        # Vendor scripts read unset variables and may end on a false test: neither must stop this script.
        set +eu
        # shellcheck source=/dev/null
        source "$env_script"
        set -eu
        echo "environment: $env_script"
        break
    fi
done

stamp="$REPO_ROOT/ascend310_infer/out/source.sha256"
work="$(mktemp -d "$PWD/infer_310_$(date +%Y%m%d_%H%M%S)_XXXX")"
echo "model: $model"
echo "data: $data/val, config: $config, device: $device_id, outputs: $work"

# Build before the slow preprocessing, so that a missing or wrong package stops the run at once. The lock
# serialises builds of concurrent runs; a binary built from other sources is rebuilt.
exec 9>"$REPO_ROOT/ascend310_infer/.build.lock"
flock 9
wanted="$(source_hash)"
if [[ -x "$app" && -f "$stamp" && "$(cat "$stamp")" == "$wanted" ]]; then
    echo "[build] $app is up to date"
else
    if [[ ! -x "$app" && "${MS_INFER_API:-lite}" == lite && -z "${LITE_HOME:-}" ]]; then
        die "LITE_HOME is not set: the 310 step is built against MindSpore Lite; download the cloud-side inference package mindspore-lite-<version>-linux-<arch>.tar.gz from https://www.mindspore.cn/lite/docs/en/master/use/downloads.html, unpack it and set LITE_HOME to that directory"
    fi
    run_stage build "$work/build.log" env PYTHON="$PYTHON" bash "$REPO_ROOT/ascend310_infer/build.sh"
    echo "$wanted" >"$stamp"
fi
flock -u 9
# The library path of the package the app was linked against (written by the build).
if [[ -f "$REPO_ROOT/ascend310_infer/out/runtime_env.sh" ]]; then
    # shellcheck source=/dev/null
    source "$REPO_ROOT/ascend310_infer/out/runtime_env.sh"
fi

preprocess_path="$(abspath "${PREPROCESS_PATH:-$work/preprocess_Result}")"
result_path="$work/result_Files"
run_stage preprocess "$work/preprocess.log" \
    "$PYTHON" "$REPO_ROOT/preprocess.py" --config "$config" --data_url "$data" --preprocess_path "$preprocess_path"
run_stage inference "$work/infer.log" \
    "$app" --mindir_path="$model" --input_path="$preprocess_path" --result_path="$result_path" --device_id="$device_id"
run_stage accuracy "$work/acc.log" \
    "$PYTHON" "$REPO_ROOT/postprocess.py" --preprocess_path "$preprocess_path" --result_path "$result_path"
cat "$work/acc.log"
