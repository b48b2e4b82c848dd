"""Measure a model's speed: images/s, compile time, peak memory and the graph part's share of time.

    python benchmark.py --arch vig_ti_224_gelu [--batch_size 8] [--image_size 224] [--mode infer|train|both]
        [--amp_level O0|O2] [--runs 10] [--kernel_impl auto|native|cpu] [--pretrained CKPT]

Training steps are forward, cross-entropy, backward and AdamW (no clipping, no EMA), in GRAPH_MODE.
Without --pretrained the BatchNorm statistics are calibrated on smooth images first (fresh weights
make denormal floats that slow CPUs several-fold).
"""
import argparse

from src.app.cli import run_cli


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", required=True)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--mode", choices=("infer", "train", "both"), default="both")
    parser.add_argument("--amp_level", choices=("O0", "O2", "O3"), default="O0")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--kernel_impl", choices=("auto", "native", "cpu"), default="auto")
    parser.add_argument("--pretrained", help="weights to measure with (default: calibrated BatchNorm statistics)")
    parser.add_argument("--device_target", default="CPU", choices=("CPU", "GPU", "Ascend"))
    args = parser.parse_args(argv)

    from src.models import resolve_kernel_impl
    from tools.benchmark import benchmark, format_table, machine_description
    from src.app.device import init_device
    init_device(args.device_target)
    modes = ("infer", "train") if args.mode == "both" else (args.mode,)
    rows = benchmark(args.arch, args.batch_size, args.image_size, modes, args.amp_level, args.runs,
                     resolve_kernel_impl(args.kernel_impl, args.device_target), args.pretrained)
    print(f"machine: {machine_description()}")
    print(format_table(rows))
    return rows


if __name__ == "__main__":
    run_cli(main)
