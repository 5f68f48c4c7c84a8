"""A Docker engine of a test's own, to restart under running jobs.

A real dockerd with its own data root, exec root (and the containerd it manages) and socket,
started in a network namespace of its own so that its bridge never touches the host engine's.
Other tests keep using the host's engine undisturbed.
"""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker

from tests.support.harness import poll
from tests.support.images import ensure_test_image


@dataclass
class Engine:
    root: Path
    netns: str
    live_restore: bool
    proc: subprocess.Popen[bytes] | None = None

    @property
    def socket(self) -> Path:
        return self.root / "docker.sock"

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def client(self) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.url, timeout=60)

    def start(self) -> None:
        (self.root / "daemon.json").write_text(json.dumps({"live-restore": self.live_restore}))
        log = (self.root / "dockerd.log").open("ab")
        self.proc = subprocess.Popen(
            [
                "nsenter",
                f"--net=/run/netns/{self.netns}",
                "dockerd",
                "--config-file",
                str(self.root / "daemon.json"),
                "--data-root",
                str(self.root / "data"),
                "--exec-root",
                str(self.root / "exec"),
                "--pidfile",
                str(self.root / "docker.pid"),
                "-H",
                self.url,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

        def answers() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                tail = (self.root / "dockerd.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"dockerd exited: {tail}")
            try:
                self.client().ping()
            except Exception:
                return False
            return True

        poll(answers, 60, "the test's own dockerd to answer", every=0.2)

    def stop(self) -> None:
        """Stop dockerd as `systemctl stop docker` does (SIGTERM), and wait until it is gone."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


def _netns(name: str) -> None:
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    subprocess.run(
        ["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"],
        check=True,
        capture_output=True,
    )


@contextlib.contextmanager
def own_engine(live_restore: bool) -> Iterator[Engine]:
    """A running engine with the test image in it; everything it made is removed afterwards.

    Its directory is short and under /tmp: containerd's socket lies in it, and a Unix socket's
    path may not be longer than 107 bytes."""
    root = Path(tempfile.mkdtemp(prefix="hte-", dir="/tmp"))
    engine = Engine(root, f"hatrain-{uuid.uuid4().hex[:8]}", live_restore)
    _netns(engine.netns)
    try:
        engine.start()
        ensure_test_image(engine.client())
        yield engine
    finally:
        with contextlib.suppress(Exception):
            client = engine.client()
            for container in client.containers.list(all=True):
                container.remove(force=True)
        if engine.proc is not None:
            with contextlib.suppress(Exception):
                engine.stop()
        _kill_leftovers(root)
        subprocess.run(["ip", "netns", "delete", engine.netns], check=False, capture_output=True)
        subprocess.run(["umount", "-R", "-l", str(root / "data")], check=False, capture_output=True)
        subprocess.run(["umount", "-R", "-l", str(root / "exec")], check=False, capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def _kill_leftovers(root: Path) -> None:
    """The containerd and shims this engine started (found by its exec root in their args)."""
    marker = str(root / "exec")
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if marker in cmdline and "dockerd" not in cmdline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
