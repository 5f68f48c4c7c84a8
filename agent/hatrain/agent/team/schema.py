"""The team database's tables, created and migrated by whichever agent comes first.

team_hosts    each host: its epoch (raised each time it is marked down), heartbeat, GPUs, and the
              jobs of its own queue that hold GPUs (the team planner must not give those away)
team_jobs     the team queue: a job is `queued` until the planner places it on a host
              (`placed`, with that host's epoch), `running` once that host has claimed it, then
              succeeded, failed or cancelled
team_objects  uploaded files of jobs not started yet, in chunks, with the jobs that need them
team_secrets  a queued job's secrets, removed by the host that claims it
team_usage    GPU-hours of every team job that held GPUs, for fair share
team_planner  the job the last planning pass reserved GPUs for
"""

from .db import Cursor, TeamDb

SCHEMA_VERSION = 2
# pg_advisory_xact_lock keys: one planner at a time; migrations.
PLANNER_LOCK = 0x68617472_0001
MIGRATION_LOCK = 0x68617472_0002
OBJECTS_LOCK = 0x68617472_0003
# pg_advisory_xact_lock(class, hashtext(name)) keys, held by a submit from its count of a
# capped user's (team's) queued jobs to its commit: racing submits count one after another.
USER_QUEUE_LOCK = 0x6874_0001
TEAM_QUEUE_LOCK = 0x6874_0002
CHANNEL = "hatrain_team"

_MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE team_hosts (
        name text PRIMARY KEY,
        epoch bigint NOT NULL DEFAULT 1,
        state text NOT NULL CHECK (state IN ('up', 'down')),
        heartbeat_at timestamptz NOT NULL,
        registered_at timestamptz NOT NULL,
        down_at timestamptz,
        gpus jsonb NOT NULL DEFAULT '[]',
        local_running jsonb NOT NULL DEFAULT '[]'
    );
    CREATE TABLE team_jobs (
        n bigserial PRIMARY KEY,
        id text NOT NULL UNIQUE,
        user_name text NOT NULL,
        spec jsonb NOT NULL,
        priority integer NOT NULL,
        gpus integer NOT NULL,
        min_gpu_memory_mb bigint NOT NULL,
        gpu_type text NOT NULL,
        time_limit_seconds bigint NOT NULL,
        team text NOT NULL,
        pinned_host text NOT NULL,
        requeue boolean NOT NULL,
        state text NOT NULL,
        host text,
        epoch bigint,
        attempt integer NOT NULL DEFAULT 0,
        gpu_uuids text[] NOT NULL DEFAULT '{}',
        local_state text NOT NULL DEFAULT '',
        objects_fetched boolean NOT NULL DEFAULT false,
        created_at double precision NOT NULL,
        placed_at double precision NOT NULL DEFAULT 0,
        started_at double precision NOT NULL DEFAULT 0,
        finished_at double precision NOT NULL DEFAULT 0,
        failure_reason text NOT NULL DEFAULT '',
        hint text NOT NULL DEFAULT '',
        exit_code integer,
        pending_reason text NOT NULL DEFAULT '',
        queue_position integer NOT NULL DEFAULT 0,
        note text NOT NULL DEFAULT '',
        submitted_on text NOT NULL,
        client_request_id text UNIQUE
    );
    CREATE INDEX team_jobs_active ON team_jobs (state, n)
        WHERE state IN ('queued', 'placed', 'running');
    CREATE INDEX team_jobs_by_user ON team_jobs (user_name, n);
    CREATE TABLE team_objects (
        sha256 text PRIMARY KEY,
        size bigint NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE team_object_chunks (
        sha256 text NOT NULL REFERENCES team_objects ON DELETE CASCADE,
        n integer NOT NULL,
        data bytea NOT NULL,
        PRIMARY KEY (sha256, n)
    );
    CREATE TABLE team_job_objects (
        job_id text NOT NULL REFERENCES team_jobs (id),
        sha256 text NOT NULL REFERENCES team_objects ON DELETE CASCADE,
        PRIMARY KEY (job_id, sha256)
    );
    CREATE INDEX team_job_objects_by_object ON team_job_objects (sha256);
    CREATE TABLE team_secrets (
        job_id text PRIMARY KEY REFERENCES team_jobs (id),
        secrets jsonb NOT NULL
    );
    CREATE TABLE team_usage (
        n bigserial PRIMARY KEY,
        job_id text NOT NULL,
        attempt integer NOT NULL,
        user_name text NOT NULL,
        team text NOT NULL,
        gpus integer NOT NULL,
        started_at double precision NOT NULL,
        finished_at double precision NOT NULL,
        UNIQUE (job_id, attempt)
    );
    CREATE TABLE team_planner (
        id integer PRIMARY KEY CHECK (id = 1),
        reserved text
    );
    INSERT INTO team_planner VALUES (1, NULL)
    """,
    # Whether a job without GPUs waits, asked by every planning pass, without a scan of the
    # queue.
    2: """
    CREATE INDEX team_jobs_queued_without_gpus ON team_jobs (n)
        WHERE state = 'queued' AND gpus = 0
    """,
}


def migrate(db: TeamDb) -> None:
    """Bring the schema up to this agent's version (one agent at a time)."""

    def work(cur: Cursor) -> None:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        cur.execute("CREATE TABLE IF NOT EXISTS team_meta (key text PRIMARY KEY, value text)")
        cur.execute("SELECT value FROM team_meta WHERE key = 'schema_version'")
        row = cur.fetchone()
        current = int(row[0]) if row else 0
        if current > SCHEMA_VERSION:
            raise RuntimeError(
                f"the team database's schema version {current} is newer than this agent's "
                f"({SCHEMA_VERSION}); upgrade hatrain on this host"
            )
        for version in range(current + 1, SCHEMA_VERSION + 1):
            cur.execute(_MIGRATIONS[version])
            cur.execute(
                "INSERT INTO team_meta VALUES ('schema_version', %s) "
                "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                (str(version),),
            )

    db.run(work)
