"""Draw what a ViG model looks at in one image: a node's graph neighbours and Grad-CAM, per chosen block.

    python visualize.py --config configs/pvig_s_224_gelu.yaml --pretrained pvig_s.ckpt --image cat.jpg
        --layers 1 4 8 12 --out viz/ [--node ROW COL] [--class C]

For each block (1-based, counting every Grapher of the network) it writes block<NN>_neighbours.png: the
block's node grid on the image (pyramid models: that stage's grid; pooled key cells where the keys are
pooled), the centre node, its neighbours in the block's actual graph with the edges, and the
neighbours reached only through dilation in their own colour; and block<NN>_gradcam.png: the Grad-CAM
map of the block for the predicted class (or --class). The centre node is the block's most activated
node (Grad-CAM maximum) unless --node picks one (row, column of the first block's grid).
summary.json lists the classes and, per block, the centre and its neighbours.
"""
from src.app.cli import run_cli
from src.app.config import load_config

ARGUMENTS = [
    (("--image",), dict(required=True, help="the image to look at")),
    (("--layers",), dict(type=int, nargs="+", metavar="N",
                         help="block numbers, 1-based (default: the last block of each quarter of the network)")),
    (("--out",), dict(required=True, help="output folder (existing drawings are never replaced)")),
    (("--node",), dict(type=int, nargs=2, metavar=("ROW", "COL"),
                       help="centre node on the first block's grid (default: each block's most activated node)")),
    (("--class",), dict(type=int, dest="target_class", metavar="C",
                        help="class of the Grad-CAM maps (default: the predicted one)")),
]


def main(argv=None) -> dict:
    cfg = load_config(argv, description=__doc__, entry="visualize", arguments=ARGUMENTS)
    args = cfg.arguments
    from src.app.jobs import run_visualization  # MindSpore and the models load here, once the command line is good
    summary = run_visualization(cfg, args.image, args.out, args.layers, args.node, args.target_class)
    print(f"class {summary['target']} {summary['target_name']} ({summary['probability']:.1%}); "
          f"blocks {', '.join(summary['blocks'])} drawn in {args.out}")
    return summary


if __name__ == "__main__":
    run_cli(main)
