"""Fair share by decayed usage: the GPU-hours each user has used, halving every half-life.

A GPU-hour used `age` ago weighs 2^(-age / half-life) today, so yesterday's 100 GPU-hours still
count about 90 with a 7-day half-life, and last quarter's count next to nothing. Within a
priority class the scheduler serves users in the order of this usage divided by their share
weight; jobs that are running count for the GPU-hours they have used so far, and the GPUs each
user holds break ties (so users without history take turns).
"""

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

HOUR = 3600.0


@dataclass(frozen=True)
class UsageRecord:
    """The GPUs a job held and for how long: written when the job ends."""

    user: str
    team: str
    gpus: int
    started_at: float
    finished_at: float


def decayed_gpu_hours(
    gpus: int, started_at: float, until: float, now: float, half_life_seconds: float
) -> float:
    """GPU-hours of `gpus` held from started_at to until, each moment weighed by its age at now."""
    until = min(until, now)
    if gpus <= 0 or until <= started_at:
        return 0.0
    rate = math.log(2) / half_life_seconds
    # The integral of gpus * exp(-rate * (now - t)) dt over [started_at, until].
    weight = math.exp(-rate * (now - until)) - math.exp(-rate * (now - started_at))
    return gpus * weight / rate / HOUR


def decayed_usage(
    records: Iterable[UsageRecord], now: float, half_life_seconds: float
) -> dict[str, float]:
    """Decayed GPU-hours per user, as of now."""
    usage: dict[str, float] = {}
    for r in records:
        hours = decayed_gpu_hours(r.gpus, r.started_at, r.finished_at, now, half_life_seconds)
        usage[r.user] = usage.get(r.user, 0.0) + hours
    return usage


class UsageBook:
    """Decayed GPU-hours per user, kept current as records arrive, without re-reading history:
    every total decays by the same factor, so one timestamp serves them all."""

    def __init__(self, half_life_seconds: float) -> None:
        self.half_life_seconds = half_life_seconds
        # The store's number of the last record added: the next read starts after it.
        self.last_seen = 0
        self._hours: dict[str, float] = {}
        self._as_of = 0.0

    def _decay_to(self, now: float) -> None:
        if now > self._as_of:
            factor = 0.5 ** ((now - self._as_of) / self.half_life_seconds)
            self._hours = {user: hours * factor for user, hours in self._hours.items()}
            self._as_of = now

    def add(self, rows: Iterable[tuple[int, UsageRecord]], now: float) -> None:
        """Add (number, record) rows in the store's order; rows it has already (a read that
        overlapped another) are passed over."""
        self._decay_to(now)
        for n, r in rows:
            if n <= self.last_seen:
                continue
            hours = decayed_gpu_hours(
                r.gpus, r.started_at, r.finished_at, self._as_of, self.half_life_seconds
            )
            self._hours[r.user] = self._hours.get(r.user, 0.0) + hours
            self.last_seen = max(self.last_seen, n)

    def at(self, now: float) -> dict[str, float]:
        """Decayed GPU-hours per user, as of now."""
        factor = 0.5 ** (max(now - self._as_of, 0.0) / self.half_life_seconds)
        return {user: hours * factor for user, hours in self._hours.items()}


def weight_for(user: str, weights: Mapping[str, float]) -> float:
    return weights.get(user, weights.get("*", 1.0))


class Shares:
    """Each user's standing in one planning pass: (usage / weight, GPUs held / weight).

    Usage is the decayed history plus what running jobs have used so far. GPUs placed during
    the pass are added with hold(), so users with equal usage alternate."""

    def __init__(
        self,
        usage: Mapping[str, float],
        running: Iterable[tuple[str, int, float | None]],
        weights: Mapping[str, float],
        half_life_seconds: float,
        now: float,
    ) -> None:
        """running: (user, GPUs, started_at or None when it has only just started)."""
        self._weights = weights
        self._usage = dict(usage)
        self._held: dict[str, int] = {}
        for user, gpus, started_at in running:
            self._held[user] = self._held.get(user, 0) + gpus
            if started_at is not None:
                accrued = decayed_gpu_hours(gpus, started_at, now, now, half_life_seconds)
                self._usage[user] = self._usage.get(user, 0.0) + accrued

    def key(self, user: str) -> tuple[float, float]:
        weight = weight_for(user, self._weights)
        return self._usage.get(user, 0.0) / weight, self._held.get(user, 0) / weight

    def hold(self, user: str, gpus: int) -> None:
        self._held[user] = self._held.get(user, 0) + gpus
