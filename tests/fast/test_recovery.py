"""What an agent starting again makes of every job it finds, in every state: the store and the
InMemoryRuntime's containers are left as an agent killed at that moment would have left them."""

from hatrain.agent.recovery import reconcile
from hatrain.agent.states import FailureReason, JobState, StopReason
from hatrain.agent.steps import StepEnd, StepRecord

from tests.fast.host import FastHost
from tests.fast.memory_runtime import SIGTERM_EXIT, JobScript, StepScript

HELD = JobScript(
    preprocess=StepScript(exit_code=None, output=("pre 0\n",)),
    train=StepScript(exit_code=None, output=("train 0\n",)),
)


def test_a_queued_job_stays_queued_and_runs(host: FastHost) -> None:
    """Queued when the agent stopped: still queued, nothing to reconcile, then placed and run
    by the new agent's scheduler."""
    job = host.submit()
    assert reconcile(host.store, host.runtime) == []
    assert host.store.get(job.id).state == JobState.QUEUED
    host.agent()
    assert host.ended(job.id).state == JobState.SUCCEEDED


def test_a_starting_job_prepares_again_and_runs(host: FastHost) -> None:
    """Starting (nothing ran yet): its runner starts over from preparing the image, on the GPUs
    it was given."""
    job = host.as_if_running(host.submit(gpus=1), JobState.STARTING, gpus=("GPU-1",))
    host.agent()
    done = host.ended(job.id)
    assert done.state == JobState.SUCCEEDED
    assert job.id in host.runtime.prepared
    assert host.runtime.container(job.id, "train").gpu_uuids == ("GPU-1",)


def test_a_first_step_started_but_not_recorded_is_reattached_not_started_again(
    host: FastHost,
) -> None:
    """Starting, its preprocess container running: the agent stopped after the spawn and before
    it recorded the step (the state and the handle are written once the step runs). The new
    agent finds that container by its job and step and follows it: the job reads
    preprocessing with that handle, and no second preprocess container is ever started."""
    host.runtime.script("held.yml", HELD)
    job = host.as_if_running(host.submit("held.yml"), JobState.STARTING)
    handle = host.runtime.launch(job, "preprocess")
    host.agent()
    host.until(
        lambda: host.store.get(job.id).step("preprocess").handle == handle,
        "the found step recorded",
    )
    assert host.store.get(job.id).state == JobState.PREPROCESSING
    host.runtime.write(job.id, "preprocess", "Success! Preprocessed data path: /x\n")
    host.runtime.finish(job.id, "preprocess")
    host.runtime.container(job.id, "train")
    host.runtime.finish(job.id, "train")
    assert host.ended(job.id).state == JobState.SUCCEEDED
    steps = [c.step for c in host.runtime.containers() if c.job_id == job.id]
    assert steps == ["preprocess", "train"]


def test_a_running_step_is_reattached_without_gap_or_duplicate(host: FastHost) -> None:
    """Preprocessing, its container running, one chunk of output stored: the new agent follows
    it from the stored cursor; the output reads once, in order, across the restart."""
    host.runtime.script("held.yml", HELD)
    job = host.as_if_running(host.submit("held.yml"), JobState.PREPROCESSING)
    handle = host.runtime.launch(job, "preprocess")
    host.store.append(
        job.id,
        [],
        step=StepRecord("preprocess", handle=handle, cursor=1),
    )
    host.runtime.write(job.id, "preprocess", "pre 1\n")
    host.agent()
    host.runtime.write(job.id, "preprocess", "Success! Preprocessed data path: /x\n")
    host.until(lambda: "pre 1" in host.log_lines(job.id), "the output after the cursor")
    host.runtime.finish(job.id, "preprocess")
    host.runtime.container(job.id, "train")
    host.runtime.finish(job.id, "train")
    assert host.ended(job.id).state == JobState.SUCCEEDED
    assert host.log_lines(job.id) == ["pre 1", "Success! Preprocessed data path: /x", "train 0"]


def test_a_step_whose_handle_was_not_recorded_is_found_by_its_labels(host: FastHost) -> None:
    """Training, its container started but the agent stopped before recording the handle: the
    container is found by its job and step, its handle recorded, and it is followed."""
    host.runtime.script("held.yml", HELD)
    job = host.as_if_running(host.submit("held.yml"), JobState.TRAINING)
    handle = host.runtime.launch(job, "train")
    assert host.store.get(job.id).step("train").handle is None
    resumed = reconcile(host.store, host.runtime)
    assert [j.id for j in resumed] == [job.id]
    assert host.store.get(job.id).step("train").handle == handle
    host.agent()
    host.runtime.finish(job.id, "train")
    assert host.ended(job.id).state == JobState.SUCCEEDED


def test_a_step_that_ended_while_the_agent_was_down_counts_by_its_exit_code(
    host: FastHost,
) -> None:
    """Training when the agent stopped, its container exited 3 meanwhile: the job ends FAILED
    with that exit code, and its last error line as the hint."""
    host.runtime.script("held.yml", HELD)
    job = host.as_if_running(host.submit("held.yml"), JobState.TRAINING)
    handle = host.runtime.launch(job, "train")
    host.record(job.id, StepRecord("train", handle=handle, cursor=1))
    host.runtime.write(job.id, "train", "RuntimeError: NaN loss\n")
    host.runtime.finish(job.id, "train", code=3)
    host.agent()
    done = host.ended(job.id)
    assert (done.state, done.exit_code, done.failure_reason, done.hint) == (
        JobState.FAILED,
        3,
        FailureReason.EXIT_CODE,
        "RuntimeError: NaN loss",
    )


def test_a_step_gone_while_the_agent_was_down_is_lost(host: FastHost) -> None:
    """Training, its container removed while the agent was down: FAILED `container lost`,
    naming the step, at once (no runner needed)."""
    host.runtime.script("held.yml", HELD)
    job = host.as_if_running(host.submit("held.yml"), JobState.TRAINING)
    handle = host.runtime.launch(job, "train")
    host.record(job.id, StepRecord("train", handle=handle))
    host.runtime.vanish(job.id, "train")
    assert reconcile(host.store, host.runtime) == []
    done = host.store.get(job.id)
    assert (done.state, done.failure_reason) == (JobState.FAILED, FailureReason.CONTAINER_LOST)
    assert done.hint == "the train container disappeared while the agent was down"


def test_a_step_never_started_is_started_now(host: FastHost) -> None:
    """Preprocessing recorded, but its container never created: it is started now, and the
    job runs to its end."""
    job = host.as_if_running(host.submit(), JobState.PREPROCESSING)
    assert not host.runtime.started(job.id, "preprocess")
    host.agent()
    assert host.ended(job.id).state == JobState.SUCCEEDED
    assert host.runtime.started(job.id, "preprocess")


def test_a_recorded_end_is_not_run_again(host: FastHost) -> None:
    """The train step's end was recorded (exit 0) but the job not yet ended: it ends SUCCEEDED
    from the record, and no step runs again."""
    job = host.as_if_running(host.submit(), JobState.TRAINING)
    handle = host.runtime.launch(job, "train")
    host.runtime.finish(job.id, "train")
    host.record(job.id, StepRecord("train", handle=handle, cursor=1, end=StepEnd(0)))
    before = len(host.runtime.containers())
    host.agent()
    assert host.ended(job.id).state == JobState.SUCCEEDED
    assert len(host.runtime.containers()) == before
    assert handle.container in host.runtime.removed


def test_a_preprocess_that_ended_leads_to_train(host: FastHost) -> None:
    """Preprocessing, its end recorded (exit 0, success printed): train starts next."""
    job = host.as_if_running(host.submit(), JobState.PREPROCESSING)
    handle = host.runtime.launch(job, "preprocess")
    host.runtime.finish(job.id, "preprocess")
    end = StepEnd(0, preprocess_succeeded=True)
    host.record(job.id, StepRecord("preprocess", handle=handle, cursor=2, end=end))
    host.agent()
    assert host.ended(job.id).state == JobState.SUCCEEDED
    assert host.states_of(job.id)[-2:] == ["training", "succeeded"]


def test_finished_jobs_leftovers_are_removed_and_unknown_ones_kept(host: FastHost) -> None:
    """Containers of jobs that had already ended are removed on start; a container of a job
    this agent does not know (another agent's, on a shared engine) is left alone."""
    job = host.as_if_running(host.submit(), JobState.TRAINING)
    leftover = host.runtime.launch(job, "train")
    host.store.transition(job.id, JobState.FAILED, reason=FailureReason.EXIT_CODE, exit_code=1)
    stranger = host.submit()
    foreign = host.runtime.launch(stranger, "train", job_label="another-agents-job")
    reconcile(host.store, host.runtime)
    assert leftover.container in host.runtime.removed
    assert foreign.container not in host.runtime.removed


def test_a_job_past_its_time_limit_before_the_restart_fails_as_timeout(host: FastHost) -> None:
    """Its time limit had asked it to stop before the agent went down: it is stopped again and
    ends FAILED `timeout`, whatever its exit code."""
    host.runtime.script("held.yml", HELD)
    job = host.as_if_running(host.submit("held.yml"), JobState.TRAINING)
    handle = host.runtime.launch(job, "train")
    host.record(job.id, StepRecord("train", handle=handle))
    host.store.request_stop(job.id, StopReason.TIMEOUT)
    host.agent()
    done = host.ended(job.id)
    assert (done.state, done.failure_reason, done.exit_code) == (
        JobState.FAILED,
        FailureReason.TIMEOUT,
        SIGTERM_EXIT,
    )


def test_every_state_at_once(host: FastHost) -> None:
    """One restart over a queue holding a job in every state: each becomes what it should,
    and every running one ends."""
    host.runtime.script("held.yml", HELD)
    queued = host.submit()
    starting = host.as_if_running(host.submit(), JobState.STARTING)
    running = host.as_if_running(host.submit("held.yml"), JobState.TRAINING)
    host.record(running.id, StepRecord("train", handle=host.runtime.launch(running, "train")))
    lost = host.as_if_running(host.submit("held.yml"), JobState.TRAINING)
    host.record(lost.id, StepRecord("train", handle=host.runtime.launch(lost, "train")))
    host.runtime.vanish(lost.id, "train")
    done = host.submit()
    host.store.transition(done.id, JobState.CANCELLED)
    host.agent()
    host.runtime.finish(running.id, "train")
    assert host.ended(lost.id).failure_reason == FailureReason.CONTAINER_LOST
    for job in (queued, starting, running):
        assert host.ended(job.id).state == JobState.SUCCEEDED
    assert host.store.get(done.id).state == JobState.CANCELLED
