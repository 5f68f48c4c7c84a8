"""What each streamed log line costs the agent, stage by stage, in CPU time of one thread.

    python bench/stream_costs.py [--lines 100000]

The stages a line goes through on its way from a container to a watcher, each run on its own
over the same lines (printed one per write, as the streaming bench's job prints them):

  read Docker's frames      docker_logs.StreamReader over the attach stream's bytes
  parse                     output_parser.OutputParser.feed
  store                     Store.append, in batches of at most the runner's _FLUSH_LINES
  read back and encode      what WatchJob does per page for a watcher that asks for packed
                            lines (as the client does): Store.event_runs, wire.add_runs (one
                            protobuf Event per run of lines) and the response's serialisation
  watcher: decode           that watcher parsing the responses and reading each line
  (a message a line)        the same read-back and encoding for an older watcher that does not
                            ask for packed lines: one Event per line (not in the sum)

It explains the streaming figures of bench/run_all.py: the agent's share of the CPU is the sum
of its stages, and a peer such as `docker attach` pays only for reading the frames. Each stage is
printed beside its ratio to reading the frames, and the agent's stages together (all but the
watcher's) as a ratio to it: how many times `docker attach`'s own work the agent does per line.
"""

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from hatrain.agent import wire  # noqa: E402
from hatrain.agent.docker_logs import READ_SIZE, StreamReader  # noqa: E402
from hatrain.agent.events import Event  # noqa: E402
from hatrain.agent.jobs import JobSpec  # noqa: E402
from hatrain.agent.output_parser import OutputParser  # noqa: E402
from hatrain.agent.store import Store  # noqa: E402
from hatrain.rpc.contract import last_seq  # noqa: E402
from hatrain.rpc.v1 import agent_pb2 as pb  # noqa: E402

T = TypeVar("T")
_PAGE_LINES = 10_000  # as WatchJob reads them
_PAGE_BYTES = 1024 * 1024
_STORE_LINES = 8192  # lines per append, at most: as the runner stores them (its _FLUSH_LINES)
_READ = "read Docker's frames"
_DECODE = "watcher: decode"
_UNPACKED = "(a message a line)"
_NOT_THE_AGENTS = (_DECODE, _UNPACKED)


class Stages:
    """Each stage's CPU time a line, printed as it is measured, beside its ratio to the first."""

    def __init__(self, lines: int) -> None:
        self.lines = lines
        self.costs: dict[str, float] = {}

    def timed(self, label: str, stage: Callable[[], T]) -> T:
        began = time.process_time()
        out = stage()
        cost = 1e6 * (time.process_time() - began) / self.lines
        self.costs[label] = cost
        base = next(iter(self.costs.values()))
        print(f"{label:24s} {cost:5.2f} µs a line  {cost / base:5.2f}x reading the frames")
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lines", type=int, default=100_000)
    count = parser.parse_args().lines
    frames = b"".join(
        b"\x01\0\0\0" + len(line).to_bytes(4, "big") + line
        for line in (f"line {i} {time.time():.6f}\n".encode() for i in range(count))
    )

    def read() -> list[str]:
        reader = StreamReader(None)
        return [reader.feed(frames[i : i + READ_SIZE]) for i in range(0, len(frames), READ_SIZE)]

    def parse() -> list[Event]:
        parsing = OutputParser("train")
        events = [ev for text in texts for ev in parsing.feed(text)]
        return events + parsing.flush()

    stages = Stages(count)
    timed = stages.timed
    texts = timed(_READ, read)
    events = timed("parse", parse)
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "hatrain.db")
        job, _ = store.submit(JobSpec("a.yml", "x: 1", "img"), "bench")

        def append() -> None:
            batch: list[Event] = []
            lines = 0
            for event in events:
                batch.append(event)
                lines += event.line_count()
                if lines >= _STORE_LINES:
                    store.append(job.id, batch)
                    batch, lines = [], 0
            if batch:
                store.append(job.id, batch)

        def serve(packed: bool) -> list[bytes]:
            pages, after = [], 0
            while runs := store.event_runs(job.id, after, limit=_PAGE_LINES):
                response = pb.WatchJobResponse(state=pb.JOB_STATE_TRAINING)
                wire.add_runs(response.events, runs, _PAGE_BYTES, packed=packed)
                after = last_seq(response.events[-1])
                pages.append(response.SerializeToString())
            return pages

        timed("store", append)
        pages = timed("read back and encode", lambda: serve(True))

        def decode() -> int:
            got = 0
            for page in pages:
                response = pb.WatchJobResponse.FromString(page)
                for e in response.events:
                    if e.kind == pb.EVENT_KIND_LOG:
                        got += sum(1 for line in e.lines if line)
            return got

        assert timed(_DECODE, decode) == count
        timed(_UNPACKED, lambda: serve(False))
        store.close()

    agent = sum(cost for label, cost in stages.costs.items() if label not in _NOT_THE_AGENTS)
    print(
        f"the agent's stages together: {agent:.2f} µs a line, "
        f"{agent / stages.costs[_READ]:.2f}x reading the frames alone (`docker attach`'s work)"
    )


if __name__ == "__main__":
    main()
