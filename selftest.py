"""The first thing to run on a new Ascend machine: every family's O2 training step, an injected overflow, a float32
forward against the CPU and the 310 export, checked on the device, with a table and a summary to paste into an issue.

    python selftest.py [FAMILY ...] [--device_id 0] [--device_target Ascend] [--image_size 224] [--batch_size 8]
                       [--steps 4] [--quick true]
    bash scripts/run_ascend_selftest.sh [DEVICE_ID] [FAMILY ...]

Families: vig, pvig, svig, graphconvnet, pgraphconvnet (default: all). --device_target CPU runs the same checks
on the CPU (the AIR export is then skipped). Exit status 0 when every check passed.
"""
import argparse
import os
import sys

from src.app.cli import run_cli
from src.app.config import ArgumentParser


def parse(argv=None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("families", nargs="*", help="families to check (default: all)")
    parser.add_argument("--device_target", default="Ascend", choices=("Ascend", "GPU", "CPU"))
    parser.add_argument("--device_id", type=int, default=0, help="device to check (DEVICE_ID in the environment wins)")
    parser.add_argument("--image_size", type=int, default=224, help="input size (the pyramid families: multiple of 32)")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=4, help="training steps; the last overflows on purpose")
    parser.add_argument("--quick", choices=("true", "false"), default="false",
                        help="true: only the first and last block of each stage (every layer kind, compiled sooner)")
    parser.add_argument("--cpu_reference", help=argparse.SUPPRESS)  # the CPU half of the forward check
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse(argv)
    from src.app import selftest
    if args.cpu_reference:
        selftest.cpu_reference(args.cpu_reference)
        return 0
    return selftest.run_selftest(args.device_target, args.device_id, args.families, args.image_size,
                                 args.batch_size, args.steps, entry=os.path.abspath(__file__),
                                 quick=args.quick == "true")


if __name__ == "__main__":
    run_cli(lambda: sys.exit(main()))
