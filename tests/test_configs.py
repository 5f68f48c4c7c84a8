"""The shipped configuration files are valid, and bad agent.yml gets an error naming the field."""

from pathlib import Path

import pytest
import yaml
from hatrain.agent.config import AgentConfig, load_config
from hatrain.agent.errors import ConfigError

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
        ("listen: [1, 2\n", "not valid YAML"),
        ("- a\n", "expected a mapping"),
        ("unknown_key: 1\n", "unknown_key"),
    ],
)
def test_bad_agent_yml_names_the_field(tmp_path: Path, text: str, mentions: str) -> None:
    path = tmp_path / "agent.yml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert mentions in str(err.value)
