"""Bad input to hatrain-client: one clear line, the right exit code, nothing uploaded or submitted.

A real sshd, a real agent; every case is checked against the agent's own state afterwards.
"""

from pathlib import Path
from typing import Any

import pytest
import yaml
from hatrain.rpc.v1 import agent_pb2 as pb

from tests.support.client import ClientRunner, host_entry
from tests.support.harness import free_port, socket_path
from tests.support.sshd import keygen
from tests.test_client_submit import make_project, write_config


def assert_nothing_sent(stub: Any, data_root: Path) -> None:
    assert stub.ListJobs(pb.ListJobsRequest()).total == 0
    objects = data_root / "objects"
    assert [p for p in objects.rglob("*") if p.is_file()] == []


@pytest.fixture
def setup(agent_config: dict[str, Any], start_agent: Any, client_for: Any, tmp_path: Path) -> Any:
    stub, agent = start_agent(agent_config)
    client = client_for(agent.socket)
    project = make_project(tmp_path / "project")
    yield stub, client, project, Path(agent_config["data_root"])
    assert_nothing_sent(stub, Path(agent_config["data_root"]))


def submit(client: ClientRunner, project: Path, *extra: str) -> Any:
    return client.run("submit", "train/configs/mini.yml", "--detach", *extra, cwd=project)


def test_missing_dataset_file(setup: Any) -> None:
    """A local dataset path that does not exist names the config's line, the field, the path and
    both places looked in: the working directory and beside the config."""
    _, client, project, _ = setup
    write_config(project, {}, datasets=[{"path": "./missing.jsonl", "type": "chat_template"}])
    result = submit(client, project)
    assert result.returncode == 65
    configs = project / "train" / "configs"
    assert (
        f"{configs / 'mini.yml'}:5: datasets[0].path: ./missing.jsonl: no such file or directory "
        f"(looked in {project / 'missing.jsonl'} and {configs / 'missing.jsonl'})"
    ) in result.stderr


def test_container_dataset_path_without_a_local_file(setup: Any) -> None:
    """The seed's /workspace/data/datasets/... path with no local file says how to map it."""
    _, client, project, _ = setup
    (project / "data" / "output" / "sample.jsonl").unlink()
    result = submit(client, project)
    assert result.returncode == 65
    assert "is a path in the container" in result.stderr
    assert "--dataset sample.jsonl=" in result.stderr


def test_yaml_that_is_not_a_mapping(setup: Any) -> None:
    _, client, project, _ = setup
    (project / "train" / "configs" / "mini.yml").write_text("- just\n- a list\n")
    result = submit(client, project)
    assert result.returncode == 65
    assert "expected an Axolotl config (a YAML mapping), got list" in result.stderr


def test_a_yaml_bomb_is_refused_before_anything_is_read_further(setup: Any) -> None:
    """A config of a few hundred bytes whose aliases expand to a billion nodes is refused at
    once, as the agent refuses it, instead of being walked."""
    from tests.test_agent_limits import BOMB

    _, client, project, _ = setup
    (project / "train" / "configs" / "mini.yml").write_text(BOMB)
    result = client.run("submit", "train/configs/mini.yml", "--detach", cwd=project, timeout=30)
    assert result.returncode == 65
    assert "not valid YAML: too large: more than 100000 nodes" in result.stderr


def test_jsonl_line_that_is_not_json(setup: Any) -> None:
    """The problem's line number is in the error."""
    _, client, project, _ = setup
    dataset = project / "data" / "output" / "sample.jsonl"
    lines = dataset.read_text().splitlines()
    lines[2] = lines[2][:-5]  # cut the closing braces off line 3
    dataset.write_text("\n".join(lines) + "\n")
    result = submit(client, project)
    assert result.returncode == 65
    assert "sample.jsonl:3: not JSON: " in result.stderr


def test_tool_call_arguments_that_are_not_json(setup: Any) -> None:
    """Arguments as an object are what Axolotl takes too; a string that is not JSON is refused
    (Axolotl's json.loads would raise), naming the line and the field."""
    _, client, project, _ = setup
    dataset = project / "data" / "output" / "sample.jsonl"
    original = '"arguments": "{\\"name\\": \\"Ceiling Fan\\"}"'
    assert original in dataset.read_text()
    dataset.write_text(
        dataset.read_text().replace(original, '"arguments": {"name": "Ceiling Fan"}', 1)
    )
    accepted = client.run("check-dataset", str(dataset))
    assert accepted.returncode == 0, accepted.stdout
    dataset.write_text(
        dataset.read_text().replace(
            '"arguments": {"name": "Ceiling Fan"}', '"arguments": "{name: Ceiling Fan}"', 1
        )
    )
    config = project / "train" / "configs" / "mini.yml"
    result = client.run("check-dataset", "-a", str(config), str(dataset))
    assert result.returncode == 65
    assert (
        f"{dataset}:1: messages[2].tool_calls[0].function.arguments: not valid JSON"
        in result.stdout
    )
    refused = submit(client, project)
    assert refused.returncode == 65 and "function.arguments: not valid JSON" in refused.stderr


def test_missing_chat_template_file(setup: Any) -> None:
    """Axolotl would silently train on the path text as a template; the client refuses."""
    _, client, project, _ = setup
    write_config(project, {}, chat_template_jinja="../chat_templates/nope.jinja")
    result = submit(client, project)
    assert result.returncode == 65
    assert "chat_template_jinja: template file ../chat_templates/nope.jinja not found" in (
        result.stderr
    )


def test_unknown_host_alias(setup: Any) -> None:
    _, client, project, _ = setup
    result = submit(client, project, "--host", "nope")
    assert result.returncode == 65
    assert "unknown host 'nope': expected one of gpu1" in result.stderr


def test_changed_host_key_is_refused_with_both_fingerprints(setup: Any, sshd: Any) -> None:
    _, client, project, _ = setup
    keygen(client.home / "other")
    other = (client.home / "other.pub").read_text().split()
    known = client.home / "known_hosts"
    known.write_text(f"[127.0.0.1]:{sshd.port} {other[0]} {other[1]}\n")
    settings = yaml.safe_load(client.config.read_text())
    client.config.write_text(yaml.safe_dump({**settings, "known_hosts": str(known)}))
    result = submit(client, project)
    assert result.returncode == 77
    assert "CHANGED" in result.stderr and result.stderr.count("SHA256:") == 2
    assert "ssh-keygen -R" in result.stderr


def test_unknown_host_key_shows_the_fingerprint_and_how_to_accept_it(setup: Any) -> None:
    _, client, _project, _ = setup
    settings = yaml.safe_load(client.config.read_text())
    client.config.write_text(
        yaml.safe_dump({**settings, "known_hosts": str(client.home / "empty_known_hosts")})
    )
    result = client.run("hosts")
    assert result.returncode == 77
    assert "SHA256:" in result.stderr and "ssh-keyscan -p" in result.stderr


def test_unreachable_host_and_absent_agent_are_one_line_each(setup: Any, sshd: Any) -> None:
    _, client, project, _ = setup
    settings = yaml.safe_load(client.config.read_text())
    client.config.write_text(
        yaml.safe_dump({**settings, "hosts": {"gpu1": {"ssh": f"127.0.0.1:{free_port()}"}}})
    )
    result = submit(client, project)
    assert result.returncode == 69
    assert result.stderr.startswith("error: cannot reach 127.0.0.1")
    assert "Traceback" not in result.stderr

    client.config.write_text(
        yaml.safe_dump(
            {
                **settings,
                "hosts": {"gpu1": host_entry("hatrain-test", socket_path())},
            }
        )
    )
    result = submit(client, project)
    assert result.returncode == 69
    assert "no hatrain agent is listening" in result.stderr
    assert "systemctl start hatrain-agent" in result.stderr
