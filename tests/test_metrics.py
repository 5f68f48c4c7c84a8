"""Prometheus metrics on the agent's optional listener, as a scraper reads them."""

import json
import re
import urllib.request
from pathlib import Path
from typing import Any

from hatrain.agent.config import AgentConfig
from hatrain.agent.server import Agent
from hatrain.rpc.v1 import agent_pb2 as pb
from prometheus_client.parser import text_string_to_metric_families

from tests.support.harness import free_port, poll, spec, stub_for, wait_state
from tests.test_client_submit import make_project
from tests.test_gpu_usage import GPUS, FakeNvml

REPO = Path(__file__).resolve().parent.parent


def scrape(port: int) -> "Samples":
    """/metrics parsed with prometheus_client's own parser: (sample name, labels) -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def jobs_in(samples: Samples, state: str) -> float:
    return samples[("hatrain_jobs", (("state", state),))]


def scrape_when(port: int, state: str, count: int) -> Samples | None:
    """The samples once `count` jobs are in `state` (None before)."""
    samples = scrape(port)
    return samples if jobs_in(samples, state) == count else None


def test_metrics_move_as_a_job_runs(
    local_agent_config: dict[str, Any], start_agent: Any, client_for: Any, tmp_path: Path
) -> None:
    """Before a job, while it trains and after it ends, /metrics parses and says so: jobs by
    state follow it, the events counter grows with its output, its queue wait and run time are
    observed once each, the upload is counted, and GPUs and free disk are there."""
    port = free_port()
    _, agent = start_agent({**local_agent_config, "metrics": {"listen": f"127.0.0.1:{port}"}})
    client = client_for(agent.socket)
    before = scrape(port)
    assert jobs_in(before, "training") == 0 and jobs_in(before, "succeeded") == 0
    assert before[("hatrain_events_total", ())] == 0
    assert before[("hatrain_run_seconds_count", (("state", "succeeded"),))] == 0
    assert before[("hatrain_gpus", (("use", "free"),))] == len(agent.gpus)
    assert before[("hatrain_gpus", (("use", "allocated"),))] == 0
    assert before[("hatrain_data_root_free_bytes", ())] > 0

    project = make_project(tmp_path / "project", {"hold_train": "release"})
    job = client.json("submit", "train/configs/mini.yml", "--detach", cwd=project)
    training = poll(
        lambda: scrape_when(port, "training", 1),
        120,
        "/metrics to count the job as training",
    )
    assert training[("hatrain_events_total", ())] > 0
    assert training[("hatrain_queue_wait_seconds_count", ())] == 1
    assert training[("hatrain_uploaded_bytes_total", ())] > 0
    assert training[("hatrain_run_seconds_count", (("state", "succeeded"),))] == 0

    (agent.workspace.dirs(job["id"]).run / "release").touch()
    assert client.run("wait", job["id"], timeout=120).returncode == 0
    after = poll(
        lambda: scrape_when(port, "succeeded", 1),
        30,
        "/metrics to count the job as succeeded",
    )
    assert jobs_in(after, "training") == 0
    assert after[("hatrain_events_total", ())] > training[("hatrain_events_total", ())]
    assert after[("hatrain_run_seconds_count", (("state", "succeeded"),))] == 1
    assert after[("hatrain_run_seconds_sum", (("state", "succeeded"),))] > 0
    assert (
        after[("hatrain_uploaded_bytes_total", ())]
        == training[("hatrain_uploaded_bytes_total", ())]
    )


def test_metrics_show_gpus_held_and_each_jobs_gpu_readings(
    local_agent_config: dict[str, Any],
) -> None:
    """A 2-GPU job on a 3-GPU host: /metrics counts 2 allocated and 1 free, and gives the job's
    own GPUs' memory and utilisation from the NVML readings (FakeNvml: CI has no GPU); once it
    ends, all 3 are free and its readings are gone. Every series the Grafana dashboard in
    deploy/ queries is among those served."""
    port = free_port()
    local_agent_config["gpus"] = {
        "source": "static",
        "static": [{"uuid": u} for u in GPUS],
        "sample_seconds": 0.1,
    }
    local_agent_config["metrics"] = {"listen": f"127.0.0.1:{port}"}
    nvml = FakeNvml()
    agent = Agent(AgentConfig.model_validate(local_agent_config), gpu_reader=lambda: nvml)
    agent.start()
    try:
        stub, channel = stub_for(agent.socket)
        job = stub.SubmitJob(
            pb.SubmitJobRequest(spec=spec({"hatrain_standin": {"hold_train": "go"}}, gpus=2))
        ).job
        wait_state(stub, job.id, {pb.JOB_STATE_TRAINING})

        def with_readings() -> Samples | None:
            samples = scrape(port)
            used = [k for k in samples if k[0] == "hatrain_job_gpu_memory_used_bytes"]
            return samples if len(used) == 2 else None

        samples = poll(with_readings, 30, "the job's GPU readings in /metrics")
        assert samples[("hatrain_gpus", (("use", "allocated"),))] == 2
        assert samples[("hatrain_gpus", (("use", "free"),))] == 1
        held = stub.GetJob(pb.GetJobRequest(job_id=job.id)).gpu_uuids
        for uuid in held:
            at = (("gpu", uuid), ("job_id", job.id), ("user", agent_user()))
            assert samples[("hatrain_job_gpu_memory_used_bytes", at)] > 1000 * 2**20
            assert samples[("hatrain_job_gpu_memory_total_bytes", at)] == 143_771 * 2**20
            assert 0.5 < samples[("hatrain_job_gpu_utilization_ratio", at)] <= 1.0

        dashboard = json.loads((REPO / "deploy" / "grafana-dashboard.json").read_text())
        queried = {
            name
            for panel in dashboard["panels"]
            for target in panel["targets"]
            for name in re.findall(r"hatrain_\w+", target["expr"])
        }
        assert queried and queried <= {name for name, _ in samples}, queried

        (agent.workspace.dirs(job.id).run / "go").touch()
        wait_state(stub, job.id, {pb.JOB_STATE_SUCCEEDED})
        after = scrape(port)
        assert after[("hatrain_gpus", (("use", "free"),))] == 3
        assert not [k for k in after if k[0] == "hatrain_job_gpu_memory_used_bytes"]
        channel.close()
    finally:
        agent.stop(grace=0.5)


def agent_user() -> str:
    import getpass

    return getpass.getuser()
