#!/bin/bash
# Offline inference on an Ascend 310 host: preprocess.py -> ascend310_infer (C++) -> postprocess.py.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: bash scripts/run_infer_310.sh MINDIR_PATH DATA_PATH CONFIG [DEVICE_ID]

  MINDIR_PATH  export.py --file_format MINDIR output (batch size 1, the image_size of CONFIG)
  DATA_PATH    dataset root with a val/ folder of class folders
  CONFIG       YAML file of the model, as for eval.py (same preprocessing), e.g. configs/vig_ti_224_gelu.yaml
  DEVICE_ID    Ascend device id (default: $DEVICE_ID, else 0)

Writes into the current directory, replacing earlier runs: preprocess_Result/, result_Files/ and the logs
build.log, preprocess.log, infer.log, acc.log. Needs an Ascend 310 host with the CANN toolkit and the MindSpore
Lite cloud-side inference package (mindspore-lite-<version>-linux-<arch>, the version of the MindSpore that
exported the model, from https://www.mindspore.cn/lite/docs/en/master/use/downloads.html); elsewhere run
`python infer.py` between preprocess.py and postprocess.py.
Environment: ASCEND_HOME (default /usr/local/Ascend), PYTHON, LITE_HOME (the unpacked MindSpore Lite package,
needed while ascend310_infer/out/main is not built), MS_INFER_API (lite, or legacy with MINDSPORE_PATH for a
MindSpore <= 2.1 Ascend 310 package) and MS_CXX11_ABI (see ascend310_infer/build.sh).
EOF
}

die() {
    echo "error: $*" >&2
    exit 2
}

# Run one stage with its output in a log; at the first failure show the end of the log (the Python entry
# points print one "error: ..." line there) and stop.
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

if [[ ${1:-} == -h || ${1:-} == --help ]]; then
    usage
    exit 0
fi
if (($# < 3 || $# > 4)); then
    usage >&2
    exit 1
fi

# Repository files are found relative to this script, so it runs from the root, from scripts/ or elsewhere;
# the arguments are relative to the caller's directory.
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
model="$(realpath -m -- "$1")"
data="$(realpath -m -- "$2")"
# CONFIG may also be relative to the repository (configs/x.yaml works from scripts/), as in the other launchers.
config="$3"
if [[ ! -f "$config" && "$config" != /* && -f "$root/$config" ]]; then
    config="$root/$config"
fi
config="$(realpath -m -- "$config")"
device_id="${4:-${DEVICE_ID:-0}}"
python="${PYTHON:-$(command -v python || command -v python3 || echo python)}"

[[ -f "$model" ]] || die "MINDIR_PATH $1 not found; export it with: python export.py --config CONFIG --pretrained CKPT --file_format MINDIR"
[[ "$model" == *.mindir ]] || die "MINDIR_PATH $1 is not a .mindir file"
[[ -d "$data/val" ]] || die "DATA_PATH $2 has no val/ folder (expected DATA_PATH/val/<class>/<image>)"
[[ -f "$config" ]] || die "CONFIG $3 not found (looked in $PWD and $root)"
[[ "$device_id" =~ ^[0-9]+$ ]] || die "DEVICE_ID must be a non-negative integer, not '$device_id'"
command -v "$python" >/dev/null || die "no python interpreter '$python': set PYTHON to the one that has MindSpore"

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

app="$root/ascend310_infer/out/main"
if [[ ! -x "$app" && "${MS_INFER_API:-lite}" == lite && -z "${LITE_HOME:-}" ]]; then
    die "LITE_HOME is not set: the 310 step is built against MindSpore Lite; download the cloud-side inference package mindspore-lite-<version>-linux-<arch>.tar.gz from https://www.mindspore.cn/lite/docs/en/master/use/downloads.html, unpack it and set LITE_HOME to that directory"
fi

echo "model: $model"
echo "data: $data/val, config: $config, device: $device_id"
work="$PWD"
preprocess_path="$work/preprocess_Result"
result_path="$work/result_Files"

# Build before the slow preprocessing, so that a missing or wrong package stops the run at once.
if [[ -x "$app" ]]; then
    echo "[build] using $app (delete ascend310_infer/out to rebuild)"
else
    run_stage build "$work/build.log" env PYTHON="$python" bash "$root/ascend310_infer/build.sh"
fi
# The library path of the package the app was linked against (written by the build).
if [[ -f "$root/ascend310_infer/out/runtime_env.sh" ]]; then
    # shellcheck source=/dev/null
    source "$root/ascend310_infer/out/runtime_env.sh"
fi

# preprocess.py refuses a directory that already holds data, so start from an empty one.
rm -rf "$preprocess_path"
run_stage preprocess "$work/preprocess.log" \
    "$python" "$root/preprocess.py" --config "$config" --data_url "$data" --preprocess_path "$preprocess_path"

# Stale result files would be scored as if this model had written them.
rm -rf "$result_path"
run_stage inference "$work/infer.log" \
    "$app" --mindir_path="$model" --input_path="$preprocess_path" --result_path="$result_path" --device_id="$device_id"

run_stage accuracy "$work/acc.log" \
    "$python" "$root/postprocess.py" --preprocess_path "$preprocess_path" --result_path "$result_path"
cat "$work/acc.log"
