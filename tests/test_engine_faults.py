"""The Docker engine restarted under a running job, with live-restore and without.

Each test runs a real dockerd of its own (tests/support/engine.py) and restarts it while the
job's container prints numbered lines: what a `systemctl restart docker` or an engine upgrade
does to a GPU host.
"""

import re
from typing import Any

import pytest
from hatrain.rpc.v1 import agent_pb2 as pb

from tests.support.engine import own_engine
from tests.support.harness import TERMINAL, all_events, poll, spec, wait_state

LINES = 200
_NUMBERED = re.compile(r"^line (\d+) ")


def _numbered(stub: Any, job_id: str) -> list[int]:
    return [
        int(m.group(1))
        for e in all_events(stub, job_id)
        if e.kind == pb.EVENT_KIND_LOG and (m := _NUMBERED.match(e.line))
    ]


@pytest.mark.parametrize("live_restore", [True, False], ids=["live-restore", "no-live-restore"])
def test_engine_restart_during_a_job(
    agent_config: dict[str, Any], start_agent: Any, live_restore: bool
) -> None:
    """With live-restore, the container runs on through the restart: the agent waits for the
    engine, takes the output up again at its byte cursor, and the job succeeds with every line
    once and in order. Without it, the engine stops the container: the job fails as
    `container lost` and no container of it is left behind."""
    with own_engine(live_restore) as engine:
        config = {**agent_config, "docker": {**agent_config["docker"], "host": engine.url}}
        stub, _ = start_agent(config)
        plan = {"hatrain_standin": {"lines": LINES, "line_delay": 0.03}}
        job = stub.SubmitJob(pb.SubmitJobRequest(spec=spec(plan))).job
        poll(lambda: len(_numbered(stub, job.id)) >= 40, 120, "40 numbered lines")
        engine.restart()
        done = wait_state(stub, job.id, TERMINAL, timeout=180)

        lines = _numbered(stub, job.id)
        if live_restore:
            assert done.state == pb.JOB_STATE_SUCCEEDED, done
            assert lines == list(range(LINES)), "every line once, in order"
        else:
            assert done.state == pb.JOB_STATE_FAILED, done
            assert done.failure_reason == "container lost", done
            assert "live-restore" in done.hint
            assert lines == list(range(len(lines))), "no gap and no duplicate up to the stop"
            left = engine.client().containers.list(all=True, filters={"label": "hatrain.job"})
            assert left == []
