"""hatrain as a Python library: its public names, typed without Any, and the sweep example run
for real (client → sshd → agent → Axolotl on the CPU)."""

import inspect
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any

import hatrain.client
import pytest
import yaml

from tests.support.real_agent import local_axolotl_agent_config
from tests.test_end_to_end import demo_checkout

REPO = Path(__file__).resolve().parent.parent
PUBLIC = {
    "AgentRefused",
    "AmbiguousJobId",
    "AgentUnavailable",
    "AuthenticationFailed",
    "BadInput",
    "CancelResult",
    "Client",
    "ClientError",
    "Curves",
    "Event",
    "FetchReport",
    "Gpu",
    "GpuReading",
    "GpuUsage",
    "HostDown",
    "HostKeyRejected",
    "HostStatus",
    "HostUnreachable",
    "Job",
    "JobNotFound",
    "JobSpec",
    "JobState",
    "LogLine",
    "Metric",
    "Metrics",
    "NoSshKey",
    "Progress",
    "ProgressUpdate",
    "QueueSummary",
    "StateChange",
    "Submission",
    "UploadReport",
}


def _mentions_any(hint: object) -> bool:
    if hint is Any:
        return True
    return any(_mentions_any(arg) for arg in typing.get_args(hint))


def _public_callables() -> list[tuple[str, Any]]:
    found: list[tuple[str, Any]] = []
    for name in sorted(hatrain.client.__all__):
        value = getattr(hatrain.client, name)
        if not inspect.isclass(value):
            continue
        found.append((name, value))
        for attr, member in vars(value).items():
            if (callable(member) and not attr.startswith("_")) or attr == "__init__":
                found.append((f"{name}.{attr}", member))
            elif isinstance(member, property) and member.fget is not None:
                found.append((f"{name}.{attr}", member.fget))
    return found


def test_the_public_api_is_named_and_typed_without_any() -> None:
    """`hatrain.client` exports exactly its public names; every public class, method and
    property among them is fully annotated, and no annotation is (or holds) Any."""
    assert set(hatrain.client.__all__) == PUBLIC
    for name, member in _public_callables():
        if inspect.isclass(member):
            hints = typing.get_type_hints(member)  # dataclass fields, typed
        else:
            hints = typing.get_type_hints(member)
            parameters = [
                p
                for p in inspect.signature(member).parameters.values()
                if p.name not in ("self", "cls") and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
            ]
            missing = [p.name for p in parameters if p.name not in hints]
            assert not missing, f"{name}: parameters without a type: {missing}"
            assert "return" in hints, f"{name}: no return type"
        typed_any = [k for k, v in hints.items() if _mentions_any(v)]
        assert not typed_any, f"{name}: Any in {typed_any}"


def test_code_using_the_api_passes_mypy_strict() -> None:
    """The sweep example, written against the API only, passes mypy --strict."""
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", str(REPO / "examples" / "sweep.py")],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.axolotl
def test_the_sweep_example_trains_three_rates_and_plots_them(
    axolotl_venv: Path,
    start_agent: Any,
    client_for: Any,
    tiny_model: Path,
    tmp_path: Path,
) -> None:
    """examples/sweep.py submits the demo config at three learning rates through the library
    (to an agent running the real Axolotl from its virtualenv), waits for them, and draws
    their three loss curves into one PNG."""
    _, agent = start_agent(local_axolotl_agent_config(tmp_path / "data", axolotl_venv))
    client = client_for(agent.socket)
    checkout = demo_checkout(tmp_path / "checkout", tiny_model)
    config = checkout / "configs" / "demo" / "tiny-llama-cpu.yml"
    short = {**yaml.safe_load(config.read_text()), "max_steps": 8, "eval_steps": 4}
    config.write_text(yaml.safe_dump(short))
    png = tmp_path / "sweep.png"
    result = subprocess.run(
        [sys.executable, str(REPO / "examples" / "sweep.py"), str(config), "--out", str(png)],
        capture_output=True,
        text=True,
        cwd=checkout,
        env=client.env(),
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    finals = [line for line in result.stdout.splitlines() if "final loss" in line]
    assert [line.split(":")[0] for line in finals] == ["lr 0.001", "lr 0.003", "lr 0.01"]
    assert all("after 8 steps" in line for line in finals)
    assert len({line.split("final loss ")[1] for line in finals}) == 3, "three different runs"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert not list(config.parent.glob(".tiny-llama-cpu.lr-*")), "variants are removed"
