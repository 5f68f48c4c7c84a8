"""The real thing: hatrain-client -> sshd -> agent -> real Axolotl 0.19 on the CPU -> back.

Runs for both runtimes: a Docker container with the host's Axolotl virtualenv mounted read-only,
and `local` (the virtualenv on the host). Nothing here is a stand-in.
"""

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.client import ClientRunner

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "configs" / "demo"


def demo_checkout(root: Path, tiny_model: Path) -> Path:
    """The repository's demo config as a user has it, with its tiny model where it points."""
    shutil.copytree(DEMO, root / "configs" / "demo")
    shutil.copytree(tiny_model, root / ".cache" / "demo" / "tiny-llama")
    return root


@pytest.fixture
def demo(
    real_agent_config: dict[str, Any],
    start_agent: Any,
    client_for: Any,
    tiny_model: Path,
    tmp_path: Path,
) -> tuple[ClientRunner, Path]:
    """hatrain-client for an agent that runs the real Axolotl, and a checkout of the demo."""
    _, agent = start_agent(real_agent_config)
    return client_for(agent.socket), demo_checkout(tmp_path / "checkout", tiny_model)


def test_real_axolotl_run_streams_its_own_records(
    demo: tuple[ClientRunner, Path], real_agent_config: dict[str, Any], tmp_path: Path
) -> None:
    """Streamed metrics equal the run's trainer_state.json log_history, progress totals equal the
    step count, fetch brings back model.safetensors, and plot draws the loss curve."""
    client, checkout = demo
    submitted = client.json("submit", "configs/demo/tiny-llama-cpu.yml", "--detach", cwd=checkout)
    waited = client.run("wait", submitted["id"], timeout=600)
    assert waited.returncode == 0, (
        waited.stdout,
        client.run("logs", submitted["id"]).stdout[-3000:],
    )

    watched = client.run("watch", submitted["id"], "--json")
    events = [json.loads(line) for line in watched.stdout.splitlines()]
    train = [
        {m["name"]: m.get("value", 0.0) for m in e["metrics"]}
        for e in events
        if e["kind"] == "metrics"
        and not e.get("eval")
        and any(m["name"] == "loss" for m in e["metrics"])
    ]
    progress = [e["progress"] for e in events if e["kind"] == "progress"]
    fetched = client.json("fetch", submitted["id"], str(tmp_path / "fetched"))
    assert fetched["files_fetched"] > 0
    out = tmp_path / "fetched" / "tiny-llama-cpu"
    assert (out / "model.safetensors").stat().st_size > 0
    state = json.loads(next(out.glob("checkpoint-*/trainer_state.json")).read_text())
    history = [h for h in state["log_history"] if "loss" in h]
    assert len(train) == len(history) == state["max_steps"] == 20
    for got, want in zip(train, history, strict=True):
        assert abs(got["loss"] - want["loss"]) <= 1e-3 * max(1.0, abs(want["loss"]))
        assert abs(got["learning_rate"] - want["learning_rate"]) <= 1e-3 * want["learning_rate"]
    assert {p["total"] for p in progress if p["phase"] == "train"} == {state["max_steps"]}

    again = client.json("fetch", submitted["id"], str(tmp_path / "fetched"))
    assert again["files_fetched"] == 0 and again["files_skipped"] == fetched["files_fetched"]

    png = tmp_path / "loss.png"
    plotted = client.run("plot", submitted["id"], "--output", str(png))
    assert plotted.returncode == 0, plotted.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert "tiny-llama-cpu" in plotted.stdout

    queue = client.json("queue", "--all")
    assert [j["id"] for j in queue["jobs"]] == [submitted["id"]] and queue["errors"] == []
    assert queue["jobs"][0]["state"] == "succeeded"
    hosts = client.json("hosts")
    assert hosts[0]["runtime"] == real_agent_config["runtime"]
    tail = client.run("logs", submitted["id"], "--tail", "3")
    assert tail.stdout.splitlines()[0] == "==> train <==" and len(tail.stdout.splitlines()) == 4


def test_a_wrong_dataset_fails_with_axolotls_own_message(demo: tuple[ClientRunner, Path]) -> None:
    """A dataset the client cannot check (a hub id, here absent) reaches Axolotl, whose own
    message becomes the hint of a `dataset error`."""
    client, checkout = demo
    config_path = checkout / "configs" / "demo" / "tiny-llama-cpu.yml"
    config = yaml.safe_load(config_path.read_text())
    config["datasets"][0]["path"] = "no-such-org/no-such-dataset"
    config_path.write_text(yaml.safe_dump(config))
    submitted = client.json("submit", "configs/demo/tiny-llama-cpu.yml", "--detach", cwd=checkout)
    waited = client.run("wait", submitted["id"], "--json", timeout=600)
    job = json.loads(waited.stdout)
    assert waited.returncode != 0
    assert job["state"] == "failed" and job["failure_reason"] == "dataset error", job
    assert "no-such-org/no-such-dataset" in job["hint"] or "could not be loaded" in job["hint"]
