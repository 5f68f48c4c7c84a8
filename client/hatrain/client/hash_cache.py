"""SHA-256 of local files, remembered by (path, size, mtime): unchanged files are not re-read."""

import hashlib
import sqlite3
from pathlib import Path

_CHUNK = 4 * 1024 * 1024


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class HashCache:
    def __init__(self, directory: Path) -> None:
        directory = directory.expanduser()
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self._db = sqlite3.connect(directory / "hashes.sqlite", timeout=10)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS hashes (path TEXT PRIMARY KEY, size INTEGER, "
            "mtime_ns INTEGER, sha256 TEXT)"
        )
        self._db.execute("CREATE TABLE IF NOT EXISTS checked (sha256 TEXT PRIMARY KEY)")

    def sha256(self, path: Path) -> str:
        path = path.resolve()
        stat = path.stat()
        row = self._db.execute(
            "SELECT sha256 FROM hashes WHERE path = ? AND size = ? AND mtime_ns = ?",
            (str(path), stat.st_size, stat.st_mtime_ns),
        ).fetchone()
        if row:
            return str(row[0])
        value = sha256_file(path)
        with self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO hashes VALUES (?, ?, ?, ?)",
                (str(path), stat.st_size, stat.st_mtime_ns, value),
            )
        return value

    def checked(self, sha256: str) -> bool:
        """Whether content with this hash already passed the dataset check."""
        row = self._db.execute("SELECT 1 FROM checked WHERE sha256 = ?", (sha256,)).fetchone()
        return row is not None

    def mark_checked(self, sha256: str) -> None:
        with self._db:
            self._db.execute("INSERT OR IGNORE INTO checked VALUES (?)", (sha256,))

    def close(self) -> None:
        self._db.close()
