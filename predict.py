"""Classify images with a checkpoint: the top-k classes of each image with their probabilities and names.

    python predict.py --config configs/vig_ti_224_gelu.yaml --pretrained vig_ti.ckpt IMAGE [IMAGE ...]
        [--topk 5] [--json]

IMAGE is a file (any image PIL reads: grey, palette, RGBA, CMYK, 16-bit), a folder (searched
recursively) or a glob pattern ("photos/**/*.jpg"). Class names come from the training run's
config.yaml beside the checkpoint (its dataset's class folders), or are ImageNet-1k's for converted
official weights. An unreadable file is reported on stderr and the others are still classified; the exit
status is then 1.
"""
import json
import sys

from src.app.cli import run_cli
from src.app.config import int_in, load_config

ARGUMENTS = [
    (("images",), dict(nargs="+", metavar="IMAGE", help="image file, folder or glob pattern")),
    (("--topk",), dict(type=int_in(1, 100_000), default=5, help="classes to print per image (default: 5)")),
    (("--json",), dict(action="store_true", help="print the results as JSON on stdout")),
    (("--batch_size",), dict(type=int_in(1, 4096), default=8,
                             help="images per forward pass, 1 to 4096 (default: 8; the config file's batch_size, a "
                                  "training setting, is not read)")),
]


def main(argv=None) -> dict:
    cfg = load_config(argv, description=__doc__, entry="predict", arguments=ARGUMENTS)
    args = cfg.arguments
    from src.app.jobs import run_prediction  # MindSpore and the models load here, once the command line is good
    out = run_prediction(cfg, args.images, args.topk, args.batch_size)
    results = out["results"]
    if args.json:
        print(json.dumps(out, indent=1))
    else:
        print(f"classes: {out['classes_from']}")
        for result in results:
            if "top" in result:
                print(result["file"])
                for item in result["top"]:
                    print(f"  {item['probability']:7.2%}  {item['class']:4d}  {item['name']}")
    failed = [r for r in results if "error" in r]
    for result in failed:
        print(f"error: {result['file']}: {result['error']}", file=sys.stderr)
    if failed:
        print(f"{len(failed)} of {len(results)} images could not be classified", file=sys.stderr)
        sys.exit(1)
    return out


if __name__ == "__main__":
    run_cli(main)
