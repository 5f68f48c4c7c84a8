"""Test stand-in for the `axolotl` command, for tests about the agent, not about Axolotl.

It replays output captured from a real Axolotl 0.19 run (made by the test set-up, never written by
hand) and can be told, through a `hatrain_standin:` mapping in the job's own config, to wait for a
file, exit with a code, print lines of its own or many numbered lines (at a pace, if asked), or
number its lines on stderr as well. Tests of Axolotl itself run the real one.
"""

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
    with capture.open("rb") as fh:  # bytes as Axolotl wrote them, \r included
        for i, line in enumerate(fh):
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
        deadline = time.monotonic() + 300
        while not (run_dir / hold).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        print(f"released by {hold}", flush=True)
    return int(plan.get(f"exit_{step}", 0))


if __name__ == "__main__":
    sys.exit(main())
