"""What purging a run tree deletes, read from the store (R38).

The runtime decides *which* trees go (retention rules, an explicit ``rt.purge``) and
commits through the writer; this module knows the key layout and turns "purge the tree
of root R" into delete operations. Reads happen here, in short read transactions, from
any thread; nothing here writes.

Candidates come from the ``f`` index: top-level runs by the time they ended, per
terminal status (:meth:`Purger.ended`). An age rule is one forward walk that stops at
the first run that ended too late; a count rule walks back from the latest end
(:meth:`Purger.boundary`, keys only). A root's record is never read: the value of its
``f`` entry (an :class:`~._records.Ending`) holds what its deletes need; only a store
written before endings has run ids there, and then the record is read.

A tree is purged only when every run of it is terminal. Terminal runs never change
again (R1) and no terminal run can start a child, so what a read transaction shows of a
terminal tree stays true until the purge's own commit: its operations may be computed
in one transaction (in a worker thread) and committed in another (by the writer).

Per run, a purge deletes:

- ``runs``: the record;
- ``events``, ``journal``, ``logs``: every key of the run's prefix (one
  :data:`~perdure.storage._ops.DELETE_PREFIX` op each, walked by the writer);
- ``index``: its status, owner and kind entries; parent and root entries (child runs);
  its batch entry (jobs of a batch); the root's ``f`` entry. A terminal run has no
  cancelling entry and no ``waiting`` entry: the commit that made it terminal removed
  them (:meth:`~perdure.storage.Ops.save_run`), so a purge does not look for them;
- ``idem``: its idempotency key, if that key still names this run. A later start with
  the same key therefore creates a new run (the key is free again, as a Temporal
  workflow id is once its execution is past retention).

``timers`` are keyed by due time first, so the timers of one run are not one range:
once runs were purged, that database (it only holds timers not yet due, but a sleep's
or a retry backoff's of a run cancelled while passive stays until due, as does what a
crash left) is swept for timers of runs that are gone, a slice per pass
(:meth:`Purger.timer_slice`). A timer of a purged run left until the sweep reaches it
is harmless: if it falls due first, its run is gone and the runtime drops it.

- ``fires``: the fire key of a run a cron tick started (trigger ``schedule`` with its
  ``scheduled_at``). The key's job, making sure a tick starts once, is over for a tick
  whose run has ended: the schedule's stored cursor is past it, and neither a catch-up
  nor a racing fire looks behind the cursor. Keeping the keys would grow the store by
  one key per tick for ever (a minutely schedule: half a million a year), against R38.

Left in place on purpose: ``batches`` records (the batch keeps its identity and
counters; its members are gone from the ``b`` index).

A tree's operations are cut into chunks of whole runs (at most :data:`CHUNK_OPS`
deletes unless one run has more), descendants first and the root last. A run's keys
always commit in one batch, so no run is ever half deleted; a crash between two chunks
leaves a smaller terminal tree whose root is still there, and the next pass finishes
it.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from collections.abc import Iterable, Iterator
from itertools import count, islice
from operator import itemgetter
from typing import NamedTuple, TypeAlias, cast

import lmdb
import msgspec

from ._keys import (
    FINISH_INDEX,
    IDX_BATCH,
    IDX_FINISHED,
    IDX_KIND,
    IDX_OWNER,
    IDX_PARENT,
    IDX_ROOT,
    IDX_STATUS,
    SEQ_FLOOR,
    finished_key,
    idem_key,
    index_prefix,
    seq_of_index_key,
)
from ._ops import DELETE_PREFIX, Op, fire_of
from ._records import TERMINAL, Ending, Owner, Trigger, owner_key
from ._store import Store

__all__ = ["CHUNK_OPS", "Ended", "Plan", "Purger", "RunHead", "Walk"]

CHUNK_OPS = 1000
"""Ops per committed chunk: a run's point deletes, and one prefix delete per database
of ranges (a 3-step run: 7 ops for its 13 keys, ~140 runs per chunk)."""


class RunHead(msgspec.Struct, gc=False):
    """The fields of a ``RunRecord`` a purge decides on and deletes by.

    Decoding only these (inputs, completions and waits are skipped) keeps the reads of
    a purge cheap.
    """

    id: str
    seq: int
    kind: str
    owner: Owner
    root_id: str
    status: str
    updated_at: float
    parent_id: str | None = None
    finished_at: float | None = None
    idempotency_key: str | None = None
    batch_id: str | None = None
    trigger: Trigger = msgspec.field(default_factory=Trigger)

    @property
    def top_level(self) -> bool:
        return self.parent_id is None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


_head = msgspec.msgpack.Decoder(RunHead).decode
_ending = msgspec.msgpack.Decoder(Ending).decode
_encode = msgspec.msgpack.Encoder().encode


class Walk(NamedTuple):
    """Where :meth:`Purger.boundary` stopped: the last key walked and keys counted."""

    before: bytes
    seen: int


Ended: TypeAlias = tuple[bytes, bytes]
"""One entry of the ``f`` index, a top-level run that ended: ``(key, value)``.

The value is an encoded :class:`~._records.Ending`, or the run id in a store written
before endings (:meth:`Purger.plan` reads the run's record then). A plain tuple, as the
cursor yields it: a named tuple per entry cost as much as reading the entry.
"""


class Plan(NamedTuple):
    """The deletes of some terminal trees, in commit order."""

    batches: list[list[Op]]
    """Each batch holds whole runs; a tree's descendants come before its root."""
    runs: int


_END = b"\xff" * 17
"""Past every ``f`` key of a status (u64 finished, u64 seq)."""


class Purger:
    """Reads what a purge deletes from one open store (see the module docstring)."""

    def __init__(self, store: Store) -> None:
        self._store = store
        dbs = store.dbs
        self._runs = dbs["runs"]
        self._index = dbs["index"]
        self._idem = dbs["idem"]
        self._waiting = dbs["waiting"]
        self._fires = dbs["fires"]
        self._ranges = (dbs["events"], dbs["journal"], dbs["logs"])
        self._timers = dbs["timers"]
        self._meta = dbs["meta"]

    # -- which trees: the f index -------------------------------------------------------------

    def ended(
        self,
        status: str,
        after: bytes = b"",
        limit: int = 256,
        *,
        before_ms: int | None = None,
        below: bytes | None = None,
    ) -> list[Ended]:
        """Top-level runs that ended with ``status``, earliest end first.

        Entries after key ``after`` (a previous page's last key), that ended before
        ``before_ms`` and whose key is below ``below``; at most ``limit``.
        """
        prefix = index_prefix(IDX_FINISHED, status)
        start = max(after + b"\0", prefix) if after else prefix
        # Every bound as one key: below the family's end, the cutoff and ``below``.
        stop = prefix + b"\xff" * 17
        if before_ms is not None:
            stop = min(stop, prefix + before_ms.to_bytes(8, "big"))
        if below is not None:
            stop = min(stop, below)
        with self._store.read() as txn:
            cur = txn.cursor(db=self._index)
            if not cur.set_range(start):
                return []
            # Read in C, then cut at the first key past ``stop`` (keys ascend).
            items = list(islice(cast("Iterator[tuple[bytes, bytes]]", cur), limit))
        return items[: bisect_left(items, stop, key=itemgetter(0))]

    def boundary(
        self, status: str, keep: int, resume: Walk | None = None, per_txn: int = 20_000
    ) -> tuple[bytes | None, Walk | None]:
        """The ``f`` key of the ``keep``-th latest run to end with ``status``.

        Entries below it are the excess of a "keep at most ``keep``" rule; ``None`` if
        there are at most ``keep``. Walks ``keep`` keys backwards, keys only, at most
        ``per_txn`` of them per call (one short read transaction, so no reader is held
        for long): returns ``(key, None)`` once decided, or ``(None, resume)`` to call
        again with ``resume`` for the next keys.
        """
        prefix = index_prefix(IDX_FINISHED, status)
        if keep == 0:
            return prefix + _END, None
        before, seen = resume if resume is not None else (prefix + _END, 0)
        step = min(keep - seen, per_txn)
        with self._store.read() as txn:
            cur = txn.cursor(db=self._index)
            found = cur.prev() if cur.set_range(before) else cur.last()
            if not found:
                return None, None
            # Only the last key walked matters: the family is one range of keys, so once
            # a key is outside it so is every key after it. The walk runs in C (islice,
            # zip, a one-slot deque), at a third of the cost of a loop over the keys.
            keys = islice(cur.iterprev(keys=True, values=False), step)
            last = deque(zip(keys, count(1)), maxlen=1)
        raw, walked = last[0]
        key = bytes(raw)
        if walked < step or not key.startswith(prefix):
            return None, None  # fewer than ``keep`` entries
        seen += walked
        if seen == keep:
            return key, None
        return None, Walk(key, seen)

    def finish_index_ready(self) -> bool:
        """Whether every ended top-level run has its ``f`` entry (see :meth:`backfill`)."""
        with self._store.read() as txn:
            return txn.get(FINISH_INDEX, db=self._meta) is not None

    def backfill(self, status: str, after_seq: int, limit: int = 512) -> tuple[list[Op], int]:
        """``f`` entries for ended top-level runs of a store written before the family.

        Returns puts for ``limit`` runs of ``status`` after ``after_seq`` (creation
        order) and the last seq read (``after_seq`` when there are no more). Putting an
        entry that exists already changes nothing, so this may race runs that end.
        """
        prefix = index_prefix(IDX_STATUS, status)
        ops: list[Op] = []
        last = after_seq
        with self._store.read() as txn:
            cur = txn.cursor(db=self._index)
            if not cur.set_range(prefix + (after_seq + 1).to_bytes(8, "big")):
                return ops, last
            for count, (raw_key, run_id) in enumerate(cur):
                key = bytes(raw_key)
                if not key.startswith(prefix) or count >= limit:
                    break
                last = seq_of_index_key(key)
                raw = txn.get(run_id, db=self._runs)
                if raw is None:
                    continue
                head = _head(raw)
                if head.top_level and head.terminal:
                    end = head.finished_at or head.updated_at
                    entry = finished_key(head.status, end, head.seq)
                    ops.append((self._index, entry, _encode(_ending_of(head))))
        return ops, last

    def finish_index_op(self) -> Op:
        return (self._meta, FINISH_INDEX, b"1")

    # -- what a tree's purge deletes ----------------------------------------------------------

    def plan(self, ended: Iterable[Ended], chunk_ops: int = CHUNK_OPS) -> Plan:
        """The deletes of each ended run's tree (the ``f`` entries :meth:`ended` read), in
        batches of whole runs; a tree with a member that has not ended is left out whole.

        One pass, appending straight into the batches: a purge has to cost far less than
        the runs it removes did, and per-run lists and objects were a third of it.
        """
        batches: list[list[Op]] = []
        batch: list[Op] = []
        runs = 0
        index = self._index
        with self._store.read() as txn:
            # One cursor per database for the whole plan: opening cursors per run was a
            # third of the cost too.
            reader = _TreeReader(self, txn)
            for key, value in ended:
                if value[0] & 0xC0 == 0x80:
                    # An Ending (a msgpack array; no UTF-8 run id starts with such a
                    # byte): the root's deletes without reading its record. An f entry
                    # only ever names a top-level run that ended, and goes with it.
                    root = _ending(value)
                else:  # a store written before endings: the run id
                    raw = txn.get(value, db=self._runs)
                    if raw is None:
                        continue
                    head = _head(raw)
                    if not head.top_level or not head.terminal:
                        continue
                    root = _ending_of(head)
                members = reader.descendants(root.id)
                if members is None:
                    continue  # a member is not terminal: the whole tree stays (R38)
                for head in members:  # descendants first, the root last
                    if len(batch) >= chunk_ops:
                        batches.append(batch)
                        batch = []
                    reader.add_run_ops(head, batch)
                if len(batch) >= chunk_ops:
                    batches.append(batch)
                    batch = []
                reader.add_root_ops(key, root, batch)
                batch.append((index, key, None))
                runs += len(members) + 1
        if batch:
            batches.append(batch)
        return Plan(batches, runs)

    # -- after the trees ----------------------------------------------------------------------

    def timer_slice(self, after: bytes, limit: int) -> tuple[list[Op], bytes | None]:
        """Deletes of the stored timers whose run is gone (purged), among the ``limit``
        timer keys after ``after``; and the last key walked (``None``: the end).

        Keyed by due time first, a run's timers are no range: a sweep walks the whole
        database (only timers not yet due, but a few of runs that ended first stay until
        due), a slice at a time. A sweep also finds timers a crash kept from an earlier
        one.
        """
        ops: list[Op] = []
        gone: dict[bytes, bool] = {}
        with self._store.read() as txn:
            cur = txn.cursor(db=self._timers)
            if not cur.set_range(after + b"\0" if after else b""):
                return ops, None
            for seen, raw in enumerate(cur.iternext(keys=True, values=False), 1):
                key = bytes(raw)
                run_id = key[8:].partition(b"\0")[0]
                missing = gone.get(run_id)
                if missing is None:
                    missing = gone[run_id] = txn.get(run_id, db=self._runs) is None
                if missing:
                    ops.append((self._timers, key, None))
                if seen >= limit:
                    return ops, key
        return ops, None

    def floor_op(self, seq: int) -> Op:
        """Keep ``seq`` (and every lower one) from being assigned again after a purge."""
        return (self._meta, SEQ_FLOOR, seq.to_bytes(8, "big"))

    def floor(self) -> int:
        with self._store.read() as txn:
            raw = txn.get(SEQ_FLOOR, db=self._meta)
        return int.from_bytes(raw, "big") if raw else 0


class _TreeReader:
    """What one read transaction tells about the runs of trees being purged."""

    def __init__(self, purger: Purger, txn: lmdb.Transaction) -> None:
        self._txn = txn
        self._runs = purger._runs
        self._index = purger._index
        self._idem = purger._idem
        self._fires = purger._fires
        self._waiting = purger._waiting
        self._index_cursor = txn.cursor(db=purger._index)
        # A database with nothing in it (logs, for stores without jobs) costs no seek.
        self._ranges = [db for db in purger._ranges if txn.stat(db)["entries"]]
        # Nor do roots look for descendants in a store with no child run at all.
        cur = self._index_cursor
        self._children = cur.set_range(IDX_ROOT) and bytes(cur.key()).startswith(IDX_ROOT)

    def descendants(self, root_id: str) -> list[RunHead] | None:
        """Every descendant of a root, or ``None`` if one has not ended."""
        members: list[RunHead] = []
        if not self._children:
            return members
        prefix = index_prefix(IDX_ROOT, root_id)
        cur = self._index_cursor
        if not cur.set_range(prefix):
            return members
        for key, run_id in cur:
            if not bytes(key).startswith(prefix):
                break
            raw = self._txn.get(run_id, db=self._runs)
            if raw is None:
                continue
            head = _head(raw)
            if not head.terminal:
                return None
            members.append(head)
        return members

    def add_run_ops(self, head: RunHead, ops: list[Op]) -> None:
        """Append the deletes of one run, read from its record (see the module
        docstring), to ``ops``."""
        tail = b"\0" + head.seq.to_bytes(8, "big")
        self._add(ops, _ending_of(head), head.status.encode(), tail)
        if head.parent_id is not None:
            index = self._index
            ops.append((index, IDX_PARENT + head.parent_id.encode() + tail, None))
            ops.append((index, IDX_ROOT + head.root_id.encode() + tail, None))

    def add_root_ops(self, key: bytes, root: Ending, ops: list[Op]) -> None:
        """Append the deletes of the top-level run of ``f`` entry ``key`` to ``ops``,
        from the entry alone: its key holds status and seq (``f status NUL u64 end u64
        seq``), its value the rest."""
        self._add(ops, root, key[1:-17], b"\0" + key[-8:])

    def _add(self, ops: list[Op], run: Ending, status: bytes, tail: bytes) -> None:
        """The deletes every run has; ``tail`` is NUL and its seq, as index keys end.

        Spelled out (keys built inline, no generators): this is most of a purge's cost.
        """
        txn = self._txn
        index = self._index
        run_key = run.id.encode()
        owner = run.owner
        ops += (
            (self._runs, run_key, None),
            (index, IDX_STATUS + status + tail, None),
            (index, IDX_OWNER + owner.encode() + tail, None),
            (index, IDX_KIND + run.kind.encode() + tail, None),
        )
        if run.batch_id is not None:
            ops.append((index, IDX_BATCH + run.batch_id.encode() + tail, None))
        if run.idempotency_key is not None:
            key = idem_key(owner, run.idempotency_key)
            if txn.get(key, db=self._idem) == run_key:
                ops.append((self._idem, key, None))
        fire = run.fire
        if fire is not None and txn.get(fire, db=self._fires) == run_key:
            ops.append((self._fires, fire, None))
        prefix = run_key + b"\0"
        for db in self._ranges:
            ops.append((db, prefix, DELETE_PREFIX))


def _ending_of(head: RunHead) -> Ending:
    """What the ``f`` entry of ``head``'s run holds (or would, for a child run)."""
    return Ending(
        head.id,
        head.kind,
        owner_key(head.owner),
        head.idempotency_key,
        head.batch_id,
        fire_of(head.trigger),
    )
