"""What every contender of the peer bench shares: the job it runs, and how its effects are timed.

The job is one shell script, `job.sh MODE FILE`, run alike by hatrain (through a stand-in
`axolotl`), Slurm (as the batch script) and Ray (as the entrypoint):

    start FILE   writes the time it started (`date +%s.%N`) to FILE, and ends
    hold FILE    writes its pid to FILE, then sleeps until it is stopped
    print FILE   prints "ready", waits until FILE exists, then prints the bench's lines, each
                 `line N <time printed>` in a write of its own, as fast as it can

Times are wall-clock (time.time() here, `date` there): both read the same clock of this machine.
"""

import os
import select
import shutil
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

JOB = """#!/bin/sh
# The peer bench's job, the same under every system: job.sh MODE FILE
case $1 in
start) date +%s.%N >"$2.tmp" && mv "$2.tmp" "$2" ;;
hold) echo $$ >"$2.tmp" && mv "$2.tmp" "$2" && exec sleep 600 ;;
print) exec {python} -u {printer} "$2" ;;
*) echo "job.sh: unknown mode $1" >&2; exit 2 ;;
esac
"""

PRINTER = """import os, sys, time
go = sys.argv[1]
print("ready")
while not os.path.exists(go):
    time.sleep(0.001)
w = sys.stdout.write
for i in range({lines}):
    w(f"line {{i}} {{time.time():.6f}}\\n")
"""

# `axolotl STEP CONFIG [--debug]` for hatrain's local runtime: the step runs job.sh in the mode
# the job's config names for it (bench_preprocess, bench_train) on the config's bench_file, with
# shell built-ins only, so that no extra process runs before the job; preprocess then reports
# success as Axolotl does. bench_file names a file of the kit (`kit:NAME`): the agent refuses a
# config naming a path outside the job's mounts.
AXOLOTL = """#!/bin/sh
mode= file=
while IFS=': ' read -r key value; do
  case $key in
  bench_$1) mode=$value ;;
  bench_file) file={files}/${{value#kit:}} ;;
  esac
done <"$2"
if [ "$1" = preprocess ]; then
  if [ -n "$mode" ]; then sh {job} "$mode" "$file"; fi
  echo "Success! Preprocessed data path: bench"
  exit 0
fi
if [ -n "$mode" ]; then exec sh {job} "$mode" "$file"; fi
"""

POLL_SECONDS = 0.001
CLIENTS = 4  # submitters at once, for every system


class Kit:
    """The job's files in a fresh directory, and a fresh file name for each use."""

    def __init__(self, root: Path, lines: int) -> None:
        self.root = root
        self.lines = lines
        self.files = root / "files"
        self.files.mkdir(parents=True)
        self.job = root / "job.sh"
        printer = root / "printer.py"
        printer.write_text(PRINTER.format(lines=lines))
        self.job.write_text(JOB.format(python=sys.executable, printer=printer))
        self.job.chmod(0o755)
        self.axolotl_venv = root / "axolotl-venv"
        (self.axolotl_venv / "bin").mkdir(parents=True)
        axolotl = self.axolotl_venv / "bin" / "axolotl"
        axolotl.write_text(AXOLOTL.format(job=self.job, files=self.files))
        axolotl.chmod(0o755)
        os.chmod(root, 0o755)
        self._count = 0
        self._lock = threading.Lock()

    @staticmethod
    def config_name(path: Path) -> str:
        """How a hatrain job's config names a kit file (bench_file)."""
        return f"kit:{path.name}"

    def file(self, label: str) -> Path:
        with self._lock:
            self._count += 1
            return self.files / f"{label}-{self._count}"

    def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def wait_for(path: Path, timeout: float = 120) -> str:
    """The content of a file the job writes atomically, once it is there."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return path.read_text()
        except FileNotFoundError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {path} after {timeout} s") from None
            time.sleep(POLL_SECONDS)


def started_at(mark: Path, timeout: float = 120) -> float:
    return float(wait_for(mark, timeout))


def wait_until(check: Callable[[], bool], what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.005)


class ProcessEnd:
    """The moment a process (not a child of ours) ends, from a pidfd: no polling interval."""

    def __init__(self, pid: int) -> None:
        self.when: float | None = None
        try:
            self._fd = os.pidfd_open(pid)
        except ProcessLookupError:
            self.when = time.time()
            return
        self._thread = threading.Thread(target=self._wait, daemon=True)
        self._thread.start()

    def _wait(self) -> None:
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        poller.poll()
        self.when = time.time()
        os.close(self._fd)

    def wait(self, timeout: float = 120) -> float:
        wait_until(lambda: self.when is not None, "the job's process to end", timeout)
        assert self.when is not None
        return self.when


@dataclass(frozen=True)
class Cancel:
    """Seconds from the cancel call until..."""

    ended: float  # ...the process is gone, the call returned and the system reports it ended
    gone: float  # ...the job's process is gone


def cancel_latency(
    pid_file: Path, cancel: Callable[[], object], ended: Callable[[], bool]
) -> Cancel:
    """Cancel a running job, timing its end: the process's from a pidfd, the system's report by
    asking it back to back (each answer counts when it arrives)."""
    end = ProcessEnd(int(wait_for(pid_file)))
    begin = time.time()
    cancel()
    returned = time.time()
    deadline = time.monotonic() + 120
    while not ended():
        if time.monotonic() > deadline:
            raise TimeoutError("the system never reported the cancelled job ended")
        time.sleep(POLL_SECONDS)
    reported = time.time()
    gone = end.wait()
    return Cancel(ended=max(returned, reported, gone) - begin, gone=gone - begin)


@dataclass
class Stream:
    """The lines of one streamed job as a watcher got them."""

    sent: list[float] = field(default_factory=list)  # when each line was printed
    received: list[float] = field(default_factory=list)  # when the watcher had it

    def got(self, lines: list[str]) -> None:
        now = time.time()
        for line in lines:
            if line.startswith("line "):
                self.sent.append(float(line.rsplit(" ", 1)[1]))
                self.received.append(now)

    def rate(self) -> float:
        """Lines a second, from the first line printed to the last one received."""
        return len(self.sent) / (max(self.received) - min(self.sent))

    def p99_ms(self) -> float:
        return 1000 * percentile([r - s for s, r in zip(self.sent, self.received, strict=True)], 99)


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))]


def lines_of(chunks: Callable[[], bytes], stream: Stream, ready: Callable[[], None]) -> None:
    """Feed a watcher's output (bytes, until b"") into stream; call ready() on "ready"."""
    partial = b""
    waiting = True
    while chunk := chunks():
        *whole, partial = (partial + chunk).split(b"\n")
        text = [line.decode() for line in whole]
        if waiting and "ready" in text:
            waiting = False
            ready()
        stream.got(text)


def submit_rate(submit: Callable[[], object], count: int, clients: int = CLIENTS) -> float:
    """Jobs a second, `count` submitted by `clients` submitters at once."""

    def submitter(share: int) -> None:
        for _ in range(share):
            submit()

    shares = [count // clients + (i < count % clients) for i in range(clients)]
    began = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(submitter, shares))
    return count / (time.perf_counter() - began)


def timed_ms(call: Callable[[], object]) -> float:
    began = time.perf_counter()
    call()
    return (time.perf_counter() - began) * 1000


def gap(marks: list[Path]) -> float:
    """The mean gap between the starts of a burst: from the first start to the last, over the
    gaps between them."""
    starts = sorted(started_at(m) for m in marks)
    return (starts[-1] - starts[0]) / (len(starts) - 1)


@dataclass(frozen=True)
class Burst:
    """Seconds: the mean gap between the burst's starts, and from its submit call (when it was
    made) until the last of them."""

    gap: float
    last: float


def burst_of(marks: list[Path], submitted: float) -> Burst:
    """The burst whose jobs write these marks, submitted at time.time() `submitted`."""
    return Burst(gap(marks), max(started_at(m) for m in marks) - submitted)
