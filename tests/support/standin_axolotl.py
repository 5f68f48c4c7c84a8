"""Test stand-in for the `axolotl` command, for tests about the agent, not about Axolotl.

It replays output captured from a real Axolotl 0.19 run (made by the test set-up, never written by
hand) and can be told, through a `hatrain_standin:` mapping in the job's own config, to wait for a
file (after a step, or before a given text of its output), exit with a code, print lines of its
own or many numbered lines (at a pace, if asked), or number its lines on stderr as well. With
`probe:` it acts as hostile code in a job would (remote code of a model, say) and records in
probe-<step>.json what it is and what each attempt got: "ok" or the error's name. Tests of
Axolotl itself run the real one.
"""

import errno
import hashlib
import io
import json
import os
import shutil
import stat
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import yaml

PREPARED_POISON = "huggingface/prepared/poison"


def _attempt(action: Callable[[], object]) -> str:
    try:
        action()
    except OSError as exc:
        return errno.errorcode.get(exc.errno or 0, str(exc))
    return "ok"


def _status_field(name: str) -> str:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return line.split(":", 1)[1].strip()
    return ""


def _append(path: Path) -> None:
    with path.open("ab") as fh:
        fh.write(b"rewritten by the job")


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def probe(step: str, config: dict[str, Any], config_path: Path, run_dir: Path) -> None:
    """Try what a job must not be able to do, and record who it ran as and how each went."""
    plan = config["hatrain_standin"]["probe"]
    suid = run_dir / f"suid-{step}"
    home = Path(os.environ["HOME"])
    hf_home = Path(os.environ["HF_HOME"])
    prepared = Path(config["dataset_prepared_path"])
    inputs = [Path(d["path"]) for d in config.get("datasets") or []]
    found = {}
    if prepared.is_dir():  # what an earlier job of this user left for this one
        found = {p.name: p.read_text() for p in sorted(prepared.iterdir()) if p.is_file()}
    record: dict[str, Any] = {
        "uid": os.getuid(),
        "gid": os.getgid(),
        "groups": sorted(os.getgroups()),
        "capabilities": {
            name: _status_field(name) for name in ("CapEff", "CapPrm", "CapInh", "CapAmb")
        },
        "no_new_privs": _status_field("NoNewPrivs"),
        "home_path": str(home),
        "home": _attempt(lambda: (home / f"probe-{step}").write_text("home")),
        "mknod": _attempt(
            lambda: os.mknod(run_dir / f"null-{step}", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        ),
        "copy_shell": _attempt(lambda: shutil.copy("/bin/sh", suid)),
        "setuid": _attempt(lambda: os.chmod(suid, 0o4755)),
        "chown_root": _attempt(lambda: os.chown(suid, 0, 0)),
        "config_write": _attempt(lambda: _append(config_path)),
        "config_dir_write": _attempt(lambda: _write(config_path.parent / "added.yml", "x")),
        "input_write": {str(p): _attempt(partial(_append, p)) for p in inputs},
        "input_sha256": {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in inputs},
        "prepared_found": found,
        "prepared_mark": _attempt(lambda: _write(prepared / "mark.txt", plan["mark"]))
        if "mark" in plan
        else "",
        "others_caches": {  # where another user's cache would be, beside this user's
            user: _attempt(partial(_write, hf_home.parent.parent / user / PREPARED_POISON, "x"))
            for user in plan.get("others", [])
        },
    }
    if hub := os.environ.get("HF_HUB_CACHE"):  # the admin's shared hub cache
        record["hub"] = {
            "path": hub,
            "read": _attempt(lambda: (Path(hub) / "admin.txt").read_text()),
            "write": _attempt(lambda: (Path(hub) / f"probe-{step}").write_text("x")),
        }
    (run_dir / f"probe-{step}.json").write_text(json.dumps(record, indent=1))


def main() -> int:
    step, config_path = sys.argv[1], sys.argv[2]
    config = yaml.safe_load(Path(config_path).read_text())
    plan = config.get("hatrain_standin") or {}
    run_dir = Path(config["output_dir"]).parent  # the training-runs directory, by any runtime
    if "probe" in plan:
        probe(step, config, Path(config_path), run_dir)
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
    burst = int(plan.get("burst", 1))  # or between bursts of this many, written at once
    for i in range(int(plan.get("lines", 0)) if step == "train" else 0):
        out.write(f"line {i} {time.time():.6f} ".ljust(width, "x").encode() + b"\n")
        if line_delay and (i + 1) % burst == 0:
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
