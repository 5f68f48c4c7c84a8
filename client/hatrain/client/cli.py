"""hatrain-client: the command line. Each verb is small; errors become one line at one place.

Exit codes: see hatrain.client.errors (0 ok, 65 bad input, 69 unreachable, 77 SSH auth/host key,
130 detached or cancelled; `wait` and a followed `submit` return the failed job's exit code).
"""

import concurrent.futures
import contextlib
import functools
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
import yaml
from hatrain.rpc.v1 import agent_pb2 as pb

from . import records
from .errors import EXIT_DETACHED, BadInput, ClientError
from .session import HostSession, client_version
from .settings import ClientSettings, load_settings

if TYPE_CHECKING:
    from rich.console import Console

T = TypeVar("T")
ACTIVE = [
    pb.JOB_STATE_QUEUED,
    pb.JOB_STATE_STARTING,
    pb.JOB_STATE_PREPROCESSING,
    pb.JOB_STATE_TRAINING,
]


class App:
    def __init__(self, config: Path | None) -> None:
        self._config = config
        self._settings: ClientSettings | None = None

    # rich is imported only when something is drawn: --json and quiet paths start faster.
    @functools.cached_property
    def out(self) -> "Console":
        from rich.console import Console

        return Console(highlight=False)

    @functools.cached_property
    def err(self) -> "Console":
        from rich.console import Console

        return Console(stderr=True, highlight=False)

    @property
    def settings(self) -> ClientSettings:
        if self._settings is None:
            self._settings = load_settings(self._config)
        return self._settings

    def session(self, host: str | None) -> HostSession:
        alias, entry = self.settings.host(host)
        session = HostSession(alias, entry, self.settings)
        try:
            return session.open(warn=lambda m: self.err.print(m, style="yellow", markup=False))
        except BaseException:
            session.close()
            raise

    def each_host(self, host: str | None, action: Callable[[HostSession], T]) -> list[Any]:
        """Run action on one host or, without --host, on every host at once; a host that is down
        gives its ClientError in place of a result."""
        aliases = [host] if host else list(self.settings.hosts)
        if not aliases:
            self.settings.host(None)  # raises the "no hosts configured" error

        def run(alias: str) -> Any:
            try:
                with self.session(alias) as session:
                    return action(session)
            except ClientError as exc:
                return exc

        with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
            results = list(pool.map(run, aliases))
        return list(zip(aliases, results, strict=True))

    def show_job(
        self, job: pb.Job, host: str, as_json: bool, text: Callable[[], str], **extra: Any
    ) -> None:
        """The job as JSON (--json, with extra fields), or as the text for people."""
        if as_json:
            records.print_json(records.to_dict(job, host=host, **extra))
        else:
            self.out.print(text(), markup=False)

    def report_down(self, results: list[tuple[str, Any]]) -> None:
        for alias, result in results:
            if isinstance(result, ClientError):
                self.err.print(f"warning: {alias}: {result.message}", markup=False)
                if result.fix:
                    self.err.print(f"  fix: {result.fix}", markup=False)


class Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ClientError as exc:
            click.echo(f"error: {exc.message}", err=True)
            if exc.fix:
                click.echo(f"  fix: {exc.fix}", err=True)
            ctx.exit(exc.exit_code)


pass_app = click.make_pass_decorator(App)
host_option = click.option("--host", "-H", help="Host alias from the client config.")
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead.")


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="HATRAIN_CLIENT_CONFIG",
    help="Client config (default: $XDG_CONFIG_HOME/hatrain/client.yml).",
)
@click.version_option(client_version(), prog_name="hatrain-client")
@click.pass_context
def main(ctx: click.Context, config: Path | None) -> None:
    """Submit Axolotl fine-tuning jobs to your GPU hosts and follow them live.

    \b
    Exit codes: 0 ok; 1 job failed without an exit code; 2 usage; 65 bad input;
    69 host or agent unreachable; 77 SSH authentication or host key; 130 detached
    (Ctrl-C) or job cancelled; otherwise the failed job's own exit code.
    """
    ctx.obj = App(config)


def job_exit_code(job: pb.Job) -> int:
    if job.state == pb.JOB_STATE_SUCCEEDED:
        return 0
    if job.state == pb.JOB_STATE_CANCELLED:
        return EXIT_DETACHED
    if job.has_exit_code and 0 < job.exit_code < 256:
        return job.exit_code
    return 1


def events(
    session: HostSession,
    job_id: str,
    *,
    follow: bool,
    from_seq: int = 0,
    kinds: list[Any] | None = None,
    tail: int = 0,
) -> Iterator[pb.Event]:
    request = pb.WatchJobRequest(
        job_id=job_id, from_seq=from_seq, follow=follow, kinds=kinds or [], tail=tail
    )
    for response in session.stream("WatchJob", request):
        yield from response.events


def follow_job(
    app: App, session: HostSession, job_id: str, as_json: bool, from_seq: int = 0
) -> int:
    """Show the job's events until it ends; Ctrl-C detaches and the job keeps running."""
    try:
        from . import render

        follower = render.Follower(app.out)
        with follower:
            for event in events(session, job_id, follow=True, from_seq=from_seq):
                if as_json:
                    records.print_json(records.to_dict(event, job_id=job_id, host=session.alias))
                else:
                    follower.handle(event)
    except KeyboardInterrupt:
        app.err.print(
            f"detached; job {job_id} keeps running. Re-attach: "
            f"hatrain-client watch {job_id} --host {session.alias}",
            markup=False,
        )
        return EXIT_DETACHED
    job = session.call("GetJob", pb.GetJobRequest(job_id=job_id))
    if not as_json:
        app.out.print(render.describe(job, session.alias), markup=False)
    return job_exit_code(job)


def follow_if_asked(
    app: App, session: HostSession, job_id: str, follow: bool | None, as_json: bool
) -> None:
    """--follow / --detach; without either, follow on a terminal (and never with --json)."""
    if follow is None:
        follow = sys.stdout.isatty() and not as_json
    if follow:
        sys.exit(follow_job(app, session, job_id, as_json))


@main.command()
@click.argument("config", type=click.Path(path_type=Path))
@click.option(
    "--host", "-H", help="Host alias from the client config, or auto: where it starts soonest."
)
@click.option("--dataset", "-d", multiple=True, help="NAME=PATH for a container dataset path.")
@click.option("--gpus", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--min-gpu-memory", type=click.IntRange(min=0), default=0, help="MiB per GPU.")
@click.option("--gpu-type", default="", help="Substring of the GPU name, e.g. H200.")
@click.option("--image", default="", help="Container image (default: the host's).")
@click.option("--priority", type=click.IntRange(-1000, 1000), default=0)
@click.option("--name", default="", help="Job name (default: the config's file name).")
@click.option("--time-limit", type=click.IntRange(min=0), default=0, help="Seconds.")
@click.option("--team", default="")
@click.option("--secret", multiple=True, help="Pass this environment variable as a secret.")
@click.option("--follow/--detach", default=None, help="Follow the job (default: on a terminal).")
@json_option
@pass_app
def submit(
    app: App,
    config: Path,
    host: str | None,
    dataset: tuple[str, ...],
    gpus: int,
    min_gpu_memory: int,
    gpu_type: str,
    image: str,
    priority: int,
    name: str,
    time_limit: int,
    team: str,
    secret: tuple[str, ...],
    follow: bool | None,
    as_json: bool,
) -> None:
    """Upload CONFIG's files, submit it, and follow the job.

    Relative paths in CONFIG (datasets, data_files, templates, deepspeed, models, checkpoints,
    custom type modules) are read the way Axolotl reads them, from its working directory: the
    directory you run this command in stands for it, then the folder of CONFIG. Nothing is sent
    if Axolotl would refuse the config or its data; remote and Hub datasets are left to Axolotl.
    """
    from .hash_cache import HashCache
    from .submit import SubmitRequest, parse_dataset_option, prepare, secrets_from_env
    from .submit import submit as do_submit

    request = SubmitRequest(
        config=config,
        datasets=parse_dataset_option(dataset),
        name=name,
        image=image,
        gpus=gpus,
        min_gpu_memory_mb=min_gpu_memory,
        gpu_type=gpu_type,
        priority=priority,
        time_limit_seconds=time_limit,
        team=team,
        secret_names=secret,
    )
    prepared = prepare(request, HashCache(app.settings.cache_dir))
    secrets_from_env(secret)  # fail on a missing secret before connecting
    if host == "auto":
        host = pick_host(app, gpus)
    with app.session(host) as session:
        total = sum(f.path.stat().st_size for f in prepared.analysis.files)
        with upload_progress(app, total) as on_bytes:
            job, report = do_submit(session, request, prepared, on_bytes)
        app.show_job(
            job,
            session.alias,
            as_json,
            lambda: "\n".join(
                [
                    f"job {job.id} queued on {session.alias} (position {job.queue_position}); "
                    f"files: {report.files_present} already there, {report.files_sent} sent "
                    f"({report.bytes_sent} bytes)",
                    *(f"  note: {note}" for note in prepared.analysis.notes),
                ]
            ),
            upload=report.__dict__,
            notes=prepared.analysis.notes,
        )
        follow_if_asked(app, session, job.id, follow, as_json)


def upload_progress(app: App, total: int) -> Any:
    if not sys.stderr.isatty():
        return contextlib.nullcontext(lambda n: None)
    from . import render

    return render.upload_progress(app.err, total)


def pick_host(app: App, gpus: int) -> str:
    """--host auto: where the job can start soonest (enough free GPUs, then the shortest queue)."""

    def score(session: HostSession) -> tuple[int, int, int]:
        info = session.info
        assert info is not None
        free = sum(1 for g in info.gpus if not g.job_id)
        return (0 if free >= gpus else 1, info.queue.queued, -free)

    scored = [(r, a) for a, r in app.each_host(None, score) if not isinstance(r, ClientError)]
    if not scored:
        raise ClientError("--host auto: no host is reachable", fix="see `hatrain-client hosts`")
    return str(min(scored)[1])


@main.command()
@host_option
@json_option
@pass_app
def hosts(app: App, host: str | None, as_json: bool) -> None:
    """Each host's GPUs (free / used) and queue."""
    results = app.each_host(host, lambda s: s.info)
    app.report_down(results)
    if as_json:
        records.print_json(
            [
                {"host": alias, "error": r.message}
                if isinstance(r, ClientError)
                else records.to_dict(r, host=alias)
                for alias, r in results
            ]
        )
    else:
        from . import render

        app.out.print(render.hosts_table(results))
    if all(isinstance(r, ClientError) for _, r in results):
        sys.exit(results[0][1].exit_code)


@main.command()
@host_option
@click.option("--user", "-u", default="", help="Only this user's jobs.")
@click.option("--mine", is_flag=True, help="Only my jobs.")
@click.option("--state", "-s", "states", multiple=True, help="Only jobs in this state.")
@click.option("--all", "all_states", is_flag=True, help="Finished jobs too.")
@click.option("--limit", type=click.IntRange(1, 10000), default=200, show_default=True)
@json_option
@pass_app
def queue(
    app: App,
    host: str | None,
    user: str,
    mine: bool,
    states: tuple[str, ...],
    all_states: bool,
    limit: int,
    as_json: bool,
) -> None:
    """Jobs on every host (or one), queued and running first."""
    try:
        wanted: list[Any] = [records.parse_state(s) for s in states]
    except ValueError as exc:
        raise BadInput(f"--state: {exc}") from None
    if not wanted and not all_states:
        wanted = ACTIVE

    def listing(session: HostSession) -> list[pb.Job]:
        jobs: list[pb.Job] = []
        token = ""
        while len(jobs) < limit:
            page = session.call(
                "ListJobs",
                pb.ListJobsRequest(
                    states=wanted,
                    user=session.user if mine else user,
                    page_size=min(500, limit - len(jobs)),
                    page_token=token,
                ),
            )
            jobs += page.jobs
            token = page.next_page_token
            if not token:
                break
        return jobs

    results = app.each_host(host, listing)
    rows = [(a, j) for a, r in results if not isinstance(r, ClientError) for j in r]
    rows.sort(key=lambda row: (row[1].state in records.TERMINAL, row[1].created_at))
    app.report_down(results)
    if as_json:
        records.print_json([records.to_dict(j, host=a) for a, j in rows])
    else:
        from . import render

        app.out.print(render.jobs_table(rows))
    if all(isinstance(r, ClientError) for _, r in results):
        sys.exit(results[0][1].exit_code)


@main.command()
@click.argument("job_id")
@host_option
@json_option
@pass_app
def status(app: App, job_id: str, host: str | None, as_json: bool) -> None:
    """One job's state, progress, metrics, evaluations (by step) and failure reason."""
    from .plot import curves

    with app.session(host) as session:
        job = session.call("GetJob", pb.GetJobRequest(job_id=job_id))
        metrics = list(events(session, job_id, follow=False, kinds=[pb.EVENT_KIND_METRICS]))
    config = yaml.safe_load(job.spec.config_yaml) or {}
    evals = curves(metrics, int(config.get("logging_steps") or 1)).eval

    def text() -> str:
        from . import render

        shown = ", ".join(f"{loss:.4g} at step {step}" for step, loss in evals[-5:])
        return render.describe(job, session.alias) + (f"\n  eval loss {shown}" if evals else "")

    evals_json = [{"step": step, "eval_loss": loss} for step, loss in evals]
    app.show_job(job, session.alias, as_json, text, evals=evals_json)


@main.command()
@click.argument("job_id")
@host_option
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines until the job ends.")
@click.option("--tail", "-n", type=click.IntRange(min=0), default=0, help="Only the last N lines.")
@pass_app
def logs(app: App, job_id: str, host: str | None, follow: bool, tail: int) -> None:
    """The job's output lines (both steps)."""
    with app.session(host) as session:
        try:
            for event in events(
                session, job_id, follow=follow, kinds=[pb.EVENT_KIND_LOG], tail=tail
            ):
                click.echo(event.line)
        except KeyboardInterrupt:
            sys.exit(EXIT_DETACHED)


@main.command()
@click.argument("job_id")
@host_option
@click.option("--from-seq", type=click.IntRange(min=0), default=0, help="Events after this one.")
@json_option
@pass_app
def watch(app: App, job_id: str, host: str | None, from_seq: int, as_json: bool) -> None:
    """Follow a job: every event from the start (or --from-seq), until it ends."""
    with app.session(host) as session:
        sys.exit(follow_job(app, session, job_id, as_json, from_seq))


@main.command()
@click.argument("job_id")
@host_option
@click.option("--wait", "wait_end", is_flag=True, help="Wait until the job has ended.")
@json_option
@pass_app
def cancel(app: App, job_id: str, host: str | None, wait_end: bool, as_json: bool) -> None:
    """Cancel a queued or running job (yours, unless you are an admin).

    A queued job is cancelled at once; a running one is asked to stop (SIGTERM, then SIGKILL
    after the host's grace period) and ends cancelled. With --wait, waits for that end and
    exits 130 once it is cancelled.
    """
    with app.session(host) as session:
        before = session.call("GetJob", pb.GetJobRequest(job_id=job_id))
        job = session.call("CancelJob", pb.CancelJobRequest(job_id=job_id))
        message = records.cancel_message(before, job)
        if wait_end and job.state not in records.TERMINAL:
            for _ in events(session, job_id, follow=True, kinds=[pb.EVENT_KIND_STATE]):
                pass
            job = session.call("GetJob", pb.GetJobRequest(job_id=job_id))
            message = f"job {job.id}: {records.state_name(job.state)}"
    app.show_job(job, session.alias, as_json, lambda: message, outcome=message)
    if wait_end:
        sys.exit(job_exit_code(job))


@main.command()
@click.argument("job_id")
@host_option
@click.option("--follow/--detach", default=None)
@json_option
@pass_app
def retry(app: App, job_id: str, host: str | None, follow: bool | None, as_json: bool) -> None:
    """Submit a finished job again with the same config and files."""
    import uuid

    from .submit import secrets_from_env

    with app.session(host) as session:
        old = session.call("GetJob", pb.GetJobRequest(job_id=job_id))
        spec = pb.JobSpec()
        spec.CopyFrom(old.spec)
        spec.retry_of = old.id
        job = session.call(
            "SubmitJob",
            pb.SubmitJobRequest(
                spec=spec, secrets=secrets_from_env(()), client_request_id=uuid.uuid4().hex
            ),
        ).job
        app.show_job(
            job,
            session.alias,
            as_json,
            lambda: (
                f"job {job.id} (retry of {old.id}) queued on {session.alias} "
                f"(position {job.queue_position})"
            ),
        )
        follow_if_asked(app, session, job.id, follow, as_json)


@main.command()
@click.argument("job_id")
@host_option
@json_option
@pass_app
def wait(app: App, job_id: str, host: str | None, as_json: bool) -> None:
    """Wait for the job to end; the exit code mirrors the job's."""
    with app.session(host) as session:
        try:
            for _ in events(session, job_id, follow=True, kinds=[pb.EVENT_KIND_STATE]):
                pass
        except KeyboardInterrupt:
            sys.exit(EXIT_DETACHED)
        job = session.call("GetJob", pb.GetJobRequest(job_id=job_id))
    failure = f" ({job.failure_reason}: {job.hint})" if job.failure_reason else ""
    if job.state == pb.JOB_STATE_FAILED:
        failure += f"\n{records.logs_hint(job.id)}"
    app.show_job(
        job,
        session.alias,
        as_json,
        lambda: f"job {job.id}: {records.state_name(job.state)}{failure}",
    )
    sys.exit(job_exit_code(job))


@main.command()
@click.argument("job_id")
@click.argument("dest", required=False, type=click.Path(file_okay=False, path_type=Path))
@host_option
@click.option("--include", "-i", multiple=True, help="Only paths matching this glob.")
@click.option("--exclude", "-x", multiple=True, help="Skip paths matching this glob.")
@json_option
@pass_app
def fetch(
    app: App,
    job_id: str,
    dest: Path | None,
    host: str | None,
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    as_json: bool,
) -> None:
    """Download the job's run directory (resumable) to DEST (default ./hatrain-runs/JOB)."""
    from .fetch import fetch as do_fetch

    dest = dest or Path("hatrain-runs") / job_id
    with app.session(host) as session:
        job = session.call("GetJob", pb.GetJobRequest(job_id=job_id))
        if never_ran := records.never_ran(job):
            raise BadInput(f"job {job_id} {never_ran}: it has no outputs to fetch")
        with session.transferring(f"fetching {job_id}") as sftp:
            report = do_fetch(
                sftp,
                job.run_dir,
                dest,
                list(include),
                list(exclude),
                on_file=lambda p, n: None if as_json else app.err.print(f"  {p} ({n} bytes)"),
            )
    if as_json:
        records.print_json({"job_id": job_id, "dest": str(dest), **report.__dict__})
    else:
        app.out.print(
            f"{dest}: {report.files_fetched} files fetched ({report.bytes_fetched} bytes), "
            f"{report.files_skipped} already here",
            markup=False,
        )


@main.command()
@click.argument("job_id")
@host_option
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--terminal/--no-terminal", default=True, help="Also draw it in the terminal.")
@pass_app
def plot(app: App, job_id: str, host: str | None, output: Path | None, terminal: bool) -> None:
    """The job's loss curve as a PNG (and in the terminal)."""
    from .plot import curves, terminal_chart, write_png

    with app.session(host) as session:
        job = session.call("GetJob", pb.GetJobRequest(job_id=job_id))
        metrics = list(events(session, job_id, follow=False, kinds=[pb.EVENT_KIND_METRICS]))
    config = yaml.safe_load(job.spec.config_yaml) or {}
    logging_steps = int(config.get("logging_steps") or 1)
    data = curves(metrics, logging_steps)
    if not data.train and not data.eval:
        if never_ran := records.never_ran(job):
            raise BadInput(f"job {job_id} {never_ran}: it has no loss values")
        if job.state in records.TERMINAL:
            raise BadInput(
                f"job {job_id} {records.state_name(job.state)} before it logged a loss value",
                fix=f"see: hatrain-client logs {job_id} --tail 50",
            )
        raise BadInput(f"job {job_id} has no loss values yet")
    output = output or Path(f"{job_id}-loss.png")
    title = f"{job.spec.name} ({job_id})"
    write_png(data, output, title)
    if terminal:
        click.echo(terminal_chart(data, title))
    app.out.print(f"wrote {output}", markup=False)


@main.command("check-dataset")
@click.argument("files", nargs=-1, type=click.Path(path_type=Path))
@click.option(
    "--axolotl-config",
    "-a",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Read FILEs as this config's first chat dataset does (mappings, roles, template); "
    "without FILE, check every local dataset of the config.",
)
@pass_app
def check_dataset(app: App, files: tuple[Path, ...], axolotl_config: Path | None) -> None:
    """Check chat datasets the way Axolotl's chat_template strategy reads them.

    Each finding names the file, line and field, and how to fix it. Relative paths in the
    config are read from the current directory, then beside the config (as `submit` does).
    """
    from .check import check_datasets

    if not files and axolotl_config is None:
        raise click.UsageError("give FILE(s), --axolotl-config CONFIG, or both")
    report = check_datasets(list(files), axolotl_config)
    for note in report.notes:
        click.echo(f"note: {note}")
    for path, count in report.checked:
        click.echo(f"{path}: ok ({count} records)")
    for finding in report.findings:
        click.echo(str(finding))
    if report.findings:
        sys.exit(BadInput.exit_code)


@main.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print the shell completion script, e.g. `eval "$(hatrain-client completion bash)"`."""
    from click.shell_completion import get_completion_class

    cls = get_completion_class(shell)
    assert cls is not None
    click.echo(cls(main, {}, "hatrain-client", "_HATRAIN_CLIENT_COMPLETE").source())
