"""The client's tunnel relay ends quietly however a connection closes."""

import subprocess
import sys
from pathlib import Path

from tests.support.harness import socket_path
from tests.support.sshd import SshServer

REPO = Path(__file__).resolve().parent.parent


def test_closing_connections_prints_no_traceback(sshd: SshServer) -> None:
    """Relays over a real SSH connection, ended by the host's side (EOF), by the client's side in
    the middle of a read, by closing the SSH connection while they copy, and by the connection
    breaking under them: every scenario completes, nothing hangs, and stderr holds no
    traceback (such as `Exception in thread ... _relay ... EOFError`)."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.support.relay_closes",
            str(sshd.ssh_config),
            str(sshd.known_hosts),
            "hatrain-test",
            str(socket_path().parent.parent),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:-1] == [
        "remote-eof done",
        "local-close done",
        "connection-closed done",
        "connection-lost done",
    ]
    assert "Traceback" not in done.stderr and "Exception in thread" not in done.stderr, done.stderr
