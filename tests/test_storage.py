"""Storage (R26-R29): reopen, the writer lock, foreign directories, map growth, durability."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import lmdb
import msgspec
import pytest
import trio
from helpers.checks import assert_valid_log, dump_store, read_log, snapshot_dir, wait_until

import perdure
from perdure.storage import SCHEMA_VERSION, SchemaInfo, Store
from perdure.testing import internals

P = perdure.Project("p1")
HELPER = str(Path(__file__).parent / "helpers" / "store_proc.py")


def run_helper(mode: str, path: Path) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, HELPER, mode, str(path)], capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[0])  # type: ignore[no-any-return]


async def run_helper_async(mode: str, path: Path) -> dict[str, Any]:
    proc = await trio.run_process(
        [sys.executable, HELPER, mode, str(path)], capture_stdout=True, capture_stderr=True
    )
    return json.loads(proc.stdout.decode().splitlines()[0])  # type: ignore[no-any-return]


# -- reopen -------------------------------------------------------------------------------


async def _make_history(rt: perdure.Runtime) -> list[str]:
    """Runs in every terminal state, with several kinds of events."""
    ids = [
        (await rt.start("workflow:echo", {"i": i, "nested": {"x": [i]}}, owner=P)).run.id
        for i in range(3)
    ]
    ids.append((await rt.start("workflow:emit", {"n": 5}, owner=P, idempotency_key="k1")).run.id)
    ids.append((await rt.start("task:fail", {"msg": "no"}, owner=P)).run.id)
    ids.append((await rt.start("agent:chat", {}, owner=perdure.Conversation("c1"))).run.id)
    blocked = (await rt.start("workflow:block", {}, owner=P, run_id="caller-chosen")).run.id
    ids.append(blocked)
    for rid in ids:
        if rid == blocked:
            await rt.cancel(rid, "stop")
        await rt.wait(rid)
    return ids


async def test_reopen_keeps_every_record_and_event(make_rt: Any, data_dir: Path) -> None:
    rt = make_rt()
    async with rt:
        ids = await _make_history(rt)
        records = {rid: rt.get(rid) for rid in ids}
        logs = {rid: await read_log(rt, rid) for rid in ids}
        image = dump_store(internals(rt).store)
        listing = rt.list().runs
    assert {rec.status for rec in records.values()} == {"completed", "failed", "cancelled"}
    for _ in range(2):
        again = make_rt()
        async with again:
            assert dump_store(internals(again).store) == image  # the same bytes, every database
            for rid in ids:
                assert again.get(rid) == records[rid]
                assert await read_log(again, rid) == logs[rid]
                await assert_valid_log(again, rid)
            assert again.list().runs == listing
            # idempotency keys survive too
            dup = await again.start("workflow:emit", {"n": 5}, owner=P, idempotency_key="k1")
            assert dup.duplicate and dup.run.id == ids[3]
            assert dump_store(internals(again).store) == image


async def test_new_runs_after_reopen_list_after_old_ones(make_rt: Any) -> None:
    rt = make_rt()
    async with rt:
        old = [(await rt.start("task:job", {"i": i}, owner=P)).run for i in range(3)]
        for rec in old:
            await rt.wait(rec.id)
        # the newest run sits alone in another status family: the next seq still tops it
        old.append((await rt.start("task:fail", {}, owner=P)).run)
        assert (await rt.wait(old[-1].id)).status == "failed"
    rt2 = make_rt()
    async with rt2:
        new = (await rt2.start("task:job", {"i": 3}, owner=P)).run
        assert new.seq > max(r.seq for r in old)
        await rt2.wait(new.id)
        assert [r.id for r in rt2.list().runs] == [*(r.id for r in old), new.id]


async def test_schema_stamp_written_once(data_dir: Path) -> None:
    async with perdure.Runtime(data_dir) as rt:
        with internals(rt).store.read() as txn:
            raw = txn.get(b"schema", db=internals(rt).store.dbs["meta"])
    info = msgspec.msgpack.decode(raw, type=SchemaInfo)
    assert info.format == "perdure" and info.version == SCHEMA_VERSION == 3
    async with perdure.Runtime(data_dir) as rt:
        with internals(rt).store.read() as txn:
            assert txn.get(b"schema", db=internals(rt).store.dbs["meta"]) == raw  # not re-stamped


# -- one writer per directory (R27) -------------------------------------------------------


async def test_second_process_gets_directory_locked_naming_the_holder(
    make_rt: Any, data_dir: Path
) -> None:
    rt = make_rt()
    async with rt:
        run = (await rt.start("workflow:echo", {}, owner=P)).run
        await rt.wait(run.id)
        out = await run_helper_async("open", data_dir)
        assert out["ok"] is False
        assert out["error"] == "DirectoryLocked"
        assert out["code"] == "DIRECTORY_LOCKED"
        assert f"pid {os.getpid()}" in out["message"]
        assert out["detail"]["holder"]["pid"] == os.getpid()
        # read-only inspection works beside the writer
        seen = await run_helper_async("readonly", data_dir)
        assert seen["ok"] is True and seen["runs"] == [run.id]
        # and the holder is unharmed
        more = (await rt.start("workflow:echo", {"after": True}, owner=P)).run
        assert (await rt.wait(more.id)).status == "completed"
    Store(data_dir).close()  # released on close


async def test_second_runtime_in_the_same_process_gets_directory_locked(
    make_rt: Any, data_dir: Path
) -> None:
    rt = make_rt()
    async with rt:
        with pytest.raises(perdure.DirectoryLocked) as info:
            async with make_rt():
                pass
        assert f"pid {os.getpid()}" in str(info.value)
        with pytest.raises(perdure.DirectoryLocked):
            Store(data_dir)


async def test_refused_second_open_leaves_the_holder_working(make_rt: Any, data_dir: Path) -> None:
    rt = make_rt()
    async with rt:
        for _ in range(2):
            with pytest.raises(perdure.StorageError):
                async with make_rt():
                    pass
            with pytest.raises(perdure.StorageError):
                Store(data_dir)
        run = (await rt.start("workflow:emit", {"n": 3}, owner=P)).run
        assert (await rt.wait(run.id)).status == "completed"
        await assert_valid_log(rt, run.id)
    async with make_rt() as again:
        assert again.get(run.id).status == "completed"


def test_lock_of_a_killed_holder_is_released(data_dir: Path) -> None:
    Store(data_dir).close()
    holder = subprocess.Popen(
        [sys.executable, HELPER, "hold", str(data_dir)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None
        assert json.loads(holder.stdout.readline())["ok"] is True
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(perdure.DirectoryLocked) as info:
            Store(data_dir)
        assert f"pid {holder.pid}" in str(info.value)
        assert info.value.detail["holder"]["pid"] == holder.pid
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
        Store(data_dir).close()  # the kernel dropped the lock with its holder
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


# -- foreign, corrupt and newer directories (R28) ------------------------------------------


def _lmdb_env(path: Path, dbs: dict[bytes, dict[bytes, bytes]]) -> None:
    env = lmdb.open(str(path), max_dbs=8)
    for name, items in dbs.items():
        db = env.open_db(name)
        with env.begin(write=True, db=db) as txn:
            for key, value in items.items():
                txn.put(key, value)
    env.close()


def _perdure_store_with_schema(path: Path, raw: bytes) -> None:
    Store(path).close()
    env = lmdb.open(str(path), max_dbs=16)
    meta = env.open_db(b"meta", create=False)
    with env.begin(write=True, db=meta) as txn:
        txn.put(b"schema", raw)
    env.close()


def _stamp(fmt: str, version: int) -> bytes:
    return msgspec.msgpack.encode(SchemaInfo(format=fmt, version=version, created_at=1.0))


FOREIGN: dict[str, tuple[Any, type[perdure.StorageError]]] = {
    "unrelated-file": (
        lambda p: (p.mkdir(), (p / "notes.txt").write_text("mine")),
        perdure.ForeignDirectory,
    ),
    "unrelated-subdir": (lambda p: (p.mkdir(), (p / "sub").mkdir()), perdure.ForeignDirectory),
    "own-files-plus-stranger": (
        lambda p: (Store(p).close(), (p / "README").write_text("x")),
        perdure.ForeignDirectory,
    ),
    "path-is-a-file": (lambda p: p.write_text("a file"), perdure.ForeignDirectory),
    "non-lmdb-data-mdb": (
        lambda p: (p.mkdir(), (p / "data.mdb").write_bytes(b"definitely not lmdb " * 500)),
        perdure.CorruptStore,
    ),
    "empty-data-mdb": (
        lambda p: (p.mkdir(), (p / "data.mdb").write_bytes(b"")),
        perdure.CorruptStore,
    ),
    "lmdb-without-meta": (
        lambda p: _lmdb_env(p, {b"stuff": {b"k": b"v"}}),
        perdure.ForeignDirectory,
    ),
    "lmdb-bare": (lambda p: _lmdb_env(p, {}), perdure.ForeignDirectory),
    "lmdb-meta-without-stamp": (
        lambda p: _lmdb_env(p, {b"meta": {b"other": b"1"}}),
        perdure.ForeignDirectory,
    ),
    "other-format-stamp": (
        lambda p: _lmdb_env(p, {b"meta": {b"schema": _stamp("temporal", 1)}}),
        perdure.ForeignDirectory,
    ),
    "garbage-stamp": (
        lambda p: _perdure_store_with_schema(p, b"\xc1garbage"),
        perdure.ForeignDirectory,
    ),
    "pre-release-schema": (
        lambda p: _perdure_store_with_schema(p, _stamp("perdure", 1)),
        perdure.StorageError,
    ),
    "schema-too-new": (
        lambda p: _perdure_store_with_schema(p, _stamp("perdure", 99)),
        perdure.SchemaTooNew,
    ),
}


@pytest.mark.no_log_check  # the store is refused on purpose: nothing to check
@pytest.mark.parametrize("case", list(FOREIGN))
async def test_foreign_directory_is_refused_and_left_untouched(case: str, tmp_path: Path) -> None:
    build, error = FOREIGN[case]
    path = tmp_path / "data"
    build(path)
    before = snapshot_dir(tmp_path)
    with pytest.raises(error) as info:
        Store(path)
    assert isinstance(info.value, perdure.StorageError)
    assert info.value.code == error.code
    assert str(path) in info.value.message
    with pytest.raises(error):
        async with perdure.Runtime(path):
            pass
    with pytest.raises(error):
        async with perdure.Runtime(path, durability="process"):
            pass
    with pytest.raises(perdure.StorageError):
        Store(path, readonly=True)
    assert snapshot_dir(tmp_path) == before  # byte for byte


async def test_schema_too_new_names_the_versions(tmp_path: Path) -> None:
    path = tmp_path / "data"
    _perdure_store_with_schema(path, _stamp("perdure", 99))
    with pytest.raises(perdure.SchemaTooNew) as info:
        Store(path)
    assert info.value.detail["version"] == 99
    assert info.value.detail["supported"] == SCHEMA_VERSION
    assert info.value.code == "SCHEMA_TOO_NEW"


async def test_a_schema_2_store_is_upgraded_in_place_by_a_writer(tmp_path: Path) -> None:
    """Schema 3 only added databases: a writer adds them and restamps; its runs read back.
    A read-only inspector refuses a store not yet upgraded, with what to do."""
    path = tmp_path / "data"
    rt = perdure.Runtime(path)

    @rt.workflow("w")
    async def w(ctx: perdure.RunContext, inp: dict) -> dict:
        return {"ok": await ctx.step("s", lambda: 1, inline=True)}

    async with rt:
        run = (await rt.start("workflow:w", {}, owner=perdure.Project("p"))).run
        before = await rt.wait(run.id)
    # Make it a schema-2 store: drop what schema 3 added, stamp 2.
    env = lmdb.open(str(path), max_dbs=16)
    with env.begin(write=True) as txn:
        for name in (b"logs", b"fires", b"batches"):
            txn.drop(env.open_db(name, txn=txn), delete=True)
        txn.put(b"schema", _stamp("perdure", 2), db=env.open_db(b"meta", txn=txn))
    env.close()
    with pytest.raises(perdure.StorageError) as info:
        Store(path, readonly=True)
    assert "open it once for writing" in info.value.message
    async with rt:
        assert rt.get(run.id) == before
    store = Store(path, readonly=True)
    try:
        with store.read() as txn:
            raw = txn.get(b"schema", db=store.dbs["meta"])
        assert msgspec.msgpack.decode(raw, type=SchemaInfo).version == SCHEMA_VERSION
        assert store.get_run(run.id) == before
    finally:
        store.close()


def test_readonly_open_of_a_missing_directory_creates_nothing(tmp_path: Path) -> None:
    with pytest.raises(perdure.StorageError):
        Store(tmp_path / "missing", readonly=True)
    assert not (tmp_path / "missing").exists()


async def test_crash_during_first_open_does_not_brick_the_directory(data_dir: Path) -> None:
    proc = subprocess.run(
        [sys.executable, HELPER, "crash-first-open", str(data_dir)], capture_output=True, timeout=30
    )
    assert proc.returncode == 17  # died mid-open, as a SIGKILL would
    assert (data_dir / "data.mdb").exists()
    async with perdure.Runtime(data_dir) as rt:
        assert rt.list().runs == []


# -- map growth (R28) ---------------------------------------------------------------------


async def test_map_grows_past_its_initial_size(make_rt: Any, data_dir: Path) -> None:
    initial = 256 * 1024
    rt = make_rt(map_size=initial)
    pad = "x" * 1000
    ids: list[str] = []
    async with rt:
        assert internals(rt).store.map_size == initial

        async def one(i: int) -> None:
            run = (await rt.start("task:job", {"i": i, "pad": pad}, owner=P)).run
            ids.append(run.id)
            await rt.wait(run.id)

        for batch in range(6):
            async with trio.open_nursery() as nursery:
                for i in range(batch * 50, batch * 50 + 50):
                    nursery.start_soon(one, i)
        assert internals(rt).store.map_size > initial
        assert internals(rt).writer.stats.grows >= 1
    assert len(ids) == 300
    rt2 = make_rt(map_size=initial)
    async with rt2:
        found: dict[str, perdure.RunRecord] = {}
        cursor = None
        while True:
            page = rt2.list(after=cursor, limit=1000)
            found.update((rec.id, rec) for rec in page.runs)
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        assert set(found) == set(ids)
        for rec in found.values():
            assert rec.status == "completed"
            assert rec.completion is not None
            assert rec.completion.result == {"done": rec.input}
            assert rec.input["pad"] == pad
        # still writable at the reopened size
        extra = (await rt2.start("task:job", {"pad": pad * 50}, owner=P)).run
        assert (await rt2.wait(extra.id)).status == "completed"


# -- durability modes (R29) ---------------------------------------------------------------


@pytest.mark.parametrize("durability", ["sync", "process", "memory"])
async def test_durability_modes(durability: str, make_rt: Any, data_dir: Path) -> None:
    rt = make_rt(durability=durability)
    async with rt:
        flags = internals(rt).store.env.flags()
        assert flags["sync"] is (durability == "sync")
        assert flags["metasync"] is (durability == "sync")
        run = (await rt.start("workflow:emit", {"n": 3}, owner=P)).run
        done = await rt.wait(run.id)
        assert done.status == "completed"
        await assert_valid_log(rt, run.id)
    again = make_rt(durability=durability)
    async with again:
        assert again.get(run.id) == done


async def test_memory_mode_without_a_path(make_rt: Any) -> None:
    rt = make_rt(None, durability="memory")
    async with rt:
        where = internals(rt).store.path
        assert where.is_dir()
        run = (await rt.start("workflow:emit", {"n": 4}, owner=P)).run
        assert (await rt.wait(run.id)).status == "completed"
        wire = await assert_valid_log(rt, run.id)
        assert [e["type"] for e in wire] == ["RUN_STARTED", *["CUSTOM"] * 4, "RUN_FINISHED"]
        blocked = (await rt.start("workflow:block", {}, owner=P)).run
        assert (await rt.cancel(blocked.id)).cancelled
        await assert_valid_log(rt, blocked.id)
    assert not where.exists()  # the temporary store is gone with the runtime
    other = make_rt(None, durability="memory")
    async with other:
        assert other.list().runs == []  # a fresh one each time


async def test_bad_durability_and_missing_path(tmp_path: Path) -> None:
    with pytest.raises(perdure.InvalidInput):
        perdure.Runtime(tmp_path / "a", durability="fast")  # type: ignore[arg-type]
    with pytest.raises(perdure.StorageError):
        Store(tmp_path / "b", durability="fast")  # type: ignore[arg-type]
    with pytest.raises(perdure.StorageError):
        Store(None, durability="sync")
    with pytest.raises(perdure.StorageError):
        async with perdure.Runtime(None):
            pass
    with pytest.raises(perdure.InvalidInput):
        perdure.Runtime(tmp_path / "c", max_running=0)
    assert sorted(os.listdir(tmp_path)) == []


async def test_sync_commit_is_durable_before_start_returns(make_rt: Any, data_dir: Path) -> None:
    """What start() acknowledged is on disk: another process reads it at once (R29)."""
    rt = make_rt()
    async with rt:
        run = (await rt.start("workflow:block", {}, owner=P)).run
        seen = await run_helper_async("readonly", data_dir)
        assert run.id in seen["runs"]
        await rt.cancel(run.id)


# -- event chunks: one record per commit -------------------------------------------------


def test_events_read_from_any_position_across_commit_chunks(tmp_path: Path) -> None:
    """A commit stores its events as one chunk; reads from any id, with any limit,
    see exactly the flat log (a reconnect may resume in the middle of a chunk)."""
    from perdure.agui import CustomEvent, decode_event, encode_event

    store = Store(tmp_path / "data")
    try:
        sizes = [1, 3, 1, 2, 5]
        flat: list[tuple[int, bytes]] = []
        ops = []
        last = 0
        for size in sizes:
            chunk = [CustomEvent(name="e", value=last + i + 1) for i in range(size)]
            last += size
            ops.append(store.ops.events("run-a", last, chunk))
            flat.extend((last - size + i + 1, encode_event(item)) for i, item in enumerate(chunk))
        # another run's chunks around it must never leak in
        ops.append(store.ops.events("run-", 1, [CustomEvent(name="x", value=1)]))
        ops.append(store.ops.events("run-b", 1, [CustomEvent(name="x", value=2)]))
        with store.env.begin(write=True) as txn:
            for db, key, value in ops:
                txn.put(key, value, db=db)
        assert store.events("run-a") == flat
        for after in range(last + 2):
            for limit in (1, 2, 3, 100):
                expected = [pair for pair in flat if pair[0] > after][:limit]
                assert store.events("run-a", after, limit) == expected, (after, limit)
                decoded = [(i, decode_event(raw)) for i, raw in expected]
                assert store.read_events("run-a", after, limit) == decoded, (after, limit)
        assert store.get_run("run-a") is None
    finally:
        store.close()


async def test_recovery_loader_reads_what_the_per_run_reads_do(data_dir: Path) -> None:
    """``iter_run_states`` (recovery's batched loader) returns, for every run, exactly
    the record, journal and events of ``get_run``/``journal``/``events``."""
    gate = trio.Event()
    rt = perdure.Runtime(data_dir)

    @rt.workflow("steps")
    async def steps(ctx: perdure.RunContext, inp: dict[str, Any]) -> dict[str, int]:
        for i in range(inp["n"]):
            await ctx.step(f"s{i}", _plus_one, i)
            await ctx.custom("tick", {"i": i})
        if inp.get("block"):
            await gate.wait()
        return {"n": inp["n"]}

    async with rt:
        ids = []
        for n, block in ((0, True), (3, True), (1, False), (2, True), (5, False)):
            ids.append((await rt.start("workflow:steps", {"n": n, "block": block}, owner=P)).run.id)
        for rid, block in zip(ids, (True, True, False, True, False), strict=True):
            if not block:
                await rt.wait(rid)
        await wait_until(lambda: rt.get(ids[3]).journal_len == 4, what="blocked after steps")
    store = Store(data_dir, readonly=True)
    try:
        for per_txn in (1, 2, 512):
            states = {s.rec.id: s for s in store.iter_run_states(per_txn=per_txn)}
            assert set(states) == set(ids)
            for rid in ids:
                rec, journal, events = states[rid]
                assert rec == store.get_run(rid)
                assert journal == store.journal(rid)
                assert events == [event for _, event in store.read_events(rid)]
            running = [s.rec.id for s in store.iter_run_states("running", per_txn=per_txn)]
            assert running == [ids[0], ids[1], ids[3]]
        assert states[ids[3]].rec.journal_len == 4 and len(states[ids[3]].events) == 1 + 2 * 3
    finally:
        store.close()


async def _plus_one(x: int) -> int:
    return x + 1


_GROW_SCRIPT = """
import sys, trio, perdure
async def main():
    rt = perdure.Runtime(sys.argv[1], durability="process", map_size=256 * 1024)
    @rt.task("pad")
    async def pad(ctx, inp: dict) -> dict:
        return inp
    async with rt:
        last = None
        for i in range(300):
            last = (await rt.start("task:pad", {"pad": "x" * 1000}, owner=perdure.Project("p"))).run.id
            await rt.wait(last)
        print(last, rt.stats().map_size, flush=True)
trio.run(main)
"""


async def test_inspector_reads_survive_another_process_growing_the_map(
    make_rt: Any, data_dir: Path
) -> None:
    """A read-only inspector (the CLI beside a live process) keeps reading, ``get_run``
    included, after the writing process doubled the map under it (R28)."""
    rt = make_rt(map_size=256 * 1024, durability="process")
    async with rt:
        first = (await rt.start("task:job", {}, owner=P)).run.id
        await rt.wait(first)
    # Opened at the store's current size, as the CLI would see a store that has not
    # grown yet: the growth below then outruns the inspector's map.
    inspector = Store(data_dir, readonly=True, map_size=256 * 1024)
    try:
        assert inspector.get_run(first) is not None
        proc = subprocess.run(
            [sys.executable, "-c", _GROW_SCRIPT, str(data_dir)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        last, map_size = proc.stdout.split()
        assert int(map_size) > 256 * 1024  # the other process grew the map
        rec = inspector.get_run(last)
        assert rec is not None and rec.status == "completed"
        assert rec.input == {"pad": "x" * 1000}
        assert [e for e, _ in inspector.events(last)] == list(range(1, rec.last_event_id + 1))
    finally:
        inspector.close()


def test_damaged_bytes_are_corrupt_store_for_every_read(tmp_path: Path) -> None:
    """Damage met inside any read transaction is ``CorruptStore``: the reads added with
    schedules, batches and logs too, not only those that translate errors themselves."""
    store = Store(tmp_path / "d", durability="process")
    try:
        garbage = b"\xc1 not msgpack"
        with store.env.begin(write=True) as txn:
            txn.put(b"s", garbage, db=store.dbs["schedules"])
            txn.put(b"b", garbage, db=store.dbs["batches"])
            txn.put(b"run-1\0" + (1).to_bytes(8, "big"), garbage, db=store.dbs["logs"])
        reads = {
            "get_schedule": lambda: store.get_schedule("s"),
            "schedules": store.schedules,
            "get_batch": lambda: store.get_batch("b"),
            "logs": lambda: store.logs("run-1"),
            "last_log": lambda: store.last_log("run-1"),
        }
        for name, read in reads.items():
            with pytest.raises(perdure.CorruptStore) as caught:
                read()
            assert "damaged" in str(caught.value), name
    finally:
        store.close()
