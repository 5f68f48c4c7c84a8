"""Content-addressed objects uploaded by clients: copied by the agent, verified, then put in place.

Each user writes uploads to objects/staging/<user>/<sha256>.part over SFTP (appending, so an
interrupted upload resumes). That directory is the user's own (0700) inside one only the agent
can write, so nobody else can read, pre-create or replace a user's staging names.

commit() opens the staged file without following a symlink and takes only a regular file of the
uploader's with a single link. It copies it into a file of the agent's own, hashes the copy, and
moves that into objects/sha256/<ab>/<sha256> (mode 0444, in a directory only the agent can
enter) if the hash is the one announced. Nothing the uploader kept — an open fd, a
hard link, the staged file itself — reaches the object, so it keeps the bytes that were verified,
and a file in the object directory is always complete.
"""

import contextlib
import errno
import hashlib
import os
import re
import secrets
import stat
import time
from collections.abc import Iterable
from pathlib import Path

import structlog

from .accounts import Account
from .errors import InvalidArgument, NotFound
from .hostdirs import agent_dir, owned_dir

log = structlog.get_logger(__name__)

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 4 * 1024 * 1024


def check_sha256(value: str, field: str = "sha256") -> str:
    if not _SHA256.match(value):
        raise InvalidArgument(field, "64 lowercase hex digits (a SHA-256)")
    return value


def _unfit(info: os.stat_result, owner: Account) -> str:
    """Why a staged file cannot be taken, or "" if it can."""
    if not stat.S_ISREG(info.st_mode):
        return "it is not a regular file"
    if info.st_nlink != 1:
        return f"it has {info.st_nlink - 1} other hard link(s)"
    if info.st_uid != owner.uid:
        return f"it is not {owner.name}'s own file"
    return ""


class ObjectStore:
    def __init__(self, root: Path) -> None:
        self.objects = root / "objects" / "sha256"
        self.staging = root / "objects" / "staging"
        agent_dir(root / "objects", 0o711)
        agent_dir(self.objects, 0o700)
        # Users pass through to their own staging directory; they cannot list or add to this one.
        agent_dir(self.staging, 0o711)

    def path_of(self, sha256: str) -> Path:
        return self.objects / sha256[:2] / sha256

    def has(self, sha256: str) -> bool:
        return self.path_of(check_sha256(sha256)).is_file()

    def mark_used(self, sha256: str) -> None:
        """Note that a client named this object (its mtime): retention counts its age from the
        last use, and a sweep leaves an object touched after it chose it."""
        if not _SHA256.match(sha256):
            return
        with contextlib.suppress(FileNotFoundError):
            os.utime(self.path_of(sha256))

    def staging_dir(self, owner: Account) -> Path:
        """The owner's own staging directory (created for them, 0700)."""
        return owned_dir(self.staging / owner.name, owner, 0o700)

    def staging_path(self, sha256: str, owner: Account) -> Path:
        """Where owner writes the upload of sha256 (their staging directory is made ready)."""
        return self.staging_dir(owner) / f"{check_sha256(sha256)}.part"

    def _staged(self, sha256: str, owner: Account) -> Path:
        return self.staging / owner.name / f"{check_sha256(sha256)}.part"

    def staged_bytes(self, sha256: str, owner: Account) -> int:
        try:
            info = os.lstat(self._staged(sha256, owner))
        except FileNotFoundError:
            return 0
        return info.st_size if stat.S_ISREG(info.st_mode) else 0

    def commit(self, sha256: str, size: int, owner: Account) -> int:
        """Verify owner's staged upload of sha256 and put a copy of it in place; returns its
        size. InvalidArgument if it is not a plain file of theirs or hashes differently."""
        target = self.path_of(check_sha256(sha256))
        if target.is_file():
            return target.stat().st_size
        staged = self._staged(sha256, owner)
        try:
            fd = os.open(staged, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            raise NotFound(f"nothing staged for {sha256}: upload it first") from None
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            self._discard(staged)
            raise InvalidArgument(
                "sha256", f"a staged file, not a symlink, at {staged}; upload again"
            ) from None
        with os.fdopen(fd, "rb") as source:
            info = os.fstat(source.fileno())
            if problem := _unfit(info, owner):
                self._discard(staged)
                raise InvalidArgument(
                    "sha256", f"{staged} cannot be taken: {problem}; upload again"
                )
            if size and info.st_size != size:
                raise InvalidArgument(
                    "size", f"{size} bytes were announced but {info.st_size} are staged"
                )
            target.parent.mkdir(parents=True, exist_ok=True)
            copy = target.parent / f".{sha256}.{secrets.token_hex(8)}.tmp"
            try:
                _copy(source.fileno(), info.st_size, copy)
                copied, digest = _hash(copy)
                if digest != sha256:
                    self._discard(staged)
                    raise InvalidArgument(
                        "sha256", "the staged bytes hash differently; upload again"
                    )
                os.chmod(copy, 0o444)
                os.replace(copy, target)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    copy.unlink()
        self._discard(staged)
        return copied

    def add(self, sha256: str, chunks: Iterable[bytes]) -> int:
        """Put an object whose bytes come from elsewhere (the team queue's database) in place,
        verified: written to a file of the agent's own, its SHA-256 checked as it is written;
        returns its size. InvalidArgument if the bytes hash differently (nothing is kept)."""
        target = self.path_of(check_sha256(sha256))
        if target.is_file():
            return target.stat().st_size
        target.parent.mkdir(parents=True, exist_ok=True)
        copy = target.parent / f".{sha256}.{secrets.token_hex(8)}.tmp"
        digest = hashlib.sha256()
        size = 0
        try:
            with copy.open("xb") as out:
                for chunk in chunks:
                    digest.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
            if digest.hexdigest() != sha256:
                raise InvalidArgument("sha256", f"bytes that hash to {sha256}; they differ")
            os.chmod(copy, 0o444)
            os.replace(copy, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                copy.unlink()
        return size

    @staticmethod
    def _discard(staged: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            staged.unlink()  # the name only: a symlink or hard link is not followed

    def remove_stale_staging(self, max_age_seconds: float) -> int:
        """Remove staged uploads nobody has written to for max_age_seconds (abandoned: an
        upload that resumes within that time keeps its bytes). Returns how many went."""
        cutoff = time.time() - max_age_seconds
        removed = 0
        for top in os.scandir(self.staging):
            entries = [top]
            if top.is_dir(follow_symlinks=False):
                with contextlib.suppress(OSError):
                    entries = list(os.scandir(top.path))
            for entry in entries:
                try:
                    if (
                        entry.name.endswith(".part")
                        and entry.stat(follow_symlinks=False).st_mtime < cutoff
                    ):
                        os.unlink(entry.path)
                        removed += 1
                except OSError:
                    continue
        if removed:
            log.info("removed abandoned uploads", count=removed, older_than=max_age_seconds)
        return removed


def _copy(source: int, size: int, path: Path) -> None:
    """Copy the first size bytes of the file open as source into a new file at path (the
    agent's own, created here): in the kernel (a reflink where the filesystem has them), else
    through this process."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        done = 0
        try:
            while done < size and (n := os.copy_file_range(source, fd, size - done, done, done)):
                done += n
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                raise
            while done < size and (chunk := os.pread(source, min(_CHUNK, size - done), done)):
                done += os.pwrite(fd, chunk, done)
        os.fsync(fd)
    finally:
        os.close(fd)


def _hash(path: Path) -> tuple[int, str]:
    """Size and SHA-256 of the file at path."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()
