"""A submit's place in the queue, kept without counting the queue, stays the place the queue
listing shows: across priorities, jobs leaving the queue, and a store opened again."""

from hatrain.agent.jobs import JobSpec
from hatrain.agent.scheduler import Policy
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
