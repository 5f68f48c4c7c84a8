"""Text fit to print: what comes from jobs and hosts escaped, durations and times for people."""

import math
import time

_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x00, 0x20), 0x7F) if c != 0x09}
_CONTROL.update({0x0A: "\\n", 0x0D: "\\r"})


def safe(text: str) -> str:
    """Text from a job or a host, fit to print: control characters (escape sequences that
    could move the cursor, clear the screen or retitle the terminal) shown escaped. Print it
    with markup off, as everything here does, so that `[...]` in it stays text."""
    if text.isprintable():
        return text
    return text.translate(_CONTROL).translate({0x9B: "\\x9b"})


def clock(seconds: float) -> str:
    """A duration as m:ss or h:mm:ss (`0:00` for none)."""
    if math.isinf(seconds) or math.isnan(seconds):
        return "-"
    minutes, secs = divmod(max(0, int(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def local_time(seconds: float) -> str:
    """A moment as people read it here: `2026-11-29 17:55:21` in local time; `-` for none."""
    if not seconds:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))
