"""Runs the real `hatrain-client` command as a user would, against a configured host."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.support.sshd import SshServer

CLIENT = str(Path(sys.executable).parent / "hatrain-client")
# What the client runs over SSH: the project's own `hatrain-agent bridge`.
BRIDGE = f"{Path(sys.executable).parent / 'hatrain-agent'} bridge"


def host_entry(ssh: str, agent_socket: Path, bridge: str = BRIDGE) -> dict[str, str]:
    """A host of the client config: its SSH target, the agent's socket and the bridge."""
    return {"ssh": ssh, "agent": str(agent_socket), "bridge": bridge}


# Restores SIGINT's default, then becomes the client (exec keeps that disposition). Not done with
# preexec_fn: running Python between fork and exec can deadlock a process that has gRPC threads.
_FOREGROUND = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execv(sys.argv[1], sys.argv[1:])"
)


@dataclass
class ClientRunner:
    home: Path
    config: Path

    @classmethod
    def configure(
        cls, home: Path, sshd: SshServer, agent_socket: Path, **overrides: Any
    ) -> "ClientRunner":
        home.mkdir(parents=True, exist_ok=True)
        settings = {
            "default_host": "gpu1",
            "hosts": {"gpu1": host_entry("hatrain-test", agent_socket)},
            "ssh_config": str(sshd.ssh_config),
            "known_hosts": str(sshd.known_hosts),
            "cache_dir": str(home / "cache"),
            "keep_connection_seconds": 0,  # each command its own connection, unless a test asks
            **overrides,
        }
        config = home / "client.yml"
        config.write_text(yaml.safe_dump(settings))
        return cls(home, config)

    @property
    def runtime_dir(self) -> Path:
        """Its $XDG_RUNTIME_DIR: private, and short (the shared connection's socket lies in it,
        and a Unix socket's path may not be longer than 107 bytes)."""
        name = hashlib.sha256(str(self.home).encode()).hexdigest()[:12]
        path = Path(tempfile.gettempdir()) / f"hatrain-run-{name}"
        path.mkdir(mode=0o700, exist_ok=True)
        return path

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
        return {
            **env,
            "HATRAIN_CLIENT_CONFIG": str(self.config),
            "COLUMNS": "200",
            "XDG_RUNTIME_DIR": str(self.runtime_dir),
        }

    def run(
        self,
        *args: str,
        cwd: Path | None = None,
        timeout: float = 300,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """The client with these arguments; env: variables to set (or, as None values, to
        unset) on top of its own."""
        merged = {**self.env(), **(env or {})}
        return subprocess.run(
            [CLIENT, *args],
            capture_output=True,
            text=True,
            env={k: v for k, v in merged.items() if v is not None},
            cwd=cwd,
            timeout=timeout,
            check=False,
        )

    def json(self, *args: str, cwd: Path | None = None) -> Any:
        result = self.run(*args, "--json", cwd=cwd)
        assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
        return json.loads(result.stdout)

    def start(self, *args: str, cwd: Path | None = None) -> subprocess.Popen[str]:
        """The client as a terminal's foreground process: Ctrl-C (SIGINT) reaches it even when
        the tests themselves run in the background, where the shell ignores SIGINT."""
        return subprocess.Popen(
            [sys.executable, "-c", _FOREGROUND, CLIENT, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env(),
            cwd=cwd,
        )

    @staticmethod
    def interrupt(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        return proc.returncode, out, err
