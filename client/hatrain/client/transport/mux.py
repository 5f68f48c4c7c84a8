"""A host's SSH connection kept open between commands, like OpenSSH's ControlPersist.

A command that has connected to a host itself (verifying its key and logging in) starts
`python -m hatrain.client.transport.mux ALIAS` in the background. That process connects the
same way and relays gRPC to the agent through a Unix socket in a private directory, until it
has been idle for keep_connection_seconds or its connection drops. Later commands send their
calls through it and skip the SSH handshake and the import of paramiko. File transfers open a
connection of their own.
"""

import contextlib
import fcntl
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ..settings import ClientSettings, HostEntry, load_settings
from .opening import open_ssh


@dataclass(frozen=True)
class Shared:
    target: str  # a gRPC target


def _runtime_dir() -> Path | None:
    base = Path(os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir())
    path = base / f"hatrain-{os.getuid()}"
    try:
        path.mkdir(mode=0o700, exist_ok=True)
        info = path.stat()
    except OSError:
        return None
    if info.st_uid != os.getuid() or info.st_mode & 0o077:
        return None  # not private: never trust or create sockets there
    return path


def _socket_path(alias: str, entry: HostEntry, settings: ClientSettings) -> Path | None:
    directory = _runtime_dir()
    if directory is None:
        return None
    identity = json.dumps(
        [
            alias,
            entry.ssh,
            entry.agent,
            entry.bridge,
            str(settings.ssh_config),
            str(settings.known_hosts),
        ]
    )
    return directory / f"{hashlib.sha256(identity.encode()).hexdigest()[:16]}.sock"


def find(alias: str, entry: HostEntry, settings: ClientSettings) -> Shared | None:
    """The running shared connection to this host, if there is one."""
    path = _socket_path(alias, entry, settings)
    if settings.keep_connection_seconds <= 0 or path is None or not path.exists():
        return None
    try:
        info = json.loads(path.with_suffix(".json").read_text())
        os.kill(int(info["pid"]), 0)
    except (OSError, ValueError, KeyError):
        return None
    return Shared(f"unix:{path}")


def start(alias: str, settings: ClientSettings) -> None:
    """Start the shared connection in the background (it outlives this command)."""
    if settings.keep_connection_seconds <= 0 or settings.source is None:
        return
    env = {**os.environ, "HATRAIN_CLIENT_CONFIG": str(settings.source)}
    subprocess.Popen(
        [sys.executable, "-m", "hatrain.client.transport.mux", alias],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def serve(alias: str) -> int:
    settings = load_settings()
    alias, entry = settings.host(alias)
    path = _socket_path(alias, entry, settings)
    if path is None:
        return 1
    with path.with_suffix(".lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return 0  # another one serves this host
        ssh = open_ssh(entry.ssh, settings)
        from .tunnel import Tunnel

        path.unlink(missing_ok=True)
        tunnel = Tunnel(
            ssh.transport, entry.agent, entry.bridge_command(), alias, path, keep_spare=True
        )
        info = path.with_suffix(".json")
        info.write_text(json.dumps({"pid": os.getpid()}))
        try:
            while tunnel.idle_for() < settings.keep_connection_seconds:
                time.sleep(1)
                if not ssh.transport.is_active():
                    break
        except Exception:  # the connection dropped: stop sharing it
            pass
        finally:
            info.unlink(missing_ok=True)
            tunnel.close()
            with contextlib.suppress(Exception):
                ssh.close()
    return 0


if __name__ == "__main__":
    sys.exit(serve(sys.argv[1]))
