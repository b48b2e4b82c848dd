"""Convert an official PyTorch ViG, SViG or GraphConvNet checkpoint (.pth) into a MindSpore checkpoint.

    python convert_checkpoint.py --arch pvig_s_224_gelu --src pvig_s_82.1.pth.tar --dst pvig_s.ckpt [--ema]
    python convert_checkpoint.py --arch pvig_s_224_gelu --download --dst pvig_s.ckpt

--download fetches the official release file of the arch (the URL in its default cfg) into the cache
folder (VIG_WEIGHTS_CACHE, default ~/.cache/vig_mindspore/weights), resuming an interrupted transfer and
checking the file's SHA-256 where it is known, then converts it. PyTorch is not needed, and nothing in
the file is executed: only tensor data is accepted.
"""
import argparse

from src.app.cli import run_cli
from src.app.config import ArgumentParser


def main(argv=None) -> None:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", required=True, help="registered model name, e.g. vig_ti_224_gelu")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--src", help="official checkpoint (.pth / .pth.tar)")
    source.add_argument("--download", action="store_true", help="fetch the arch's official release file (cached)")
    parser.add_argument("--dst", required=True, help="output MindSpore checkpoint (.ckpt)")
    parser.add_argument("--ema", action="store_true", help="take 'state_dict_ema' from a training checkpoint")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --dst")
    args = parser.parse_args(argv)

    from src.weights.convert import check_destination, convert_official_checkpoint, fetch_release
    src = args.src
    if args.download:
        check_destination(args.dst, args.overwrite)
        src = fetch_release(args.arch)
        print(f"official checkpoint: {src}")
    info = convert_official_checkpoint(src, args.dst, args.arch, use_ema=args.ema, overwrite=args.overwrite)
    transform = info["transform"]
    print(f"wrote {args.dst}: {info['tensors']} tensors, {info['num_classes']} classes, fits {args.arch}; recorded "
          f"evaluation transform: image_size {transform['image_size']}, mean {transform['mean']}, std "
          f"{transform['std']}, crop_pct {transform['crop_pct']}")
    if "graph_args" in info:  # SViG: evaluate with the thresholds it was trained with
        flags = " ".join(f"--{key} {value:g}" for key, value in info["graph_args"].items())
        print(f"the checkpoint was trained with {flags}: evaluate it with the same")


if __name__ == "__main__":
    run_cli(main)
