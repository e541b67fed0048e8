"""Write operations that keep a run record and its secondary indexes in step.

Every index entry is ``family + value + NUL + seq -> run id``; a status change
moves one entry. A new run adds a status, an owner and a kind entry, plus parent and
root entries if it is a child. "All runs" is the merge of the status families and a
root's own run is the root id itself, so neither needs an entry of its own: records
per run are what bound the writer, and a top-level run writes three index entries.
Building the operations here keeps the key layout in one layer: the runtime hands
over records, not keys.
"""

from __future__ import annotations

from typing import Any

import msgspec

from ._keys import (
    IDX_CANCELLING,
    IDX_KIND,
    IDX_OWNER,
    IDX_PARENT,
    IDX_ROOT,
    IDX_STATUS,
    event_key,
    idem_key,
    index_key,
    journal_key,
)
from ._records import RunRecord, owner_key
from ._writer import Op

__all__ = ["event_op", "journal_op", "record_ops"]

_encode = msgspec.msgpack.Encoder().encode


def record_ops(dbs: dict[str, Any], old: RunRecord | None, new: RunRecord) -> list[Op]:
    """Operations that store ``new`` (replacing ``old``) with its index entries."""
    ops: list[Op] = [(dbs["runs"], new.id.encode(), _encode(new))]
    index = dbs["index"]
    run_id = new.id.encode()
    if old is None:
        seq = new.seq
        ops.append((index, index_key(IDX_STATUS, new.status, seq), run_id))
        ops.append((index, index_key(IDX_OWNER, owner_key(new.owner), seq), run_id))
        ops.append((index, index_key(IDX_KIND, new.kind, seq), run_id))
        if new.parent_id is not None:
            ops.append((index, index_key(IDX_PARENT, new.parent_id, seq), run_id))
            ops.append((index, index_key(IDX_ROOT, new.root_id, seq), run_id))
        if new.idempotency_key is not None:
            ops.append((dbs["idem"], idem_key(owner_key(new.owner), new.idempotency_key), run_id))
    elif old.status != new.status:
        ops.append((index, index_key(IDX_STATUS, old.status, old.seq), None))
        ops.append((index, index_key(IDX_STATUS, new.status, new.seq), run_id))
    if (old is not None and old.status == "waiting") != (new.status == "waiting"):
        waiting_key = new.seq.to_bytes(8, "big")
        ops.append((dbs["waiting"], waiting_key, run_id if new.status == "waiting" else None))
    was_cancelling = old is not None and old.cancel is not None and not old.terminal
    cancelling = new.cancel is not None and not new.terminal
    if cancelling != was_cancelling:
        ops.append((index, index_key(IDX_CANCELLING, "", new.seq), run_id if cancelling else None))
    return ops


def event_op(dbs: dict[str, Any], run_id: str, last_id: int, chunk: bytes) -> Op:
    """Store one commit's events: ``chunk`` is a msgpack array ending at ``last_id``."""
    return (dbs["events"], event_key(run_id, last_id), chunk)


def journal_op(dbs: dict[str, Any], run_id: str, position: int, encoded: bytes) -> Op:
    return (dbs["journal"], journal_key(run_id, position), encoded)
