"""The `local` runtime: Axolotl from a host virtualenv, same contract, and what a restart does.

The stand-in `axolotl` (tests/support/standin_axolotl.py) replays real Axolotl output; the real
Axolotl through this runtime is in test_end_to_end.py.
"""

import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import yaml
from hatrain.agent.config import LocalConfig
from hatrain.agent.objects import ObjectStore
from hatrain.agent.runtime_local import LocalRuntime, wrapped
from hatrain.agent.steps import ProcessHandle
from hatrain.agent.workspace import Workspace
from hatrain.rpc.v1 import agent_pb2 as pb

from tests.support.harness import (
    SUCCESSFUL_RUN,
    TERMINAL,
    TEST_USER,
    AgentProcess,
    all_events,
    poll,
    socket_path,
    spec,
    stub_for,
    wait_state,
)
from tests.test_agent_restart import release_and_assert_whole_log, start_three_jobs


def _env(run: Path, step: str) -> dict[str, str]:
    lines = (run / f"env-{step}.txt").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line)


def test_local_runtime_keeps_the_contract(
    local_agent_config: dict[str, Any], start_agent: Any
) -> None:
    """Both steps run with the job's host directories in place of the container paths, GPUs by
    UUID in CUDA_VISIBLE_DEVICES, the contract's env (the user's own cache and HOME), and the
    secret only inside the process."""
    local_agent_config["gpus"] = {
        "source": "static",
        "static": [{"uuid": "GPU-aaaa"}, {"uuid": "GPU-bbbb"}],
    }
    stub, _agent = start_agent(local_agent_config)
    job = stub.SubmitJob(
        pb.SubmitJobRequest(
            spec=spec(
                {
                    "hatrain_standin": {"record_env": True},
                    "dataset_prepared_path": "/workspace/data/huggingface-cache/prepared/x",
                },
                gpus=1,
            ),
            secrets={"HF_TOKEN": "hf_local_secret"},
        )
    ).job
    done = wait_state(stub, job.id, TERMINAL)
    assert (done.state, done.exit_code) == (pb.JOB_STATE_SUCCEEDED, 0), done
    states = [e.state for e in all_events(stub, job.id) if e.kind == pb.EVENT_KIND_STATE]
    assert states == SUCCESSFUL_RUN
    data_root = Path(local_agent_config["data_root"])
    run = data_root / "jobs" / job.id / "run"
    env = _env(run, "train")
    assert env["CUDA_VISIBLE_DEVICES"] == done.gpu_uuids[0]
    cache = data_root / "cache" / TEST_USER
    assert env["HF_HOME"] == str(cache / "huggingface")
    assert (env["HOME"], env["USER"]) == (str(cache / "home"), TEST_USER)
    assert env["AXOLOTL_DO_NOT_TRACK"] == "1" and env["JUPYTER_DISABLE"] == "1"
    assert env["HF_TOKEN"] == "hf_local_secret"
    local_config = yaml.safe_load((data_root / "jobs" / job.id / "local" / "job.yml").read_text())
    assert local_config["output_dir"] == f"{run}/out"
    # The agent chose it, in the user's own cache, not the client.
    assert local_config["dataset_prepared_path"].startswith(f"{cache}/huggingface/prepared/")
    assert "hf_local_secret" not in (data_root / "hatrain.db").read_bytes().decode(errors="replace")
    assert not (data_root / "secrets" / job.id).exists()


def test_local_cancel_stops_the_process_group(
    local_agent_config: dict[str, Any], start_agent: Any
) -> None:
    stub, _agent = start_agent(local_agent_config)
    job = stub.SubmitJob(
        pb.SubmitJobRequest(spec=spec({"hatrain_standin": {"hold_train": "never"}}))
    ).job
    wait_state(stub, job.id, {pb.JOB_STATE_TRAINING})
    handle = Path(local_agent_config["data_root"]) / "jobs" / job.id / "local" / "train.handle"
    pid = poll(
        lambda: yaml.safe_load(handle.read_text())["pid"] if handle.exists() else 0, 30, "pid"
    )
    stub.CancelJob(pb.CancelJobRequest(job_id=job.id))
    done = wait_state(stub, job.id, TERMINAL, timeout=30)
    assert done.state == pb.JOB_STATE_CANCELLED
    poll(lambda: not Path(f"/proc/{pid}").exists(), 10, "the step's process to be gone")


def test_local_steps_survive_an_agent_sigkill(
    local_agent_config: dict[str, Any], tmp_path: Path, axolotl_capture: Path
) -> None:
    """Steps run in their own session: a SIGKILLed agent leaves them running. On restart the agent
    re-attaches (log continues from its byte offset: no gap, no duplicate), a step that ended
    while it was down gives its real exit code, and one that vanished fails `container lost`."""
    local_agent_config["listen"] = str(socket_path())
    local_agent_config["scheduler"] = {"max_cpu_jobs": 3}
    agent = AgentProcess(local_agent_config, tmp_path)
    agent.start()
    try:
        stub, channel = stub_for(local_agent_config["listen"])
        streaming, finishes, vanishes = start_three_jobs(stub, exit_code=5)
        channel.close()
        agent.kill()

        jobs = Path(local_agent_config["data_root"]) / "jobs"

        def pid(job_id: str) -> int:
            return int(
                yaml.safe_load((jobs / job_id / "local" / "train.handle").read_text())["pid"]
            )

        assert Path(f"/proc/{pid(streaming.id)}").exists()  # still running without the agent
        (jobs / finishes.id / "run" / "b-go").write_text("")
        poll(lambda: (jobs / finishes.id / "local" / "train.exit").exists(), 30, "b to end")
        os.killpg(pid(vanishes.id), signal.SIGKILL)
        poll(lambda: not Path(f"/proc/{pid(vanishes.id)}").exists(), 30, "c to vanish")

        agent.start()
        stub, channel = stub_for(local_agent_config["listen"])
        ended = wait_state(stub, finishes.id, TERMINAL, timeout=60)
        assert (ended.state, ended.exit_code) == (pb.JOB_STATE_FAILED, 5)
        lost = wait_state(stub, vanishes.id, TERMINAL, timeout=60)
        assert (lost.state, lost.failure_reason) == (pb.JOB_STATE_FAILED, "container lost")

        release_and_assert_whole_log(stub, jobs, streaming, axolotl_capture)
        channel.close()
    finally:
        agent.terminate()


def test_an_exit_code_counts_once_its_line_is_whole(tmp_path: Path) -> None:
    """The wrapper writes a step's exit code as one line, with no process of its own to make it
    appear at once. A file without its newline (read while the write was half done, or left by a
    wrapper killed in between) is no code: the step is then judged by its process."""
    runtime = LocalRuntime(
        LocalConfig(venv=tmp_path), Workspace(tmp_path / "data", ObjectStore(tmp_path / "data"))
    )
    exit_file = tmp_path / "train.exit"
    step = subprocess.Popen(
        wrapped(["/bin/sh", "-c", "exit 7"]),
        env={"PATH": "/usr/bin:/bin", "HATRAIN_EXIT": str(exit_file)},
    )
    assert step.wait(timeout=30) == 0  # the wrapper itself; the step's code is in the file
    assert exit_file.read_text() == "7\n"
    # The wrapper is gone (no process has this pid and start time).
    ended = ProcessHandle(step.pid, "1", str(tmp_path / "train.log"), str(exit_file))
    assert runtime.probe(ended) == "exited"
    assert runtime.wait(ended).code == 7
    exit_file.write_text("7")
    assert runtime.probe(ended) == "missing"
