"""A team job's uploaded files, carried in the team database to whichever host claims it.

The client uploads once, to the host it logs in to. That host writes the job's objects into the
database in chunks, in the same transaction as the job, so the files are there exactly when the
job is, even if the upload host goes down next. The claiming host reads them back into its own
object store, where the store's commit checks each SHA-256 before the object appears. Objects
leave the database once no job still needs them: queued or placed jobs, a running job whose
host has not fetched them yet, and a running job that asked to be requeued (it may need them
again). `team.max_object_bytes` bounds what the database holds; a submit past it is refused.
"""

from collections.abc import Sequence

import structlog

from ..errors import InvalidArgument, NotFound, ResourceExhausted
from ..jobs import JobFile
from ..objects import ObjectStore
from .db import Cursor
from .schema import OBJECTS_LOCK

log = structlog.get_logger(__name__)
CHUNK_BYTES = 1024 * 1024


def store_objects(
    cur: Cursor,
    job_id: str,
    files: Sequence[JobFile],
    objects: ObjectStore,
    max_bytes: int,
) -> None:
    """Link the job to its objects, writing those the database does not hold yet."""
    wanted = sorted({f.sha256 for f in files})
    if not wanted:
        return
    cur.execute("SELECT sha256 FROM team_objects WHERE sha256 = ANY(%s)", (wanted,))
    held = {row[0] for row in cur.fetchall()}
    missing = [sha for sha in wanted if sha not in held]
    if missing:
        sizes = {sha: objects.path_of(sha).stat().st_size for sha in missing}
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (OBJECTS_LOCK,))
        cur.execute("SELECT coalesce(sum(size), 0) FROM team_objects")
        row = cur.fetchone()
        in_flight = int(row[0]) if row else 0
        adding = sum(sizes.values())
        if in_flight + adding > max_bytes:
            raise ResourceExhausted(
                f"team.max_object_bytes: the team database holds {in_flight} bytes of files for "
                f"jobs not started yet, of {max_bytes}, and this job adds {adding}; submit it "
                "again once some have started, or to this host's own queue (without --team)"
            )
        for sha in missing:
            _write(cur, sha, sizes[sha], objects)
    cur.executemany(
        "INSERT INTO team_job_objects (job_id, sha256) VALUES (%s, %s)",
        [(job_id, sha) for sha in wanted],
    )


def _write(cur: Cursor, sha: str, size: int, objects: ObjectStore) -> None:
    cur.execute(
        "INSERT INTO team_objects (sha256, size) VALUES (%s, %s) ON CONFLICT DO NOTHING "
        "RETURNING sha256",
        (sha, size),
    )
    if cur.fetchone() is None:
        return  # written by a submit committed meanwhile
    with objects.path_of(sha).open("rb") as fh:
        n = 0
        while chunk := fh.read(CHUNK_BYTES):
            cur.execute(
                "INSERT INTO team_object_chunks (sha256, n, data) VALUES (%s, %s, %s)",
                (sha, n, chunk),
            )
            n += 1


def fetch(cur: Cursor, sha: str, objects: ObjectStore) -> int:
    """Read an object from the database into the local store, verified; returns its size.
    Raises NotFound if it is missing, InvalidArgument (from the store) if it hashes wrong or
    its size is not the one recorded."""
    if objects.has(sha):
        return objects.path_of(sha).stat().st_size
    cur.execute("SELECT size FROM team_objects WHERE sha256 = %s", (sha,))
    row = cur.fetchone()
    if row is None:
        raise NotFound(f"object {sha} is not in the team database")
    cur.execute("SELECT data FROM team_object_chunks WHERE sha256 = %s ORDER BY n", (sha,))
    size = objects.add(sha, (bytes(data) for (data,) in cur))
    if size != int(row[0]):
        raise InvalidArgument("size", f"{row[0]} bytes of object {sha}, got {size}")
    return size


def collect(cur: Cursor) -> int:
    """Remove the objects no job needs any more; returns how many went."""
    cur.execute(
        "DELETE FROM team_objects o WHERE NOT EXISTS ("
        " SELECT 1 FROM team_job_objects l JOIN team_jobs j ON j.id = l.job_id"
        " WHERE l.sha256 = o.sha256 AND (j.state IN ('queued', 'placed')"
        "  OR (j.state = 'running' AND (NOT j.objects_fetched OR j.requeue))))"
    )
    removed = cur.rowcount
    if removed:
        log.info("removed objects no queued job needs", count=removed)
    return removed
