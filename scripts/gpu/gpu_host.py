"""The GPU host as a user meets it: an OpenSSH server, `hatrain-agent serve` with the `local`
runtime, and the real `hatrain-client` reaching the agent through SSH.

The host has no sshd and no network: the OpenSSH server comes with the bundle (bundle.sh), keys
are made here with `cryptography`, and it listens on loopback only.
"""

import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
# The host's Python, which holds torch; Axolotl and its wheels are on PYTHONPATH (AXOLOTL_SITE).
PYTHON = os.environ.get("HATRAIN_GPU_PYTHON", "/opt/torch/.venv/bin/python")
AXOLOTL_SITE = os.environ.get("HATRAIN_AXOLOTL_SITE", "/tmp/axsite")  # "": in PYTHON's own
# NVLink multicast stays off on shared hosts (see docs/gpu.md).
NO_MULTICAST = {
    "NCCL_NVLS_ENABLE": "0",
    "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1",
    "NVSHMEM_DISABLE_NVLS": "1",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited: {log.read_text(errors='replace')[-3000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port} after {timeout}s")


def _keypair(path: Path) -> str:
    """An Ed25519 key in OpenSSH's format; returns the public key line."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return public.decode()


def _ensure_privsep_user() -> None:
    """sshd drops privileges to the `sshd` user in /run/sshd."""
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    try:
        pwd.getpwnam("sshd")
    except KeyError:
        with open("/etc/passwd", "a", encoding="utf-8") as passwd:
            passwd.write("sshd:x:74:65534:privilege separation:/run/sshd:/usr/sbin/nologin\n")


@dataclass
class Sshd:
    root: Path
    port: int
    proc: subprocess.Popen[bytes]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def start_sshd(bundle: Path, root: Path) -> Sshd:
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o700)
    if not (root / "sshd" / "sshd").exists():
        with tarfile.open(bundle / "sshd.tar.xz") as tar:
            tar.extractall(root, filter="tar")
    _ensure_privsep_user()
    host_public = _keypair(root / "host_key")
    (root / "authorized_keys").write_text(_keypair(root / "user_key") + "\n")
    port = free_port()
    (root / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {root / 'host_key'}\n"
        f"PidFile {root / 'sshd.pid'}\nAuthorizedKeysFile {root / 'authorized_keys'}\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "PermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\n"
        "AllowTcpForwarding yes\nMaxSessions 64\nMaxStartups 64\n"
        "Subsystem sftp internal-sftp\n"
    )
    log = root / "sshd.log"
    proc = subprocess.Popen(
        [str(root / "sshd" / "sshd"), "-D", "-e", "-f", str(root / "sshd_config")],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "LD_LIBRARY_PATH": str(root / "sshd" / "lib")},
    )
    wait_for_port(port, proc, log, timeout=15)
    kind, body = host_public.split()[:2]
    (root / "known_hosts").write_text(f"[127.0.0.1]:{port} {kind} {body}\n")
    user = pwd.getpwuid(os.getuid()).pw_name
    (root / "ssh_config").write_text(
        f"Host gpu-host\n  HostName 127.0.0.1\n  Port {port}\n  User {user}\n"
        f"  IdentityFile {root / 'user_key'}\n"
    )
    return Sshd(root, port, proc)


def axolotl_venv(work: Path) -> Path:
    """What `local.venv` points at: bin/axolotl runs Axolotl from the carried site, first
    printing the GPUs the step sees (visible_gpus.py)."""
    venv = work / "axolotl-venv"
    (venv / "bin").mkdir(parents=True, exist_ok=True)
    axolotl = venv / "bin" / "axolotl"
    axolotl.write_text(
        f'#!/bin/sh\n{PYTHON} {HERE / "visible_gpus.py"}\nexec {PYTHON} -m axolotl.cli.main "$@"\n'
    )
    axolotl.chmod(0o755)
    return venv


def job_env(venv: Path) -> dict[str, str]:
    """The environment Axolotl runs with, by hand or through the agent (`local.env`)."""
    env = {
        **({"PYTHONPATH": AXOLOTL_SITE} if AXOLOTL_SITE else {}),
        # accelerate and torchrun come with the host's torch
        "PATH": f"{venv / 'bin'}:{Path(PYTHON).parent}:/usr/local/bin:/usr/bin:/bin",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        **NO_MULTICAST,
    }
    if "LD_LIBRARY_PATH" in os.environ:
        env["LD_LIBRARY_PATH"] = os.environ["LD_LIBRARY_PATH"]
    return env


@dataclass
class Agent:
    proc: subprocess.Popen[bytes]
    socket: Path
    data_root: Path
    log: Path

    def stop(self) -> str:
        """SIGTERM, as systemd stops it; SIGKILL after 30 s. Says which it took, and how long."""
        t0 = time.monotonic()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
            return f"exited {self.proc.returncode} {time.monotonic() - t0:.1f} s after SIGTERM"
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return "still running 30 s after SIGTERM: killed"


def start_agent(
    work: Path,
    venv: Path,
    sample_seconds: float,
    rehearse: bool = False,
    only_gpus: list[dict[str, Any]] | None = None,
) -> Agent:
    """The agent as an admin would set it up here; `rehearse`: two stand-in GPUs from a static
    list (no NVML), and torchrun, which also starts processes on a machine without GPU.
    `only_gpus`: these GPUs (as `hosts --json` lists them) from a static list, the others left
    to the caller."""
    sock = work / "run" / "agent.sock"
    data_root = work / "agent-data"
    config: dict[str, Any] = {
        "data_root": str(data_root),
        "listen": str(sock),
        "runtime": "local",
        "log_format": "console",
        "gpus": {"source": "nvml", "sample_seconds": sample_seconds},
        "local": {"venv": str(venv), "env": job_env(venv)},
    }
    if rehearse:
        stand_ins = [{"uuid": f"GPU-rehearsal-{i}", "name": "CPU stand-in"} for i in range(2)]
        config["gpus"] = {"source": "static", "static": stand_ins}
        config["multi_gpu"] = {"launcher": "torchrun"}
    if only_gpus:
        static = [{k: g[k] for k in ("uuid", "name", "memory_mb") if k in g} for g in only_gpus]
        config["gpus"] = {"source": "static", "static": static}
    (work / "agent.yml").write_text(yaml.safe_dump(config))
    log = work / "agent.log"
    proc = subprocess.Popen(
        [
            shutil.which("hatrain-agent") or "hatrain-agent",
            "serve",
            "--config",
            str(work / "agent.yml"),
        ],
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        env={**os.environ, **NO_MULTICAST},
    )
    deadline = time.monotonic() + 60
    while not sock.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the agent did not start: {log.read_text()[-2000:]}")
        time.sleep(0.1)
    return Agent(proc, sock, data_root, log)


class Client:
    """The real `hatrain-client`, configured for this host through its sshd."""

    def __init__(self, work: Path, sshd: Sshd, agent: Agent) -> None:
        home = work / "client"
        home.mkdir(parents=True, exist_ok=True)
        (home / "run").mkdir(mode=0o700, exist_ok=True)
        settings = {
            "default_host": "gpu1",
            "hosts": {
                "gpu1": {
                    "ssh": "gpu-host",
                    "agent": str(agent.socket),
                    "bridge": f"{shutil.which('hatrain-agent') or 'hatrain-agent'} bridge",
                }
            },
            "ssh_config": str(sshd.root / "ssh_config"),
            "known_hosts": str(sshd.root / "known_hosts"),
            "cache_dir": str(home / "cache"),
            "keep_connection_seconds": 120,
        }
        (home / "client.yml").write_text(yaml.safe_dump(settings))
        self.env = {
            **{k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"},
            "HATRAIN_CLIENT_CONFIG": str(home / "client.yml"),
            "XDG_RUNTIME_DIR": str(home / "run"),
            "COLUMNS": "200",
        }
        self.command = shutil.which("hatrain-client") or "hatrain-client"

    def run(self, *args: str, check: bool = True) -> str:
        result = subprocess.run(
            [self.command, *args], env=self.env, capture_output=True, text=True, check=False
        )
        if check and result.returncode:
            raise RuntimeError(
                f"hatrain-client {' '.join(args)} exited {result.returncode}: "
                f"{result.stderr[-2000:]}{result.stdout[-2000:]}"
            )
        return result.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "--json"))

    def events(self, job_id: str) -> list[dict[str, Any]]:
        """Every event of the job, as `watch --json` prints them, each `time` (ISO-8601 there)
        as seconds since the epoch."""
        text = self.run("watch", job_id, "--json", check=False)  # exits with the job's code
        events = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
        for event in events:
            event["time"] = epoch(event["time"])
        return events


def epoch(moment: str | None) -> float | None:
    """An ISO-8601 time of the client's JSON as seconds since the epoch (None stays None)."""
    import datetime

    return None if moment is None else datetime.datetime.fromisoformat(moment).timestamp()


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
