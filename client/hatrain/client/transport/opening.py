"""Opening a host's SSH connection, with paramiko loaded only once one is needed."""

import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..settings import ClientSettings

if TYPE_CHECKING:
    from .ssh import SshConnection


def keep_invoke_out(ssh_config: Path) -> None:
    """paramiko imports invoke (80 ms of asyncio and unittest.mock) only to run `Match exec`
    lines of ssh_config; without such a line, keep it out so that every command starts faster."""
    if "paramiko" in sys.modules:
        return
    try:
        text = ssh_config.expanduser().read_text(errors="replace")
    except OSError:
        text = ""
    if not re.search(r"^\s*match\b.*\bexec\b", text, re.IGNORECASE | re.MULTILINE):
        sys.modules.setdefault("invoke", None)  # type: ignore[arg-type]


def open_ssh(target: str, settings: ClientSettings) -> "SshConnection":
    """A verified, logged-in connection to target (an entry's `ssh`)."""
    keep_invoke_out(settings.ssh_config)
    from .ssh import SshConnection, resolve

    return SshConnection(
        resolve(target, settings.ssh_config),
        settings.known_hosts,
        settings.ssh_config,
        settings.keepalive_seconds,
        settings.connect_timeout_seconds,
        settings.system_known_hosts,
    ).connect()
