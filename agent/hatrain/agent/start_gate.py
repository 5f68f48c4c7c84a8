"""Starts before bookkeeping: the jobs placed whose first process has not started yet.

A job's runner spends several milliseconds of the interpreter on a step that has ended (its last
output stored, its end recorded, the next step started). In a burst of jobs placed together, the
first ones end while the last are still starting, and that bookkeeping would hold up their
starts. A runner whose step has ended therefore waits, briefly, until every job placed has its
first process running.
"""

import threading

# A runner never waits longer than this: a start that hangs (an image pull) holds nobody up.
_LONGEST_WAIT_SECONDS = 0.25


class StartGate:
    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._unstarted = 0

    def placed(self) -> None:
        """A job was placed: its runner calls started() once, whatever becomes of it."""
        with self._changed:
            self._unstarted += 1

    def started(self) -> None:
        with self._changed:
            self._unstarted -= 1
            if self._unstarted <= 0:
                self._changed.notify_all()

    def wait_for_starts(self) -> None:
        """Until no job placed is still starting (or a short while has passed)."""
        with self._changed:
            self._changed.wait_for(lambda: self._unstarted <= 0, _LONGEST_WAIT_SECONDS)
