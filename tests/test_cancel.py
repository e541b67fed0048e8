"""Cancellation (R15, R16): pending, running, waiting and terminal runs, and whole trees.

* a pending or waiting run is cancelled at once; a running body gets trio cancellation at
  its next await (here: inside a step blocked on ``trio.sleep_forever``);
* shielded cleanup (``trio.CancelScope(shield=True)``) runs within ``cancel_grace``; a
  body that shields for longer is abandoned and the run still ends ``cancelled``;
* cancelling a terminal run changes nothing and answers ``cancelled=False``;
* cancelling a root cancels every descendant first, deepest first (a parent's
  ``finished_at`` is never before any child's), here on a tree of 1,011 runs;
* the log of a run cancelled while waiting is valid AG-UI: ``RUN_FINISHED`` (interrupt),
  then ``RUN_STARTED`` and ``RUN_FINISHED`` (cancelled).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
from helpers.checks import assert_valid_log, dump_store, read_log, types, wait_until
from helpers.official_verifier import node_verify

import perdure
from perdure import ExternalEvent
from perdure.agui import verify_prefixes
from perdure.testing import internals

P = perdure.Project("p1")

pytestmark = pytest.mark.usefixtures("official_agui_check")


# -- definitions ----------------------------------------------------------------------------

EVENTS: list[tuple[str, str]] = []
ENTERED: dict[str, trio.Event] = {}


@pytest.fixture(autouse=True)
def _reset() -> None:
    EVENTS.clear()
    ENTERED.clear()


def entered(run_id: str) -> trio.Event:
    return ENTERED.setdefault(run_id, trio.Event())


def make(path: Any, **options: Any) -> perdure.Runtime:
    options.setdefault("durability", "process")
    rt = perdure.Runtime(path, **options)

    @rt.workflow("stuck")
    async def stuck(ctx: perdure.RunContext, inp: dict) -> dict:
        """A step blocked forever; optional shielded cleanup of ``cleanup`` seconds."""
        EVENTS.append((ctx.run_id, "body"))

        async def forever() -> None:
            EVENTS.append((ctx.run_id, "step"))
            entered(ctx.run_id).set()
            try:
                await trio.sleep_forever()
            except trio.Cancelled:
                EVENTS.append((ctx.run_id, "step cancelled"))
                raise

        try:
            await ctx.step("forever", forever)
        finally:
            if inp.get("cleanup") is not None:
                with trio.CancelScope(shield=True):
                    await trio.sleep(inp["cleanup"])
                    EVENTS.append((ctx.run_id, "cleaned"))
                    if inp.get("emit"):
                        await ctx.custom("cleaned", {"after": inp["cleanup"]})
        return {"unreachable": True}

    @rt.workflow("waiter")
    async def waiter(ctx: perdure.RunContext, inp: dict) -> dict:
        EVENTS.append((ctx.run_id, "body"))
        return {"got": await ctx.wait_for_event("never")}

    @rt.workflow("sleeper")
    async def sleeper(ctx: perdure.RunContext, inp: dict) -> dict:
        EVENTS.append((ctx.run_id, "body"))
        await ctx.sleep(inp["seconds"])
        return {"slept": True}

    @rt.workflow("quick")
    async def quick(ctx: perdure.RunContext, inp: dict) -> dict:
        if inp.get("fail"):
            raise ValueError("failed on purpose")
        return {"ok": True}

    @rt.workflow("node")
    async def node(ctx: perdure.RunContext, inp: dict) -> dict:
        """Start ``fanout[0]`` children (each with the rest of the fan-out), then wait forever."""
        fanout = inp["fanout"]
        if fanout:
            for _ in range(fanout[0]):
                await ctx.start_child("workflow:node", {"fanout": fanout[1:]})
        return {"got": await ctx.wait_for_event("never")}

    @rt.workflow("awaits_child")
    async def awaits_child(ctx: perdure.RunContext, inp: dict) -> dict:
        handle = await ctx.start_child("workflow:waiter", {})
        return await handle.result()

    return rt


async def all_runs(rt: perdure.Runtime, **filters: Any) -> list[perdure.RunRecord]:
    runs: list[perdure.RunRecord] = []
    cursor = None
    while True:
        page = rt.list(limit=1000, after=cursor, **filters)
        runs.extend(page.runs)
        if page.next_cursor is None:
            return runs
        cursor = page.next_cursor


def cancelled_outcome(wire: list[dict[str, Any]]) -> None:
    assert wire[-1]["type"] == "RUN_FINISHED"
    assert wire[-1]["outcome"] == {"type": "cancelled"}


# -- pending, running, waiting, terminal -------------------------------------------------------


async def test_cancel_pending_run(data_dir: Path) -> None:
    rt = make(data_dir, max_running=1)
    async with rt:
        first = (await rt.start("workflow:stuck", {}, owner=P)).run
        second = (await rt.start("workflow:quick", {}, owner=P)).run
        assert rt.get(second.id).status == "pending"
        result = await rt.cancel(second.id, "not today")
        assert result.cancelled is True
        assert result.run.status == "cancelled"
        assert result.run.cancel.reason == "not today"
        assert result.run.completion.status == "cancelled"
        assert result.run.started_at is None or result.run.started_at <= result.run.finished_at
        wire = await assert_valid_log(rt, second.id)
        assert types(wire) == ["RUN_STARTED", "RUN_FINISHED"]
        cancelled_outcome(wire)
        # Freeing the slot does not start the cancelled run.
        await entered(first.id).wait()
        await rt.cancel(first.id)
        third = (await rt.start("workflow:quick", {}, owner=P)).run
        assert (await rt.wait(third.id)).status == "completed"
        assert rt.get(second.id).status == "cancelled"
        assert (await rt.cancel(second.id)).cancelled is False


async def test_cancel_running_run_mid_step(data_dir: Path) -> None:
    rt = make(data_dir)
    async with rt:
        run = (await rt.start("workflow:stuck", {}, owner=P)).run
        await entered(run.id).wait()
        assert rt.get(run.id).status == "running"
        with trio.fail_after(5):
            result = await rt.cancel(run.id, "user")
        assert result.cancelled is True
        assert result.run.status == "cancelled"
        assert result.run.cancel.reason == "user"
        assert result.run.completion.result is None and result.run.completion.error is None
        assert (run.id, "step cancelled") in EVENTS
        wire = await assert_valid_log(rt, run.id)
        # The step's own events commit with its result; a cancelled attempt may leave none.
        assert types(wire) in (
            ["RUN_STARTED", "RUN_FINISHED"],
            ["RUN_STARTED", "STEP_STARTED", "STEP_FINISHED", "RUN_FINISHED"],
        )
        cancelled_outcome(wire)
        await wait_until(lambda: len(internals(rt).supervisor) == 0, what="actor stopped")


async def test_shielded_cleanup_runs_within_the_grace_period(
    data_dir: Path, autojump_clock: Any
) -> None:
    rt = make(data_dir, cancel_grace=1.0)
    async with rt:
        run = (await rt.start("workflow:stuck", {"cleanup": 0.5, "emit": True}, owner=P)).run
        await entered(run.id).wait()
        t0 = trio.current_time()
        result = await rt.cancel(run.id)
        elapsed = trio.current_time() - t0
        assert 0.5 <= elapsed < 1.0
        assert result.cancelled and result.run.status == "cancelled"
        assert (run.id, "cleaned") in EVENTS
        wire = await assert_valid_log(rt, run.id)
        names = [e.get("name") for e in wire if e["type"] == "CUSTOM"]
        assert names == ["cleaned"]
        assert types(wire)[-2:] == ["CUSTOM", "RUN_FINISHED"]
        cancelled_outcome(wire)


async def test_body_shielding_past_the_grace_period_is_abandoned(
    data_dir: Path, autojump_clock: Any
) -> None:
    rt = make(data_dir, cancel_grace=1.0)
    async with rt:
        run = (await rt.start("workflow:stuck", {"cleanup": 30.0}, owner=P)).run
        await entered(run.id).wait()
        t0 = trio.current_time()
        result = await rt.cancel(run.id)
        elapsed = trio.current_time() - t0
        assert 1.0 <= elapsed < 2.0
        assert result.cancelled and result.run.status == "cancelled"
        assert (run.id, "cleaned") not in EVENTS
        final = await assert_valid_log(rt, run.id)
        cancelled_outcome(final)
        await trio.sleep(60)  # the abandoned cleanup finishes in the background
        assert (run.id, "cleaned") in EVENTS
        assert await assert_valid_log(rt, run.id) == final


async def test_abandoned_body_cannot_write_after_the_terminal_event(
    data_dir: Path, autojump_clock: Any
) -> None:
    rt = make(data_dir, cancel_grace=1.0)
    async with rt:
        run = (await rt.start("workflow:stuck", {"cleanup": 30.0, "emit": True}, owner=P)).run
        await entered(run.id).wait()
        result = await rt.cancel(run.id)
        assert result.run.status == "cancelled"
        final = await read_log(rt, run.id)
        await trio.sleep(60)
        assert (run.id, "cleaned") in EVENTS
        after = await read_log(rt, run.id)
        assert [e.to_wire() for e in after] == [e.to_wire() for e in final]
        assert rt.get(run.id).last_event_id == len(final)
        assert rt.get(run.id).status == "cancelled"


async def test_cancel_waiting_run(data_dir: Path) -> None:
    rt = make(data_dir)
    async with rt:
        run = (await rt.start("workflow:waiter", {}, owner=P)).run
        await wait_until(lambda: rt.get(run.id).status == "waiting", what="waiting")
        result = await rt.cancel(run.id, "no longer needed")
        assert result.cancelled and result.run.status == "cancelled"
        assert result.run.waiting is None
        wire = await assert_valid_log(rt, run.id)
        assert types(wire) == ["RUN_STARTED", "RUN_FINISHED", "RUN_STARTED", "RUN_FINISHED"]
        assert wire[1]["outcome"]["type"] == "interrupt"
        cancelled_outcome(wire)
        verify_prefixes(wire)
        verdict = node_verify([wire])
        if verdict is not None:
            assert verdict == [{"ok": True}]
        with pytest.raises(perdure.RunNotActive):
            await rt.resume(run.id, ExternalEvent(name="never"))


async def test_cancel_passivated_waiting_run(data_dir: Path, autojump_clock: Any) -> None:
    rt = make(data_dir, passivate_after=5.0)
    async with rt:
        run = (await rt.start("workflow:waiter", {}, owner=P)).run
        await wait_until(lambda: rt.get(run.id).status == "waiting", what="waiting")
        await trio.sleep(10)
        assert len(internals(rt).supervisor) == 0
        result = await rt.cancel(run.id)
        assert result.cancelled and result.run.status == "cancelled"
        # Cancelled from the durable record alone: the body was not replayed.
        assert EVENTS.count((run.id, "body")) == 1
        cancelled_outcome(await assert_valid_log(rt, run.id))
        await wait_until(lambda: len(internals(rt).supervisor) == 0, what="actor stopped")


async def test_cancel_waiting_run_after_a_restart(data_dir: Path) -> None:
    rt = make(data_dir)
    async with rt:
        run = (await rt.start("workflow:waiter", {}, owner=P)).run
        await wait_until(lambda: rt.get(run.id).status == "waiting", what="waiting")
    rt2 = make(data_dir)
    async with rt2:
        assert rt2.recovered["waiting"] == 1
        result = await rt2.cancel(run.id)
        assert result.cancelled and result.run.status == "cancelled"
        cancelled_outcome(await assert_valid_log(rt2, run.id))


async def test_cancel_sleeping_runs(data_dir: Path, autojump_clock: Any) -> None:
    rt = make(data_dir, passivate_after=60.0)
    async with rt:
        short = (await rt.start("workflow:sleeper", {"seconds": 10}, owner=P)).run
        long = (await rt.start("workflow:sleeper", {"seconds": 3600}, owner=P)).run
        await wait_until(
            lambda: rt.get(long.id).journal_len == 1 and rt.get(short.id).journal_len == 1
        )
        assert internals(rt).supervisor.get(long.id) is None  # passivated until its timer
        for run_id in (short.id, long.id):
            result = await rt.cancel(run_id)
            assert result.cancelled and result.run.status == "cancelled"
        await trio.sleep(4000)  # their timers do not revive them
        for run_id in (short.id, long.id):
            assert rt.get(run_id).status == "cancelled"
            cancelled_outcome(await assert_valid_log(rt, run_id))
        assert len(internals(rt).supervisor) == 0


@pytest.mark.parametrize("outcome", ["completed", "failed", "cancelled"])
async def test_cancel_terminal_run_is_a_no_op(data_dir: Path, outcome: str) -> None:
    rt = make(data_dir)
    async with rt:
        if outcome == "cancelled":
            run = (await rt.start("workflow:waiter", {}, owner=P)).run
            await wait_until(lambda: rt.get(run.id).status == "waiting")
            await rt.cancel(run.id, "first")
        else:
            run = (await rt.start("workflow:quick", {"fail": outcome == "failed"}, owner=P)).run
        rec = await rt.wait(run.id)
        assert rec.status == outcome
        before = dump_store(internals(rt).store)
        result = await rt.cancel(run.id, "again")
        assert result.cancelled is False
        assert result.run == rec
        assert dump_store(internals(rt).store) == before
        if outcome == "cancelled":
            assert rt.get(run.id).cancel.reason == "first"


async def test_cancel_argument_errors(data_dir: Path) -> None:
    rt = make(data_dir)
    async with rt:
        with pytest.raises(perdure.RunNotFound):
            await rt.cancel("no-such-run")
        run = (await rt.start("workflow:waiter", {}, owner=P)).run
        with pytest.raises(perdure.InvalidInput):
            await rt.cancel(run.id, reason=5)  # type: ignore[arg-type]
        await wait_until(lambda: rt.get(run.id).status == "waiting")
        # A very long reason is stored truncated, not refused.
        result = await rt.cancel(run.id, "x" * 5000)
        assert result.cancelled and len(result.run.cancel.reason) <= 1000


async def test_concurrent_cancels_of_one_run(data_dir: Path) -> None:
    rt = make(data_dir)
    async with rt:
        for target in ("workflow:waiter", "workflow:stuck"):
            run = (await rt.start(target, {}, owner=P)).run
            if target == "workflow:stuck":
                await entered(run.id).wait()
            else:
                await wait_until(lambda run_id=run.id: rt.get(run_id).status == "waiting")
            results: list[perdure.Cancelled] = []

            async def cancel(run_id: str = run.id) -> None:
                results.append(await rt.cancel(run_id, "race"))

            async with trio.open_nursery() as nursery:
                for _ in range(5):
                    nursery.start_soon(cancel)
            assert [r.run.status for r in results] == ["cancelled"] * 5
            assert sum(r.cancelled for r in results) == 1, [r.cancelled for r in results]
            cancelled_outcome(await assert_valid_log(rt, run.id))


@pytest.mark.parametrize("passivate_after", [60.0, 0.001])
async def test_cancel_racing_a_resume(data_dir: Path, passivate_after: float) -> None:
    """A signal and a cancellation racing for a waiting run: one consistent outcome, valid log."""
    rt = make(data_dir, passivate_after=passivate_after)
    outcomes = set()
    async with rt:
        for i in range(20):
            run = (await rt.start("workflow:waiter", {}, owner=P)).run
            await wait_until(lambda r=run.id: rt.get(r).status == "waiting", what="waiting")
            box: dict[str, Any] = {}

            async def resume(run_id: str = run.id) -> None:
                try:
                    box["resume"] = await rt.resume(run_id, ExternalEvent(name="never", payload=1))
                except perdure.RunNotActive as exc:
                    box["resume"] = exc

            async def cancel(run_id: str = run.id) -> None:
                box["cancel"] = await rt.cancel(run_id)

            await trio.sleep(0.002 * (i % 3))
            async with trio.open_nursery() as nursery:
                if i % 2:
                    nursery.start_soon(resume)
                    nursery.start_soon(cancel)
                else:
                    nursery.start_soon(cancel)
                    nursery.start_soon(resume)
            with trio.fail_after(10):
                rec = await rt.wait(run.id)
            if isinstance(box["resume"], perdure.RunNotActive):
                assert rec.status == "cancelled" and box["cancel"].cancelled
            elif rec.status == "completed":
                assert box["cancel"].cancelled is False
                assert rec.completion.result == {"got": 1}
            else:
                # Signal taken, then the run was cancelled before its body finished.
                assert rec.status == "cancelled" and box["cancel"].cancelled
            outcomes.add((type(box["resume"]).__name__, rec.status))
            await assert_valid_log(rt, run.id)
    assert outcomes


# -- trees ------------------------------------------------------------------------------------------


async def test_cancelling_a_parent_cancels_its_waiting_children_first(data_dir: Path) -> None:
    rt = make(data_dir)
    async with rt:
        parent = (await rt.start("workflow:node", {"fanout": [2]}, owner=P)).run
        await wait_until(
            lambda: len(rt.list(root_id=parent.id, status="waiting").runs) == 3, what="tree"
        )
        result = await rt.cancel(parent.id, "stop all")
        assert result.cancelled and result.run.status == "cancelled"
        children = rt.list(parent_id=parent.id).runs
        assert [c.status for c in children] == ["cancelled", "cancelled"]
        for child in children:
            assert child.cancel.reason == "stop all"
            assert child.finished_at <= result.run.finished_at
            cancelled_outcome(await assert_valid_log(rt, child.id))
        cancelled_outcome(await assert_valid_log(rt, parent.id))


async def test_cancelling_a_parent_awaiting_its_child(data_dir: Path) -> None:
    rt = make(data_dir)
    async with rt:
        for _ in range(5):
            parent = (await rt.start("workflow:awaits_child", {}, owner=P)).run
            await wait_until(lambda p=parent.id: len(rt.list(parent_id=p).runs) == 1, what="child")
            [child] = rt.list(parent_id=parent.id).runs
            await wait_until(lambda c=child.id: rt.get(c).status == "waiting", what="child waiting")
            result = await rt.cancel(parent.id, "stop all")
            child = rt.get(child.id)
            assert child.status == "cancelled"
            assert child.finished_at <= result.run.finished_at
            assert result.cancelled
            assert result.run.status == "cancelled", result.run.completion


async def test_cancelling_a_subtree_leaves_the_rest(data_dir: Path) -> None:
    rt = make(data_dir)
    async with rt:
        root = (await rt.start("workflow:node", {"fanout": [3, 2]}, owner=P)).run
        await wait_until(
            lambda: len(rt.list(root_id=root.id, status="waiting").runs) == 1 + 3 + 6,
            what="tree waiting",
        )
        middle = rt.list(parent_id=root.id).runs[1]
        await rt.cancel(middle.id)
        runs = await all_runs(rt, root_id=root.id)
        cancelled = {r.id for r in runs if r.status == "cancelled"}
        below = {middle.id} | {r.id for r in rt.list(parent_id=middle.id).runs}
        assert cancelled == below and len(below) == 3
        assert all(r.status == "waiting" for r in runs if r.id not in below)
        result = await rt.cancel(root.id)
        assert result.cancelled
        assert {r.status for r in await all_runs(rt, root_id=root.id)} == {"cancelled"}


async def test_cancel_a_passivated_tree(data_dir: Path, autojump_clock: Any) -> None:
    """Every run of the tree is passive (no actor); cancelling the root still reaches them all."""
    rt = make(data_dir, passivate_after=1.0)
    async with rt:
        root = (await rt.start("workflow:node", {"fanout": [3, 3, 2]}, owner=P)).run
        total = 1 + 3 + 9 + 18
        await wait_until(
            lambda: len(rt.list(root_id=root.id, status="waiting").runs) == total,
            what="tree waiting",
        )
        await trio.sleep(5)
        assert len(internals(rt).supervisor) == 0
        result = await rt.cancel(root.id)
        assert result.cancelled
        tree = await all_runs(rt, root_id=root.id)
        assert len(tree) == total and {r.status for r in tree} == {"cancelled"}
        by_id = {r.id: r for r in tree}
        for rec in tree:
            if rec.parent_id is not None:
                assert by_id[rec.parent_id].finished_at >= rec.finished_at
        await wait_until(lambda: len(internals(rt).supervisor) == 0, what="actors stopped")


async def test_cancel_a_tree_of_a_thousand_runs(data_dir: Path) -> None:
    rt = make(data_dir, durability="memory")
    async with rt:
        root = (await rt.start("workflow:node", {"fanout": [10, 10, 9]}, owner=P)).run
        total = 1 + 10 + 100 + 900

        async def count_waiting() -> int:
            return len(await all_runs(rt, root_id=root.id, status="waiting"))

        with trio.fail_after(30):
            while await count_waiting() < total:
                await trio.sleep(0.05)
        tree = await all_runs(rt, root_id=root.id)
        assert len(tree) == total
        with trio.fail_after(30):
            result = await rt.cancel(root.id, "tear down")
        assert result.cancelled and result.run.status == "cancelled"
        # Done when cancel() returns: no descendant is left non-terminal.
        tree = await all_runs(rt, root_id=root.id)
        assert len(tree) == total
        assert {r.status for r in tree} == {"cancelled"}
        assert all(r.cancel is not None and r.cancel.reason == "tear down" for r in tree)
        by_id = {r.id: r for r in tree}
        for rec in tree:
            if rec.parent_id is not None:
                assert by_id[rec.parent_id].finished_at >= rec.finished_at, (rec.parent_id, rec.id)
        depth: dict[str, int] = {}

        def depth_of(rec: perdure.RunRecord) -> int:
            if rec.id not in depth:
                depth[rec.id] = 0 if rec.parent_id is None else depth_of(by_id[rec.parent_id]) + 1
            return depth[rec.id]

        assert sorted({depth_of(r) for r in tree}) == [0, 1, 2, 3]
        # Deepest first across the tree: every level ended no earlier than the level below.
        last_by_depth = {d: max(r.finished_at for r in tree if depth_of(r) == d) for d in range(4)}
        first_by_depth = {d: min(r.finished_at for r in tree if depth_of(r) == d) for d in range(4)}
        assert first_by_depth[0] >= last_by_depth[1]
        for sample in [root.id, *[r.id for r in tree[:: max(1, total // 25)]]]:
            cancelled_outcome(await assert_valid_log(rt, sample))
        await wait_until(
            lambda: len(internals(rt).supervisor) == 0, timeout=10, what="every actor stopped"
        )
