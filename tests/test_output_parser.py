"""Parsing Axolotl's real output, captured from a real Axolotl 0.19 CPU run by the test set-up."""

import json
import random
from pathlib import Path
from typing import Any

import yaml
from hatrain.agent.events import Event, EventKind
from hatrain.agent.output_parser import SIGNATURES, OutputParser, parse_metrics
from hatrain.rpc.v1 import agent_pb2 as pb

from tests.conftest import DEMO
from tests.support.harness import TERMINAL, wait_state


def _parse(text: str, step: str, chunk_sizes: list[int] | None = None) -> list[Event]:
    parser = OutputParser(step)
    events: list[Event] = []
    pos = 0
    sizes = iter(chunk_sizes or [])
    while pos < len(text):
        size = next(sizes, len(text))
        events += parser.feed(text[pos : pos + size])
        pos += size
    return events + parser.flush()


def log_lines(events: list[Event]) -> list[str]:
    """The log lines of parsed events: a LOG event holds a run of lines."""
    return [line for e in events if e.kind == EventKind.LOG for line in e.line.split("\n")]


def _train(capture: Path) -> str:
    return capture.joinpath("train.log").read_bytes().decode("utf-8", errors="replace")


def test_metrics_equal_the_runs_own_log_history(axolotl_capture: Path) -> None:
    """Every logged training loss and learning rate equals trainer_state.json's log_history."""
    events = _parse(_train(axolotl_capture), "train")
    state = json.loads(
        next((axolotl_capture / "output").glob("checkpoint-*/trainer_state.json")).read_text()
    )
    history = state["log_history"]
    train_dicts = [
        dict((m.name, m.value) for m in e.metrics)
        for e in events
        if e.kind == EventKind.METRICS and not e.eval and any(m.name == "loss" for m in e.metrics)
    ]
    expected = [h for h in history if "loss" in h]
    assert len(train_dicts) == len(expected) == state["max_steps"]
    for got, want in zip(train_dicts, expected, strict=True):
        assert abs(got["loss"] - want["loss"]) <= 1e-3 * max(1.0, abs(want["loss"]))
        assert (
            abs(got["learning_rate"] - want["learning_rate"])
            <= 1e-3 * want["learning_rate"] + 1e-12
        )
    evals = [e for e in events if e.kind == EventKind.METRICS and e.eval]
    assert len(evals) == len([h for h in history if "eval_loss" in h])
    final = [e for e in events if any(m.name == "train_runtime" for m in e.metrics)]
    assert len(final) == 1


def test_bars_become_progress_not_log_lines(axolotl_capture: Path) -> None:
    """`\\r`-updated tqdm bars become progress events whose training total is the step count."""
    text = _train(axolotl_capture)
    events = _parse(text, "train")
    assert "\r" in text and "%|" in text
    logs = log_lines(events)
    assert not any("%|" in line and "it/s]" in line and line.lstrip()[0].isdigit() for line in logs)
    progress = [e.progress for e in events if e.progress and e.progress.phase == "train"]
    config = yaml.safe_load((DEMO / "tiny-llama-cpu.yml").read_text())
    assert {p.total for p in progress} == {config["max_steps"]}
    assert progress[-1].current == config["max_steps"]
    assert [p.current for p in progress] == sorted(p.current for p in progress)
    assert any(e.progress and e.progress.phase == "eval" for e in events)
    pre = _parse(
        axolotl_capture.joinpath("preprocess.log").read_bytes().decode(errors="replace"),
        "preprocess",
    )
    phases = {e.progress.phase for e in pre if e.progress}
    assert any(p.startswith("Tokenizing Prompts") for p in phases)


def test_any_chunking_gives_the_same_events(axolotl_capture: Path) -> None:
    text = _train(axolotl_capture)
    whole = _parse(text, "train")
    rng = random.Random(3)
    chunked = _parse(text, "train", [rng.randint(1, 300) for _ in range(len(text))])

    def key(events: list[Event]) -> list[Any]:
        """Chunking may group lines into runs differently; the lines and metrics are the same."""
        out: list[Any] = []
        for e in events:
            if e.kind == EventKind.LOG:
                out += [("log", line) for line in e.line.split("\n")]
            elif e.kind == EventKind.METRICS:
                out.append(("metrics", e.metrics))
        return out

    assert key(chunked) == key(whole)


def test_metric_values_numeric_string_and_nan() -> None:
    """transformers 4 prints numbers, 5 prints strings; `nan` stays a float; text stays text."""
    metrics = parse_metrics(
        "{'loss': 1.5, 'grad_norm': nan, 'learning_rate': '2e-05', "
        "'tokens/trainable': 1188, 'note': 'warmup'}"
    )
    assert metrics is not None
    values = {m.name: m for m in metrics}
    assert values["loss"].value == 1.5
    assert values["grad_norm"].value != values["grad_norm"].value  # nan
    assert values["learning_rate"].value == 2e-05
    assert values["tokens/trainable"].value == 1188
    assert values["note"].value is None and values["note"].text == "warmup"


def test_missing_dataset_fails_with_axolotls_message(
    start_agent: Any, agent_config: dict[str, Any], tiny_model: Path, axolotl_venv: Path
) -> None:
    """Real Axolotl in a container, dataset path that does not exist: `dataset error`, and the
    hint is Axolotl's own message."""
    agent_config["docker"]["env"]["PATH"] = f"{axolotl_venv}/bin:/usr/bin:/bin"
    agent_config["docker"]["extra_mounts"].append(
        {"source": str(tiny_model), "target": "/opt/tiny-llama"}
    )
    stub, _ = start_agent(agent_config)
    config = yaml.safe_load((DEMO / "tiny-llama-cpu.yml").read_text())
    config["base_model"] = "/opt/tiny-llama"
    config["chat_template"] = "chatml"
    del config["chat_template_jinja"]
    config["datasets"][0]["path"] = "/workspace/data/datasets/does-not-exist.jsonl"
    job = stub.SubmitJob(
        pb.SubmitJobRequest(
            spec=pb.JobSpec(
                config_name="broken.yml",
                config_yaml=yaml.safe_dump(config).encode(),
                image=agent_config["docker"]["default_image"],
            )
        )
    ).job
    done = wait_state(stub, job.id, TERMINAL, timeout=300)
    assert done.state == pb.JOB_STATE_FAILED
    assert done.failure_reason == "dataset error", done.hint
    assert "The dataset could not be loaded" in done.hint
    assert "does-not-exist.jsonl" in done.hint
    assert done.exit_code != 0


FAILURE_LINES = {
    "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total "
    "capacity of 79.19 GiB of which 1.02 GiB is free.": "gpu out of memory",
    "huggingface_hub.errors.GatedRepoError: 401 Client Error. Cannot access gated repo for url "
    "https://huggingface.co/google/gemma-3-270m/resolve/main/config.json.": "gated model or token",
    "pydantic_core._pydantic_core.ValidationError: 1 validation error for AxolotlInputConfig": (
        "bad config"
    ),
    "[Rank 0] Watchdog caught collective operation timeout: WorkNCCL(SeqNum=5, "
    "OpType=ALLREDUCE, Timeout(ms)=600000) ran for 600003 milliseconds": "nccl timeout",
    "RuntimeError: DataLoader worker (pid 4121) is killed by signal: Bus error. It is possible "
    "that dataloader's workers are out of shared memory.": "shared memory",
    "OSError: We couldn't connect to 'https://huggingface.co' to load the files, and couldn't "
    "find them in the cached files.": "model unavailable",
    "datasets.exceptions.DatasetGenerationError: An error occurred while generating the "
    "dataset": "dataset error",
}


def test_failure_signs_found_among_plain_output() -> None:
    """Each known failure sign is recognised, alone or in the middle of a large piece of plain
    output (which is screened as a whole), and the hint names the fix or quotes the line."""
    plain = "".join(f"[INFO] step {i}: loading shard {i} of the model\n" for i in range(2000))
    for line, reason in FAILURE_LINES.items():
        for text in (line + "\n", plain + line + "\n" + plain):
            parser = OutputParser("train")
            parser.feed(text)
            parser.flush()
            assert parser.failure is not None, line
            assert parser.failure[0].value == reason, line
            assert parser.failure[1], line
    parser = OutputParser("train")
    parser.feed(plain + "a note about memory and datasets in general\n")
    assert parser.failure is None


def _alternatives(pattern: str) -> list[str]:
    """The top-level `|` alternatives of a regular expression's source."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(pattern):
        if char in "([":
            depth += 1
        elif char in ")]":
            depth -= 1
        elif char == "|" and depth == 0:
            parts.append(pattern[start:i])
            start = i + 1
    return [*parts, pattern[start:]]


def test_every_signature_alternative_holds_a_screening_keyword() -> None:
    """Output is screened for the signatures' keywords before any pattern runs, so each way a
    pattern can match must contain one of its keywords, or that failure would go unseen."""
    for sig in SIGNATURES:
        for alternative in _alternatives(sig.pattern.pattern):
            literal = alternative.replace("\\", "")
            assert any(k in literal for k in sig.keywords), (sig.reason, alternative)


def _events_without(text: str, step: str = "train") -> list[Event]:
    parser = OutputParser(step, clock=lambda: 0.0)
    return parser.feed(text) + parser.flush()


def test_train_bar_total_is_the_bars_own_not_axolotls_maximum_steps_line(
    axolotl_capture: Path,
) -> None:
    """The real run's output without Axolotl's "Maximum number of steps" line (RL and streaming
    runs never print it), and with it saying less than the run does (max_steps above the
    computed count): train bars still total the run's steps, evaluation bars are told apart,
    and every metric dict carries the step trainer_state.json logged it at."""
    text = _train(axolotl_capture)
    state = json.loads(
        next((axolotl_capture / "output").glob("checkpoint-*/trainer_state.json")).read_text()
    )
    steps = [h["step"] for h in state["log_history"]]
    line = next(x for x in text.splitlines() if "Maximum number of steps set at" in x)
    for variant in (
        text.replace(line + "\n", ""),
        text.replace(line, line[: line.rindex(" ")] + " 7"),
    ):
        events = _events_without(variant)
        bars = [e.progress for e in events if e.progress]
        assert {p.total for p in bars if p.phase == "train"} == {state["max_steps"]}
        assert {p.total for p in bars if p.phase == "eval"} == {4}
        metrics = [e for e in events if e.kind == EventKind.METRICS]
        logged = [
            e.train_step for e in metrics if not any(m.name == "train_runtime" for m in e.metrics)
        ]
        assert logged == steps


def test_rank_prefixed_lines_parse_as_the_plain_ones(axolotl_capture: Path) -> None:
    """A launched process's lines carry "[rank0]: "; they give the same metrics and bars."""
    text = _train(axolotl_capture)
    prefixed = "".join(f"[rank0]: {line}" for line in text.splitlines(keepends=True))

    def key(events: list[Event]) -> list[Any]:
        return [
            (e.kind, e.metrics, e.train_step, e.progress.total if e.progress else None)
            for e in events
            if e.kind != EventKind.LOG
        ]

    assert key(_events_without(prefixed)) == key(_events_without(text))
