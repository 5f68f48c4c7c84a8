"""What a sweep removes: a pure function of (items, in-use jobs, clock, policy).

An item is something a finished job leaves on the host: its job directory (run dir with
checkpoints and TensorBoard events, its config and dataset links), its logs and events in the
database, an uploaded object, or a prepared (tokenized) dataset cache. Each names the jobs it
belongs to; it is kept while any of them is queued, running or pinned, and removed once it has
gone unused for longer than the policy keeps its kind. Removal goes oldest first, so a sweep cut
short has removed the oldest.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum


class ItemKind(Enum):
    RUN_DIR = "run dir"
    EVENTS = "logs and events"
    OBJECT = "uploaded object"
    PREPARED = "prepared dataset cache"


@dataclass(frozen=True)
class Item:
    kind: ItemKind
    # The job id, the object's sha256 or the prepared cache's key.
    key: str
    # When it was last used: its job ended, or a job or an upload last named it.
    last_used: float
    # The jobs whose data it is; one of them queued, running or pinned keeps it.
    jobs: frozenset[str] = frozenset()
    size: int = 0
    # Where it is, for people (a path, or the database for events).
    where: str = ""


@dataclass(frozen=True)
class RetentionPolicy:
    # How long each kind is kept after its last use, in seconds; a kind not named is kept for good.
    keep_seconds: Mapping[ItemKind, float]


def expired(
    items: Iterable[Item], in_use: frozenset[str], now: float, policy: RetentionPolicy
) -> list[Item]:
    """The items a sweep removes now, oldest first: those unused for longer than their kind is
    kept, none of whose jobs is in use (queued, running or pinned)."""
    chosen = [
        item
        for item in items
        if item.kind in policy.keep_seconds
        and now - item.last_used >= policy.keep_seconds[item.kind]
        and not item.jobs & in_use
    ]
    return sorted(chosen, key=lambda item: (item.last_used, item.kind.value, item.key))
