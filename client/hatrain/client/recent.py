"""The jobs this client has lately submitted, listed or looked at, kept on this machine: what
shell completion offers for a job id when no shared connection to a host is open.

A small JSON file in the cache directory, newest first; written whole and renamed into place,
so that two commands at once never leave half a file (the later one wins).
"""

import contextlib
import json
import os
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from .records import Job

KEEP = 300


@dataclass(frozen=True)
class RecentJob:
    id: str
    host: str
    name: str
    state: str


def _path(cache_dir: Path) -> Path:
    return cache_dir.expanduser() / "recent-jobs.json"


def recall(cache_dir: Path) -> list[RecentJob]:
    """The jobs remembered, newest first (none if the file is missing or unreadable)."""
    try:
        rows = json.loads(_path(cache_dir).read_text())
        return [RecentJob(**row) for row in rows]
    except (OSError, ValueError, TypeError):
        return []


def remember(cache_dir: Path, jobs: Iterable[Job]) -> None:
    """Put these jobs first; a failure to write is no failure of the command."""
    fresh = [RecentJob(j.id, j.host, j.name, j.state.value) for j in jobs]
    if not fresh:
        return
    ids = {r.id for r in fresh}
    kept = fresh + [r for r in recall(cache_dir) if r.id not in ids]
    path = _path(cache_dir)
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=".recent-", suffix=".json")
        try:
            with os.fdopen(fd, "w") as out:
                json.dump([asdict(r) for r in kept[:KEEP]], out)
            os.replace(name, path)
        except OSError:
            Path(name).unlink(missing_ok=True)
            raise
