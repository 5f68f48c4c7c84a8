"""Jobs placed together start together, and before anyone's bookkeeping.

A job's first start has two parts: its preparation (its directories and config, the step's files,
for Docker the container's creation), several milliseconds of the agent's interpreter and of the
filesystem, and the launch itself (a spawn, a container's start). Jobs placed in one pass prepare
side by side; if each launched as soon as it was ready, the first ones' processes would take the
CPU from the preparation of the others, and the burst would start one by one over the whole of
it. A job ready to launch therefore waits, briefly, until every job placed is ready too, and
they launch together: the first starts later than it would alone, the last a little sooner.

Likewise a runner spends several milliseconds on a step that has ended (its last output stored,
its end recorded, the next step started). In a burst, the first ones end while the last are
still starting, and that bookkeeping would hold up their starts. A runner whose step has ended
therefore waits, briefly, until every job placed has its first process running.
"""

import threading

# A runner never waits longer than this: a start that hangs (an image pull) holds nobody up.
_LONGEST_WAIT_SECONDS = 0.25


class StartGate:
    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._unprepared = 0
        self._unstarted = 0

    def placed(self) -> None:
        """A job was placed: its runner calls prepared() and started() once each, whatever
        becomes of it."""
        with self._changed:
            self._unprepared += 1
            self._unstarted += 1

    def prepared(self) -> None:
        with self._changed:
            self._unprepared -= 1
            if self._unprepared <= 0:
                self._changed.notify_all()

    def started(self) -> None:
        with self._changed:
            self._unstarted -= 1
            if self._unstarted <= 0:
                self._changed.notify_all()

    def wait_for_preparations(self) -> None:
        """Until every job placed is ready to launch (or a short while has passed)."""
        with self._changed:
            self._changed.wait_for(lambda: self._unprepared <= 0, _LONGEST_WAIT_SECONDS)

    def wait_for_starts(self) -> None:
        """Until no job placed is still starting (or a short while has passed)."""
        with self._changed:
            self._changed.wait_for(lambda: self._unstarted <= 0, _LONGEST_WAIT_SECONDS)
