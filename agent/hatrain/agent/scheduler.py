"""Which queued jobs start now, on which GPUs: a pure function of (queued, running, GPUs, policy).

Order: priority, then fair share (users holding fewer GPUs first), then submission order.
The first job that cannot start gets a reservation (EASY backfill): the time its GPUs will be free,
judged from running jobs' time limits. A later job may start ahead of it only on GPUs the
reservation does not need, or when its own time limit ends before the reservation begins, so a
big job is never starved by a stream of small ones.
"""

import math
from collections import Counter
from dataclasses import dataclass, field

from hatrain.rpc.contract import gpu_accepts


@dataclass(frozen=True)
class GpuSlot:
    index: int
    uuid: str
    name: str = "GPU"
    memory_mb: int = 0


@dataclass(frozen=True)
class QueuedJob:
    id: str
    user: str
    gpus: int
    priority: int = 0
    min_gpu_memory_mb: int = 0
    gpu_type: str = ""
    time_limit_seconds: int = 0
    order: int = 0

    def accepts(self, gpu: GpuSlot) -> bool:
        return gpu_accepts(gpu.name, gpu.memory_mb, self.min_gpu_memory_mb, self.gpu_type)


@dataclass(frozen=True)
class RunningJob:
    id: str
    user: str
    gpu_uuids: tuple[str, ...]
    # When its time limit runs out; None when it has none (so its end cannot be predicted).
    ends_by: float | None = None


@dataclass(frozen=True)
class Policy:
    backfill: bool = True
    user_gpu_caps: dict[str, int] = field(default_factory=dict)
    max_cpu_jobs: int = 2

    def cap_for(self, user: str) -> int | None:
        return self.user_gpu_caps.get(user, self.user_gpu_caps.get("*"))


@dataclass(frozen=True)
class Placement:
    job_id: str
    gpu_uuids: tuple[str, ...]


@dataclass(frozen=True)
class _Reservation:
    starts_at: float
    gpus: frozenset[str]


def _reserve(
    job: QueuedJob, free: list[GpuSlot], running: list[RunningJob], gpus: list[GpuSlot]
) -> _Reservation | None:
    """When and on which GPUs `job` can start if nothing else is started before it."""
    by_uuid = {g.uuid: g for g in gpus}
    available = [g for g in free if job.accepts(g)]
    if len(available) >= job.gpus:
        return _Reservation(0.0, frozenset(g.uuid for g in available[: job.gpus]))
    released: list[GpuSlot] = []
    for run in sorted(running, key=lambda r: math.inf if r.ends_by is None else r.ends_by):
        released += [by_uuid[u] for u in run.gpu_uuids if u in by_uuid and job.accepts(by_uuid[u])]
        if len(available) + len(released) >= job.gpus:
            ends = math.inf if run.ends_by is None else run.ends_by
            # Prefer GPUs that are busy now, so the free ones stay usable for backfill.
            chosen = (released + available)[: job.gpus]
            return _Reservation(ends, frozenset(g.uuid for g in chosen))
    return None


def plan(
    queued: list[QueuedJob],
    running: list[RunningJob],
    gpus: list[GpuSlot],
    policy: Policy,
    now: float,
) -> list[Placement]:
    held_by_user: Counter[str] = Counter()
    for run in running:
        held_by_user[run.user] += len(run.gpu_uuids)
    busy = {u for run in running for u in run.gpu_uuids}
    free = [g for g in sorted(gpus, key=lambda g: g.index) if g.uuid not in busy]
    cpu_jobs = sum(1 for run in running if not run.gpu_uuids)
    start_held = dict(held_by_user)
    ordered = sorted(queued, key=lambda j: (-j.priority, start_held.get(j.user, 0), j.order))

    placements: list[Placement] = []
    reservation: _Reservation | None = None
    for job in ordered:
        cap = policy.cap_for(job.user)
        if cap is not None and held_by_user[job.user] + job.gpus > cap:
            continue
        if job.gpus == 0:
            if cpu_jobs < policy.max_cpu_jobs:
                placements.append(Placement(job.id, ()))
                cpu_jobs += 1
            continue
        fitting = [g for g in free if job.accepts(g)]
        if reservation is not None:
            if not policy.backfill:
                break
            ends = now + job.time_limit_seconds if job.time_limit_seconds else math.inf
            if math.isinf(reservation.starts_at) or ends > reservation.starts_at:
                fitting = [g for g in fitting if g.uuid not in reservation.gpus]
        if len(fitting) >= job.gpus:
            chosen = fitting[: job.gpus]
            placements.append(Placement(job.id, tuple(g.uuid for g in chosen)))
            free = [g for g in free if g not in chosen]
            held_by_user[job.user] += job.gpus
        elif reservation is None:
            reservation = _reserve(job, free, running, gpus)
            if reservation is None:
                continue
    return placements
