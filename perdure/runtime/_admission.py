"""Admission control: ``max_running`` bounds the top-level run bodies executing at once.

A *slot* is held by a top-level run while its body executes. A body gives its slot
back when it parks on a durable wait or a durable sleep (a waiting run needs no
slot: it may wait for days) and takes one again before it continues, whatever woke it
(a signal, a timer, a cancellation, a restart, recovery). So the cap holds on every
path, not only at start.

Runs that cannot start at once stay durably ``pending``; their ids queue here without
an actor, so a hundred thousand queued runs cost a deque entry each. Live bodies that
want a slot back queue in the same FIFO, so nothing starves: slots are granted in the
order they were asked for.

Child runs are always admitted and never count: a parent holding a slot while it
awaits its children must not deadlock on them.

With no cap (the default) every call here returns at once.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable

import trio

__all__ = ["Admission"]


class _Waiter:
    __slots__ = ("event", "run_id")

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.event = trio.Event()


class Admission:
    """Slots of ``max_running``; ``start_queued(run_id)`` spawns a queued pending run."""

    def __init__(self, limit: int | None, start_queued: Callable[[str], bool]) -> None:
        self.limit = limit
        self._start_queued = start_queued
        self._holders: set[str] = set()
        self._fifo: deque[str | _Waiter] = deque()
        self.enabled = True
        """False in administration mode: nothing queued is ever started."""

    @property
    def running(self) -> int:
        """How many top-level bodies hold a slot."""
        return len(self._holders)

    def holds(self, run_id: str) -> bool:
        return run_id in self._holders

    def _free(self) -> bool:
        return self.limit is None or len(self._holders) < self.limit

    def try_reserve(self, run_id: str) -> bool:
        """Take a slot for a run about to start, if one is free and nobody queues for one."""
        if self.limit is None:
            return True
        if self._fifo or not self._free():
            return False
        self._holders.add(run_id)
        return True

    def queue(self, run_id: str) -> None:
        """Queue a durably ``pending`` run; it is started when a slot is granted to it."""
        self._fifo.append(run_id)
        self._grant()

    def unqueue(self, run_id: str) -> None:
        """Forget a queued pending run (it was cancelled before it started)."""
        with contextlib.suppress(ValueError):
            self._fifo.remove(run_id)

    async def acquire(self, run_id: str) -> None:
        """Hold a slot before the body of ``run_id`` goes on (a no-op if it holds one)."""
        if self.limit is None or run_id in self._holders:
            return
        if not self._fifo and self._free():
            self._holders.add(run_id)
            return
        waiter = _Waiter(run_id)
        self._fifo.append(waiter)
        try:
            await waiter.event.wait()
        except BaseException:
            if waiter.event.is_set():
                self.release(run_id)  # granted while being cancelled: pass it on
            else:
                self._fifo.remove(waiter)
            raise

    def release(self, run_id: str) -> None:
        """``run_id`` no longer executes (it parked or stopped): grant its slot onwards."""
        if run_id in self._holders:
            self._holders.discard(run_id)
            self._grant()

    def _grant(self) -> None:
        while self._fifo and self.enabled and self._free():
            entry = self._fifo.popleft()
            if isinstance(entry, _Waiter):
                self._holders.add(entry.run_id)
                entry.event.set()
                continue
            self._holders.add(entry)
            if not self._start_queued(entry):
                self._holders.discard(entry)  # no longer pending: the slot stays free
