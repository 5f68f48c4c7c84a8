"""Scheduling quality: a team's trace of jobs replayed through the planner on a simulated clock.

    python bench/schedule_trace.py [--jobs 2000] [--seeds 1,2,3,4,5] [--loads 0.95,1.0]

Three hosts of 8 GPUs. Each trace is generated from its seed: jobs of 1, 2, 4 and 8 GPUs (45, 25,
18 and 12 %) from eight users of unequal appetite, lognormal run times (heavy-tailed: median 1 h,
p99 about 20 h, up to 3 days), time limits as users give them (1.1 to 3 times the run time,
rounded up to the half hour; one job in ten gives none), one job in twenty at high priority, and
Poisson arrivals scaled so that the jobs offer `load` of the hosts' GPU-hours between the first
submission and the last: 0.95 and 1.0, a busy team, not an idle one.

Each scheduler sees the same trace and runs every job to its end:

  team queue     one queue for the three hosts, placed by the planner (hatrain.agent.scheduler
                 .plan) over all of them, binding each job to a host only when it starts
  early binding  what `submit --host auto` does today: each job is bound at submit to the host
                 with enough free GPUs, else the shortest queue (client/.../cli.py pick_host), and
                 then waits for that host's own planner (each host with its own usage history)
  FIFO           one queue, first come first served: the same planner with backfill off and one
                 fair-share class, so the first job that cannot start holds up all others

A planner is called whenever a job arrives or ends, with the usage of the jobs that ended so far
and the reservation of its last pass, as the agent calls it. Reported per scheduler: GPU
utilisation over the span of the submissions, the utilisation while any job waited, mean and p95
wait (submit to start), the wait of the 8-GPU jobs, how often a job told "first fit in about T"
had started by T, and the mean wait of the heaviest and the lightest user.
"""

import argparse
import heapq
import math
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from hatrain.agent.fair_share import UsageBook, UsageRecord  # noqa: E402
from hatrain.agent.pending import WaitKind  # noqa: E402
from hatrain.agent.scheduler import (  # noqa: E402
    GpuSlot,
    Host,
    Placement,
    Policy,
    QueuedJob,
    RunningJob,
    plan,
)

HOUR = 3600.0
HOSTS = [
    Host(f"gpu{h}", tuple(GpuSlot(i, f"gpu{h}-{i}", "NVIDIA H200", 143_771) for i in range(8)))
    for h in (1, 2, 3)
]
GPUS = sum(len(h.gpus) for h in HOSTS)
HALF_LIFE = 7 * 24 * HOUR


@dataclass(frozen=True)
class TraceJob:
    id: str
    user: str
    gpus: int
    submit: float
    runs_for: float
    time_limit: int  # seconds; 0: none given
    priority: int


def make_trace(count: int, seed: int, load: float) -> list[TraceJob]:
    rng = random.Random(seed)
    users = [f"user{i}" for i in range(8)]
    activity = [0.26, 0.2, 0.14, 0.12, 0.1, 0.08, 0.06, 0.04]
    shapes = []
    for _ in range(count):
        gpus = rng.choices([1, 2, 4, 8], weights=[0.45, 0.25, 0.18, 0.12])[0]
        runs_for = min(max(rng.lognormvariate(math.log(HOUR), 1.3), 300.0), 72 * HOUR)
        if rng.random() < 0.1:
            limit = 0
        else:
            guess = runs_for * rng.uniform(1.1, 3.0)
            limit = int(math.ceil(guess / 1800) * 1800)
        priority = 10 if rng.random() < 0.05 else 0
        shapes.append((gpus, runs_for, limit, priority, rng.choices(users, weights=activity)[0]))
    # Arrivals: a Poisson process, its clock scaled so that the jobs offer exactly `load` of the
    # hosts' GPU-hours between the first submission and the last.
    gaps = [rng.expovariate(1.0) for _ in range(count)]
    demand = sum(gpus * runs_for for gpus, runs_for, *_ in shapes)
    scale = demand / (GPUS * load) / sum(gaps[1:])
    trace, clock = [], 0.0
    for i, (gpus, runs_for, limit, priority, user) in enumerate(shapes):
        clock += gaps[i] * scale
        trace.append(TraceJob(f"j{i}", user, gpus, clock, runs_for, limit, priority))
    return trace


def _queued(job: TraceJob, user: str = "", priority: int | None = None) -> QueuedJob:
    return QueuedJob(
        job.id,
        user or job.user,
        job.gpus,
        priority=job.priority if priority is None else priority,
        time_limit_seconds=job.time_limit,
        order=int(job.id[1:]),
    )


@dataclass
class Outcome:
    starts: dict[str, float] = field(default_factory=dict)
    hosts: dict[str, str] = field(default_factory=dict)
    # Jobs' first "first fit in about T" (as a time), until they start.
    promises: dict[str, float] = field(default_factory=dict)
    kept: int = 0
    given: int = 0
    passes: int = 0
    plan_seconds: float = 0.0
    longest_queue: int = 0


class Simulation:
    """Jobs arrive, start where the scheduler places them, run for their time and end."""

    def __init__(self, trace: list[TraceJob], name: str) -> None:
        self.trace = trace
        self.name = name
        self.by_id = {j.id: j for j in trace}
        self.out = Outcome()
        # The job each planner (by host, "" for a team's) last reserved GPUs for.
        self.reserved: dict[str, str | None] = {}

    def run(self, schedule: Callable[[float, list[TraceJob], list[RunningJob]], None]) -> None:
        self.queue: list[TraceJob] = []
        self.running: dict[str, RunningJob] = {}
        ends: list[tuple[float, str]] = []
        arrivals = list(self.trace)
        next_arrival = 0
        self._ends = ends
        while next_arrival < len(arrivals) or ends or self.queue:
            upcoming = arrivals[next_arrival].submit if next_arrival < len(arrivals) else math.inf
            now = min(upcoming, ends[0][0] if ends else math.inf)
            assert not math.isinf(now), f"{self.name}: jobs left that can never start"
            while ends and ends[0][0] <= now:
                _, job_id = heapq.heappop(ends)
                self.finish(self.running.pop(job_id), now)
            while next_arrival < len(arrivals) and arrivals[next_arrival].submit <= now:
                self.arrive(arrivals[next_arrival], now)
                next_arrival += 1
            if self.queue:
                schedule(now, self.queue, list(self.running.values()))

    def go(self) -> Outcome:
        raise NotImplementedError

    def arrive(self, job: TraceJob, now: float) -> None:
        self.queue.append(job)

    def finish(self, run: RunningJob, now: float) -> None:
        pass

    def start(self, placement: Placement, now: float) -> None:
        job = self.by_id[placement.job_id]
        ends_by = now + job.time_limit if job.time_limit else None
        self.running[job.id] = RunningJob(
            job.id, job.user, placement.gpu_uuids, ends_by, host=placement.host, started_at=now
        )
        heapq.heappush(self._ends, (now + job.runs_for, job.id))
        self.out.starts[job.id] = now
        self.out.hosts[job.id] = placement.host
        self.queue = [j for j in self.queue if j.id != job.id]
        if job.id in self.out.promises:
            self.out.kept += now <= self.out.promises.pop(job.id) + 1

    def plan_and_start(
        self,
        now: float,
        queued: list[QueuedJob],
        running: list[RunningJob],
        hosts: list[Host],
        policy: Policy,
        usage: dict[str, float],
    ) -> None:
        began = time.perf_counter()
        host = hosts[0].name if len(hosts) == 1 else ""
        result = plan(queued, running, hosts, policy, usage, now, self.reserved.get(host))
        self.reserved[host] = result.reserved
        self.out.plan_seconds += time.perf_counter() - began
        self.out.passes += 1
        self.out.longest_queue = max(self.out.longest_queue, len(queued))
        for job_id, why in result.waiting.items():
            first = job_id not in self.out.promises and job_id not in self.out.starts
            if why.kind is WaitKind.RESERVED and why.due is not None and first:
                self.out.given += 1
                self.out.promises[job_id] = why.due  # only the first one a job is given
        for placement in result.placements:
            self.start(placement, now)


class TeamQueue(Simulation):
    """Late binding: one queue, the planner over every host."""

    def __init__(self, trace: list[TraceJob], policy: Policy, name: str = "team queue") -> None:
        super().__init__(trace, name)
        self.policy = policy
        self.usage = UsageBook(HALF_LIFE)
        self.recorded = 0

    def finish(self, run: RunningJob, now: float) -> None:
        assert run.started_at is not None
        self.recorded += 1
        record = UsageRecord(run.user, "", len(run.gpu_uuids), run.started_at, now)
        self.usage.add([(self.recorded, record)], now)

    def go(self) -> Outcome:
        as_queued = {j.id: _queued(j) for j in self.trace}

        def schedule(now: float, queue: list[TraceJob], running: list[RunningJob]) -> None:
            queued = [as_queued[j.id] for j in queue]
            self.plan_and_start(now, queued, running, HOSTS, self.policy, self.usage.at(now))

        self.run(schedule)
        return self.out


class Fifo(TeamQueue):
    """First come, first served: one fair-share class, no priorities, no backfill."""

    def __init__(self, trace: list[TraceJob]) -> None:
        super().__init__(trace, Policy(backfill=False), "FIFO")

    def go(self) -> Outcome:
        in_line = {j.id: _queued(j, user="team", priority=0) for j in self.trace}

        def schedule(now: float, queue: list[TraceJob], running: list[RunningJob]) -> None:
            queued = [in_line[j.id] for j in queue]
            self.plan_and_start(now, queued, running, HOSTS, self.policy, {})

        self.run(schedule)
        return self.out


class EarlyBinding(Simulation):
    """`submit --host auto`: bound at submit, then each host's own queue and planner."""

    def __init__(self, trace: list[TraceJob]) -> None:
        super().__init__(trace, "early binding")
        self.bound: dict[str, str] = {}
        self.books = {h.name: UsageBook(HALF_LIFE) for h in HOSTS}
        self.recorded = 0

    def arrive(self, job: TraceJob, now: float) -> None:
        def score(host: Host) -> tuple[int, int, int]:
            busy = sum(len(r.gpu_uuids) for r in self.running.values() if r.host == host.name)
            free = len(host.gpus) - busy
            queued = sum(1 for j in self.queue if self.bound[j.id] == host.name)
            return (0 if free >= job.gpus else 1, queued, -free)

        self.bound[job.id] = min(HOSTS, key=score).name
        super().arrive(job, now)

    def finish(self, run: RunningJob, now: float) -> None:
        assert run.started_at is not None
        self.recorded += 1
        record = UsageRecord(run.user, "", len(run.gpu_uuids), run.started_at, now)
        self.books[run.host].add([(self.recorded, record)], now)

    def go(self) -> Outcome:
        policy = Policy()
        as_queued = {j.id: _queued(j) for j in self.trace}

        def schedule(now: float, queue: list[TraceJob], running: list[RunningJob]) -> None:
            for host in HOSTS:
                mine = [as_queued[j.id] for j in queue if self.bound[j.id] == host.name]
                if mine:
                    here = [r for r in running if r.host == host.name]
                    usage = self.books[host.name].at(now)
                    self.plan_and_start(now, mine, here, [host], policy, usage)

        self.run(schedule)
        return self.out


@dataclass(frozen=True)
class Figures:
    utilisation: float
    utilisation_waiting: float
    mean_wait: float
    p95_wait: float
    big_mean_wait: float
    big_max_wait: float
    promises_kept: str
    # Mean wait of the user who asked for the most GPU-hours, and of the one who asked for least.
    heaviest_user_wait: float
    lightest_user_wait: float
    plan_ms: float
    longest_queue: int


def figures(trace: list[TraceJob], out: Outcome) -> Figures:
    assert len(out.starts) == len(trace), "every job must have run"
    waits = sorted(out.starts[j.id] - j.submit for j in trace)
    big = [out.starts[j.id] - j.submit for j in trace if j.gpus == 8]
    window = (trace[0].submit, trace[-1].submit)
    busy = 0.0
    # GPU-seconds busy inside the window, and (sweeping events) busy while a job waited.
    events: list[tuple[float, int, int]] = []  # (time, change in GPUs busy, change in waiting)
    for j in trace:
        start, end = out.starts[j.id], out.starts[j.id] + j.runs_for
        busy += j.gpus * max(0.0, min(end, window[1]) - max(start, window[0]))
        events += [(start, j.gpus, 0), (end, -j.gpus, 0)]
        if start > j.submit:
            events += [(j.submit, 0, 1), (start, 0, -1)]
    events.sort()
    in_use, waiting, last, waited_time, waited_busy = 0, 0, events[0][0], 0.0, 0.0
    for t, gpus, waits_delta in events:
        if waiting:
            waited_time += t - last
            waited_busy += in_use * (t - last)
        in_use, waiting, last = in_use + gpus, waiting + waits_delta, t
    kept = f"{out.kept}/{out.given}" if out.given else "none given"
    demand: dict[str, float] = {}
    by_user: dict[str, list[float]] = {}
    for j in trace:
        demand[j.user] = demand.get(j.user, 0.0) + j.gpus * j.runs_for
        by_user.setdefault(j.user, []).append(out.starts[j.id] - j.submit)
    heaviest, lightest = max(demand, key=demand.__getitem__), min(demand, key=demand.__getitem__)
    return Figures(
        utilisation=busy / (GPUS * (window[1] - window[0])),
        utilisation_waiting=waited_busy / (GPUS * waited_time) if waited_time else 1.0,
        mean_wait=sum(waits) / len(waits),
        p95_wait=waits[int(0.95 * (len(waits) - 1))],
        big_mean_wait=sum(big) / len(big),
        big_max_wait=max(big),
        promises_kept=kept,
        heaviest_user_wait=sum(by_user[heaviest]) / len(by_user[heaviest]),
        lightest_user_wait=sum(by_user[lightest]) / len(by_user[lightest]),
        plan_ms=1000 * out.plan_seconds / max(out.passes, 1),
        longest_queue=out.longest_queue,
    )


def _h(seconds: float) -> str:
    return f"{seconds / HOUR:.2f} h"


def describe(trace: list[TraceJob], seed: int) -> str:
    sizes = {g: sum(1 for j in trace if j.gpus == g) for g in (1, 2, 4, 8)}
    runs = sorted(j.runs_for for j in trace)
    span = trace[-1].submit - trace[0].submit
    return (
        f"seed {seed}: {len(trace)} jobs over {span / 86400:.1f} days, "
        f"{len({j.user for j in trace})} users, jobs by GPUs {sizes}, run time median "
        f"{_h(runs[len(runs) // 2])}, p99 {_h(runs[int(0.99 * len(runs))])}, longest "
        f"{_h(runs[-1])}; {sum(1 for j in trace if not j.time_limit)} without a time limit"
    )


SCHEDULERS: dict[str, Callable[[list[TraceJob]], Simulation]] = {
    "team queue": lambda trace: TeamQueue(trace, Policy()),
    "early binding": EarlyBinding,
    "FIFO": Fifo,
}


def replay(trace: list[TraceJob]) -> dict[str, Figures]:
    results = {}
    for name, make in SCHEDULERS.items():
        results[name] = figures(trace, make(trace).go())
        f = results[name]
        print(
            f"  {name:<14} utilisation {f.utilisation:.3f} (while jobs waited "
            f"{f.utilisation_waiting:.3f})  wait mean {_h(f.mean_wait)}, p95 {_h(f.p95_wait)}  "
            f"8-GPU jobs' wait mean {_h(f.big_mean_wait)}, max {_h(f.big_max_wait)}  "
            f"first-fit times kept {f.promises_kept}  heaviest user's mean wait "
            f"{_h(f.heaviest_user_wait)}, lightest's {_h(f.lightest_user_wait)}  "
            f"({f.plan_ms:.1f} ms a planning pass, queue up to {f.longest_queue})",
            flush=True,
        )
    return results


def _spread(values: list[float], spec: str = ".2f") -> str:
    """The median and the range: `0.30 (0.21-0.34)`."""
    ordered = sorted(values)
    middle = ordered[len(ordered) // 2]
    return f"{middle:{spec}} ({ordered[0]:{spec}}-{ordered[-1]:{spec}})"


def summary(runs: list[dict[str, Figures]], load: float) -> None:
    def over(name: str, value: Callable[[Figures], float], spec: str = ".2f") -> str:
        return _spread([value(r[name]) for r in runs], spec)

    def ratio(other: str, value: Callable[[Figures], float]) -> str:
        return _spread([value(r["team queue"]) / value(r[other]) for r in runs])

    print(f"load {load:.2f}, median over the {len(runs)} traces (range):")
    for other in ("early binding", "FIFO"):
        target = " (target <= 0.7)" if other == "early binding" else ""
        print(
            f"  team queue / {other}: mean wait {ratio(other, lambda f: f.mean_wait)}{target}, "
            f"p95 wait {ratio(other, lambda f: f.p95_wait)}, 8-GPU jobs' mean wait "
            f"{ratio(other, lambda f: f.big_mean_wait)}, their longest wait "
            f"{ratio(other, lambda f: f.big_max_wait)}"
        )
    for name in SCHEDULERS:
        target = " (target >= 0.9)" if name == "team queue" else ""
        print(
            f"  {name} utilisation {over(name, lambda f: f.utilisation, '.3f')}{target}, "
            f"while jobs waited {over(name, lambda f: f.utilisation_waiting, '.3f')}; "
            f"mean wait {over(name, lambda f: f.mean_wait / HOUR)} h"
        )
    print(f"  the traces offer {load:.2f}: no schedule can use more over their span")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--seeds", default="1,2,3,4,5", help="One trace per seed and load.")
    parser.add_argument("--loads", default="0.95,1.0", help="Offered loads, comma-separated.")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    loads = [float(x) for x in args.loads.split(",")]
    print(
        f"{len(HOSTS)} hosts x 8 GPUs; one trace of {args.jobs} jobs per seed, offering the load "
        "given of the hosts' GPU-hours over the span of its submissions"
    )
    summaries = []
    for load in loads:
        runs = []
        for seed in seeds:
            trace = make_trace(args.jobs, seed, load)
            print(f"load {load:.2f}, {describe(trace, seed)}", flush=True)
            runs.append(replay(trace))
        summaries.append((runs, load))
    for runs, load in summaries:
        summary(runs, load)


if __name__ == "__main__":
    main()
