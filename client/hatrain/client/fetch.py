"""Download a job's run directory over SFTP; an interrupted download resumes where it stopped.

Complete files are skipped when their size matches; partial ones grow in <name>.part and are renamed
when whole, so the destination never shows a half-downloaded file under its real name.
"""

import fnmatch
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from .errors import HostUnreachable
from .records import FetchReport

if TYPE_CHECKING:
    import paramiko

_CHUNK = 4 * 1024 * 1024


class HostileName(HostUnreachable):
    """The host named a file that would land outside the destination: nothing is written."""


def _inside(dest: Path, path: str) -> Path:
    """Where a fetched file goes; HostileName unless that is inside dest (after symlinks)."""
    target = dest / path
    root = dest.resolve()
    if not target.resolve().is_relative_to(root) or PurePosixPath(path).is_absolute():
        raise HostileName(f"the host listed {path!r}, which would land outside {dest}")
    return target


def _walk(sftp: "paramiko.SFTPClient", root: str, rel: str = "") -> Iterator[tuple[str, int]]:
    for entry in sftp.listdir_attr(f"{root}/{rel}" if rel else root):
        name = entry.filename
        if not name or name in (".", "..") or "/" in name or "\0" in name:
            raise HostileName(f"the host listed a file named {name!r} in the run directory")
        path = f"{rel}/{name}" if rel else name
        if stat.S_ISDIR(entry.st_mode or 0):
            yield from _walk(sftp, root, path)
        elif stat.S_ISREG(entry.st_mode or 0):
            yield path, entry.st_size or 0


def _selected(path: str, include: list[str], exclude: list[str]) -> bool:
    def matches(patterns: list[str]) -> bool:
        name = PurePosixPath(path).name
        return any(fnmatch.fnmatch(path, p) or fnmatch.fnmatch(name, p) for p in patterns)

    return (not include or matches(include)) and not matches(exclude)


def fetch(
    sftp: "paramiko.SFTPClient",
    remote_root: str,
    dest: Path,
    include: list[str],
    exclude: list[str],
    on_file: Callable[[str, int], None] = lambda p, n: None,
) -> FetchReport:
    fetched = skipped = fetched_bytes = 0
    # Every name is checked before the first byte is written: a refusal leaves DEST as it was.
    wanted = [
        (path, size, _inside(dest, path))
        for path, size in sorted(_walk(sftp, remote_root))
        if _selected(path, include, exclude)
    ]
    for path, size, target in wanted:
        if target.is_file() and target.stat().st_size == size:
            skipped += 1
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".part")
        offset = partial.stat().st_size if partial.is_file() else 0
        if offset > size:
            offset = 0
        with (
            sftp.open(f"{remote_root}/{path}", "rb") as src,
            partial.open("ab" if offset else "wb") as dst,
        ):
            src.seek(offset)
            src.prefetch(size - offset)
            while chunk := src.read(_CHUNK):
                dst.write(chunk)
                fetched_bytes += len(chunk)
        os.replace(partial, target)
        fetched += 1
        on_file(path, size)
    return FetchReport(fetched, skipped, fetched_bytes)
