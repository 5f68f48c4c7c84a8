"""Conversions between the agent's domain objects and the wire format (hatrain.rpc.v1)."""

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from hatrain.rpc.v1 import agent_pb2 as pb

from .events import Event, EventKind, GpuUsage, Progress
from .jobs import Job
from .pending import Waiting
from .scheduler import GpuSlot
from .states import JobState

if TYPE_CHECKING:
    from .team.queue import TeamJob

STATE_TO_WIRE: dict[JobState, Any] = {s: s.to_wire() for s in JobState}
STATE_FROM_WIRE = {v: k for k, v in STATE_TO_WIRE.items()}
KIND_TO_WIRE: dict[EventKind, Any] = {
    k: pb.EventKind.Value(f"EVENT_KIND_{k.name}") for k in EventKind
}
KIND_FROM_WIRE = {v: k for k, v in KIND_TO_WIRE.items()}


def progress_to_wire(p: Progress) -> pb.Progress:
    return pb.Progress(
        phase=p.phase,
        current=p.current,
        total=p.total,
        rate=p.rate,
        elapsed_seconds=p.elapsed_seconds,
        eta_seconds=p.eta_seconds,
        unit=p.unit,
    )


def gpu_usage_to_wire(usage: tuple[GpuUsage, ...]) -> list[pb.GpuUsage]:
    return [
        pb.GpuUsage(
            uuid=g.uuid,
            memory_used_mb=g.memory_used_mb,
            memory_total_mb=g.memory_total_mb,
            utilization_percent=g.utilization_percent,
        )
        for g in usage
    ]


def job_to_wire(
    job: Job,
    run_dir: str = "",
    gpu_usage: tuple[GpuUsage, ...] = (),
    waiting: Waiting | None = None,
) -> pb.Job:
    """waiting: why the job waits, as the scheduler's last pass saw it; its position there
    replaces the store's (which knows priority and age, not fair share)."""
    msg = pb.Job(
        id=job.id,
        spec=job.spec.to_wire(),
        user=job.user,
        state=STATE_TO_WIRE[job.state],
        failure_reason=job.failure_reason,
        hint=job.hint,
        exit_code=job.exit_code or 0,
        has_exit_code=job.exit_code is not None,
        gpu_uuids=list(job.gpu_uuids),
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        queue_position=job.queue_position,
        run_dir=run_dir,
        last_metrics=job.last_metrics,
        last_seq=job.last_seq,
        secret_names=list(job.secret_names),
        stop_reason=job.stop_reason.value if job.stop_reason else "",
        gpu_usage=gpu_usage_to_wire(gpu_usage),
    )
    if job.progress is not None:
        msg.progress.CopyFrom(progress_to_wire(job.progress))
    if waiting is not None and job.state == JobState.QUEUED:
        msg.pending_reason = waiting.text
        msg.queue_position = waiting.position
    return msg


def job_summary_to_wire(job: Job, waiting: Waiting | None = None) -> pb.Job:
    """What anyone may see of a job: its name, user, state, GPUs, times and why it waits, not
    its config, files, metrics, hint or run directory."""
    msg = pb.Job(
        id=job.id,
        spec=pb.JobSpec(
            name=job.spec.name,
            config_name=job.spec.config_name,
            image=job.spec.image,
            resources=pb.Resources(
                gpus=job.spec.gpus,
                min_gpu_memory_mb=job.spec.min_gpu_memory_mb,
                gpu_type=job.spec.gpu_type,
            ),
            priority=job.spec.priority,
            team=job.spec.team,
        ),
        user=job.user,
        state=STATE_TO_WIRE[job.state],
        failure_reason=job.failure_reason,
        gpu_uuids=list(job.gpu_uuids),
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        queue_position=job.queue_position,
        stop_reason=job.stop_reason.value if job.stop_reason else "",
    )
    if job.progress is not None:
        msg.progress.CopyFrom(progress_to_wire(job.progress))
    if waiting is not None and job.state == JobState.QUEUED:
        msg.pending_reason = waiting.text
        msg.queue_position = waiting.position
    return msg


def event_to_wire(ev: Event) -> pb.Event:
    msg = pb.Event(
        seq=ev.seq,
        time=ev.time,
        kind=KIND_TO_WIRE[ev.kind],
        step=ev.step,
        state=STATE_TO_WIRE[JobState(ev.state)] if ev.state else pb.JOB_STATE_UNSPECIFIED,
        reason=ev.reason,
        message=ev.message,
        line=ev.line,
        stream=ev.stream,
        metrics=[
            pb.Metric(name=m.name, value=m.value if m.value is not None else 0.0, text=m.text)
            for m in ev.metrics
        ],
        eval=ev.eval,
        exit_code=ev.exit_code or 0,
        gpu_usage=gpu_usage_to_wire(ev.gpu_usage),
    )
    if ev.train_step is not None:
        msg.train_step = ev.train_step
    if ev.progress is not None:
        msg.progress.CopyFrom(progress_to_wire(ev.progress))
    return msg


_LOG = EventKind.LOG.value
_EVENT_BYTES = 32  # an event's fields besides its text, roughly, on the wire
_PACKED_LINE_BYTES = 4  # a line's tag and length in a packed event's `lines`, at most


def run_last_seq(run: tuple[int, float, str, dict[str, Any]]) -> int:
    """The seq of a stored run's last line (of any other event, its own)."""
    first, _, kind, rec = run
    return first + rec["line"].count("\n") if kind == _LOG else first


def add_runs(
    events: Any,
    runs: Iterable[tuple[int, float, str, dict[str, Any]]],
    max_bytes: int,
    *,
    packed: bool = False,
) -> None:
    """Stored events onto a response's repeated `events` until they hold about max_bytes of
    text (always at least one event): a client takes messages of up to 4 MB by default, and
    one page of long lines could be far more.

    packed: each run of log lines as one event holding them all in `lines`, which costs the
    agent (and the watcher) a fraction of a message a line. Otherwise a wire event per line,
    added in place from its run, as a client that does not ask for runs reads them.
    """
    add = events.add
    size = 0
    per_line = _PACKED_LINE_BYTES if packed else _EVENT_BYTES
    for first, time, kind, rec in runs:
        if kind != _LOG:
            events.append(event_to_wire(Event.from_record(kind, first, time, rec)))
            size += _EVENT_BYTES
            continue
        step, text = rec.get("step", ""), rec["line"]
        stream = {"stream": rec["stream"]} if rec.get("stream") else {}  # empty: left unset
        lines = text.split("\n")
        whole = size + len(text) + per_line * len(lines) <= max_bytes
        if not whole:
            lines = _fitting(lines, max_bytes - size, per_line, at_least_one=not events)
            if not lines:
                return
        if packed:
            add(seq=first, time=time, kind=pb.EVENT_KIND_LOG, step=step, lines=lines, **stream)
        else:
            for seq, line in enumerate(lines, first):
                add(seq=seq, time=time, kind=pb.EVENT_KIND_LOG, step=step, line=line, **stream)
        if not whole:
            return
        size += len(text) + per_line * len(lines) + _EVENT_BYTES * packed
        if size >= max_bytes:
            return


def _fitting(lines: list[str], budget: int, per_line: int, at_least_one: bool) -> list[str]:
    """The first lines that fit in budget bytes."""
    used = 0
    for i, line in enumerate(lines):
        used += len(line) + per_line
        if used > budget and (i or not at_least_one):
            return lines[:i]
    return lines


def gpu_to_wire(gpu: GpuSlot, job_id: str) -> pb.Gpu:
    return pb.Gpu(
        index=gpu.index, uuid=gpu.uuid, name=gpu.name, memory_mb=gpu.memory_mb, job_id=job_id
    )


def team_job_to_wire(job: "TeamJob", readable: bool) -> pb.Job:
    """A job as the team queue knows it (this host does not run it): readable, its whole record
    there; otherwise what anyone may see."""
    as_job = job.as_job()
    msg = job_to_wire(as_job) if readable else job_summary_to_wire(as_job)
    msg.team_host = job.host
    msg.from_team_queue = True
    msg.team_note = job.note
    if as_job.state == JobState.QUEUED:
        msg.pending_reason = job.pending_reason
        msg.queue_position = job.queue_position
    return msg
