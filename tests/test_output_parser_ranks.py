"""Output of a data-parallel job: several processes write to one stream, and progress, metrics and
the failure hint must each be counted once.

Replays recorded output of real Axolotl (tests/recorded/), which CI cannot make: two H200s, and a
two-process run that fails.
"""

from pathlib import Path

from hatrain.agent.events import Event, EventKind
from hatrain.agent.output_parser import OutputParser

RECORDED = Path(__file__).resolve().parent / "recorded"


def _replay(name: str, piece: int = 4096) -> tuple[OutputParser, list[Event]]:
    """Feed the recording in pieces, as a step's output arrives."""
    data = (RECORDED / name).read_bytes().decode("utf-8", errors="replace")
    parser = OutputParser("train")
    events: list[Event] = []
    for start in range(0, len(data), piece):
        events += parser.feed(data[start : start + piece])
    return parser, events + parser.flush()


def test_two_gpu_output_gives_each_step_once() -> None:
    """20 steps on two GPUs: 20 loss events with rising epochs and one summary, a train bar that
    ends at 20 of 20; the tokenizer message each process prints with a dict in it is a log line,
    not a metric."""
    parser, events = _replay("axolotl-2gpu-h200-train.log")
    metrics = [e for e in events if e.kind is EventKind.METRICS]
    steps = [e for e in metrics if any(m.name == "loss" for m in e.metrics)]
    assert len(steps) == parser.train_total == 20
    epochs = [next(m.value or 0.0 for m in e.metrics if m.name == "epoch") for e in steps]
    assert epochs == sorted(set(epochs))
    rest = [e for e in metrics if e not in steps]
    assert [m.name for m in rest[0].metrics][:2] == ["train_runtime", "train_samples_per_second"]
    assert len(rest) == 1
    train = [e.progress for e in events if e.progress is not None and e.progress.phase == "train"]
    assert {p.total for p in train} == {20} and train[-1].current == 20
    assert sum(e.line_count() for e in events if e.kind is EventKind.LOG) > 200


def test_a_failing_process_gives_its_own_error_as_the_hint() -> None:
    """Both processes fail and the launcher reports a failed child: the hint is a process's own
    error, not the launcher's ChildFailedError; with no train bar printed, no step count is
    taken from either process's log lines."""
    parser, events = _replay("axolotl-2proc-cpu-train-failed.log")
    assert parser.last_error_line == (
        "RuntimeError: Cannot access accelerator device when none is available."
    )
    assert parser.train_total is None
    assert not [e for e in events if e.kind is EventKind.METRICS]
