"""Retention and purges (R38): whole terminal trees go, nothing else, nothing left behind.

``rt.purge(before=, statuses=)`` and ``Runtime(retention=perdure.Retention(...))``
remove run trees whose every run is terminal: records, events, journals, logs, index
entries (the ``f`` end-time index included), idempotency keys, waiting entries and
timers. A purged run is ``RunNotFound``. Age rules run in virtual time here.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio
from helpers.checks import named_run, waiting

import perdure
from perdure import ExternalEvent, InvalidInput, Retention, RunNotFound
from perdure.testing import internals

P = perdure.Project("p1")
GO = ExternalEvent(name="go", payload=None)


def runtime(path: Path, **options: Any) -> perdure.Runtime:
    rt = perdure.Runtime(path, **options)

    async def one(v: Any) -> Any:
        return v

    @rt.workflow("three", timeout=10_000)
    async def three(ctx: perdure.RunContext, inp: dict) -> dict:
        for name in ("a", "b", "c"):
            await ctx.step(name, one, name)
        if inp.get("fail"):
            raise RuntimeError("asked to fail")
        return {"ok": True}

    @rt.workflow("parent")
    async def parent(ctx: perdure.RunContext, inp: dict) -> dict:
        kids = [await ctx.start_child("workflow:three", {}) for _ in range(inp.get("kids", 2))]
        results = [await kid.result() for kid in kids]
        if inp.get("wait"):
            await ctx.wait_for_event("go")
        return {"kids": results}

    @rt.workflow("waiter")
    async def waiter(ctx: perdure.RunContext, inp: dict) -> None:
        await ctx.wait_for_event("go")

    return rt


@contextmanager
def raw_keys(rt: perdure.Runtime) -> Iterator[dict[str, list[bytes]]]:
    """Every key of every database of an open runtime's store."""
    store = internals(rt).store
    out: dict[str, list[bytes]] = {}
    with store.read() as txn:
        for name, db in store.dbs.items():
            out[name] = [bytes(key) for key, _ in txn.cursor(db=db)]
    yield out


def mentions(keys: dict[str, list[bytes]], run_id: str) -> list[str]:
    """Where a run id still appears in the store (keys, or index values)."""
    found = [
        f"{db}:{key!r}" for db, items in keys.items() for key in items if run_id.encode() in key
    ]
    return found


def index_values(rt: perdure.Runtime) -> set[str]:
    store = internals(rt).store
    with store.read() as txn:
        return {
            named_run(name, bytes(k), bytes(v))
            for name in ("index", "idem", "waiting")
            for k, v in txn.cursor(db=store.dbs[name])
        }


async def leave_timers(rt: perdure.Runtime, run_ids: list[str]) -> None:
    """Store a timer due in an hour for each of ``run_ids`` (ended runs), in that order."""
    from perdure.storage import TimerRef

    engine = internals(rt)
    due = rt.now() + 3600
    ops = [engine.ops.arm_timer(TimerRef.at(run, due + i, "left")) for i, run in enumerate(run_ids)]
    await engine.writer.commit(ops)


FIRE_KEY = b"nightly\0" + (1).to_bytes(8, "big")
"""The fire key of :func:`as_fired_batch_job`'s cron tick."""


async def as_fired_batch_job(rt: perdure.Runtime, run_id: str) -> perdure.RunRecord:
    """Rewrite an ended run as what the jobs and cron surfaces store for a batch job a
    cron tick started: its record, its batch entry and batch, the tick's fire key, and
    the Ending its end would have written. Returns the rewritten record."""
    from perdure.storage._keys import IDX_BATCH, index_key

    engine = internals(rt)
    dbs = engine.store.dbs
    rec = rt.get(run_id)
    fired = msgspec.structs.replace(
        rec,
        batch_id="b1",
        trigger=perdure.Trigger(type="schedule", ref="nightly", scheduled_at=0.001),
    )
    await engine.writer.commit(
        [
            (dbs["runs"], rec.id.encode(), msgspec.msgpack.encode(fired)),
            (dbs["index"], end_key(rt, rec.id), end_value(fired)),
            (dbs["index"], index_key(IDX_BATCH, "b1", rec.seq), rec.id.encode()),
            (dbs["batches"], b"b1", b"\x80"),
            (dbs["fires"], FIRE_KEY, rec.id.encode()),
        ]
    )
    return fired


def end_key(rt: perdure.Runtime, run_id: str) -> bytes:
    """The key of a top-level run's ``f`` entry."""
    from perdure.storage._keys import IDX_FINISHED

    store = internals(rt).store
    with store.read() as txn:
        for key, value in txn.cursor(db=store.dbs["index"]):
            if bytes(key).startswith(IDX_FINISHED) and named_run("index", key, value) == run_id:
                return bytes(key)
    raise AssertionError(f"run {run_id} has no f entry")


def end_value(rec: perdure.RunRecord) -> bytes:
    """The value the end of ``rec`` writes in its ``f`` entry."""
    from perdure.storage import owner_key
    from perdure.storage._ops import ending

    return ending(
        rec.id, rec.kind, owner_key(rec.owner), rec.idempotency_key, rec.batch_id, rec.trigger
    )


# -- purge ------------------------------------------------------------------------------------


async def test_purge_removes_every_trace_of_a_terminal_tree(data_dir: Path) -> None:
    async with runtime(data_dir) as rt:
        tree = await rt.start("workflow:parent", {}, owner=P, idempotency_key="k1")
        assert (await rt.wait(tree.run.id)).status == "completed"
        kids = [r.id for r in rt.list(parent_id=tree.run.id).runs]
        assert len(kids) == 2
        keep = await rt.start("workflow:three", {}, owner=P)
        await rt.wait(keep.run.id)
        # The run timeouts' timers went with the runs' ends; a timer can still outlive
        # its run (a crash between the end and a timer's clean-up, an older version).
        assert internals(rt).store.timers() == []
        await leave_timers(rt, [tree.run.id, kids[0], keep.run.id])
        with raw_keys(rt) as before:
            assert mentions(before, tree.run.id)
        assert await rt.purge(before=rt.now() + 1, statuses=["completed"]) == 4
        for run_id in [tree.run.id, *kids, keep.run.id]:
            with pytest.raises(RunNotFound):
                rt.get(run_id)
            with pytest.raises(RunNotFound):
                await rt.wait(run_id)
            with pytest.raises(RunNotFound):
                [e async for e in rt.events(run_id, follow=False)]
        assert rt.list().runs == []
        with raw_keys(rt) as after:
            for run_id in [tree.run.id, *kids, keep.run.id]:
                assert mentions(after, run_id) == [], mentions(after, run_id)
            assert after["index"] == [] and after["idem"] == [] and after["timers"] == []
            assert after["events"] == [] and after["journal"] == [] and after["runs"] == []
        assert index_values(rt) == set()
        # Its idempotency key is free again: the same key starts a new run.
        again = await rt.start("workflow:parent", {}, owner=P, idempotency_key="k1")
        assert not again.duplicate and again.run.id != tree.run.id
        await rt.wait(again.run.id)


async def test_a_tree_with_a_member_still_going_is_kept(data_dir: Path) -> None:
    async with runtime(data_dir) as rt:
        root = await rt.start("workflow:parent", {"wait": True}, owner=P)
        await waiting(rt, root.run.id)
        kids = [r.id for r in rt.list(parent_id=root.run.id).runs]
        assert all(rt.get(k).status == "completed" for k in kids)
        # The children ended, their root did not: nothing goes, not even the children.
        assert await rt.purge() == 0
        assert all(rt.get(k).status == "completed" for k in kids)
        await rt.resume(root.run.id, GO)
        await rt.wait(root.run.id)
        assert await rt.purge() == 3


async def test_purge_by_end_time_and_status(data_dir: Path, autojump_clock: Any) -> None:
    async with runtime(data_dir) as rt:
        early = await rt.start("workflow:three", {}, owner=P)
        failed = await rt.start("workflow:three", {"fail": True}, owner=P)
        await rt.wait(early.run.id)
        assert (await rt.wait(failed.run.id)).status == "failed"
        await trio.sleep(100)
        cutoff = rt.now()
        await trio.sleep(100)
        late = await rt.start("workflow:three", {}, owner=P)
        await rt.wait(late.run.id)
        assert await rt.purge(before=cutoff, statuses=("completed",)) == 1
        assert {r.id for r in rt.list().runs} == {failed.run.id, late.run.id}
        assert await rt.purge(before=cutoff, statuses=("failed", "cancelled")) == 1
        assert await rt.purge(before=cutoff) == 0
        assert [r.id for r in rt.list().runs] == [late.run.id]


async def test_purge_arguments_are_checked(data_dir: Path) -> None:
    async with runtime(data_dir) as rt:
        for bad in ({"statuses": ["running"]}, {"statuses": []}, {"before": "yesterday"}):
            with pytest.raises(InvalidInput):
                await rt.purge(**bad)
    for bad_rule in ({"completed": -1}, {"max_failed": 1.5}, {"interval": 0}, {"failed": True}):
        with pytest.raises(InvalidInput):
            Retention(**bad_rule)
    with pytest.raises(InvalidInput):
        perdure.Runtime(data_dir, retention={"completed": 1})  # type: ignore[arg-type]


async def test_seqs_are_never_reused_after_the_newest_runs_are_purged(data_dir: Path) -> None:
    async with runtime(data_dir) as rt:
        started = await rt.start("workflow:three", {}, owner=P, run_id="reused")
        await rt.wait("reused")
        seq = started.run.seq
        assert await rt.purge() == 1
    async with runtime(data_dir) as rt:
        again = await rt.start("workflow:three", {}, owner=P, run_id="reused")
        assert not again.duplicate
        assert again.run.seq > seq
        await rt.wait("reused")


# -- retention rules --------------------------------------------------------------------------


async def test_retention_by_age_in_virtual_time(data_dir: Path, autojump_clock: Any) -> None:
    rules = Retention(completed=3600, failed=7200, interval=60)
    async with runtime(data_dir, retention=rules) as rt:
        ok = await rt.start("workflow:three", {}, owner=P)
        bad = await rt.start("workflow:three", {"fail": True}, owner=P)
        parked = await rt.start("workflow:waiter", {}, owner=P)
        await rt.wait(ok.run.id)
        await rt.wait(bad.run.id)
        await trio.sleep(3000)
        assert len(rt.list().runs) == 3
        await trio.sleep(700)  # past the hour and the next pass
        assert {r.id for r in rt.list().runs} == {bad.run.id, parked.run.id}
        await trio.sleep(3700)
        assert [r.id for r in rt.list().runs] == [parked.run.id]  # never terminal: kept
        assert internals(rt).retention.purged == 2


async def test_retention_by_count_keeps_the_latest_to_end(
    data_dir: Path, autojump_clock: Any
) -> None:
    rules = Retention(max_completed=5, max_failed=0, interval=10)
    async with runtime(data_dir, retention=rules) as rt:
        # A long run started first but ending last is among the newest by end time.
        long = await rt.start("workflow:waiter", {}, owner=P)
        ids = []
        for i in range(12):
            started = await rt.start("workflow:three", {"fail": i == 3}, owner=P)
            await rt.wait(started.run.id)
            ids.append(started.run.id)
            await trio.sleep(1)
        await rt.resume(long.run.id, GO)
        await rt.wait(long.run.id)
        await trio.sleep(11)
        kept = {r.id for r in rt.list().runs}
        completed_ids = [i for n, i in enumerate(ids) if n != 3]
        assert kept == {long.run.id, *completed_ids[-4:]}
        # Cheap when nothing changed: another pass purges nothing.
        purged = internals(rt).retention.purged
        await trio.sleep(11)
        assert internals(rt).retention.purged == purged


async def test_passes_sweep_the_timers_of_purged_runs_a_bounded_slice_at_a_time(
    data_dir: Path, autojump_clock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The timers database holds every timer not yet due (and a timer can outlive its
    run), so a pass sweeps only a slice of it and the next pass goes on; an explicit
    purge sweeps it to the end."""
    from perdure.runtime import _retention

    monkeypatch.setattr(_retention, "_TIMER_WALK", 2)
    monkeypatch.setattr(_retention, "_TIMER_SLICES", 1)
    rules = Retention(max_completed=2, interval=10)
    async with runtime(data_dir, retention=rules) as rt:
        ids = []
        for _ in range(7):
            started = await rt.start("workflow:three", {}, owner=P)
            await rt.wait(started.run.id)
            ids.append(started.run.id)
        store = internals(rt).store
        service = internals(rt).retention

        def timer_runs() -> list[str]:
            return sorted(ref.run_id for ref in store.timers())

        assert timer_runs() == []  # the run timeouts' timers went with the runs' ends
        await leave_timers(rt, ids)  # due in run order
        assert timer_runs() == sorted(ids)
        left = []
        await trio.sleep(5)  # between two passes from here on
        for expected_passes in (1, 2, 3, 4, 5):
            await trio.sleep(10)
            assert service.passes == expected_passes
            left.append(len(store.timers()))
        # Pass 1 purges the 5 oldest runs; each pass then walks 2 timer keys.
        assert service.purged == 5
        assert left == [5, 3, 2, 2, 2]
        assert timer_runs() == sorted(ids[5:])  # the kept runs' timers stay
        # An explicit purge sweeps the whole database at once.
        assert await rt.purge(before=rt.now() + 1, statuses=["completed"]) == 2
        assert store.timers() == []


async def test_the_count_boundary_walked_in_slices_is_the_one_walked_at_once(
    data_dir: Path,
) -> None:
    """A count rule's boundary is walked a few keys per call (the trio thread checkpoints
    between two): resuming across any slice size finds the same key as one walk."""
    async with runtime(data_dir) as rt:
        for _ in range(9):
            started = await rt.start("workflow:three", {}, owner=P)
            await rt.wait(started.run.id)
        from perdure.storage._keys import IDX_FINISHED, index_prefix

        purger = internals(rt).retention._purger

        def walk(keep: int, per_txn: int) -> tuple[bytes | None, int]:
            calls = 0
            resume = None
            while True:
                calls += 1
                key, resume = purger.boundary("completed", keep, resume, per_txn=per_txn)
                if resume is None:
                    return key, calls

        for keep in range(0, 12):
            whole, calls = walk(keep, 10_000)
            assert calls == 1
            assert (whole is None) == (keep > 9), keep
            for per_txn in (1, 2, 3, 4):
                sliced, calls = walk(keep, per_txn)
                assert sliced == whole, (keep, per_txn)
                if 0 < keep <= 9:
                    assert calls == -(-keep // per_txn), (keep, per_txn)
        # The boundary of "keep 4" is the 4th latest end: 5 runs lie below it.
        below, _ = walk(4, 2)
        assert below is not None
        with internals(rt).store.read() as txn:
            cur = txn.cursor(db=internals(rt).store.dbs["index"])
            prefix = index_prefix(IDX_FINISHED, "completed")
            ends = [bytes(k) for k in cur.iternext(values=False) if bytes(k).startswith(prefix)]
        assert ends.index(below) == 5


async def test_a_store_without_the_end_index_is_indexed_by_the_first_purge(
    data_dir: Path,
) -> None:
    """Stores written before the ``f`` family: the first purge fills it in."""
    async with runtime(data_dir) as rt:
        for _ in range(3):
            await rt.wait((await rt.start("workflow:three", {}, owner=P)).run.id)
        store = internals(rt).store
        with store.read() as txn:
            ends = [bytes(k) for k, _ in txn.cursor(db=store.dbs["index"]) if bytes(k)[:1] == b"f"]
        assert len(ends) == 3
        index, meta = store.dbs["index"], store.dbs["meta"]
        await internals(rt).writer.commit([(index, key, None) for key in ends])
        await internals(rt).writer.commit([(meta, b"finish_index", None)])
    async with runtime(data_dir) as rt:
        assert await rt.purge() == 3
        assert rt.list().runs == []


async def test_a_new_store_has_its_end_index_from_the_start(data_dir: Path) -> None:
    """Nothing to fill in for a store created with the ``f`` family: its first purge
    must not read every record to index ends that were all indexed when they happened."""
    async with runtime(data_dir) as rt:
        assert internals(rt).retention._purger.finish_index_ready()


async def test_a_root_is_purged_from_its_end_entry_as_from_its_record(data_dir: Path) -> None:
    """The ``f`` entry of a root holds what its purge deletes (an Ending), so the purge
    never reads the root's record; for every kind of root (an idempotency key, children,
    a batch, a cron tick) the deletes are the ones its record gives (f entries of older
    stores hold the run id: those roots are planned from the record), and such a store
    still purges whole."""
    from perdure.storage._keys import IDX_BATCH, index_key

    async with runtime(data_dir) as rt:
        tree = await rt.start("workflow:parent", {}, owner=P, idempotency_key="k1")
        plain = await rt.start("workflow:three", {}, owner=perdure.Project("p2"))
        for started in (tree, plain):
            await rt.wait(started.run.id)
        engine = internals(rt)
        store = engine.store
        fired = await as_fired_batch_job(rt, plain.run.id)
        purger = engine.retention._purger
        for root in (tree.run.id, plain.run.id):
            key = end_key(rt, root)
            with store.read() as txn:
                value = bytes(txn.get(key, db=store.dbs["index"]))
            assert value[:1] == b"\x96"  # an Ending, not the run id
            from_end = purger.plan([(key, value)])
            from_record = purger.plan([(key, root.encode())])
            ops = sorted((op[1], str(op[2])) for batch in from_end.batches for op in batch)
            assert ops == sorted(
                (op[1], str(op[2])) for batch in from_record.batches for op in batch
            )
            assert from_end.runs == from_record.runs == (3 if root == tree.run.id else 1)
            # The root goes last, with its f entry: a crash between chunks keeps the root.
            assert from_end.batches[-1][-1][1] == key
            if root == plain.run.id:
                assert (FIRE_KEY, "None") in ops
                assert (index_key(IDX_BATCH, "b1", fired.seq), "None") in ops
        # A store written before endings: its f entries name the run; it purges whole.
        index = store.dbs["index"]
        await engine.writer.commit(
            [(index, end_key(rt, run), run.encode()) for run in (tree.run.id, plain.run.id)]
        )
        assert await rt.purge() == 4
        with raw_keys(rt) as keys:
            # Only the store's own keys and the batch record (kept on purpose) are left.
            assert {name: items for name, items in keys.items() if items} == {
                "meta": keys["meta"],
                "batches": [b"b1"],
            }


# -- storage-level: batches, logs, fires -----------------------------------------------------


async def test_purge_deletes_logs_batch_entries_and_fire_keys(data_dir: Path) -> None:
    from perdure.storage._keys import run_prefix

    async with runtime(data_dir) as rt:
        done = await rt.start("workflow:three", {}, owner=P)
        await rt.wait(done.run.id)
        engine = internals(rt)
        logs = engine.store.dbs["logs"]
        await as_fired_batch_job(rt, done.run.id)
        await engine.writer.commit(
            [(logs, run_prefix(done.run.id) + i.to_bytes(8, "big"), b"x") for i in (1, 2)]
        )
        assert await rt.purge() == 1
        with raw_keys(rt) as keys:
            assert keys["logs"] == [] and keys["index"] == []
            # The tick's key goes with its run: the schedule's cursor is past it, and
            # keeping one key per tick for ever would leave the store unbounded (R38).
            assert keys["fires"] == []
            assert keys["batches"] == [b"b1"]


async def test_a_terminal_root_with_a_live_descendant_is_kept(data_dir: Path) -> None:
    """R15 ends children before their parent, so this only arises from damage or a future
    path; the purge still refuses to split the tree."""
    async with runtime(data_dir) as rt:
        root = await rt.start("workflow:parent", {}, owner=P)
        await rt.wait(root.run.id)
        kid = rt.list(parent_id=root.run.id).runs[0]
        store = internals(rt).store
        live = msgspec.structs.replace(kid, status="running", completion=None)
        await internals(rt).writer.commit(
            [(store.dbs["runs"], kid.id.encode(), msgspec.msgpack.encode(live))]
        )
        assert await rt.purge() == 0
        assert rt.get(root.run.id).status == "completed"
        await internals(rt).writer.commit(
            [(store.dbs["runs"], kid.id.encode(), msgspec.msgpack.encode(kid))]
        )
        assert await rt.purge() == 3


async def test_freed_pages_are_reused(data_dir: Path) -> None:
    """LMDB reuses the pages a purge frees: rounds of load with purges between them
    leave the data file about the size the first rounds made it."""
    sizes = []
    async with runtime(data_dir, durability="process") as rt:
        for _ in range(4):
            async with trio.open_nursery() as nursery:
                for _ in range(800):
                    nursery.start_soon(_one, rt)
            assert await rt.purge() == 800
            sizes.append((data_dir / "data.mdb").stat().st_size)
    # Four rounds without purges would need four times the first round's file; after
    # the first purge the file holds steady (LMDB's free list settles in a round).
    assert sizes[-1] <= sizes[1] * 1.05 and sizes[-1] < sizes[0] * 1.5, sizes


async def _one(rt: perdure.Runtime) -> None:
    await rt.wait((await rt.start("workflow:three", {}, owner=P)).run.id)


def test_hosts_forward_purge_and_check(data_dir: Path) -> None:
    host = perdure.Host(data_dir)

    @host.workflow("w")
    async def w(ctx: perdure.RunContext, inp: dict) -> dict:
        await ctx.step("s", _value)
        return inp

    with host:
        done = host.start("workflow:w", {}, owner=P)
        host.wait(done.run.id)
        parked = host.start("workflow:w", {}, owner=P, run_id="never-mind")
        host.wait(parked.run.id)
        report = host.check()
        assert report.ok and report.runs == []
        assert host.purge(before=host.now() + 1, statuses=["completed"]) == 2
        with pytest.raises(RunNotFound):
            host.get(done.run.id)


async def test_asyncio_host_forwards_purge(data_dir: Path) -> None:
    import asyncio

    async def main() -> int:
        async with perdure.AsyncioHost(data_dir) as host:
            return await host.purge()

    # The AsyncioHost is for asyncio programs: run one in a thread of its own.
    assert await trio.to_thread.run_sync(lambda: asyncio.run(main())) == 0


async def _value() -> int:
    return 1
