"""Evaluations placed at the step they really ran at, on a real Axolotl 0.19 CPU run.

hatrain-client -> sshd -> agent (`local` runtime, the Axolotl virtualenv) -> back. With
logging_steps: 2 and eval_steps: 3, an evaluation is not at (train dicts so far x logging_steps):
the agent records the train bar's step with each metric event, and `status` and `plot` use it.
"""

import json
from pathlib import Path
from typing import Any

import yaml
from hatrain.client.plot import curves
from hatrain.client.records import Metrics, event_from_wire
from hatrain.rpc.v1 import agent_pb2 as pb

from tests.support.client import ClientRunner
from tests.support.harness import all_events
from tests.support.real_agent import local_axolotl_agent_config
from tests.test_end_to_end import demo_checkout


def test_eval_steps_in_status_and_plot_equal_the_runs_log_history(
    axolotl_venv: Path,
    start_agent: Any,
    client_for: Any,
    tiny_model: Path,
    tmp_path: Path,
) -> None:
    """A real run with logging_steps 2 and eval_steps 3: the eval steps `status --json` lists,
    and the eval and train steps `plot` draws, equal trainer_state.json's log_history."""
    stub, agent = start_agent(
        local_axolotl_agent_config(tmp_path / "data", axolotl_venv), user="root"
    )  # as the client, which logs in as root
    client: ClientRunner = client_for(agent.socket)
    checkout = demo_checkout(tmp_path / "checkout", tiny_model)
    config_path = checkout / "configs" / "demo" / "tiny-llama-cpu.yml"
    config = yaml.safe_load(config_path.read_text())
    config.update(max_steps=12, logging_steps=2, eval_steps=3, save_steps=12)
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    submitted = client.json("submit", "configs/demo/tiny-llama-cpu.yml", "--detach", cwd=checkout)
    waited = client.run("wait", submitted["id"], timeout=600)
    assert waited.returncode == 0, client.run("logs", submitted["id"]).stdout[-3000:]

    fetched = tmp_path / "fetched"
    client.json("fetch", submitted["id"], str(fetched))
    state = json.loads(next(fetched.rglob("checkpoint-*/trainer_state.json")).read_text())
    history = state["log_history"]
    eval_steps = [h["step"] for h in history if "eval_loss" in h]
    train_steps = [h["step"] for h in history if "loss" in h]
    assert eval_steps == [0, 3, 6, 9, 12] and train_steps == [2, 4, 6, 8, 10, 12]

    status = client.json("status", submitted["id"])
    assert [e["step"] for e in status["evals"]] == eval_steps
    for got, want in zip(status["evals"], (h for h in history if "eval_loss" in h), strict=True):
        assert abs(got["eval_loss"] - want["eval_loss"]) <= 1e-3 * max(1.0, want["eval_loss"])
    text = client.run("status", submitted["id"]).stdout
    assert "at step 12" in text and "eval loss" in text

    events = [e for e in all_events(stub, submitted["id"]) if e.kind == pb.EVENT_KIND_METRICS]
    drawn = curves(metric_events(events), logging_steps=2)
    assert [step for step, _ in drawn.eval] == eval_steps
    assert [step for step, _ in drawn.train] == train_steps
    png = tmp_path / "loss.png"
    plotted = client.run("plot", submitted["id"], "--output", str(png), "--no-terminal")
    assert plotted.returncode == 0, plotted.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_events_recorded_before_the_train_step_was_kept_still_plot() -> None:
    """A metric event stored without a train step reads back without one, goes on the wire
    without one, and is placed by count as before (an eval at the train dicts before it)."""
    from hatrain.agent.events import Event
    from hatrain.agent.wire import event_to_wire

    old: list[tuple[str, dict[str, Any]]] = [
        ("metrics", {"step": "train", "metrics": [["eval_loss", 3.0, ""]], "eval": True}),
        ("metrics", {"step": "train", "metrics": [["loss", 2.5, ""]]}),
        ("metrics", {"step": "train", "metrics": [["loss", 2.0, ""]]}),
        ("metrics", {"step": "train", "metrics": [["eval_loss", 1.5, ""]], "eval": True}),
    ]
    events = [Event.from_record(kind, i + 1, 0.0, rec) for i, (kind, rec) in enumerate(old)]
    assert all(e.train_step is None for e in events)
    wire = [event_to_wire(e) for e in events]
    assert not any(w.HasField("train_step") for w in wire)
    drawn = curves(metric_events(wire), logging_steps=5)
    assert drawn.eval == [(0, 3.0), (10, 1.5)] and drawn.train == [(5, 2.5), (10, 2.0)]
    kept = Event.from_record("metrics", 9, 0.0, {**old[3][1], "train_step": 7})
    assert event_to_wire(kept).train_step == 7 and kept.to_record()["train_step"] == 7


def metric_events(wire: list[pb.Event]) -> list[Metrics]:
    """The client's typed records of these wire events."""
    return [e for e in map(event_from_wire, wire) if isinstance(e, Metrics)]
