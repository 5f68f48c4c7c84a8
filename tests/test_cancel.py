"""Cancel during real Axolotl training, on both runtimes, and across an agent SIGKILL.

The agent runs as a process of its own (`hatrain-agent serve`), so that it can be killed right
after it took the cancel request; the user cancels with the real client over SSH.
"""

import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from hatrain.rpc.v1 import agent_pb2 as pb

from tests.support.harness import AgentProcess, poll, socket_path, stub_for, wait_state
from tests.test_end_to_end import demo_checkout

CANCEL_WITHIN_SECONDS = 5.0
SIGTERM_EXIT = 128 + 15


def _long_demo(checkout: Path) -> None:
    """The demo config, training long enough to be cancelled mid-way."""
    path = checkout / "configs" / "demo" / "tiny-llama-cpu.yml"
    config = yaml.safe_load(path.read_text())
    config.update(max_steps=100_000, save_steps=100_000, eval_steps=100_000)
    path.write_text(yaml.safe_dump(config))


@pytest.mark.axolotl
@pytest.mark.parametrize("kill_agent", [False, True], ids=["cancel", "cancel-then-agent-sigkill"])
def test_cancel_during_training(
    real_agent_config: dict[str, Any],
    client_for: Any,
    tiny_model: Path,
    tmp_path: Path,
    kill_agent: bool,
) -> None:
    """`cancel` while Axolotl trains: the client says the cancel was requested, SIGTERM reaches
    Axolotl's processes (the step ends by it, exit 143, not by SIGKILL), and the job is
    `cancelled` within 5 s. Killing the agent with SIGKILL right after it took the request
    changes nothing: the request was stored, and the agent that starts again ends the job as
    cancelled too."""
    sock = socket_path()
    agent = AgentProcess({**real_agent_config, "listen": str(sock)}, tmp_path)
    agent.start()
    try:
        stub, channel = stub_for(sock)
        client = client_for(sock)
        checkout = demo_checkout(tmp_path / "checkout", tiny_model)
        _long_demo(checkout)
        job_id = client.json("submit", "configs/demo/tiny-llama-cpu.yml", "--detach", cwd=checkout)[
            "id"
        ]

        def training() -> bool:
            job = stub.GetJob(pb.GetJobRequest(job_id=job_id))
            assert job.state not in (pb.JOB_STATE_FAILED, pb.JOB_STATE_SUCCEEDED), job
            return job.state == pb.JOB_STATE_TRAINING and "loss" in job.last_metrics

        poll(training, 300, "Axolotl to log its first training loss", every=0.2)

        asked = time.monotonic()
        cancelled = client.run("cancel", job_id)
        assert cancelled.returncode == 0, cancelled.stderr
        assert "cancel requested" in cancelled.stdout
        if kill_agent:
            agent.kill()
            channel.close()
            agent.start()
            stub, channel = stub_for(sock)
        done = wait_state(stub, job_id, {pb.JOB_STATE_CANCELLED, pb.JOB_STATE_FAILED}, 60)
        took = time.monotonic() - asked
        channel.close()

        assert done.state == pb.JOB_STATE_CANCELLED, done
        assert took <= CANCEL_WITHIN_SECONDS, f"cancel took {took:.1f} s"
        assert done.exit_code == SIGTERM_EXIT, "ended by SIGTERM within the grace period"
        waited = client.run("wait", job_id)
        assert waited.returncode == 130
    finally:
        agent.terminate()
