"""Convert an official PyTorch ViG, SViG or GraphConvNet checkpoint (.pth) into a MindSpore checkpoint.

    python convert_checkpoint.py --arch pvig_s_224_gelu --src pvig_s_82.1.pth.tar --dst pvig_s.ckpt [--ema]

PyTorch is not needed, and nothing in the file is executed: only tensor data is accepted.
"""
import argparse

from src.app.cli import run_cli


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", required=True, help="registered model name, e.g. vig_ti_224_gelu")
    parser.add_argument("--src", required=True, help="official checkpoint (.pth / .pth.tar)")
    parser.add_argument("--dst", required=True, help="output MindSpore checkpoint (.ckpt)")
    parser.add_argument("--ema", action="store_true", help="take 'state_dict_ema' from a training checkpoint")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --dst")
    args = parser.parse_args(argv)

    from src.weights.convert import convert_official_checkpoint
    info = convert_official_checkpoint(args.src, args.dst, args.arch, use_ema=args.ema, overwrite=args.overwrite)
    print(f"wrote {args.dst}: {info['tensors']} tensors, {info['num_classes']} classes, fits {args.arch}")
    if "graph_args" in info:  # SViG: evaluate with the thresholds it was trained with
        flags = " ".join(f"--{key} {value:g}" for key, value in info["graph_args"].items())
        print(f"the checkpoint was trained with {flags}: evaluate it with the same")


if __name__ == "__main__":
    run_cli(main)
