"""How jobs and events look on a terminal: rich tables and a live progress line."""

import contextlib
import math
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TransferSpeedColumn,
)
from rich.table import Table
from rich.text import Text

from .records import (
    Event,
    GpuReading,
    GpuUsage,
    HostStatus,
    Job,
    JobState,
    LogLine,
    Metrics,
    ProgressUpdate,
    StateChange,
    TeamHostStatus,
)
from .records import Progress as JobProgress

_STYLE = {"succeeded": "green", "failed": "red", "cancelled": "yellow", "queued": "dim"}


def _fmt(value: float | None, spec: str = ".4g") -> str:
    if value is None:
        return "-"
    return "nan" if math.isnan(value) else format(value, spec)


def _duration(seconds: float) -> str:
    if seconds <= 0 or math.isinf(seconds) or math.isnan(seconds):
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x00, 0x20), 0x7F) if c != 0x09}
_CONTROL.update({0x0A: "\\n", 0x0D: "\\r"})


def safe(text: str) -> str:
    """Text from a job or a host, fit to print: control characters (escape sequences that
    could move the cursor, clear the screen or retitle the terminal) shown escaped. Print it
    with markup off, as everything here does, so that `[...]` in it stays text."""
    if text.isprintable():
        return text
    return text.translate(_CONTROL).translate({0x9B: "\\x9b"})


def logs_hint(job_id: str) -> str:
    return f"see: hatrain-client logs {job_id} --tail 50"


def job_progress(job: Job) -> str:
    p = job.progress
    if job.state in (JobState.PREPROCESSING, JobState.TRAINING) and p is not None and p.total:
        return f"{p.phase} {p.current}/{p.total}"
    return ""


def jobs_table(jobs: Iterable[Job]) -> Table:
    table = Table(box=None, header_style="bold")
    for column in ("HOST", "ID", "USER", "STATE", "NAME", "GPUS", "PROGRESS", "LOSS", "INFO"):
        table.add_column(column)
    now = time.time()
    for job in jobs:
        state = job.state.value
        if job.state == JobState.QUEUED:
            info = f"position {job.queue_position}"
            if job.pending_reason:
                info += f": {job.pending_reason}"
        elif job.state == JobState.FAILED:
            info = job.failure_reason
        else:
            info = _duration(now - job.created_at) + " ago" if job.ended else ""
        loss = job.last_metrics.get("loss")
        table.add_row(
            Text(safe(job.host)),
            Text(job.id),
            Text(safe(job.user)),
            Text(state, style=_STYLE.get(state, "cyan")),
            Text(safe(job.name)),
            str(job.spec.gpus),
            Text(safe(job_progress(job))),
            _fmt(loss),
            Text(safe(info)),
        )
    return table


def gpu_usage_text(usage: Iterable[GpuUsage]) -> str:
    """`GPU-3a9cf04a… 87% 12.3/140.4 GiB` for each GPU, comma-separated."""
    return ", ".join(
        f"{g.uuid[:12]}… {g.utilization_percent}% "
        f"{g.memory_used_mb / 1024:.1f}/{g.memory_total_mb / 1024:.1f} GiB"
        for g in usage
    )


def describe(job: Job) -> str:
    lines = [
        f"job {job.id} on {job.host}: {job.state.value}",
        f"  name      {job.name}   user {job.user}   image {job.spec.image}",
        f"  gpus      {job.spec.gpus} {' '.join(job.gpu_uuids)}".rstrip(),
    ]
    if job.state == JobState.QUEUED:
        lines.append(f"  queue     position {job.queue_position}")
        if job.pending_reason:
            lines.append(f"  waiting   {job.pending_reason}")
    if job.progress is not None and job.progress.total:
        p = job.progress
        lines.append(f"  progress  {p.phase} {p.current}/{p.total}  eta {_duration(p.eta_seconds)}")
    if job.gpu_usage:
        lines.append(f"  gpu use   {gpu_usage_text(job.gpu_usage)}")
    if job.last_metrics:
        shown = ", ".join(
            f"{k} {_fmt(v)}" for k, v in sorted(job.last_metrics.items()) if _headline(k)
        )
        lines.append(f"  metrics   {shown}")
    if job.stop_reason and not job.ended:
        lines.append(f"  stopping  {job.stop_reason} requested")
    if job.failure_reason:
        lines.append(f"  failed    {job.failure_reason}: {job.hint}")
    if job.exit_code is not None:
        lines.append(f"  exit code {job.exit_code}")
    lines.append(f"  run dir   {job.run_dir}")
    if job.state == JobState.FAILED:
        lines.append(f"  {logs_hint(job.id)}")
    return "\n".join(safe(line) for line in lines)


def _headline(name: str) -> bool:
    """Metrics worth a place on a line (the rest stay in --json and `plot`)."""
    return "/" not in name and not name.endswith(("_per_second", "_runtime")) and name != "epoch"


def event_line(event: Event) -> str | None:
    """One human line for an event (None for progress, shown as a bar instead)."""
    line = _event_text(event)
    return None if line is None else safe(line)


def _event_text(event: Event) -> str | None:
    if isinstance(event, StateChange):
        text = f"[{event.state.value}] {event.message}".rstrip()
        if event.reason:
            text += f" ({event.reason})"
        return text
    if isinstance(event, LogLine):
        return event.line
    if isinstance(event, Metrics):
        values = ", ".join(
            f"{m.name} {m.text or _fmt(m.value)}" for m in event.metrics if _headline(m.name)
        )
        return ("eval: " if event.eval else "metrics: ") + values
    if isinstance(event, GpuReading):
        return f"gpu: {gpu_usage_text(event.usage)}"
    return None


class Follower:
    """A live view of one job: states and metrics as lines, progress as one bar."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.loss: float | None = None
        self.lr: float | None = None
        self._progress = Progress(
            TextColumn("{task.fields[phase]:>10}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}  lr {task.fields[lr]}  eta {task.fields[eta]}"),
            console=console,
            transient=False,
            auto_refresh=console.is_terminal,
        )
        self._task: TaskID | None = None
        self._last_line = ""

    def __enter__(self) -> "Follower":
        if self.console.is_terminal:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.console.is_terminal:
            self._progress.stop()

    def handle(self, event: Event) -> None:
        if isinstance(event, Metrics) and not event.eval:
            values = event.values()
            self.loss = values.get("loss", self.loss)
            self.lr = values.get("learning_rate", self.lr)
        if isinstance(event, ProgressUpdate):
            self._bar(event.progress)
            return
        if isinstance(event, LogLine):
            return  # `logs` shows them
        line = event_line(event)
        if line is not None:
            self._progress.console.print(line, markup=False, highlight=False, soft_wrap=True)

    def _bar(self, p: JobProgress) -> None:
        fields: dict[str, Any] = {
            "phase": p.phase,
            "loss": _fmt(self.loss),
            "lr": _fmt(self.lr, ".3g"),
            "eta": _duration(p.eta_seconds),
        }
        if self.console.is_terminal:
            if self._task is None:
                self._task = self._progress.add_task("", total=p.total or None, **fields)
            self._progress.update(self._task, completed=p.current, total=p.total or None, **fields)
        else:
            line = f"{p.phase} {p.current}/{p.total}"
            if p.phase == "train":
                line += f"  loss {fields['loss']}  lr {fields['lr']}  eta {fields['eta']}"
            if line != self._last_line:
                self._last_line = line
                self.console.print(line, markup=False, highlight=False, soft_wrap=True)


def hosts_table(statuses: Iterable[HostStatus | tuple[str, str]]) -> Table:
    """Each host's row; a host that did not answer is (alias, why)."""
    table = Table(box=None, header_style="bold")
    columns = ("HOST", "AGENT", "RUNTIME", "GPUS FREE", "GPU", "QUEUED", "RUNNING", "STATUS")
    for column in columns:
        table.add_column(column)
    for info in statuses:
        if not isinstance(info, HostStatus):
            table.add_row(Text(safe(info[0])), "-", "-", "-", "-", "-", "-", Text("down", "red"))
            continue
        names = sorted({f"{g.name} {g.memory_mb // 1024}G" for g in info.gpus})
        table.add_row(
            info.host,
            info.agent_version,
            info.runtime,
            f"{info.free_gpus}/{len(info.gpus)}",
            ", ".join(names) or "cpu only",
            str(info.queue.queued),
            str(info.queue.running),
            "[green]up[/]",
        )
    return table


def team_table(hosts: Iterable[TeamHostStatus]) -> Table:
    """The team queue's hosts as its database knows them, with each one's heartbeat age."""
    table = Table(box=None, header_style="bold", title="team queue", title_justify="left")
    for column in ("TEAM HOST", "STATE", "HEARTBEAT", "GPUS USED"):
        table.add_column(column)
    for host in hosts:
        state = Text(host.state, "green" if host.state == "up" else "red")
        table.add_row(
            Text(safe(host.name)),
            state,
            f"{host.heartbeat_age_seconds:.1f} s ago",
            f"{host.gpus_used}/{host.gpus}",
        )
    return table


@contextlib.contextmanager
def upload_progress(console: Console, total: int | None) -> Iterator[Callable[[int], None]]:
    """A transfer bar on stderr (a terminal only); yields the callback that advances it."""
    if not console.is_terminal or total == 0:
        yield lambda n: None
        return
    with Progress(
        TextColumn("upload"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task("", total=total)
        yield lambda n: progress.advance(task, n)
