#!/bin/bash
# The one-command demo: train vig_nano_gelu on scikit-learn's digits (CPU, a few minutes), then evaluate
# the best checkpoint with its model weights and with its EMA weights.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
    cat <<'EOF'
Usage: bash scripts/run_demo.sh [--new] [--key value ...]

  --new        start a fresh run in a new folder <train_url>-<date>-<time> even if an earlier one exists
  --key value  overrides of configs/demo.yaml, e.g. --epochs 3 (passed to train.py and eval.py)

Needs only `pip install -r requirements.txt`: the digits are written to data/digits on first use.
Trains into the config's train_url (outputs/demo), then prints top-1 of best.ckpt with the model
weights and with the EMA weights. Outputs of an earlier demo are never overwritten: a run with
last.ckpt is continued (`--resume auto`; a finished run trains nothing and is only evaluated again),
and a run that stopped before its first last.ckpt is left alone for a new dated folder.
Environment: PYTHON (interpreter to use).
EOF
}

NEW=0
ARGS=()
while (($#)); do
    case "$1" in
        -h | --help)
            usage
            exit 0
            ;;
        --new)
            NEW=1
            shift
            ;;
        *)
            ARGS+=("$1")
            shift
            ;;
    esac
done
normalise_extras "${ARGS[@]+"${ARGS[@]}"}"
find_python
require_modules mindspore yaml sklearn matplotlib
cd "$REPO_ROOT" # demo.yaml's data_url and train_url are relative to the repository
CONFIG=configs/demo.yaml
read_config --config "$CONFIG" "${EXTRA[@]+"${EXTRA[@]}"}"
TRAIN_URL="$CFG_train_url"
RESUME=()

new_folder() {
    TRAIN_URL="${CFG_train_url%/}-$(date +%Y%m%d-%H%M%S)"
}

if ((NEW)); then
    new_folder
elif [[ -n $CFG_resume ]]; then
    : # the user said what to resume
elif [[ -f $TRAIN_URL/last.ckpt ]]; then
    echo "continuing the demo run in $TRAIN_URL (a finished run is only evaluated again; --new starts another)"
    RESUME=(--resume auto)
elif compgen -G "$TRAIN_URL/*.ckpt" >/dev/null; then
    new_folder
    echo "$CFG_train_url holds an unfinished demo run without last.ckpt: it stays as it is; training in $TRAIN_URL"
fi

TRAIN=(train.py --config "$CONFIG" "${EXTRA[@]+"${EXTRA[@]}"}" --train_url "$TRAIN_URL" "${RESUME[@]+"${RESUME[@]}"}")
echo "== training: $PYTHON ${TRAIN[*]}"
"$PYTHON" "${TRAIN[@]}"

BEST="$TRAIN_URL/best.ckpt"
[[ -f $BEST ]] || die "training wrote no $BEST"
for ema in false true; do
    weights=model
    [[ $ema == false ]] || weights=EMA
    echo "== evaluating $BEST with the $weights weights"
    "$PYTHON" eval.py --config "$CONFIG" "${EXTRA[@]+"${EXTRA[@]}"}" --pretrained "$BEST" --use_ema "$ema"
done
echo "== demo outputs (checkpoints, train.log, metrics.jsonl, training_curves.png) in $(abspath "$TRAIN_URL")"
