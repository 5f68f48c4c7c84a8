"""The team database: a small pool of connections that finds the writable server again by
itself after a failover (libpq's multi-host connection strings), and retries with backoff."""

import contextlib
import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import TypeVar

import psycopg
import structlog
from psycopg.rows import TupleRow
from psycopg_pool import ConnectionPool

from ..errors import Unavailable

log = structlog.get_logger(__name__)
T = TypeVar("T")
Cursor = psycopg.Cursor[TupleRow]

_FIRST_DELAY = 0.05
_MAX_DELAY = 2.0
# Errors after which a call is worth repeating: the server went away (a failover) or refused
# for a moment. Anything else is a bug or bad data and is raised at once.
_TRANSIENT = (psycopg.OperationalError, psycopg.errors.SerializationFailure)


class TeamUnavailable(Unavailable):
    """The team database could not be reached within retry_seconds."""


def _dsn(conninfo: str, connect_timeout: float) -> str:
    """The connection string with a connect timeout of its own unless it names one, so that a
    dead server of a multi-host list is passed over quickly."""
    params = psycopg.conninfo.conninfo_to_dict(conninfo)
    params.setdefault("connect_timeout", str(max(1, round(connect_timeout))))
    params.setdefault("application_name", "hatrain-agent")
    return psycopg.conninfo.make_conninfo(**{k: str(v) for k, v in params.items()})


class TeamDb:
    def __init__(self, conninfo: str, retry_seconds: float, max_size: int = 16) -> None:
        self.conninfo = _dsn(conninfo, 2)
        self.retry_seconds = retry_seconds
        self.pool: ConnectionPool[psycopg.Connection[TupleRow]] = ConnectionPool(
            self.conninfo, min_size=1, max_size=max_size, open=False, timeout=retry_seconds
        )

    def open(self) -> None:
        self.pool.open(wait=False)

    def close(self) -> None:
        self.pool.close(timeout=2)

    def connect(self) -> psycopg.Connection[TupleRow]:
        """A connection of its own (for LISTEN), autocommit, to the writable server."""
        return psycopg.connect(self.conninfo, autocommit=True)

    def run(self, work: Callable[[Cursor], T], *, retry: bool = True) -> T:
        """work(cursor) in one transaction, committed. With retry, a failure of the connection
        (or of the server, e.g. while a standby is promoted) repeats the whole transaction with
        backoff until retry_seconds have passed: work must be safe to repeat (the submit is,
        by its request id)."""
        return self._attempts(partial(self._once, work), retry)

    def run_pipelined(self, work: Callable[[Cursor], Callable[[], T]], *, retry: bool = True) -> T:
        """As run, in libpq's pipeline mode: statements are sent without waiting, and their
        answers come back together when one is read (BEGIN goes with the first statement).
        work returns how to read the answers it has not read yet, called once the transaction
        has committed: those come back with the commit's, in the same round trip. (A
        cursor's rowcount is known only once its answer is read.)"""
        return self._attempts(partial(self._once_pipelined, work), retry)

    def _once(self, work: Callable[[Cursor], T]) -> T:
        with self.pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            return work(cur)

    def _once_pipelined(self, work: Callable[[Cursor], Callable[[], T]]) -> T:
        with self.pool.connection() as conn, conn.pipeline():
            with conn.transaction(), conn.cursor() as cur:
                read = work(cur)
            return read()

    def _attempts(self, once: Callable[[], T], retry: bool) -> T:
        deadline = time.monotonic() + self.retry_seconds
        delay = _FIRST_DELAY
        while True:
            try:
                return once()
            except _TRANSIENT as exc:
                if not retry or time.monotonic() > deadline:
                    raise TeamUnavailable(
                        f"the team database did not answer for {self.retry_seconds:g} s "
                        f"(team.database in agent.yml): {str(exc).strip()[:200]}"
                    ) from exc
                log.warning("team database call failed; retrying", error=str(exc)[:200])
                with contextlib.suppress(Exception):
                    self.pool.check()  # drop the pool's other connections to a dead server
            except psycopg.errors.ForeignKeyViolation:
                # An object removed by the collector between our look and our link: again.
                if not retry or time.monotonic() > deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, _MAX_DELAY)

    @contextlib.contextmanager
    def listening(self, channel: str) -> Iterator[psycopg.Connection[TupleRow]]:
        conn = self.connect()
        try:
            conn.execute(f"LISTEN {channel}")
            yield conn
        finally:
            with contextlib.suppress(Exception):
                conn.close()
