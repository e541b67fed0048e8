"""The group-commit writer: batches sharing a transaction keep every per-key order."""

from __future__ import annotations

from pathlib import Path

import trio

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


async def test_a_prefix_delete_removes_exactly_the_keys_with_that_prefix(tmp_path: Path) -> None:
    """``DELETE_PREFIX`` (a purge's ranges): every key with the prefix goes, none beside
    it, at the database's end too, and in order with the puts and deletes around it."""
    from perdure.storage._ops import DELETE_PREFIX

    store = storage.Store(tmp_path / "d", durability="process")
    writer = storage.Writer(store, inline=True)
    db = store.dbs["events"]
    keys = [b"run-1", b"run-1\0a", b"run-1\0b", b"run-1\0c", b"run-10\0a", b"run-1\x01"]
    keys += [b"run-2\0" + i.to_bytes(2, "big") for i in range(300)]  # the db's last keys
    try:
        await writer.commit([(db, key, b"v") for key in keys])
        first = writer.submit(
            [
                (db, b"run-1\0d", b"put first"),  # deleted by the prefix delete after it
                (db, b"run-1\0", DELETE_PREFIX),
                (db, b"run-1\0z", b"put after"),  # kept: the delete came before it
                (db, b"run-3\0", DELETE_PREFIX),  # no such key: a no-op past the end
            ]
        )
        second = writer.submit([(db, b"run-2\0", DELETE_PREFIX), (db, b"run-9", b"x")])
        await writer.wait(first)
        await writer.wait(second)
        with store.read() as txn:
            left = [bytes(k) for k, _ in txn.cursor(db=db)]
        assert left == sorted([b"run-1", b"run-1\0z", b"run-1\x01", b"run-10\0a", b"run-9"])
    finally:
        await writer.aclose()
        store.close()


async def test_a_busy_trio_thread_cannot_starve_commits(tmp_path: Path) -> None:
    """Flush requests wait for the trio thread to go idle, but never past ``max_hold``."""
    store = storage.Store(tmp_path / "d", durability="process")
    writer = storage.Writer(store, max_hold=0.005)
    db = store.dbs["index"]
    stop = False
    spins = 0

    async def spin() -> None:
        nonlocal spins
        while not stop:  # always runnable: the thread is never idle
            spins += 1
            await trio.lowlevel.checkpoint()

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(spin)
            await trio.lowlevel.checkpoint()
            for i in range(20):
                with trio.fail_after(5):
                    await writer.commit([(db, b"k%d" % i, b"v")])
            stop = True
        assert spins > 0
        assert writer.stats.batches == 20
        with store.read() as txn:
            assert all(txn.get(b"k%d" % i, db=db) == b"v" for i in range(20))
    finally:
        await writer.aclose()
        store.close()


async def test_close_commits_batches_whose_flush_was_not_requested_yet(tmp_path: Path) -> None:
    store = storage.Store(tmp_path / "d", durability="process")
    writer = storage.Writer(store, max_hold=3600)
    db = store.dbs["index"]
    try:
        # Submitted, then closed before the trio thread ever went idle.
        pending = writer.submit([(db, b"late", b"v")])
        await writer.aclose()
        await writer.wait(pending)
        with store.read() as txn:
            assert txn.get(b"late", db=db) == b"v"
    finally:
        store.close()
