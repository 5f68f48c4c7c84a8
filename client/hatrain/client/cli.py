"""hatrain-client: the command line, as presentation over the library (hatrain.client.api).

Each verb calls the Client and prints what it returns; errors become one line at one place.
Exit codes: see hatrain.client.errors (0 ok, 65 bad input, 69 unreachable, 77 SSH auth/host key,
130 detached or cancelled; `wait` and a followed `submit` return the failed job's exit code).
"""

import contextlib
import functools
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .api import Client, HostDown
from .errors import EXIT_DETACHED, BadInput, ClientError
from .records import Job, JobState, print_json, to_json
from .settings import load_settings
from .transport import client_version

if TYPE_CHECKING:
    from rich.console import Console


class App:
    def __init__(self, config: Path | None) -> None:
        self._config = config

    # rich is imported only when something is drawn: --json and quiet paths start faster.
    @functools.cached_property
    def out(self) -> "Console":
        from rich.console import Console

        return Console(highlight=False)

    @functools.cached_property
    def err(self) -> "Console":
        from rich.console import Console

        return Console(stderr=True, highlight=False)

    @functools.cached_property
    def client(self) -> Client:
        return Client(
            settings=load_settings(self._config),
            warn=lambda m: self.err.print(m, style="yellow", markup=False),
        )

    def show_job(self, job: Job, as_json: bool, text: Callable[[], str], **extra: Any) -> None:
        """The job as JSON (--json, with extra fields), or as the text for people."""
        if as_json:
            print_json(to_json(job, **extra))
        else:
            self.out.print(text(), markup=False)

    def warn_down(self, alias: str, error: ClientError) -> None:
        self.err.print(f"warning: {alias}: {error.message}", markup=False)
        if error.fix:
            self.err.print(f"  fix: {error.fix}", markup=False)


class Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ClientError as exc:
            click.echo(f"error: {exc.message}", err=True)
            if exc.fix:
                click.echo(f"  fix: {exc.fix}", err=True)
            ctx.exit(exc.exit_code)
        finally:
            app = ctx.find_object(App)
            if app is not None and "client" in app.__dict__:
                app.client.close()


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


def follow_job(app: App, job: Job, as_json: bool, from_seq: int = 0) -> int:
    """Show the job's events until it ends; Ctrl-C detaches and the job keeps running."""
    try:
        from . import render

        follower = render.Follower(app.out)
        with follower:
            for event in app.client.watch(job.id, host=job.host, from_seq=from_seq):
                if as_json:
                    print_json(to_json(event, job_id=job.id, host=job.host))
                else:
                    follower.handle(event)
    except KeyboardInterrupt:
        app.err.print(
            f"detached; job {job.id} keeps running. Re-attach: "
            f"hatrain-client watch {job.id} --host {job.host}",
            markup=False,
        )
        return EXIT_DETACHED
    ended = app.client.job(job.id, host=job.host)
    if not as_json:
        app.out.print(render.describe(ended), markup=False)
    return ended.exit_status


def follow_if_asked(app: App, job: Job, follow: bool | None, as_json: bool) -> None:
    """--follow / --detach; without either, follow on a terminal (and never with --json)."""
    if follow is None:
        follow = sys.stdout.isatty() and not as_json
    if follow:
        sys.exit(follow_job(app, job, as_json))


def parse_dataset_option(values: tuple[str, ...]) -> dict[str, str | Path]:
    mapping: dict[str, str | Path] = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise BadInput(f"--dataset {value}: expected NAME=PATH, e.g. sample.jsonl=data/x.jsonl")
        mapping[name] = Path(path).expanduser()
    return mapping


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
@click.option("--team", default="", help="The team the job counts against (caps, fair share).")
@click.option(
    "--team-queue/--own-queue",
    default=None,
    help="Queue it for the first host of the team with GPUs that fit, or on one host "
    "(default: team_queue in the client config). With --team-queue, --host names the only "
    "host it may run on.",
)
@click.option("--requeue", is_flag=True, help="Team queue: run it again if its host is lost.")
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
    team_queue: bool | None,
    requeue: bool,
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
    with upload_progress(app) as on_bytes:
        job = app.client.submit(
            config,
            host=host,
            gpus=gpus,
            datasets=parse_dataset_option(dataset),
            name=name,
            image=image,
            min_gpu_memory_mb=min_gpu_memory,
            gpu_type=gpu_type,
            priority=priority,
            time_limit_seconds=time_limit,
            team=team,
            secrets=secret,
            on_upload=on_bytes,
            team_queue=team_queue,
            requeue=requeue,
        )
    assert job.submission is not None
    report, notes = job.submission.upload, job.submission.notes
    app.show_job(
        job,
        as_json,
        lambda: "\n".join(
            [
                f"job {job.id} queued "
                f"{'in the team queue' if job.from_team_queue else 'on ' + job.host} "
                f"(position {job.queue_position}); "
                f"files: {report.files_present} already there, {report.files_sent} sent "
                f"({report.bytes_sent} bytes)",
                *(f"  note: {note}" for note in notes),
            ]
        ),
        upload=report,
        notes=notes,
    )
    follow_if_asked(app, job, follow, as_json)


@contextlib.contextmanager
def upload_progress(app: App) -> Iterator[Callable[[int], None]]:
    """A transfer bar on a terminal's stderr, started when the first bytes go out."""
    if not sys.stderr.isatty():
        yield lambda n: None
        return
    from . import render

    with contextlib.ExitStack() as stack:
        bar: list[Callable[[int], None]] = []

        def advance(count: int) -> None:
            if not bar:
                bar.append(stack.enter_context(render.upload_progress(app.err, None)))
            bar[0](count)

        yield advance


@main.command()
@host_option
@json_option
@pass_app
def hosts(app: App, host: str | None, as_json: bool) -> None:
    """Each host's GPUs (free / used) and queue."""
    statuses = app.client.hosts_status([host] if host else None)
    for status in statuses:
        if isinstance(status, HostDown):
            app.warn_down(status.host, status.error)
    if as_json:
        print_json(
            [
                {"host": s.host, "error": s.error.message}
                if isinstance(s, HostDown)
                else to_json(s)
                for s in statuses
            ]
        )
    else:
        from . import render

        app.out.print(
            render.hosts_table(
                (s.host, s.error.message) if isinstance(s, HostDown) else s for s in statuses
            )
        )
        team = next((s.team for s in statuses if not isinstance(s, HostDown) and s.team), ())
        if team:
            app.out.print(render.team_table(team))
    down = [s for s in statuses if isinstance(s, HostDown)]
    if len(down) == len(statuses):
        sys.exit(down[0].error.exit_code)


@main.command()
@host_option
@click.option("--user", "-u", default="", help="Only this user's jobs.")
@click.option("--mine", is_flag=True, help="Only my jobs.")
@click.option("--state", "-s", "states", multiple=True, help="Only jobs in this state.")
@click.option("--all", "all_states", is_flag=True, help="Finished jobs too.")
@click.option("--limit", type=click.IntRange(1, 10000), default=200, show_default=True)
@click.option(
    "--team-queue", is_flag=True, help="The team queue too, merged with every host's jobs."
)
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
    team_queue: bool,
    as_json: bool,
) -> None:
    """Jobs on every host (or one), queued and running first."""
    try:
        wanted = [JobState.parse(s) for s in states] or (list(JobState) if all_states else None)
    except ValueError as exc:
        raise BadInput(f"--state: {exc}") from None
    jobs = app.client.jobs(
        host=host,
        states=wanted,
        user=user,
        mine=mine,
        limit=limit,
        on_host_error=app.warn_down,
        team_queue=team_queue or app.client.settings.team_queue,
    )
    jobs.sort(key=lambda job: (job.ended, job.created_at))
    if as_json:
        print_json([to_json(j, host=j.host) for j in jobs])
    else:
        from . import render

        app.out.print(render.jobs_table(jobs))


@main.command()
@click.argument("job_id")
@host_option
@json_option
@pass_app
def status(app: App, job_id: str, host: str | None, as_json: bool) -> None:
    """One job's state, progress, metrics, evaluations (by step) and failure reason."""
    job = app.client.job(job_id, host=host)
    evals = app.client.curves(job_id, host=job.host).eval if job.readable else []

    def text() -> str:
        from . import render

        shown = ", ".join(f"{loss:.4g} at step {step}" for step, loss in evals[-5:])
        return render.describe(job) + (f"\n  eval loss {shown}" if evals else "")

    evals_json = [{"step": step, "eval_loss": loss} for step, loss in evals]
    app.show_job(job, as_json, text, evals=evals_json)


@main.command()
@click.argument("job_id")
@host_option
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines until the job ends.")
@click.option("--tail", "-n", type=click.IntRange(min=0), default=0, help="Only the last N lines.")
@pass_app
def logs(app: App, job_id: str, host: str | None, follow: bool, tail: int) -> None:
    """The job's output lines (both steps)."""
    try:
        from .render import safe

        for line in app.client.logs(job_id, host=host, tail=tail, follow=follow):
            click.echo(safe(line.line))
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
    sys.exit(follow_job(app, app.client.job(job_id, host=host), as_json, from_seq))


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
    result = app.client.cancel(job_id, host=host, wait=wait_end)
    app.show_job(result.job, as_json, lambda: result.message, outcome=result.message)
    if wait_end:
        sys.exit(result.job.exit_status)


@main.command()
@click.argument("job_id")
@host_option
@click.option("--follow/--detach", default=None)
@json_option
@pass_app
def retry(app: App, job_id: str, host: str | None, follow: bool | None, as_json: bool) -> None:
    """Submit a finished job again with the same config and files."""
    job = app.client.retry(job_id, host=host)
    app.show_job(
        job,
        as_json,
        lambda: (
            f"job {job.id} (retry of {job_id}) queued on {job.host} (position {job.queue_position})"
        ),
    )
    follow_if_asked(app, job, follow, as_json)


@main.command()
@click.argument("job_id")
@host_option
@json_option
@pass_app
def wait(app: App, job_id: str, host: str | None, as_json: bool) -> None:
    """Wait for the job to end; the exit code mirrors the job's."""
    try:
        job = app.client.wait(job_id, host=host)
    except KeyboardInterrupt:
        sys.exit(EXIT_DETACHED)
    from .render import logs_hint, safe

    failure = f" ({job.failure_reason}: {safe(job.hint)})" if job.failure_reason else ""
    if job.state == JobState.FAILED:
        failure += f"\n{logs_hint(job.id)}"
    app.show_job(job, as_json, lambda: f"job {job.id}: {job.state.value}{failure}")
    sys.exit(job.exit_status)


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
    dest = dest or Path("hatrain-runs") / job_id
    report = app.client.fetch(
        job_id,
        dest,
        host=host,
        include=include,
        exclude=exclude,
        on_file=lambda p, n: None if as_json else app.err.print(f"  {p} ({n} bytes)"),
    )
    if as_json:
        print_json({"job_id": job_id, "dest": str(dest), **to_json(report)})
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
    from .plot import terminal_chart

    job = app.client.job(job_id, host=host)
    path = app.client.plot(job_id, output, host=job.host)
    if terminal:
        data = app.client.curves(job_id, host=job.host)
        click.echo(terminal_chart(data, f"{job.name} ({job_id})"))
    app.out.print(f"wrote {path}", markup=False)


@main.command("check-dataset")
@click.argument("files", nargs=-1, type=click.Path(path_type=Path))
@click.option(
    "--axolotl-config",
    "-a",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Read FILEs as this config's first chat dataset does (mappings, roles, template); "
    "without FILE, check every local dataset of the config.",
)
def check_dataset(files: tuple[Path, ...], axolotl_config: Path | None) -> None:
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
