"""Starting runs (R4, R5, R17 links) and listing them: filters, paging, idempotency."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import trio
from helpers.checks import assert_valid_log, dump_store, wait_until
from helpers.defs import BODY_CALLS, Order

import perdure
from perdure.runtime._starting import new_run_id
from perdure.testing import internals

P1 = perdure.Project("p1")
P2 = perdure.Project("p2")
C1 = perdure.Conversation("c1")


async def start_child(
    rt: perdure.Runtime, parent: perdure.RunRecord, target: str, inp: Any = None
) -> perdure.RunRecord:
    """Start a child run the way ``ctx.start_child`` does (parent and root links, R17)."""
    engine = internals(rt)  # the engine's child path, without a body
    checked = engine.check_child(target, inp, owner=parent.owner, run_id=None, parent=parent)
    started = await engine.start_child(checked, run_id=new_run_id(), parent=parent)
    return started.run


# -- start ------------------------------------------------------------------------------------


async def test_start_records_the_run(make_rt: Any) -> None:
    rt = make_rt()
    async with rt:
        s = await rt.start("task:job", {"w": 10}, owner=P1)
        assert isinstance(s, perdure.Started) and s.duplicate is False
        run = s.run
        assert len(run.id) == 32 and run.seq >= 1
        assert (run.kind, run.target, run.owner) == ("job", "task:job", P1)
        assert (run.root_id, run.parent_id, run.idempotency_key) == (run.id, None, None)
        assert run.input == {"w": 10}
        assert run.status == "running" and run.last_event_id == 1
        assert rt.get(run.id).id == run.id
        await rt.wait(run.id)
        mine = await rt.start("task:job", {}, owner=P1, run_id="Job_1.a:b-c")
        assert mine.run.id == "Job_1.a:b-c" and mine.run.root_id == "Job_1.a:b-c"
        await rt.wait(mine.run.id)
        longest = "r" * 128
        assert (await rt.start("task:job", {}, owner=P1, run_id=longest)).run.id == longest
        await rt.wait(longest)


async def test_struct_input_is_typed_for_the_body_and_plain_in_the_store(make_rt: Any) -> None:
    rt = make_rt()
    async with rt:
        for given in ({"sku": "a-1", "qty": 2}, Order(sku="a-1", qty=2)):
            run = (await rt.start("workflow:typed", given, owner=P1)).run
            assert run.input == {"sku": "a-1", "qty": 2}
            done = await rt.wait(run.id)
            assert done.completion is not None
            assert done.completion.result == {"sku": "a-1", "qty": 2}


async def test_agent_input_is_agui_shaped(make_rt: Any) -> None:
    rt = make_rt()
    async with rt:
        msg = {"id": "m1", "role": "user", "content": "hi"}
        run = (await rt.start("agent:chat", {"messages": [msg]}, owner=C1)).run
        assert run.kind == "agent" and run.owner == C1
        assert run.input["messages"] == [msg]
        assert (await rt.wait(run.id)).status == "completed"
        await assert_valid_log(rt, run.id)
        as_struct = perdure.AgentInput(messages=[msg])
        run2 = (await rt.start("agent:chat", as_struct, owner=C1)).run
        assert (await rt.wait(run2.id)).status == "completed"


# -- idempotency (R4) --------------------------------------------------------------------------


async def _concurrently(n: int, start: Any) -> list[perdure.Started | BaseException]:
    results: list[perdure.Started | BaseException] = []

    async def one(i: int) -> None:
        try:
            results.append(await start(i))
        except perdure.PerdureError as exc:
            results.append(exc)

    async with trio.open_nursery() as nursery:
        for i in range(n):
            nursery.start_soon(one, i)
    return results


@pytest.mark.parametrize("by", ["idempotency_key", "run_id", "both"])
async def test_fifty_concurrent_duplicate_starts_make_one_run(by: str, make_rt: Any) -> None:
    rt = make_rt()
    kwargs = {
        "idempotency_key": {"idempotency_key": "signup-42"},
        "run_id": {"run_id": "order-7"},
        "both": {"idempotency_key": "signup-42", "run_id": "order-7"},
    }[by]
    async with rt:
        before = len(rt.list().runs)
        results = await _concurrently(
            50, lambda i: rt.start("workflow:emit", {"n": 3}, owner=P1, **kwargs)
        )
        assert all(isinstance(r, perdure.Started) for r in results), results
        started = [r for r in results if isinstance(r, perdure.Started)]
        assert sum(not r.duplicate for r in started) == 1
        assert sum(r.duplicate for r in started) == 49
        assert len({r.run.id for r in started}) == 1
        rid = started[0].run.id
        if "run_id" in kwargs:
            assert rid == "order-7"
        assert len(rt.list().runs) == before + 1
        assert len(rt.list(owner=P1).runs) == 1
        await rt.wait(rid)
        assert BODY_CALLS[rid] == 1
        await assert_valid_log(rt, rid)
        # a later duplicate returns the finished run, unchanged
        image = dump_store(internals(rt).store)
        again = await rt.start("workflow:emit", {"n": 3}, owner=P1, **kwargs)
        assert again.duplicate and again.run == rt.get(rid)
        assert again.run.status == "completed"
        assert dump_store(internals(rt).store) == image


async def test_racing_starts_for_different_targets_one_key(make_rt: Any) -> None:
    rt = make_rt()
    async with rt:
        results = await _concurrently(
            40,
            lambda i: rt.start(
                "workflow:echo" if i % 2 else "task:job", {"i": 0}, owner=P1, idempotency_key="k"
            ),
        )
        created = [r for r in results if isinstance(r, perdure.Started) and not r.duplicate]
        assert len(created) == 1
        winner = created[0].run.target
        for r in results:
            if isinstance(r, perdure.Started):
                assert r.run.id == created[0].run.id
                assert r.run.target == winner
            else:
                assert isinstance(r, perdure.IdempotencyConflict)
        assert sum(isinstance(r, perdure.IdempotencyConflict) for r in results) == 20
        assert len(rt.list().runs) == 1
        await rt.wait(created[0].run.id)


async def test_key_and_run_id_reuse_conflicts(make_rt: Any) -> None:
    rt = make_rt()
    async with rt:
        a = (await rt.start("workflow:echo", {}, owner=P1, idempotency_key="k")).run
        b = (await rt.start("workflow:echo", {}, owner=P1, run_id="fixed")).run
        image = dump_store(internals(rt).store)
        with pytest.raises(perdure.IdempotencyConflict) as info:
            await rt.start("task:job", {}, owner=P1, idempotency_key="k")
        assert isinstance(info.value, perdure.InvalidInput)
        assert info.value.code == "IDEMPOTENCY_CONFLICT" and info.value.http_status == 409
        assert info.value.detail["run_id"] == a.id
        with pytest.raises(perdure.IdempotencyConflict):
            await rt.start("task:job", {}, owner=P1, run_id="fixed")
        with pytest.raises(perdure.IdempotencyConflict):
            await rt.start("workflow:echo", {}, owner=P2, run_id="fixed")  # another owner
        with pytest.raises(perdure.IdempotencyConflict):
            await rt.start("agent:chat", {}, owner=C1, run_id="fixed")
        assert dump_store(internals(rt).store) == image
        # keys are scoped by owner: the same key in another project is another run
        other = await rt.start("workflow:echo", {}, owner=P2, idempotency_key="k")
        assert not other.duplicate and other.run.id != a.id
        for rid in (a.id, b.id, other.run.id):
            await rt.wait(rid)


# -- list: filters ------------------------------------------------------------------------------


async def _landscape(rt: perdure.Runtime) -> dict[str, perdure.RunRecord]:
    """Runs of every kind, owner and status, with a two-level child tree."""
    runs: dict[str, perdure.RunRecord] = {}

    async def add(name: str, target: str, inp: Any, owner: Any) -> perdure.RunRecord:
        runs[name] = (await rt.start(target, inp, owner=owner)).run
        return runs[name]

    await add("w1", "workflow:echo", {}, P1)
    await add("j1", "task:job", {}, P1)
    await add("f1", "task:fail", {}, P2)
    await add("a1", "agent:chat", {}, C1)
    await add("x1", "workflow:block", {"gate": "x1"}, P2)
    for name in ("w1", "j1", "f1", "a1"):
        await rt.wait(runs[name].id)
    await rt.cancel(runs["x1"].id, "gone")
    root = await add("root", "workflow:block", {"gate": "root"}, P1)
    runs["kid1"] = await start_child(rt, root, "task:job", {})
    runs["kid2"] = await start_child(rt, root, "workflow:block", {"gate": "kid2"})
    runs["grandkid"] = await start_child(rt, runs["kid2"], "task:fail", {})
    await rt.wait(runs["kid1"].id)
    await rt.wait(runs["grandkid"].id)
    await add("r1", "workflow:block", {"gate": "r1"}, P1)
    # two top-level runs hold the two slots (root, r1): the next one waits in ``pending``
    await wait_until(lambda: rt.stats().running == 2, what="finished runs released their slots")
    await add("p1", "workflow:block", {"gate": "p1"}, P2)
    return {name: rt.get(rec.id) for name, rec in runs.items()}


def _names(page: perdure.Page, runs: dict[str, perdure.RunRecord]) -> list[str]:
    return _names_of(page.runs, runs)


def _names_of(recs: list[perdure.RunRecord], runs: dict[str, perdure.RunRecord]) -> list[str]:
    by_id = {rec.id: name for name, rec in runs.items()}
    return [by_id[rec.id] for rec in recs]


async def test_list_filters(make_rt: Any) -> None:
    rt = make_rt(max_running=2)
    async with rt:
        runs = await _landscape(rt)
        status = {name: rec.status for name, rec in runs.items()}
        assert status == {
            "w1": "completed",
            "j1": "completed",
            "f1": "failed",
            "a1": "completed",
            "x1": "cancelled",
            "root": "running",
            "kid1": "completed",
            "kid2": "running",
            "grandkid": "failed",
            "r1": "running",
            "p1": "pending",
        }
        kid2, root = runs["kid2"], runs["root"]
        assert runs["kid1"].parent_id == root.id and runs["kid1"].root_id == root.id
        assert runs["grandkid"].parent_id == kid2.id and runs["grandkid"].root_id == root.id
        order = list(runs)  # creation order

        def names(**filters: Any) -> list[str]:
            return _names(rt.list(**filters), runs)

        def expect(pred: Any) -> list[str]:
            return [n for n in order if pred(runs[n])]

        assert names() == order
        assert names(owner=P1) == expect(lambda r: r.owner == P1)
        assert names(owner=P2) == ["f1", "x1", "p1"]
        assert names(owner=C1) == ["a1"]
        assert names(owner=perdure.Project("c1")) == []  # owners are typed, not just ids
        assert names(owner=perdure.Project("nobody")) == []
        for st in ("pending", "running", "completed", "failed", "cancelled"):
            assert names(status=st) == expect(lambda r, st=st: r.status == st), st
        assert names(status="waiting") == []
        assert names(status=["failed", "cancelled"]) == ["f1", "x1", "grandkid"]
        assert names(kind="job") == ["j1", "f1", "kid1", "grandkid"]
        assert names(kind="agent") == ["a1"]
        assert names(kind="workflow") == ["w1", "x1", "root", "kid2", "r1", "p1"]
        assert names(parent_id=root.id) == ["kid1", "kid2"]
        assert names(parent_id=kid2.id) == ["grandkid"]
        assert names(parent_id=runs["w1"].id) == []
        assert names(root_id=root.id) == ["root", "kid1", "kid2", "grandkid"]
        assert names(root_id=runs["w1"].id) == ["w1"]
        for limit in (1, 2, 3):  # the root (no index entry of its own) pages like the rest
            pages = _walk(rt, limit, root_id=root.id)
            assert [_names_of(p, runs) for p in pages] == [
                ["root", "kid1", "kid2", "grandkid"][i : i + limit] for i in range(0, 4, limit)
            ], limit
        assert names(root_id=kid2.id) == []  # kid2 is not a root
        # combined filters: every one of them applies
        assert names(owner=P1, status="running") == ["root", "kid2", "r1"]
        assert names(owner=P1, kind="job", status="completed") == ["j1", "kid1"]
        assert names(root_id=root.id, kind="job") == ["kid1", "grandkid"]
        assert names(root_id=root.id, status="failed") == ["grandkid"]
        assert names(parent_id=root.id, status="running") == ["kid2"]
        assert names(parent_id=root.id, root_id=root.id, kind="workflow") == ["kid2"]
        assert names(parent_id=root.id, root_id=runs["w1"].id) == []
        assert names(status=["running", "pending"], kind="workflow", owner=P2) == ["p1"]
        assert names(owner=C1, kind="job") == []
        # exhaustive cross-check against a plain filter over everything
        all_runs = [runs[n] for n in order]
        for owner, st, kind in itertools.product(
            (None, P1, P2, C1), (None, "running", "completed"), (None, "job", "workflow")
        ):
            got = [r.id for r in rt.list(owner=owner, status=st, kind=kind).runs]
            want = [
                r.id
                for r in all_runs
                if (owner is None or r.owner == owner)
                and (st is None or r.status == st)
                and (kind is None or r.kind == kind)
            ]
            assert got == want, (owner, st, kind)
        # let everything finish so every log ends
        for name in ("root", "kid2", "r1", "p1"):
            rt.gates.open(name)
        for rec in runs.values():
            await rt.wait(rec.id)
        assert names(status="completed") == expect(
            lambda r: r.status in ("completed", "running", "pending")
        )


# -- list: paging ---------------------------------------------------------------------------------


def _walk(rt: perdure.Runtime, limit: int, **filters: Any) -> list[list[perdure.RunRecord]]:
    pages: list[list[perdure.RunRecord]] = []
    cursor = None
    while True:
        page = rt.list(after=cursor, limit=limit, **filters)
        pages.append(page.runs)
        assert len(page.runs) <= limit
        if page.next_cursor is None:
            return pages
        assert page.runs, "a page with a cursor is never empty"
        cursor = page.next_cursor
        assert len(pages) < 1000


async def test_paging_walks_every_run_once_in_creation_order(make_rt: Any) -> None:
    rt = make_rt()
    async with rt:
        ids = []
        for i in range(23):
            target, owner = [("task:job", P1), ("workflow:echo", P2), ("agent:chat", C1)][i % 3]
            ids.append((await rt.start(target, {"i": i} if i % 3 != 2 else {}, owner=owner)).run.id)
        for rid in ids:
            await rt.wait(rid)
        seqs = [rt.get(rid).seq for rid in ids]
        assert seqs == sorted(seqs)
        for limit in (1, 2, 5, 7, 22, 23, 24, 100, 1000):
            pages = _walk(rt, limit)
            flat = [rec.id for page in pages for rec in page]
            assert flat == ids, limit
            assert len(pages) == max(1, -(-23 // limit)), limit  # no empty trailing page
            assert all(len(page) == limit for page in pages[:-1])
        for filters, want in (
            ({"owner": P1}, ids[0::3]),
            ({"kind": "workflow"}, ids[1::3]),
            ({"owner": C1, "status": "completed"}, ids[2::3]),
            ({"status": "completed"}, ids),
        ):
            for limit in (1, 3, 8):
                pages = _walk(rt, limit, **filters)
                assert [rec.id for page in pages for rec in page] == want, (filters, limit)
        # a cursor stays valid while new runs are created: they come after it
        first = rt.list(limit=10)
        late = (await rt.start("task:job", {}, owner=P1)).run.id
        rest_ids = [rec.id for rec in rt.list(after=first.next_cursor, limit=1000).runs]
        assert rest_ids == [*ids[10:], late]
        await rt.wait(late)


async def test_paging_through_a_sparse_filter(make_rt: Any) -> None:
    """Matches far apart in the scanned index still fill pages and are all found."""
    rt = make_rt(durability="process")
    async with rt:
        ids = []
        async with trio.open_nursery() as nursery:

            async def one(i: int) -> None:
                ids.append((i, (await rt.start("task:job", {"i": i}, owner=P1)).run.id))

            for i in range(300):
                nursery.start_soon(one, i)
        rare = (await rt.start("task:fail", {}, owner=P1)).run.id
        more = [(await rt.start("task:job", {}, owner=P1)).run.id for _ in range(5)]
        rare2 = (await rt.start("task:fail", {}, owner=P1)).run.id
        for rid in [r for _, r in ids] + more + [rare, rare2]:
            await rt.wait(rid)
        pages = _walk(rt, 1, owner=P1, status="failed")
        assert [[rec.id for rec in page] for page in pages] == [[rare], [rare2]]
        everything = _walk(rt, 50)
        flat = [rec.id for page in everything for rec in page]
        assert len(flat) == len(set(flat)) == 307
        assert [rec.seq for page in everything for rec in page] == sorted(
            rec.seq for page in everything for rec in page
        )


async def test_pending_run_is_listed_and_started_later(make_rt: Any) -> None:
    rt = make_rt(max_running=1)
    async with rt:
        first = (await rt.start("workflow:block", {}, owner=P1)).run
        second = (await rt.start("task:job", {"x": 1}, owner=P1)).run
        assert second.status == "pending" and second.last_event_id == 0
        assert [r.id for r in rt.list(status="pending").runs] == [second.id]
        await assert_valid_log(rt, second.id)  # an empty log is a valid prefix
        rt.gates.open()
        assert (await rt.wait(second.id)).status == "completed"
        await wait_until(lambda: rt.list(status="pending").runs == [])
        wire = await assert_valid_log(rt, second.id)
        assert [e["type"] for e in wire] == ["RUN_STARTED", "RUN_FINISHED"]
        await rt.wait(first.id)
