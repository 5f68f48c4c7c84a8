"""The planner as a pure function over several hosts: where jobs start, and why the others wait.

Each reason is checked against what the planner then does: the job reserved "in about 1 h" starts
by then, a capped job starts once its user holds less, and so on.
"""

import random
from typing import Any

from hatrain.agent.pending import WaitKind, in_about
from hatrain.agent.scheduler import (
    GpuSlot,
    Host,
    Plan,
    Policy,
    QueuedJob,
    RunningJob,
    plan,
)

NOW = 10_000.0
HOUR = 3600


def _host(name: str, count: int = 8, kind: str = "NVIDIA H200", memory_mb: int = 143_771) -> Host:
    return Host(name, tuple(GpuSlot(i, f"{name}-{i}", kind, memory_mb) for i in range(count)))


THREE = [_host("gpu1"), _host("gpu2"), _host("gpu3")]


def _q(job_id: str, gpus: int, order: int, user: str = "u", **kw: Any) -> QueuedJob:
    return QueuedJob(job_id, user, gpus, order=order, **kw)


def _run(job_id: str, host: str, gpus: range, ends_in: float | None, user: str = "r") -> RunningJob:
    ends = None if ends_in is None else NOW + ends_in
    return RunningJob(job_id, user, tuple(f"{host}-{i}" for i in gpus), ends, host=host)


def _plan(
    queued: list[QueuedJob],
    running: list[RunningJob],
    hosts: list[Host] = THREE,
    policy: Policy | None = None,
    usage: dict[str, float] | None = None,
    now: float = NOW,
    reserved: str | None = None,
) -> Plan:
    return plan(queued, running, hosts, policy or Policy(), usage or {}, now, reserved)


def test_a_job_starts_on_the_host_it_fits_most_tightly() -> None:
    """A 2-GPU job goes where 2 GPUs are left (keeping whole hosts free); an 8-GPU job then
    takes the empty host."""
    running = [_run("r1", "gpu1", range(6), HOUR), _run("r2", "gpu2", range(3), HOUR)]
    result = _plan([_q("two", 2, 0), _q("eight", 8, 1)], running)
    where = {p.job_id: (p.host, p.gpu_uuids) for p in result.placements}
    assert where == {
        "two": ("gpu1", ("gpu1-6", "gpu1-7")),
        "eight": ("gpu3", tuple(f"gpu3-{i}" for i in range(8))),
    }
    assert result.waiting == {}


def test_host_and_gpu_constraints_are_honoured_across_hosts() -> None:
    """--host pins a job to one host, GPU type and memory pick the hosts that have them, and a
    request no host can meet says so."""
    hosts = [_host("gpu1"), _host("gpu2", 4, "NVIDIA GeForce RTX 4090", 24_564)]
    running = [_run("r", "gpu1", range(8), HOUR)]
    queued = [
        _q("pinned", 1, 0, host="gpu1"),
        _q("big-memory", 1, 1, min_gpu_memory_mb=80 * 1024),
        _q("rtx", 2, 2, gpu_type="4090"),
        _q("too-many", 8, 3, gpu_type="H200", min_gpu_memory_mb=80 * 1024),
        _q("nowhere", 1, 4, host="gpu9"),
        _q("h100", 1, 5, gpu_type="H100"),
    ]
    result = _plan(queued, running, hosts)
    assert [(p.job_id, p.host) for p in result.placements] == [("rtx", "gpu2")]
    reasons = {job_id: w.text for job_id, w in result.waiting.items()}
    assert reasons["pinned"] == "waiting for 1 GPU; first fit in about 1 h on gpu1, reserved"
    assert reasons["big-memory"] == (
        "waiting for 1 GPU (≥80 GB), none free; behind 1 job of the same priority"
    )
    assert reasons["too-many"] == (
        "waiting for 8 GPUs (H200, ≥80 GB), none free; behind 2 jobs of the same priority"
    )
    assert reasons["nowhere"] == "no host named gpu9"
    assert reasons["h100"] == "no host has 1 GPU (H100)"


def test_the_reservation_is_on_the_host_that_frees_first_and_backfill_goes_around_it() -> None:
    """The first job that cannot start reserves the host whose GPUs free up first. A job that
    would still run then starts on another host, or not at all; one that ends before may use
    the reserved GPUs."""
    running = [
        _run("a", "gpu1", range(8), 3 * HOUR),
        _run("b", "gpu2", range(8), HOUR),
        _run("c", "gpu3", range(6), 5 * HOUR),
    ]
    queued = [
        _q("big", 8, 0),
        _q("long", 2, 1, time_limit_seconds=8 * HOUR),
        _q("long-too", 1, 2, time_limit_seconds=8 * HOUR),
    ]
    result = _plan(queued, running)
    assert [(p.job_id, p.host) for p in result.placements] == [("long", "gpu3")]
    big = result.waiting["big"]
    assert (big.kind, big.position) == (WaitKind.RESERVED, 1)
    assert big.text == "waiting for 8 GPUs; first fit in about 1 h on gpu2, reserved"
    assert result.waiting["long-too"].text == (
        "waiting for 1 GPU, none free; behind 1 job of the same priority"
    )

    # On gpu2 alone: two GPUs free now, the rest in an hour.
    hosts = [THREE[1]]
    running = [_run("b", "gpu2", range(6), HOUR)]
    queued = [
        _q("big", 8, 0),
        _q("short", 1, 1, time_limit_seconds=HOUR // 2),
        _q("long", 1, 2, time_limit_seconds=2 * HOUR),
    ]
    result = _plan(queued, running, hosts)
    assert [p.job_id for p in result.placements] == ["short"]
    long = result.waiting["long"]
    assert long.kind is WaitKind.BACKFILL
    assert long.text == (
        "waiting for 1 GPU: the free ones are reserved for job big, first in line (due in "
        "about 1 h), and this job (time limit 2 h) would still be running then"
    )


def test_an_unbounded_job_cannot_backfill_and_the_reason_says_the_start_is_unknown() -> None:
    running = [_run("a", "gpu1", range(4), None)]
    result = _plan([_q("big", 6, 0), _q("any", 1, 1)], running, [_host("gpu1", 6)])
    assert result.placements == []
    assert result.waiting["big"].text == (
        "waiting for 6 GPUs; first fit unknown: the jobs holding those GPUs have no time limit; "
        "reserved"
    )
    assert "(no time limit) would still be running then" in result.waiting["any"].text


def test_caps_and_priorities_give_their_reasons() -> None:
    """User and team caps count GPUs held and those placed in the same pass; jobs behind higher
    priorities say how many are ahead."""
    policy = Policy(user_gpu_caps={"ann": 4, "dan": 4}, team_gpu_caps={"nlp": 6})
    running = [
        _run("r1", "gpu1", range(4), HOUR, user="ann"),
        _run("r2", "gpu2", range(2), 2 * HOUR, user="zed"),
    ]
    queued = [
        _q("ann-more", 1, 0, user="ann"),
        _q("bob-1", 4, 1, user="bob", team="nlp"),
        _q("cy-1", 4, 2, user="cy", team="nlp"),
        _q("dan-huge", 6, 3, user="dan"),
        _q("urgent", 8, 4, user="eve", priority=10),
        _q("urgent-2", 8, 5, user="fay", priority=10),
        _q("low", 8, 6, user="gus", priority=-5),
    ]
    result = _plan(queued, running, [_host("gpu1"), _host("gpu2")], policy)
    assert [(p.job_id, p.host) for p in result.placements] == [("bob-1", "gpu2")]
    reasons = {job_id: w.text for job_id, w in result.waiting.items()}
    assert list(reasons) == ["urgent", "urgent-2", "cy-1", "dan-huge", "ann-more", "low"]
    assert reasons == {
        "urgent": "waiting for 8 GPUs; first fit in about 1 h on gpu1, reserved",
        "urgent-2": "waiting for 8 GPUs, at most 6 free on one host (gpu2); "
        "behind 1 job of the same priority",
        "cy-1": "team cap: 4 GPUs held of 6 (team nlp); this job needs 4",
        "dan-huge": "user cap: this job asks for 6 GPUs, more than the cap of 4",
        "ann-more": "user cap: 4 GPUs held of 4",
        "low": "waiting for 8 GPUs, at most 4 free on one host (gpu1); "
        "behind 2 jobs of higher priority",
    }


def test_backfill_off_keeps_everything_behind_the_first_job_in_line() -> None:
    running = [_run("r", "gpu1", range(6), HOUR)]
    queued = [_q("big", 8, 0), _q("small", 1, 1, time_limit_seconds=60)]
    result = _plan(queued, running, [_host("gpu1")], Policy(backfill=False))
    assert result.placements == []
    assert result.waiting["small"].text == ("behind 1 job of the same priority (backfill is off)")


def test_cpu_jobs_use_each_hosts_slots() -> None:
    policy = Policy(max_cpu_jobs=1)
    queued = [_q(f"cpu{i}", 0, i) for i in range(3)]
    result = _plan(queued, [], [_host("gpu1"), _host("gpu2")], policy)
    assert sorted(p.host for p in result.placements) == ["gpu1", "gpu2"]
    assert result.waiting["cpu2"].text == "waiting for a CPU job slot: every host has its 1 in use"
    one = _plan(queued, [], [_host("")], Policy(max_cpu_jobs=0))
    assert one.waiting["cpu0"].text == (
        "jobs without GPUs do not run here (scheduler.max_cpu_jobs is 0)"
    )


def test_fair_share_orders_users_by_decayed_usage_over_weight() -> None:
    """Less usage goes first; a weight of 2 halves a user's usage; users without usage take
    turns within one pass, the GPUs each places counting against it."""
    hosts = [_host("", 4)]
    queued = [_q("a1", 1, 0, user="a"), _q("b1", 1, 1, user="b"), _q("c1", 1, 2, user="c")]
    usage = {"a": 100.0, "b": 30.0, "c": 60.0}
    order = list(_plan(queued, [_run("r", "", range(4), HOUR)], hosts, usage=usage).waiting)
    assert order == ["b1", "c1", "a1"]
    weighted = Policy(share_weights={"a": 4.0})
    order = list(
        _plan(queued, [_run("r", "", range(4), HOUR)], hosts, weighted, usage=usage).waiting
    )
    assert order == ["a1", "b1", "c1"]

    queued = [_q(f"a{i}", 1, i, user="a") for i in range(4)]
    queued += [_q(f"b{i}", 1, 10 + i, user="b") for i in range(4)]
    placed = [p.job_id for p in _plan(queued, [], hosts).placements]
    assert placed == ["a0", "b0", "a1", "b1"]


def test_a_reservation_is_kept_once_gpus_are_held_free_for_it() -> None:
    """A job whose reserved GPUs are partly free already (the host drains for it) keeps the
    reservation when a user with less usage submits a job that cannot start either; while all
    of its GPUs are still busy, fair share decides who is first in line."""
    hosts = [_host("", 4)]
    light = _q("light", 4, 1, user="light")
    heavy = _q("heavy-big", 4, 0, user="heavy")
    usage = {"heavy": 50.0}

    draining = [_run("r", "", range(2), HOUR)]  # 2 GPUs free, held for heavy-big
    first = _plan([heavy], draining, hosts, usage=usage)
    assert first.reserved == "heavy-big"
    kept = _plan([heavy, light], draining, hosts, usage=usage, reserved=first.reserved)
    assert kept.reserved == "heavy-big"
    assert kept.waiting["heavy-big"].text == "waiting for 4 GPUs; first fit in about 1 h, reserved"
    assert kept.waiting["light"].text == (
        "waiting for 4 GPUs, 2 free; behind 1 job of the same priority"
    )
    assert _plan([heavy, light], draining, hosts, usage=usage).reserved == "light"

    all_busy = [_run("r", "", range(4), HOUR)]
    moved = _plan([heavy, light], all_busy, hosts, usage=usage, reserved="heavy-big")
    assert moved.reserved == "light"
    assert list(moved.waiting) == ["light", "heavy-big"]

    urgent = _q("urgent", 1, 2, user="light", priority=5)
    busy_3 = [_run("r", "", range(3), HOUR)]
    assert _plan([heavy, urgent], busy_3, hosts, reserved="heavy-big").placements[0].job_id == (
        "urgent"
    )


def test_running_jobs_count_for_what_they_have_used_so_far() -> None:
    """A user whose job has run for a day comes after one whose job has just started."""
    hosts = [_host("", 3)]
    running = [
        RunningJob("old", "a", ("-0",), started_at=NOW - 86_400),
        RunningJob("new", "b", ("-1",), started_at=NOW - 60),
    ]
    queued = [_q("a2", 1, 0, user="a"), _q("b2", 1, 1, user="b")]
    assert [p.job_id for p in _plan(queued, running, hosts).placements] == ["b2"]


def test_in_about_reads_like_a_person_would_say_it() -> None:
    assert [in_about(s) for s in (20, 300, 4800, 7200, 93_600, 86_400)] == [
        "less than a minute",
        "about 5 min",
        "about 1 h 20 min",
        "about 2 h",
        "about 1 d 2 h",
        "about 1 d",
    ]


def _random_case(
    rng: random.Random, users: str
) -> tuple[list[Host], list[RunningJob], list[QueuedJob]]:
    hosts = [_host(f"h{i}", rng.choice([2, 4, 8])) for i in range(rng.randint(1, 3))]
    running: list[RunningJob] = []
    for host in hosts:
        free = list(range(len(host.gpus)))
        rng.shuffle(free)
        while free and rng.random() < 0.7:
            held = tuple(f"{host.name}-{free.pop()}" for _ in range(min(len(free), 2)))
            ends = rng.choice([None, rng.randint(1, 20) * 600, rng.randint(1, 20) * 600])
            end_time = None if ends is None else NOW + ends
            running.append(RunningJob(f"r{len(running)}", "r", held, end_time, host=host.name))
    queued = [
        _q(
            f"q{i}",
            rng.choice([1, 1, 2, 4, 8]),
            i,
            user=rng.choice(users),
            priority=rng.choice([0, 0, 1]),
            time_limit_seconds=rng.choice([0, 600, 3600, 4 * HOUR]),
            host=rng.choice(["", "", "", hosts[0].name]),
        )
        for i in range(rng.randint(1, 12))
    ]
    return hosts, running, queued


def test_a_first_fit_time_is_kept() -> None:
    """Random hosts, running jobs and queues, replayed forward with every job running to its
    time limit and nothing new submitted: each job told "first fit in about T" starts within
    T (give or take the minute the text rounds to)."""
    promises = 0
    for seed in range(400):
        hosts, running, queued = _random_case(random.Random(seed), "u")
        by_id = {j.id: j for j in queued}
        now, live, waiting = NOW, list(running), list(queued)
        promised: dict[str, tuple[float, str]] = {}
        reserved = None
        for _ in range(200):
            result = plan(waiting, live, hosts, Policy(), {}, now, reserved)
            reserved = result.reserved
            for job_id, why in result.waiting.items():
                if why.kind is WaitKind.RESERVED and "unknown" not in why.text:
                    promised.setdefault(job_id, (now + _stated_seconds(why.text), why.text))
            for p in result.placements:
                job = by_id[p.job_id]
                ends = now + job.time_limit_seconds if job.time_limit_seconds else None
                live.append(RunningJob(job.id, job.user, p.gpu_uuids, ends, host=p.host))
                waiting.remove(job)
                if job.id in promised:
                    due, text = promised.pop(job.id)
                    assert now <= due + 30, (seed, text, now - due)
                    promises += 1
            ends_at = [r.ends_by for r in live if r.ends_by is not None]
            if not waiting or not ends_at:
                break
            now = min(ends_at)
            live = [r for r in live if r.ends_by is None or r.ends_by > now]
        assert not promised, (seed, promised)
    assert promises > 100


def test_cap_and_gpu_reasons_are_true_in_random_cases() -> None:
    """A capped user holds what the reason says, counting what the pass itself started; a job
    said to have too few GPUs free has no eligible host with that many free that fit it."""
    policy = Policy(user_gpu_caps={"b": 4})
    checked = 0
    for seed in range(400):
        hosts, running, queued = _random_case(random.Random(seed), "ab")
        result = plan(queued, running, hosts, policy, {}, NOW)
        by_id = {j.id: j for j in queued}
        held_b = sum(len(p.gpu_uuids) for p in result.placements if by_id[p.job_id].user == "b")
        busy = {u for r in running for u in r.gpu_uuids}
        busy |= {u for p in result.placements for u in p.gpu_uuids}
        for job_id, why in result.waiting.items():
            job = by_id[job_id]
            if why.kind is WaitKind.USER_CAP:
                assert job.user == "b" and held_b + job.gpus > 4, seed
                if job.gpus <= 4:
                    assert why.text.startswith(f"user cap: {held_b} GPU"), (seed, why.text)
                checked += 1
            if why.kind is WaitKind.GPUS:
                for host in hosts:
                    if job.host in ("", host.name):
                        free = [g for g in host.gpus if g.uuid not in busy and job.accepts(g)]
                        assert len(free) < job.gpus, (seed, why.text)
                checked += 1
    assert checked > 200


def _stated_seconds(text: str) -> float:
    """The seconds in `... first fit in about 1 h 20 min on h0, reserved`."""
    words = text.split("first fit in ", 1)[1].split(",")[0].split(" on ")[0].split()
    if words[0] == "less":
        return 60
    units = {"d": 86_400, "h": 3600, "min": 60}
    return sum(float(v) * units[u] for v, u in zip(words[1::2], words[2::2], strict=True))
