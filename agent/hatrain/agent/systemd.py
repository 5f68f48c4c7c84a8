"""sd_notify(3) over $NOTIFY_SOCKET: READY once serving, then the watchdog's keepalives.

The protocol is one datagram per message to the socket systemd names; outside systemd (no
NOTIFY_SOCKET) every call does nothing. Keepalives are sent only after READY, and by whoever
calls keepalive(): the supervisor's loop, so that a wedged loop stops them and systemd restarts
the agent (WatchdogSec= in the unit), while an idle one keeps sending.
"""

import os
import socket
import threading
import time
from collections.abc import Mapping

import structlog

log = structlog.get_logger(__name__)


def watchdog_seconds(environ: Mapping[str, str]) -> float | None:
    """WatchdogSec= as systemd passes it (WATCHDOG_USEC, for this process: WATCHDOG_PID)."""
    usec = environ.get("WATCHDOG_USEC", "")
    pid = environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0 or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 1_000_000


class Notifier:
    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        self._address = "\0" + address[1:] if address.startswith("@") else address
        self.watchdog_seconds = watchdog_seconds(env) if address else None
        self._ready = False
        self._last_keepalive = 0.0
        self._lock = threading.Lock()

    @property
    def active(self) -> bool:
        return bool(self._address)

    def notify(self, message: str) -> None:
        if not self._address:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto(message.encode(), self._address)
        except OSError as exc:
            log.warning("cannot notify systemd", message=message, error=str(exc))

    def ready(self, status: str = "") -> None:
        """READY=1: call once recovery is done and the listener answers."""
        self.notify("READY=1" + (f"\nSTATUS={status}" if status else ""))
        self._ready = True

    def stopping(self) -> None:
        self.notify("STOPPING=1")

    def keepalive(self) -> None:
        """WATCHDOG=1, at most four times per watchdog period (the caller may call it far more
        often), and only once READY has been sent."""
        if not self._ready or self.watchdog_seconds is None:
            return
        with self._lock:
            now = time.monotonic()
            if now - self._last_keepalive < self.watchdog_seconds / 4:
                return
            self._last_keepalive = now
        self.notify("WATCHDOG=1")
