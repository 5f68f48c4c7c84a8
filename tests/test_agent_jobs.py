"""A job runs through the agent in real containers, as the container contract says."""

from pathlib import Path
from typing import Any

import docker
from hatrain.rpc.v1 import agent_pb2 as pb

from tests.support.harness import SUCCESSFUL_RUN, TERMINAL, all_events, poll, spec, wait_state


def _container(client: docker.DockerClient, job_id: str, step: str) -> Any:
    found = client.containers.list(
        all=True,
        filters={"label": [f"hatrain.job={job_id}", f"hatrain.step={step}"]},
        ignore_removed=True,
    )
    return found[0] if found else None


def test_job_runs_both_steps_with_the_contract(
    start_agent: Any,
    agent_config: dict[str, Any],
    docker_client: docker.DockerClient,
    tmp_path: Path,
) -> None:
    """Both steps run in containers with the contract's mounts, env, labels and commands."""
    stub, agent = start_agent(agent_config)
    job = stub.SubmitJob(
        pb.SubmitJobRequest(
            spec=spec({"hatrain_standin": {"hold_preprocess": "go", "record_env": True}}),
            secrets={"HF_TOKEN": "hf_secret_value_123"},
        )
    ).job
    assert job.state == pb.JOB_STATE_QUEUED

    def held_container() -> Any:
        now = stub.GetJob(pb.GetJobRequest(job_id=job.id))
        assert now.state not in TERMINAL, f"the held step ended: {now}"
        return _container(docker_client, job.id, "preprocess")

    container = poll(held_container, 60, "the preprocess container")
    attrs = docker_client.api.inspect_container(container.id)
    mounts = {m["Destination"]: m for m in attrs["Mounts"]}
    run_dir = Path(agent.workspace.dirs(job.id).run)
    assert mounts["/workspace/data/training-runs"]["Source"] == str(run_dir)
    assert mounts["/workspace/data/datasets"]["RW"] is False
    assert mounts["/workspace/configs"]["RW"] is False
    assert "/workspace/data/huggingface-cache" in mounts
    env = dict(e.split("=", 1) for e in attrs["Config"]["Env"])
    assert env["AXOLOTL_DO_NOT_TRACK"] == "1"
    assert env["JUPYTER_DISABLE"] == "1"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["HF_HOME"] == "/workspace/data/huggingface-cache"
    assert "HF_TOKEN" not in env, "secrets must not show in docker inspect"
    assert "hf_secret_value_123" not in str(attrs)
    assert attrs["Config"]["Labels"]["hatrain.job"] == job.id
    assert attrs["Config"]["Labels"]["hatrain.step"] == "preprocess"
    assert attrs["Config"]["Cmd"][-3:] == ["preprocess", "/workspace/configs/job.yml", "--debug"]
    # Shared memory of its own, sized for NCCL, instead of the host's (docker.limits.shm_size).
    assert attrs["HostConfig"]["IpcMode"] != "host"
    assert attrs["HostConfig"]["ShmSize"] == 16 * 2**30
    (run_dir / "go").write_text("")
    done = wait_state(stub, job.id, TERMINAL)
    assert done.state == pb.JOB_STATE_SUCCEEDED, done
    assert done.exit_code == 0 and done.has_exit_code
    seen_env = (run_dir / "env-preprocess.txt").read_text()
    assert "HF_TOKEN=hf_secret_value_123" in seen_env, "the process itself gets the secret"
    assert not agent.workspace.dirs(job.id).secrets.exists(), "secrets are gone after the job"

    events = all_events(stub, job.id)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    states = [e.state for e in events if e.kind == pb.EVENT_KIND_STATE]
    assert states == SUCCESSFUL_RUN
    lines = [e.line for e in events if e.kind == pb.EVENT_KIND_LOG]
    assert any("Success! Preprocessed data path" in line for line in lines)
    losses = [
        m.value
        for e in events
        if e.kind == pb.EVENT_KIND_METRICS and not e.eval
        for m in e.metrics
        if m.name == "loss"
    ]
    assert len(losses) == 20
    listing = stub.ListJobs(pb.ListJobsRequest())
    assert "hf_secret_value_123" not in str(listing) and list(listing.jobs[0].secret_names) == [
        "HF_TOKEN"
    ]
    assert _container(docker_client, job.id, "train") is None, "finished containers are removed"


def test_doctor_reports_whether_container_logs_are_kept_whole(
    agent_config: dict[str, Any], tmp_path: Path
) -> None:
    """`hatrain-agent doctor` reads the log settings a container of this engine gets: the test
    engine's json-file without rotation keeps each step's whole log, which a restart needs. It
    also says that this engine (live-restore off) stops running jobs when it restarts."""
    import subprocess
    import sys

    import yaml

    config = tmp_path / "agent.yml"
    config.write_text(yaml.safe_dump(agent_config))
    doctor = subprocess.run(
        [str(Path(sys.executable).parent / "hatrain-agent"), "doctor", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
    )
    row = next(line for line in doctor.stdout.splitlines() if "container logs" in line)
    assert "json-file" in row and "keeps each step's whole log" in row, doctor.stdout
    restore = next(line for line in doctor.stdout.splitlines() if "live restore" in line)
    assert "off: an engine restart stops running jobs" in restore, doctor.stdout
