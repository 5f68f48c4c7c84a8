"""The shipped configuration files are valid, and bad agent.yml gets an error naming the field."""

from pathlib import Path

import pytest
import yaml
from hatrain.agent.config import AgentConfig, load_config
from hatrain.agent.errors import ConfigError
from hatrain.client.axolotl_config import analyse, finalize
from hatrain.client.dataset_check import ChatReading, check_file
from hatrain.client.settings import load_settings

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def test_example_agent_yml_is_valid_and_equals_the_defaults() -> None:
    assert load_config(CONFIGS / "agent.yml") == AgentConfig()


def test_demo_config_and_dataset_are_well_formed() -> None:
    config = yaml.safe_load((CONFIGS / "demo" / "tiny-llama-cpu.yml").read_text())
    assert config["output_dir"].startswith("/workspace/data/training-runs/")
    assert (CONFIGS / "demo" / config["datasets"][0]["path"]).exists()
    assert (CONFIGS / "demo" / config["chat_template_jinja"]).exists()
    lines = (CONFIGS / "demo" / "sample.jsonl").read_text().splitlines()
    assert len(lines) == 64
    assert all("messages" in yaml.safe_load(line) for line in lines)


@pytest.mark.parametrize(
    ("text", "mentions"),
    [
        ("docker:\n  stop_grace_seconds: soon\n", "docker.stop_grace_seconds"),
        ("runtime: kubernetes\n", "runtime"),
        ("multi_gpu:\n  launcher: mpirun\n", "multi_gpu.launcher"),
        ("gpus:\n  sample_seconds: -1\n", "gpus.sample_seconds"),
        ("listen: [1, 2\n", "not valid YAML"),
        ("- a\n", "expected a mapping"),
        ("unknown_key: 1\n", "unknown_key"),
        ("retention:\n  hold_starts_below: 5 lemons\n", "retention.hold_starts_below"),
        ("retention:\n  run_dirs_days: -1\n", "retention.run_dirs_days"),
        (
            "retention:\n  hold_starts_below: 8GiB\n  refuse_uploads_below: 4GiB\n",
            "refuse_uploads_below (4.0GiB) must be at least hold_starts_below (8.0GiB)",
        ),
        ("metrics:\n  listen: 9464\n", "metrics.listen"),
        ("metrics:\n  listen: localhost:http\n", "metrics.listen"),
        ("tensorboard:\n  venv: [a]\n", "tensorboard.venv"),
    ],
)
def test_bad_agent_yml_names_the_field(tmp_path: Path, text: str, mentions: str) -> None:
    path = tmp_path / "agent.yml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert mentions in str(err.value)


def test_example_client_yml_is_valid() -> None:
    settings = load_settings(CONFIGS / "client.yml")
    alias, entry = settings.host(None)
    assert (alias, entry.ssh, entry.agent) == (
        "gpu1",
        "alice@gpu1.example.com",
        "/run/hatrain/agent.sock",
    )
    assert entry.bridge_command() == (
        "exec /opt/hatrain/venv/bin/hatrain-agent bridge --socket /run/hatrain/agent.sock"
    )
    assert settings.hosts["gpu2"].agent == str(AgentConfig().listen)


@pytest.mark.parametrize("name", ["gemma3-270m.yml", "functiongemma-270m.yml"])
def test_seed_configs_are_accepted_as_users_have_them(tmp_path: Path, name: str) -> None:
    """The seed's configs, unchanged: their container dataset path maps to the local file, the
    inline template stays inline, the hub model id stays, output_dir is pinned to the run."""
    local = tmp_path / "sample.jsonl"
    local.write_bytes((CONFIGS / "demo" / "sample.jsonl").read_bytes())
    analysis = analyse(CONFIGS / "home-llm" / name, {"sample.jsonl": local})
    assert [(f.name, f.path) for f in analysis.files] == [("sample.jsonl", local.resolve())]
    assert check_file(local, ChatReading()).findings == []
    text = finalize(analysis, {local.resolve(): "0" * 64}, "run")
    config = yaml.safe_load(text)
    original = yaml.safe_load((CONFIGS / "home-llm" / name).read_text())
    assert config["datasets"][0]["path"] == "/workspace/data/datasets/sample.jsonl"
    assert config["chat_template_jinja"] == original["chat_template_jinja"]
    assert config["base_model"] == original["base_model"]
    assert config["output_dir"] == original["output_dir"]
    assert config["dataset_prepared_path"].startswith("/workspace/data/huggingface-cache/prepared/")


def test_demo_config_is_accepted_by_the_client(tmp_path: Path) -> None:
    """Everything the CPU demo references is found relative to it (the tiny model once built)."""
    model = CONFIGS.parent / ".cache" / "demo" / "tiny-llama"
    config = yaml.safe_load((CONFIGS / "demo" / "tiny-llama-cpu.yml").read_text())
    assert (CONFIGS / "demo" / config["base_model"]).resolve() == model.resolve()
    demo = tmp_path / "configs" / "demo"
    demo.mkdir(parents=True)
    for f in ("tiny-llama-cpu.yml", "sample.jsonl", "chat_template.jinja"):
        (demo / f).write_bytes((CONFIGS / "demo" / f).read_bytes())
    built = tmp_path / ".cache" / "demo" / "tiny-llama"
    built.mkdir(parents=True)
    (built / "config.json").write_text("{}")
    names = sorted(f.name for f in analyse(demo / "tiny-llama-cpu.yml").files)
    assert names == ["chat_template.jinja", "sample.jsonl", "tiny-llama/config.json"]
