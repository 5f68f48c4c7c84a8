"""Turn Axolotl's raw output into events: log lines, metric dicts, progress bars and failure signs.

Axolotl (through transformers) prints `\\r`-updated tqdm bars, metric dicts such as
`{'loss': '4.919', 'learning_rate': '6.699e-05', ...}` (string-valued since transformers 5,
numeric before, `nan` possible), eval dicts (`eval_*` keys) and a final `train_runtime` dict.
Bars become PROGRESS events (throttled) instead of thousands of log lines.

The train bar is the Trainer's bar without a description: the first one that is not part of an
evaluation (Axolotl logs "Running evaluation step..." before each). Its total is the step count
the Trainer runs, which is what counts: Axolotl's "Maximum number of steps" line is missing for
RL and streaming runs, and smaller than the run when max_steps exceeds the computed count. Other
bars without a description in the train step are evaluation bars. Each metric dict carries the
train bar's position: tqdm redraws the bar right after printing the dict, so a dict is given the
position of the train bar that follows it.
"""

import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from hatrain.rpc.config_yaml import ConfigYamlError, load_config_yaml

from .events import Event, EventKind, Metric, Progress
from .states import FailureReason

PREPROCESS_SUCCESS = "Success! Preprocessed data path"

_BAR = re.compile(
    r"^(?P<desc>.*?):?\s*(?P<pct>\d{1,3})%\|[^|]*\|\s*(?P<n>\d+)/(?P<total>\d+)\s*"
    r"\[(?P<elapsed>[\d:]+)<(?P<remaining>[\d:?]+),\s*(?P<rate>[\d.]+|\?)\s*(?P<unit>[^\]]*?)\]"
)
_DICT = re.compile(r"\{'[^{}]*\}")
_PAIR = re.compile(r"'([^']+)':\s*('(?:[^'\\]|\\.)*'|[^,}]+)")
_EVAL_START = "Running evaluation step"
# An exception as Python prints it, at the start of a line: "OSError: ...", "torch.X.YError: ...".
_ERROR_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b[^:\s]*:")
# Lines of a launched training process carry its rank: "[rank0]: ValueError: ...".
_RANK_PREFIX = re.compile(r"^\[(?:rank|default)(\d+)\]:\s?")
# Axolotl's mark on its log lines from processes other than the first.
_AXOLOTL_RANK = "[RANK:"
# A launcher reporting that its child failed: the child's own exception is the real error.
_LAUNCHER_ERRORS = ("CalledProcessError", "ChildFailedError")
_MODEL_FAILURES = ("model unavailable", "gated model or token")
_THROTTLE_SECONDS = 0.25
_HINT_CHARS = 300
_CLEARED_LINE = 20
_BLANKED = " " * _CLEARED_LINE


@dataclass(frozen=True)
class Signature:
    pattern: re.Pattern[str]
    reason: FailureReason
    # Text of which at least one piece is in every line the pattern matches: output is screened
    # for these with plain substring search, which is a hundred times cheaper than the patterns.
    keywords: tuple[str, ...]
    # None: the matching log line itself is the hint.
    hint: str | None = None


SIGNATURES = (
    Signature(
        re.compile(r"CUDA out of memory|torch\.OutOfMemoryError|OutOfMemoryError: CUDA"),
        FailureReason.GPU_OUT_OF_MEMORY,
        ("CUDA out of memory", "OutOfMemoryError"),
        "CUDA out of memory: lower micro_batch_size or sequence_len, or enable "
        "gradient_checkpointing",
    ),
    Signature(
        re.compile(r"The dataset could not be loaded"),
        FailureReason.DATASET_ERROR,
        ("The dataset could not be loaded",),
    ),
    Signature(
        re.compile(
            r"datasets\.exceptions\.|DatasetGenerationError|JSONDecodeError|"
            r"Failed to (read|load) (file|dataset)"
        ),
        FailureReason.DATASET_ERROR,
        ("datasets.exceptions.", "DatasetGenerationError", "JSONDecodeError", "Failed to "),
    ),
    Signature(
        re.compile(
            r"GatedRepoError|Cannot access gated repo|is a gated|401 Client Error|"
            r"Invalid user token|Access to model .* is restricted"
        ),
        FailureReason.GATED_MODEL,
        ("GatedRepoError", "gated", "401 Client Error", "Invalid user token", "Access to model"),
        "the model is gated or the token is wrong: accept its licence on the Hub and pass HF_TOKEN",
    ),
    Signature(
        re.compile(
            r"validation errors? for AxolotlInputConfig|validation errors? for Axolotl|"
            r"pydantic_core\._pydantic_core\.ValidationError"
        ),
        FailureReason.BAD_CONFIG,
        ("validation error", "ValidationError"),
    ),
    Signature(
        re.compile(r"Watchdog caught collective operation timeout|NCCL.*[Tt]imeout"),
        FailureReason.NCCL_TIMEOUT,
        ("Watchdog caught", "NCCL"),
        "NCCL timed out between GPUs: check that every GPU is healthy and shared memory is large",
    ),
    Signature(
        re.compile(
            r"unable to write to file </torch_|No space left on device.*shm|"
            r"DataLoader worker .* is killed by signal: Bus error|shared memory"
        ),
        FailureReason.SHARED_MEMORY,
        ("unable to write to file", "No space left on device", "Bus error", "shared memory"),
        "out of shared memory: the agent's docker.limits.shm_size is too small",
    ),
    Signature(
        re.compile(
            r"We couldn't connect to 'https://huggingface.co'|LocalEntryNotFoundError|"
            r"does not appear to have a file named|is not a local folder and is not a "
            r"valid model identifier|Repo id must be in the form"
        ),
        FailureReason.MODEL_UNAVAILABLE,
        (
            "huggingface.co",
            "LocalEntryNotFoundError",
            "does not appear to have a file named",
            "is not a local folder",
            "Repo id must be in the form",
        ),
    ),
)


_SIGNATURE_KEYWORDS = tuple(dict.fromkeys(k for sig in SIGNATURES for k in sig.keywords))

# Characters of log text, the most frequent first; any other character (punctuation, say) is
# rarer than all of them.
_FREQUENT = " etaoinsrlhdcumpfgwy0123456789.:-_/=,bvkxjqzETAOINSRLHDCUMPFGWYBVKXJQZ"


def _rarest(needle: str) -> str:
    return max(needle, key=lambda c: _FREQUENT.find(c) % (len(_FREQUENT) + 1))


class _Finder:
    """Whether a piece of output holds any of some strings. A search for one character is a
    memchr, many times faster than a search for a short string; each string's rarest character
    is looked for first, and the string itself only in pieces that hold that character."""

    def __init__(self, *needles: str) -> None:
        self._by_probe: dict[str, list[str]] = {}
        for needle in needles:
            self._by_probe.setdefault(_rarest(needle), []).append(needle)

    def __call__(self, text: str) -> bool:
        return any(
            probe in text and any(n in text for n in needles)
            for probe, needles in self._by_probe.items()
        )


_METRICS = _Finder("{'")
_EVAL = _Finder(_EVAL_START)
_RANKS = _Finder("[rank", "[default")
_SUCCESS = _Finder(PREPROCESS_SUCCESS)
_ERRORS = _Finder("Error", "Exception")
_SIGNATURE = _Finder(*_SIGNATURE_KEYWORDS)
_BAR_OR_BLANKED = _Finder("\r", "%|", _BLANKED)


@dataclass(frozen=True)
class _Screen:
    """What a piece of output may hold, found with substring search over the whole piece.

    Most output is plain lines: screened once per piece, a line then costs one event and no
    pattern match at all.
    """

    metrics: bool
    eval_start: bool
    rank_prefix: bool
    success: bool
    error_line: bool
    signature: bool
    # Nothing but lines to pass on: no bar, no \r update, no line blanked by tqdm.
    plain: bool

    @classmethod
    def of(cls, text: str) -> "_Screen":
        metrics = _METRICS(text)
        eval_start = _EVAL(text)
        rank_prefix = _RANKS(text)
        success = _SUCCESS(text)
        error_line = _ERRORS(text)
        signature = _SIGNATURE(text)
        plain = not (
            metrics
            or eval_start
            or rank_prefix
            or success
            or error_line
            or signature
            or _BAR_OR_BLANKED(text)
        )
        return cls(metrics, eval_start, rank_prefix, success, error_line, signature, plain)


def parse_metrics(text: str) -> tuple[Metric, ...] | None:
    """The metrics of a `{'name': value, ...}` dict printed on this line, if there is one."""
    found = _DICT.search(text) if "{'" in text else None
    if found is None:
        return None
    metrics = []
    for name, raw in _PAIR.findall(found.group(0)):
        raw = raw.strip()
        text_value = raw[1:-1] if raw[:1] in "'\"" else raw
        try:
            metrics.append(Metric(name, float(text_value)))
        except ValueError:
            metrics.append(Metric(name, None, text_value))
    return tuple(metrics) or None


def _seconds(clock: str) -> float:
    if "?" in clock:
        return 0.0
    total = 0.0
    for part in clock.split(":"):
        total = total * 60 + float(part)
    return total


def models_of(config_yaml: str) -> tuple[str, ...]:
    """The models a job's config names, to say which one could not be had."""
    try:
        config = load_config_yaml(config_yaml)
    except ConfigYamlError:
        return ()
    if not isinstance(config, dict):
        return ()
    keys = ("base_model", "tokenizer_config", "base_model_config")
    names = [f"{k}: {config[k]}" for k in keys if isinstance(config.get(k), str) and config[k]]
    return tuple(dict.fromkeys(names))


class OutputParser:
    """Feed it output chunks of one step in order; it returns the events they make."""

    def __init__(
        self,
        step: str,
        clock: Callable[[], float] = time.monotonic,
        train_total: int | None = None,
        train_position: int = 0,
        config_yaml: str = "",
    ) -> None:
        """config_yaml: the job's config, read for the models it names only when a failure
        needs them (not on every step's start)."""
        self.step = step
        self._clock = clock
        self._buffer = ""
        self.train_total = train_total
        self.train_position = train_position
        self._config_yaml = config_yaml
        self._in_eval = False
        self._last_emit: dict[str, float] = {}
        self._pending: dict[str, Event] = {}
        # Metric events waiting for the train bar's redraw, which gives their position.
        self._awaiting: list[Event] = []
        self.failure: tuple[FailureReason, str] | None = None
        self.last_error_line = ""
        self.preprocess_succeeded = False

    def feed(self, chunk: str) -> list[Event]:
        buffer = self._buffer + chunk
        screen = _Screen.of(buffer)
        events: list[Event] = []
        if screen.plain:
            *lines, self._buffer = buffer.split("\n")
            if texts := [text for text in map(str.rstrip, lines) if text]:
                self._release(events)
                events += self._pending.values()
                self._pending.clear()
                events.append(Event(EventKind.LOG, self.step, line="\n".join(texts)))
            return events
        *lines, rest = buffer.split("\n")
        for line in lines:
            for segment in line.split("\r") if "\r" in line else (line,):
                self._segment(segment, events, screen)
        # A partial line: bars updated with \r are handled as they arrive.
        *done, self._buffer = rest.split("\r")
        for segment in done:
            self._segment(segment, events, screen)
        return events

    def flush(self) -> list[Event]:
        events: list[Event] = []
        if self._buffer:
            self._segment(self._buffer, events, _Screen.of(self._buffer))
            self._buffer = ""
        self._release(events)
        events += self._pending.values()
        self._pending.clear()
        return events

    def _release(self, events: list[Event]) -> None:
        for event in self._awaiting:
            event.train_step = self.train_position
        events += self._awaiting
        self._awaiting = []

    def _segment(self, segment: str, events: list[Event], screen: _Screen) -> None:
        text = segment.rstrip()
        if not text:
            return
        other_process = False
        if screen.rank_prefix and text[0] == "[" and (ranked := _RANK_PREFIX.match(text)):
            other_process = ranked.group(1) != "0"
            text = text[ranked.end() :]
            if not text:
                return
        bar = _BAR.match(text.strip()) if "%|" in text else None
        if bar is not None:
            self._bar(bar, events)
            text = text.strip()[bar.end() :]
            if not text.strip():
                return
        self._line(text, events, screen, other_process)

    def _phase(self, desc: str, current: int, total: int) -> str:
        if desc:
            return desc
        if self.step != "train":
            return self.step
        if self.train_total is None and not self._in_eval:
            self.train_total = total
        if total != self.train_total:
            return "eval"
        if self._in_eval and current < self.train_position:
            return "eval"  # an evaluation of as many batches as the run has steps
        return "train"

    def _bar(self, bar: re.Match[str], events: list[Event]) -> None:
        desc = bar.group("desc").strip()
        current, total = int(bar.group("n")), int(bar.group("total"))
        phase = self._phase(desc, current, total)
        if phase == "train":
            self.train_position = current
            self._release(events)
        rate_text, unit = bar.group("rate"), bar.group("unit").strip()
        rate = 0.0 if rate_text == "?" else float(rate_text)
        if unit.startswith("s/"):
            rate, unit = (1.0 / rate if rate else 0.0), unit[2:]
        elif unit.endswith("/s"):
            unit = unit[:-2]
        event = Event(
            EventKind.PROGRESS,
            step=self.step,
            progress=Progress(
                phase=phase,
                current=current,
                total=total,
                rate=rate,
                elapsed_seconds=_seconds(bar.group("elapsed")),
                eta_seconds=_seconds(bar.group("remaining")),
                unit=unit.strip() or "it",
            ),
        )
        now = self._clock()
        last = self._last_emit.get(phase)
        if current in (0, total) or last is None or now - last >= _THROTTLE_SECONDS:
            self._pending.pop(phase, None)
            self._last_emit[phase] = now
            events.append(event)
        else:
            self._pending[phase] = event

    def _line(
        self, text: str, events: list[Event], screen: _Screen, other_process: bool = False
    ) -> None:
        if text[0] == " " and len(text) - len(text.lstrip(" ")) >= _CLEARED_LINE:
            text = text.lstrip(" ")  # tqdm blanks its line with spaces before printing over it
        self._release(events)
        if self._pending:
            events += self._pending.values()
            self._pending.clear()
        events.append(Event(EventKind.LOG, step=self.step, line=text))
        # A data-parallel job's metrics come from its first process; the same from another
        # process is a log line only, so that nothing is counted twice.
        other_process = other_process or (screen.metrics and _AXOLOTL_RANK in text)
        # Metrics are a line that is a dict, not a dict quoted in a message.
        if (
            screen.metrics
            and not other_process
            and text.lstrip().startswith("{'")
            and (metrics := parse_metrics(text)) is not None
        ):
            is_eval = any(m.name.startswith("eval_") for m in metrics)
            event = Event(EventKind.METRICS, step=self.step, metrics=metrics, eval=is_eval)
            if is_eval:
                self._in_eval = False
            if self.step == "train" and self.train_total is not None:
                self._awaiting.append(event)
            else:
                event.train_step = self.train_position if self.step == "train" else None
                events.append(event)
        if screen.eval_start and _EVAL_START in text:
            self._in_eval = True
        if screen.success and PREPROCESS_SUCCESS in text:
            self.preprocess_succeeded = True
        if text[0] in " \t":
            return  # a traceback's frame or source line: never the error itself
        exception = screen.error_line and _ERROR_LINE.match(text) is not None
        if exception and not any(name in text for name in _LAUNCHER_ERRORS):
            self.last_error_line = text.strip()[:_HINT_CHARS]
        if screen.signature:
            self._signature(text, exception)

    def _signature(self, text: str, exception: bool) -> None:
        """The first failure sign decides the reason; its hint is the line, and a later
        exception line of the same reason (the end of the chain) replaces it."""
        reason = self.failure[0] if self.failure else None
        for sig in SIGNATURES:
            if reason is not None and (sig.reason != reason or sig.hint or not exception):
                continue
            if any(k in text for k in sig.keywords) and sig.pattern.search(text):
                hint = self._name_model(sig.reason, sig.hint or text.strip()[:_HINT_CHARS])
                self.failure = (sig.reason, hint)
                break

    def _name_model(self, reason: FailureReason, hint: str) -> str:
        if reason.value not in _MODEL_FAILURES:
            return hint
        models = models_of(self._config_yaml)
        if not models or any(name.split(": ", 1)[1] in hint for name in models):
            return hint
        return f"{hint} ({'; '.join(models)})"
