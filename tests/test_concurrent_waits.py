"""Concurrent tasks' waits, patches and raw logs replay whatever the scheduling order (R6,
R7, R24, R37).

Waits opened by a body's concurrent tasks (nursery tasks, ``ctx.lane`` strands, step-graph
parallel and map branches) are numbered per lane, so a signal a task has taken and acted
on is the one it finds again on replay, whichever task reaches its wait first. Keyed
actions a run recorded count as progress for ``ctx.patched`` and ``rt.check``. Body-level
``ctx.log`` calls of concurrent tasks are counted per lane, so a crash neither repeats nor
loses them.

Each test plays a restart: the runtime closes (the state a killed process leaves: what
was not committed is gone) and a new one opens the same directory. Where the order in
which tasks reach a call matters, it is forced with unjournaled ``trio.sleep`` delays that
differ between the two executions, which is legitimate scheduling variation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio
from helpers.checks import wait_until

import perdure
from perdure import ExternalEvent, InvalidInput
from perdure import graph as g
from perdure.testing import internals

P = perdure.Project("p1")


def open_waits(rt: perdure.Runtime, run_id: str) -> list[str]:
    rec = rt.get(run_id)
    return [w.slot for w in rec.waiting.waits] if rec.waiting is not None else []


async def value(v: Any) -> Any:
    return v


# -- 1. waits of concurrent tasks --------------------------------------------------------------


def lanes_waiting(path: Path, delays: dict[str, float], seen: dict[str, Any]) -> perdure.Runtime:
    """Two lanes each wait for ``paid``, then act on the payload with a step."""
    rt = perdure.Runtime(path)

    @rt.workflow("w")
    async def w(ctx: perdure.RunContext, inp: dict) -> dict:
        out: dict[str, Any] = {}

        async def worker(name: str) -> None:
            with ctx.lane(name):
                await trio.sleep(delays[name])  # who reaches the wait first: not journaled
                got = await ctx.wait_for_event("paid")
                seen.setdefault(name, []).append(got)
                out[name] = await ctx.step(f"use-{name}", value, got)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(worker, "a")
            nursery.start_soon(worker, "b")
        return out

    return rt


async def test_lane_waits_keep_their_signals_whatever_order_they_reopen(
    data_dir: Path, autojump_clock: Any
) -> None:
    seen: dict[str, Any] = {}
    # First execution: a waits first, so the first signal answers a, which acts on it.
    async with lanes_waiting(data_dir, {"a": 0.0, "b": 5.0}, seen) as rt:
        run = (await rt.start("workflow:w", {}, owner=P)).run
        await wait_until(lambda: len(open_waits(rt, run.id)) == 2, timeout=60, step=0.5)
        await rt.resume(run.id, ExternalEvent(name="paid", payload="first"))
        await wait_until(lambda: len(open_waits(rt, run.id)) == 1, timeout=60, step=0.5)
        await trio.sleep(1)
        assert seen == {"a": ["first"]}
        # Waits of concurrent tasks carry their lane (the body's own keep reason:key#n).
        assert open_waits(rt, run.id) == ["event@b|paid#1"]
    # The replay reaches b's wait first: b must not take a's signal.
    async with lanes_waiting(data_dir, {"a": 5.0, "b": 0.0}, seen) as rt:
        await trio.sleep(10)
        await rt.resume(run.id, ExternalEvent(name="paid", payload="second"))
        done = await rt.wait(run.id)
    assert done.status == "completed", done.completion
    assert done.completion is not None
    assert done.completion.result == {"a": "first", "b": "second"}
    assert seen == {"a": ["first", "first"], "b": ["second"]}


def mapped(path: Path) -> perdure.Runtime:
    rt = perdure.Runtime(path)
    each = g.wait_event("ev", event="paid")
    rt.graph("m", g.Graph(g.map("m", items=lambda c: [0, 1, 2], each=each)))
    return rt


async def test_a_graph_map_of_event_waits_takes_each_signal_once_across_a_restart(
    data_dir: Path,
) -> None:
    async with mapped(data_dir) as rt:
        run = (await rt.start("workflow:m", {}, owner=P)).run
        await wait_until(lambda: len(open_waits(rt, run.id)) == 3)
        for n in (1, 2):
            await rt.resume(run.id, ExternalEvent(name="paid", payload={"n": n}))
            await wait_until(lambda n=n: len(open_waits(rt, run.id)) == 3 - n)
    async with mapped(data_dir) as rt:
        await rt.resume(run.id, ExternalEvent(name="paid", payload={"n": 3}))
        done = await rt.wait(run.id)
    assert done.completion is not None
    result = done.completion.result["m"]
    assert sorted(item["n"] for item in result) == [1, 2, 3]


async def test_a_lane_wait_claims_an_early_signal_and_keeps_it(
    data_dir: Path, autojump_clock: Any
) -> None:
    seen: list[Any] = []

    def make() -> perdure.Runtime:
        rt = perdure.Runtime(data_dir)

        @rt.workflow("w")
        async def w(ctx: perdure.RunContext, inp: dict) -> Any:
            await ctx.expect("paid", "event")
            await ctx.wait_for_event("go")
            out: dict[str, Any] = {}

            async def worker() -> None:
                with ctx.lane("x"):
                    got = await ctx.wait_for_event("paid")
                    seen.append(got)
                    out["x"] = got
                    await ctx.sleep(100)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(worker)
            return out

        return rt

    async with make() as rt:
        run = (await rt.start("workflow:w", {}, owner=P)).run
        await wait_until(lambda: open_waits(rt, run.id) == ["event:go#1"], timeout=60, step=0.5)
        await rt.resume(run.id, ExternalEvent(name="paid", payload="early"))  # buffered
        await rt.resume(run.id, ExternalEvent(name="go", payload=None))
        await trio.sleep(10)
        assert seen == ["early"]
        kinds = [(e.kind, e.name) for e in internals(rt).store.journal(run.id)]
        assert ("void", "event:paid#1") in kinds and ("signal", "event@x|paid#1") in kinds
    async with make() as rt:
        done = await rt.wait(run.id)
    assert done.completion is not None and done.completion.result == {"x": "early"}
    assert len(seen) >= 2 and set(seen) == {"early"}  # every replay finds it again


# -- 2. patches and the deploy check see concurrent progress ------------------------------------


def laned(path: Path, version: int, side: list[str]) -> perdure.Runtime:
    rt = perdure.Runtime(path)

    @rt.workflow("w")
    async def w(ctx: perdure.RunContext, inp: dict) -> dict:
        took = None
        if version == 2:  # the deploy adds a patch before the nursery
            took = ctx.patched("p")
            if took:
                await ctx.step("new-step", side.append, "new-step")

        async def lane(n: str) -> None:
            with ctx.lane(n):
                await ctx.step(f"a-{n}" if version != 3 else f"A-{n}", value, n)
                await ctx.sleep(100)
                await ctx.step(f"b-{n}", value, n)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(lane, "x")
            nursery.start_soon(lane, "y")
        return {"took_patch": took}

    return rt


async def test_a_run_whose_lanes_recorded_progress_keeps_the_old_branch(
    data_dir: Path, autojump_clock: Any
) -> None:
    side: list[str] = []
    async with laned(data_dir, 1, side) as rt:
        old = (await rt.start("workflow:w", {}, owner=P)).run
        await trio.sleep(10)  # both lanes past their first step, sleeping
    async with laned(data_dir, 2, side) as rt:
        report = await rt.check()
        assert [c.outcome for c in report.runs] == ["ok"], report
        new = (await rt.start("workflow:w", {}, owner=P)).run
        done_old = await rt.wait(old.id)
        done_new = await rt.wait(new.id)
    assert done_old.completion is not None and done_new.completion is not None
    assert done_old.completion.result == {"took_patch": False}
    assert done_new.completion.result == {"took_patch": True}
    assert side == ["new-step"]  # the new run only


async def test_the_check_reports_a_step_renamed_inside_a_lane(
    data_dir: Path, autojump_clock: Any
) -> None:
    async with laned(data_dir, 1, []) as rt:
        await rt.start("workflow:w", {}, owner=P)
        await trio.sleep(10)
    async with laned(data_dir, 1, []) as rt:
        assert [c.outcome for c in (await rt.check()).runs] == ["ok"]
    async with laned(data_dir, 3, []) as rt:
        (found,) = (await rt.check()).runs
    assert found.outcome == "mismatch", found
    assert found.recorded is not None and found.recorded["name"] in ("step:x|a-x#1", "step:y|a-y#1")


async def test_patched_is_refused_in_a_concurrent_task(data_dir: Path) -> None:
    errors: list[BaseException] = []
    rt = perdure.Runtime(data_dir)

    @rt.workflow("w")
    async def w(ctx: perdure.RunContext, inp: dict) -> None:
        async def lane() -> None:
            with ctx.lane("x"):
                try:
                    ctx.patched("p")
                except InvalidInput as exc:
                    errors.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(lane)

    async with rt:
        run = (await rt.start("workflow:w", {}, owner=P)).run
        assert (await rt.wait(run.id)).status == "completed"
    assert len(errors) == 1 and "body's own task" in str(errors[0])


# -- 3. raw logs of concurrent tasks -----------------------------------------------------------


def logging(path: Path, delays: dict[str, float]) -> perdure.Runtime:
    rt = perdure.Runtime(path)

    @rt.workflow("w")
    async def w(ctx: perdure.RunContext, inp: dict) -> None:
        async def lane_a() -> None:
            with ctx.lane("A"):
                await ctx.step("a0", value, 0)
                await trio.sleep(delays["A"])
                ctx.log("A1")
                await ctx.flush()  # committed
                await trio.sleep_forever()

        async def lane_b() -> None:
            with ctx.lane("B"):
                await ctx.step("b0", value, 0)
                await trio.sleep(delays["B"])
                ctx.log("B1")  # queued for the next commit, which never comes
                await trio.sleep_forever()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(lane_a)
            nursery.start_soon(lane_b)

    return rt


def messages(rt: perdure.Runtime, run_id: str) -> list[str]:
    return [e.message for e in rt.logs(run_id).entries]


async def test_concurrent_log_calls_are_neither_repeated_nor_lost_after_a_crash(
    data_dir: Path, autojump_clock: Any
) -> None:
    async with logging(data_dir, {"A": 1.0, "B": 2.0}) as rt:
        run = (await rt.start("workflow:w", {}, owner=P)).run
        await trio.sleep(10)
        assert messages(rt, run.id) == ["A1"]  # B1 was never committed
    # The replay reaches B's call first.
    async with logging(data_dir, {"A": 2.0, "B": 1.0}) as rt:
        await trio.sleep(10)
        await rt.cancel(run.id)  # its commit carries what the replay queued
        await rt.wait(run.id)
        assert messages(rt, run.id) == ["A1", "B1"]
    async with logging(data_dir, {"A": 1.0, "B": 2.0}) as rt:
        assert messages(rt, run.id) == ["A1", "B1"]
        entries = rt.logs(run.id).entries
        assert all("perdure.lanes" not in e.fields for e in entries)
