"""Change notifications per run, fired after each commit is acknowledged.

Followers (``events(follow=True)``) read committed state from LMDB and park here
until the next commit of that run. Because they only ever read what is stored, a
live follower sees exactly what a replay after a crash would (R20).

``wait()`` only cares about the end of a run, so it parks on a separate channel
that fires once, with the terminal record, instead of waking at every step.

Watches are shared by every task parked on the same run and counted: a task that
leaves without being woken (a follower of a run that had already ended, a cancelled
``wait``) releases its watch, and the last one out removes it, so nothing is left
behind for runs that never commit again. If a run can no longer reach a terminal
record (its actor failed and failing the run could not be stored either), the hub
hands the error to every task parked on it instead of leaving them waiting (R31).
"""

from __future__ import annotations

import trio

from perdure._errors import PerdureError
from perdure.storage import RunRecord

__all__ = ["ChangeHub", "EndWatch", "Watch"]


class Watch:
    """Set at the next commit of a run; ``error`` if the run can no longer progress."""

    __slots__ = ("error", "event", "waiters")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.waiters = 0
        self.error: PerdureError | None = None


class EndWatch(Watch):
    """Set once a run's terminal record is durable (``rec``), or when the hub closes."""

    __slots__ = ("rec",)

    def __init__(self) -> None:  # spelled out: one call less on every wait()
        self.event = trio.Event()
        self.waiters = 0
        self.error: PerdureError | None = None
        self.rec: RunRecord | None = None


class ChangeHub:
    """``notify(run_id)`` wakes every task parked in ``watch(run_id)``."""

    def __init__(self) -> None:
        self._events: dict[str, Watch] = {}
        self._ends: dict[str, EndWatch] = {}

    def notify(self, run_id: str, terminal: RunRecord | None = None) -> None:
        """A commit of ``run_id`` is durable; ``terminal`` is its record if it ended."""
        watch = self._events.pop(run_id, None)
        if watch is not None:
            watch.event.set()
        if terminal is not None:
            end = self._ends.pop(run_id, None)
            if end is not None:
                end.rec = terminal
                end.event.set()

    def fail(self, run_id: str, error: PerdureError) -> None:
        """``run_id`` will not commit again in this process: wake its watchers with ``error``."""
        for table in (self._events, self._ends):
            watch = table.pop(run_id, None)
            if watch is not None:
                watch.error = error
                watch.event.set()

    def notify_all(self) -> None:
        events, self._events = self._events, {}
        for watch in events.values():
            watch.event.set()
        ends, self._ends = self._ends, {}
        for end in ends.values():
            end.event.set()

    def watch(self, run_id: str) -> Watch:
        """Set at the next commit of ``run_id``; take it *before* reading, then release it."""
        watch = self._events.get(run_id)
        if watch is None:
            watch = self._events[run_id] = Watch()
        watch.waiters += 1
        return watch

    def release(self, run_id: str, watch: Watch) -> None:
        """The task that took ``watch`` no longer waits on it."""
        watch.waiters -= 1
        if watch.waiters <= 0 and self._events.get(run_id) is watch:
            del self._events[run_id]

    def watch_end(self, run_id: str) -> EndWatch:
        """Set when ``run_id`` commits its terminal record; take it *before* reading."""
        end = self._ends.get(run_id)
        if end is None:
            end = self._ends[run_id] = EndWatch()
        end.waiters += 1
        return end

    def release_end(self, run_id: str, end: EndWatch) -> None:
        end.waiters -= 1
        if end.waiters <= 0 and self._ends.get(run_id) is end:
            del self._ends[run_id]

    def __len__(self) -> int:
        """Runs with someone parked on them (a leak shows up here)."""
        return len(self._events) + len(self._ends)
