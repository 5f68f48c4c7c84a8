"""hatrain as a Python library: submit, follow and fetch fine-tuning jobs on your GPU hosts.

    from hatrain.client import Client

    with Client() as client:                     # the hosts of ~/.config/hatrain/client.yml
        job = client.submit("train/configs/gemma3-270m.yml", gpus=1)
        for event in client.watch(job.id):       # typed events, resumed after a dropped link
            ...
        done = client.wait(job.id)               # the job once it has ended
        client.fetch(job.id, "runs/")            # its run directory

Every method returns typed records (hatrain.client.records) and raises the errors of
hatrain.client.errors, each with a fix where there is one. The CLI is this API and a printer.
"""

import concurrent.futures
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

from hatrain.rpc.contract import ACTIVE_STATES, JobState, last_seq
from hatrain.rpc.spec import JobSpec
from hatrain.rpc.v1 import agent_pb2 as pb

from .errors import (
    AgentRefused,
    AgentUnavailable,
    BadInput,
    ClientError,
    HostUnreachable,
)
from .plot import Curves
from .records import (
    Event,
    FetchReport,
    GpuReading,
    HostStatus,
    Job,
    LogLine,
    Metrics,
    ProgressUpdate,
    StateChange,
    Submission,
    events_from_wire,
)
from .settings import ClientSettings, load_settings
from .tensorboard import TensorBoardSession
from .transport import HostConnection, open_host, open_shared

T = TypeVar("T")
_PAGE = 500
# Jobs asked for when an id is taken as a prefix, and how many of them an error names.
_PREFIX_MATCHES = 20
_PREFIX_SHOWN = 5
_RECONNECT_FIRST_DELAY = 0.5
_RECONNECT_MAX_DELAY = 5.0
# How often a job waiting in the team queue is looked at, to be watched once it starts.
_TEAM_WAIT_SECONDS = 1.0
_ENDED = {pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED}


@dataclass(frozen=True)
class HostDown:
    """A host that did not answer, and why."""

    host: str
    error: ClientError


@dataclass(frozen=True)
class CancelResult:
    """The job after a cancel request, and one line saying what the request did."""

    job: Job
    message: str


class JobNotFound(BadInput):
    """No host of the client config has a job of that id (or whose id begins so)."""


class AmbiguousJobId(BadInput):
    """The id given is the start of more than one job's id."""


class Client:
    """The hosts of a client config, and every verb of hatrain-client as a method.

    A method that takes `host` asks that host (an alias of the client config); without it, a
    submit goes to the default host, and a job is looked up on every host until found.
    Connections are opened when first needed and kept until close()."""

    def __init__(
        self,
        config: str | Path | None = None,
        *,
        settings: ClientSettings | None = None,
        warn: Callable[[str], None] | None = None,
        only_shared: bool = False,
    ) -> None:
        """config: the client config file (default: $HATRAIN_CLIENT_CONFIG, else
        $XDG_CONFIG_HOME/hatrain/client.yml); warn: where warnings go (default stderr);
        only_shared: reach hosts only through their running shared connections, never with an
        SSH login of its own (quick, and never prompts: for shell completion)."""
        self.settings = settings or load_settings(Path(config) if config else None)
        self._warn = warn
        self._only_shared = only_shared
        self._connections: dict[str, HostConnection] = {}
        self._lock = threading.Lock()
        # Team host name -> alias of the client config, as the agents said.
        self._team_aliases: dict[str, str] = {}

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            connections, self._connections = list(self._connections.values()), {}
        for connection in connections:
            connection.close()

    # -- hosts -----------------------------------------------------------------------------

    @property
    def hosts(self) -> list[str]:
        """The host aliases of the client config."""
        return list(self.settings.hosts)

    def connection(self, host: str | None = None) -> HostConnection:
        """The open connection to a host (the default host when None)."""
        alias, _ = self.settings.host(host)
        with self._lock:
            known = self._connections.get(alias)
        if known is not None:
            return known
        if self._only_shared:
            shared = open_shared(alias, self.settings)
            if shared is None:
                raise HostUnreachable(f"{alias}: no shared connection is open")
            opened = shared
        else:
            opened = open_host(alias, self.settings, self._warn)
        with self._lock:
            kept = self._connections.setdefault(alias, opened)
        if kept is not opened:
            opened.close()
        return kept

    def _drop(self, alias: str) -> None:
        with self._lock:
            connection = self._connections.pop(alias, None)
        if connection is not None:
            connection.close()

    def each_host(
        self, action: Callable[[HostConnection], T], hosts: Sequence[str] | None = None
    ) -> list[tuple[str, T | ClientError]]:
        """action on each host at once (every host of the config by default); a host that
        fails gives its ClientError in place of a result."""
        aliases = list(hosts) if hosts else self.hosts
        if not aliases:
            self.settings.host(None)  # raises the "no hosts configured" error

        def run(alias: str) -> T | ClientError:
            try:
                return action(self.connection(alias))
            except ClientError as exc:
                return exc

        with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
            results = list(pool.map(run, aliases))
        return list(zip(aliases, results, strict=True))

    def host_status(self, host: str | None = None) -> HostStatus:
        connection = self.connection(host)
        return HostStatus.from_wire(connection.agent_info(), connection.alias)

    def hosts_status(self, hosts: Sequence[str] | None = None) -> list[HostStatus | HostDown]:
        """Every host at once: its status, or why it did not answer."""
        results = self.each_host(lambda c: HostStatus.from_wire(c.agent_info(), c.alias), hosts)
        return [
            HostDown(alias, result) if isinstance(result, ClientError) else result
            for alias, result in results
        ]

    def soonest_host(self, gpus: int) -> str:
        """The host where a job of this many GPUs can start soonest: enough GPUs at all, enough
        free ones, then the shortest queue. Hosts that do not answer are warned of and left out."""
        statuses = self.hosts_status()
        up = [s for s in statuses if isinstance(s, HostStatus)]
        if not up:
            raise ClientError(
                "--host auto: no host is reachable",
                fix="see why for each host:",
                commands=("hatrain-client hosts",),
            )
        for down in statuses:
            if isinstance(down, HostDown) and self._warn is not None:
                self._warn(f"warning: --host auto: {down.host} left out ({down.error.status})")
        best = min(
            up,
            key=lambda s: (len(s.gpus) < gpus, s.free_gpus < gpus, s.queue.queued, -s.free_gpus),
        )
        return best.host

    # -- jobs ------------------------------------------------------------------------------

    def submit(
        self,
        config: str | Path,
        *,
        host: str | None = None,
        gpus: int | None = None,
        datasets: dict[str, str | Path] | None = None,
        name: str = "",
        image: str = "",
        min_gpu_memory_mb: int = 0,
        gpu_type: str = "",
        priority: int = 0,
        time_limit_seconds: int = 0,
        team: str = "",
        secrets: Iterable[str] = (),
        on_upload: Callable[[int], None] | None = None,
        team_queue: bool | None = None,
        requeue: bool = False,
    ) -> Job:
        """Check an Axolotl config and its files, upload what the host lacks, and queue it.

        host: an alias, "auto" (where it starts soonest) or None (the default host). In the
        team queue, the only team host it may run on (None or "auto": any), and the files go
        to the default host, which puts them in the team's database with the job.
        gpus: None asks for 1 GPU when the config can only run on a GPU (bf16, flash attention,
        a bitsandbytes optimizer, ...) and the host has GPUs, else 0; either way it is said in
        job.submission (notes, warnings).
        datasets: container dataset names (as in /workspace/data/datasets/NAME) to local files;
        a name that no dataset of the config uses is a warning.
        team_queue: queue it for the first host of the team with GPUs that fit (default: the
        client config's team_queue). requeue: (team queue) run it again elsewhere if its host
        is lost while it runs.
        secrets: environment variables to pass as secrets (HF_TOKEN always, when set).
        on_upload: called with each number of bytes sent.
        Raises BadInput naming every problem before anything is sent."""
        (job,) = self.submit_all(
            [config],
            host=host,
            gpus=gpus,
            datasets=datasets,
            name=name,
            image=image,
            min_gpu_memory_mb=min_gpu_memory_mb,
            gpu_type=gpu_type,
            priority=priority,
            time_limit_seconds=time_limit_seconds,
            team=team,
            secrets=secrets,
            on_upload=on_upload,
            team_queue=team_queue,
            requeue=requeue,
        )
        return job

    def submit_all(
        self,
        configs: Sequence[str | Path],
        *,
        host: str | None = None,
        gpus: int | None = None,
        datasets: dict[str, str | Path] | None = None,
        name: str = "",
        names: Sequence[str] = (),
        image: str = "",
        min_gpu_memory_mb: int = 0,
        gpu_type: str = "",
        priority: int = 0,
        time_limit_seconds: int = 0,
        team: str = "",
        secrets: Iterable[str] = (),
        on_upload: Callable[[int], None] | None = None,
        team_queue: bool | None = None,
        requeue: bool = False,
    ) -> list[Job]:
        """Submit several configs at once, as a sweep or a job array, with submit's options
        for all of them; returns their Jobs in the order of configs, each with its submission.

        Every config is checked first, and BadInput names each one refused before anything is
        sent. Their files are uploaded once (each job's submission.upload is that one upload),
        and the jobs are sent in one call: on a host's own queue the agent queues all of them or
        none (a refusal names the job as jobs[i], its index in configs), and places them in one
        scheduling pass. In the team queue each is submitted in turn once all are checked.
        names: each job's name, one per config (default: each config's file name); name names
        the job of a single config. host "auto" picks the host for the most GPUs any of the
        configs asks for."""
        from hatrain.rpc.limits import BATCH_JOBS

        from .gpu_needs import gpu_only_settings
        from .hash_cache import HashCache
        from .submit import SubmitRequest, prepare_all, secrets_from_env
        from .submit import submit_all as send

        if isinstance(configs, str | Path):
            raise BadInput(f"configs: a list of configs, got the one path {configs}")
        paths = [Path(c) for c in configs]
        if not paths:
            raise BadInput("configs: no config to submit")
        if len(paths) > BATCH_JOBS:
            raise BadInput(
                f"configs: at most {BATCH_JOBS} at once, got {len(paths)}",
                fix=f"submit them in parts of {BATCH_JOBS} or fewer",
            )
        if name and len(paths) > 1:
            raise BadInput(
                f"name {name!r}: one name for {len(paths)} jobs",
                fix="give each its own (names=[...], one per config), or none: each job is "
                "then named by its config's file name",
            )
        if names and len(names) != len(paths):
            raise BadInput(f"names: one per config, got {len(names)} for {len(paths)} configs")
        wanted = JobSpec(
            config_name="",  # from the config, once it is checked
            config_yaml="",
            image=image,
            name="",  # each job's own, below
            gpus=0,  # decided below, from the config's needs and the host's GPUs
            min_gpu_memory_mb=min_gpu_memory_mb,
            gpu_type=gpu_type,
            priority=priority,
            time_limit_seconds=time_limit_seconds,
            team=team,
        )
        in_team = self.settings.team_queue if team_queue is None else team_queue
        if requeue and not in_team:
            raise BadInput("--requeue is for the team queue only", fix="add --team-queue")
        if in_team:
            pinned = "" if host in (None, "auto") else str(host)
            wanted = replace(wanted, requeue=requeue, host=self._team_name(pinned))
        local_datasets = {k: Path(v).expanduser() for k, v in (datasets or {}).items()}
        requests = [
            SubmitRequest(
                config=path,
                spec=replace(wanted, name=job_name),
                datasets=local_datasets,
                secret_names=tuple(secrets),
            )
            for path, job_name in zip(paths, names or [name] * len(paths), strict=True)
        ]
        prepared = prepare_all(requests, HashCache(self.settings.cache_dir))
        secrets_from_env(requests[0].secret_names)  # a missing secret fails before connecting
        notes = [list(ready.analysis.notes) for ready in prepared]
        warnings = [
            [
                f"--dataset {key}=...: no dataset of {request.config} is {key} (its paths name "
                "none such); it was not used"
                for key in request.datasets
                if key not in ready.analysis.datasets_used
            ]
            for request, ready in zip(requests, prepared, strict=True)
        ]
        needs = [gpu_only_settings(ready.analysis.config) for ready in prepared]
        if in_team:
            # The team's hosts check the fit (any of them, or the one named), not this one.
            connection = self.connection(None)
            for request, need, noted in zip(requests, needs, notes, strict=True):
                chosen = gpus if gpus is not None else int(bool(need))
                if gpus is None and chosen:
                    noted.append(
                        f"gpus: 1, as the config can only run on a GPU ({', '.join(need)}); "
                        "--gpus N to choose"
                    )
                request.spec = replace(request.spec, gpus=chosen)
        else:
            if host == "auto":
                host = self.soonest_host(
                    gpus if gpus is not None else max(int(bool(need)) for need in needs)
                )
            connection = self.connection(host)
            for request, need, noted, warned in zip(requests, needs, notes, warnings, strict=True):
                chosen = self._gpus_for(connection, request.spec, gpus, need, noted, warned)
                request.spec = replace(request.spec, gpus=chosen)
        wires, report = send(
            connection, requests, prepared, on_upload or (lambda n: None), team_queue=in_team
        )
        return [
            replace(
                self._job(wire, connection.alias),
                submission=Submission(report, tuple(noted), tuple(warned)),
            )
            for wire, noted, warned in zip(wires, notes, warnings, strict=True)
        ]

    @staticmethod
    def _gpus_for(
        connection: HostConnection,
        wanted: JobSpec,
        gpus: int | None,
        needs: list[str],
        notes: list[str],
        warnings: list[str],
    ) -> int:
        """The GPUs to ask for: as given, or by the config's needs; refused before anything is
        sent when the host has fewer that match."""
        from hatrain.rpc.contract import gpu_accepts

        alias, on_host = connection.alias, list(connection.info.gpus)
        fitting = [
            g
            for g in on_host
            if gpu_accepts(g.name, g.memory_mb, wanted.min_gpu_memory_mb, wanted.gpu_type)
        ]
        why = ", ".join(needs)
        if gpus is None:
            gpus = 1 if needs and fitting else 0
            if gpus:
                notes.append(
                    f"gpus: 1, as the config can only run on a GPU ({why}); --gpus N to choose"
                )
            elif needs:
                warnings.append(
                    f"the config can only run on a GPU ({why}), and {alias} has no GPU that "
                    "fits: it is submitted with none, and Axolotl will most likely fail"
                )
        elif gpus == 0 and needs:
            warnings.append(
                f"--gpus 0, but the config can only run on a GPU ({why}): Axolotl will most "
                "likely fail; give --gpus 1 or more"
            )
        if gpus > len(fitting):
            has = f"{len(fitting)} GPU{'' if len(fitting) == 1 else 's'}"
            if len(fitting) < len(on_host):
                has += f" matching the request ({len(on_host)} in all)"
            raise BadInput(
                f"--gpus {gpus}: {alias} has {has}",
                fix=f"ask for at most {len(fitting)}, or send it to a host that has enough "
                "GPUs (--host NAME, or --host auto); each host's GPUs:",
                commands=("hatrain-client hosts",),
            )
        return gpus

    # -- the team queue --------------------------------------------------------------------

    def _team_name(self, alias: str) -> str:
        """The team's name of a host given by its alias (the same, unless its agent says
        otherwise); "" stays "" (any host)."""
        if not alias:
            return ""
        if alias in self.settings.hosts:
            try:
                named = self.connection(alias).agent_info().team_host
            except ClientError:
                return alias
            return named or alias
        return alias

    def _team_alias(self, team_host: str) -> str | None:
        """The alias of the client config for a host of the team, by its name in the team."""
        if not team_host:
            return None
        if team_host in self.settings.hosts:
            return team_host
        with self._lock:
            known = dict(self._team_aliases)
        if team_host in known:
            return known[team_host]
        for alias, result in self.each_host(lambda c: c.agent_info().team_host):
            if isinstance(result, str) and result:
                known[result] = alias
        with self._lock:
            self._team_aliases.update(known)
        return known.get(team_host)

    def _job(self, wire: pb.Job, alias: str) -> Job:
        """A job record; one from the team queue is shown as on the host that runs it."""
        if wire.from_team_queue and wire.team_host:
            alias = self._team_alias(wire.team_host) or alias
        return Job.from_wire(wire, alias)

    def job(self, job_id: str, *, host: str | None = None) -> Job:
        """The job, from its host (found among all hosts when host is None; a job of the team
        queue from the host that runs it). job_id may be a unique prefix of the id, as docker
        and git take them."""
        connection, wire = self._locate(job_id, host)
        return self._job(wire, connection.alias)

    def _locate(self, job_id: str, host: str | None) -> tuple[HostConnection, pb.Job]:
        connection, wire = self._find(job_id, host)
        if wire.from_team_queue and wire.team_host:
            # The team queue's record: the host that runs (or ran) it has the whole job.
            alias = self._team_alias(wire.team_host)
            if alias is not None and alias != connection.alias:
                try:
                    there = self.connection(alias)
                    return there, there.get_job(wire.id)  # the whole id, if job_id was a prefix
                except ClientError:
                    pass  # that host does not answer: the team's record is what there is
        return connection, wire

    def _find(self, job_id: str, host: str | None) -> tuple[HostConnection, pb.Job]:
        """The job's host and the job: by its id, else by a unique prefix of it, on the given
        host or on every host at once."""
        if host is not None:
            aliases = [host]
        else:
            default, _ = self.settings.host(None)
            aliases = [default, *(h for h in self.hosts if h != default)]

        def find(connection: HostConnection) -> tuple[HostConnection, list[pb.Job]]:
            try:
                return connection, [connection.get_job(job_id)]
            except AgentRefused as exc:
                if exc.code != "NOT_FOUND":
                    raise
            page = connection.list_jobs(
                pb.ListJobsRequest(id_prefix=job_id, page_size=_PREFIX_MATCHES)
            )
            return connection, [j for j in page.jobs if j.id.startswith(job_id)]

        results = self.each_host(find, aliases)
        errors = [(a, r) for a, r in results if isinstance(r, ClientError)]
        found = self._one_per_job(
            [(r[0], j) for _, r in results if not isinstance(r, ClientError) for j in r[1]]
        )
        exact = [(c, j) for c, j in found if j.id == job_id]
        if len(exact) == 1:
            return exact[0]
        if len(found) == 1:
            return found[0]
        if found:
            shown = ", ".join(
                f"{j.id} on {c.alias} ({j.spec.name}, {JobState.from_wire(j.state).value})"
                for c, j in found[:_PREFIX_SHOWN]
            )
            more = " and more" if len(found) > _PREFIX_SHOWN else ""
            raise AmbiguousJobId(
                f"job id {job_id!r} is ambiguous: it begins {shown}{more}",
                fix="give more characters of the id"
                + ("" if host else ", or --host to look on one host only"),
            )
        if len(errors) == len(results):
            raise errors[0][1]
        asked = ", ".join(a for a, r in results if not isinstance(r, ClientError))
        down = "".join(f"; {a} did not answer ({e.message})" for a, e in errors)
        raise JobNotFound(
            f"no job {job_id!r} on {asked}{down}",
            fix="check the id (all of it, or the start of it) in the job list:",
            commands=("hatrain-client queue --all",),
        )

    def _one_per_job(
        self, found: list[tuple[HostConnection, pb.Job]]
    ) -> list[tuple[HostConnection, pb.Job]]:
        """One record per job id: a team job is known to the team queue (through any host) and
        to the hosts that ran it; the record of the host the team says runs it wins, then any
        host's own record, then the team's."""
        by_id: dict[str, list[tuple[HostConnection, pb.Job]]] = {}
        for connection, job in found:
            by_id.setdefault(job.id, []).append((connection, job))
        chosen = []
        for records in by_id.values():
            team = next((j for _, j in records if j.from_team_queue), None)
            runner = self._team_alias(team.team_host) if team is not None else None
            own = [(c, j) for c, j in records if not j.from_team_queue]
            best = next(((c, j) for c, j in own if c.alias == runner), None)
            chosen.append(best or (own[0] if own else records[0]))
        return chosen

    def jobs(
        self,
        *,
        host: str | None = None,
        states: Iterable[JobState | str] | None = None,
        user: str = "",
        mine: bool = False,
        limit: int | None = None,
        on_host_error: Callable[[str, ClientError], None] | None = None,
        team_queue: bool = False,
    ) -> list[Job]:
        """Jobs of every host (or one), oldest first per host; paging is done here.

        states: default the active ones (queued and running); user: only theirs; mine: only
        the caller's. team_queue: the team queue's jobs too (from the default host), merged
        with every host's: a job appears once, as the host that runs it has it. A host that
        fails is passed to on_host_error and skipped; if every host fails, its error is
        raised."""
        wanted = [JobState.parse(s) if isinstance(s, str) else s for s in states or ()]
        wire_states = [s.to_wire() for s in (wanted or ACTIVE_STATES)]

        def listing(connection: HostConnection, team: bool = False) -> list[Job]:
            found: list[Job] = []
            token = ""
            while limit is None or len(found) < limit:
                page = connection.list_jobs(
                    pb.ListJobsRequest(
                        states=wire_states,
                        user=connection.user if mine else user,
                        page_size=_PAGE if limit is None else min(_PAGE, limit - len(found)),
                        page_token=token,
                        team_queue=team,
                    )
                )
                found += [self._job(j, connection.alias) for j in page.jobs]
                token = page.next_page_token
                if not token:
                    break
            return found

        results = self.each_host(listing, [host] if host else None)
        failed = [(a, r) for a, r in results if isinstance(r, ClientError)]
        if failed and len(failed) == len(results):
            raise failed[0][1]
        for alias, error in failed:
            if on_host_error is not None:
                on_host_error(alias, error)
        found = [job for _, r in results if not isinstance(r, ClientError) for job in r]
        if not team_queue:
            return found
        merged = {job.id: job for job in listing(self.connection(None), team=True)}
        for job in found:
            team_record = merged.get(job.id)
            # A host's own record wins where it runs the job (not a stale one of a lost host).
            if team_record is None or team_record.host == job.host:
                merged[job.id] = job
        return list(merged.values())

    def watch(
        self,
        job_id: str,
        *,
        host: str | None = None,
        from_seq: int = 0,
        follow: bool = True,
        kinds: Iterable[type[Event]] = (),
        reconnect_seconds: float = 300.0,
    ) -> Iterator[Event]:
        """The job's events after from_seq, in order; with follow, live until the job ends.

        A dropped connection is reopened (for up to reconnect_seconds) and the events go on
        from the last one received, with no gap and no duplicate. A job waiting in the team
        queue is watched from the host it starts on, once it has started. Log lines come from
        the agent in runs (lines printed together) and are yielded one LogLine each."""
        connection, located = self._locate(job_id, host)
        job_id = located.id
        while located.from_team_queue and located.state not in _ENDED:
            if not follow:
                return
            if located.team_host and self._team_alias(located.team_host) is None:
                raise ClientError(
                    f"job {job_id} runs on {located.team_host}, a host of the team that is not "
                    "in your client config",
                    fix=f"add {located.team_host} under 'hosts:' in the client config",
                )
            time.sleep(_TEAM_WAIT_SECONDS)
            connection, located = self._locate(job_id, None)
        alias = connection.alias
        wire_kinds = [_KIND[k] for k in kinds]
        after = from_seq
        deadline: float | None = None
        delay = _RECONNECT_FIRST_DELAY
        while True:
            request = pb.WatchJobRequest(
                job_id=job_id, from_seq=after, follow=follow, kinds=wire_kinds, packed_lines=True
            )
            try:
                for wire in self.connection(alias).watch_job(request):
                    after = last_seq(wire)
                    deadline, delay = None, _RECONNECT_FIRST_DELAY
                    yield from events_from_wire(wire)
                return
            except (AgentUnavailable, HostUnreachable):
                self._drop(alias)
                deadline = deadline or time.monotonic() + reconnect_seconds
                if not follow or time.monotonic() > deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, _RECONNECT_MAX_DELAY)

    def logs(
        self,
        job_id: str,
        *,
        host: str | None = None,
        tail: int = 0,
        follow: bool = False,
        since: float | None = None,
    ) -> Iterator[LogLine]:
        """The job's output lines (the last `tail` ones, if given; only those printed at or
        after the time `since`, in seconds since the epoch); with follow, until it ends. Each
        line says its step (preprocess, train) and when it was printed."""
        for run in self.log_runs(job_id, host=host, tail=tail, follow=follow, since=since):
            yield from run

    def log_runs(
        self,
        job_id: str,
        *,
        host: str | None = None,
        tail: int = 0,
        follow: bool = False,
        since: float | None = None,
    ) -> Iterator[list[LogLine]]:
        """The lines logs() gives, a list at a time: the lines that came from the agent
        together (printed at once by the job, or read back in one piece). For a printer that
        writes many lines at once: a line a write can cost more than everything the agent
        does with it."""
        connection, found = self._locate(job_id, host)
        request = pb.WatchJobRequest(
            job_id=found.id, follow=follow, kinds=[pb.EVENT_KIND_LOG], tail=tail, packed_lines=True
        )
        for wire in connection.watch_job(request):
            if since is None or wire.time >= since:  # the lines of a run share their time
                run = [e for e in events_from_wire(wire) if isinstance(e, LogLine)]
                if run:
                    yield run

    def wait(self, job_id: str, *, host: str | None = None) -> Job:
        """Block until the job has ended; returns it then."""
        connection, found = self._locate(job_id, host)
        for _event in self.watch(found.id, host=connection.alias, kinds=[StateChange]):
            pass
        return self.job(found.id, host=connection.alias)

    def cancel(self, job_id: str, *, host: str | None = None, wait: bool = False) -> CancelResult:
        """Cancel a queued job at once, or ask a running one to stop (it then ends cancelled);
        with wait, return once it has ended."""
        connection, before_wire = self._locate(job_id, host)
        before = Job.from_wire(before_wire, connection.alias)
        after = Job.from_wire(connection.cancel_job(before.id), connection.alias)
        message = _cancel_message(before, after)
        if wait and not after.ended:
            after = self.wait(before.id, host=connection.alias)
            message = f"job {after.id}: {after.state.value}"
        return CancelResult(after, message)

    def pin(self, job_id: str, pinned: bool, *, host: str | None = None) -> str:
        """Keep a job's data from the host's retention sweeps (or let it expire again); returns
        one line saying what changed."""
        connection, wire = self._locate(job_id, host)
        job_id = wire.id  # a prefix names the whole id
        answer = connection.pin_job(job_id, pinned)
        if answer.pinned == answer.was_pinned:
            return f"job {job_id} on {connection.alias} was already {'un' * (not pinned)}pinned"
        if pinned:
            return (
                f"job {job_id} on {connection.alias} pinned: its run dir, logs and files are kept "
                "until you unpin it"
            )
        return (
            f"job {job_id} on {connection.alias} unpinned: its data expires as the host's "
            "retention settings say"
        )

    def retry(self, job_id: str, *, host: str | None = None) -> Job:
        """Submit an ended job again, with the same config and files, on its host; your own
        HF_TOKEN, if set, goes with it."""
        from .submit import secrets_from_env, submit_spec

        connection, wire = self._locate(job_id, host)
        old = Job.from_wire(wire, connection.alias)
        if not old.readable:
            raise BadInput(
                f"job {old.id} belongs to {old.user}: only its owner, their team and admins "
                "may run it again"
            )
        if not old.ended:
            raise BadInput(
                f"job {old.id} is {old.state.value}: only an ended job can be retried (a "
                "retry now would run it twice)",
                fix="wait for it to end, or cancel it first:",
                commands=(f"hatrain-client wait {old.id}", f"hatrain-client cancel {old.id}"),
            )
        new = submit_spec(
            connection,
            old.spec.retried(old.id),
            secrets_from_env(()),
            team_queue=bool(old.team_host or old.from_team_queue),
        )
        return self._job(new, connection.alias)

    def fetch(
        self,
        job_id: str,
        dest: str | Path | None = None,
        *,
        host: str | None = None,
        include: Iterable[str] = (),
        exclude: Iterable[str] = (),
        on_file: Callable[[str, int], None] | None = None,
        logs: bool = False,
    ) -> FetchReport:
        """Download the job's run directory to dest (default ./hatrain-runs/JOB); files already
        there whole are skipped and a partial one is resumed. With logs, the job's own output
        (both steps, each line with its time) is written beside it, as dest/job-JOB.log."""
        from .fetch import fetch as download
        from .log_text import log_file_lines

        connection, wire = self._locate(job_id, host)
        job = Job.from_wire(wire, connection.alias)
        if job.never_ran:
            raise BadInput(f"job {job.id} {job.never_ran}: it has no outputs to fetch")
        if not job.readable:
            raise BadInput(
                f"job {job.id} belongs to {job.user}: its outputs are for its owner, their "
                "team and admins"
            )
        target = Path(dest) if dest is not None else Path("hatrain-runs") / job.id
        with connection.transferring(f"fetching {job.id}") as sftp:
            report = download(
                sftp,
                job.run_dir,
                target,
                list(include),
                list(exclude),
                on_file=on_file or (lambda p, n: None),
            )
        if not logs:
            return report
        log_path = target / f"job-{job.id}.log"
        target.mkdir(parents=True, exist_ok=True)
        partial = log_path.with_name(log_path.name + ".part")
        count = 0
        with partial.open("w", encoding="utf-8") as out:
            for text in log_file_lines(self.logs(job.id, host=connection.alias)):
                out.write(text + "\n")
                count += 1
        partial.replace(log_path)
        return replace(report, log_file=str(log_path), log_lines=count)

    def tensorboard(
        self,
        job_ids: Sequence[str] = (),
        *,
        mine: bool = False,
        host: str | None = None,
        port: int = 0,
    ) -> TensorBoardSession:
        """TensorBoard over these jobs' run dirs (and, with mine, all of your own), served on
        their host as you and forwarded to a loopback port here (`.url`) until `.close()`.
        Jobs you may not read are refused, naming the job. The jobs must share a host: the
        first job's, else `host`, else the default host."""
        if not job_ids and not mine:
            raise BadInput("name at least one job, or ask for your own (--mine)")
        full_ids: list[str] = []
        connection = self.connection(host) if host is not None or not job_ids else None
        for job_id in job_ids:  # ids in full (a unique prefix is taken), on one host
            found, wire = self._locate(job_id, connection.alias if connection else None)
            connection = connection or found
            full_ids.append(wire.id)
        assert connection is not None
        return TensorBoardSession(
            connection.alias,
            connection.entry,
            connection.ssh_connection(),
            full_ids,
            mine,
            port,
        )

    def curves(self, job_id: str, *, host: str | None = None) -> Curves:
        """Train and eval loss by step."""
        from .plot import curves

        job = self.job(job_id, host=host)
        metrics = [
            e
            for e in self.watch(job.id, host=job.host, follow=False, kinds=[Metrics])
            if isinstance(e, Metrics)
        ]
        return curves(metrics, _logging_steps(job))

    def plot(
        self, job_id: str, output: str | Path | None = None, *, host: str | None = None
    ) -> Path:
        """Draw the job's loss curve (train and eval) as a PNG; returns where it went."""
        from .plot import write_png

        job = self.job(job_id, host=host)
        data = self.curves(job.id, host=job.host)
        if not data.train and not data.eval:
            if job.never_ran:
                raise BadInput(f"job {job.id} {job.never_ran}: it has no loss values")
            if job.ended:
                raise BadInput(
                    f"job {job.id} {job.state.value} before it logged a loss value",
                    fix="see its last lines:",
                    commands=(f"hatrain-client logs {job.id} --tail 50",),
                )
            raise BadInput(f"job {job.id} has no loss values yet")
        path = Path(output) if output is not None else Path(f"{job.id}-loss.png")
        write_png(data, path, f"{job.name} ({job.id})")
        return path


_KIND: dict[type[Event], "pb.EventKind"] = {
    StateChange: pb.EVENT_KIND_STATE,
    LogLine: pb.EVENT_KIND_LOG,
    Metrics: pb.EVENT_KIND_METRICS,
    ProgressUpdate: pb.EVENT_KIND_PROGRESS,
    GpuReading: pb.EVENT_KIND_GPU,
}


def _logging_steps(job: Job) -> int:
    from hatrain.rpc.config_yaml import load_config_yaml

    config = load_config_yaml(job.spec.config_yaml) or {}
    return int(config.get("logging_steps") or 1) if isinstance(config, dict) else 1


def _cancel_message(before: Job, after: Job) -> str:
    if before.ended:
        return f"job {after.id}: not cancelled: it had already {before.state.value}"
    if after.state == JobState.CANCELLED and not after.started_at:
        return f"job {after.id}: cancelled while queued; it never ran"
    if after.ended:
        return f"job {after.id}: {after.state.value}"
    return (
        f"job {after.id}: cancel requested; it is stopping (SIGTERM, then SIGKILL after the "
        f"host's grace period). Follow it: hatrain-client wait {after.id}"
    )
