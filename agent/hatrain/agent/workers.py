"""Threads that run jobs and read their steps' output, kept for the next job once done.

Every job needs a thread for its runner and one for each step's output while it runs. Starting
a thread holds the interpreter's lock while the thread is made and hands it to the new thread
before returning, which, in a burst of starts, costs more than the rest of a start's own work;
a kept thread takes its next task from a queue. The threads are daemons, as the agent's own
threads are: a job's runner may wait for hours, and the agent stops without waiting for it
(the job is found again at the next start).
"""

import itertools
import queue
import threading
from collections.abc import Callable

import structlog

log = structlog.get_logger(__name__)


class Workers:
    def __init__(self, prefix: str) -> None:
        self._prefix = prefix
        self._tasks: queue.SimpleQueue[tuple[str, Callable[[], None]]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0  # waiting for a task and not yet promised one
        self._numbers = itertools.count(1)

    def run(self, name: str, task: Callable[[], None]) -> None:
        """Run task on a kept thread, or a new one if none is free; the thread is called name
        while it runs it (as stack dumps and profilers show it)."""
        with self._lock:
            spare = self._idle > 0
            if spare:
                self._idle -= 1
        if not spare:
            name_when_idle = f"{self._prefix}-{next(self._numbers)}"
            threading.Thread(target=self._work, name=name_when_idle, daemon=True).start()
        self._tasks.put((name, task))

    def _work(self) -> None:
        me = threading.current_thread()
        idle_name = me.name
        while True:
            me.name, task = self._tasks.get()
            try:
                task()
            except Exception:
                log.exception("a worker's task failed", task=me.name)
            del task  # an idle thread holds nothing of its last job
            me.name = idle_name
            with self._lock:
                self._idle += 1
