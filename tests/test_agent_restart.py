"""The agent is killed with SIGKILL while jobs run, then started again: nothing is lost."""

from pathlib import Path
from typing import Any

import docker
from hatrain.agent.output_parser import OutputParser
from hatrain.rpc.v1 import agent_pb2 as pb

from tests.support.harness import (
    TERMINAL,
    AgentProcess,
    all_events,
    poll,
    socket_path,
    spec,
    stub_for,
    wait_state,
)
from tests.test_output_parser import log_lines


def expected_train_lines(capture: Path) -> list[str]:
    parser = OutputParser("train")
    events = parser.feed(capture.joinpath("train.log").read_bytes().decode(errors="replace"))
    events += parser.flush()
    return log_lines(events)


def release_and_assert_whole_log(stub: Any, run_root: Path, job: Any, capture: Path) -> None:
    """Release the slowly printing job and check both its streams: every event once and in seq
    order, every line once, in order, none cut into another, across the restart."""
    (run_root / job.id / "run" / "a-go").write_text("")
    done = wait_state(stub, job.id, TERMINAL, timeout=120)
    assert done.state == pb.JOB_STATE_SUCCEEDED, done
    events = all_events(stub, job.id)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    lines = [e.line for e in events if e.kind == pb.EVENT_KIND_LOG and e.step == "train"]
    numbered = [line for line in lines if line.startswith("stderr line ")]
    assert [line for line in lines if not line.startswith("stderr line ")] == [
        *expected_train_lines(capture),
        "released by a-go",
    ]
    with capture.joinpath("train.log").open("rb") as fh:
        written = sum(1 for _ in fh)
    assert numbered == [f"stderr line {i}" for i in range(written)]


def start_three_jobs(stub: Any, exit_code: int) -> tuple[Any, Any, Any]:
    """Three jobs in training for a restart: one printing its log slowly, numbered lines on
    stderr between its lines (held until `a-go` in its run directory), one that ends with
    exit_code once `b-go` appears, one held for ever.
    Returns once the first is mid-way through its log."""
    plans = [
        {"delay": 0.02, "hold_train": "a-go", "stderr_lines": True},
        {"hold_train": "b-go", "exit_train": exit_code},
        {"hold_train": "never"},
    ]
    jobs = [
        stub.SubmitJob(pb.SubmitJobRequest(spec=spec({"hatrain_standin": plan}))).job
        for plan in plans
    ]
    for job in jobs:
        wait_state(stub, job.id, {pb.JOB_STATE_TRAINING})
    poll(
        lambda: (
            sum(
                1
                for e in all_events(stub, jobs[0].id)
                if e.kind == pb.EVENT_KIND_LOG and e.step == "train"
            )
            > 30
        ),
        60,
        "the streaming job to be mid-way through its logs",
    )
    return jobs[0], jobs[1], jobs[2]


def _container(client: docker.DockerClient, job_id: str) -> Any:
    found = client.containers.list(
        all=True, filters={"label": [f"hatrain.job={job_id}", "hatrain.step=train"]}
    )
    return found[0] if found else None


def test_sigkill_and_restart(
    agent_config: dict[str, Any],
    tmp_path: Path,
    docker_client: docker.DockerClient,
    axolotl_capture: Path,
) -> None:
    """Running: re-attached with no gap or duplicate. Finished while down: its real exit code.
    Removed: `container lost`. Queued: still queued."""
    agent_config["listen"] = str(socket_path())
    agent_config["scheduler"] = {"max_cpu_jobs": 3}
    agent = AgentProcess(agent_config, tmp_path)
    agent.start()
    try:
        stub, channel = stub_for(agent_config["listen"])
        streaming, finishes, removed = start_three_jobs(stub, exit_code=3)
        queued = stub.SubmitJob(pb.SubmitJobRequest(spec=spec({}))).job
        assert stub.GetJob(pb.GetJobRequest(job_id=queued.id)).state == pb.JOB_STATE_QUEUED
        channel.close()

        agent.kill()
        run_root = Path(agent_config["data_root"]) / "jobs"
        (run_root / finishes.id / "run" / "b-go").write_text("")
        poll(
            lambda: _container(docker_client, finishes.id).status == "exited",
            30,
            "the job's container to finish while the agent is down",
        )
        _container(docker_client, removed.id).remove(force=True)

        agent.start()
        stub, channel = stub_for(agent_config["listen"])
        lost = wait_state(stub, removed.id, TERMINAL, timeout=60)
        assert (lost.state, lost.failure_reason) == (pb.JOB_STATE_FAILED, "container lost")
        ended = wait_state(stub, finishes.id, TERMINAL, timeout=60)
        assert (ended.state, ended.exit_code) == (pb.JOB_STATE_FAILED, 3)
        assert ended.failure_reason == "exit code"
        assert stub.GetJob(pb.GetJobRequest(job_id=queued.id)).state in (
            pb.JOB_STATE_QUEUED,
            pb.JOB_STATE_STARTING,
            pb.JOB_STATE_PREPROCESSING,
            pb.JOB_STATE_TRAINING,
            pb.JOB_STATE_SUCCEEDED,
        )

        release_and_assert_whole_log(stub, run_root, streaming, axolotl_capture)
        assert wait_state(stub, queued.id, TERMINAL).state == pb.JOB_STATE_SUCCEEDED
        channel.close()
    finally:
        agent.terminate()


def test_start_removes_leftover_containers_of_finished_jobs_only(
    agent_config: dict[str, Any],
    start_agent: Any,
    docker_client: docker.DockerClient,
    test_image: str,
) -> None:
    """A container of a finished job that a crash left behind is removed when the agent starts;
    a labelled container of a job it does not know is left alone (another agent's, on a shared
    Docker engine)."""
    stub, agent = start_agent(agent_config)
    job = stub.SubmitJob(pb.SubmitJobRequest(spec=spec({}))).job
    assert wait_state(stub, job.id, TERMINAL).state == pb.JOB_STATE_SUCCEEDED
    agent.stop(grace=0.5)
    leftover = docker_client.containers.create(
        test_image, ["echo"], labels={"hatrain.job": job.id, "hatrain.step": "train"}
    )
    foreign = docker_client.containers.create(
        test_image, ["echo"], labels={"hatrain.job": "not-this-agents", "hatrain.step": "train"}
    )
    try:
        start_agent(agent_config)

        def gone(container_id: str) -> bool:
            try:
                docker_client.containers.get(container_id)
            except docker.errors.NotFound:
                return True
            return False

        poll(lambda: gone(leftover.id), 30, "the leftover container to be removed")
        assert not gone(foreign.id)
    finally:
        foreign.remove(force=True)
