"""`hatrain-agent doctor`: is this host ready to run jobs? One line per check, with the fix."""

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import AgentConfig
from .disk import human_bytes
from .errors import ConfigError, FailedPrecondition
from .gpus import discover
from .listener import prepare_runtime_dir


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    # Not a failure, but something the admin should change.
    warn: bool = False


def _docker(config: AgentConfig) -> list[Check]:
    try:
        import docker

        client = (
            docker.DockerClient(base_url=config.docker.host, timeout=10)
            if config.docker.host
            else docker.from_env(timeout=10)
        )
        info = client.info()
    except Exception as exc:
        return [Check("docker", False, f"cannot reach the Docker engine ({exc}); start dockerd")]
    checks = [Check("docker", True, f"engine {info.get('ServerVersion', '?')}")]
    nvidia = "nvidia" in (info.get("Runtimes") or {}) or bool(
        shutil.which("nvidia-container-runtime-hook")
    )
    checks.append(
        Check(
            "nvidia runtime",
            nvidia,
            "found" if nvidia else "not found: install the NVIDIA Container Toolkit for GPU jobs",
        )
    )
    live_restore = bool(info.get("LiveRestoreEnabled"))
    checks.append(
        Check(
            "live restore",
            True,
            "on: running jobs survive an engine restart"
            if live_restore
            else 'off: an engine restart stops running jobs (they fail as "container lost"); '
            'set "live-restore": true in /etc/docker/daemon.json to keep them',
        )
    )
    missing = [i for i in config.docker.allowed_images if not client.images.list(name=i)]
    present = [i for i in config.docker.allowed_images if i not in missing]
    if present:
        checks.append(_log_rotation(client, present[0]))
    checks.append(
        Check(
            "images",
            True,
            "all allowed images are present"
            if not missing
            else f"will be pulled on first use: {', '.join(missing)}",
        )
    )
    return checks


def _log_rotation(client: Any, image: str) -> Check:
    """After a restart, the agent resumes a running step's log by the bytes it has read, from
    Docker's log of the step; rotation that drops the log's start would make it skip lines."""
    container = client.api.create_container(image, command=["true"])
    try:
        log_config = client.api.inspect_container(container)["HostConfig"]["LogConfig"]
    finally:
        client.api.remove_container(container, force=True)
    driver, options = log_config.get("Type", "?"), log_config.get("Config") or {}
    rotates = "max-size" in options or driver not in ("json-file", "journald")
    detail = f"{driver} {options or ''}".strip()
    if rotates:
        detail += (
            ": rotated; a step whose output outgrows it may lose lines if the agent restarts "
            "mid-step (json-file without max-size keeps the whole log)"
        )
    else:
        detail += ": keeps each step's whole log, so a restart resumes it exactly"
    return Check("container logs", True, detail)


def _data_root(config: AgentConfig) -> Check:
    root = config.data_root
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=root):
            pass
    except OSError as exc:
        return Check("data root", False, f"{root} is not writable: {exc.strerror}")
    free = shutil.disk_usage(root).free
    high = config.retention.refuse_uploads_below
    detail = f"{root}, {human_bytes(free)} free"
    if free < high:
        return Check(
            "data root",
            False,
            f"{detail}: below retention.refuse_uploads_below ({human_bytes(high)}), so uploads "
            "are refused (and starts held below hold_starts_below); `hatrain-agent gc --dry-run` "
            "lists what has expired",
        )
    return Check("data root", True, f"{detail} (uploads refused below {human_bytes(high)})")


def _data_root_mount(config: AgentConfig) -> Check:
    """Jobs write their run directories under the data root as their users. On a filesystem
    that honours setuid bits and device nodes, a file a job left there is one step from being
    used on the host; nosuid,nodev takes that step away whatever a job manages to write."""
    try:
        flags = os.statvfs(config.data_root).f_flag
    except OSError as exc:
        return Check("data root mount", False, f"{config.data_root}: {exc.strerror}")
    missing = [
        name
        for name, flag in (("nosuid", os.ST_NOSUID), ("nodev", os.ST_NODEV))
        if not flags & flag
    ]
    if not missing:
        return Check("data root mount", True, "nosuid,nodev")
    return Check(
        "data root mount",
        True,
        f"{config.data_root} is on a filesystem mounted without {','.join(missing)}: a setuid "
        "file or device node a job leaves in its run directory would work on this host; mount "
        "the data root with nosuid,nodev (e.g. its own filesystem, or a bind mount in fstab: "
        f"{config.data_root} {config.data_root} none bind,nosuid,nodev 0 0)",
        warn=True,
    )


def _socket(config: AgentConfig) -> Check:
    """The agent's socket. A running agent that answers is the healthy case, not a conflict;
    with none running, the socket's directory must be one nobody else can squat."""
    path = config.listen
    if path.exists():
        answer = _ask_agent(path)
        if answer is not None:
            return answer
    if path.parent.exists():
        try:
            prepare_runtime_dir(path.parent)
        except ConfigError as exc:
            return Check("socket", False, str(exc))
    if not path.exists():
        return Check(
            "socket",
            True,
            f"{path}: no agent running; it will listen there once started "
            "(sudo systemctl start hatrain-agent)",
        )
    return Check(
        "socket",
        False,
        f"{path} exists but no agent answers on it; start the agent (sudo systemctl start "
        "hatrain-agent): it replaces a stale socket",
    )


def _ask_agent(path: Path) -> Check | None:
    """The running agent's health and its own description of itself, asked through the socket
    as a client would; None when nothing answers there."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from hatrain.rpc.v1 import agent_pb2 as pb
    from hatrain.rpc.v1 import agent_pb2_grpc as pb_grpc

    try:
        with grpc.insecure_channel(f"unix:{path}") as channel:
            health = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
            if health.status != health_pb2.HealthCheckResponse.SERVING:
                return Check(
                    "socket",
                    False,
                    f"{path}: the agent answers but is not serving (health {health.status}); "
                    "see its log: journalctl -u hatrain-agent",
                )
            info = pb_grpc.AgentServiceStub(channel).GetAgentInfo(  # type: ignore[no-untyped-call]
                pb.GetAgentInfoRequest(), timeout=5
            )
    except grpc.RpcError:
        return None
    return Check(
        "agent",
        True,
        f"running and answering on {path}: hatrain-agent {info.agent_version}, runtime "
        f"{info.runtime}, {len(info.gpus)} GPU(s), {info.queue.queued} queued, "
        f"{info.queue.running} running",
    )


def _team(config: AgentConfig) -> Check | None:
    """The team queue's database: reachable, writable, its schema, and this host in it."""
    if config.team is None:
        return None
    import psycopg

    name = config.team.host
    try:
        with psycopg.connect(config.team.database, connect_timeout=5, autocommit=True) as conn:
            where = f"{conn.info.host}:{conn.info.port}"
            recovery = conn.execute("SELECT pg_is_in_recovery()").fetchone()
            if recovery and recovery[0]:
                return Check(
                    "team queue",
                    False,
                    f"the team database at {where} is a standby (read-only): add "
                    "target_session_attrs=read-write to team.database, with every server listed",
                )
            schema = conn.execute("SELECT to_regclass('team_meta') IS NOT NULL").fetchone()
            if not (schema and schema[0]):
                return Check(
                    "team queue",
                    True,
                    f"database at {where} writable; no tables yet (the first agent creates them)",
                )
            version = conn.execute(
                "SELECT value FROM team_meta WHERE key = 'schema_version'"
            ).fetchone()
            me = conn.execute(
                "SELECT state, epoch, extract(epoch FROM now() - heartbeat_at) FROM team_hosts "
                "WHERE name = %s",
                (name,),
            ).fetchone()
            up = conn.execute("SELECT count(*) FROM team_hosts WHERE state = 'up'").fetchone()
    except psycopg.Error as exc:
        return Check(
            "team queue",
            False,
            f"cannot use the team database (team.database): {str(exc).strip()[:200]}; check "
            "the connection string and that the server lets this host in",
        )
    schema_text = f"schema {version[0] if version else '?'}"
    if me is None:
        host = f"{name} not registered yet (it joins when the agent starts)"
    else:
        host = f"{name} {me[0]}, heartbeat {float(me[2]):.1f} s ago, epoch {me[1]}"
    return Check(
        "team queue",
        True,
        f"database at {where} writable, {schema_text}; {host}; {up[0] if up else 0} host(s) up",
    )


def tensorboard_check(config: AgentConfig) -> Check:
    """`hatrain-client tensorboard` needs a Python with TensorBoard; a venv the admin named
    that has none is a failure, no venv at all only leaves the command unavailable."""
    from .tensorboard_plan import tensorboard_python, tensorboard_version

    try:
        python = tensorboard_python(config)
        version = tensorboard_version(python)
    except FailedPrecondition as exc:
        return Check("tensorboard", config.tensorboard.venv is None, f"unavailable: {exc}")
    return Check("tensorboard", True, f"TensorBoard {version} from {python}")


def run_checks(config: AgentConfig) -> list[Check]:
    checks: list[Check] = []
    checks += _docker(config)
    try:
        gpus, source = discover(config.gpus)
        names = ", ".join(sorted({g.name for g in gpus})) or "none (CPU jobs only)"
        checks.append(Check("gpus", True, f"{len(gpus)} from {source}: {names}"))
    except Exception as exc:
        checks.append(Check("gpus", False, str(exc)))
    checks.append(_data_root(config))
    checks.append(_data_root_mount(config))
    checks.append(_socket(config))
    team = _team(config)
    if team is not None:
        checks.append(team)
    checks.append(tensorboard_check(config))
    return checks
