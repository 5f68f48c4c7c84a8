"""Real Axolotl agrees with the client, file by file.

Each case is a working directory holding an Axolotl config and its data, good or bad. The client
decides (`hatrain-client check-dataset --axolotl-config`, run in that directory), and so does the
real `axolotl preprocess --debug` of the CPU install (as the agent runs it), on a tiny local model:
whatever the client refuses, Axolotl fails on; whatever it accepts, Axolotl preprocesses.

Axolotl's verdicts are kept under ~/.cache/hatrain/axolotl-verdicts, by Axolotl's version and the
content of every file of the case, so a re-run only runs Axolotl for what changed.
"""

import gzip
import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import CACHE
from tests.support.client import CLIENT

REPO = Path(__file__).resolve().parent.parent
HARNESS = REPO / "tests" / "support" / "axolotl_preprocess.py"
DEMO_TEMPLATE = (REPO / "configs" / "demo" / "chat_template.jinja").read_text()
HOME_LLM = REPO / "tests" / "data" / "home-llm"


def rows(*records: Any) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def conv(*messages: Any, **extra: Any) -> dict[str, Any]:
    return {"messages": list(messages), **extra}


U = {"role": "user", "content": "turn on the fan"}
A = {"role": "assistant", "content": "done"}
GOOD = rows(conv(U, A), conv(U, A), conv(U, A))


def call(arguments: Any, **message: Any) -> dict[str, Any]:
    return {
        "role": "assistant",
        "tool_calls": [{"function": {"name": "HassTurnOn", "arguments": arguments}}],
        **message,
    }


def home_llm(fmt: str, lines: int = 40) -> str:
    text = gzip.decompress((HOME_LLM / f"sample-{fmt}.jsonl.gz").read_bytes()).decode()
    return "".join(text.splitlines(keepends=True)[:lines])


def seed(name: str) -> dict[str, Any]:
    """A seed config as a CPU run takes it: the tiny model, no bf16 or flash attention."""
    config: dict[str, Any] = yaml.safe_load((REPO / "configs" / "home-llm" / name).read_text())
    for key in ("bf16", "flash_attention", "gradient_checkpointing", "model_type"):
        config.pop(key, None)
    config["optimizer"] = "adamw_torch"
    config["datasets"][0]["path"] = "data.jsonl"
    return config


def chat(**dataset: Any) -> dict[str, Any]:
    return {
        "chat_template": "jinja",
        "chat_template_jinja": DEMO_TEMPLATE,
        "datasets": [{"path": "data.jsonl", "type": "chat_template", **dataset}],
    }


def plain(**dataset: Any) -> dict[str, Any]:
    return {"datasets": [{"path": "data.jsonl", **dataset}]}


SHAREGPT = rows(
    *[{"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]}] * 3
)
STRATEGY = (
    "from axolotl.prompt_strategies.alpaca_chat import load as alpaca_load\n\n\n"
    "def load(tokenizer, cfg, ds_cfg=None):\n    return alpaca_load(tokenizer, cfg)\n"
)
ALPACA = rows(*[{"instruction": "say hi", "input": "", "output": "hi"}] * 3)

# id: (config, files). Together they cover the shapes and path rules of the README's table.
CASES: dict[str, tuple[dict[str, Any], dict[str, str | bytes]]] = {
    "home-llm functiongemma data, functiongemma config": (
        seed("functiongemma-270m.yml"),
        {"data.jsonl": home_llm("functiongemma")},
    ),
    "home-llm text data, functiongemma config": (
        seed("functiongemma-270m.yml"),
        {"data.jsonl": home_llm("text", 4)},
    ),
    "home-llm functiongemma data, gemma3 config": (
        seed("gemma3-270m.yml"),
        {"data.jsonl": home_llm("functiongemma")},
    ),
    "home-llm text data, gemma3 config": (
        seed("gemma3-270m.yml"),
        {"data.jsonl": home_llm("text")},
    ),
    "demo data with train_on_turn": (
        chat(message_field_training="train_on_turn", roles_to_train=[]),
        {"data.jsonl": (REPO / "configs" / "demo" / "sample.jsonl").read_text()},
    ),
    "tool call without content, arguments as an object": (
        chat(),
        {
            "data.jsonl": rows(
                *[conv(U, call({"name": "fan"}), {"role": "tool", "content": "ok"})] * 2
            )
        },
    ),
    "tool call arguments, a JSON string": (
        chat(),
        {"data.jsonl": rows(*[conv(U, call('{"name": "fan"}', content="on it"), A)] * 2)},
    ),
    "tool call arguments, a string that is not JSON": (
        chat(),
        {"data.jsonl": rows(conv(U, A), conv(U, call("{name: fan}", content="on it")))},
    ),
    "tool call that is text": (
        chat(),
        {"data.jsonl": rows(*[conv(U, {**A, "tool_calls": ["function HassTurnOn"]})] * 2)},
    ),
    "roles developer, ipython, tool results as parts of any shape": (
        chat(),
        {
            "data.jsonl": rows(
                *[
                    conv(
                        {"role": "developer", "content": "be brief"},
                        U,
                        {"role": "ipython", "content": [{"name": "f", "response": {"ok": 1}}]},
                        A,
                    )
                ]
                * 2
            )
        },
    ),
    "messages as a JSON string": (
        chat(),
        {"data.jsonl": rows(*[{"messages": json.dumps([U, A])}] * 2)},
    ),
    "a .jsonl holding one JSON array": (
        chat(),
        {"data.jsonl": json.dumps([conv(U, A), conv(U, A)], indent=2)},
    ),
    "ShareGPT conversations through a mapping": (
        chat(
            field_messages="conversations",
            message_property_mappings={"role": "from", "content": "value"},
        ),
        {"data.jsonl": SHAREGPT},
    ),
    "ShareGPT conversations through the older message_field_* keys and roles": (
        chat(
            field_messages="conversations",
            message_field_role="from",
            message_field_content="value",
            roles={"user": ["human"], "assistant": ["gpt"]},
        ),
        {"data.jsonl": SHAREGPT},
    ),
    "ShareGPT conversations without a mapping": (
        chat(field_messages="conversations"),
        {"data.jsonl": SHAREGPT},
    ),
    "an empty file": (chat(), {"data.jsonl": ""}),
    "a line that is not JSON": (chat(), {"data.jsonl": GOOD + '{"messages": [\n'}),
    "a line that is a JSON list": (chat(), {"data.jsonl": GOOD + "[1, 2]\n"}),
    "text that is not UTF-8": (
        chat(),
        {
            "data.jsonl": GOOD.encode()
            + '{"messages": [{"role": "user", "content": "caf\xe9"}]}\n'.encode("latin-1")
        },
    ),
    "a record without messages": (chat(), {"data.jsonl": GOOD + rows({"text": "hi"})}),
    "an empty conversation": (chat(), {"data.jsonl": GOOD + rows(conv())}),
    "a first message without a role": (
        chat(),
        {"data.jsonl": GOOD + rows(conv({"content": "hi"}, A))},
    ),
    "a content part whose text is a number": (
        chat(),
        {
            "data.jsonl": GOOD
            + rows(conv({"role": "user", "content": [{"type": "text", "text": 5}]}, A))
        },
    ),
    "tools that are an object": (
        chat(),
        {"data.jsonl": rows(*[conv(U, A, tools={"name": "f"})] * 2)},
    ),
    "tools as a JSON string": (
        chat(),
        {
            "data.jsonl": rows(
                *[conv(U, A, tools=json.dumps([{"type": "function", "function": {"name": "f"}}]))]
                * 2
            )
        },
    ),
    "content the template refuses": (
        seed("gemma3-270m.yml"),
        {"data.jsonl": rows(conv(U, A), conv(U, {"role": "assistant", "content": 5}))},
    ),
    "a train set of one example": (chat(), {"data.jsonl": rows(conv(U, A))}),
    "train_on_eos that Axolotl does not know": (
        chat(train_on_eos="sometimes"),
        {"data.jsonl": GOOD},
    ),
    "alpaca type, not a chat file": (plain(type="alpaca"), {"data.jsonl": ALPACA}),
    "pre-tokenized rows, no type": (
        plain(),
        {
            "data.jsonl": rows(
                *[{"input_ids": [1, 2, 3], "attention_mask": [1, 1, 1], "labels": [1, 2, 3]}] * 3
            )
        },
    ),
    "a directory: only the loader's files, never .cache/": (
        chat(),
        {
            "data.jsonl/part-1.jsonl": GOOD,
            "data.jsonl/part-2.jsonl": GOOD,
            "data.jsonl/.cache/stale.jsonl": "{broken\n",
            "data.jsonl/notes.txt": "not data\n",
        },
    ),
    "a directory with a bad file inside": (
        chat(),
        {"data.jsonl/part-1.jsonl": GOOD, "data.jsonl/part-2.jsonl": GOOD + rows(conv())},
    ),
    "data_files of a directory, from the working directory": (
        {
            **chat(),
            "datasets": [{"path": "d", "data_files": ["d/a.jsonl"], "type": "chat_template"}],
        },
        {"d/a.jsonl": GOOD},
    ),
    "data_files of a directory, relative to the directory": (
        {**chat(), "datasets": [{"path": "d", "data_files": ["a.jsonl"], "type": "chat_template"}]},
        {"d/a.jsonl": GOOD},
    ),
    "a custom type module, package.module": (
        plain(type="my_formats.qa"),
        {"data.jsonl": ALPACA, "my_formats/__init__.py": "", "my_formats/qa.py": STRATEGY},
    ),
    "a custom type module named module.load": (
        plain(type="my_format.load"),
        {"data.jsonl": ALPACA, "my_format.py": STRATEGY},
    ),
}


def axolotl_version(venv: Path) -> str:
    found = sorted((venv / "lib").glob("python3*/site-packages/axolotl-*.dist-info"))
    assert found, f"no Axolotl in {venv}"
    return found[0].name


def case_key(workdir: Path, version: str) -> str:
    digest = hashlib.sha256(f"{version}\n".encode() + HARNESS.read_bytes())
    for path in sorted(p for p in workdir.rglob("*") if p.is_file()):
        digest.update(f"\n{path.relative_to(workdir)}\n".encode() + path.read_bytes())
    return digest.hexdigest()[:32]


def build(root: Path, name: str, tiny_model: Path) -> Path:
    config, files = CASES[name]
    workdir = root / hashlib.sha256(name.encode()).hexdigest()[:12]
    for relative, content in files.items():
        path = workdir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    full = {
        "base_model": str(tiny_model),
        "tokenizer_type": "PreTrainedTokenizerFast",
        "sequence_len": 65536,
        "val_set_size": 0,
        "micro_batch_size": 1,
        "num_epochs": 1,
        "learning_rate": 0.001,
        "output_dir": "./out",
        "dataset_prepared_path": "./prepared",
        **config,
    }
    full.update(
        base_model=str(tiny_model),
        sequence_len=65536,
        output_dir="./out",
        dataset_prepared_path="./prepared",
    )
    (workdir / "config.yml").write_text(yaml.safe_dump(full, sort_keys=False))
    return workdir


@pytest.fixture(scope="module")
def verdicts(
    tmp_path_factory: pytest.TempPathFactory, axolotl_venv: Path, tiny_model: Path
) -> dict[str, tuple[Path, dict[str, Any]]]:
    """Axolotl's verdict on every case (from the cache, or from one run of the harness)."""
    root = tmp_path_factory.mktemp("agreement")
    version = axolotl_version(axolotl_venv)
    store = CACHE / "axolotl-verdicts"
    store.mkdir(parents=True, exist_ok=True)
    workdirs = {name: build(root, name, tiny_model) for name in CASES}
    keys = {name: case_key(workdir, version) for name, workdir in workdirs.items()}
    todo = [name for name in CASES if not (store / f"{keys[name]}.json").exists()]
    if todo:
        cases = [{"id": n, "workdir": str(workdirs[n]), "config": "config.yml"} for n in todo]
        (root / "cases.json").write_text(json.dumps(cases))
        subprocess.run(
            [
                str(axolotl_venv / "bin" / "python"),
                str(HARNESS),
                str(root / "cases.json"),
                str(root / "results.json"),
                str(root / "hf"),
            ],
            check=True,
            capture_output=True,
            env={**os.environ, "PATH": f"{axolotl_venv / 'bin'}:{os.environ['PATH']}"},
            timeout=1800,
        )
        for result in json.loads((root / "results.json").read_text()):
            (store / f"{keys[result['id']]}.json").write_text(json.dumps(result))
    return {
        name: (workdirs[name], json.loads((store / f"{keys[name]}.json").read_text()))
        for name in CASES
    }


def test_axolotl_refuses_what_the_client_refuses_and_accepts_the_rest(
    verdicts: dict[str, tuple[Path, dict[str, Any]]],
) -> None:
    """For every case, the client's verdict equals real Axolotl's; at least 20 cases, both
    verdicts well represented. A disagreement lists each case with both sides' words."""
    disagreements = []
    for name, (workdir, axolotl) in verdicts.items():
        result = subprocess.run(
            [CLIENT, "check-dataset", "--axolotl-config", "config.yml"],
            capture_output=True,
            text=True,
            cwd=workdir,
            timeout=120,
            check=False,
        )
        assert result.returncode in (0, 65), (name, result.stdout, result.stderr)
        accepted = result.returncode == 0
        if accepted != axolotl["accepted"]:
            disagreements.append(
                f"{name}: client {'accepts' if accepted else 'refuses'} "
                f"({result.stdout.strip()[:300]}); Axolotl "
                f"{'accepts' if axolotl['accepted'] else 'fails: ' + axolotl['error']}"
            )
    assert not disagreements, "\n".join(disagreements)
    good = [name for name, (_, v) in verdicts.items() if v["accepted"]]
    assert len(verdicts) >= 20 and 10 <= len(good) <= len(verdicts) - 10, good
