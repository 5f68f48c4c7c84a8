"""Prometheus metrics on the agent's optional listener, as a scraper reads them."""

import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.support.harness import free_port, poll
from tests.test_client_submit import make_project


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """/metrics parsed with prometheus_client's own parser: (sample name, labels) -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def jobs_in(samples: dict[Any, float], state: str) -> float:
    return samples[("hatrain_jobs", (("state", state),))]


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
        lambda: (s := scrape(port)) and jobs_in(s, "training") == 1 and s,
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
        lambda: (s := scrape(port)) and jobs_in(s, "succeeded") == 1 and s,
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
