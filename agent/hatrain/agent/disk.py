"""The data root's disk: write faults made into StorageFault, and a reserve for the last words.

When the disk fills up, the agent must still be able to record how each running job ended, or
the job would stay "training" for good. It keeps a reserve file of a few MiB in the data root,
gives it up when a write fails for lack of space (so that the small transactions that end jobs
fit), refuses new submissions while it is given up, and takes it again once there is room.
"""

import errno
import os
import shutil
import sqlite3
import threading
from pathlib import Path

import structlog

from .errors import StorageFault

log = structlog.get_logger(__name__)

RESERVE_BYTES = 16 * 1024 * 1024
_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
_FAULT_ERRNOS = _FULL_ERRNOS | {errno.EIO, errno.EROFS}
# SQLite's primary result codes for a write the storage refused.
_SQLITE_FULL = 13
_SQLITE_FAULTS = {_SQLITE_FULL, 10, 8, 14}  # FULL, IOERR, READONLY, CANTOPEN


def free_bytes(path: Path) -> int:
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return 0


def human_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TiB"


def _fault(root: Path, what: str, full: bool) -> StorageFault:
    fix = (
        "free space there (old run dirs under jobs/, uploaded objects), then submit again"
        if full
        else "check the disk and filesystem of the data root"
    )
    return StorageFault(
        f"the agent's data root {root} cannot take writes ({what}; "
        f"{human_bytes(free_bytes(root))} free): {fix}",
        full=full,
    )


def storage_fault(exc: BaseException, root: Path) -> StorageFault | None:
    """The StorageFault an OS or SQLite error stands for; None when it is no storage fault."""
    if isinstance(exc, StorageFault):
        return exc
    if isinstance(exc, OSError) and exc.errno in _FAULT_ERRNOS:
        return _fault(root, exc.strerror or os.strerror(exc.errno or 0), exc.errno in _FULL_ERRNOS)
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        primary = code & 0xFF if isinstance(code, int) else None
        text = str(exc)
        if primary in _SQLITE_FAULTS or "disk is full" in text or "disk I/O error" in text:
            return _fault(root, text, primary == _SQLITE_FULL or "full" in text)
    return None


class DiskReserve:
    """A file of RESERVE_BYTES in the data root, given up when the disk is full."""

    def __init__(self, root: Path, size: int = RESERVE_BYTES) -> None:
        self.root = root
        self.path = root / ".reserve"
        self.size = size
        self._lock = threading.Lock()

    @property
    def held(self) -> bool:
        try:
            return self.path.stat().st_size >= self.size
        except OSError:
            return False

    def take(self) -> bool:
        """Hold the reserve again if the disk has room for it and as much again; returns held."""
        with self._lock:
            if self.held:
                return True
            if free_bytes(self.root) < 2 * self.size:
                return False
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600)
                try:
                    os.posix_fallocate(fd, 0, self.size)
                finally:
                    os.close(fd)
            except OSError:
                self.path.unlink(missing_ok=True)
                return False
            log.info("disk reserve held", path=str(self.path), bytes=self.size)
            return True

    def release(self) -> bool:
        """Give the reserve up so that the writes which end jobs fit; returns whether it freed
        anything."""
        with self._lock:
            if not self.path.exists():
                return False
            self.path.unlink(missing_ok=True)
        log.warning(
            "disk full: reserve given up to record how jobs end; new submissions are refused "
            "until there is room again",
            data_root=str(self.root),
            free=human_bytes(free_bytes(self.root)),
        )
        return True

    def check_room(self) -> None:
        """Raise StorageFault while the reserve is given up and cannot be taken again."""
        if not self.held and not self.take():
            raise _fault(self.root, "the disk is full", full=True)
