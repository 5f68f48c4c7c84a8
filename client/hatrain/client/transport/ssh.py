"""One verified SSH connection per host, honouring ~/.ssh/config (paramiko).

Host keys are checked against known_hosts and never accepted silently; keys come from the SSH agent
or the IdentityFile entries; keepalives stop idle NAT boxes from dropping a long watch.
"""

import base64
import contextlib
import hashlib
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paramiko

from ..errors import AuthenticationFailed, HostKeyRejected, HostUnreachable, NoSshKey

# paramiko's own log lines (e.g. a refused channel) would otherwise reach the terminal raw; every
# failure is reported once, by the CLI.
logging.getLogger("paramiko").addHandler(logging.NullHandler())


@dataclass(frozen=True)
class SshTarget:
    alias: str
    hostname: str
    port: int
    user: str
    identity_files: tuple[str, ...] = ()
    proxy_jump: str = ""

    @property
    def known_hosts_name(self) -> str:
        return self.hostname if self.port == 22 else f"[{self.hostname}]:{self.port}"


def parse_target(text: str) -> tuple[str | None, str, int | None]:
    """user@host:port -> (user, host, port); each part optional except host."""
    user, _, rest = text.rpartition("@")
    host, port = rest, None
    if rest.count(":") == 1:
        host, _, port_text = rest.partition(":")
        port = int(port_text) if port_text.isdigit() else None
    return user or None, host, port


def resolve(text: str, ssh_config: Path) -> SshTarget:
    user, host, port = parse_target(text)
    looked: dict[str, Any] = {}
    path = ssh_config.expanduser()
    if path.is_file():
        looked = paramiko.SSHConfig.from_path(str(path)).lookup(host)
    jump = looked.get("proxyjump", "")
    return SshTarget(
        alias=host,
        hostname=looked.get("hostname", host),
        port=port or int(looked.get("port", 22)),
        user=user or looked.get("user") or _local_user(),
        identity_files=tuple(str(Path(p).expanduser()) for p in looked.get("identityfile", [])),
        proxy_jump="" if jump == "none" else jump,
    )


def _local_user() -> str:
    import getpass

    return getpass.getuser()


def fingerprint(key: paramiko.PKey) -> str:
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


# AES-GCM first: one pass per packet instead of CTR + HMAC, which is most of paramiko's cost per
# packet on a bulk upload. The rest of paramiko's list stays as the fallback.
_FAST_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")


def _transport(sock: Any, **kwargs: Any) -> paramiko.Transport:
    transport = paramiko.Transport(sock, **kwargs)
    options = transport.get_security_options()
    options.ciphers = (
        *[c for c in _FAST_CIPHERS if c in options.ciphers],
        *[c for c in options.ciphers if c not in _FAST_CIPHERS],
    )
    return transport


class _LowLatencySocket:
    """The TCP socket under the SSH connection, tuned for small request/response packets.

    gRPC calls are a few small SSH packets each way. sshd leaves Nagle's algorithm on for
    forwarded channels, so its second small packet waits for our ACK of the first, which Linux
    delays by up to 40 ms: every call would take 40 ms. We send without delay (TCP_NODELAY) and
    acknowledge every read at once (TCP_QUICKACK, which Linux resets, hence after each read).
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._quickack = getattr(socket, "TCP_QUICKACK", None)

    def recv(self, size: int) -> bytes:
        data = self._sock.recv(size)
        if self._quickack is not None and data:
            self._sock.setsockopt(socket.IPPROTO_TCP, self._quickack, 1)
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class _RejectUnknown(paramiko.MissingHostKeyPolicy):
    def __init__(self, target: SshTarget, known_hosts: Path) -> None:
        self.target = target
        self.known_hosts = known_hosts

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: Any) -> None:
        port = f" -p {self.target.port}" if self.target.port != 22 else ""
        raise HostKeyRejected(
            f"host {self.target.alias} ({self.target.known_hosts_name}) is not in "
            f"{self.known_hosts}; it offers {key.get_name()} key {fingerprint(key)}",
            fix="check the fingerprint with the host's admin, then accept it:",
            commands=(f"ssh-keyscan{port} {self.target.hostname} >> {self.known_hosts}",),
        )


def _no_key(target: SshTarget) -> NoSshKey:
    """No key to offer: why (no SSH agent, or one holding no key; no key file), and the fix."""
    agent = os.environ.get("SSH_AUTH_SOCK")
    why = (
        "your SSH agent holds no key"
        if agent and Path(agent).exists()
        else "no SSH agent is running (SSH_AUTH_SOCK is not set)"
        if not agent
        else f"no SSH agent answers at SSH_AUTH_SOCK={agent}"
    )
    files = ", ".join(target.identity_files) or "~/.ssh/id_ed25519, ~/.ssh/id_rsa, ..."
    return NoSshKey(
        f"SSH login as {target.user} to {target.alias}: no key to offer: {why}, and no key "
        f"file was found ({files})",
        fix="start an SSH agent and add your key (or set IdentityFile for this host in "
        "~/.ssh/config):",
        commands=('eval "$(ssh-agent -s)" && ssh-add',),
    )


@dataclass
class SshConnection:
    target: SshTarget
    known_hosts: Path
    ssh_config: Path
    keepalive_seconds: int = 15
    timeout: float = 10.0
    system_known_hosts: Path = Path("/etc/ssh/ssh_known_hosts")
    _client: paramiko.SSHClient | None = None
    _jump: "SshConnection | None" = None
    _sftp: paramiko.SFTPClient | None = None
    _extra: list[Any] = field(default_factory=list)

    def connect(self) -> "SshConnection":
        target = self.target
        sock: Any = None
        if target.proxy_jump:
            first_hop = target.proxy_jump.split(",")[0]
            self._jump = SshConnection(
                resolve(first_hop, self.ssh_config),
                self.known_hosts,
                self.ssh_config,
                self.keepalive_seconds,
                self.timeout,
                self.system_known_hosts,
            ).connect()
            sock = self._jump.transport.open_channel(
                "direct-tcpip", (target.hostname, target.port), ("127.0.0.1", 0)
            )
        where = f"{target.user}@{target.hostname}:{target.port}"
        if sock is None:
            try:
                sock = _LowLatencySocket(
                    socket.create_connection((target.hostname, target.port), self.timeout)
                )
            except OSError as exc:
                raise self._unreachable(where, exc) from exc
        client = paramiko.SSHClient()
        if self.system_known_hosts.is_file():  # keys the host's admins vouch for
            client.load_system_host_keys(str(self.system_known_hosts))
        known = self.known_hosts.expanduser()
        if known.is_file():
            client.load_host_keys(str(known))
        client.set_missing_host_key_policy(_RejectUnknown(target, known))
        try:
            client.connect(
                target.hostname,
                port=target.port,
                username=target.user,
                key_filename=list(target.identity_files) or None,  # type: ignore[arg-type]
                look_for_keys=not target.identity_files,
                allow_agent=True,
                timeout=self.timeout,
                banner_timeout=self.timeout,
                auth_timeout=self.timeout,
                sock=sock,
                transport_factory=_transport,
            )
        except paramiko.BadHostKeyException as exc:
            raise HostKeyRejected(
                f"host key of {target.alias} ({target.known_hosts_name}) CHANGED: "
                f"{known} has {fingerprint(exc.expected_key)}, the host offers "
                f"{fingerprint(exc.key)}. This may be an attack.",
                fix="if the host was reinstalled, remove the old key, then accept the new one:",
                commands=(f"ssh-keygen -R '{target.known_hosts_name}' -f {known}",),
            ) from exc
        except paramiko.AuthenticationException as exc:
            raise AuthenticationFailed(
                f"SSH login as {target.user} to {target.alias} was refused ({exc})",
                fix="check which keys your SSH agent holds (or set IdentityFile for this host "
                "in ~/.ssh/config), and that a plain ssh login works:",
                commands=(
                    "ssh-add -l",
                    f"ssh -p {target.port} {target.user}@{target.hostname} true",
                ),
            ) from exc
        except paramiko.SSHException as exc:
            if "No authentication methods available" in str(exc):
                raise _no_key(target) from exc
            raise self._unreachable(where, exc) from exc
        except (OSError, EOFError) as exc:
            raise self._unreachable(where, exc) from exc
        transport = client.get_transport()
        assert transport is not None
        if self.keepalive_seconds:
            transport.set_keepalive(self.keepalive_seconds)
        self._client = client
        return self

    def _unreachable(self, where: str, exc: BaseException) -> HostUnreachable:
        reason = "unknown host name" if isinstance(exc, socket.gaierror) else str(exc)
        target = self.target
        return HostUnreachable(
            f"cannot reach {target.alias} at {where}: {reason or type(exc).__name__}",
            fix="check that the host is up and its 'ssh' entry in the client config; try:",
            commands=(f"ssh -p {target.port} {target.user}@{target.hostname} true",),
        )

    @property
    def transport(self) -> paramiko.Transport:
        if self._client is None:
            raise RuntimeError("not connected")
        transport = self._client.get_transport()
        if transport is None or not transport.is_active():
            raise HostUnreachable(f"the SSH connection to {self.target.alias} was lost")
        return transport

    def sftp(self) -> paramiko.SFTPClient:
        if self._sftp is None:
            self._sftp = paramiko.SFTPClient.from_transport(
                self.transport, window_size=64 * 1024 * 1024, max_packet_size=256 * 1024
            )
            assert self._sftp is not None
        return self._sftp

    def close(self) -> None:
        """Close, also when the connection is already dead (then closing raises EOFError)."""
        for part in (self._sftp, self._client, self._jump):
            if part is not None:
                with contextlib.suppress(Exception):
                    part.close()


STREAMLOCAL = "direct-streamlocal@openssh.com"


def open_socket_channel(
    transport: paramiko.Transport, socket_path: str, timeout: float = 10.0
) -> paramiko.Channel:
    """A channel to a Unix socket on the host, connected by the login's own sshd process
    (OpenSSH's direct-streamlocal forwarding: its PROTOCOL file, section 2.4).

    paramiko opens only the channel kinds it knows, so this is its open_channel with the
    streamlocal request's fields: the socket's path, then a reserved string and number.
    Raises paramiko.ChannelException with the host's reason when it refuses (forwarding
    prohibited, or nothing listening on the path)."""
    raw: Any = transport  # the private parts of paramiko's own open_channel
    if not raw.active:
        raise paramiko.SSHException("SSH session not active")
    with raw.lock:
        window_size = raw._sanitize_window_size(None)
        max_packet_size = raw._sanitize_packet_size(None)
        chanid = raw._next_channel()
        message = paramiko.Message()
        message.add_byte(paramiko.common.cMSG_CHANNEL_OPEN)
        message.add_string(STREAMLOCAL)
        message.add_int(chanid)
        message.add_int(window_size)
        message.add_int(max_packet_size)
        message.add_string(socket_path)
        message.add_string("")
        message.add_int(0)
        channel: Any = paramiko.Channel(chanid)
        raw._channels.put(chanid, channel)
        raw.channel_events[chanid] = opened = threading.Event()
        raw.channels_seen[chanid] = True
        channel._set_transport(raw)
        channel._set_window(window_size, max_packet_size)
    raw._send_user_message(message)
    deadline = time.monotonic() + timeout
    while not opened.wait(0.05):
        if not raw.active or time.monotonic() > deadline:
            raise raw.get_exception() or paramiko.SSHException("channel open timed out")
    found = raw._channels.get(chanid)
    if found is None:
        raise raw.get_exception() or paramiko.SSHException("channel refused")
    return found  # type: ignore[no-any-return]
