"""Durable timers of passive runs: one trio task and a heap, not a task per timer.

A live run sleeps with an ordinary trio sleep. What makes the timer durable is the
journal (the due time is recorded before the sleep starts) and a stored
:class:`~perdure.storage.TimerRef`, so that a run which is passivated or recovered
while sleeping is re-activated when its time comes. Every armed timer sits in this
heap; when one falls due and its run has no live actor, the engine activates the run,
whose replay then finds the due time passed and carries on. A run that is live ignores
the wake-up: its own sleep fires, exactly once.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable

import trio

from perdure.storage import TimerRef

__all__ = ["TimerService"]


_MIN_STEP = 0.0001
"""Seconds: the least a not-yet-due timer waits before the service looks again."""
_COMPACT_AT = 1024
"""Disarmed timers the heap may hold before it is rebuilt without them (see ``disarm``)."""


class TimerService:
    """Calls ``on_due(ref)`` when each armed timer's wall time arrives."""

    def __init__(self, now: Callable[[], float], on_due: Callable[[TimerRef], None]) -> None:
        self._now = now
        self._on_due = on_due
        self._heap: list[tuple[int, TimerRef]] = []  # (fire at, ms; the stored timer)
        self._disarmed: set[TimerRef] = set()
        self._scope: trio.CancelScope | None = None

    def arm(self, ref: TimerRef, fire_ms: int | None = None) -> None:
        """Call ``on_due(ref)`` at ``ref``'s due time, or at ``fire_ms`` (a retry later)."""
        at = ref.due_ms if fire_ms is None else fire_ms
        heapq.heappush(self._heap, (at, ref))
        if self._scope is not None and self._heap[0][0] == at:
            self._scope.deadline = min(self._scope.deadline, self._trio_time(at / 1000))

    def disarm(self, ref: TimerRef) -> None:
        """Forget an armed timer its run no longer needs (the run ended first).

        Lazily: it is skipped when it comes up, and the heap is rebuilt without the
        disarmed ones once they are half of it. A run timeout arms a timer for every
        run; kept until due, those of runs that ended long before would hold memory in
        proportion to the timeout times the rate of runs.
        """
        if ref.due_ms <= self._now() * 1000:
            # Due already: popped, or about to be (and then dropped, its run having
            # ended). Remembered, it would only wait for the next rebuild.
            return
        disarmed = self._disarmed
        disarmed.add(ref)
        if len(disarmed) > _COMPACT_AT and 2 * len(disarmed) > len(self._heap):
            self._heap = [entry for entry in self._heap if entry[1] not in disarmed]
            heapq.heapify(self._heap)
            disarmed.clear()

    def _trio_time(self, due: float) -> float:
        return trio.current_time() + (due - self._now())

    def __len__(self) -> int:
        """Timers held in memory (disarmed ones included until the heap is rebuilt)."""
        return len(self._heap)

    async def run(self) -> None:
        while True:
            now_ms = self._now() * 1000
            disarmed = self._disarmed
            while self._heap and self._heap[0][0] <= now_ms:
                ref = heapq.heappop(self._heap)[1]
                if ref in disarmed:
                    disarmed.discard(ref)
                else:
                    self._on_due(ref)
            with trio.CancelScope() as scope:
                self._scope = scope
                if self._heap:
                    # Not due by the wall clock, so at least a little later by trio's: the
                    # two clocks round differently (far from zero a sub-millisecond gap can
                    # vanish in a float), and a deadline already past would spin for ever.
                    floor = trio.current_time() + _MIN_STEP
                    scope.deadline = max(self._trio_time(self._heap[0][0] / 1000), floor)
                else:
                    scope.deadline = math.inf
                await trio.sleep_forever()
            self._scope = None
