"""Write operations, built from records: the runtime hands over records, never keys.

An :data:`Op` is ``(database handle, key, value)`` (``None`` deletes the key,
:data:`DELETE_PREFIX` every key that starts with it). Every op the
runtime submits to the writer is built here, so the key layout of ``_keys`` is known
to this layer alone, and a change of layout never reaches the runtime.

Index upkeep: every index entry is ``family + value + NUL + seq -> run id``; a status
change moves one entry. A new run adds a status, an owner and a kind entry, plus parent
and root entries if it is a child. "All runs" is the merge of the status families and
a root's own run is the root id itself, so neither needs an entry of its own: records
per run are what bound the writer, and a top-level run writes three index entries, plus
one in the ``f`` family when it ends (retention's end-time order, R38). That one's
value is not the run id but an :class:`~._records.Ending`: what a purge deletes.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from typing import Any, Final, NamedTuple

import msgspec

from perdure.agui import Event, encode_events

from ._keys import (
    IDX_BATCH,
    IDX_CANCELLING,
    IDX_KIND,
    IDX_OWNER,
    IDX_PARENT,
    IDX_ROOT,
    IDX_STATUS,
    batch_idem_owner,
    event_key,
    finished_key,
    fires_key,
    idem_key,
    index_key,
    journal_key,
    log_key,
    timer_key,
)
from ._records import (
    TERMINAL,
    BatchRecord,
    JournalEntry,
    LogRecord,
    RunRecord,
    ScheduleRecord,
    Trigger,
    owner_key,
)

__all__ = ["DELETE_PREFIX", "DeletePrefix", "Op", "Ops", "TimerRef", "ending", "fire_of"]


class DeletePrefix(enum.Enum):
    """The type of :data:`DELETE_PREFIX` (its one member)."""

    DELETE_PREFIX = "delete-prefix"


DELETE_PREFIX: Final = DeletePrefix.DELETE_PREFIX
"""As an op's value: delete every key of the database that starts with the op's key.

Only for ranges nothing can add to any more (the keys of a terminal run a purge
removes): the writer walks them with one cursor, where the purge would otherwise list
every key on the trio thread first and the writer search the tree again for each.
"""


Op = tuple[Any, bytes, bytes | DeletePrefix | None]
"""``(database handle, key, value)``; ``None`` deletes the key, :data:`DELETE_PREFIX`
every key with that prefix."""

_encode = msgspec.msgpack.Encoder().encode


def ending(
    run_id: str,
    kind: str,
    owner: str,
    idempotency_key: str | None,
    batch_id: str | None,
    trigger: Trigger,
) -> bytes:
    """The value of a top-level run's ``f`` entry (:class:`~._records.Ending`)."""
    # A tuple encodes as the same msgpack array as the array-like Ending, without
    # building one (this runs in the commit that ends every top-level run).
    return _encode((run_id, kind, owner, idempotency_key, batch_id, fire_of(trigger)))


def fire_of(trigger: Trigger) -> bytes | None:
    """The ``fires`` key of the cron tick that started a run (``None``: none did)."""
    if trigger.type == "schedule" and trigger.ref and trigger.scheduled_at is not None:
        return fires_key(trigger.ref, round(trigger.scheduled_at * 1000))
    return None


class TimerRef(NamedTuple):
    """One stored durable timer: which run wakes, when, and the timer's name.

    ``due_ms`` (integer milliseconds of wall time) is the identity, not a float:
    the same due time always makes the same key, so a timer armed before a crash
    is found and deleted by the replayed run that re-derives it. It is rounded *up*:
    a stored timer never falls due before the time the run itself sleeps until, so a
    run it wakes never finds itself still a fraction of a millisecond early.
    """

    due_ms: int
    run_id: str
    name: str

    @classmethod
    def at(cls, run_id: str, due: float, name: str) -> TimerRef:
        """The timer of ``run_id`` named ``name`` due at wall time ``due`` (seconds)."""
        return cls(math.ceil(due * 1000), run_id, name)

    @property
    def due(self) -> float:
        """Wall time (seconds since the epoch) at which the timer falls due."""
        return self.due_ms / 1000

    def key(self) -> bytes:
        return timer_key(self.due_ms, self.run_id, self.name)

    @classmethod
    def parse(cls, key: bytes) -> TimerRef:
        """The timer a stored ``timers`` key stands for."""
        run_id, _, name = key[8:].partition(b"\0")
        return cls(int.from_bytes(key[:8], "big"), run_id.decode(), name.decode())


class Ops:
    """Op builders for one open store (they need its database handles)."""

    __slots__ = (
        "_batches",
        "_events",
        "_fires",
        "_idem",
        "_index",
        "_journal",
        "_logs",
        "_runs",
        "_schedules",
        "_timers",
        "_waiting",
    )

    def __init__(self, dbs: dict[str, Any]) -> None:
        self._runs = dbs["runs"]
        self._index = dbs["index"]
        self._idem = dbs["idem"]
        self._events = dbs["events"]
        self._journal = dbs["journal"]
        self._timers = dbs["timers"]
        self._waiting = dbs["waiting"]
        self._logs = dbs["logs"]
        self._schedules = dbs["schedules"]
        self._fires = dbs["fires"]
        self._batches = dbs["batches"]

    def save_run(self, old: RunRecord | None, new: RunRecord) -> list[Op]:
        """Store ``new`` (replacing ``old``, ``None`` for a new run) with its index entries."""
        run_id = new.id.encode()
        ops: list[Op] = [(self._runs, run_id, _encode(new))]
        index = self._index
        if old is None:
            seq = new.seq
            ops.append((index, index_key(IDX_STATUS, new.status, seq), run_id))
            ops.append((index, index_key(IDX_OWNER, owner_key(new.owner), seq), run_id))
            ops.append((index, index_key(IDX_KIND, new.kind, seq), run_id))
            if new.parent_id is not None:
                ops.append((index, index_key(IDX_PARENT, new.parent_id, seq), run_id))
                ops.append((index, index_key(IDX_ROOT, new.root_id, seq), run_id))
            if new.idempotency_key is not None:
                key = idem_key(owner_key(new.owner), new.idempotency_key)
                ops.append((self._idem, key, run_id))
            if new.batch_id is not None:
                ops.append((index, index_key(IDX_BATCH, new.batch_id, seq), run_id))
        elif old.status != new.status:
            ops.append((index, index_key(IDX_STATUS, old.status, old.seq), None))
            ops.append((index, index_key(IDX_STATUS, new.status, new.seq), run_id))
            if new.parent_id is None and new.status in TERMINAL:
                # Retention's order (R38): when a run tree ended, by its root.
                end = new.finished_at or new.updated_at
                value = ending(
                    new.id,
                    new.kind,
                    owner_key(new.owner),
                    new.idempotency_key,
                    new.batch_id,
                    new.trigger,
                )
                ops.append((index, finished_key(new.status, end, new.seq), value))
        if (old is not None and old.status == "waiting") != (new.status == "waiting"):
            waiting_key = new.seq.to_bytes(8, "big")
            ops.append((self._waiting, waiting_key, run_id if new.status == "waiting" else None))
        was_cancelling = old is not None and old.cancel is not None and not old.terminal
        cancelling = new.cancel is not None and not new.terminal
        if cancelling != was_cancelling:
            key = index_key(IDX_CANCELLING, "", new.seq)
            ops.append((index, key, run_id if cancelling else None))
        return ops

    def events(self, run_id: str, last_id: int, events: Sequence[Event]) -> Op:
        """Store one commit's events, whose last event id is ``last_id``, as one chunk."""
        return (self._events, event_key(run_id, last_id), encode_events(events))

    def journal(self, run_id: str, position: int, entry: JournalEntry) -> Op:
        return (self._journal, journal_key(run_id, position), _encode(entry))

    def drop_journal(self, run_id: str, position: int) -> Op:
        return (self._journal, journal_key(run_id, position), None)

    def arm_timer(self, ref: TimerRef) -> Op:
        return (self._timers, ref.key(), b"")

    def disarm_timer(self, ref: TimerRef) -> Op:
        return (self._timers, ref.key(), None)

    # -- jobs: logs and batches; schedules (R24, R25) ----------------------------------------

    def log(self, run_id: str, entry: LogRecord) -> Op:
        """Store one log entry of ``run_id`` under its ``seq``."""
        return (self._logs, log_key(run_id, entry.seq), _encode(entry))

    def save_batch(self, batch: BatchRecord) -> list[Op]:
        """A new batch (its members are indexed by :meth:`save_run`) and its idempotency key."""
        ops: list[Op] = [(self._batches, batch.id.encode(), _encode(batch))]
        if batch.idempotency_key is not None:
            key = idem_key(batch_idem_owner(owner_key(batch.owner)), batch.idempotency_key)
            ops.append((self._idem, key, batch.id.encode()))
        return ops

    def save_schedule(self, schedule: ScheduleRecord) -> Op:
        return (self._schedules, schedule.name.encode(), _encode(schedule))

    def delete_schedule(self, name: str) -> Op:
        return (self._schedules, name.encode(), None)

    def fire(self, schedule: str, at_ms: int, run_id: str) -> Op:
        """The exactly-once key of a schedule's tick: commit it with the run it starts."""
        return (self._fires, fires_key(schedule, at_ms), run_id.encode())
