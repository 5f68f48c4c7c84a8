"""The supervisor: placing queued jobs on free GPUs as jobs come and go, time limits, and the
watchdog that resumes a job whose runner thread died."""

import pytest
from hatrain.agent import start_gate
from hatrain.agent.scheduler import Policy
from hatrain.agent.states import FailureReason, JobState, StopReason

from tests.fast.host import FastHost
from tests.fast.memory_runtime import SIGTERM_EXIT, JobScript, StepScript

HELD = JobScript(train=StepScript(exit_code=None))


def test_jobs_that_fit_run_side_by_side_and_the_rest_wait(host: FastHost) -> None:
    """Two GPUs, three 1-GPU jobs: two run at once on different GPUs; the third waits first in
    the queue, and starts on the GPU the first one frees."""
    host.runtime.script("held.yml", HELD)
    host.agent()
    first, second, third = (host.submit("held.yml", gpus=1) for _ in range(3))
    for job in (first, second):
        host.runtime.container(job.id, "train")
    placed = [host.store.get(j.id).gpu_uuids for j in (first, second)]
    assert sorted(u for g in placed for u in g) == ["GPU-0", "GPU-1"]
    waiting = host.store.get(third.id)
    assert (waiting.state, waiting.queue_position) == (JobState.QUEUED, 1)
    host.runtime.finish(first.id, "train")
    host.runtime.container(third.id, "train")
    assert host.store.get(third.id).gpu_uuids == placed[0]
    for job in (second, third):
        host.runtime.finish(job.id, "train")
        assert host.ended(job.id).state == JobState.SUCCEEDED


def test_jobs_without_a_gpu_are_capped_by_max_cpu_jobs(host: FastHost) -> None:
    """max_cpu_jobs 2: of three CPU jobs two run, and the third runs once one ends."""
    host.runtime.script("held.yml", HELD)
    host.agent(Policy(max_cpu_jobs=2))
    jobs = [host.submit("held.yml") for _ in range(3)]
    for job in jobs[:2]:
        host.runtime.container(job.id, "train")
    assert host.store.get(jobs[2].id).state == JobState.QUEUED
    host.runtime.finish(jobs[0].id, "train")
    host.runtime.container(jobs[2].id, "train")
    assert host.store.get(jobs[2].id).gpu_uuids == ()


def test_a_burst_that_fits_starts_entirely(host: FastHost) -> None:
    """Ten CPU jobs submitted at once with room for ten: all ten start, none is left queued."""
    host.runtime.script("held.yml", HELD)
    host.agent(Policy(max_cpu_jobs=10))
    jobs = [host.submit("held.yml") for _ in range(10)]
    for job in jobs:
        host.runtime.container(job.id, "train")
    assert len(host.runtime.running()) == 10
    for job in jobs:
        host.runtime.finish(job.id, "train")
        host.ended(job.id)


def test_jobs_placed_together_launch_together_and_before_any_next_step(
    host: FastHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three jobs placed by one pass, one held in its image pull: the other two, ready, launch
    only once it is ready too, and their second steps start only after its first (starts before
    bookkeeping). (The gate's bound is raised here so that the order does not depend on how soon
    this test releases the pull; the next test holds to the real bound.)"""
    monkeypatch.setattr(start_gate, "_LONGEST_WAIT_SECONDS", 30.0)
    host.runtime.script("pulling.yml", JobScript(holds_prepare=True))
    quick = [host.submit("job.yml") for _ in range(2)]
    pulling = host.submit("pulling.yml")
    host.agent(Policy(max_cpu_jobs=4))
    host.until(lambda: {j.id for j in quick} <= set(host.runtime.ready), "the quick jobs ready")
    assert host.runtime.containers() == []  # ready, and waiting for the held one
    host.runtime.release_prepare()
    first = host.runtime.container(pulling.id, "preprocess").handle.container
    for job in quick:
        host.runtime.container(job.id, "preprocess")
        assert host.runtime.container(job.id, "train").handle.container > first
        assert host.ended(job.id).state == JobState.SUCCEEDED
    assert host.ended(pulling.id).state == JobState.SUCCEEDED


def test_a_start_that_hangs_holds_up_the_other_jobs_only_a_moment(host: FastHost) -> None:
    """A job placed with one whose image pull never ends runs to its end all the same."""
    host.runtime.script("pulling.yml", JobScript(holds_prepare=True))
    quick, pulling = host.submit("job.yml"), host.submit("pulling.yml")
    host.agent()
    assert host.ended(quick.id).state == JobState.SUCCEEDED
    assert host.store.get(pulling.id).state == JobState.STARTING
    host.runtime.release_prepare()
    assert host.ended(pulling.id).state == JobState.SUCCEEDED


def test_a_higher_priority_job_takes_the_next_free_gpu(host: FastHost) -> None:
    """With both GPUs busy, a later job of higher priority is placed before an older one."""
    host.runtime.script("held.yml", HELD)
    host.agent()
    busy = [host.submit("held.yml", gpus=1) for _ in range(2)]
    for job in busy:
        host.runtime.container(job.id, "train")
    older = host.submit("held.yml", gpus=1)
    urgent = host.submit("held.yml", gpus=1, priority=5)
    assert host.store.get(urgent.id).queue_position == 1
    assert host.store.get(older.id).queue_position == 2
    host.runtime.finish(busy[0].id, "train")
    host.runtime.container(urgent.id, "train")
    assert host.store.get(older.id).state == JobState.QUEUED


def test_a_job_past_its_time_limit_is_stopped_and_fails_as_timeout(host: FastHost) -> None:
    """A job with a one-minute limit, still training when the clock passes it: it is asked to
    stop (SIGTERM), and ends FAILED `timeout` with the step's exit code."""
    host.runtime.script("held.yml", HELD)
    supervisor = host.agent()
    job = host.submit("held.yml", time_limit_seconds=60)
    container = host.runtime.container(job.id, "train")
    host.clock_offset = 61
    supervisor.wake()
    done = host.ended(job.id)
    assert (done.state, done.failure_reason, done.exit_code) == (
        JobState.FAILED,
        FailureReason.TIMEOUT,
        SIGTERM_EXIT,
    )
    assert done.stop_reason == StopReason.TIMEOUT
    assert done.hint == "the job ran past its time limit"
    assert container.signals == ["SIGTERM"]


def test_a_job_within_its_time_limit_runs_on(host: FastHost) -> None:
    """Clock within the limit: the job is not stopped, and succeeds when it ends."""
    host.runtime.script("held.yml", HELD)
    supervisor = host.agent()
    job = host.submit("held.yml", time_limit_seconds=60)
    container = host.runtime.container(job.id, "train")
    host.clock_offset = 50
    supervisor.enforce_time_limits()
    assert host.store.get(job.id).stop_reason is None and container.signals == []
    host.runtime.finish(job.id, "train")
    assert host.ended(job.id).state == JobState.SUCCEEDED


def test_a_timed_out_job_cancelled_after_stays_a_timeout(host: FastHost) -> None:
    """Cancelled after its time limit asked it to stop: the first reason stands."""
    host.runtime.script(
        "stubborn.yml", JobScript(train=StepScript(exit_code=None, ignores_sigterm=True))
    )
    supervisor = host.agent()
    job = host.submit("stubborn.yml", time_limit_seconds=60)
    host.runtime.container(job.id, "train")
    host.clock_offset = 61
    supervisor.wake()
    host.until(lambda: host.store.get(job.id).stop_reason, "the time limit to ask for a stop")
    supervisor.cancel(job.id)
    done = host.ended(job.id)
    assert (done.state, done.failure_reason) == (JobState.FAILED, FailureReason.TIMEOUT)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_job_whose_runner_thread_died_is_resumed_by_the_watchdog(host: FastHost) -> None:
    """The runner thread dies mid-step without ending the job: the job still shows training;
    the supervisor's watchdog (resume_orphans) re-attaches a new runner, which takes the output
    up where it was (nothing twice) and ends the job by the step's real exit code."""
    host.runtime.script(
        "fragile.yml", JobScript(train=StepScript(output=("a\n", "b\n"), kills_runner=True))
    )
    supervisor = host.agent()
    job = host.submit("fragile.yml")
    container = host.runtime.container(job.id, "train")
    host.until(lambda: "runner killed" in container.signals, "the runner thread to be killed")
    resumed = host.until(supervisor.resume_orphans, "the watchdog to resume the job")
    assert resumed == [job.id]
    done = host.ended(job.id)
    assert (done.state, done.exit_code) == (JobState.SUCCEEDED, 0)
    assert host.log_lines(job.id, "train") == ["a", "b"]
    assert host.states_of(job.id).count("succeeded") == 1


def test_the_watchdog_leaves_jobs_with_a_live_runner_alone(host: FastHost) -> None:
    """A running job whose runner is alive is not resumed a second time."""
    host.runtime.script("held.yml", HELD)
    supervisor = host.agent()
    job = host.submit("held.yml")
    host.runtime.container(job.id, "train")
    assert supervisor.resume_orphans() == []
    host.runtime.finish(job.id, "train")
    assert host.ended(job.id).state == JobState.SUCCEEDED
    assert len([c for c in host.runtime.removed if c]) == 2  # one container per step
