"""Measure a model's speed: images/s, compile time, peak memory and the graph part's share of time;
or, with --flops, its parameters and MACs per image.

    python benchmark.py --arch vig_ti_224_gelu [--batch_size 8] [--image_size 224] [--mode infer|train|both]
        [--amp_level O0|O2] [--runs 10] [--kernel_impl auto|native|cpu] [--weights SET [SET ...] | --pretrained CKPT]
    python benchmark.py --against_plain_kernels --arch NAME [--weights SET ...] [--mode ...] [--runs 10]
    python benchmark.py --flops [--arch NAME ...] [--image_size 224]     (every registered model without --arch)
    python benchmark.py --against-pytorch --arch NAME [NAME ...] [--batch_size 8] [--image_size 224 | H W]
        [--mode infer|train|both] [--runs 10] [--warmup 4] [--no_latency] [--weights SET [SET ...]]
        [--official_code DIR [DIR ...]]
    python benchmark.py --against-pytorch --op_profile --arch NAME [--mode ...] [--runs 3] [--weights SET]

--against-pytorch measures each model side by side with the PyTorch reference (tools/torch_reference.py)
on the same weights and images, every measurement in a fresh process (tools/against_pytorch.py).
There --image_size also takes a height and a width (detection sizes: 800 1344), and --no_latency leaves
out the batch-1 latency of the exported models (minutes per model at such sizes). --official_code measures the
official models too (the official repositories' own files, tools/official_code.py), the second anchor. With
--op_profile it profiles instead: ms per call by operator kind on both sides (MindSpore's profiler,
torch.profiler), then each side's costliest operators.
--against_plain_kernels times the CPU formulation with its compiled kernels and without them (MindSpore's
own kernels, as VIG_DISABLE_KERNELS=1 runs), their calls interleaved in one process, on each weight set.

Training steps are forward, cross-entropy, backward and AdamW (no clipping, no EMA), in GRAPH_MODE.
Without --pretrained the models are measured with each weight set of --weights (tools/weight_sets.py):
calibrated (BatchNorm statistics measured on smooth images; the default), official (the official code's
initialisation, calibrated in PyTorch and converted; needs torch) and trained (a few epochs of train.py on
the demo digits); the last two are made once and cached in ~/.cache/vig_mindspore/benchmark. Fresh
weights would make denormal floats that slow CPUs several-fold.
"""
import argparse

from src.app.cli import run_cli
from src.app.config import ArgumentParser, int_in
from tools.weight_sets import WEIGHT_SETS


def main(argv=None):
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", nargs="+", help="registered model name(s); --flops without it: every model")
    parser.add_argument("--flops", action="store_true", help="print parameters and MACs per image instead of speed")
    parser.add_argument("--against-pytorch", action="store_true",
                        help="measure side by side with the PyTorch reference (needs torch, a test requirement)")
    parser.add_argument("--batch_size", type=int_in(1, 4096), default=8, help="images per call (1 to 4096)")
    parser.add_argument("--image_size", type=int_in(16, 4096), nargs="+", default=[224], metavar="SIZE",
                        help="side of the square input (16 to 4096); --against-pytorch also takes H W")
    parser.add_argument("--mode", choices=("infer", "train", "both"), default="both")
    parser.add_argument("--amp_level", choices=("O0", "O2", "O3"), default="O0")
    parser.add_argument("--runs", type=int_in(1, 10000), default=10, help="timed calls (1 to 10000)")
    parser.add_argument("--warmup", type=int_in(0, 1000), default=4,
                        help="--against-pytorch: untimed calls before the runs (0 to 1000)")
    parser.add_argument("--no_latency", action="store_true",
                        help="--against-pytorch: leave out the exported models' batch-1 latency")
    parser.add_argument("--official_code", nargs="+", default=[], metavar="DIR",
                        help="--against-pytorch: also measure the official models, from the vig_pytorch folder of "
                             "github huawei-noah/Efficient-AI-Backbones and the root of github yuan0038/GraphConvNet "
                             "(clones; 224 only)")
    parser.add_argument("--op_profile", action="store_true",
                        help="--against-pytorch: where one call's time goes, per operator, on both sides "
                             "(one model, one weight set; --runs profiled calls)")
    parser.add_argument("--kernel_impl", choices=("auto", "native", "cpu"), default="auto")
    parser.add_argument("--against_plain_kernels", action="store_true",
                        help="the CPU formulation with its compiled kernels against it on MindSpore's own kernels, "
                             "their calls interleaved in one process (--runs rounds)")
    parser.add_argument("--pretrained", help="a checkpoint to measure with instead of --weights")
    parser.add_argument("--weights", nargs="+", choices=WEIGHT_SETS, default=["calibrated"],
                        help="weight sets to measure with, each in turn (default: calibrated)")
    parser.add_argument("--device_target", default="CPU", choices=("CPU", "GPU", "Ascend"))
    args = parser.parse_args(argv)
    if len(args.image_size) > 2 or (len(args.image_size) == 2 and not args.against_pytorch):
        parser.error("--image_size takes one side (a square input); --against-pytorch also takes H W")
    if not args.against_pytorch and (args.no_latency or args.op_profile or args.official_code or
                                     args.warmup != parser.get_default("warmup")):
        parser.error("--warmup, --no_latency, --official_code and --op_profile belong to --against-pytorch")
    if args.pretrained and args.weights != parser.get_default("weights"):
        parser.error("--pretrained and --weights both name the weights: pass one of them")
    args.image_size = args.image_size[0] if len(args.image_size) == 1 else tuple(args.image_size)
    if args.flops:
        return flops(args.arch, args.image_size)
    if args.against_pytorch:
        if not args.arch:
            parser.error("--against-pytorch needs --arch NAME [NAME ...]")
        if args.amp_level != "O0" or args.pretrained or args.device_target != "CPU":
            parser.error("--against-pytorch compares float32 models with the weight sets of --weights on the CPU: "
                         "leave out --amp_level, --pretrained and --device_target")
        if args.op_profile:
            if len(args.arch) > 1 or len(args.weights) > 1:
                parser.error("--op_profile profiles one model with one weight set: one --arch NAME, one --weights SET")
            return op_profile(args)
        return against_pytorch(args)
    if not args.arch or len(args.arch) > 1:
        parser.error("speed is measured for one model: pass --arch NAME (or --flops for sizes)")

    from src.models import resolve_kernel_impl
    from tools.benchmark import benchmark, format_table, machine_description
    from src.app.device import init_device
    init_device(args.device_target)
    modes = ("infer", "train") if args.mode == "both" else (args.mode,)
    if args.against_plain_kernels:
        if args.device_target != "CPU" or args.amp_level != "O0" or args.kernel_impl != "auto":
            parser.error("--against_plain_kernels compares float32 CPU formulations: leave out --device_target, "
                         "--amp_level and --kernel_impl")
        return against_plain_kernels(args, modes)
    rows = []
    for weights in [None] if args.pretrained else args.weights:
        rows += benchmark(args.arch[0], args.batch_size, args.image_size, modes, args.amp_level, args.runs,
                          resolve_kernel_impl(args.kernel_impl, args.device_target), args.pretrained,
                          weights=weights)
    print(f"machine: {machine_description()}")
    print(format_table(rows))
    return rows


def against_plain_kernels(args, modes):
    from tools.benchmark import format_kernel_rows, kernels_against_plain, machine_description
    print(f"machine: {machine_description()}")
    print(format_kernel_rows([]), flush=True)
    rows = []
    for weights in [None] if args.pretrained else args.weights:
        for mode in modes:  # each row printed when measured
            rows.append(dict(arch=args.arch[0], weights=weights or "checkpoint", mode=mode,
                             **kernels_against_plain(args.arch[0], weights, args.batch_size, args.image_size, mode,
                                                     args.runs, pretrained=args.pretrained)))
            print(format_kernel_rows(rows[-1:]).splitlines()[-1], flush=True)
    return rows


def against_pytorch(args):
    from src.models import resolve_kernel_impl
    from tools.against_pytorch import compare, report
    modes = ("infer", "train") if args.mode == "both" else (args.mode,)
    result = compare(args.arch, args.batch_size, args.image_size, modes, args.runs, args.warmup,
                     kernel_impl=resolve_kernel_impl(args.kernel_impl, "CPU"), latency=not args.no_latency,
                     weight_sets=args.weights, official_code=args.official_code)
    print(report(result))
    return result


def op_profile(args):
    from src.models import resolve_kernel_impl
    from tools.against_pytorch import format_op_profile, profile_ops
    modes = ("infer", "train") if args.mode == "both" else (args.mode,)
    result = profile_ops(args.arch[0], args.batch_size, args.image_size, modes, args.runs, args.warmup,
                         kernel_impl=resolve_kernel_impl(args.kernel_impl, "CPU"), weights=args.weights[0])
    print(format_op_profile(result))
    return result


def flops(archs, image_size):
    """Parameters and MACs per image (tools/flops.py), one table row per model, printed as it is counted.
    Without ``archs`` every registered model that accepts ``image_size`` is counted."""
    from src.app.device import init_device
    from src.models import ModelError, canonical_name, list_models
    from tools.flops import format_sizes, model_size
    import mindspore as ms
    init_device("CPU", mode=ms.PYNATIVE_MODE)
    header, rows = format_sizes([]), []
    print(header, flush=True)
    for arch in [canonical_name(a) for a in archs] if archs else list_models():
        try:
            rows.append(model_size(arch, image_size))
        except ValueError as err:  # an input size the model does not accept
            if archs:
                raise ModelError(f"{arch} at {image_size}x{image_size}: {err}") from None
            print(f"| {arch} | {image_size} | not counted: {err} |", flush=True)
            continue
        print(format_sizes(rows[-1:])[len(header) + 1:], flush=True)
    return rows

if __name__ == "__main__":
    run_cli(main)
