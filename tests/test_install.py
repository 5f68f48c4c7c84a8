"""The README's install commands, run as they are written there, into fresh virtualenvs.

The laptop's commands run in this checkout (the clone) with a home of the test's own. The wheel
is built with `make dist` and copied with the real `scp` through a real sshd; the GPU host's
command then installs it into a fresh virtualenv. What a test cannot do as written is named in
SUBSTITUTED: the host's /opt and /tmp become directories of the test's own, and scp is given
the test sshd's config. pip fetches the dependencies from PyPI (through pip's cache).
"""

import os
import re
import subprocess
import sys
from pathlib import Path

from hatrain.rpc import __version__

from tests.support.sshd import SshServer

REPO = Path(__file__).resolve().parent.parent


def readme_block(name: str) -> str:
    """The fenced block after `<!-- install: NAME -->` in the README."""
    text = (REPO / "README.md").read_text()
    found = re.search(rf"<!-- install: {name} -->\n```\n(.*?)```", text, re.S)
    assert found, f"README.md has no install block {name!r}"
    return found.group(1)


def run_block(block: str, cwd: Path, env: dict[str, str]) -> None:
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, (block, result.stdout[-3000:], result.stderr[-3000:])


def _env(home: Path) -> dict[str, str]:
    """A user's shell: their own home, no virtualenv active, pip's cache kept."""
    cache = Path(os.environ.get("PIP_CACHE_DIR", Path.home() / ".cache" / "pip"))
    python = Path(sys.executable).resolve().parent  # a python3 with venv, as on the hosts
    return {
        "HOME": str(home),
        "PATH": f"{home / '.local' / 'bin'}:{python}:/usr/local/bin:/usr/bin:/bin",
        "PIP_CACHE_DIR": str(cache),
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "LANG": "C.UTF-8",
    }


def _version(command: Path) -> str:
    out = subprocess.run([str(command), "--version"], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_the_laptop_install_from_a_clone_works_as_written(tmp_path: Path) -> None:
    """`pip install .` into a fresh venv under a fresh home gives a `hatrain-client` on the
    PATH that runs: its version, and its help."""
    home = tmp_path / "home"
    home.mkdir()
    env = _env(home)
    run_block(readme_block("laptop"), REPO, env)
    client = home / ".local" / "bin" / "hatrain-client"
    assert _version(client) == f"hatrain-client, version {__version__}"
    helped = subprocess.run(
        ["hatrain-client", "--help"], capture_output=True, text=True, env=env, check=False
    )
    assert helped.returncode == 0 and "Examples:" in helped.stdout, helped.stderr
    installed = home / ".local" / "share" / "hatrain"
    assert (installed / "bin" / "hatrain-agent").exists()
    site = next((installed / "lib").glob("python3*/site-packages"))
    assert not (site / "hatrain" / "client" / "cli.py").is_symlink()
    assert (site / "hatrain" / "client" / "cli.py").read_text() == (
        REPO / "client" / "hatrain" / "client" / "cli.py"
    ).read_text()


def test_the_gpu_host_install_from_a_copied_wheel_works_as_written(
    tmp_path: Path, sshd: SshServer
) -> None:
    """`make dist` builds the wheel, `scp` copies it (with the agent's config and unit) to the
    host, and the host's command installs it into a fresh venv: `hatrain-agent` and its bridge
    run from there."""
    home = tmp_path / "home"
    home.mkdir()
    env = _env(home)
    host_tmp, host_opt = tmp_path / "host-tmp", tmp_path / "host-opt"
    host_tmp.mkdir()
    ssh = f"-F {sshd.ssh_config} -o UserKnownHostsFile={sshd.known_hosts} -o BatchMode=yes"
    substituted = {
        "scp ": f"scp {ssh} ",
        "gpu1:/tmp/": f"hatrain-test:{host_tmp}/",
        "/tmp/": f"{host_tmp}/",
        "/opt/hatrain": str(host_opt / "hatrain"),
    }
    laptop = readme_block("wheel")
    for old, new in list(substituted.items())[:2]:
        laptop = laptop.replace(old, new)
    run_block(laptop, REPO, env)
    assert sorted(p.name for p in host_tmp.iterdir()) == [
        "agent.yml",
        f"hatrain-{__version__}-py3-none-any.whl",
        "hatrain-agent.service",
    ]

    host = readme_block("gpu-host")
    for old, new in list(substituted.items())[2:]:
        host = host.replace(old, new)
    run_block(host, home, env)
    venv = host_opt / "hatrain" / "venv" / "bin"
    assert _version(venv / "hatrain-agent") == f"hatrain-agent, version {__version__}"
    assert _version(venv / "hatrain-client") == f"hatrain-client, version {__version__}"
    bridge = subprocess.run(
        [str(venv / "hatrain-agent"), "bridge", "--socket", str(tmp_path / "none.sock")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bridge.returncode == 69
    assert bridge.stderr.startswith(f"no hatrain agent is listening at {tmp_path / 'none.sock'}")
