"""Content-addressed objects uploaded by clients: verified, then moved in whole.

Clients write to staging/<sha256>.part over SFTP (appending, so an interrupted upload resumes);
commit() hashes the staged file and renames it into objects/sha256/<ab>/<sha256>. A file in the
object directory is therefore always complete and verified.
"""

import contextlib
import hashlib
import os
import re
import time
from pathlib import Path

import structlog

from .errors import InvalidArgument, NotFound

log = structlog.get_logger(__name__)

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 4 * 1024 * 1024


def check_sha256(value: str, field: str = "sha256") -> str:
    if not _SHA256.match(value):
        raise InvalidArgument(field, "64 lowercase hex digits (a SHA-256)")
    return value


class ObjectStore:
    def __init__(self, root: Path) -> None:
        self.objects = root / "objects" / "sha256"
        self.staging = root / "objects" / "staging"
        self.objects.mkdir(parents=True, exist_ok=True)
        self.staging.mkdir(parents=True, exist_ok=True)
        # Clients (SSH logins) write staged uploads; sticky like /tmp so they cannot remove others'.
        os.chmod(self.staging, 0o1777)

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

    def staging_path(self, sha256: str) -> Path:
        return self.staging / f"{check_sha256(sha256)}.part"

    def staged_bytes(self, sha256: str) -> int:
        try:
            return self.staging_path(sha256).stat().st_size
        except FileNotFoundError:
            return 0

    def commit(self, sha256: str, size: int) -> int:
        """Verify a staged upload and move it into place; returns its size."""
        target = self.path_of(check_sha256(sha256))
        if target.is_file():
            return target.stat().st_size
        staged = self.staging_path(sha256)
        if not staged.is_file():
            raise NotFound(f"nothing staged for {sha256}: upload it first")
        actual_size = staged.stat().st_size
        if size and actual_size != size:
            raise InvalidArgument(
                "size", f"{size} bytes were announced but {actual_size} are staged"
            )
        digest = hashlib.sha256()
        with staged.open("rb") as fh:
            while chunk := fh.read(_CHUNK):
                digest.update(chunk)
        if digest.hexdigest() != sha256:
            staged.unlink()
            raise InvalidArgument("sha256", "the staged bytes hash differently; upload again")
        target.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(staged, 0o444)
        os.replace(staged, target)
        return actual_size

    def remove_stale_staging(self, max_age_seconds: float) -> int:
        """Remove staged uploads nobody has written to for max_age_seconds (abandoned: an
        upload that resumes within that time keeps its bytes). Returns how many went."""
        cutoff = time.time() - max_age_seconds
        removed = 0
        for entry in os.scandir(self.staging):
            try:
                if entry.name.endswith(".part") and entry.stat().st_mtime < cutoff:
                    os.unlink(entry.path)
                    removed += 1
            except OSError:
                continue
        if removed:
            log.info("removed abandoned uploads", count=removed, older_than=max_age_seconds)
        return removed
