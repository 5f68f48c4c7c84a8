"""Reaching a host's agent: the one way in is `open_host`.

Over the host's SSH login (paramiko, verified host keys, ~/.ssh/config): gRPC travels through
the same connection, and a background process keeps it open between commands (`mux`).
"""

from collections.abc import Callable

from ..settings import ClientSettings
from .connection import HostConnection, client_version

__all__ = ["HostConnection", "client_version", "open_host", "open_shared"]


def open_host(
    alias: str | None, settings: ClientSettings, warn: Callable[[str], None] | None = None
) -> HostConnection:
    """A connection to the agent of the host named alias (None: the default host)."""
    name, entry = settings.host(alias)
    connection = HostConnection(name, entry, settings)
    try:
        return connection.open(warn)
    except BaseException:
        connection.close()
        raise


def open_shared(alias: str, settings: ClientSettings) -> HostConnection | None:
    """A connection through the host's running shared connection, without an SSH login of its
    own (for shell completion, which must be quick and never prompt); None when there is none."""
    name, entry = settings.host(alias)
    connection = HostConnection(name, entry, settings)
    if connection.open_shared():
        return connection
    connection.close()
    return None
