"""The loss curve of a job from its metric events: a PNG, and a chart in the terminal."""

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .records import Metrics


@dataclass
class Curves:
    """A job's loss by step: train and eval, each a list of (step, loss) in order."""

    train: list[tuple[int, float]] = field(default_factory=list)
    eval: list[tuple[int, float]] = field(default_factory=list)


def curves(events: Iterable[Metrics], logging_steps: int) -> Curves:
    """Train and eval loss by step, from the job's METRICS events in order.

    Each event carries the step the run was at (`train_step`). Events recorded before the agent
    kept it are placed by count: a training dict every logging_steps, and an evaluation at the
    step of the training dicts before it."""
    out = Curves()
    for event in events:
        values = event.values()
        step = event.train_step
        if event.eval and "eval_loss" in values:
            at = step if step is not None else len(out.train) * logging_steps
            out.eval.append((at, values["eval_loss"]))
        elif not event.eval and "loss" in values:
            at = step if step is not None else (len(out.train) + 1) * logging_steps
            out.train.append((at, values["loss"]))
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
