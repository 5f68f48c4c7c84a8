"""How jobs and events look on a terminal: rich tables, the live view of a job, and text."""

import contextlib
import math
import time
from collections.abc import Callable, Iterable, Iterator

from rich.console import Console, ConsoleOptions, RenderResult
from rich.live import Live
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TransferSpeedColumn,
)
from rich.table import Table
from rich.text import Text

from .activity import Activity, Reading
from .errors import ClientError
from .records import (
    Event,
    GpuReading,
    GpuUsage,
    HostStatus,
    Job,
    JobState,
    Metrics,
    StateChange,
    TeamHostStatus,
)
from .text import clock, local_time, safe

__all__ = ["Follower", "describe", "hosts_table", "jobs_table", "logs_hint", "safe", "team_table"]

_STYLE = {"succeeded": "green", "failed": "red", "cancelled": "yellow", "queued": "dim"}


def _fmt(value: float | None, spec: str = ".4g") -> str:
    if value is None:
        return "-"
    return "nan" if math.isnan(value) else format(value, spec)


def logs_hint(job_id: str) -> str:
    return f"see: hatrain-client logs {job_id} --tail 50"


def job_progress(job: Job) -> str:
    """What a running job does, in a few words: `step 10/20`, `eval 2/4`, `preprocess 32/64`."""
    p = job.progress
    if not job.state.running or p is None or not p.total:
        return ""
    if p.phase == "train":
        return f"step {p.current}/{p.total}"
    return f"{p.phase} {p.current}/{p.total}"


def _ago(seconds: float, now: float) -> str:
    return f"{clock(now - seconds)} ago"


def jobs_table(jobs: Iterable[Job], now: float | None = None) -> Table:
    """One row per job, ids in full: a column is cut before an id ever is."""
    now = time.time() if now is None else now
    rows = list(jobs)
    table = Table(box=None, header_style="bold", pad_edge=False)
    id_width = max([len(j.id) for j in rows] + [2])
    table.add_column("HOST", no_wrap=True)
    table.add_column("ID", no_wrap=True, min_width=id_width)
    table.add_column("USER", no_wrap=True, overflow="ellipsis")
    table.add_column("STATE", no_wrap=True)
    table.add_column("NAME", overflow="ellipsis", no_wrap=True)
    table.add_column("GPUS", no_wrap=True, justify="right")
    table.add_column("ELAPSED", no_wrap=True, justify="right")
    table.add_column("PROGRESS", no_wrap=True)
    table.add_column("LOSS", no_wrap=True)
    table.add_column("INFO", overflow="ellipsis", no_wrap=True)
    for job in rows:
        state = job.state.value
        if job.state == JobState.QUEUED:
            info = f"position {job.queue_position}, waiting {clock(now - job.created_at)}"
            if job.pending_reason:
                info += f": {job.pending_reason}"
        elif job.state == JobState.FAILED:
            info = job.failure_reason
        elif job.ended:
            info = f"ended {_ago(job.finished_at or job.created_at, now)}"
        else:
            info = ""
        elapsed = job.elapsed(now)
        table.add_row(
            Text(safe(job.host)),
            Text(job.id),
            Text(safe(job.user)),
            Text(state, style=_STYLE.get(state, "cyan")),
            Text(safe(job.name)),
            str(job.spec.gpus),
            "-" if elapsed is None else clock(elapsed),
            Text(safe(job_progress(job))),
            _fmt(job.last_metrics.get("loss")),
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


def describe(job: Job, now: float | None = None) -> str:
    """The job for people: what it is, when it ran, where it is, how it ended."""
    now = time.time() if now is None else now
    where = job.host
    if job.from_team_queue:
        where = f"{job.team_host} (team queue)" if job.team_host else "the team queue"
    lines = [
        f"job {job.id} on {where}: {job.state.value}",
        f"  name      {job.name}   user {job.user}   image {job.spec.image}",
        f"  gpus      {job.spec.gpus} {' '.join(job.gpu_uuids)}".rstrip(),
        f"  submitted {local_time(job.created_at)} ({_ago(job.created_at, now)})",
    ]
    if job.started_at:
        waited = clock(job.started_at - job.created_at)
        lines.append(f"  started   {local_time(job.started_at)} (after {waited} queued)")
    if job.finished_at:
        lines.append(f"  ended     {local_time(job.finished_at)} ({_ago(job.finished_at, now)})")
    elapsed = job.elapsed(now)
    if elapsed is not None:
        lines.append(f"  elapsed   {clock(elapsed)}{'' if job.ended else ' so far'}")
    if job.state == JobState.QUEUED:
        lines.append(f"  queue     position {job.queue_position}")
        if job.pending_reason:
            lines.append(f"  waiting   {job.pending_reason}")
    if (progress := job_progress(job)) and job.progress is not None:
        eta = f", eta {clock(job.progress.eta_seconds)}" if job.progress.phase == "train" else ""
        lines.append(f"  progress  {progress}{eta}")
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
    if job.team_note:
        lines.append(f"  team      {job.team_note}")
    if job.run_dir:
        lines.append(f"  run dir   {job.run_dir}")
    if job.state == JobState.FAILED:
        lines.append(f"  {logs_hint(job.id)}")
    return "\n".join(safe(line) for line in lines)


def _headline(name: str) -> bool:
    """Metrics worth a place on a line (the rest stay in --json and `plot`)."""
    return "/" not in name and not name.endswith(("_per_second", "_runtime")) and name != "epoch"


_SHORT_NAMES = {"learning_rate": "lr"}


_FIRST = ("loss", "learning_rate", "eval_loss", "train_loss")


def _metric_values(event: Metrics) -> str:
    """`loss 5.562, lr 0.000933, grad_norm 1.776, ...`: loss and learning rate first."""
    shown = sorted(
        (m for m in event.metrics if _headline(m.name)),
        key=lambda m: _FIRST.index(m.name) if m.name in _FIRST else len(_FIRST),
    )
    return ", ".join(f"{_SHORT_NAMES.get(m.name, m.name)} {m.text or _fmt(m.value)}" for m in shown)


def event_line(event: Event, activity: Activity | None = None) -> str | None:
    """One line for an event that has one to say (a state, a train step's or an evaluation's
    metrics, a GPU reading); None for the rest (bars, log lines)."""
    line = _event_text(event, activity or Activity())
    return None if line is None else safe(line)


def _event_text(event: Event, activity: Activity) -> str | None:
    if isinstance(event, StateChange):
        text = f"[{event.state.value}] {event.message}".rstrip()
        if event.reason:
            text += f" ({event.reason})"
        return text
    if isinstance(event, Metrics):
        values = _metric_values(event)
        train = activity.train
        step = event.train_step if event.train_step is not None else train and train.current
        at = "" if step is None else f" {step}/{train.total}" if train else f" {step}"
        if event.eval:
            return f"eval at step{at}: {values}" if at else f"eval: {values}"
        if any(m.name in ("train_runtime", "train_loss") for m in event.metrics):
            return f"summary: {values}"
        eta = activity.eta()
        text = f"step{at}: {values}" if at else f"metrics: {values}"
        return text + ("" if eta is None else f", eta {clock(eta)}")
    if isinstance(event, GpuReading):
        return f"gpu: {gpu_usage_text(event.usage)}"
    return None


# Activities said on a line of their own when they begin; a train step and an evaluation have
# their metrics' line instead, and a state its own.
_QUIET_STARTS = ("training", "evaluating", "finishing")
_STATES = {s.value for s in JobState}


class StatusLine:
    """The live view's last line: what the job does, its bar, step, loss, learning rate and
    ETA, fitted to the terminal's width (the bar gives way first, then lr, then loss)."""

    def __init__(self, activity: Activity) -> None:
        self.activity = activity

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield self.render(options.max_width)

    def render(self, width: int) -> Text:
        reading = self.activity.reading()
        label = reading.label or "waiting"
        count = _count(reading)
        stats = [
            f"{name} {_fmt(value, spec)}"
            for name, value, spec in (
                ("loss", reading.loss, ".4g"),
                ("lr", reading.learning_rate, ".3g"),
            )
            if value is not None
        ]
        eta = ""
        if reading.train is not None:  # the job's ETA is the train bar's
            eta = "eta " + ("-" if reading.eta_seconds is None else clock(reading.eta_seconds))

        def rest() -> list[str]:
            return [part for part in (count, *stats, eta) if part]

        bar_room = _BAR_MIN + 1 if reading.bar is not None else 0
        while stats and len(" ".join([label, *rest()])) + bar_room > width:
            stats.pop()
        label = _cut(label, width - len(" ".join(["", *rest()])) - bar_room)
        room = width - len(" ".join([label, *rest()])) - 1
        line = Text(label, style="bold cyan")
        if reading.bar is not None and room >= _BAR_MIN:
            bar, size = reading.bar, min(room, _BAR_MAX)
            done = round(size * bar.current / bar.total) if bar.total else 0
            line.append(" ")
            line.append("━" * done, style="green")
            line.append("━" * (size - done), style="grey30")
        for part in rest():
            line.append(" " + part)
        line.truncate(width)
        return line


_BAR_MIN, _BAR_MAX = 10, 40


def _count(reading: Reading) -> str:
    bar = reading.bar
    if bar is None or not bar.total:
        train = reading.train
        return f"step {train.current}/{train.total}" if train and train.total else ""
    if bar.phase == "train":
        return f"step {bar.current}/{bar.total}"
    return f"{bar.current}/{bar.total}"


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(1, width - 1)] + "…"


class Follower:
    """The live view of one job. Lines for states, steps, evaluations and what the job moves
    on to (loading the model, a preprocessing stage, saving), each said once; on a terminal,
    below them, one status line that follows the job."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.activity = Activity()
        self._said: set[str] = set()
        self._live = (
            Live(
                StatusLine(self.activity),
                console=console,
                refresh_per_second=4,
                transient=False,
                redirect_stdout=False,
                redirect_stderr=False,
            )
            if console.is_terminal
            else None
        )

    def __enter__(self) -> "Follower":
        if self._live is not None:
            self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.refresh()
            self._live.stop()

    def handle(self, event: Event) -> None:
        changed = self.activity.update(event)
        line = event_line(event, self.activity)
        if line is not None:
            self._say(line)
        label = self.activity.label
        quiet = (
            isinstance(event, StateChange) or label in _STATES or label.startswith(_QUIET_STARTS)
        )
        if changed and not quiet and label not in self._said:
            self._said.add(label)
            self._say(label)
        if self._live is not None:
            self._live.refresh()

    def _say(self, line: str) -> None:
        self.console.print(line, markup=False, highlight=False, soft_wrap=True)


def hosts_table(statuses: Iterable[HostStatus | tuple[str, ClientError]]) -> Table:
    """Each host's row; a host that did not answer is (alias, the error), and its STATUS says
    why: unreachable, auth failed, no agent, host key, agent down."""
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("HOST", "AGENT", "RUNTIME", "GPUS FREE", "GPU", "QUEUED", "RUNNING", "STATUS"):
        table.add_column(column, no_wrap=column in ("HOST", "STATUS"))
    for info in statuses:
        if not isinstance(info, HostStatus):
            alias, error = info
            dash = ("-",) * 6
            table.add_row(Text(safe(alias)), *dash, Text(error.status, "red"))
            continue
        names = sorted({f"{g.name} {g.memory_mb // 1024}G" for g in info.gpus})
        table.add_row(
            Text(safe(info.host)),
            Text(safe(info.agent_version)),
            Text(safe(info.runtime)),
            f"{info.free_gpus}/{len(info.gpus)}",
            Text(safe(", ".join(names) or "cpu only")),
            str(info.queue.queued),
            str(info.queue.running),
            Text("up", "green"),
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
