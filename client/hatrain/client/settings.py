"""The client config: which hosts the team has and how to reach each one.

Found at $HATRAIN_CLIENT_CONFIG, else $XDG_CONFIG_HOME/hatrain/client.yml (~/.config/...).

    default_host: gpu1
    hosts:
      gpu1:
        ssh: alice@gpu1.example.com   # or a Host alias from ~/.ssh/config, or user@host:port
        agent: 127.0.0.1:50151        # the agent's listener as seen on that host

Validated by hand rather than with pydantic: this runs at every CLI start, and building pydantic
models costs a quarter of the 0.3 s a re-submit may take.
"""

import os
import shlex
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from hatrain.rpc.config_yaml import ConfigYamlError, load_yaml_mapping

from .errors import BadInput

DEFAULT_AGENT = "/run/hatrain/agent.sock"
DEFAULT_BRIDGE = "hatrain-agent bridge"


class _Invalid(ValueError):
    def __init__(self, where: str, expected: str) -> None:
        super().__init__(f"{where}: expected {expected}")


def _agent_socket(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.startswith("/"):
        raise _Invalid(
            where,
            f"the path of the agent's socket on the host, e.g. {DEFAULT_AGENT}, got {value!r} "
            "(the agent listens on no TCP port: it is reached through your SSH login)",
        )
    return value


@dataclass(frozen=True)
class HostEntry:
    ssh: str
    agent: str = DEFAULT_AGENT  # the agent's socket on that host
    bridge: str = DEFAULT_BRIDGE  # the command, run over SSH, that connects to it

    def bridge_command(self) -> str:
        """What runs over SSH: the login's shell execs the bridge (no shell stays behind)."""
        return f"exec {self.bridge} --socket {shlex.quote(self.agent)}"

    def agent_command(self, *args: str) -> str:
        """`hatrain-agent ARGS…` over SSH: the bridge's command with another verb."""
        program = self.bridge.rsplit(" bridge", 1)[0] if " bridge" in self.bridge else self.bridge
        return f"exec {program} {shlex.join(args)}"

    @classmethod
    def parse(cls, raw: Any, where: str) -> "HostEntry":
        if isinstance(raw, str):
            raw = {"ssh": raw}
        if not isinstance(raw, dict):
            raise _Invalid(where, "a mapping with ssh:, agent: and bridge:")
        unknown = set(raw) - {"ssh", "agent", "bridge"}
        if unknown:
            raise _Invalid(f"{where}.{sorted(unknown)[0]}", "only ssh, agent and bridge")
        ssh = raw.get("ssh")
        if not isinstance(ssh, str) or not ssh:
            raise _Invalid(f"{where}.ssh", "user@host[:port] or a Host alias from ~/.ssh/config")
        bridge = raw.get("bridge", DEFAULT_BRIDGE)
        if not isinstance(bridge, str) or not bridge.strip():
            raise _Invalid(
                f"{where}.bridge", "a command, e.g. /opt/hatrain/venv/bin/hatrain-agent bridge"
            )
        agent = _agent_socket(raw.get("agent", DEFAULT_AGENT), f"{where}.agent")
        return cls(ssh, agent, bridge)


@dataclass(frozen=True)
class ClientSettings:
    default_host: str = ""
    hosts: dict[str, HostEntry] = field(default_factory=dict)
    ssh_config: Path = Path("~/.ssh/config")
    known_hosts: Path = Path("~/.ssh/known_hosts")
    # Host keys the host's admins vouch for, read as OpenSSH reads them.
    system_known_hosts: Path = Path("/etc/ssh/ssh_known_hosts")
    keepalive_seconds: int = 15
    connect_timeout_seconds: float = 10.0
    # Keep a host's SSH connection open this long after the last command (0: never).
    keep_connection_seconds: float = 600.0
    # Submit to the team queue by default (submit --team-queue / --own-queue decides per job).
    team_queue: bool = False
    cache_dir: Path = Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")) / "hatrain"
    source: Path | None = None  # the file these settings came from

    @classmethod
    def parse(cls, raw: dict[str, Any]) -> "ClientSettings":
        known = {f.name for f in fields(cls)} - {"source"}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise _Invalid(unknown[0], f"one of {', '.join(sorted(known))}")
        hosts_raw = raw.get("hosts") or {}
        if not isinstance(hosts_raw, dict):
            raise _Invalid("hosts", "a mapping of alias: {ssh, agent}")
        hosts = {str(k): HostEntry.parse(v, f"hosts.{k}") for k, v in hosts_raw.items()}
        values: dict[str, Any] = {"hosts": hosts}
        for name in ("default_host",):
            if name in raw:
                if not isinstance(raw[name], str):
                    raise _Invalid(name, "a host alias")
                values[name] = raw[name]
        for name in ("ssh_config", "known_hosts", "system_known_hosts", "cache_dir"):
            if name in raw:
                if not isinstance(raw[name], str) or not raw[name]:
                    raise _Invalid(name, "a path")
                values[name] = Path(raw[name])
        for name, low in (
            ("keepalive_seconds", 0),
            ("connect_timeout_seconds", 1),
            ("keep_connection_seconds", 0),
        ):
            if name in raw:
                value = raw[name]
                if isinstance(value, bool) or not isinstance(value, int | float) or value < low:
                    raise _Invalid(name, f"a number of seconds >= {low}")
                values[name] = value
        if "team_queue" in raw:
            if not isinstance(raw["team_queue"], bool):
                raise _Invalid("team_queue", "true or false")
            values["team_queue"] = raw["team_queue"]
        settings = cls(**values)
        if settings.default_host and settings.default_host not in hosts:
            raise _Invalid("default_host", f"one of the hosts, got {settings.default_host!r}")
        return settings

    def host(self, alias: str | None) -> tuple[str, HostEntry]:
        name = alias or self.default_host or (next(iter(self.hosts)) if self.hosts else "")
        path = self.source or config_path()
        if not self.hosts:
            where = path if path.exists() else f"{path} (it does not exist yet)"
            raise BadInput(
                f"no hosts configured in {where}",
                fix="add your GPU hosts under 'hosts:' in it; the repository's "
                "configs/client.yml is an example:",
                commands=(f"mkdir -p {path.parent} && cp configs/client.yml {path}",),
            )
        if name not in self.hosts:
            raise BadInput(
                f"unknown host {name!r}: expected one of {', '.join(sorted(self.hosts))}",
                fix=f"add it under 'hosts:' in {path}",
            )
        return name, self.hosts[name]


def config_path() -> Path:
    explicit = os.environ.get("HATRAIN_CLIENT_CONFIG")
    if explicit:
        return Path(explicit)
    return _default_path()


def _default_path() -> Path:
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "hatrain" / "client.yml"


def load_settings(path: Path | None = None, given_as: str = "") -> ClientSettings:
    """The settings of the client config at path (default: $HATRAIN_CLIENT_CONFIG, else
    $XDG_CONFIG_HOME/hatrain/client.yml). A config named explicitly (path, or the environment
    variable) must exist; given_as says how it was named, for the error (e.g. "--config")."""
    explicit = path is not None or bool(os.environ.get("HATRAIN_CLIENT_CONFIG"))
    if path is None and explicit:
        given_as = given_as or "HATRAIN_CLIENT_CONFIG"
    path = path or config_path()
    if not path.exists():
        if explicit:
            raise BadInput(
                f"{given_as or 'client config'} {path}: no such file",
                fix="give the path of your client config, or leave it out to use "
                f"{_default_path()}",
            )
        return ClientSettings()
    try:
        settings = ClientSettings.parse(load_yaml_mapping(path))
    except ConfigYamlError as exc:
        raise BadInput(str(exc)) from exc
    except _Invalid as exc:
        raise BadInput(f"{path}: {exc}") from exc
    return replace(settings, source=path.resolve())
