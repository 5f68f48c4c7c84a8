"""Content-addressed upload over SFTP: only what the host lacks, resumed where it stopped.

The agent names a staging path per hash and how many bytes of it are already there; the client
appends the rest and asks the agent to verify and commit it. Objects appear on the host only whole.
"""

from collections.abc import Callable
from pathlib import Path

from .errors import AgentRefused
from .records import UploadReport
from .transport import HostConnection

_CHUNK = 8 * 1024 * 1024
# OpenSSH's sftp-server takes write requests up to 256 KiB (its limits@openssh.com); the SFTP
# minimum every server must take, and paramiko's default, is 32 KiB.
_OPENSSH_REQUEST = 255 * 1024


def upload(
    session: HostConnection,
    objects: dict[str, Path],
    on_bytes: Callable[[int], None] = lambda n: None,
) -> UploadReport:
    """objects: sha256 -> local file. Returns what was sent."""
    sent = resumed = files_sent = 0
    answer = session.prepare_upload(sorted(objects))
    for staged in answer.missing:
        local = objects[staged.sha256]
        size = local.stat().st_size

        offset = staged.bytes_present if staged.bytes_present <= size else 0
        resumed += offset
        sent += _send(session, local, staged.staging_path, offset, on_bytes)
        try:
            session.commit_upload(staged.sha256, size)
        except AgentRefused:
            # The staged bytes were not ours after all (the file changed mid-upload): once more.
            sent += _send(session, local, staged.staging_path, 0, on_bytes)
            session.commit_upload(staged.sha256, size)
        files_sent += 1
    return UploadReport(sent, resumed, files_sent, len(answer.present))


def _send(
    session: HostConnection,
    local: Path,
    remote: str,
    offset: int,
    on_bytes: Callable[[int], None],
) -> int:
    """Write local's bytes from offset on into the staged file; returns how many were sent."""
    sent = 0
    on_bytes(offset)
    with (
        session.transferring(f"uploading {local.name}") as sftp,
        local.open("rb") as src,
        sftp.open(remote, "r+b" if offset else "wb") as dst,
    ):
        dst.set_pipelined(True)
        if "OpenSSH" in sftp.get_channel().get_transport().remote_version:  # type: ignore[union-attr]
            dst.MAX_REQUEST_SIZE = _OPENSSH_REQUEST
        src.seek(offset)
        dst.seek(offset)
        while chunk := src.read(_CHUNK):
            dst.write(chunk)
            sent += len(chunk)
            on_bytes(len(chunk))
    return sent
