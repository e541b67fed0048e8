"""Durable timers of passive runs: one trio task and a heap, not a task per timer.

A live run sleeps with an ordinary trio sleep. What makes the timer durable is
the journal (the due time is recorded before the sleep starts) and a ``timers``
record in LMDB, so that a run which is passivated or recovered while sleeping is
re-activated when its time comes. Every armed timer sits in this heap; when one
falls due and its run has no live actor, the runtime activates the run, whose
replay then finds the due time passed and carries on. A run that is live ignores
the wake-up: its own sleep fires, exactly once.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable

import trio

from perdure.storage import keys

__all__ = ["TimerService", "timer_key"]


def timer_key(run_id: str, due: float, name: str) -> bytes:
    """The stored key of a run's timer ``name`` due at wall time ``due``."""
    return keys.timer_key(int(due * 1000), run_id, name)


class TimerService:
    """Wakes ``on_due(run_id, key)`` when each armed timer's wall time arrives."""

    def __init__(self, now: Callable[[], float], on_due: Callable[[str, bytes], None]) -> None:
        self._now = now
        self._on_due = on_due
        self._heap: list[tuple[float, str, bytes]] = []
        self._scope: trio.CancelScope | None = None

    def arm(self, due: float, run_id: str, key: bytes) -> None:
        heapq.heappush(self._heap, (due, run_id, key))
        if self._scope is not None and self._heap[0][0] == due:
            self._scope.deadline = min(self._scope.deadline, self._trio_time(due))

    def _trio_time(self, due: float) -> float:
        return trio.current_time() + (due - self._now())

    def __len__(self) -> int:
        return len(self._heap)

    async def run(self) -> None:
        while True:
            with trio.CancelScope() as scope:
                self._scope = scope
                scope.deadline = self._trio_time(self._heap[0][0]) if self._heap else math.inf
                await trio.sleep_forever()
            self._scope = None
            now = self._now()
            while self._heap and self._heap[0][0] <= now:
                _, run_id, key = heapq.heappop(self._heap)
                self._on_due(run_id, key)
            await trio.lowlevel.checkpoint()
