"""Training curves (loss, learning rate, validation accuracy) as a PNG, from the metrics log."""
import json


def plot_training_curves(metrics_path: str, png_path: str) -> str:
    """Draw on matplotlib's file-only Agg canvas, leaving the caller's pyplot backend as it was."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    steps, epochs = [], []
    with open(metrics_path, encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            (steps if record["type"] == "step" else epochs).append(record)
    fig = Figure(figsize=(15, 4))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3)
    axes[0].plot([r["step"] for r in steps], [r["loss"] for r in steps], label="train loss")
    axes[0].set_xlabel("step")
    axes[0].set_title("loss")
    axes[1].plot([r["step"] for r in steps], [r["lr"] for r in steps])
    axes[1].set_xlabel("step")
    axes[1].set_title("learning rate")
    evaluated = [r for r in epochs if "top1" in r]
    for key, label in (("top1", "top-1"), ("top5", "top-5"), ("ema_top1", "EMA top-1")):
        points = [(r["epoch"], r[key]) for r in evaluated if key in r]
        if points:
            axes[2].plot(*zip(*points), marker="o", label=label)
    axes[2].set_xlabel("epoch")
    axes[2].set_title("validation accuracy (%)")
    axes[2].legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    return png_path
