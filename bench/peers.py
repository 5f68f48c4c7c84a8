"""hatrain against Slurm and Ray Jobs on this machine, side by side, in interleaved rounds.

    bash scripts/bench-peers.sh up        # Slurm and Ray, set up once (make bench does it)
    python bench/peers.py [--rounds 3] [--jobs 10000] [--first 1000] [--lines 100000]
                          [--samples 3] [--client-sample 100] [--only GROUP] [--json PATH]

Every round runs each figure for every system in turn (hatrain, Slurm, Ray; the first of them
changes from round to round), so that a slow moment of this machine falls on all of them. A
round's figure for the start, burst and cancel rows is the median of --samples tries; the table
shows the median of the rounds and their range, and each hatrain figure as a ratio to the best
peer (above 1: hatrain ahead).

The job is the same under every system (bench/contenders/kit.py): a shell script that records
when it started, holds until cancelled (its pid in a file), or prints numbered, timestamped lines.

  submit rate, 0→1k, 1k→10k   jobs a second from 4 submitters at once into an empty queue, then
                              as it grows to 10k; nothing starts (hatrain: an agent that starts
                              nothing; Slurm: held jobs). hatrain via client: --client-sample
                              `hatrain-client submit` runs into an empty queue and at 10k.
  page of 50 at 10k, p99      hatrain: ListJobs, any page; Slurm: squeue with a format, until
                              its first 50 lines; hatrain via client: `queue --limit 50`.
  submit → start              from the submit call until the job's first process runs, 1 GPU.
  gap in a burst of 10        10 jobs that all fit (no GPU) submitted at once: hatrain raw, one
                              SubmitJobs call; via client, one `hatrain-client submit` of 10
                              configs; Slurm, a job array; Ray, 10 submits from 10 threads. From
                              the first start to the last, over the 9 gaps; and from the
                              submit call until the last start.
  cancel → ended              from the cancel call until the job's process is gone (pidfd), the
                              call has returned and the system reports the job ended.
  stream 100k lines           the job prints "ready" and waits until the watcher has it, then
                              prints as fast as it can; rate from the first line printed to the
                              last received, p99 of each line's delay. hatrain: WatchJob;
                              via client `logs -f`; Ray: `ray job logs --follow`.

Slurm's and Ray's set-up and Slurm's tuning, each setting with its reason: scripts/bench-peers.sh.
"""

import argparse
import compileall
import json
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.contenders.hatrain import CLIENT, RAW, Hatrain  # noqa: E402
from bench.contenders.kit import Burst, Cancel, Kit, Stream  # noqa: E402
from bench.contenders.ray_jobs import Ray  # noqa: E402
from bench.contenders.slurm import Slurm  # noqa: E402
from tests.support.sshd import start_sshd  # noqa: E402

PEERS_DIR = Path(os.environ.get("HATRAIN_PEERS_DIR", "/var/tmp/hatrain-bench-peers"))
PEERS_SCRIPT = REPO / "scripts" / "bench-peers.sh"
COLUMNS = (RAW, CLIENT, "Slurm", "Ray")
PEERS = ("Slurm", "Ray")
BURST = 10
NOTES = """\
hatrain: local runtime, 8 GPUs declared; raw: gRPC calls from the bench; via client: \
`hatrain-client` through sshd and its shared connection, submit rates from {client} submits \
into an empty queue and {client} at the full queue; one `hatrain-client hosts --json` took \
{floor:.0f} ms (median of 10), the floor under every client figure. Slurm: sbatch from 4 \
submitters (held jobs for the queue rows), a job array for the burst, squeue for the page and the \
state. Ray: its Jobs REST API, `ray job logs --follow`."""


@dataclass(frozen=True)
class Figure:
    key: str
    label: str
    unit: str  # "/s", "ms" or "lines/s"
    higher_is_better: bool


FIGURES = [
    Figure("submit_empty", "submit rate, queue 0→{first}", "/s", True),
    Figure("submit_growing", "submit rate, queue {first}→{jobs}", "/s", True),
    Figure("page_p99", "page of 50 at {jobs} jobs, p99", "ms", False),
    Figure("start", "submit → start, idle node", "ms", False),
    Figure("burst_gap", f"gap between starts, burst of {BURST}", "ms", False),
    Figure("burst_last", f"submit → last start, burst of {BURST}", "ms", False),
    Figure("cancel", "cancel → ended", "ms", False),
    Figure("cancel_gone", "cancel → process gone", "ms", False),
    Figure("stream_rate", "stream {lines} lines, rate", "lines/s", True),
    Figure("stream_p99", "stream {lines} lines, p99 latency", "ms", False),
]
GROUPS = {
    "queue": ["submit_empty", "submit_growing", "page_p99"],
    "start": ["start"],
    "burst": ["burst_gap", "burst_last"],
    "cancel": ["cancel", "cancel_gone"],
    "stream": ["stream_rate", "stream_p99"],
}


class Contender(Protocol):
    columns: tuple[str, ...]

    def queue(self, first: int, total: int) -> dict[str, dict[str, float]]: ...

    def start(self) -> dict[str, float]: ...

    def burst(self, size: int) -> dict[str, Burst]: ...

    def cancel(self) -> dict[str, Cancel]: ...

    def stream(self) -> dict[str, Stream]: ...

    def close(self) -> None: ...


# results[figure][column][round] = the tries of that round
Results = dict[str, dict[str, dict[int, list[float]]]]


def progress(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def run_rounds(contenders: list[Contender], args: argparse.Namespace) -> Results:
    results: Results = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))

    def record(round_: int, figure: str, values: dict[str, float]) -> None:
        for column, value in values.items():
            results[figure][column][round_].append(value)

    def streams(round_: int, contender: Contender) -> None:
        for column, stream in contender.stream().items():
            got = len(stream.sent)
            if got != args.lines:
                raise RuntimeError(f"{column} streamed {got} of {args.lines} lines")
            record(round_, "stream_rate", {column: stream.rate()})
            record(round_, "stream_p99", {column: stream.p99_ms()})

    groups = args.only or list(GROUPS)
    for contender in contenders:  # not counted: first jobs, first client commands, Ray workers
        if {"start", "burst", "cancel", "stream"} & set(groups):
            contender.start()
    for round_ in range(args.rounds):
        shift = round_ % len(contenders)
        order = contenders[shift:] + contenders[:shift]
        for group in groups:
            for _ in range(args.samples if group in ("start", "burst", "cancel") else 1):
                for contender in order:
                    name = "/".join(contender.columns)
                    progress(f"round {round_ + 1}/{args.rounds}: {group}: {name}")
                    if group == "queue":
                        for column, figures in contender.queue(args.first, args.jobs).items():
                            for figure, value in figures.items():
                                record(round_, figure, {column: value})
                    elif group == "start":
                        record(round_, "start", ms(contender.start()))
                    elif group == "burst":
                        bursts = contender.burst(BURST)
                        record(round_, "burst_gap", ms({c: b.gap for c, b in bursts.items()}))
                        record(round_, "burst_last", ms({c: b.last for c, b in bursts.items()}))
                    elif group == "cancel":
                        cancels = contender.cancel()
                        record(round_, "cancel", ms({c: t.ended for c, t in cancels.items()}))
                        record(round_, "cancel_gone", ms({c: t.gone for c, t in cancels.items()}))
                    else:
                        streams(round_, contender)
    return results


def ms(values: dict[str, float]) -> dict[str, float]:
    return {column: seconds * 1000 for column, seconds in values.items()}


def round_values(results: Results, figure: str, column: str) -> list[float]:
    rounds = results.get(figure, {}).get(column, {})
    return [statistics.median(tries) for _, tries in sorted(rounds.items())]


def show(value: float, unit: str) -> str:
    if unit == "ms":
        return f"{value:,.1f}" if value < 10 else f"{value:,.0f}"
    return f"{value:,.0f}"


def cell(values: list[float], unit: str) -> str:
    if not values:
        return "—"
    middle = statistics.median(values)
    suffix = {"ms": " ms", "/s": "/s", "lines/s": " lines/s"}[unit]
    spread = f" ({show(min(values), unit)}-{show(max(values), unit)})" if len(values) > 1 else ""
    return f"{show(middle, unit)}{suffix}{spread}"


def ratio(ours: list[float], peers: list[list[float]], higher_is_better: bool) -> str:
    medians = [statistics.median(values) for values in peers if values]
    if not ours or not medians:
        return "—"
    mine = statistics.median(ours)
    best = max(medians) if higher_is_better else min(medians)
    times = mine / best if higher_is_better else best / mine
    return f"{times:.2f}x"


def table(results: Results, args: argparse.Namespace) -> str:
    names = {"first": f"{args.first:,}", "jobs": f"{args.jobs:,}", "lines": f"{args.lines:,}"}
    rows = [
        f"| figure | {RAW} (raw gRPC) | {CLIENT} (SSH) | Slurm | Ray | "
        "ratio to best peer, raw / client |",
        "|---|---|---|---|---|---|",
    ]
    for figure in FIGURES:
        if not any(round_values(results, figure.key, c) for c in COLUMNS):
            continue
        values = {c: round_values(results, figure.key, c) for c in COLUMNS}
        peers = [values[p] for p in PEERS]
        ratios = " / ".join(ratio(values[c], peers, figure.higher_is_better) for c in (RAW, CLIENT))
        cells = " | ".join(cell(values[c], figure.unit) for c in COLUMNS)
        rows.append(f"| {figure.label.format(**names)} | {cells} | {ratios} |")
    return "\n".join(rows)


def load_peers() -> dict[str, str]:
    path = PEERS_DIR / "peers.json"
    if not path.exists():
        raise SystemExit(f"{path} is missing: run `bash scripts/bench-peers.sh up` first")
    peers: dict[str, str] = json.loads(path.read_text())
    return peers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=10_000, help="the queue's size at the end")
    parser.add_argument("--first", type=int, default=1_000, help="the first step of the queue")
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument(
        "--samples", type=int, default=3, help="start, burst and cancel tries a round"
    )
    parser.add_argument("--client-sample", type=int, default=100, help="client submits a step")
    parser.add_argument("--page-samples", type=int, default=100, help="squeue runs a round")
    parser.add_argument("--only", choices=list(GROUPS), action="append")
    parser.add_argument("--json", type=Path, help="also write every try here")
    args = parser.parse_args()
    peers = load_peers()
    # An installed client has its bytecode compiled (pip does it); this checkout may not.
    for folder in ("client", "proto"):
        compileall.compile_dir(REPO / folder, quiet=1)
    work = Path(tempfile.mkdtemp(prefix="hatrain-bench-peers-"))
    kit = Kit(work / "kit", args.lines)
    sshd = start_sshd(work / "sshd")
    contenders: list[Contender] = []
    try:
        hatrain = Hatrain(work, kit, sshd, args.client_sample)
        contenders.append(hatrain)
        builders: list[Callable[[], Contender]] = [
            lambda: Slurm(kit, Path(peers["slurm_conf"]), PEERS_SCRIPT, args.page_samples),
            lambda: Ray(kit, peers["ray_address"], Path(peers["ray_python"])),
        ]
        for build in builders:
            contenders.append(build())
        results = run_rounds(contenders, args)
        floor = hatrain.client_floor_ms()
    finally:
        for contender in contenders:
            contender.close()
        sshd.stop()
        kit.cleanup()
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    print(
        f"hatrain through raw gRPC and through `hatrain-client` over SSH, Slurm "
        f"{peers['slurm_version']}, Ray Jobs {peers['ray_version']}; median (range) of "
        f"{args.rounds} interleaved rounds; ratio above 1: hatrain ahead"
    )
    print(table(results, args))
    print(NOTES.format(client=args.client_sample, floor=floor))


if __name__ == "__main__":
    main()
