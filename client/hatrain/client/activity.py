"""What a job is doing now, read from its events: loading the model, preprocessing, a train
step, an evaluation, saving.

The state says which step runs; within a step, the bars and a few of Axolotl's own log lines
say what it is busy with. The live view (`render.Follower`) draws it; nothing here prints.
"""

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from .records import (
    Event,
    JobState,
    LogLine,
    Metrics,
    Progress,
    ProgressUpdate,
    StateChange,
)

# What Axolotl prints as it moves on within the train step.
_CHECKPOINT = re.compile(r"Saving model checkpoint to \S*?(checkpoint-\d+)")
_LOG_ACTIVITY = (
    (re.compile(r"Loading prepared dataset"), "loading the dataset"),
    (re.compile(r"Training completed! Saving trained model"), "saving the trained model"),
    (re.compile(r"Running evaluation step"), "evaluating"),
)
_LOADING_BARS = ("loading weights", "loading checkpoint shards")
_SAVING_BARS = ("writing model shards", "saving")
_PARENTHESES = re.compile(r"\s*\([^)]*\)")


@dataclass(frozen=True)
class Reading:
    """The job's activity at one moment: a label, the bar of what it does (if it counts), the
    train bar's position, and the time left for training (None while unknown)."""

    label: str
    bar: Progress | None
    train: Progress | None
    eta_seconds: float | None
    loss: float | None
    learning_rate: float | None


class Activity:
    """Feed it a job's events in order; `reading()` says what the job is doing."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.label = ""
        self.state: JobState | None = None
        self.bar: Progress | None = None
        self.train: Progress | None = None
        self._train_seen = 0.0  # when the train bar was last read, on the clock
        self.loss: float | None = None
        self.learning_rate: float | None = None

    def update(self, event: Event) -> bool:
        """Take an event in; True when the activity's label changed."""
        before = self.label
        if isinstance(event, StateChange):
            self._state(event.state)
        elif isinstance(event, ProgressUpdate):
            self._progress(event.step, event.progress)
        elif isinstance(event, LogLine):
            self._line(event)
        elif isinstance(event, Metrics):
            self._metrics(event)
        return self.label != before

    def reading(self) -> Reading:
        return Reading(self.label, self.bar, self.train, self.eta(), self.loss, self.learning_rate)

    def eta(self) -> float | None:
        """Seconds of training left, counting down between the bar's readings; 0 once the last
        step is done; None before the bar has a rate."""
        train = self.train
        if train is None:
            return None
        if train.total and train.current >= train.total:
            return 0.0
        if not train.rate:
            return None
        return max(0.0, train.eta_seconds - (self._clock() - self._train_seen))

    @property
    def train_step(self) -> str:
        """`10/20`: the train bar's position, or "" before it is drawn."""
        return f"{self.train.current}/{self.train.total}" if self.train else ""

    def _evaluating(self) -> str:
        return f"evaluating at step {self.train_step}" if self.train else "evaluating"

    def _state(self, state: JobState) -> None:
        self.state = state
        self.bar = None
        if state == JobState.TRAINING:
            self.label = "loading the model"
        elif state == JobState.PREPROCESSING:
            self.label = "preprocessing"
        else:
            self.label = state.value

    def _progress(self, step: str, p: Progress) -> None:
        phase = p.phase
        if step == "pull":
            self.label, self.bar = "pulling the image", p
        elif phase == "train":
            self.train, self._train_seen = p, self._clock()
            self.label, self.bar = "training", p
        elif phase == "eval":
            self.label, self.bar = self._evaluating(), p
        elif step == "preprocess" or phase == "preprocess":
            what = _PARENTHESES.sub("", phase).strip(" :")
            self.label = (
                f"preprocessing: {what}" if what and what != "preprocess" else "preprocessing"
            )
            self.bar = p
        elif phase.lower().startswith(_LOADING_BARS):
            self.label, self.bar = "loading the model", p
        elif phase.lower().startswith(_SAVING_BARS):
            if not self.label.startswith("saving"):
                self.label = "saving"
            self.bar = p
        else:
            self.label, self.bar = _PARENTHESES.sub("", phase).strip(" :") or phase, p

    def _line(self, event: LogLine) -> None:
        if event.step != "train" or self.state != JobState.TRAINING:
            return
        line = event.line
        if "Saving model checkpoint" in line and (found := _CHECKPOINT.search(line)):
            self.label, self.bar = f"saving {found.group(1)}", None
            return
        for pattern, label in _LOG_ACTIVITY:
            if pattern.search(line):
                if label == "evaluating":
                    label = self._evaluating()
                self.label, self.bar = label, None
                return

    def _metrics(self, event: Metrics) -> None:
        values = event.values()
        if not event.eval:
            self.loss = values.get("loss", self.loss)
            self.learning_rate = values.get("learning_rate", self.learning_rate)
            train, at = self.train, event.train_step
            if train is not None and at is not None and at > train.current:
                # The bar's own redraw may be held back a moment; the metrics say the step.
                self.train = replace(train, current=at)
                if self.bar is train:
                    self.bar = self.train
            return
        if self.state == JobState.TRAINING and self.label.startswith("evaluating"):
            train = self.train
            done = train is not None and train.total and train.current >= train.total
            self.label = "finishing" if done else "training"
            self.bar = None if done else train
