"""The group-commit writer: batches sharing a transaction keep every per-key order."""

from __future__ import annotations

from pathlib import Path

import perdure.storage as storage


async def test_batches_in_one_transaction_keep_per_key_order(tmp_path: Path) -> None:
    store = storage.Store(tmp_path / "d", durability="process")
    writer = storage.Writer(store, inline=True)  # both batches go into one flush
    db = store.dbs["index"]
    try:
        await writer.commit([(db, b"k1", b"a"), (db, b"k2", b"a")])
        txns = writer.stats.txns
        # A run's signal batch deletes an index entry that its next batch puts back,
        # and the other way round: puts and deletes must not be reordered.
        first = writer.submit([(db, b"k1", None), (db, b"k3", b"x")])
        second = writer.submit([(db, b"k1", b"again"), (db, b"k2", None), (db, b"k3", None)])
        await writer.wait(first)
        await writer.wait(second)
        assert writer.stats.txns == txns + 1
        with store.read() as txn:
            assert txn.get(b"k1", db=db) == b"again"
            assert txn.get(b"k2", db=db) is None
            assert txn.get(b"k3", db=db) is None
    finally:
        await writer.aclose()
        store.close()
