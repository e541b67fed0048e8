"""What purging a run tree deletes, read from the store (R38).

The runtime decides *which* trees go (retention rules, an explicit ``rt.purge``) and
commits through the writer; this module knows the key layout and turns "purge the tree
of root R" into delete operations. Reads happen here, in short read transactions, from
any thread; nothing here writes.

Candidates come from the ``f`` index: top-level runs by the time they ended, per
terminal status (:meth:`Purger.ended`). An age rule is one forward walk that stops at
the first run that ended too late; a count rule walks back from the latest end
(:meth:`Purger.boundary`, keys only). Neither decodes a record until a tree is chosen.

A tree is purged only when every run of it is terminal. Terminal runs never change
again (R1) and no terminal run can start a child, so what a read transaction shows of a
terminal tree stays true until the purge's own commit: its operations may be computed
in one transaction (in a worker thread) and committed in another (by the writer).

Per run, a purge deletes:

- ``runs``: the record;
- ``events``, ``journal``, ``logs``: every key of the run's prefix;
- ``index``: its status, owner and kind entries; parent and root entries (child runs);
  its batch entry (jobs of a batch); the root's ``f`` entry; a cancelling entry or a
  ``waiting`` entry if one is left (a terminal run has neither, but a purge does not
  rely on that);
- ``idem``: its idempotency key, if that key still names this run. A later start with
  the same key therefore creates a new run (the key is free again, as a Temporal
  workflow id is once its execution is past retention).

``timers`` are keyed by due time first, so the timers of one run are not one range: a
pass sweeps that database (it only holds timers not yet due) once for every run it
purged (:meth:`Purger.timer_ops`). A timer a crash leaves behind is harmless: when it
falls due its run is gone, and the runtime drops it.

Left in place on purpose: ``fires`` keys naming a purged run (a fire key is the
exactly-once record that a cron tick happened; deleting it would let a catch-up fire
the tick again) and ``batches`` records (the batch keeps its identity and counters; its
members are gone from the ``b`` index).

A tree's operations are cut into chunks of whole runs, descendants first and the root
last. A run's keys always commit in one batch, so no run is ever half deleted; a crash
between two chunks leaves a smaller terminal tree whose root is still there, and the
next pass finishes it. Chunks are small (:data:`CHUNK_OPS`) so that a purge batch
lengthens the group-commit transaction it joins by well under a millisecond.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import NamedTuple

import lmdb
import msgspec

from ._keys import (
    FINISH_INDEX,
    IDX_BATCH,
    IDX_CANCELLING,
    IDX_FINISHED,
    IDX_KIND,
    IDX_OWNER,
    IDX_PARENT,
    IDX_ROOT,
    IDX_STATUS,
    SEQ_FLOOR,
    finished_key,
    idem_key,
    index_key,
    index_prefix,
    run_prefix,
    seq_of_index_key,
)
from ._ops import Op
from ._records import TERMINAL, Owner, owner_key
from ._store import Store

__all__ = ["CHUNK_OPS", "Ended", "Purger", "RunHead", "Tree"]

CHUNK_OPS = 1000
"""Deletes per committed chunk (a 3-step run is about 14: ~70 runs per chunk)."""


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

    @property
    def top_level(self) -> bool:
        return self.parent_id is None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


_head = msgspec.msgpack.Decoder(RunHead).decode


class Ended(NamedTuple):
    """One entry of the ``f`` index: a top-level run that ended, and when."""

    key: bytes
    run_id: str
    finished_ms: int
    seq: int


class Tree(NamedTuple):
    """The delete operations of one terminal tree, in commit order."""

    root_id: str
    run_ids: list[str]
    """Descendants first, the root last."""
    chunks: list[list[Op]]
    """Each chunk holds whole runs; the root's operations are in the last one."""


def _keys_with_prefix(cursor: lmdb.Cursor, prefix: bytes) -> Iterable[bytes]:
    if not cursor.set_range(prefix):
        return
    for raw in cursor.iternext(keys=True, values=False):
        key = bytes(raw)  # bytes already (no buffers): this is no copy
        if not key.startswith(prefix):
            return
        yield key


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
        out: list[Ended] = []
        with self._store.read() as txn:
            cur = txn.cursor(db=self._index)
            if not cur.set_range(start):
                return out
            for raw_key, run_id in cur:
                key = bytes(raw_key)
                if not key.startswith(prefix) or len(out) >= limit:
                    break
                if below is not None and key >= below:
                    break
                finished_ms = int.from_bytes(key[-16:-8], "big")
                if before_ms is not None and finished_ms >= before_ms:
                    break
                out.append(Ended(key, bytes(run_id).decode(), finished_ms, seq_of_index_key(key)))
        return out

    def boundary(self, status: str, keep: int, per_txn: int = 20_000) -> bytes | None:
        """The ``f`` key of the ``keep``-th latest run to end with ``status``.

        Entries below it are the excess of a "keep at most ``keep``" rule; ``None`` if
        there are at most ``keep``. Walks ``keep`` keys backwards (keys only, in read
        transactions of ``per_txn`` keys so that no reader is held for long).
        """
        prefix = index_prefix(IDX_FINISHED, status)
        if keep == 0:
            return prefix + _END
        seen = 0
        before = prefix + _END
        while True:
            with self._store.read() as txn:
                cur = txn.cursor(db=self._index)
                found = cur.prev() if cur.set_range(before) else cur.last()
                if not found:
                    return None
                for walked, raw in enumerate(cur.iterprev(keys=True, values=False), 1):
                    key = bytes(raw)
                    if not key.startswith(prefix):
                        return None
                    seen += 1
                    if seen == keep:
                        return key
                    before = key
                    if walked >= per_txn:
                        break
                else:
                    return None

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
                    ops.append((self._index, entry, head.id.encode()))
        return ops, last

    def finish_index_op(self) -> Op:
        return (self._meta, FINISH_INDEX, b"1")

    # -- what a tree's purge deletes ----------------------------------------------------------

    def trees(self, ended: Iterable[Ended], chunk_ops: int = CHUNK_OPS) -> list[Tree]:
        """The delete operations of each ended run's tree (the ``f`` entries :meth:`ended`
        read); a tree with a member that has not ended is left out: it stays whole."""
        out: list[Tree] = []
        with self._store.read() as txn:
            for entry in ended:
                raw = txn.get(entry.run_id.encode(), db=self._runs)
                if raw is None:
                    continue
                root = _head(raw)
                if not root.top_level or not root.terminal:
                    continue
                members = self._descendants(txn, root.id)
                if members is None:
                    continue  # a member is not terminal: the whole tree stays (R38)
                members.append(root)
                tree = self._tree(txn, root.id, members, chunk_ops)
                tree.chunks[-1].append((self._index, entry.key, None))
                out.append(tree)
        return out

    def _descendants(self, txn: lmdb.Transaction, root_id: str) -> list[RunHead] | None:
        prefix = index_prefix(IDX_ROOT, root_id)
        members: list[RunHead] = []
        cur = txn.cursor(db=self._index)
        if not cur.set_range(prefix):
            return members
        for key, run_id in cur:
            if not bytes(key).startswith(prefix):
                break
            raw = txn.get(run_id, db=self._runs)
            if raw is None:
                continue
            head = _head(raw)
            if not head.terminal:
                return None
            members.append(head)
        return members

    def _tree(
        self, txn: lmdb.Transaction, root_id: str, members: list[RunHead], chunk_ops: int
    ) -> Tree:
        chunks: list[list[Op]] = []
        chunk: list[Op] = []
        for head in members:
            ops = self._run_ops(txn, head)
            if chunk and len(chunk) + len(ops) > chunk_ops:
                chunks.append(chunk)
                chunk = []
            chunk.extend(ops)
        chunks.append(chunk)
        return Tree(root_id=root_id, run_ids=[head.id for head in members], chunks=chunks)

    def _run_ops(self, txn: lmdb.Transaction, head: RunHead) -> list[Op]:
        run_key = head.id.encode()
        seq = head.seq
        index = self._index
        ops: list[Op] = [
            (self._runs, run_key, None),
            (index, index_key(IDX_STATUS, head.status, seq), None),
            (index, index_key(IDX_OWNER, owner_key(head.owner), seq), None),
            (index, index_key(IDX_KIND, head.kind, seq), None),
        ]
        if head.parent_id is not None:
            ops.append((index, index_key(IDX_PARENT, head.parent_id, seq), None))
            ops.append((index, index_key(IDX_ROOT, head.root_id, seq), None))
        if head.batch_id is not None:
            ops.append((index, index_key(IDX_BATCH, head.batch_id, seq), None))
        cancelling = index_key(IDX_CANCELLING, "", seq)
        if txn.get(cancelling, db=index) is not None:
            ops.append((index, cancelling, None))
        waiting = seq.to_bytes(8, "big")
        if txn.get(waiting, db=self._waiting) == run_key:
            ops.append((self._waiting, waiting, None))
        if head.idempotency_key is not None:
            key = idem_key(owner_key(head.owner), head.idempotency_key)
            if txn.get(key, db=self._idem) == run_key:
                ops.append((self._idem, key, None))
        prefix = run_prefix(head.id)
        for db in self._ranges:
            cur = txn.cursor(db=db)
            ops.extend((db, key, None) for key in _keys_with_prefix(cur, prefix))
        return ops

    # -- after the trees ----------------------------------------------------------------------

    def timer_ops(self, run_ids: Collection[str], per_txn: int = 10_000) -> list[Op]:
        """Deletes of every stored timer that belongs to one of ``run_ids``."""
        wanted = {run_id.encode() for run_id in run_ids}
        ops: list[Op] = []
        after = b""
        while True:
            seen = 0
            with self._store.read() as txn:
                cur = txn.cursor(db=self._timers)
                if not cur.set_range(after):
                    return ops
                for raw in cur.iternext(keys=True, values=False):
                    key = bytes(raw)
                    if key == after:
                        continue
                    if key[8:].partition(b"\0")[0] in wanted:
                        ops.append((self._timers, key, None))
                    after = key
                    seen += 1
                    if seen >= per_txn:
                        break
                else:
                    return ops

    def floor_op(self, seq: int) -> Op:
        """Keep ``seq`` (and every lower one) from being assigned again after a purge."""
        return (self._meta, SEQ_FLOOR, seq.to_bytes(8, "big"))

    def floor(self) -> int:
        with self._store.read() as txn:
            raw = txn.get(SEQ_FLOOR, db=self._meta)
        return int.from_bytes(raw, "big") if raw else 0
