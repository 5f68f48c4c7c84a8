"""Which queued jobs start now, on which host and GPUs, and why each other job waits.

A pure function of (queued jobs, running jobs, the GPUs of every host, policy, usage, now). One
host is the one-host case: the agent calls it with its own GPUs.

Order: priority, then fair share (decayed GPU-hours used, divided by the user's share weight; see
fair_share.py), then submission order. Per-user and per-team caps on GPUs held apply. A job may
be constrained to one host, and by GPU type, count and minimum memory per GPU; it starts on the
eligible host it fits most tightly (best fit), keeping whole hosts free for big jobs.

The first job that cannot start gets a reservation (EASY backfill): the host and GPUs where it
will start first, and when, judged from running jobs' time limits. A later job may start ahead of
it only on other hosts, on GPUs the reservation does not need, or when its own time limit ends
before the reservation begins, so a big job is never starved by a stream of small ones. Once some
of its GPUs sit free for it, the next pass keeps the reservation for the same job (the caller
passes Plan.reserved back), whatever fair share says of newcomers.

A host may hold starts (Host.hold: its disk is below the low watermark); a job that may run only
on holding hosts waits with that reason.

Every job left waiting gets a reason (pending.py) true of this pass: the planner states what
stopped it, and numbers the waiting jobs in the order it served them.
"""

import heapq
import math
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace

from hatrain.rpc.contract import gpu_accepts

from . import pending
from .fair_share import Shares
from .pending import Waiting, WaitKind

DAY = 86400.0


@dataclass(frozen=True)
class GpuSlot:
    index: int
    uuid: str
    name: str = "GPU"
    memory_mb: int = 0


@dataclass(frozen=True)
class Host:
    """A host that can run jobs ("" names the only host of a single-host agent)."""

    name: str
    gpus: tuple[GpuSlot, ...] = ()
    # Why no job may start there now (e.g. its disk is below the low watermark); empty: none.
    hold: str = ""


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
    team: str = ""
    # The only host it may run on; empty: any.
    host: str = ""

    def accepts(self, gpu: GpuSlot) -> bool:
        return gpu_accepts(gpu.name, gpu.memory_mb, self.min_gpu_memory_mb, self.gpu_type)

    def wanted(self) -> str:
        return pending.gpus_wanted(self.gpus, self.gpu_type, self.min_gpu_memory_mb, self.host)


@dataclass(frozen=True)
class RunningJob:
    id: str
    user: str
    gpu_uuids: tuple[str, ...]
    # When its time limit runs out; None when it has none (so its end cannot be predicted).
    ends_by: float | None = None
    host: str = ""
    team: str = ""
    # When it started; None: just now (it has used nothing yet).
    started_at: float | None = None


@dataclass(frozen=True)
class Policy:
    backfill: bool = True
    # Most GPUs a user (or a team) may hold at once; "*" for everybody not named.
    user_gpu_caps: Mapping[str, int] = field(default_factory=dict)
    team_gpu_caps: Mapping[str, int] = field(default_factory=dict)
    # Jobs without GPUs that may run at once on each host.
    max_cpu_jobs: int = 2
    # A user's usage is divided by this before comparing ("*" for everybody not named; 1).
    share_weights: Mapping[str, float] = field(default_factory=dict)
    usage_half_life_seconds: float = 7 * DAY


def cap_for(caps: Mapping[str, int], name: str) -> int | None:
    return caps.get(name, caps.get("*"))


@dataclass(frozen=True)
class Placement:
    job_id: str
    gpu_uuids: tuple[str, ...]
    host: str = ""


@dataclass(frozen=True)
class Plan:
    placements: list[Placement]
    # Every queued job not placed, by id, in the order the planner served them.
    waiting: dict[str, Waiting]
    # The job GPUs are reserved for: give it to the next pass.
    reserved: str | None = None


@dataclass(frozen=True)
class _Reservation:
    job_id: str
    host: str
    starts_at: float
    gpus: frozenset[str]

    def keeps_out(self, job: QueuedJob, now: float) -> bool:
        """Whether job would still be running when the reservation begins."""
        ends = now + job.time_limit_seconds if job.time_limit_seconds else math.inf
        return math.isinf(self.starts_at) or ends > self.starts_at


class _Cluster:
    """Free GPUs and CPU job slots of every host, as the pass places jobs."""

    def __init__(self, hosts: Sequence[Host], running: Sequence[RunningJob], now: float) -> None:
        self.hosts = {h.name: h for h in hosts}
        self.now = now
        host_of = {g.uuid: h.name for h in hosts for g in h.gpus}
        busy = {u for run in running for u in run.gpu_uuids}
        self.free = {
            h.name: [g for g in sorted(h.gpus, key=lambda g: g.index) if g.uuid not in busy]
            for h in hosts
        }
        self.cpu_jobs: Counter[str] = Counter(run.host for run in running if not run.gpu_uuids)
        self._fits: dict[tuple[int, str, int, str], bool] = {}
        # Per host: (when, GPUs) each running job gives back; no time limit: never foreseen.
        self.releases: defaultdict[str, list[tuple[float, list[GpuSlot]]]] = defaultdict(list)
        by_uuid = {g.uuid: g for h in hosts for g in h.gpus}
        for run in running:
            held = [by_uuid[u] for u in run.gpu_uuids if u in by_uuid]
            if held:
                ends = math.inf if run.ends_by is None else max(run.ends_by, now)
                self.releases[host_of[held[0].uuid]].append((ends, held))

    def eligible(self, job: QueuedJob) -> list[str]:
        """The hosts job may start on now."""
        return [n for n in self.named(job) if not self.hosts[n].hold]

    def named(self, job: QueuedJob) -> list[str]:
        """The hosts job may run on, holding starts or not."""
        return [name for name in self.hosts if not job.host or name == job.host]

    def hold(self, job: QueuedJob) -> str:
        """Why job cannot start on any host it may run on; empty unless every one holds."""
        if self.eligible(job):
            return ""
        held = [(n, self.hosts[n].hold) for n in self.named(job)]
        if len(self.hosts) == 1:
            return held[0][1]
        return "; ".join(f"{name}: {why}" for name, why in held)

    def ever_fits(self, job: QueuedJob) -> bool:
        """Whether an eligible host has GPUs enough for job, all free or not (by request:
        a long queue asks the same few questions many times)."""
        shape = (job.gpus, job.gpu_type, job.min_gpu_memory_mb, job.host)
        if shape not in self._fits:
            self._fits[shape] = any(
                sum(1 for g in self.hosts[name].gpus if job.accepts(g)) >= job.gpus
                for name in self.named(job)
            )
        return self._fits[shape]

    def _fitting(
        self, job: QueuedJob, host: str, reservation: _Reservation | None
    ) -> list[GpuSlot]:
        fitting = [g for g in self.free[host] if job.accepts(g)]
        if reservation and reservation.host == host and reservation.keeps_out(job, self.now):
            fitting = [g for g in fitting if g.uuid not in reservation.gpus]
        return fitting

    def take(
        self, job: QueuedJob, reservation: _Reservation | None, *, dry_run: bool = False
    ) -> Placement | None:
        """Place job where it fits most tightly (fewest GPUs left free), or None. A dry run
        says where without taking the GPUs."""
        best: tuple[int, str, list[GpuSlot]] | None = None
        for host in self.eligible(job):
            fitting = self._fitting(job, host, reservation)
            if len(fitting) >= job.gpus:
                spare = len(self.free[host]) - job.gpus
                if best is None or spare < best[0]:
                    best = (spare, host, fitting[: job.gpus])
        if best is None:
            return None
        _, host, chosen = best
        if dry_run:
            return Placement(job.id, tuple(g.uuid for g in chosen), host)
        self.free[host] = [g for g in self.free[host] if g not in chosen]
        ends = now_plus(self.now, job.time_limit_seconds)
        self.releases[host].append((ends, chosen))
        return Placement(job.id, tuple(g.uuid for g in chosen), host)

    def most_free(self, job: QueuedJob) -> tuple[int, str]:
        """The most free GPUs that fit job on one eligible host, and that host."""
        return max(
            ((sum(1 for g in self.free[h] if job.accepts(g)), h) for h in self.eligible(job)),
            key=lambda pair: pair[0],
            default=(0, ""),
        )

    def draining_for(self, job: QueuedJob) -> bool:
        """Whether the GPUs job would start on first include some that are free now."""
        found = self.reserve(job)
        return found is not None and any(g.uuid in found.gpus for g in self.free[found.host])

    def reserve(self, job: QueuedJob) -> _Reservation | None:
        """Where and when job can start first if nothing else starts before it."""
        found = [r for r in (self._earliest_on(job, host) for host in self.eligible(job)) if r]
        return min(found, key=lambda r: r.starts_at, default=None)

    def _earliest_on(self, job: QueuedJob, host: str) -> _Reservation | None:
        available = [g for g in self.free[host] if job.accepts(g)]
        released: list[GpuSlot] = []
        starts_at = self.now
        for ends, gpus in sorted(self.releases[host], key=lambda r: r[0]):
            if len(available) + len(released) >= job.gpus:
                break
            released += [g for g in gpus if job.accepts(g)]
            starts_at = ends
        if len(available) + len(released) < job.gpus:
            return None
        # Prefer GPUs that are busy now, so the free ones stay usable for backfill.
        chosen = (released + available)[: job.gpus]
        return _Reservation(job.id, host, starts_at, frozenset(g.uuid for g in chosen))

    def take_cpu_slot(self, job: QueuedJob, max_cpu_jobs: int) -> Placement | None:
        open_hosts = [h for h in self.eligible(job) if self.cpu_jobs[h] < max_cpu_jobs]
        if not open_hosts:
            return None
        host = min(open_hosts, key=lambda h: self.cpu_jobs[h])
        self.cpu_jobs[host] += 1
        return Placement(job.id, (), host)


def now_plus(now: float, seconds: int) -> float:
    return now + seconds if seconds else math.inf


def _fair_order(
    queued: Sequence[QueuedJob], shares: Shares, reserved: str | None
) -> Iterator[QueuedJob]:
    """Jobs by priority, then their user's standing (read afresh after each job is served, so
    that what the pass places counts), then submission order. `reserved`, the job whose
    reservation is kept, goes first in its priority class."""
    by_user: defaultdict[str, list[QueuedJob]] = defaultdict(list)
    heap: list[tuple[int, tuple[float, float], int, str]] = []
    for job in sorted(queued, key=lambda j: (-j.priority, j.order), reverse=True):
        if job.id == reserved:
            heap.append((-job.priority, (-1.0, -1.0), job.order, ""))
            kept = job
        else:
            by_user[job.user].append(job)  # each user's next job is at the end of its list
    heap += [(-jobs[-1].priority, shares.key(u), jobs[-1].order, u) for u, jobs in by_user.items()]
    heapq.heapify(heap)
    while heap:
        user = heapq.heappop(heap)[3]
        if not user:
            yield kept
            continue
        jobs = by_user[user]
        yield jobs.pop()
        if jobs:
            heapq.heappush(heap, (-jobs[-1].priority, shares.key(user), jobs[-1].order, user))


def _cap_reason(
    job: QueuedJob, policy: Policy, held_by_user: Counter[str], held_by_team: Counter[str]
) -> Waiting | None:
    checks = [(WaitKind.USER_CAP, "user", policy.user_gpu_caps, job.user, held_by_user)]
    if job.team:
        checks.append((WaitKind.TEAM_CAP, "team", policy.team_gpu_caps, job.team, held_by_team))
    for kind, what, caps, name, held in checks:
        cap = cap_for(caps, name)
        if cap is None or held[name] + job.gpus <= cap:
            continue
        if job.gpus > cap:
            text = f"{what} cap: this job asks for {job.gpus} GPUs, more than the cap of {cap}"
        else:
            owner = f" (team {name})" if what == "team" else ""
            text = f"{what} cap: {pending.plural(held[name], 'GPU')} held of {cap}{owner}"
            if held[name] < cap:
                text += f"; this job needs {job.gpus}"
        return Waiting(kind, text)
    return None


class _Pass:
    """One planning pass: serves the jobs in fair order, placing or giving each its reason."""

    def __init__(
        self,
        running: Sequence[RunningJob],
        hosts: Sequence[Host],
        policy: Policy,
        usage: Mapping[str, float],
        now: float,
    ) -> None:
        self.policy = policy
        self.now = now
        self.cluster = _Cluster(hosts, running, now)
        self.multi_host = len(hosts) > 1
        self.shares = Shares(
            usage,
            [(r.user, len(r.gpu_uuids), r.started_at) for r in running],
            policy.share_weights,
            policy.usage_half_life_seconds,
            now,
        )
        self.held_by_user: Counter[str] = Counter()
        self.held_by_team: Counter[str] = Counter()
        for run in running:
            self._hold(run.user, run.team, len(run.gpu_uuids))
        self.placements: list[Placement] = []
        self.waiting: dict[str, Waiting] = {}
        self.reservation: _Reservation | None = None
        # Jobs waiting for GPUs so far, by priority: those ahead of each later job.
        self.in_line: Counter[int] = Counter()
        self.capped: list[QueuedJob] = []

    def _hold(self, user: str, team: str, gpus: int) -> None:
        self.held_by_user[user] += gpus
        if team:
            self.held_by_team[team] += gpus

    def serve(self, job: QueuedJob) -> None:
        if job.host and job.host not in self.cluster.hosts:
            self._record(job, WaitKind.NO_FIT, f"no host named {job.host}")
        elif job.gpus and not self.cluster.ever_fits(job):
            self._record(job, WaitKind.NO_FIT, self._no_fit(job))
        elif held := self.cluster.hold(job):
            self._record(job, WaitKind.HELD, held)
        elif job.gpus == 0:
            self._cpu_job(job)
        else:
            self._gpu_job(job)

    def _cpu_job(self, job: QueuedJob) -> None:
        placed = self.cluster.take_cpu_slot(job, self.policy.max_cpu_jobs)
        if placed is not None:
            self.placements.append(placed)
            return
        slots = self.policy.max_cpu_jobs
        if slots == 0:
            text = "jobs without GPUs do not run here (scheduler.max_cpu_jobs is 0)"
        elif self.multi_host and not job.host:
            text = f"waiting for a CPU job slot: every host has its {slots} in use"
        else:
            text = f"waiting for a CPU job slot: {slots} of {slots} in use"
        self._record(job, WaitKind.CPU_SLOTS, text)

    def _gpu_job(self, job: QueuedJob) -> None:
        capped = _cap_reason(job, self.policy, self.held_by_user, self.held_by_team)
        if capped is not None:
            self._record(job, capped.kind, capped.text)
            self.capped.append(job)
            return
        if self.reservation is not None and not self.policy.backfill:
            self._wait(job, WaitKind.BEHIND, f"{self._ahead_of(job)} (backfill is off)")
            return
        placed = self.cluster.take(job, self.reservation)
        if placed is not None:
            self.placements.append(placed)
            self._hold(job.user, job.team, job.gpus)
            self.shares.hold(job.user, job.gpus)
        elif self.reservation is None:
            self.reservation = self.cluster.reserve(job)
            assert self.reservation is not None  # it fits a host once every GPU there is free
            self._first_in_line(job, self.reservation)
        elif self.cluster.take(job, None, dry_run=True) is not None:
            self._wait(job, WaitKind.BACKFILL, self._kept_out(job, self.reservation))
        else:
            self._wait(job, WaitKind.GPUS, self._short_of_gpus(job))

    def finish(self) -> Plan:
        """The plan. Caps are stated with what is held at the end of the pass (jobs placed
        after a capped one count too)."""
        for job in self.capped:
            capped = _cap_reason(job, self.policy, self.held_by_user, self.held_by_team)
            assert capped is not None  # GPUs held only grow during a pass
            self.waiting[job.id] = replace(self.waiting[job.id], kind=capped.kind, text=capped.text)
        reserved = self.reservation.job_id if self.reservation else None
        return Plan(self.placements, self.waiting, reserved)

    def _record(self, job: QueuedJob, kind: WaitKind, text: str, due: float | None = None) -> None:
        """Why job waits; jobs are numbered in the order they are served."""
        self.waiting[job.id] = Waiting(kind, text, len(self.waiting) + 1, due)

    def _wait(self, job: QueuedJob, kind: WaitKind, text: str, due: float | None = None) -> None:
        """A job waiting for GPUs: the jobs after it wait behind it."""
        self._record(job, kind, text, due)
        self.in_line[job.priority] += 1

    def _no_fit(self, job: QueuedJob) -> str:
        asked = pending.gpus_wanted(job.gpus, job.gpu_type, job.min_gpu_memory_mb)
        if job.host:
            return f"host {job.host} does not have {asked}"
        if not self.multi_host:
            return f"this host does not have {asked}"
        return f"no host has {asked}"

    def _ahead_of(self, job: QueuedJob) -> str:
        higher = sum(n for p, n in self.in_line.items() if p > job.priority)
        return pending.behind(higher, self.in_line[job.priority])

    def _first_in_line(self, job: QueuedJob, reservation: _Reservation) -> None:
        where = reservation.host if self.multi_host else ""
        fit = pending.first_fit(reservation.starts_at, self.now, where)
        asked = pending.gpus_wanted(job.gpus, job.gpu_type, job.min_gpu_memory_mb)
        due = None if math.isinf(reservation.starts_at) else reservation.starts_at
        self._wait(job, WaitKind.RESERVED, f"waiting for {asked}; {fit}", due)

    def _kept_out(self, job: QueuedJob, reservation: _Reservation) -> str:
        where = f" on {reservation.host}" if self.multi_host else ""
        due = (
            "its start time is unknown"
            if math.isinf(reservation.starts_at)
            else f"due in {pending.in_about(reservation.starts_at - self.now)}"
        )
        return (
            f"waiting for {job.wanted()}: the free ones{where} are reserved for job "
            f"{reservation.job_id}, first in line ({due}), and this job "
            f"({pending.time_limit(job.time_limit_seconds)}) would still be running then"
        )

    def _short_of_gpus(self, job: QueuedJob) -> str:
        count, host = self.cluster.most_free(job)
        if count == 0:
            free = "none free"
        elif self.multi_host and not job.host:
            free = f"at most {count} free on one host ({host})"
        else:
            free = f"{count} free"
        return f"waiting for {job.wanted()}, {free}; {self._ahead_of(job)}"


def plan(
    queued: Sequence[QueuedJob],
    running: Sequence[RunningJob],
    hosts: Sequence[Host],
    policy: Policy,
    usage: Mapping[str, float],
    now: float,
    reserved: str | None = None,
) -> Plan:
    """usage: each user's decayed GPU-hours of finished jobs, as of now (fair_share.py).
    reserved: the job the last pass reserved GPUs for (Plan.reserved). It keeps them while
    some are already free and held for it (a host is draining for it): handing them to
    another job would waste the drain and break the start time it was told."""
    one = _Pass(running, hosts, policy, usage, now)
    held = next((j for j in queued if j.id == reserved), None)
    if held is not None and not one.cluster.draining_for(held):
        held = None
    for job in _fair_order(queued, one.shares, held.id if held else None):
        one.serve(job)
    return one.finish()
