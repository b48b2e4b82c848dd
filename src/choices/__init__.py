"""The names a configuration chooses among, in one place that imports nothing.

The configuration schema (``src/app/config.py``) lists these in every entry point's ``--help`` and checks
values against them before MindSpore or any model is imported; each implementation takes its names from
here, so the two cannot disagree. This package sits below every other one (``tests/test_layout.py``).
"""
# data: what a run's data root holds (an ImageNet-style tree of your own, or the bundled digits), and the
# training augmentations' modes
SETS = ("ImageNet", "digits")
INTERPOLATIONS = ("bicubic", "bilinear", "random")  # 'random': bilinear or bicubic per image (timm's)
ERASE_MODES = ("const", "rand", "pixel")
MIX_MODES = ("batch", "pair", "elem")
# models: the formulations of the layers, and the graph convolutions
KERNEL_IMPLS = ("native", "cpu")
GRAPH_CONVS = ("mr", "edge", "sage", "gin")
# engine: optimisation and precision
OPTIMIZERS = ("adamw", "sgd", "momentum")
SCHEDULERS = ("cosine_lr", "constant_lr", "exp_lr", "multistep_lr")
COSINE_STYLES = ("modelzoo", "timm")
AMP_LEVELS = ("O0", "O2", "O3")
# deploy: export formats and the extensions of their files
EXTENSIONS = {"MINDIR": ".mindir", "AIR": ".air", "ONNX": ".onnx"}
# app: devices, and MindSpore's execution-mode constants by name (mindspore.GRAPH_MODE, PYNATIVE_MODE)
DEVICE_TARGETS = ("CPU", "GPU", "Ascend")
MODES = {"GRAPH_MODE": 0, "PYNATIVE_MODE": 1}
