"""Why a queued job waits: the planner's verdict on it, as a kind and one line for people."""

import math
from dataclasses import dataclass
from enum import Enum


class WaitKind(Enum):
    # No host could run it as asked, even with every GPU free.
    NO_FIT = "no_fit"
    USER_CAP = "user_cap"
    TEAM_CAP = "team_cap"
    # A job without GPUs, and every CPU job slot is taken.
    CPU_SLOTS = "cpu_slots"
    # First in line among the jobs that do not fit: the GPUs it will start on are held for it.
    RESERVED = "reserved"
    # It would fit the free GPUs, but they are reserved for the first job in line, and it would
    # still be running when that job is due to start.
    BACKFILL = "backfill"
    # Not enough free GPUs that fit it; it also waits behind the jobs ahead of it.
    GPUS = "gpus"
    # Backfill is off: nothing starts past the first job in line.
    BEHIND = "behind"
    # Every host it may run on holds new starts (free disk below the low watermark).
    HELD = "held"


@dataclass(frozen=True)
class Waiting:
    kind: WaitKind
    text: str
    # Its place among the jobs left waiting, in the order the planner served them.
    position: int = 0
    # RESERVED: when its reservation begins, if the running jobs' time limits tell.
    due: float | None = None


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def in_about(seconds: float) -> str:
    """`about 1 h 20 min`, `about 5 min`, `less than a minute`."""
    if seconds < 60:
        return "less than a minute"
    minutes = round(seconds / 60)
    days, minutes = divmod(minutes, 24 * 60)
    hours, minutes = divmod(minutes, 60)
    if days:
        return f"about {days} d {hours} h" if hours else f"about {days} d"
    if hours:
        return f"about {hours} h {minutes} min" if minutes else f"about {hours} h"
    return f"about {minutes} min"


def gpus_wanted(count: int, gpu_type: str, min_memory_mb: int, host: str = "") -> str:
    """`2 GPUs (H200, ≥80 GB)`, `1 GPU on gpu2`."""
    memory = f"≥{min_memory_mb / 1024:.0f} GB" if min_memory_mb else ""
    details = [d for d in (gpu_type, memory) if d]
    text = plural(count, "GPU") + (f" ({', '.join(details)})" if details else "")
    return f"{text} on {host}" if host else text


def time_limit(seconds: int) -> str:
    return f"time limit {in_about(seconds).removeprefix('about ')}" if seconds else "no time limit"


def behind(higher: int, same: int) -> str:
    """`behind 3 jobs of higher priority`: the jobs still waiting that are served before it."""
    if higher and same:
        return f"behind {plural(higher, 'job')} of higher priority and {same} of the same"
    if higher:
        return f"behind {plural(higher, 'job')} of higher priority"
    return f"behind {plural(same, 'job')} of the same priority"


def first_fit(starts_at: float, now: float, host: str) -> str:
    where = f" on {host}" if host else ""
    if math.isinf(starts_at):
        return f"first fit unknown: the jobs holding those GPUs have no time limit; reserved{where}"
    return f"first fit in {in_about(starts_at - now)}{where}, reserved"
