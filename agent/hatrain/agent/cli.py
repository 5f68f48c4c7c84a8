"""hatrain-agent: serve | doctor."""

import os
import sys
from pathlib import Path

import click

from .config import load_config
from .errors import ConfigError

DEFAULT_CONFIG = Path("/etc/hatrain/agent.yml")


def _load(config: Path | None, data_root: Path | None, listen: str | None):  # type: ignore[no-untyped-def]
    if config is None and DEFAULT_CONFIG.exists():
        config = DEFAULT_CONFIG
    try:
        loaded = load_config(config)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    updates: dict[str, object] = {}
    if data_root is not None:
        updates["data_root"] = data_root
    if listen is not None:
        updates["listen"] = listen
    return loaded.model_copy(update=updates)


_options = [
    click.option(
        "--config",
        "-c",
        type=click.Path(path_type=Path, dir_okay=False),
        help=f"agent.yml (default {DEFAULT_CONFIG} when it exists)",
    ),
    click.option(
        "--data-root", type=click.Path(path_type=Path, file_okay=False), help="Override data_root."
    ),
    click.option("--listen", help="Override listen (the Unix socket's path)."),
]


def _with_options(func):  # type: ignore[no-untyped-def]
    for option in reversed(_options):
        func = option(func)
    return func


@click.group()
@click.version_option(package_name="hatrain")
def main() -> None:
    """The hatrain agent: runs Axolotl jobs from a durable, GPU-aware queue."""


def _leave_out_paramiko() -> None:
    """The docker SDK loads paramiko (about 15 MB resident) only to reach an engine over ssh://;
    the agent's engine is local, so a resident agent does without it."""
    if not os.environ.get("DOCKER_HOST", "").startswith("ssh://"):
        sys.modules.setdefault("paramiko", None)  # type: ignore[arg-type]


@main.command()
@_with_options
def serve(config: Path | None, data_root: Path | None, listen: str | None) -> None:
    """Serve the agent's gRPC API until SIGTERM."""
    _leave_out_paramiko()
    from .server import serve as run

    run(_load(config, data_root, listen))


@main.command(context_settings={"ignore_unknown_options": True})
@click.option("--socket", default="/run/hatrain/agent.sock", help="The agent's socket.")
def bridge(socket: str) -> None:
    """Relay stdin and stdout to the agent's socket (what a client runs over SSH)."""
    from .bridge import main as relay

    raise SystemExit(relay(["--socket", socket]))


@main.command()
@click.argument("job_ids", nargs=-1)
@click.option("--mine", is_flag=True, help="Also every job of your own.")
@click.option("--socket", default="/run/hatrain/agent.sock", help="The agent's socket.")
def tensorboard(job_ids: tuple[str, ...], mine: bool, socket: str) -> None:
    """Serve TensorBoard, as you, over the run dirs of jobs you may read, on a Unix socket of
    your own, until stdin ends (what `hatrain-client tensorboard` runs over SSH)."""
    from .tensorboard_runner import main as run

    raise SystemExit(run(socket, list(job_ids), mine))


@main.command()
@_with_options
def doctor(config: Path | None, data_root: Path | None, listen: str | None) -> None:
    """Check Docker, the NVIDIA runtime, GPUs, the data root and the socket; a running agent
    is the healthy case, and it is asked to answer."""
    from rich.console import Console
    from rich.table import Table

    from .doctor import run_checks

    checks = run_checks(_load(config, data_root, listen))
    table = Table("check", "", "detail")
    for check in checks:
        verdict = "[green]ok[/]" if check.ok else "[red]FAIL[/]"
        if check.ok and check.warn:
            verdict = "[yellow]warn[/]"
        table.add_row(check.name, verdict, check.detail)
    Console().print(table)
    if not all(c.ok for c in checks):
        raise SystemExit(1)


# -- retention -----------------------------------------------------------------------------------


def _become_owner_of(path: Path) -> None:
    """Run as the data root's owner (the agent's user) when started as root, so that nothing
    the store writes (its WAL files) ends up owned by root."""
    owner = path.stat()
    if os.geteuid() == 0 and owner.st_uid != 0:
        os.setgid(owner.st_gid)
        os.setuid(owner.st_uid)


@main.command()
@_with_options
@click.option("--dry-run", is_flag=True, help="List what would be removed; remove nothing.")
def gc(config: Path | None, data_root: Path | None, listen: str | None, dry_run: bool) -> None:
    """Remove what retention says has expired (what the agent's periodic sweep removes)."""
    import time

    from rich.console import Console
    from rich.table import Table

    from .disk import human_bytes
    from .store import Store
    from .sweep import Sweeper

    settings = _load(config, data_root, listen)
    root: Path = settings.data_root
    if not (root / "hatrain.db").is_file():
        raise click.ClickException(f"no agent data at {root} (no hatrain.db): check data_root")
    _become_owner_of(root)
    store = Store(root / "hatrain.db")
    try:
        report = Sweeper(store, root, settings.retention.policy()).sweep(dry_run=dry_run)
    finally:
        store.close()
    now = time.time()
    table = Table("kind", "of", "unused for", "size", "where")
    for item in report.removed:
        table.add_row(
            item.kind.value,
            item.key,
            f"{(now - item.last_used) / 86400:.1f} d",
            human_bytes(item.size),
            item.where,
        )
    console = Console(highlight=False)
    if report.removed:
        console.print(table)
    verb = "would remove" if dry_run else "removed"
    console.print(
        f"{verb} {len(report.removed)} items, freeing {human_bytes(report.freed)}", markup=False
    )
