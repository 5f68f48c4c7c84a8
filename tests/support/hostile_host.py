"""A hostile host: an SSH server of its own (paramiko's server side, on a loopback port) whose
agent says a job ran and whose SFTP lists whatever names it likes.

A malicious or compromised host controls everything it answers: its sshd, its agent and the
files SFTP shows. So this host is written by the test, on the real protocols: the client logs
in over SSH with its key and checks the host key against known_hosts, reaches the "agent"
through a direct-streamlocal channel (as it reaches a real one), and fetches over SFTP.
"""

import contextlib
import logging
import socket
import stat
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import paramiko
from hatrain.rpc import __version__
from hatrain.rpc.contract import WIRE_VERSION
from hatrain.rpc.v1 import agent_pb2 as pb
from hatrain.rpc.v1 import agent_pb2_grpc as pb_grpc
from paramiko.common import (
    AUTH_FAILED,
    AUTH_SUCCESSFUL,
    OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED,
    OPEN_SUCCEEDED,
)
from paramiko.sftp import SFTP_NO_SUCH_FILE, SFTP_OP_UNSUPPORTED

from tests.support.sshd import keygen

STREAMLOCAL = "direct-streamlocal@openssh.com"
JOB_ID = "0badc0ffee00"
RUN_DIR = f"/srv/hatrain/jobs/{JOB_ID}/run"
# The host's side of SSH logs a client that hangs up (as every fetch does) as an error.
_SSH_LOG = "tests.hostile_host.ssh"
logging.getLogger(_SSH_LOG).setLevel(logging.CRITICAL)


@dataclass(frozen=True)
class Entry:
    """What the host says is at a path: a file (its bytes), a directory, or a link (its
    target)."""

    kind: str  # "file", "dir" or "link"
    data: bytes = b""
    target: str = ""


def file(data: bytes = b"data\n") -> Entry:
    return Entry("file", data)


def directory() -> Entry:
    return Entry("dir")


def link(target: str) -> Entry:
    return Entry("link", target=target)


@dataclass
class Tree:
    """The run directory as the host shows it: each directory's listing (by its path relative
    to RUN_DIR, "" for the run dir itself) as (name, entry) pairs, names however they read.
    What the client opened is recorded; the host serves bytes for any path asked for."""

    listings: dict[str, list[tuple[str, Entry]]]
    opened: list[str] = field(default_factory=list)

    def at(self, path: str) -> Entry | None:
        if path == RUN_DIR:
            return directory()
        relative = path.removeprefix(RUN_DIR + "/")
        if relative in self.listings:
            return directory()
        parent, _, name = relative.rpartition("/")
        return next((e for n, e in self.listings.get(parent, []) if n == name), None)


def _attributes(name: str, entry: Entry) -> paramiko.SFTPAttributes:
    attr = paramiko.SFTPAttributes()
    attr.filename = name
    kinds = {
        "file": stat.S_IFREG | 0o644,
        "dir": stat.S_IFDIR | 0o755,
        "link": stat.S_IFLNK | 0o777,
    }
    attr.st_mode = kinds[entry.kind]
    attr.st_size = len(entry.data) if entry.kind == "file" else len(entry.target)
    attr.st_uid = attr.st_gid = 0
    attr.st_atime = attr.st_mtime = int(time.time())
    return attr


class _Handle(paramiko.SFTPHandle):
    def __init__(self, data: bytes) -> None:
        super().__init__()
        self.data = data

    def read(self, offset: int, length: int) -> bytes:
        return self.data[offset : offset + length]

    def stat(self) -> paramiko.SFTPAttributes:
        return _attributes("", Entry("file", self.data))


class _HostileSftp(paramiko.SFTPServerInterface):
    def __init__(self, server: Any, tree: Tree) -> None:
        super().__init__(server)
        self.tree = tree

    def list_folder(self, path: str) -> Any:
        relative = "" if path == RUN_DIR else path.removeprefix(RUN_DIR + "/")
        if relative not in self.tree.listings:
            return SFTP_NO_SUCH_FILE
        return [_attributes(name, entry) for name, entry in self.tree.listings[relative]]

    def lstat(self, path: str) -> Any:
        entry = self.tree.at(path)
        return SFTP_NO_SUCH_FILE if entry is None else _attributes("", entry)

    stat = lstat

    def readlink(self, path: str) -> Any:
        entry = self.tree.at(path)
        return entry.target if entry is not None and entry.kind == "link" else SFTP_OP_UNSUPPORTED

    def open(self, path: str, flags: int, attr: Any) -> Any:
        self.tree.opened.append(path)
        entry = self.tree.at(path)
        return _Handle(entry.data if entry is not None and entry.kind == "file" else b"owned\n")


class _HostileAgent(pb_grpc.AgentServiceServicer):
    """It says the job ran and finished, and that its run dir is RUN_DIR."""

    def __init__(self, user: str) -> None:
        self.user = user

    def GetAgentInfo(self, request: Any, context: Any) -> pb.AgentInfo:
        return pb.AgentInfo(
            agent_version=__version__,
            wire_version=WIRE_VERSION,
            hostname="hostile",
            user=self.user,
        )

    def GetJob(self, request: Any, context: Any) -> pb.Job:
        if request.job_id != JOB_ID:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no job {request.job_id}")
        now = time.time()
        return pb.Job(
            id=JOB_ID,
            spec=pb.JobSpec(config_name="job.yml", config_yaml=b"base_model: x\n"),
            user=self.user,
            state=pb.JOB_STATE_SUCCEEDED,
            created_at=now - 60,
            started_at=now - 50,
            finished_at=now - 10,
            run_dir=RUN_DIR,
        )


class _Login(paramiko.ServerInterface):
    """Lets in `user` with its key; opens sessions (for SFTP) and socket forwards."""

    def __init__(self, user: str, key: paramiko.PKey) -> None:
        self.user = user
        self.key = key
        self.kinds: dict[int, str] = {}

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        if username == self.user and key == self.key:
            return AUTH_SUCCESSFUL
        return AUTH_FAILED

    def check_channel_request(self, kind: str, chanid: int) -> int:
        if kind in ("session", STREAMLOCAL):
            self.kinds[chanid] = kind
            return OPEN_SUCCEEDED
        return OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED


@dataclass
class HostileHost:
    root: Path
    port: int
    user: str
    tree: Tree
    _listener: socket.socket
    _agent: grpc.Server
    _agent_socket: Path
    _closed: threading.Event
    _transports: list[paramiko.Transport]

    @property
    def alias(self) -> str:
        return "hostile"

    @property
    def ssh_config(self) -> Path:
        return self.root / "ssh_config"

    @property
    def known_hosts(self) -> Path:
        return self.root / "known_hosts"

    def stop(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        for transport in self._transports:
            transport.close()
        self._agent.stop(grace=None)


def _relay(channel: paramiko.Channel, agent_socket: Path) -> None:
    """The forwarded channel to the hostile agent's socket, both ways."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(agent_socket))

    def up() -> None:
        with contextlib.suppress(OSError, EOFError):
            while data := channel.recv(65536):
                sock.sendall(data)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)

    threading.Thread(target=up, daemon=True).start()
    with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
        while data := sock.recv(65536):
            channel.sendall(data)
    with contextlib.suppress(OSError, EOFError):  # the client may have cut the connection first
        channel.close()
    sock.close()


def _serve(host: HostileHost, conn: socket.socket, host_key: paramiko.PKey, login: _Login) -> None:
    transport = paramiko.Transport(conn)
    transport.set_log_channel(_SSH_LOG)
    host._transports.append(transport)
    transport.add_server_key(host_key)
    transport.set_subsystem_handler("sftp", paramiko.SFTPServer, _HostileSftp, host.tree)
    transport.start_server(server=login)
    while transport.is_active() and not host._closed.is_set():
        channel = transport.accept(timeout=1)
        if channel is not None and login.kinds.get(channel.get_id()) == STREAMLOCAL:
            threading.Thread(target=_relay, args=(channel, host._agent_socket), daemon=True).start()


@contextlib.contextmanager
def hostile_host(root: Path, user: str, tree: Tree) -> Iterator[HostileHost]:
    """The host on a loopback port, its key in root/known_hosts, and root/ssh_config's
    `hostile` logging in as user with root/key."""
    root.mkdir(parents=True, exist_ok=True)
    keygen(root / "host_key")
    keygen(root / "key")
    host_key = paramiko.Ed25519Key.from_private_key_file(str(root / "host_key"))
    client_key = paramiko.Ed25519Key.from_private_key_file(str(root / "key"))

    agent_dir = Path(tempfile.mkdtemp(prefix="hatrain-hostile-"))
    agent_socket = agent_dir / "agent.sock"
    agent = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_AgentServiceServicer_to_server(_HostileAgent(user), agent)
    agent.add_insecure_port(f"unix:{agent_socket}")
    agent.start()

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    host = HostileHost(root, port, user, tree, listener, agent, agent_socket, threading.Event(), [])

    def accept() -> None:
        while not host._closed.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(
                target=_serve, args=(host, conn, host_key, _Login(user, client_key)), daemon=True
            ).start()

    threading.Thread(target=accept, daemon=True).start()
    host.known_hosts.write_text(
        f"[127.0.0.1]:{port} {host_key.get_name()} {host_key.get_base64()}\n"
    )
    host.ssh_config.write_text(
        f"Host {host.alias}\n  HostName 127.0.0.1\n  Port {port}\n  User {user}\n"
        f"  IdentityFile {root / 'key'}\n"
    )
    try:
        yield host
    finally:
        host.stop()
        with contextlib.suppress(OSError):
            agent_socket.unlink()
            agent_dir.rmdir()
