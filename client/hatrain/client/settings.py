"""The client config: which hosts the team has and how to reach each one.

Found at $HATRAIN_CLIENT_CONFIG, else $XDG_CONFIG_HOME/hatrain/client.yml (~/.config/...).

    default_host: gpu1
    hosts:
      gpu1:
        ssh: alice@gpu1.example.com   # or a Host alias from ~/.ssh/config, or user@host:port
        agent: 127.0.0.1:50151        # the agent's listener as seen on that host
"""

import os
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import BadInput

DEFAULT_AGENT = "127.0.0.1:50151"


class HostEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ssh: Annotated[str, Field(min_length=1)]
    agent: str = DEFAULT_AGENT

    @field_validator("agent")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"host:port, e.g. {DEFAULT_AGENT}")
        return value

    def agent_address(self) -> tuple[str, int]:
        host, _, port = self.agent.rpartition(":")
        return host.strip("[]"), int(port)


class ClientSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    default_host: str = ""
    hosts: dict[str, HostEntry] = Field(default_factory=dict)
    ssh_config: Path = Path("~/.ssh/config")
    known_hosts: Path = Path("~/.ssh/known_hosts")
    keepalive_seconds: Annotated[int, Field(ge=0)] = 15
    connect_timeout_seconds: Annotated[float, Field(gt=0)] = 10.0
    cache_dir: Path = Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")) / "hatrain"

    def host(self, alias: str | None) -> tuple[str, HostEntry]:
        name = alias or self.default_host or (next(iter(self.hosts)) if self.hosts else "")
        if not self.hosts:
            raise BadInput(
                "no hosts configured",
                fix=f"add one under 'hosts:' in {config_path()}",
            )
        if name not in self.hosts:
            raise BadInput(
                f"unknown host {name!r}: expected one of {', '.join(sorted(self.hosts))}",
                fix=f"add it under 'hosts:' in {config_path()}",
            )
        return name, self.hosts[name]


def config_path() -> Path:
    explicit = os.environ.get("HATRAIN_CLIENT_CONFIG")
    if explicit:
        return Path(explicit)
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "hatrain" / "client.yml"


def load_settings(path: Path | None = None) -> ClientSettings:
    path = path or config_path()
    if not path.exists():
        return ClientSettings()
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise BadInput(f"{path}: not a readable YAML file ({exc})") from exc
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise BadInput(f"{path}: expected a YAML mapping, got {type(raw).__name__}")
    try:
        settings = ClientSettings.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise BadInput(f"{path}: {field}: {first['msg']}") from exc
    if settings.default_host and settings.default_host not in settings.hosts:
        raise BadInput(f"{path}: default_host: {settings.default_host!r} is not under hosts")
    return settings
