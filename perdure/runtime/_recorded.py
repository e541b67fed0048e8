"""What a run's journal recorded, read without running its body (R6).

Tools that show a run's progress from storage alone (the step-graph state of
``rt.graph_state`` and ``perdure runs graph``, which works beside a live process on a
read-only store) need to find a step's recorded outcome the way a replayed body
would: a step of the body's own task by name among the positional entries, a step of
a concurrent task by its slot (:mod:`._journal`). This is that lookup, so the journal's
layout stays known to the runtime alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import msgspec

from perdure.storage import ErrorInfo, JournalEntry

from ._journal import Journal, action_slot
from ._steps import _Retry

__all__ = ["RecordedJournal", "RecordedStep"]


class RecordedStep(NamedTuple):
    """A step's recorded outcome: its result (msgpack) or its final error, and when."""

    value: bytes
    error: ErrorInfo | None
    at: float | None
    attempts: int
    """How many attempts it took (failed attempts that were retried, plus the last)."""

    def result(self) -> Any:
        """The recorded result as msgpack builtins (what a replay returns by default)."""
        return msgspec.msgpack.decode(self.value) if self.value else None


class RecordedJournal:
    """Lookups over one run's stored journal entries (``Store.journal(run_id)``)."""

    def __init__(self, entries: Sequence[JournalEntry]) -> None:
        self._journal = journal = Journal("", list(entries), 0.0)
        self._steps: dict[str, list[JournalEntry]] = {}
        self._retries: dict[str, int] = {}
        self._counts: dict[tuple[str, str], int] = {}
        for entry in journal.entries:
            if entry.kind == "step":
                self._steps.setdefault(entry.name, []).append(entry)
            elif entry.kind == "retry":
                self._retries[entry.name] = self._retries.get(entry.name, 0) + 1
            key = (entry.kind, entry.name)
            self._counts[key] = self._counts.get(key, 0) + 1

    def step(
        self, name: str, *, keyed: bool, lane: str | None = None, n: int = 1
    ) -> RecordedStep | None:
        """The ``n``-th step named ``name``: of the body's own task (``keyed=False``), or
        of a concurrent task in ``lane``."""
        if not keyed:
            found = self._steps.get(name, [])
            if len(found) < n:
                return None
            entry = found[n - 1]
            attempts = self._retries.get(name, 0) + 1 if n == 1 else 1
            return RecordedStep(entry.value, entry.error, entry.at, attempts)
        slot = action_slot("step", lane, name, n)
        action = self._journal.peek_action(slot)
        if action is None or action.kind != "kstep":
            return None
        return RecordedStep(action.value, action.error, action.at, self.retries(name, lane) + 1)

    def retries(self, name: str, lane: str | None = None, *, keyed: bool = True) -> int:
        """Failed attempts of a step that were retried (its attempt so far is this + 1)."""
        if not keyed:
            return self._retries.get(name, 0)
        retried = self._journal.retried(action_slot("step", lane, name, 1))
        if retried is None:
            return 0
        return msgspec.msgpack.decode(retried.value, type=_Retry).attempt

    def count(self, kind: str, name: str, *, keyed: bool, lane: str | None = None) -> int:
        """How many ``kind`` actions (``child``, ``sleep`` …) named ``name`` were recorded."""
        if not keyed:
            return self._counts.get((kind, name), 0)
        n = 0
        while self._journal.peek_action(action_slot(kind, lane, name, n + 1)) is not None:
            n += 1
        return n
