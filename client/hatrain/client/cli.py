"""hatrain-client: the command line, as presentation over the library (hatrain.client.api).

Each verb calls the Client and prints what it returns; errors become one line at one place,
with the fix on a line of its own and each command of the fix on one more, never wrapped.
Exit codes: see hatrain.client.errors (0 ok, 65 bad input, 69 unreachable, 77 SSH auth/host key,
130 detached or cancelled; `wait` and a followed `submit` return the failed job's exit code).
"""

import contextlib
import datetime
import functools
import re
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from click.core import ParameterSource
from click.shell_completion import CompletionItem

from .api import Client, HostDown
from .errors import EXIT_DETACHED, BadInput, ClientError
from .records import Job, JobState, UploadReport, print_json, to_json
from .settings import ClientSettings, load_settings
from .transport import client_version

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table


def echo_error(prefix: str, error: ClientError) -> None:
    """`error: ...` (or a warning), then `  fix: ...`, then each command on a line of its own:
    printed as they are, never wrapped, so that a command can be pasted whole."""
    click.echo(f"{prefix}{error.message}", err=True)
    if error.fix:
        click.echo(f"  fix: {error.fix}", err=True)
    for command in error.commands:
        click.echo(f"    {command}", err=True)


class App:
    def __init__(self, config: Path | None, given_as: str) -> None:
        self._config = config
        self._given_as = given_as

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
    def settings(self) -> ClientSettings:
        return load_settings(self._config, self._given_as)

    @functools.cached_property
    def client(self) -> Client:
        return Client(settings=self.settings, warn=self.warn)

    def warn(self, message: str) -> None:
        """A warning on stderr, whole: a long one is never cut into lines."""
        click.secho(message, fg="yellow", err=True)

    def say(self, text: str) -> None:
        """Text for people on stdout, as it is (what came from jobs is escaped already)."""
        click.echo(text)

    def table(self, table: "Table") -> None:
        """A table at the terminal's width; piped, as wide as its content, so that nothing in
        it is cut for a script."""
        if self.out.is_terminal:
            self.out.print(table)
            return
        import io

        from rich.console import Console
        from rich.measure import Measurement

        width = Measurement.get(self.out, self.out.options.update_width(1 << 16), table).maximum
        text = io.StringIO()
        Console(file=text, width=max(width, 20), highlight=False).print(table)
        for line in text.getvalue().splitlines():
            click.echo(line.rstrip())

    def show_job(self, job: Job, as_json: bool, text: Callable[[], str], **extra: Any) -> None:
        """The job as JSON (--json, with extra fields), or as the text for people."""
        self.remember([job])
        if as_json:
            print_json(to_json(job, **extra))
        else:
            self.say(text())

    def remember(self, jobs: list[Job]) -> None:
        from .recent import remember

        remember(self.settings.cache_dir, jobs)

    def warn_down(self, alias: str, error: ClientError) -> None:
        named = error.message.startswith(f"{alias}: ")
        echo_error("warning: " if named else f"warning: {alias}: ", error)


class Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ClientError as exc:
            echo_error("error: ", exc)
            ctx.exit(exc.exit_code)
        finally:
            app = ctx.find_object(App)
            if app is not None and "client" in app.__dict__:
                app.client.close()


pass_app = click.make_pass_decorator(App)


# -- completion -------------------------------------------------------------------------------


def _completion_settings(ctx: click.Context) -> ClientSettings | None:
    root = ctx.find_root()
    try:
        return load_settings(root.params.get("config"))
    except ClientError:
        return None


def complete_host(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
    """Host aliases of the client config (and `auto`, where a verb takes it)."""
    settings = _completion_settings(ctx)
    names = list(settings.hosts) if settings else []
    if ctx.command.name == "submit":
        names.append("auto")
    return [CompletionItem(n) for n in names if n.startswith(incomplete)]


def complete_job_id(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
    """Job ids: the active jobs of every host whose shared connection is open (no new SSH
    login: completion must be quick and never prompt), then the jobs this client saw lately."""
    settings = _completion_settings(ctx)
    if settings is None:
        return []
    from .recent import RecentJob, recall

    found: dict[str, RecentJob] = {}
    with contextlib.suppress(ClientError), Client(settings=settings, only_shared=True) as client:
        for job in client.jobs(limit=200, on_host_error=lambda alias, error: None):
            found[job.id] = RecentJob(job.id, job.host, job.name, job.state.value)
    for known in recall(settings.cache_dir):
        found.setdefault(known.id, known)
    return [
        CompletionItem(r.id, help=f"{r.host}: {r.name} ({r.state})")
        for r in found.values()
        if r.id.startswith(incomplete)
    ]


def job_argument(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.argument("job_id", metavar="JOB", shell_complete=complete_job_id)(func)


def host_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--host",
        "-H",
        metavar="HOST",
        shell_complete=complete_host,
        help="Look only on this host (an alias of the client config). Without it, the job is "
        "found on whichever host has it.",
    )(func)


json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print JSON for scripts instead (times in ISO-8601)."
)


# -- the group --------------------------------------------------------------------------------


@click.group(
    cls=Group,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.option(
    "--config",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="HATRAIN_CLIENT_CONFIG",
    help="The client config: your hosts and how to reach them (default: "
    "$HATRAIN_CLIENT_CONFIG, else $XDG_CONFIG_HOME/hatrain/client.yml).",
)
@click.version_option(
    client_version(), prog_name="hatrain-client", help="Show the version and exit."
)
@click.pass_context
def main(ctx: click.Context, config: Path | None) -> None:
    """Submit Axolotl fine-tuning jobs to your GPU hosts and follow them live.

    A JOB is a job's id, or any unique start of it (as docker and git take them); it is found
    on whichever host has it. Run `hatrain-client VERB --help` for a verb's options and
    examples.

    \b
    Examples:
      hatrain-client hosts
      hatrain-client submit train/configs/gemma3-270m.yml --gpus 1
      hatrain-client queue
      hatrain-client logs 5a37 --since 10m

    \b
    Exit codes: 0 ok; 1 job failed without an exit code; 2 usage; 65 bad input;
    69 host or agent unreachable (also when only some hosts answered); 77 SSH
    authentication or host key; 130 detached (Ctrl-C) or job cancelled; otherwise
    the failed job's own exit code.
    """
    source = ctx.get_parameter_source("config")
    given_as = "HATRAIN_CLIENT_CONFIG" if source == ParameterSource.ENVIRONMENT else "--config"
    ctx.obj = App(config, given_as)


# -- following a job --------------------------------------------------------------------------


def follow_job(app: App, job: Job, as_json: bool, from_seq: int = 0) -> int:
    """Show the job's events until it ends; Ctrl-C detaches and the job keeps running."""
    from . import render

    try:
        events = app.client.watch(job.id, host=job.host, from_seq=from_seq)
        if as_json:
            for event in events:
                print_json(to_json(event, job_id=job.id, host=job.host))
        else:
            with render.Follower(app.out) as follower:
                for event in events:
                    follower.handle(event)
    except KeyboardInterrupt:
        click.echo(f"detached; job {job.id} keeps running. Re-attach with:", err=True)
        click.echo(f"    hatrain-client watch {job.id} --host {job.host}", err=True)
        return EXIT_DETACHED
    ended = app.client.job(job.id, host=job.host)
    app.remember([ended])
    if not as_json:
        app.say(render.describe(ended))
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


follow_option = click.option(
    "--follow/--detach",
    default=None,
    help="Follow the job live until it ends (Ctrl-C detaches; the job keeps running), or "
    "return at once. Default: follow on a terminal, detach when piped or with --json.",
)


# -- verbs ------------------------------------------------------------------------------------


@main.command(short_help="Check, upload and queue configs' jobs, then follow one.")
@click.argument(
    "configs", nargs=-1, required=True, metavar="CONFIG...", type=click.Path(path_type=Path)
)
@click.option(
    "--host",
    "-H",
    metavar="HOST",
    shell_complete=complete_host,
    help="Host alias from the client config, or auto: the host where it starts soonest. "
    "Default: the config's default_host.",
)
@click.option(
    "--dataset",
    "-d",
    "dataset",
    multiple=True,
    metavar="NAME=PATH",
    help="The local file for the container path /workspace/data/datasets/NAME that the config "
    "names (as the seed's configs do). Repeatable, one per dataset; a NAME that no dataset of "
    "the config uses is warned of.",
)
@click.option(
    "--gpus",
    type=click.IntRange(min=0),
    default=None,
    metavar="N",
    help="GPUs to give the job. Default: 1 when the config can only run on a GPU (bf16, "
    "flash attention, a bitsandbytes 8-bit optimizer, deepspeed) and the host has GPUs, "
    "else 0; said either way.",
)
@click.option(
    "--min-gpu-memory",
    type=click.IntRange(min=0),
    default=0,
    metavar="MIB",
    help="Only GPUs with at least this much memory, in MiB (e.g. 80000). Default: any.",
)
@click.option(
    "--gpu-type",
    default="",
    metavar="TEXT",
    help="Only GPUs whose name contains this, any case (e.g. H200). Default: any.",
)
@click.option(
    "--image",
    default="",
    metavar="IMAGE",
    help="Container image, one of the host's allowed images. Default: the host's default.",
)
@click.option(
    "--priority",
    type=click.IntRange(-1000, 1000),
    default=0,
    show_default=True,
    metavar="N",
    help="Higher runs first, from -1000 to 1000. Above 0 needs an admin, or a team's "
    "max_priority (with --team).",
)
@click.option(
    "--name",
    default="",
    metavar="NAME",
    help="The job's name in listings (one CONFIG only). Default: the config's file name.",
)
@click.option(
    "--time-limit",
    type=click.IntRange(min=0),
    default=0,
    metavar="SECONDS",
    help="Stop the job after this many seconds of running (it ends failed: timeout). "
    "Default 0: the host's default limit, if any.",
)
@click.option(
    "--team",
    default="",
    metavar="TEAM",
    help="Run it as a job of this team of yours (the host's agent.yml `teams:`): the team's "
    "members may read it, and the team's max_priority applies. Default: none.",
)
@click.option(
    "--team-queue/--own-queue",
    default=None,
    help="Queue it for the first host of the team with GPUs that fit, or on one host's own "
    "queue. Default: team_queue in the client config. With --team-queue, --host names the "
    "only host it may run on.",
)
@click.option(
    "--requeue",
    is_flag=True,
    help="Team queue: run it again on another host if its host is lost while it runs.",
)
@click.option(
    "--secret",
    multiple=True,
    metavar="VAR",
    help="Pass the environment variable VAR to the job as a secret (never stored readable, "
    "never listed). Repeatable. HF_TOKEN goes along whenever it is set.",
)
@follow_option
@json_option
@pass_app
def submit(
    app: App,
    configs: tuple[Path, ...],
    host: str | None,
    dataset: tuple[str, ...],
    gpus: int | None,
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
    """Upload the files of each CONFIG, submit it, and follow the job.

    Relative paths in CONFIG (datasets, data_files, templates, deepspeed, models, checkpoints,
    custom type modules) are read the way Axolotl reads them, from its working directory: the
    directory you run this command in stands for it, then the folder of CONFIG. Nothing is sent
    if Axolotl would refuse the config or its data; remote and Hub datasets are left to Axolotl.

    Several CONFIGs are submitted at once, with the same options: every one is checked before
    anything is sent, their files are uploaded once, and the jobs go in one call. On a host's
    own queue they are queued all or none and placed by one scheduling pass. It then detaches
    (follow one with `hatrain-client watch JOB`); --json prints a list of the jobs.

    \b
    Examples:
      hatrain-client submit train/configs/gemma3-270m.yml --gpus 1
      hatrain-client submit cfg.yml -d sample.jsonl=data/home.jsonl --host auto
      hatrain-client submit cfg.yml --gpus 2 --gpu-type H200 --detach --json
      hatrain-client submit a.yml b.yml c.yml --gpus 1
      hatrain-client submit sweep/lr-*.yml --host auto --json
    """
    if len(configs) > 1:
        _refuse_for_several(len(configs), follow, name)
    with upload_progress(app) as on_bytes:
        jobs = app.client.submit_all(
            list(configs),
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
    if len(jobs) == 1:
        _show_submitted(app, jobs[0], as_json)
        follow_if_asked(app, jobs[0], follow, as_json)
        return
    app.remember(jobs)
    for config, job in zip(configs, jobs, strict=True):
        assert job.submission is not None
        for warning in job.submission.warnings:
            app.warn(f"warning: {config}: {warning}")
    if as_json:
        print_json([to_json(job, **_submission_fields(job)) for job in jobs])
        return
    for config, job in zip(configs, jobs, strict=True):
        assert job.submission is not None
        app.say(f"{_queued_line(job)} ({config})")
        for note in job.submission.notes:
            app.say(f"  note: {note}")
    assert jobs[0].submission is not None
    app.say(f"files of the {len(jobs)} jobs: {_files_text(jobs[0].submission.upload)}")


def _refuse_for_several(count: int, follow: bool | None, name: str) -> None:
    """What one submit of several configs cannot do; refused before anything is read."""
    if follow:
        raise BadInput(
            f"--follow follows one job, and {count} configs were given",
            fix="leave out --follow (several configs are submitted detached), then follow a "
            "job with: hatrain-client watch JOB",
        )
    if name:
        raise BadInput(
            f"--name names one job, and {count} configs were given",
            fix="leave out --name: each job is then named by its config's file name",
        )


def _queued_line(job: Job) -> str:
    where = "in the team queue" if job.from_team_queue else "on " + job.host
    gpus = f"{job.spec.gpus} GPU{'' if job.spec.gpus == 1 else 's'}"
    return f"job {job.id} queued {where}: position {job.queue_position}, {gpus}"


def _files_text(report: UploadReport) -> str:
    return (
        f"{report.files_sent} sent ({report.bytes_sent:,} bytes), "
        f"{report.files_present} already there"
    )


def _submission_fields(job: Job) -> dict[str, Any]:
    """What --json adds to a submitted job: its upload, notes and warnings."""
    assert job.submission is not None
    submission = job.submission
    return {"upload": submission.upload, "notes": submission.notes, "warnings": submission.warnings}


def _show_submitted(app: App, job: Job, as_json: bool) -> None:
    """One config's job: its warnings, then the job (as JSON, or its line, files and notes)."""
    assert job.submission is not None
    report, notes = job.submission.upload, job.submission.notes
    for warning in job.submission.warnings:
        app.warn(f"warning: {warning}")
    app.show_job(
        job,
        as_json,
        lambda: "\n".join(
            [
                _queued_line(job),
                f"  files: {_files_text(report)}",
                *(f"  note: {note}" for note in notes),
            ]
        ),
        **_submission_fields(job),
    )


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


def _host_failure(error: ClientError) -> dict[str, Any]:
    return {
        "status": error.status,
        "error": error.message,
        "fix": error.fix,
        "commands": list(error.commands),
        "exit_code": error.exit_code,
    }


@main.command(short_help="Each host: up or why not, GPUs free, queued and running jobs.")
@click.option(
    "--host",
    "-H",
    metavar="HOST",
    shell_complete=complete_host,
    help="Only this host (an alias of the client config). Default: every host, at once.",
)
@json_option
@pass_app
def hosts(app: App, host: str | None, as_json: bool) -> None:
    """Each host's GPUs (free / all), its queue, and whether it answers.

    A host that does not answer says why in STATUS (unreachable, auth failed, no agent, host
    key, agent down), with the fix on stderr. If any host did not answer, the exit code is
    its error's (69 or 77), after every host that did is shown.

    \b
    Examples:
      hatrain-client hosts
      hatrain-client hosts --host gpu1 --json
    """
    statuses = app.client.hosts_status([host] if host else None)
    down = [s for s in statuses if isinstance(s, HostDown)]
    for status in down:
        app.warn_down(status.host, status.error)
    if as_json:
        print_json(
            [
                {"host": s.host, **_host_failure(s.error)}
                if isinstance(s, HostDown)
                else {"status": "up", **to_json(s)}
                for s in statuses
            ]
        )
    else:
        from . import render

        app.table(
            render.hosts_table(
                (s.host, s.error) if isinstance(s, HostDown) else s for s in statuses
            )
        )
        team = next((s.team for s in statuses if not isinstance(s, HostDown) and s.team), ())
        if team:
            app.table(render.team_table(team))
    if down:
        sys.exit(down[0].error.exit_code)


@main.command(short_help="Jobs on every host: queued and running first, ids in full.")
@click.option(
    "--host",
    "-H",
    metavar="HOST",
    shell_complete=complete_host,
    help="Only this host's jobs (an alias of the client config). Default: every host, at once.",
)
@click.option("--user", "-u", default="", metavar="USER", help="Only this user's jobs.")
@click.option("--mine", is_flag=True, help="Only my jobs (the login the host knows me as).")
@click.option(
    "--state",
    "-s",
    "states",
    multiple=True,
    metavar="STATE",
    help="Only jobs in this state: queued, starting, preprocessing, training, succeeded, "
    "failed or cancelled. Repeatable. Default: queued and running ones.",
)
@click.option("--all", "all_states", is_flag=True, help="Ended jobs too (every state).")
@click.option(
    "--limit",
    type=click.IntRange(1, 10000),
    default=200,
    show_default=True,
    metavar="N",
    help="At most this many jobs per host.",
)
@click.option(
    "--team-queue",
    is_flag=True,
    help="The team queue's jobs too, merged with every host's: each job once, as the host "
    "that runs it has it. Default: team_queue in the client config.",
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
    """Jobs on every host (or one), queued and running first, with how long each has run.

    Ids are shown in full, at any width and when piped. If some hosts did not answer, the
    others' jobs are shown, each failure is said (in --json: under "errors"), and the exit
    code is the failure's (69 or 77).

    \b
    Examples:
      hatrain-client queue
      hatrain-client queue --all --mine
      hatrain-client queue --state failed --json
    """
    try:
        wanted = [JobState.parse(s) for s in states] or (list(JobState) if all_states else None)
    except ValueError as exc:
        raise BadInput(f"--state: {exc}") from None
    failures: list[tuple[str, ClientError]] = []

    def failed(alias: str, error: ClientError) -> None:
        failures.append((alias, error))
        app.warn_down(alias, error)

    jobs = app.client.jobs(
        host=host,
        states=wanted,
        user=user,
        mine=mine,
        limit=limit,
        on_host_error=failed,
        team_queue=team_queue or app.client.settings.team_queue,
    )
    jobs.sort(key=lambda job: (job.ended, job.created_at))
    app.remember(jobs)
    if as_json:
        print_json(
            {
                "jobs": [to_json(j, host=j.host) for j in jobs],
                "errors": [{"host": a, **_host_failure(e)} for a, e in failures],
            }
        )
    else:
        from . import render

        app.table(render.jobs_table(jobs))
    if failures:
        sys.exit(failures[0][1].exit_code)


@main.command(short_help="One job: state, times, progress, metrics, evals, failure.")
@job_argument
@host_option
@json_option
@pass_app
def status(app: App, job_id: str, host: str | None, as_json: bool) -> None:
    """One job's state and times (submitted, started, ended, elapsed), progress, metrics,
    evaluations by step, and why it failed.

    \b
    Examples:
      hatrain-client status 5a37ffb5c0de
      hatrain-client status 5a37 --json
    """
    job = app.client.job(job_id, host=host)
    evals = app.client.curves(job.id, host=job.host).eval if job.readable else []

    def text() -> str:
        from . import render

        shown = ", ".join(f"{loss:.4g} at step {step}" for step, loss in evals[-5:])
        return render.describe(job) + (f"\n  eval loss {shown}" if evals else "")

    evals_json = [{"step": step, "eval_loss": loss} for step, loss in evals]
    app.show_job(job, as_json, text, evals=evals_json)


_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str, now: float | None = None) -> float:
    """--since: a duration back from now (`90s`, `10m`, `1h30m`, `2d`), or a moment in ISO-8601
    (`2026-11-29T17:55:00`, local time unless it says its zone, e.g. `Z`); seconds since the
    epoch."""
    now = time.time() if now is None else now
    value = text.strip()
    if value and _DURATION.sub("", value) == "":
        return now - sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION.findall(value))
    try:
        moment = datetime.datetime.fromisoformat(value)
    except ValueError:
        raise BadInput(
            f"--since {text}: expected a duration back from now (90s, 10m, 1h30m, 2d) or a "
            "time in ISO-8601 (2026-11-29T17:55:00, or with its zone: ...Z, ...+01:00)"
        ) from None
    return moment.timestamp()


@main.command(short_help="A job's output lines, a header where each step begins.")
@job_argument
@host_option
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines until the job ends.")
@click.option(
    "--tail",
    "-n",
    type=click.IntRange(min=0),
    default=0,
    metavar="N",
    help="Only the last N lines. Default 0: all of them.",
)
@click.option(
    "--since",
    metavar="WHEN",
    help="Only lines printed since then: a duration back from now (90s, 10m, 1h30m, 2d) or a "
    "time in ISO-8601 (2026-11-29T17:55:00; local time unless it gives its zone).",
)
@click.option(
    "--timestamps",
    "-t",
    is_flag=True,
    help="Begin each line with the time it was printed (ISO-8601, UTC).",
)
@pass_app
def logs(
    app: App,
    job_id: str,
    host: str | None,
    follow: bool,
    tail: int,
    since: str | None,
    timestamps: bool,
) -> None:
    """The job's output lines: `axolotl preprocess`, then `axolotl train`, each step's lines
    after a `==> STEP <==` header.

    \b
    Examples:
      hatrain-client logs 5a37 --tail 50
      hatrain-client logs 5a37 -f --timestamps
      hatrain-client logs 5a37 --since 10m
    """
    from .log_text import log_text_runs

    start = parse_since(since) if since else None
    try:
        runs = app.client.log_runs(job_id, host=host, tail=tail, follow=follow, since=start)
        for text in log_text_runs(runs, timestamps=timestamps):
            click.echo(text)  # a run of lines at once: a write (and flush) a line costs more
    except KeyboardInterrupt:
        sys.exit(EXIT_DETACHED)


@main.command(short_help="Follow a job live: every event from the start, until it ends.")
@job_argument
@host_option
@click.option(
    "--from-seq",
    type=click.IntRange(min=0),
    default=0,
    metavar="SEQ",
    help="Only events after this sequence number (as in --json's `seq`). Default: all.",
)
@json_option
@pass_app
def watch(app: App, job_id: str, host: str | None, from_seq: int, as_json: bool) -> None:
    """Follow a job: every event from the start (or --from-seq), until it ends. Ctrl-C
    detaches; the job keeps running. The exit code is the job's, as for `wait`.

    \b
    Examples:
      hatrain-client watch 5a37
      hatrain-client watch 5a37 --json --from-seq 120
    """
    sys.exit(follow_job(app, app.client.job(job_id, host=host), as_json, from_seq))


@main.command(short_help="Cancel a queued or running job, and say what that did.")
@job_argument
@host_option
@click.option(
    "--wait", "wait_end", is_flag=True, help="Wait until the job has ended, then exit 130."
)
@json_option
@pass_app
def cancel(app: App, job_id: str, host: str | None, wait_end: bool, as_json: bool) -> None:
    """Cancel a queued or running job (yours, unless you are an admin).

    A queued job is cancelled at once; a running one is asked to stop (SIGTERM, then SIGKILL
    after the host's grace period) and ends cancelled. With --wait, waits for that end and
    exits 130 once it is cancelled.

    \b
    Examples:
      hatrain-client cancel 5a37
      hatrain-client cancel 5a37 --wait
    """
    result = app.client.cancel(job_id, host=host, wait=wait_end)
    app.show_job(result.job, as_json, lambda: result.message, outcome=result.message)
    if wait_end:
        sys.exit(result.job.exit_status)


# -- retention ---------------------------------------------------------------------------------


@main.command(short_help="Keep a job's data from the host's retention sweeps.")
@job_argument
@host_option
@pass_app
def pin(app: App, job_id: str, host: str | None) -> None:
    """Keep a job's run dir, logs and files from the host's retention sweeps (yours, unless
    you are an admin), until `unpin`.

    \b
    Examples:
      hatrain-client pin 5a37
    """
    app.out.print(app.client.pin(job_id, True, host=host), markup=False)


@main.command(short_help="Let a pinned job's data expire again.")
@job_argument
@host_option
@pass_app
def unpin(app: App, job_id: str, host: str | None) -> None:
    """Let a pinned job's data expire again, as the host's retention settings say.

    \b
    Examples:
      hatrain-client unpin 5a37
    """
    app.out.print(app.client.pin(job_id, False, host=host), markup=False)


@main.command(short_help="Run an ended job again with the same config and files.")
@job_argument
@host_option
@follow_option
@json_option
@pass_app
def retry(app: App, job_id: str, host: str | None, follow: bool | None, as_json: bool) -> None:
    """Submit an ended job again, with the same config and files, on its host. A job that has
    not ended is refused: the retry would run it twice.

    \b
    Examples:
      hatrain-client retry 5a37
      hatrain-client retry 5a37 --detach --json
    """
    job = app.client.retry(job_id, host=host)
    app.show_job(
        job,
        as_json,
        lambda: (
            f"job {job.id} (retry of {job.spec.retry_of}) queued on {job.host} "
            f"(position {job.queue_position})"
        ),
    )
    follow_if_asked(app, job, follow, as_json)


@main.command(short_help="Wait for a job to end; exit with its exit code.")
@job_argument
@host_option
@json_option
@pass_app
def wait(app: App, job_id: str, host: str | None, as_json: bool) -> None:
    """Wait for the job to end; the exit code mirrors the job's (0 succeeded, 130 cancelled,
    else its own exit code, 1 when it has none).

    \b
    Examples:
      hatrain-client wait 5a37
      hatrain-client wait 5a37 && hatrain-client fetch 5a37
    """
    try:
        job = app.client.wait(job_id, host=host)
    except KeyboardInterrupt:
        sys.exit(EXIT_DETACHED)
    from .text import safe

    failure = f" ({job.failure_reason}: {safe(job.hint)})" if job.failure_reason else ""
    if job.state == JobState.FAILED:
        failure += f"\nsee: hatrain-client logs {job.id} --tail 50"
    app.show_job(job, as_json, lambda: f"job {job.id} on {job.host}: {job.state.value}{failure}")
    sys.exit(job.exit_status)


@main.command(short_help="Download a job's run directory (resumable), and its log.")
@job_argument
@click.argument("dest", required=False, type=click.Path(file_okay=False, path_type=Path))
@host_option
@click.option(
    "--include",
    "-i",
    multiple=True,
    metavar="GLOB",
    help="Only files whose path or name matches this glob (e.g. '*.safetensors'). Repeatable.",
)
@click.option(
    "--exclude",
    "-x",
    multiple=True,
    metavar="GLOB",
    help="Skip files whose path or name matches this glob (e.g. 'checkpoint-*'). Repeatable.",
)
@click.option(
    "--logs",
    "with_logs",
    is_flag=True,
    help="Also write the job's own output (both steps, each line with its time) to "
    "DEST/job-JOB.log.",
)
@json_option
@pass_app
def fetch(
    app: App,
    job_id: str,
    dest: Path | None,
    host: str | None,
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    with_logs: bool,
    as_json: bool,
) -> None:
    """Download the job's run directory to DEST (default ./hatrain-runs/JOB). Files already
    there whole are skipped; a partial one is resumed.

    \b
    Examples:
      hatrain-client fetch 5a37
      hatrain-client fetch 5a37 runs/gemma --logs --exclude 'checkpoint-*'
    """
    from .text import safe

    job = app.client.job(job_id, host=host)
    dest = dest or Path("hatrain-runs") / job.id
    report = app.client.fetch(
        job.id,
        dest,
        host=job.host,
        include=include,
        exclude=exclude,
        # Names come from the host: shown as text, never as markup or terminal escapes.
        on_file=lambda p, n: None if as_json else click.echo(f"  {safe(p)} ({n} bytes)", err=True),
        logs=with_logs,
    )
    if as_json:
        print_json({"job_id": job.id, "dest": str(dest), **to_json(report)})
        return
    app.say(
        f"{dest}: {report.files_fetched} files fetched ({report.bytes_fetched} bytes), "
        f"{report.files_skipped} already here"
    )
    if report.log_file:
        app.say(f"{report.log_file}: {report.log_lines} lines of the job's output")


@main.command(short_help="A job's loss curve, train and eval, as a PNG and on screen.")
@job_argument
@host_option
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="PNG",
    help="Where to write the PNG. Default: ./JOB-loss.png.",
)
@click.option(
    "--terminal/--no-terminal",
    default=True,
    help="Also draw the curve in the terminal (default), or only write the PNG.",
)
@pass_app
def plot(app: App, job_id: str, host: str | None, output: Path | None, terminal: bool) -> None:
    """The job's loss curve as a PNG (and in the terminal): train loss by step, and eval loss
    at the steps it was measured.

    \b
    Examples:
      hatrain-client plot 5a37
      hatrain-client plot 5a37 -o gemma-loss.png --no-terminal
    """
    from .plot import terminal_chart

    job = app.client.job(job_id, host=host)
    path = app.client.plot(job.id, output, host=job.host)
    if terminal:
        data = app.client.curves(job.id, host=job.host)
        click.echo(terminal_chart(data, f"{job.name} ({job.id})"))
    app.say(f"wrote {path}")


@main.command(short_help="TensorBoard over jobs' run dirs, in your browser.")
@click.argument("job_ids", nargs=-1)
@click.option("--mine", is_flag=True, help="Also every job of your own on the host.")
@host_option
@click.option(
    "--port",
    "-p",
    default=0,
    type=click.IntRange(0, 65535),
    help="Local port (default: a free one).",
)
@click.option("--open", "open_browser", is_flag=True, help="Open it in the browser.")
@json_option
@pass_app
def tensorboard(
    app: App,
    job_ids: tuple[str, ...],
    mine: bool,
    host: str | None,
    port: int,
    open_browser: bool,
    as_json: bool,
) -> None:
    """TensorBoard over the jobs' run dirs, served on their host as you, forwarded here; it
    stops when this command ends (Ctrl-C).

    \b
    Examples:
      hatrain-client tensorboard 5a37
      hatrain-client tensorboard 5a37 9c01 --open
      hatrain-client tensorboard --mine --port 6006
    """
    session = app.client.tensorboard(job_ids, mine=mine, host=host, port=port)
    try:
        if as_json:
            runs = [to_json(r) for r in session.runs]
            print_json(
                {
                    "url": session.url,
                    "host": session.alias,
                    "host_socket": session.host_socket,
                    "runs": runs,
                }
            )
            sys.stdout.flush()
        else:
            from .text import safe

            names = ", ".join(
                safe(f"{r.job_id} ({r.name})" if r.name else r.job_id) for r in session.runs
            )
            app.say(f"TensorBoard for {names} on {session.alias}")
            app.say(f"  {session.url}   (Ctrl-C stops it)")
        if open_browser:
            import webbrowser

            webbrowser.open(session.url)
        session.wait()
    except KeyboardInterrupt:
        pass
    finally:
        session.close()


@main.command("check-dataset", short_help="Check chat datasets as Axolotl reads them.")
@click.argument("files", nargs=-1, type=click.Path(path_type=Path))
@click.option(
    "--axolotl-config",
    "-a",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="CONFIG",
    help="Read FILEs as this config's first chat dataset does (mappings, roles, template); "
    "without FILE, check every local dataset of the config.",
)
def check_dataset(files: tuple[Path, ...], axolotl_config: Path | None) -> None:
    """Check chat datasets the way Axolotl's chat_template strategy reads them.

    Each finding names the file, line and field, and how to fix it. Relative paths in the
    config are read from the current directory, then beside the config (as `submit` does).

    \b
    Examples:
      hatrain-client check-dataset data/home.jsonl
      hatrain-client check-dataset -a train/configs/gemma3-270m.yml
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


@main.command(short_help="Print the completion script: verbs, options, jobs, hosts.")
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print the shell completion script for SHELL. It completes verbs and options, host
    aliases of the client config, and job ids: those of hosts whose shared connection is open,
    and those this client has lately submitted or seen.

    \b
    Examples:
      eval "$(hatrain-client completion bash)"      # in ~/.bashrc
      eval "$(hatrain-client completion zsh)"       # in ~/.zshrc
      hatrain-client completion fish | source       # in config.fish
    """
    from click.shell_completion import get_completion_class

    cls = get_completion_class(shell)
    assert cls is not None
    click.echo(cls(main, {}, "hatrain-client", "_HATRAIN_CLIENT_COMPLETE").source())
