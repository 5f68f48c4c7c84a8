"""A submit's place in the queue, kept without counting the queue, stays the place the queue
listing shows: across priorities, jobs leaving the queue, and a store opened again. Whatever can
start does, on the wake-up that made it possible: none is lost to a pass under way or to a pass
spared because nothing queued could start."""

from collections.abc import Callable
from pathlib import Path

import pytest
from hatrain.agent import supervisor
from hatrain.agent.jobs import Job, JobSpec
from hatrain.agent.scheduler import Policy, QueuedJob
from hatrain.agent.states import JobState
from hatrain.agent.store import Store

from tests.fast.host import FastHost
from tests.fast.memory_runtime import JobScript, StepScript


def _spec(priority: int, gpus: int = 0) -> JobSpec:
    return JobSpec("a.yml", "x: 1", "img", priority=priority, gpus=gpus)


def test_each_submit_gets_the_place_the_listing_shows(host: FastHost) -> None:
    """Jobs of mixed priorities, some started or cancelled meanwhile: each new job's place, as
    its submit returns it, equals its place counted from the queue itself at that moment; after
    the store is opened again, new submits still get the counted place."""
    store = host.store
    priorities = [0, 5, 0, -3, 5, 1, 0, 0, 2, -3]
    for i, priority in enumerate(priorities):
        job, _ = store.submit(_spec(priority), "ann")
        assert job.queue_position == store.get(job.id).queue_position, (i, priority)
        if i == 3:
            store.transition(job.id, JobState.CANCELLED)
        if i == 6:
            first = store.jobs_in([JobState.QUEUED])[0]
            store.transition(first.id, JobState.STARTING)
    again = Store(store.path)
    for priority in (5, 0, 9, -3):
        job, _ = again.submit(_spec(priority), "bob")
        assert job.queue_position == again.get(job.id).queue_position, priority


def test_a_repeated_request_id_returns_the_first_job_in_its_place(host: FastHost) -> None:
    """A submit repeated with the same client_request_id queues nothing more: it returns the
    first job, at its place, and the places of later submits are unchanged by it."""
    store = host.store
    job, created = store.submit(_spec(0), "ann", client_request_id="r1")
    again, created_again = store.submit(_spec(0), "ann", client_request_id="r1")
    assert (created, created_again, again.id) == (True, False, job.id)
    assert again.queue_position == 1
    assert store.submit(_spec(0), "ann")[0].queue_position == 2


def test_what_fits_starts_and_the_rest_waits_for_what_it_needs(host: FastHost) -> None:
    """Both GPUs held by one job: a queued 1-GPU job waits, while a CPU job submitted after it
    starts on the free CPU slot; the 1-GPU job starts as soon as the GPUs are freed."""
    host.runtime.script("held.yml", JobScript(train=StepScript(exit_code=None)))
    host.agent(Policy(max_cpu_jobs=1))
    holder = host.submit("held.yml", gpus=2)
    host.runtime.container(holder.id, "train")
    gpu_job = host.submit("held.yml", gpus=1)
    cpu_job = host.submit("held.yml")
    host.runtime.container(cpu_job.id, "train")
    assert host.store.get(gpu_job.id).state == JobState.QUEUED
    host.runtime.finish(holder.id, "train")
    assert host.runtime.container(gpu_job.id, "train").gpu_uuids in (("GPU-0",), ("GPU-1",))
    for job in (gpu_job, cpu_job):
        host.runtime.finish(job.id, "train")
        assert host.ended(job.id).state == JobState.SUCCEEDED


class _SubmitDuringPass(Store):
    """The real store, but the first time a scheduling pass reads the queue after `during` is
    set, during() runs once the queue is read: something happens while the pass is under way,
    too late for it to see."""

    during: Callable[[], object] | None = None

    def queued_for_planner(self) -> list[QueuedJob]:
        queued = super().queued_for_planner()
        hook, self.during = self.during, None
        if hook is not None:
            hook()
        return queued


@pytest.fixture
def only_woken(monkeypatch: pytest.MonkeyPatch) -> None:
    """No idle passes: a pass runs only when something wakes the scheduler, so a wake-up that
    is lost leaves a job queued for good (and the test fails) instead of starting it late."""
    monkeypatch.setattr(supervisor, "_IDLE_PASS_SECONDS", 3600.0)


@pytest.mark.usefixtures("only_woken")
def test_a_job_submitted_while_a_pass_runs_is_not_lost_to_it(tmp_path: Path) -> None:
    """A submit that lands while a scheduling pass is reading the queue is not lost to that
    pass: the job starts, with nothing else waking the scheduler."""
    host = FastHost(tmp_path / "data", store=_SubmitDuringPass)
    try:
        store = host.store
        assert isinstance(store, _SubmitDuringPass)
        host.runtime.script("held.yml", JobScript(train=StepScript(exit_code=None)))
        host.agent(Policy(max_cpu_jobs=2))
        late: list[Job] = []
        store.during = lambda: late.append(host.submit("held.yml"))
        first = host.submit("held.yml")
        host.runtime.container(first.id, "train")
        host.until(lambda: late, "the submit made during the pass")
        host.runtime.container(late[0].id, "train")
        host.until(
            lambda: host.store.get(late[0].id).state == JobState.TRAINING, "the late job training"
        )
    finally:
        host.stop()


@pytest.mark.usefixtures("only_woken")
def test_a_waiting_job_shows_its_place_and_starts_when_its_gpus_free(host: FastHost) -> None:
    """1 GPU of 2 held, a 2-GPU job queued (nothing queued could start): it shows place 1 and
    its reason; a CPU job submitted meanwhile starts at once; when the holder ends, the 2-GPU
    job starts on both GPUs, woken by that end alone."""
    host.runtime.script("held.yml", JobScript(train=StepScript(exit_code=None)))
    supervisor_ = host.agent(Policy(max_cpu_jobs=1))
    holder = host.submit("held.yml", gpus=1)
    host.runtime.container(holder.id, "train")
    big = host.submit("held.yml", gpus=2)
    assert big.queue_position == 1
    waiting = host.until(lambda: supervisor_.waiting(big.id), "a reason for the 2-GPU job")
    assert waiting.position == 1
    assert host.store.get(big.id).state == JobState.QUEUED
    cpu_job = host.submit("held.yml")
    host.runtime.container(cpu_job.id, "train")
    host.runtime.finish(holder.id, "train")
    assert host.ended(holder.id).state == JobState.SUCCEEDED
    host.runtime.container(big.id, "train")
    assert sorted(host.store.get(big.id).gpu_uuids) == ["GPU-0", "GPU-1"]
    assert supervisor_.waiting(big.id) is None


@pytest.mark.usefixtures("only_woken")
def test_jobs_queued_before_a_restart_start_at_the_first_pass(tmp_path: Path) -> None:
    """Jobs queued with no agent running, in a store opened again: the next agent starts the
    ones that fit in its first pass, and the rest keep their places for later submits."""
    first = FastHost(tmp_path / "data")
    queued = [first.submit(gpus=1, priority=p) for p in (0, 3, 0)]
    first.store.close()
    host = FastHost(tmp_path / "data")
    try:
        host.runtime.script("job.yml", JobScript(train=StepScript(exit_code=None)))
        host.agent()
        running = host.until(
            lambda: (lambda now: now if len(now) == 2 else None)(host.runtime.running()),
            "two jobs running",
        )
        started = {c.job_id for c in running}
        assert queued[1].id in started
        left = next(j for j in queued if j.id not in started)
        assert host.store.get(left.id).queue_position == 1
        assert host.submit(gpus=1, priority=3).queue_position == 1
        assert host.submit(gpus=1).queue_position == 3
    finally:
        host.stop()
