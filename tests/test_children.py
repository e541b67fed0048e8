"""Child runs (R15, R17): links, journaled starts, results and failures, owned children.

* ``ctx.start_child`` sets ``parent_id`` to the caller and ``root_id`` to the caller's
  root; ``rt.list(root_id=…)`` returns the whole tree and ``rt.list(parent_id=…)`` the
  direct children.
* the start is journaled: replay after a restart (the parent running or waiting) never
  starts a second child.
* ``handle.result()`` returns the child's result or raises ``ChildFailed`` /
  ``ChildCancelled``.
* a parent never ends while a child it owns is still running: a body that returns with
  a child still waiting has that child cancelled first.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio
from helpers.checks import assert_valid_log, wait_until

import perdure
from perdure import ExternalEvent

P = perdure.Project("p1")
C = perdure.Conversation("c1")

pytestmark = pytest.mark.usefixtures("official_agui_check")


# -- definitions ----------------------------------------------------------------------------

COUNTS: dict[str, int] = {}
GATES: dict[str, trio.Event] = {}


def bump(name: str) -> int:
    COUNTS[name] = COUNTS.get(name, 0) + 1
    return COUNTS[name]


@pytest.fixture(autouse=True)
def _reset() -> None:
    COUNTS.clear()
    GATES.clear()


def gate(name: str) -> trio.Event:
    return GATES.setdefault(name, trio.Event())


def make(path: Any, **options: Any) -> perdure.Runtime:
    options.setdefault("durability", "process")
    rt = perdure.Runtime(path, **options)

    @rt.workflow("leaf")
    async def leaf(ctx: perdure.RunContext, inp: dict) -> dict:
        bump(f"leaf:{ctx.run_id}")
        if inp.get("wait"):
            return {"got": await ctx.wait_for_event("go")}
        if inp.get("fail"):
            raise ValueError(inp["fail"])
        if inp.get("busy"):

            async def forever() -> None:
                await trio.sleep_forever()

            await ctx.step("forever", forever)
        return {"leaf": inp.get("v")}

    @rt.workflow("parent")
    async def parent(ctx: perdure.RunContext, inp: dict) -> dict:
        bump(f"parent:{ctx.run_id}")
        handle = await ctx.start_child(inp.get("target", "workflow:leaf"), inp.get("child", {}))
        try:
            result = await handle.result()
        except perdure.ChildFailed as exc:
            return {"failed": exc.code, "detail": exc.detail, "child_id": handle.run_id}
        except perdure.ChildCancelled as exc:
            return {"cancelled": exc.code, "detail": exc.detail, "child_id": handle.run_id}
        return {"result": result, "child_id": handle.run_id}

    @rt.workflow("unhandled")
    async def unhandled(ctx: perdure.RunContext, inp: dict) -> dict:
        handle = await ctx.start_child("workflow:leaf", {"fail": "child broke"})
        return await handle.result()

    @rt.workflow("tree")
    async def tree(ctx: perdure.RunContext, inp: dict) -> dict:
        depth, fanout = inp["depth"], inp["fanout"]
        if depth == 0:
            return {"leaves": 1}
        handles = [
            await ctx.start_child("workflow:tree", {"depth": depth - 1, "fanout": fanout})
            for _ in range(fanout)
        ]
        leaves = 0
        for handle in handles:
            leaves += (await handle.result())["leaves"]
        return {"leaves": leaves}

    @rt.workflow("abandon")
    async def abandon(ctx: perdure.RunContext, inp: dict) -> dict:
        """Starts children that wait forever and returns without awaiting them."""
        child = {"busy": True} if inp.get("busy") else {"wait": True}
        ids = [(await ctx.start_child("workflow:leaf", child)).run_id for _ in range(inp["n"])]
        if inp.get("done"):
            ids.append((await ctx.start_child("workflow:leaf", {"v": 1})).run_id)
        if inp.get("gate"):

            async def hold() -> None:
                await gate(ctx.run_id).wait()

            await ctx.step("hold", hold)
        if inp.get("fail"):
            raise RuntimeError("parent fails")
        return {"children": ids}

    @rt.workflow("journaled")
    async def journaled(ctx: perdure.RunContext, inp: dict) -> dict:
        """Start a child, then block (in a step or on a wait), then await the child."""
        bump(f"body:{ctx.run_id}")
        handle = await ctx.start_child("workflow:leaf", {"wait": True})
        if inp["block"] == "step":

            async def hold() -> str:
                bump(f"hold:{ctx.run_id}")
                await gate("journaled").wait()
                return "held"

            await ctx.step("hold", hold)
        else:
            await ctx.wait_for_event("parent_go")
        return {"child": await handle.result(), "child_id": handle.run_id}

    @rt.workflow("in_step")
    async def in_step(ctx: perdure.RunContext, inp: dict) -> str:
        async def start() -> None:
            await ctx.start_child("workflow:leaf", {})

        try:
            await ctx.step("start", start)
        except perdure.PerdureError as exc:
            return exc.code
        return "started"

    @rt.task("job")
    async def job(ctx: perdure.RunContext, inp: dict) -> dict:
        return {"job": inp}

    @rt.agent("delegate")
    async def delegate(ctx: perdure.AgentContext, inp: perdure.AgentInput) -> None:
        """An agent starting a task owned by a project, and refused a wrong owner kind."""
        handle = await ctx.start_child("task:job", {"x": 1}, owner=P)
        result = await handle.result()
        try:
            await ctx.start_child("task:job", {"x": 2})  # owner defaults to the conversation
        except perdure.PerdureError as exc:
            await ctx.custom("refused", {"code": exc.code})
        await ctx.say(json.dumps(result))

    return rt


def parent_run_ids(wire: list[dict[str, Any]]) -> list[Any]:
    return [e.get("parentRunId") for e in wire if e["type"] == "RUN_STARTED"]


# -- links and listing ---------------------------------------------------------------------


async def test_child_links_result_and_log(data_dir: Path) -> None:
    rt = make(data_dir)
    async with rt:
        parent = (await rt.start("workflow:parent", {"child": {"v": 7}}, owner=P)).run
        done = await rt.wait(parent.id)
        assert done.status == "completed"
        child_id = done.completion.result["child_id"]
        assert done.completion.result["result"] == {"leaf": 7}
        child = rt.get(child_id)
        assert child.parent_id == parent.id
        assert child.root_id == parent.id
        assert child.owner == P
        assert child.trigger.type == "child" and child.trigger.ref == parent.id
        assert done.parent_id is None and done.root_id == parent.id
        assert [r.id for r in rt.list(parent_id=parent.id).runs] == [child_id]
        assert {r.id for r in rt.list(root_id=parent.id).runs} == {parent.id, child_id}
        child_wire = await assert_valid_log(rt, child_id)
        assert parent_run_ids(child_wire) == [parent.id]
        assert all(
            e["threadId"] == parent.id
            for e in child_wire
            if e["type"] in ("RUN_STARTED", "RUN_FINISHED")
        )
        assert parent_run_ids(await assert_valid_log(rt, parent.id)) == [None]
        assert done.finished_at >= child.finished_at


async def test_list_by_root_returns_the_whole_tree(data_dir: Path) -> None:
    rt = make(data_dir)
    async with rt:
        root = (await rt.start("workflow:tree", {"depth": 3, "fanout": 3}, owner=P)).run
        done = await rt.wait(root.id)
        assert done.completion.result == {"leaves": 27}
        tree = rt.list(root_id=root.id, limit=1000).runs
        assert len(tree) == 1 + 3 + 9 + 27
        by_id = {r.id: r for r in tree}
        assert all(r.root_id == root.id for r in tree)
        assert all(r.status == "completed" for r in tree)
        depth = {root.id: 0}
        for rec in sorted(tree, key=lambda r: r.seq):
            if rec.id == root.id:
                assert rec.parent_id is None
                continue
            assert rec.parent_id in by_id
            depth[rec.id] = depth[rec.parent_id] + 1
            assert rec.input["depth"] == 3 - depth[rec.id]
            assert by_id[rec.parent_id].finished_at >= rec.finished_at
        for rec in tree:
            children = rt.list(parent_id=rec.id).runs
            assert all(c.parent_id == rec.id for c in children)
            assert len(children) == (0 if rec.input["depth"] == 0 else 3)
        # Paging through a tree returns each run once.
        seen: list[str] = []
        cursor = None
        while True:
            page = rt.list(root_id=root.id, limit=7, after=cursor)
            seen.extend(r.id for r in page.runs)
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        assert sorted(seen) == sorted(by_id)
        # Another tree is not mixed in.
        other = (await rt.start("workflow:tree", {"depth": 1, "fanout": 2}, owner=P)).run
        await rt.wait(other.id)
        assert len(rt.list(root_id=other.id).runs) == 3
        assert len(rt.list(root_id=root.id, limit=1000).runs) == 40


async def test_children_are_admitted_beyond_max_running(data_dir: Path) -> None:
    rt = make(data_dir, max_running=1)
    async with rt:
        root = (await rt.start("workflow:tree", {"depth": 2, "fanout": 3}, owner=P)).run
        second = (await rt.start("workflow:tree", {"depth": 1, "fanout": 2}, owner=P)).run
        with trio.fail_after(10):
            assert (await rt.wait(root.id)).completion.result == {"leaves": 9}
            assert (await rt.wait(second.id)).completion.result == {"leaves": 2}


async def test_agent_child_with_another_owner(data_dir: Path) -> None:
    rt = make(data_dir)
    async with rt:
        agent = (await rt.start("agent:delegate", {"messages": []}, owner=C)).run
        done = await rt.wait(agent.id)
        assert done.status == "completed", done.completion
        [child] = rt.list(parent_id=agent.id).runs
        assert child.kind == "job" and child.owner == P and child.root_id == agent.id
        wire = await assert_valid_log(rt, agent.id)
        refused = [
            e["value"]["code"] for e in wire if e["type"] == "CUSTOM" and e["name"] == "refused"
        ]
        assert refused == ["INVALID_INPUT"]
        assert '{"job": {"x": 1}}' in [e.get("delta") for e in wire]
        assert parent_run_ids(await assert_valid_log(rt, child.id)) == [agent.id]


async def test_start_child_inside_a_step_is_refused(data_dir: Path) -> None:
    rt = make(data_dir)
    async with rt:
        run = (await rt.start("workflow:in_step", {}, owner=P)).run
        done = await rt.wait(run.id)
        assert done.completion.result in ("INVALID_INPUT", "STEP_FAILED")
        assert rt.list(parent_id=run.id).runs == []


# -- results and failures -----------------------------------------------------------------


async def test_child_failed_surfaces_in_the_parent(data_dir: Path) -> None:
    rt = make(data_dir)
    async with rt:
        parent = (await rt.start("workflow:parent", {"child": {"fail": "no disk"}}, owner=P)).run
        done = await rt.wait(parent.id)
        assert done.status == "completed"
        result = done.completion.result
        assert result["failed"] == "CHILD_FAILED"
        assert result["detail"]["run_id"] == result["child_id"]
        assert result["detail"]["error"]["code"] == "UNHANDLED_EXCEPTION"
        assert "no disk" in result["detail"]["error"]["message"]
        assert rt.get(result["child_id"]).status == "failed"


async def test_unhandled_child_failure_fails_the_parent(data_dir: Path) -> None:
    rt = make(data_dir)
    async with rt:
        parent = (await rt.start("workflow:unhandled", {}, owner=P)).run
        done = await rt.wait(parent.id)
        assert done.status == "failed"
        assert done.completion.error.code == "CHILD_FAILED"
        assert "child broke" in done.completion.error.message
        wire = await assert_valid_log(rt, parent.id)
        assert wire[-1]["type"] == "RUN_ERROR" and wire[-1]["code"] == "CHILD_FAILED"


async def test_child_cancelled_surfaces_in_the_parent(data_dir: Path) -> None:
    rt = make(data_dir)
    async with rt:
        parent = (await rt.start("workflow:parent", {"child": {"wait": True}}, owner=P)).run
        await wait_until(lambda: len(rt.list(parent_id=parent.id).runs) == 1, what="child started")
        [child] = rt.list(parent_id=parent.id).runs
        await wait_until(lambda: rt.get(child.id).status == "waiting", what="child waiting")
        assert rt.get(parent.id).status == "running"  # awaiting a child is not a wait
        cancelled = await rt.cancel(child.id, "not needed")
        assert cancelled.cancelled and cancelled.run.status == "cancelled"
        done = await rt.wait(parent.id)
        assert done.status == "completed"
        assert done.completion.result["cancelled"] == "CHILD_CANCELLED"
        assert done.completion.result["detail"]["run_id"] == child.id
        assert rt.get(child.id).cancel.reason == "not needed"


async def test_child_signal_then_result(data_dir: Path) -> None:
    rt = make(data_dir)
    async with rt:
        parent = (await rt.start("workflow:parent", {"child": {"wait": True}}, owner=P)).run
        await wait_until(lambda: len(rt.list(parent_id=parent.id).runs) == 1, what="child started")
        [child] = rt.list(parent_id=parent.id).runs
        await wait_until(lambda: rt.get(child.id).status == "waiting", what="child waiting")
        # A parent does not take its child's signals.
        with pytest.raises(perdure.NotWaiting):
            await rt.resume(parent.id, ExternalEvent(name="go", payload=1))
        assert await rt.publish(ExternalEvent(name="go", payload="hi"), owner=P) == [child.id]
        done = await rt.wait(parent.id)
        assert done.completion.result["result"] == {"got": "hi"}


# -- a parent never ends before its children (R15) ---------------------------------------------


async def test_parent_returning_early_cancels_its_waiting_children_first(data_dir: Path) -> None:
    rt = make(data_dir)
    async with rt:
        parent = (await rt.start("workflow:abandon", {"n": 3, "done": True}, owner=P)).run
        done = await rt.wait(parent.id)
        assert done.status == "completed"
        ids = done.completion.result["children"]
        children = [rt.get(i) for i in ids]
        assert [c.status for c in children] == ["cancelled", "cancelled", "cancelled", "completed"]
        for child in children:
            assert child.finished_at is not None and child.finished_at <= done.finished_at
            assert (await assert_valid_log(rt, child.id))[-1]["type"] == "RUN_FINISHED"
        assert all("parent run completed" in c.cancel.reason for c in children[:3])
        assert rt.list(root_id=parent.id, status=["running", "waiting", "pending"]).runs == []


async def test_parent_returning_early_cancels_its_running_children_first(data_dir: Path) -> None:
    rt = make(data_dir, cancel_grace=0.2)
    async with rt:
        parent = (
            await rt.start("workflow:abandon", {"n": 2, "busy": True, "gate": True}, owner=P)
        ).run
        await wait_until(lambda: len(rt.list(parent_id=parent.id).runs) == 2, what="children")
        await wait_until(
            lambda: all(
                r.status == "running" and r.started_at for r in rt.list(parent_id=parent.id).runs
            )
        )
        gate(parent.id).set()
        done = await rt.wait(parent.id)
        assert done.status == "completed"
        kids = rt.list(parent_id=parent.id).runs
        assert [k.status for k in kids] == ["cancelled", "cancelled"]
        assert all(k.finished_at <= done.finished_at for k in kids)


async def test_parent_failing_cancels_its_children_first(data_dir: Path) -> None:
    rt = make(data_dir)
    async with rt:
        parent = (await rt.start("workflow:abandon", {"n": 2, "fail": True}, owner=P)).run
        done = await rt.wait(parent.id)
        assert done.status == "failed"
        kids = rt.list(parent_id=parent.id).runs
        assert len(kids) == 2 and all(k.status == "cancelled" for k in kids)
        assert all(k.finished_at <= done.finished_at for k in kids)


async def test_parent_never_observed_terminal_with_live_children(data_dir: Path) -> None:
    """Watch the records while the parent ends: never a terminal parent with a live child."""
    rt = make(data_dir)
    async with rt:
        parent = (await rt.start("workflow:abandon", {"n": 5, "gate": True}, owner=P)).run
        await wait_until(lambda: len(rt.list(parent_id=parent.id).runs) == 5, what="children")
        await wait_until(
            lambda: all(r.status == "waiting" for r in rt.list(parent_id=parent.id).runs),
            what="children waiting",
        )
        violations: list[str] = []

        async def watch() -> None:
            while True:
                rec = rt.get(parent.id)
                live = [r.id for r in rt.list(parent_id=parent.id).runs if not r.terminal]
                if rec.terminal and live:
                    violations.append(f"{rec.status} with live {live}")
                if rec.terminal:
                    return
                await trio.sleep(0)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            gate(parent.id).set()
        assert violations == []


# -- journaled start (R17) ------------------------------------------------------------------------


@pytest.mark.parametrize("block", ["step", "wait"])
async def test_start_child_is_journaled_across_a_restart(data_dir: Path, block: str) -> None:
    rt = make(data_dir)
    async with rt:
        parent = (await rt.start("workflow:journaled", {"block": block}, owner=P)).run
        await wait_until(lambda: len(rt.list(parent_id=parent.id).runs) == 1, what="child started")
        if block == "step":
            await wait_until(
                lambda: COUNTS.get(f"hold:{parent.id}") == 1, what="parent in its step"
            )
        else:
            await wait_until(lambda: rt.get(parent.id).status == "waiting", what="parent waiting")
        [child] = rt.list(parent_id=parent.id).runs
        await wait_until(lambda: rt.get(child.id).status == "waiting", what="child waiting")
    assert COUNTS[f"body:{parent.id}"] == 1
    rt2 = make(data_dir)
    async with rt2:
        if block == "step":
            assert rt2.recovered["running"] == 1
            await wait_until(lambda: COUNTS[f"body:{parent.id}"] == 2, what="parent replayed")
            gate("journaled").set()
        else:
            assert rt2.recovered["waiting"] == 2
            await rt2.resume(parent.id, ExternalEvent(name="parent_go"))
        await wait_until(lambda: COUNTS[f"body:{parent.id}"] == 2, what="parent replayed")
        assert [r.id for r in rt2.list(parent_id=parent.id).runs] == [child.id]
        await wait_until(lambda: rt2.get(parent.id).status == "running", what="parent running")
        await rt2.resume(child.id, ExternalEvent(name="go", payload="after restart"))
        done = await rt2.wait(parent.id)
        assert done.completion.result == {"child": {"got": "after restart"}, "child_id": child.id}
        assert [r.id for r in rt2.list(parent_id=parent.id).runs] == [child.id]
        assert len(rt2.list(root_id=parent.id).runs) == 2
        assert COUNTS[f"leaf:{child.id}"] == 2  # once, then once replayed by its signal


async def test_child_ids_are_deterministic(data_dir: Path) -> None:
    """The child id derives from the parent id and journal position: same tree on replay."""
    rt = make(data_dir)
    async with rt:
        a = (
            await rt.start("workflow:tree", {"depth": 1, "fanout": 2}, owner=P, run_id="same-root")
        ).run
        await rt.wait(a.id)
        ids = sorted(r.id for r in rt.list(parent_id="same-root").runs)
    rt2 = make(data_dir.parent / "other")
    async with rt2:
        await rt2.start("workflow:tree", {"depth": 1, "fanout": 2}, owner=P, run_id="same-root")
        await rt2.wait("same-root")
        assert sorted(r.id for r in rt2.list(parent_id="same-root").runs) == ids
