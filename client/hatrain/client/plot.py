"""The loss curve of a job from its metric events: a PNG, and a chart in the terminal."""

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Curves:
    train: list[tuple[int, float]] = field(default_factory=list)
    eval: list[tuple[int, float]] = field(default_factory=list)


def curves(metrics: list[tuple[bool, dict[str, float]]], logging_steps: int) -> Curves:
    """metrics: (is_eval, values) in event order. Axolotl's printed dicts carry the epoch, not
    the step: a training dict is logged every logging_steps, and an evaluation happens at the
    step of the training dicts before it (0 for the one before training starts)."""
    out = Curves()
    for is_eval, values in metrics:
        if is_eval and "eval_loss" in values:
            out.eval.append((len(out.train) * logging_steps, values["eval_loss"]))
        elif not is_eval and "loss" in values:
            out.train.append(((len(out.train) + 1) * logging_steps, values["loss"]))
    return out


def write_png(data: Curves, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    if data.train:
        ax.plot(*zip(*data.train, strict=True), label="train loss", marker=".")
    if data.eval:
        ax.plot(*zip(*data.eval, strict=True), label="eval loss", marker="o")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def terminal_chart(data: Curves, title: str) -> str:
    import plotext

    plotext.clf()
    plotext.plotsize(80, 20)
    if data.train:
        plotext.plot(*map(list, zip(*data.train, strict=True)), label="train loss")
    if data.eval:
        plotext.plot(*map(list, zip(*data.eval, strict=True)), label="eval loss")
    plotext.title(title)
    plotext.xlabel("step")
    return str(plotext.build())
