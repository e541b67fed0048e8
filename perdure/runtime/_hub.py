"""Change notifications per run, fired after each commit is acknowledged.

Followers (``events(follow=True)``, ``wait``) read committed state from LMDB and
park here until the next commit of that run. Because they only ever read what is
stored, a live follower sees exactly what a replay after a crash would (R20).
"""

from __future__ import annotations

import trio

__all__ = ["ChangeHub"]


class ChangeHub:
    """``notify(run_id)`` wakes every task parked in ``changed(run_id)``."""

    def __init__(self) -> None:
        self._events: dict[str, trio.Event] = {}

    def notify(self, run_id: str) -> None:
        event = self._events.pop(run_id, None)
        if event is not None:
            event.set()

    def notify_all(self) -> None:
        events, self._events = self._events, {}
        for event in events.values():
            event.set()

    def watch(self, run_id: str) -> trio.Event:
        """The event set at the next commit of ``run_id``; take it *before* reading."""
        event = self._events.get(run_id)
        if event is None:
            event = self._events[run_id] = trio.Event()
        return event
