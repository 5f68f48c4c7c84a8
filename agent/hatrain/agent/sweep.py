"""The retention sweep: take stock of what finished jobs left on the host, let retention.py
decide what has expired, and remove it.

Space freed is counted by inode: a job's dataset files are hard links of uploaded objects, so
removing a run dir frees them only when the object goes too (or is already gone).
"""

import contextlib
import os
import shutil
import stat
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import structlog
from hatrain.rpc.contract import HF_CACHE

from .disk import human_bytes
from .retention import Item, ItemKind, RetentionPolicy, expired
from .store import RetentionRecord, Store

log = structlog.get_logger(__name__)

_PREPARED_PREFIX = f"{HF_CACHE}/prepared/"
# (device, inode) -> (links, bytes on disk)
_Inodes = dict[tuple[int, int], tuple[int, int]]


@dataclass
class Stock:
    """What a sweep found: the items, the jobs in use, and the files behind each item."""

    items: list[Item]
    in_use: frozenset[str]
    files: dict[tuple[ItemKind, str], list[tuple[int, int]]] = field(default_factory=dict)
    inodes: _Inodes = field(default_factory=dict)
    # Each object's mtime as found, to spot one used again before it is removed.
    object_mtimes: dict[str, float] = field(default_factory=dict)

    def freed(self, removed: Iterable[Item]) -> int:
        """Bytes freed by removing these items: an inode counts once all its links are gone."""
        links: Counter[tuple[int, int]] = Counter()
        freed = 0
        for item in removed:
            if item.kind == ItemKind.EVENTS:
                freed += item.size
            links.update(self.files.get((item.kind, item.key), ()))
        for inode, count in links.items():
            nlink, size = self.inodes[inode]
            if count >= nlink:
                freed += size
        return freed


@dataclass(frozen=True)
class SweepReport:
    removed: list[Item]
    freed: int


def _walk(path: Path, inodes: _Inodes) -> tuple[list[tuple[int, int]], int, float]:
    """The inodes of the files under path (or path itself), their bytes and the newest mtime."""
    found: list[tuple[int, int]] = []
    total = 0
    newest = 0.0
    paths = [path]
    while paths:
        current = paths.pop()
        try:
            st = current.lstat()
        except OSError:
            continue
        newest = max(newest, st.st_mtime)
        if stat.S_ISDIR(st.st_mode):
            with contextlib.suppress(OSError):
                paths.extend(Path(e.path) for e in os.scandir(current))
            continue
        key = (st.st_dev, st.st_ino)
        size = st.st_blocks * 512
        inodes[key] = (st.st_nlink, size)
        found.append(key)
        total += size
    return found, total, newest


def _used_at(record: RetentionRecord, now: float) -> float:
    return record.finished_at if record.state.terminal else now


class Sweeper:
    def __init__(
        self,
        store: Store,
        data_root: Path,
        policy: RetentionPolicy,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.root = data_root
        self.policy = policy
        self.clock = clock

    @property
    def _jobs_dir(self) -> Path:
        return self.root / "jobs"

    @property
    def _objects_dir(self) -> Path:
        return self.root / "objects" / "sha256"

    @property
    def _prepared_dir(self) -> Path:
        return self.root / "cache" / "huggingface" / "prepared"

    def take_stock(self) -> Stock:
        now = self.clock()
        records = self.store.retention_records()
        by_id = {r.job_id: r for r in records}
        stock = Stock([], frozenset(r.job_id for r in records if r.pinned or not r.state.terminal))
        self._job_dirs(stock, by_id, now)
        for job_id, size in self.store.event_bytes().items():
            record = by_id.get(job_id)
            used = _used_at(record, now) if record else now
            stock.items.append(
                Item(ItemKind.EVENTS, job_id, used, frozenset({job_id}), size, "database")
            )
        self._objects(stock, records, now)
        self._prepared(stock, records, now)
        return stock

    def _add(
        self, stock: Stock, kind: ItemKind, key: str, path: Path, used: float, jobs: frozenset[str]
    ) -> float:
        files, size, newest = _walk(path, stock.inodes)
        stock.files[(kind, key)] = files
        stock.items.append(Item(kind, key, max(used, newest), jobs, size, str(path)))
        return newest

    def _job_dirs(self, stock: Stock, by_id: dict[str, RetentionRecord], now: float) -> None:
        for entry in _entries(self._jobs_dir):
            record = by_id.get(entry.name)
            # A run dir counts as used when its job ended (files written later by the job's
            # own processes do not extend it); one of an unknown job, by its files.
            used = _used_at(record, now) if record else 0.0
            files, size, newest = _walk(Path(entry.path), stock.inodes)
            stock.files[(ItemKind.RUN_DIR, entry.name)] = files
            stock.items.append(
                Item(
                    ItemKind.RUN_DIR,
                    entry.name,
                    used if record else newest,
                    frozenset({entry.name}),
                    size,
                    entry.path,
                )
            )

    def _objects(self, stock: Stock, records: Sequence[RetentionRecord], now: float) -> None:
        users: dict[str, list[RetentionRecord]] = {}
        for record in records:
            for sha in record.objects:
                users.setdefault(sha, []).append(record)
        for fan_out in _entries(self._objects_dir):
            for entry in _entries(Path(fan_out.path)):
                named_by = users.get(entry.name, [])
                used = max((_used_at(r, now) for r in named_by), default=0.0)
                jobs = frozenset(r.job_id for r in named_by)
                mtime = self._add(stock, ItemKind.OBJECT, entry.name, Path(entry.path), used, jobs)
                stock.object_mtimes[entry.name] = mtime

    def _prepared(self, stock: Stock, records: Sequence[RetentionRecord], now: float) -> None:
        users: dict[str, list[RetentionRecord]] = {}
        for record in records:
            if record.prepared_path.startswith(_PREPARED_PREFIX):
                key = record.prepared_path.removeprefix(_PREPARED_PREFIX).strip("/")
                users.setdefault(key, []).append(record)
        for entry in _entries(self._prepared_dir):
            named_by = users.get(entry.name, [])
            used = max((_used_at(r, now) for r in named_by), default=0.0)
            jobs = frozenset(r.job_id for r in named_by)
            self._add(stock, ItemKind.PREPARED, entry.name, Path(entry.path), used, jobs)

    def plan(self) -> tuple[Stock, list[Item]]:
        """What a sweep would remove now, oldest first, and the stock it was chosen from."""
        stock = self.take_stock()
        return stock, expired(stock.items, stock.in_use, self.clock(), self.policy)

    def sweep(self, *, dry_run: bool = False) -> SweepReport:
        stock, chosen = self.plan()
        if dry_run:
            return SweepReport(chosen, stock.freed(chosen))
        # Read again just before removing: a job pinned or submitted since keeps its items.
        active = self._active_jobs()
        removed = [item for item in chosen if not item.jobs & active and self._remove(item, stock)]
        report = SweepReport(removed, stock.freed(removed))
        if removed:
            log.info(
                "retention sweep",
                removed=len(removed),
                freed=human_bytes(report.freed),
                kinds=dict(Counter(item.kind.value for item in removed)),
            )
        return report

    def _remove(self, item: Item, stock: Stock) -> bool:
        """Remove one item; False if it was left (used again since it was chosen)."""
        if item.kind == ItemKind.EVENTS:
            self.store.drop_events(item.key)
            return True
        path = Path(item.where)
        if item.kind == ItemKind.OBJECT:
            try:
                # PrepareUpload and SubmitJob touch an object they name: it is in use again.
                if path.stat().st_mtime > stock.object_mtimes.get(item.key, 0.0):
                    return False
                path.unlink()
            except FileNotFoundError:
                pass
            return True
        shutil.rmtree(path, ignore_errors=True)
        return True

    def _active_jobs(self) -> frozenset[str]:
        return frozenset(
            r.job_id for r in self.store.retention_records() if r.pinned or not r.state.terminal
        )


def _entries(directory: Path) -> list[os.DirEntry[str]]:
    try:
        return [e for e in os.scandir(directory) if not e.name.startswith(".")]
    except FileNotFoundError:
        return []
