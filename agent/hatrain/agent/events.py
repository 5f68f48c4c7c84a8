"""Job events: the ordered, append-only stream every watcher reads."""

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from hatrain.rpc.readings import GpuUsage, Metric, Progress

__all__ = ["Event", "EventKind", "GpuUsage", "Metric", "Progress", "progress_record"]


class EventKind(StrEnum):
    STATE = "state"
    LOG = "log"
    METRICS = "metrics"
    PROGRESS = "progress"
    GPU = "gpu"


def progress_record(progress: Progress) -> list[object]:
    return [
        progress.phase,
        progress.current,
        progress.total,
        progress.rate,
        progress.elapsed_seconds,
        progress.eta_seconds,
        progress.unit,
    ]


def _gpu_usage_record(usage: GpuUsage) -> list[object]:
    return [usage.uuid, usage.memory_used_mb, usage.memory_total_mb, usage.utilization_percent]


@dataclass(slots=True)
class Event:
    """One event; seq and time are given by the store when it is appended.

    A LOG event's `line` holds one or more lines of output, joined by newlines: a job printing
    as fast as it can is parsed, stored and read back in runs of lines, not a Python object per
    line. Each line is an event of its own, with its own seq, on the wire.
    """

    kind: EventKind
    step: str = ""
    state: str = ""
    reason: str = ""
    message: str = ""
    line: str = ""
    stream: str = ""
    metrics: tuple[Metric, ...] = ()
    eval: bool = False
    progress: Progress | None = None
    exit_code: int | None = None
    # A METRICS event's place in the run: the train bar's step when the dict was printed.
    train_step: int | None = None
    gpu_usage: tuple[GpuUsage, ...] = ()
    seq: int = 0
    time: float = 0.0

    def line_count(self) -> int:
        """How many seqs the event takes: one per line of a LOG event, else one."""
        return self.line.count("\n") + 1 if self.kind is EventKind.LOG else 1

    def to_record(self) -> dict[str, Any]:
        """The compact JSON form stored in SQLite (defaults left out)."""
        rec: dict[str, Any] = {}
        for key in ("step", "state", "reason", "message", "line", "stream"):
            value = getattr(self, key)
            if value:
                rec[key] = value
        if self.metrics:
            rec["metrics"] = [[m.name, m.value, m.text] for m in self.metrics]
        if self.eval:
            rec["eval"] = True
        if self.progress is not None:
            rec["progress"] = progress_record(self.progress)
        if self.exit_code is not None:
            rec["exit_code"] = self.exit_code
        if self.train_step is not None:
            rec["train_step"] = self.train_step
        if self.gpu_usage:
            rec["gpu_usage"] = [_gpu_usage_record(g) for g in self.gpu_usage]
        return rec

    @classmethod
    def from_record(cls, kind: str, seq: int, time: float, rec: dict[str, Any]) -> "Event":
        progress = rec.get("progress")
        return cls(
            kind=EventKind(kind),
            seq=seq,
            time=time,
            step=rec.get("step", ""),
            state=rec.get("state", ""),
            reason=rec.get("reason", ""),
            message=rec.get("message", ""),
            line=rec.get("line", ""),
            stream=rec.get("stream", ""),
            metrics=tuple(Metric(n, v, t) for n, v, t in rec.get("metrics", ())),
            eval=rec.get("eval", False),
            progress=Progress(*progress) if progress else None,
            exit_code=rec.get("exit_code"),
            train_step=rec.get("train_step"),
            gpu_usage=tuple(GpuUsage(*g) for g in rec.get("gpu_usage", ())),
        )
