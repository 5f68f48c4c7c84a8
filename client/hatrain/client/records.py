"""What the client library hands out: jobs, events and hosts as typed, frozen records.

Every wire message the agent sends is turned into one of these here and nowhere else; the rest
of the client (the CLI included) never sees a protobuf.
"""

import dataclasses
import datetime
import json
import math
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hatrain.rpc.contract import JobState
from hatrain.rpc.readings import GpuUsage, Metric, Progress
from hatrain.rpc.spec import JobSpec
from hatrain.rpc.v1 import agent_pb2 as pb

EXIT_CANCELLED = 130

__all__ = [
    "EXIT_CANCELLED",
    "Event",
    "FetchReport",
    "Gpu",
    "GpuReading",
    "GpuUsage",
    "HostStatus",
    "Job",
    "JobSpec",
    "JobState",
    "LogLine",
    "Metric",
    "Metrics",
    "Progress",
    "ProgressUpdate",
    "QueueSummary",
    "StateChange",
    "Submission",
    "UploadReport",
]


@dataclass(frozen=True)
class UploadReport:
    bytes_sent: int = 0
    bytes_resumed: int = 0
    files_sent: int = 0
    files_present: int = 0


@dataclass(frozen=True)
class Submission:
    """What submitting did besides queueing the job: the upload, what was left to Axolotl
    (`notes`), and what looks like a mistake but was not refused (`warnings`)."""

    upload: UploadReport
    notes: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Job:
    """A job as its host knows it."""

    id: str
    host: str
    spec: JobSpec
    user: str
    state: JobState
    created_at: float
    started_at: float = 0.0
    finished_at: float = 0.0
    failure_reason: str = ""
    hint: str = ""
    exit_code: int | None = None
    gpu_uuids: tuple[str, ...] = ()
    queue_position: int = 0
    run_dir: str = ""
    progress: Progress | None = None
    last_metrics: Mapping[str, float] = field(default_factory=dict)
    last_seq: int = 0
    secret_names: tuple[str, ...] = ()
    stop_reason: str = ""
    gpu_usage: tuple[GpuUsage, ...] = ()
    # Why a queued job waits, as the host's scheduler last saw it.
    pending_reason: str = ""
    # Team queue: the team host it is placed on, runs or ran on (its name in the team).
    team_host: str = ""
    # The team queue's record of it, from a host that does not run it.
    from_team_queue: bool = False
    # Team queue: what happened to it besides its state (e.g. requeued after a lost host).
    team_note: str = ""
    # Set on the job `Client.submit` returns.
    submission: Submission | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def ended(self) -> bool:
        return self.state.terminal

    @property
    def readable(self) -> bool:
        """Whether this caller may read the job's config, logs and outputs (its owner, their
        team and admins); others see only its summary."""
        return bool(self.run_dir)

    @property
    def never_ran(self) -> str:
        """Why the job never ran ("is still queued", ...), or "" if it did run."""
        if self.state == JobState.QUEUED:
            return "is still queued"
        if self.state.terminal and not self.started_at:
            return f"was {self.state.value} before it started"
        return ""

    def elapsed(self, now: float | None = None) -> float | None:
        """Seconds it has run (until it ended, or until now); None if it never started."""
        if not self.started_at:
            return None
        end = self.finished_at or (time.time() if now is None else now)
        return max(0.0, end - self.started_at)

    @property
    def exit_status(self) -> int:
        """The exit code a command that waited for the job returns: 0 succeeded, 130
        cancelled, else the job's own exit code (1 when it has none)."""
        if self.state == JobState.SUCCEEDED:
            return 0
        if self.state == JobState.CANCELLED:
            return EXIT_CANCELLED
        if self.exit_code is not None and 0 < self.exit_code < 256:
            return self.exit_code
        return 1

    @classmethod
    def from_wire(cls, job: pb.Job, host: str) -> "Job":
        return cls(
            id=job.id,
            host=host,
            spec=JobSpec.from_wire(job.spec),
            user=job.user,
            state=JobState.from_wire(job.state),
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            failure_reason=job.failure_reason,
            hint=job.hint,
            exit_code=job.exit_code if job.has_exit_code else None,
            gpu_uuids=tuple(job.gpu_uuids),
            queue_position=job.queue_position,
            run_dir=job.run_dir,
            progress=_progress(job.progress) if job.HasField("progress") else None,
            last_metrics=dict(job.last_metrics),
            last_seq=job.last_seq,
            secret_names=tuple(job.secret_names),
            stop_reason=job.stop_reason,
            gpu_usage=_gpu_usage(job.gpu_usage),
            pending_reason=job.pending_reason,
            team_host=job.team_host,
            from_team_queue=job.from_team_queue,
            team_note=job.team_note,
        )


@dataclass(frozen=True)
class _EventBase:
    seq: int
    time: float
    step: str  # the job's step it came from: "preprocess", "train", or ""


@dataclass(frozen=True)
class StateChange(_EventBase):
    state: JobState
    reason: str = ""
    message: str = ""
    exit_code: int | None = None


@dataclass(frozen=True)
class LogLine(_EventBase):
    line: str
    stream: str = ""


@dataclass(frozen=True)
class Metrics(_EventBase):
    """A metrics dict the run printed: training values, or an evaluation's (`eval`)."""

    metrics: tuple[Metric, ...]
    eval: bool = False
    # The train step the run was at when it printed them (None in older records).
    train_step: int | None = None

    def values(self) -> dict[str, float]:
        """The numeric values by name."""
        return {m.name: m.value for m in self.metrics if m.value is not None}


@dataclass(frozen=True)
class ProgressUpdate(_EventBase):
    progress: Progress


@dataclass(frozen=True)
class GpuReading(_EventBase):
    usage: tuple[GpuUsage, ...]


Event = StateChange | LogLine | Metrics | ProgressUpdate | GpuReading


def events_from_wire(ev: pb.Event) -> Iterator[Event]:
    """The typed events a wire event carries: a LogLine for each line of a packed run of log
    lines (made as they are read), or the one event; none of a kind this client does not know."""
    if ev.kind == pb.EVENT_KIND_LOG and ev.lines:
        seq, time, step, stream = ev.seq, ev.time, ev.step, ev.stream
        for i, line in enumerate(ev.lines):
            yield LogLine(seq + i, time, step, line=line, stream=stream)
    elif (event := event_from_wire(ev)) is not None:
        yield event


def event_from_wire(ev: pb.Event) -> Event | None:
    """The typed event of a wire event of one line; None for a kind this client does not know
    (from a newer agent). A packed run of log lines: events_from_wire."""
    seq, time, step, kind = ev.seq, ev.time, ev.step, ev.kind
    if kind == pb.EVENT_KIND_LOG:
        return LogLine(seq, time, step, line=ev.line, stream=ev.stream)
    if kind == pb.EVENT_KIND_METRICS:
        metrics = tuple(Metric(m.name, None if m.text else m.value, m.text) for m in ev.metrics)
        at = ev.train_step if ev.HasField("train_step") else None
        return Metrics(seq, time, step, metrics=metrics, eval=ev.eval, train_step=at)
    if kind == pb.EVENT_KIND_PROGRESS:
        return ProgressUpdate(seq, time, step, progress=_progress(ev.progress))
    if kind == pb.EVENT_KIND_STATE:
        exit_code = ev.exit_code if ev.state in _ENDED_WITH_CODE and ev.exit_code else None
        return StateChange(
            seq,
            time,
            step,
            state=JobState.from_wire(ev.state),
            reason=ev.reason,
            message=ev.message,
            exit_code=exit_code,
        )
    if kind == pb.EVENT_KIND_GPU:
        return GpuReading(seq, time, step, usage=_gpu_usage(ev.gpu_usage))
    return None


_ENDED_WITH_CODE = {pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED}


@dataclass(frozen=True)
class QueueSummary:
    queued: int = 0
    running: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0


@dataclass(frozen=True)
class Gpu:
    index: int
    uuid: str
    name: str
    memory_mb: int
    job_id: str = ""  # the job holding it; empty when free


@dataclass(frozen=True)
class TeamHostStatus:
    """A host of the team queue as the team's database knows it."""

    name: str
    state: str
    heartbeat_age_seconds: float
    gpus: int
    gpus_used: int
    epoch: int


@dataclass(frozen=True)
class HostStatus:
    """A host as its agent describes itself."""

    host: str
    hostname: str
    agent_version: str
    wire_version: str
    runtime: str
    gpu_source: str
    gpus: tuple[Gpu, ...]
    queue: QueueSummary
    allowed_images: tuple[str, ...]
    default_image: str
    upload_dir: str
    user: str
    # Its name in the team queue ("" if it keeps its own queue only), and the team's hosts.
    team_host: str = ""
    team: tuple[TeamHostStatus, ...] = ()

    @property
    def free_gpus(self) -> int:
        return sum(1 for g in self.gpus if not g.job_id)

    @classmethod
    def from_wire(cls, info: pb.AgentInfo, host: str) -> "HostStatus":
        q = info.queue
        return cls(
            host=host,
            hostname=info.hostname,
            agent_version=info.agent_version,
            wire_version=info.wire_version,
            runtime=info.runtime,
            gpu_source=info.gpu_source,
            gpus=tuple(Gpu(g.index, g.uuid, g.name, g.memory_mb, g.job_id) for g in info.gpus),
            queue=QueueSummary(q.queued, q.running, q.succeeded, q.failed, q.cancelled),
            allowed_images=tuple(info.allowed_images),
            default_image=info.default_image,
            upload_dir=info.upload_dir,
            user=info.user,
            team_host=info.team_host,
            team=tuple(
                TeamHostStatus(
                    t.name, t.state, t.heartbeat_age_seconds, t.gpus, t.gpus_used, t.epoch
                )
                for t in info.team
            ),
        )


@dataclass(frozen=True)
class FetchReport:
    files_fetched: int = 0
    files_skipped: int = 0
    bytes_fetched: int = 0
    # With fetch(logs=True): the job's log written beside the run directory, and its lines.
    log_file: str = ""
    log_lines: int = 0


def _progress(p: pb.Progress) -> Progress:
    return Progress(
        p.phase, p.current, p.total, p.rate, p.elapsed_seconds, p.eta_seconds, p.unit or "it"
    )


def _gpu_usage(usage: Any) -> tuple[GpuUsage, ...]:
    return tuple(
        GpuUsage(u.uuid, u.memory_used_mb, u.memory_total_mb, u.utilization_percent) for u in usage
    )


# -- JSON for scripts (--json) ---------------------------------------------------------------

_EVENT_KINDS: dict[type, str] = {
    StateChange: "state",
    LogLine: "log",
    Metrics: "metrics",
    ProgressUpdate: "progress",
    GpuReading: "gpu",
}


def _plain(value: Any) -> Any:
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return str(value)
    if isinstance(value, JobState):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def iso_time(seconds: float) -> str | None:
    """A time as ISO-8601 in UTC to the millisecond (`2026-11-29T17:55:21.895Z`); None for 0,
    which means "not yet"."""
    if not seconds:
        return None
    moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def to_json(record: Any, **extra: Any) -> dict[str, Any]:
    """A record as JSON-ready data; a job's spec is left out but for its name and GPUs, an
    event says its kind. Times are ISO-8601 strings (null when not reached yet)."""
    data: dict[str, Any] = _plain(record)
    if isinstance(record, Job):
        data.pop("spec")
        data["name"] = record.spec.name
        data["gpus"] = record.spec.gpus
        data["has_exit_code"] = record.exit_code is not None
        for name in ("created_at", "started_at", "finished_at"):
            data[name] = iso_time(getattr(record, name))
        elapsed = record.elapsed()
        data["elapsed_seconds"] = None if elapsed is None else round(elapsed, 3)
        if data["submission"] is None:
            data.pop("submission")
    elif type(record) in _EVENT_KINDS:
        data["kind"] = _EVENT_KINDS[type(record)]
        data["time"] = iso_time(record.time)
    return {**extra, **data}


def print_json(data: Any) -> None:
    print(json.dumps(_plain(data), sort_keys=True), flush=True)
