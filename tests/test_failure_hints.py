"""The hint of a failed job is the error its own process raised, from real Axolotl 0.19 runs.

`axolotl train` runs the training under `accelerate launch`, whose own CalledProcessError is the
last line of the output; the hint must be the training process's exception instead. A model that
cannot be had is named in the hint.
"""

from pathlib import Path
from typing import Any

import yaml
from hatrain.agent.output_parser import OutputParser

from tests.support.client import ClientRunner
from tests.support.real_agent import local_axolotl_agent_config
from tests.test_end_to_end import demo_checkout


def _submit(client: ClientRunner, checkout: Path, **changes: Any) -> dict[str, Any]:
    config_path = checkout / "configs" / "demo" / "tiny-llama-cpu.yml"
    config = yaml.safe_load(config_path.read_text())
    config.update(changes)
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    submitted = client.json("submit", "configs/demo/tiny-llama-cpu.yml", "--detach", cwd=checkout)
    waited = client.run("wait", submitted["id"], timeout=600)
    assert waited.returncode != 0
    job: dict[str, Any] = client.json("status", submitted["id"])
    return job


def test_a_failing_train_step_under_accelerate_launch_hints_its_own_exception(
    axolotl_venv: Path,
    start_agent: Any,
    client_for: Any,
    tiny_model: Path,
    tmp_path: Path,
) -> None:
    """Resuming from a folder that holds no checkpoint: preprocess succeeds, the training
    process raises ValueError inside `accelerate launch`, and that line is the hint, not the
    launcher's CalledProcessError (which is in the log)."""
    _, agent = start_agent(local_axolotl_agent_config(tmp_path / "data", axolotl_venv))
    client = client_for(agent.socket)
    checkout = demo_checkout(tmp_path / "checkout", tiny_model)
    junk = checkout / "configs" / "demo" / "not-a-checkpoint"
    junk.mkdir()
    (junk / "notes.txt").write_text("no weights here\n")
    job = _submit(client, checkout, resume_from_checkpoint="./not-a-checkpoint")
    assert job["state"] == "failed" and job["failure_reason"] == "exit code", job
    assert job["hint"].startswith("ValueError: Can't find a valid checkpoint at "), job["hint"]
    assert job["hint"].rstrip().endswith("not-a-checkpoint"), job["hint"]
    logs = client.run("logs", job["id"]).stdout
    assert "accelerate" in logs and "subprocess.CalledProcessError" in logs
    assert "CalledProcessError" not in job["hint"]

    # The same output as a multi-process launch prints it, each line with its rank.
    parser = OutputParser("train")
    parser.feed("".join(f"[rank0]: {line}\n" for line in logs.splitlines()))
    parser.flush()
    assert parser.last_error_line == job["hint"]


def test_a_missing_model_is_named_in_the_hint(
    axolotl_venv: Path,
    start_agent: Any,
    client_for: Any,
    tiny_model: Path,
    tmp_path: Path,
) -> None:
    """A Hub model that cannot be had (the host is offline): `model unavailable`, and the hint is
    Axolotl's exception message naming the model, never a line of traceback source."""
    _, agent = start_agent(local_axolotl_agent_config(tmp_path / "data", axolotl_venv))
    client = client_for(agent.socket)
    checkout = demo_checkout(tmp_path / "checkout", tiny_model)
    job = _submit(client, checkout, base_model="no-such-org/no-such-model", tokenizer_type=None)
    assert job["state"] == "failed" and job["failure_reason"] == "model unavailable", job
    hint = job["hint"]
    assert hint.startswith("OSError: We couldn't connect to 'https://huggingface.co'"), hint
    assert "no-such-org/no-such-model" in hint
    assert "raise " not in hint
