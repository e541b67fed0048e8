"""Change notifications per run, fired after each commit is acknowledged.

Followers (``events(follow=True)``) read committed state from LMDB and park here
until the next commit of that run. Because they only ever read what is stored, a
live follower sees exactly what a replay after a crash would (R20).

``wait()`` only cares about the end of a run, so it parks on a separate channel
that fires once, with the terminal record, instead of waking at every step.
"""

from __future__ import annotations

import trio

from perdure.storage import RunRecord

__all__ = ["ChangeHub", "EndWatch"]


class EndWatch:
    """Set once a run's terminal record is durable (``rec``), or when the hub closes."""

    __slots__ = ("event", "rec")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.rec: RunRecord | None = None


class ChangeHub:
    """``notify(run_id)`` wakes every task parked in ``watch(run_id)``."""

    def __init__(self) -> None:
        self._events: dict[str, trio.Event] = {}
        self._ends: dict[str, EndWatch] = {}

    def notify(self, run_id: str, terminal: RunRecord | None = None) -> None:
        """A commit of ``run_id`` is durable; ``terminal`` is its record if it ended."""
        event = self._events.pop(run_id, None)
        if event is not None:
            event.set()
        if terminal is not None:
            end = self._ends.pop(run_id, None)
            if end is not None:
                end.rec = terminal
                end.event.set()

    def notify_all(self) -> None:
        events, self._events = self._events, {}
        for event in events.values():
            event.set()
        ends, self._ends = self._ends, {}
        for end in ends.values():
            end.event.set()

    def watch(self, run_id: str) -> trio.Event:
        """The event set at the next commit of ``run_id``; take it *before* reading."""
        event = self._events.get(run_id)
        if event is None:
            event = self._events[run_id] = trio.Event()
        return event

    def watch_end(self, run_id: str) -> EndWatch:
        """Set when ``run_id`` commits its terminal record; take it *before* reading."""
        end = self._ends.get(run_id)
        if end is None:
            end = self._ends[run_id] = EndWatch()
        return end
