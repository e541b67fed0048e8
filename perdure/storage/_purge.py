"""What purging a run tree deletes, read from the store (R38).

The runtime decides *which* trees go (retention rules, an explicit ``rt.purge``) and
commits through the writer; this module knows the key layout and turns "purge the tree
of root R" into delete operations. Reads happen here, in short read transactions, from
any thread; nothing here writes.

A tree is purged only when every run of it is terminal. Terminal runs never change
again (R1) and no terminal run can start a child, so what a read transaction shows of a
terminal tree stays true until the purge's own commit: its operations may be computed
in one transaction (in a worker thread) and committed in another (by the writer).

Per run, a purge deletes:

- ``runs``: the record;
- ``events``, ``journal``, ``logs``: every key of the run's prefix;
- ``index``: its status, owner and kind entries; parent and root entries (child runs);
  its batch entry (jobs of a batch); a cancelling entry or a ``waiting`` entry if one
  is left (a terminal run has neither, but a purge does not rely on that);
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
    IDX_BATCH,
    IDX_CANCELLING,
    IDX_KIND,
    IDX_OWNER,
    IDX_PARENT,
    IDX_ROOT,
    IDX_STATUS,
    SEQ_FLOOR,
    idem_key,
    index_key,
    index_prefix,
    run_prefix,
    seq_of_index_key,
)
from ._ops import Op
from ._records import TERMINAL, Owner, owner_key
from ._store import Store

__all__ = ["CHUNK_OPS", "Purger", "RunHead", "Tree"]

CHUNK_OPS = 1000
"""Deletes per committed chunk (a 3-step run is about 14: ~70 runs per chunk)."""


class RunHead(msgspec.Struct, gc=False):
    """The fields of a ``RunRecord`` a purge decides on and deletes by.

    Decoding only these (inputs, completions and waits are skipped) is what keeps a
    scan over a million terminal runs cheap.
    """

    id: str
    seq: int
    kind: str
    owner: Owner
    root_id: str
    status: str
    created_at: float
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


class Tree(NamedTuple):
    """The delete operations of one terminal tree, in commit order."""

    root_id: str
    run_ids: list[str]
    """Descendants first, the root last."""
    chunks: list[list[Op]]
    """Each chunk holds whole runs; the root's operations are in the last one."""
    max_seq: int


def _keys_with_prefix(cursor: lmdb.Cursor, prefix: bytes) -> Iterable[bytes]:
    if not cursor.set_range(prefix):
        return
    for raw in cursor.iternext(keys=True, values=False):
        key = bytes(raw)  # bytes already (no buffers): this is no copy
        if not key.startswith(prefix):
            return
        yield key


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

    # -- scanning candidates ------------------------------------------------------------------

    def heads(self, status: str, after_seq: int = 0, limit: int = 256) -> list[RunHead]:
        """Runs of one status with ``seq > after_seq``, oldest first (at most ``limit``)."""
        prefix = index_prefix(IDX_STATUS, status)
        out: list[RunHead] = []
        with self._store.read() as txn:
            cur = txn.cursor(db=self._index)
            if not cur.set_range(prefix + (after_seq + 1).to_bytes(8, "big")):
                return out
            for key, run_id in cur:
                if not bytes(key).startswith(prefix) or len(out) >= limit:
                    break
                raw = txn.get(run_id, db=self._runs)
                if raw is not None:
                    out.append(_head(raw))
        return out

    def heads_back(self, status: str, before_seq: int | None, limit: int) -> list[RunHead]:
        """Runs of one status with ``seq < before_seq`` (or all), newest first."""
        prefix = index_prefix(IDX_STATUS, status)
        out: list[RunHead] = []
        with self._store.read() as txn:
            cur = txn.cursor(db=self._index)
            start = prefix + (before_seq or 2**64 - 1).to_bytes(8, "big")
            found = cur.prev() if cur.set_range(start) else cur.last()
            while found and len(out) < limit:
                if not bytes(cur.key()).startswith(prefix):
                    break
                raw = txn.get(cur.value(), db=self._runs)
                if raw is not None:
                    out.append(_head(raw))
                found = cur.prev()
        return out

    def newest_seq(self, status: str) -> int:
        """The highest seq of a run in this status (0 if none)."""
        prefix = index_prefix(IDX_STATUS, status)
        with self._store.read() as txn:
            cur = txn.cursor(db=self._index)
            if cur.set_range(prefix + b"\xff" * 8):
                if not cur.prev():
                    return 0
            elif not cur.last():
                return 0
            key = bytes(cur.key())
            return seq_of_index_key(key) if key.startswith(prefix) else 0

    # -- what a tree's purge deletes ----------------------------------------------------------

    def trees(self, roots: Iterable[RunHead], chunk_ops: int = CHUNK_OPS) -> list[Tree]:
        """The delete operations of each root's tree; trees with a live member are left out.

        ``roots`` are heads of top-level terminal runs (as :meth:`heads` read them).
        """
        out: list[Tree] = []
        with self._store.read() as txn:
            for root in roots:
                if not root.top_level or not root.terminal:
                    continue
                members = self._descendants(txn, root.id)
                if members is None:
                    continue  # a member is not terminal: the whole tree stays (R38)
                members.append(root)
                out.append(self._tree(txn, root.id, members, chunk_ops))
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
        return Tree(
            root_id=root_id,
            run_ids=[head.id for head in members],
            chunks=chunks,
            max_seq=max(head.seq for head in members),
        )

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
