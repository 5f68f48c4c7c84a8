"""What the kernel-checked identity costs a user: the same commands against this version and
against the last version before it (SSH direct-tcpip to a loopback TCP listener, the user taken
from gRPC metadata), side by side, interleaved, over one real sshd and one Docker engine.

    python bench/identity_cost.py [--before REV] [--rounds 5]

1. the first call of a command: `hatrain-client hosts` with a new SSH login each time
2. submit until the job's container starts, through the shared connection (as by default)

Each is the median of the rounds, as a ratio of this version to the one before (target <= 1.2).
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import docker
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.client_bench import start_times  # noqa: E402
from tests.support.harness import free_port, poll, socket_path  # noqa: E402
from tests.support.images import ensure_test_image, python_mounts  # noqa: E402
from tests.support.sshd import SshServer, start_sshd  # noqa: E402

# `axolotl` for these jobs: preprocess succeeds at once, train sleeps until it is cancelled.
SLEEPER = (
    "#!/bin/sh\n"
    'if [ "$1" = preprocess ]; then echo "Success! Preprocessed data path: x"; exit 0; fi\n'
    "exec sleep 100000\n"
)
IDENTITY_COMMIT = "Identity from the kernel"


def before_revision() -> str:
    """The last commit before the identity change."""
    found = subprocess.run(
        ["git", "-C", str(REPO), "log", "-1", "--format=%H", f"--grep=^{IDENTITY_COMMIT}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if not found:
        raise SystemExit("no identity commit in this checkout's history: pass --before REV")
    return f"{found}^"


def checkout(rev: str, where: Path) -> Path:
    """That revision in a worktree of its own with a virtualenv of its own (reused)."""
    sha = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", rev], capture_output=True, text=True, check=True
    ).stdout.strip()
    tree = where / sha[:12]
    if not (tree / ".venv" / "bin" / "hatrain-client").exists():
        subprocess.run(["rm", "-rf", str(tree)], check=True)
        subprocess.run(
            ["git", "-C", str(REPO), "worktree", "add", "--detach", "-f", str(tree), sha],
            check=True,
            capture_output=True,
        )
        subprocess.run([sys.executable, "-m", "venv", str(tree / ".venv")], check=True)
        subprocess.run(
            [str(tree / ".venv" / "bin" / "pip"), "install", "-q", "-e", str(tree)],
            check=True,
        )
    return tree


class Version:
    """One version's agent (a process) and client, over the shared sshd."""

    def __init__(self, label: str, tree: Path, work: Path, sshd: SshServer, image: str) -> None:
        self.label = label
        self.bin = tree / ".venv" / "bin"
        work.mkdir(parents=True)
        bindir = work / "bin"
        bindir.mkdir()
        (bindir / "axolotl").write_text(SLEEPER)
        (bindir / "axolotl").chmod(0o755)
        work.chmod(0o755)
        new = (tree / "agent/hatrain/agent/listener.py").exists()
        sock = socket_path()
        listen = str(sock) if new else f"127.0.0.1:{free_port()}"
        config = {
            "data_root": str(work / "data"),
            "listen": listen,
            "log_format": "console",
            "scheduler": {"max_cpu_jobs": 64},
            "docker": {
                "allowed_images": [image],
                "default_image": image,
                "pull_missing": False,
                "stop_grace_seconds": 1,
                "extra_mounts": python_mounts(bindir),
                "env": {"PATH": f"{bindir}:/usr/bin:/bin"},
            },
        }
        (work / "agent.yml").write_text(yaml.safe_dump(config))
        self.agent = subprocess.Popen(
            [str(self.bin / "hatrain-agent"), "serve", "--config", str(work / "agent.yml")],
            stderr=(work / "agent.log").open("wb"),
        )
        host: dict[str, Any] = {"ssh": "hatrain-test", "agent": listen}
        if new:
            host["bridge"] = f"{self.bin / 'hatrain-agent'} bridge"
        self.project = work / "project"
        self.project.mkdir()
        (self.project / "tiny.yml").write_text(
            yaml.safe_dump({"output_dir": "/workspace/data/training-runs/tiny"})
        )
        self.envs = {}
        for mode, keep in (("cold", 0), ("shared", 60)):
            home = work / f"client-{mode}"
            home.mkdir()
            run = Path(tempfile.mkdtemp(prefix="hib-run-"))
            (home / "client.yml").write_text(
                yaml.safe_dump(
                    {
                        "default_host": "gpu1",
                        "hosts": {"gpu1": host},
                        "ssh_config": str(sshd.ssh_config),
                        "known_hosts": str(sshd.known_hosts),
                        "cache_dir": str(home / "cache"),
                        "keep_connection_seconds": keep,
                    }
                )
            )
            self.envs[mode] = {
                **{k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"},
                "HATRAIN_CLIENT_CONFIG": str(home / "client.yml"),
                "XDG_RUNTIME_DIR": str(run),
            }
        poll(lambda: self.client("cold", "hosts").returncode == 0, 60, f"{label}'s agent")
        self.client("shared", "hosts")  # leaves the shared connection running

    def client(self, mode: str, *args: str) -> "subprocess.CompletedProcess[str]":
        return subprocess.run(
            [str(self.bin / "hatrain-client"), *args],
            capture_output=True,
            text=True,
            env=self.envs[mode],
            cwd=self.project,
            timeout=120,
            check=False,
        )

    def first_call(self) -> float:
        started = time.perf_counter()
        result = self.client("cold", "hosts", "--json")
        assert result.returncode == 0, result.stderr
        return time.perf_counter() - started

    def submit_to_start(self, engine: docker.DockerClient) -> float:
        begin = time.time()
        result = self.client("shared", "submit", "tiny.yml", "--detach", "--json")
        assert result.returncode == 0, result.stderr
        job_id = yaml.safe_load(result.stdout)["id"]
        name = f"hatrain-{job_id}-preprocess"
        started = poll(
            lambda: start_times(engine, begin, time.time()).get(name), 60, f"{name} to start"
        )
        return float(started) - begin

    def stop(self) -> None:
        self.agent.terminate()
        self.agent.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--before", help="the version to compare with (default: the last commit "
                        "before the identity change)")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    engine = docker.from_env()
    image = ensure_test_image(engine)
    work = Path(tempfile.mkdtemp(prefix="hatrain-bench-identity-"))
    before_tree = checkout(args.before or before_revision(), Path(tempfile.gettempdir()))
    sshd = start_sshd(work / "sshd")
    versions = [
        Version("before", before_tree, work / "before", sshd, image),
        Version("now", REPO, work / "now", sshd, image),
    ]
    try:
        first: dict[str, list[float]] = {v.label: [] for v in versions}
        start: dict[str, list[float]] = {v.label: [] for v in versions}
        for round_ in range(args.rounds):
            for version in versions if round_ % 2 == 0 else versions[::-1]:
                first[version.label].append(version.first_call())
                start[version.label].append(version.submit_to_start(engine))
    finally:
        for version in versions:
            version.stop()
        sshd.stop()
        for container in engine.containers.list(all=True, filters={"label": "hatrain.job"}):
            if any(str(work) in str(m.get("Source")) for m in container.attrs["Mounts"]):
                container.remove(force=True)
    for what, samples in (("first call (a new SSH login)", first), ("submit -> start", start)):
        before, now = (statistics.median(samples[k]) for k in ("before", "now"))
        print(
            f"{what}: now {now * 1000:.0f} ms (range {min(samples['now']) * 1000:.0f}-"
            f"{max(samples['now']) * 1000:.0f}), before {before * 1000:.0f} ms "
            f"({min(samples['before']) * 1000:.0f}-{max(samples['before']) * 1000:.0f}); "
            f"ratio {now / before:.2f} (target <= 1.2)"
        )


if __name__ == "__main__":
    main()
