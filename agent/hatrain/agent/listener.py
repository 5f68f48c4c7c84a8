"""Where callers reach the agent, and how it knows who they are: from the kernel.

The agent listens on a Unix socket in a runtime directory that must belong to the agent's own
user and be writable by nobody else (so no one can squat the address while the agent is down).
Every connection is accepted here, the front door, which asks the kernel who is on the other
end (SO_PEERCRED) and relays the connection to the gRPC server on a private socket. Its own end
of that relay is bound to a name that carries the caller's uid, in a directory only the agent
can write: gRPC reports that name as the call's peer, so the identity handlers see comes from
the kernel and nothing the caller sends can change it.

Users reach the socket through their SSH login (`hatrain-agent bridge`), or directly when they
are logged in to the host; either way they are who the kernel says they are.
"""

import asyncio
import itertools
import os
import socket
import stat
import struct
from collections.abc import Callable
from pathlib import Path

import structlog

from .errors import ConfigError

log = structlog.get_logger(__name__)
PEER_PREFIX = "peer-"
_CREDENTIALS = struct.Struct("3i")  # pid, uid, gid
_READ_SIZE = 256 * 1024


def prepare_runtime_dir(path: Path) -> None:
    """Create the socket's directory (0755), or check one that exists: it must be the
    agent's own and not writable by anybody else; otherwise refuse to start."""
    path.mkdir(mode=0o755, parents=True, exist_ok=True)
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode):
        raise ConfigError(f"listen: {path} is not a directory")
    if info.st_uid != os.geteuid():
        raise ConfigError(
            f"listen: {path} belongs to uid {info.st_uid}, not to the agent's user "
            f"({os.geteuid()}): someone may be squatting the agent's address; remove it"
        )
    if info.st_mode & 0o022:
        raise ConfigError(
            f"listen: {path} is writable by others (mode {stat.S_IMODE(info.st_mode):o}): "
            "anyone could put a socket of their own there; chmod 755 it"
        )


def peer_uid(peer: str, private_dir: Path) -> int | None:
    """The uid the front door stamped on a call's peer; None for any other peer."""
    prefix = f"unix:{private_dir}/{PEER_PREFIX}"
    if not peer.startswith(prefix):
        return None
    uid, _, _ = peer[len(prefix) :].partition("-")
    return int(uid) if uid.isdigit() else None


class _Relay(asyncio.Protocol):
    """One side of a relayed connection, with flow control both ways; `on_made` is called once
    the connection is there."""

    def __init__(
        self, open_relays: set["_Relay"], on_made: Callable[["_Relay"], None] | None = None
    ) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: _Relay | None = None
        self._early: list[bytes] = []
        self._open = open_relays
        self._on_made = on_made

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._open.add(self)
        if self._on_made is not None:
            self._on_made(self)

    def data_received(self, data: bytes) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.write(data)
        else:
            self._early.append(data)

    def eof_received(self) -> bool | None:
        if self.peer is not None and self.peer.transport is not None:
            if self.peer.transport.can_write_eof():
                self.peer.transport.write_eof()
            else:
                self.peer.transport.close()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self._open.discard(self)
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()

    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()

    def join(self, peer: "_Relay") -> None:
        self.peer, peer.peer = peer, self
        for side in (self, peer):
            early, side._early = side._early, []
            for data in early:
                side.data_received(data)


class FrontDoor:
    """The public socket: names each connection after its caller's uid and relays it."""

    def __init__(self, public: Path, internal: Path, private_dir: Path) -> None:
        self.public = public
        self.internal = internal
        self.private_dir = private_dir
        self._server: asyncio.base_events.Server | None = None
        self._numbers = itertools.count()
        self._tasks: set[asyncio.Task[None]] = set()
        self._relays: set[_Relay] = set()

    async def start(self) -> None:
        prepare_runtime_dir(self.public.parent)
        self.private_dir.mkdir(mode=0o700, exist_ok=True)
        os.chmod(self.private_dir, 0o700)
        for stale in self.private_dir.glob(f"{PEER_PREFIX}*"):
            stale.unlink(missing_ok=True)
        self.public.unlink(missing_ok=True)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_unix_server(self._accepted, str(self.public), backlog=512)
        os.chmod(self.public, 0o666)  # anyone may connect: the kernel says who they are

    def _accepted(self) -> asyncio.Protocol:
        loop = asyncio.get_running_loop()
        return _Relay(
            self._relays,
            on_made=lambda caller: self._tasks.add(loop.create_task(self._connect(caller))),
        )

    async def _connect(self, caller: _Relay) -> None:
        try:
            await self._relay(caller)
        finally:
            if (task := asyncio.current_task()) is not None:
                self._tasks.discard(task)

    async def _relay(self, caller: _Relay) -> None:
        assert caller.transport is not None
        raw = caller.transport.get_extra_info("socket")
        try:
            _, uid, _ = _CREDENTIALS.unpack(
                raw.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CREDENTIALS.size)
            )
            name = self.private_dir / f"{PEER_PREFIX}{uid}-{next(self._numbers)}"
            inside = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            inside.setblocking(False)
            inside.bind(str(name))
            try:
                await asyncio.get_running_loop().sock_connect(inside, str(self.internal))
            finally:
                name.unlink(missing_ok=True)  # the bound name lives on in the socket itself
            server = _Relay(self._relays)
            await asyncio.get_running_loop().create_connection(lambda: server, sock=inside)
            caller.join(server)
        except OSError as exc:
            log.warning("could not relay a connection", error=str(exc))
            caller.transport.close()

    def close(self) -> None:
        """Take no more connections; those relayed already carry on (calls in flight end)."""
        if self._server is not None:
            self._server.close()
        self.public.unlink(missing_ok=True)

    async def stop(self, timeout: float = 2.0) -> None:
        """Close, and cut every relayed connection still open: a caller may hold one for as
        long as it likes (a client idle or gone silent behind its SSH forward), and the
        listener counts as closed only once none is left. Waits at most `timeout` for that."""
        self.close()
        for task in list(self._tasks):
            task.cancel()
        for relay in list(self._relays):
            if relay.transport is not None:
                relay.transport.abort()
        if self._server is not None:
            try:
                await asyncio.wait_for(self._server.wait_closed(), timeout)
            except TimeoutError:
                log.warning("front door: connections still open after stop", open=len(self._relays))
