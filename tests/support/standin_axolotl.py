"""Test stand-in for the `axolotl` command, for tests about the agent, not about Axolotl.

It replays output captured from a real Axolotl 0.19 run (made by the test set-up, never written by
hand) and can be told, through a `hatrain_standin:` mapping in the job's own config, to wait for a
file (after a step, or before a given text of its output), exit with a code, print lines of its
own or many numbered lines (at a pace, if asked), or number its lines on stderr as well. Tests of
Axolotl itself run the real one.
"""

import io
import os
import sys
import time
from pathlib import Path

import yaml


def main() -> int:
    step, config_path = sys.argv[1], sys.argv[2]
    config = yaml.safe_load(Path(config_path).read_text())
    plan = config.get("hatrain_standin") or {}
    run_dir = Path(config["output_dir"]).parent  # the training-runs directory, by any runtime
    if plan.get("record_env"):
        (run_dir / f"env-{step}.txt").write_text(
            "\n".join(f"{k}={v}" for k, v in sorted(os.environ.items()))
        )
        (run_dir / f"argv-{step}.txt").write_text("\n".join(sys.argv[1:]))
    for line in plan.get(f"say_{step}", ()):  # lines of its own first, exactly as given
        sys.stdout.write(line + "\n")
    capture = Path(os.environ["HATRAIN_CAPTURE_DIR"]) / f"{step}.log"
    delay = float(plan.get("delay", 0))
    out, err = sys.stdout.buffer, sys.stderr.buffer
    content = capture.read_bytes()  # bytes as Axolotl wrote them, \r included
    pauses = _pauses(content, step, plan.get("pause", ()))
    offset = 0
    for i, line in enumerate(io.BytesIO(content)):  # lines end at \n only, as Axolotl wrote them
        start = offset
        offset += len(line)
        for at, until in [p for p in pauses if start <= p[0] < offset]:
            out.write(line[: at - start])
            out.flush()
            _hold(run_dir, until)
            line = line[at - start :]
            start = at
        if line:
            out.write(line)
            out.flush()
            if plan.get("stderr_lines"):  # a line of its own on stderr, in two writes
                err.write(b"stderr ")
                err.flush()
                err.write(f"line {i}\n".encode())
                err.flush()
            if delay:
                time.sleep(delay)
    width = int(plan.get("line_bytes", 0))  # pad each numbered line to this many bytes
    line_delay = float(plan.get("line_delay", 0))  # seconds between numbered lines
    for i in range(int(plan.get("lines", 0)) if step == "train" else 0):
        out.write(f"line {i} {time.time():.6f} ".ljust(width, "x").encode() + b"\n")
        if line_delay:
            out.flush()
            time.sleep(line_delay)
    out.flush()
    hold = plan.get(f"hold_{step}")
    if hold:
        _hold(run_dir, hold)
        print(f"released by {hold}", flush=True)
    return int(plan.get(f"exit_{step}", 0))


def _pauses(content: bytes, step: str, plan: list[dict[str, object]]) -> list[tuple[int, str]]:
    """Where to stop and wait for a file: before the nth occurrence of a text in this step's
    output (`pause: [{step, before, nth, until}]`), as byte offsets, in order."""
    found = []
    for pause in plan:
        if pause.get("step") != step:
            continue
        text = str(pause["before"]).encode()
        at = -1
        for _ in range(int(str(pause.get("nth", 1)))):
            at = content.index(text, at + 1)
        found.append((at, str(pause["until"])))
    return sorted(found)


def _hold(run_dir: Path, name: str) -> None:
    """Wait until the file name appears in the run directory (for 300 s at most)."""
    deadline = time.monotonic() + 300
    while not (run_dir / name).exists() and time.monotonic() < deadline:
        time.sleep(0.05)


if __name__ == "__main__":
    sys.exit(main())
