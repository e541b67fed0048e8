"""Batches (R24): many jobs started atomically under one batch id.

* one commit stores every job and the batch, or nothing (a bad input anywhere, a failed
  commit); idempotent with a key, also when starts race;
* ``rt.batch(id)`` counts jobs per status; ``rt.list(batch_id=...)`` lists them;
* ``rt.cancel_batch(id)`` cancels every job not yet ended (pending ones included).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
from helpers.checks import dump_store

import perdure
from perdure.testing import internals

P = perdure.Project("p1")


def make(path: Path, **options: Any) -> perdure.Runtime:
    options.setdefault("durability", "process")
    rt = perdure.Runtime(path, **options)
    rt.gates: dict[str, trio.Event] = {}  # type: ignore[attr-defined]

    @rt.task(
        "job",
        input_schema={
            "type": "object",
            "required": ["n"],
            "properties": {"n": {"type": "integer"}},
        },
    )
    async def job(ctx: perdure.RunContext, inp: dict) -> dict:
        gate = inp.get("gate")
        if gate is not None:
            await rt.gates.setdefault(gate, trio.Event()).wait()  # type: ignore[attr-defined]
        return {"n": inp["n"]}

    @rt.workflow("flow")
    async def flow(ctx: perdure.RunContext, inp: dict) -> None:
        return None

    return rt


async def test_a_batch_starts_atomically_and_counts_by_status(
    data_dir: Path, autojump_clock: Any
) -> None:
    async with make(data_dir) as rt:
        writer = internals(rt).writer
        before = writer.stats.batches
        batch = await rt.start_batch(
            "task:job", [{"n": i, "gate": "g" if i % 2 else None} for i in range(50)], owner=P
        )
        assert writer.stats.batches == before + 1  # one commit for all of it
        assert batch.total == 50 and batch.counts == {"running": 50} and not batch.duplicate
        assert batch.target == "task:job" and batch.owner == P
        page = rt.list(batch_id=batch.id, limit=1000)
        assert [run.input["n"] for run in page.runs] == list(range(50))
        assert all(run.batch_id == batch.id for run in page.runs)
        assert all(run.trigger == perdure.Trigger(type="batch", ref=batch.id) for run in page.runs)
        # Paging and filters combine with the batch.
        first = rt.list(batch_id=batch.id, limit=20)
        assert len(first.runs) == 20 and first.next_cursor is not None
        await trio.sleep(1)
        info = rt.batch(batch.id)
        assert info.counts == {"completed": 25, "running": 25}
        assert len(rt.list(batch_id=batch.id, status="running", limit=100).runs) == 25
        rt.gates["g"].set()  # type: ignore[attr-defined]
        await trio.sleep(1)
        assert rt.batch(batch.id).counts == {"completed": 50}
        assert rt.list(batch_id="unknown-batch").runs == []


async def test_nothing_is_stored_when_an_input_or_the_commit_fails(
    data_dir: Path, autojump_clock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with make(data_dir, max_running=2) as rt:
        store = internals(rt).store
        before = dump_store(store)
        with pytest.raises(perdure.InvalidInput) as caught:
            await rt.start_batch("task:job", [{"n": 1}, {"n": "two"}, {"n": 3}], owner=P)
        assert caught.value.detail["index"] == 1 and "inputs[1]" in caught.value.message
        for bad in ([], "not a list", {"n": 1}, [{"n": 1}] * 10_001):
            with pytest.raises(perdure.InvalidInput):
                await rt.start_batch("task:job", bad, owner=P)  # type: ignore[arg-type]
        with pytest.raises(perdure.InvalidInput):
            await rt.start_batch("workflow:flow", [{}], owner=P)
        with pytest.raises(perdure.UnknownTarget):
            await rt.start_batch("task:missing", [{}], owner=P)
        with pytest.raises(perdure.InvalidInput):
            await rt.start_batch("task:job", [{"n": 1}], owner=perdure.Conversation("c"))
        # A commit that fails (a key LMDB refuses) takes every job with it.
        ops_type = type(internals(rt).ops)
        real = ops_type.save_batch

        def broken(self: Any, batch: Any) -> list[Any]:
            db, _, value = real(self, batch)[0]
            return [(db, b"k" * 600, value)]

        monkeypatch.setattr(ops_type, "save_batch", broken)
        with pytest.raises(perdure.StorageError):
            await rt.start_batch("task:job", [{"n": i} for i in range(5)], owner=P)
        monkeypatch.setattr(ops_type, "save_batch", real)
        assert dump_store(store) == before
        # The admission slots the failed batch reserved were given back.
        batch = await rt.start_batch("task:job", [{"n": i} for i in range(3)], owner=P)
        assert rt.batch(batch.id).counts == {"running": 2, "pending": 1}
        await trio.sleep(1)
        assert rt.batch(batch.id).counts == {"completed": 3}


async def test_batch_idempotency(data_dir: Path, autojump_clock: Any) -> None:
    async with make(data_dir) as rt:
        first = await rt.start_batch("task:job", [{"n": 1}], owner=P, idempotency_key="k1")
        again = await rt.start_batch("task:job", [{"n": 9}] * 3, owner=P, idempotency_key="k1")
        assert again.duplicate and again.id == first.id and again.total == 1
        other_owner = await rt.start_batch(
            "task:job", [{"n": 1}], owner=perdure.Project("p2"), idempotency_key="k1"
        )
        assert other_owner.id != first.id
        # A run's idempotency key and a batch's live apart.
        run = await rt.start("task:job", {"n": 1}, owner=P, idempotency_key="k1")
        assert not run.duplicate
        results: list[perdure.BatchInfo] = []

        async def start() -> None:
            results.append(
                await rt.start_batch("task:job", [{"n": 2}] * 4, owner=P, idempotency_key="race")
            )

        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(start)
        assert len({r.id for r in results}) == 1 and sum(not r.duplicate for r in results) == 1
        assert len(rt.list(batch_id=results[0].id).runs) == 4


async def test_cancelling_a_batch_cancels_its_jobs(data_dir: Path, autojump_clock: Any) -> None:
    async with make(data_dir, max_running=4) as rt:
        batch = await rt.start_batch(
            "task:job", [{"n": i, "gate": "g" if i >= 2 else None} for i in range(10)], owner=P
        )
        await trio.sleep(1)
        assert rt.batch(batch.id).counts == {"completed": 2, "running": 4, "pending": 4}
        cancelled = await rt.cancel_batch(batch.id, reason="enough")
        assert cancelled == 8
        info = rt.batch(batch.id)
        assert info.counts == {"completed": 2, "cancelled": 8}
        runs = rt.list(batch_id=batch.id).runs
        assert {run.cancel.reason for run in runs if run.cancel} == {"enough"}
        assert await rt.cancel_batch(batch.id) == 0
        with pytest.raises(perdure.BatchNotFound):
            await rt.cancel_batch("nope")
        with pytest.raises(perdure.BatchNotFound):
            rt.batch("nope")
        with pytest.raises(perdure.InvalidInput):
            rt.batch("bad id!")


async def test_a_batch_survives_a_restart(data_dir: Path, autojump_clock: Any) -> None:
    async with make(data_dir) as rt:
        batch = await rt.start_batch("task:job", [{"n": i, "gate": "g"} for i in range(5)], owner=P)
    async with make(data_dir) as rt:  # recovered: the jobs wait on a fresh gate
        assert rt.batch(batch.id).counts == {"running": 5}
        rt.gates.setdefault("g", trio.Event()).set()  # type: ignore[attr-defined]
        await trio.sleep(1)
        assert rt.batch(batch.id).counts == {"completed": 5}
