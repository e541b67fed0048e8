"""Concurrent steps in code bodies (R6, R7, R8, R19, R21): steps awaited at the same time
from a nursery's tasks are journaled by key (``step:NAME#n``), replay whatever order they
finished in, recover after a crash like sequential steps, and keep the log valid AG-UI.

"Crash" here is closing the runtime mid-run (the state a killed process leaves; the real
kill -9 is in ``tests/crash/test_kill9_concurrent.py``). Every log these tests leave also
goes to the official ``@ag-ui/client`` verifier.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import trio
from helpers.checks import assert_valid_log, wait_until, wire
from helpers.defs import new_rt

import perdure
from perdure.agui import TextMessageContentEvent, TextMessageEndEvent, TextMessageStartEvent
from perdure.testing import internals

pytestmark = pytest.mark.usefixtures("official_agui_check")

P = perdure.Project("p1")
CALLS: Counter[str] = Counter()
GATES: dict[str, trio.Event] = {}


@pytest.fixture(autouse=True)
def _reset() -> None:
    CALLS.clear()
    GATES.clear()


def gate(name: str) -> trio.Event:
    return GATES.setdefault(name, trio.Event())


async def gated(name: str) -> str:
    """A step function: counts its call, returns once ``gate(name)`` is set."""
    CALLS[name] += 1
    await gate(name).wait()
    return f"{name}-result"


def blocks(log: list[dict[str, Any]]) -> list[list[str]]:
    """The log's events between each STEP_STARTED and its STEP_FINISHED, by step."""
    out: list[list[str]] = []
    current: list[str] | None = None
    for event in log:
        if event["type"] == "STEP_STARTED":
            assert current is None, "concurrent steps' blocks never interleave"
            current = [event["stepName"]]
        elif event["type"] == "STEP_FINISHED":
            assert current is not None and current[0] == event["stepName"]
            out.append(current)
            current = None
        elif current is not None:
            current.append(event.get("delta") or event["type"])
    return out


def define_fan_out(rt: perdure.Runtime, names: tuple[str, ...] = ("a", "b", "c")) -> None:
    @rt.workflow("fan")
    async def fan(ctx: perdure.RunContext, inp: dict) -> dict:
        CALLS["body"] += 1
        results: dict[str, str] = {}

        async def one(name: str) -> None:
            results[name] = await ctx.step(name, gated, name)

        async with trio.open_nursery() as nursery:
            for name in names:
                nursery.start_soon(one, name)
        after = await ctx.step("after", gated, "after")
        return {"results": results, "after": after}


# -- replay by key ---------------------------------------------------------------------------


async def test_replay_finds_each_step_by_key_whatever_order_they_finished(
    data_dir: Path,
) -> None:
    """b then c finish, the runtime stops with a still running; the next activation lets
    them finish in another order: b and c are not run again and each caller gets its own
    recorded value; a (never recorded) runs again."""
    rt = new_rt(data_dir)
    define_fan_out(rt)
    async with rt:
        run = (await rt.start("workflow:fan", {}, owner=P, run_id="fan-1")).run
        await wait_until(lambda: CALLS["a"] == CALLS["b"] == CALLS["c"] == 1)
        gate("b").set()
        await wait_until(lambda: len(internals(rt).store.journal(run.id)) == 1)
        gate("c").set()
        await wait_until(lambda: len(internals(rt).store.journal(run.id)) == 2)
        journal = internals(rt).store.journal(run.id)
    assert [(e.kind, e.name) for e in journal] == [("kstep", "step:b#1"), ("kstep", "step:c#1")]

    GATES.clear()
    gate("a").set()
    gate("after").set()
    rt = new_rt(data_dir)
    define_fan_out(rt)
    async with rt:
        done = await rt.wait(run.id)
        log = await assert_valid_log(rt, run.id)
    assert done.status == "completed" and done.completion is not None
    assert done.completion.result == {
        "results": {"a": "a-result", "b": "b-result", "c": "c-result"},
        "after": "after-result",
    }
    assert CALLS == {"body": 2, "a": 2, "b": 1, "c": 1, "after": 1}
    assert [b[0] for b in blocks(log)] == ["b", "c", "a", "after"]


async def test_a_sequential_step_after_the_nursery_stays_positional(data_dir: Path) -> None:
    rt = new_rt(data_dir)
    define_fan_out(rt, ("x", "y"))
    for name in ("x", "y", "after"):
        gate(name).set()
    async with rt:
        run = (await rt.start("workflow:fan", {}, owner=P)).run
        assert (await rt.wait(run.id)).status == "completed"
        journal = internals(rt).store.journal(run.id)
    kinds = sorted((e.kind, e.name) for e in journal)
    assert kinds == [("kstep", "step:x#1"), ("kstep", "step:y#1"), ("step", "after")]


async def test_calls_from_another_task_inside_sequential_are_positional(data_dir: Path) -> None:
    """``ctx.sequential()`` (event-loop bridges): each call in a task of its own, one after
    another, journals as the body's own, so a replay after a restart finds it by position."""
    rt = new_rt(data_dir)

    @rt.workflow("bridged")
    async def bridged(ctx: perdure.RunContext, inp: dict) -> list[str]:
        CALLS["body"] += 1
        out: list[str] = []

        async def call(name: str) -> None:
            with ctx.sequential():
                out.append(await ctx.step(name, gated, name))
                await ctx.emit(perdure.agui.CustomEvent(name="mark", value=name))

        for name in ("p", "q"):
            async with trio.open_nursery() as nursery:  # a new task per call, like a bridge
                nursery.start_soon(call, name)
        return out

    gate("p").set()
    async with rt:
        run = (await rt.start("workflow:bridged", {}, owner=P)).run
        await wait_until(lambda: CALLS["q"] == 1)
        assert [(e.kind, e.name) for e in internals(rt).store.journal(run.id)][:1] == [
            ("step", "p")
        ]
    gate("q").set()
    rt = new_rt(data_dir)
    rt.workflow("bridged")(bridged)
    async with rt:
        done = await rt.wait(run.id)
        assert done.completion is not None
        assert done.completion.result == ["p-result", "q-result"]
        journal = internals(rt).store.journal(run.id)
    assert [(e.kind, e.name) for e in journal] == [
        ("step", "p"),
        ("emit", "CUSTOM"),
        ("step", "q"),
        ("emit", "CUSTOM"),
    ]
    assert CALLS["p"] == 1 and CALLS["body"] == 2


async def test_repeated_names_in_one_task_are_numbered(data_dir: Path) -> None:
    rt = new_rt(data_dir)

    async def echo(x: int) -> int:
        CALLS["echo"] += 1
        return x

    @rt.workflow("loop")
    async def loop(ctx: perdure.RunContext, inp: dict) -> list[int]:
        out: list[int] = []

        async def worker() -> None:
            for i in range(3):
                out.append(await ctx.step("echo", echo, i))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(worker)
        return out

    async with rt:
        run = (await rt.start("workflow:loop", {}, owner=P)).run
        done = await rt.wait(run.id)
        journal = internals(rt).store.journal(run.id)
    assert done.completion is not None and done.completion.result == [0, 1, 2]
    assert [e.name for e in journal] == ["step:echo#1", "step:echo#2", "step:echo#3"]


# -- refusals --------------------------------------------------------------------------------


async def test_two_steps_of_one_name_in_flight_are_refused(data_dir: Path) -> None:
    rt = new_rt(data_dir)

    @rt.workflow("same")
    async def same(ctx: perdure.RunContext, inp: dict) -> dict:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ctx.step, "dup", gated, "dup")
            nursery.start_soon(ctx.step, "dup", gated, "dup")
        return {}

    async with rt:
        run = (await rt.start("workflow:same", {}, owner=P)).run
        done = await rt.wait(run.id)
    assert done.status == "failed" and done.completion and done.completion.error
    assert "already running in another task" in done.completion.error.message
    assert "distinct names" in done.completion.error.message


async def test_steps_do_not_nest_in_concurrent_tasks_either(data_dir: Path) -> None:
    rt = new_rt(data_dir)

    @rt.workflow("nest")
    async def nest(ctx: perdure.RunContext, inp: dict) -> dict:
        async def outer() -> int:
            return int(await ctx.step("inner", gated, "inner"))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ctx.step, "outer", outer)
        return {}

    async with rt:
        run = (await rt.start("workflow:nest", {}, owner=P)).run
        done = await rt.wait(run.id)
    assert done.status == "failed" and done.completion and done.completion.error
    assert "steps do not nest" in done.completion.error.message


# -- each step finds its own buffer ----------------------------------------------------------


async def test_emit_and_heartbeat_find_their_own_step(data_dir: Path, autojump_clock: Any) -> None:
    """Two steps stream text at once; each message lands in its own step's block, and
    each inactivity watchdog is fed only by its own step's heartbeats."""
    rt = new_rt(data_dir)

    @rt.agent("talk")
    async def talk(ctx: perdure.AgentContext, inp: perdure.AgentInput) -> dict:
        async def speak(name: str, beat: bool) -> str:
            await ctx.emit(TextMessageStartEvent(message_id=f"m-{name}", role="assistant"))
            for i in range(3):
                await ctx.emit(TextMessageContentEvent(message_id=f"m-{name}", delta=f"{name}{i}"))
                if beat:
                    ctx.heartbeat()
                await trio.sleep(4)  # longer than the inactivity timeout without a beat
            await ctx.emit(TextMessageEndEvent(message_id=f"m-{name}"))
            return name

        outcome: dict[str, str] = {}

        async def one(name: str, beat: bool) -> None:
            try:
                outcome[name] = await ctx.step(name, speak, name, beat, inactivity_timeout=5)
            except perdure.StepFailed as exc:
                outcome[name] = exc.detail["cause"]

        async with trio.open_nursery() as nursery:
            nursery.start_soon(one, "beats", True)
            nursery.start_soon(one, "silent", False)
        return outcome

    async with rt:
        run = (await rt.start("agent:talk", {}, owner=perdure.Conversation("c1"))).run
        done = await rt.wait(run.id)
        log = await assert_valid_log(rt, run.id)
    assert done.completion is not None
    assert done.completion.result == {"beats": "beats", "silent": "STEP_INACTIVE"}
    by_step = {b[0]: b[1:] for b in blocks(log)}
    assert by_step["beats"] == [
        "TEXT_MESSAGE_START",
        "beats0",
        "beats1",
        "beats2",
        "TEXT_MESSAGE_END",
    ]
    # The silent step went quiet for 5 s after two deltas (t=0, t=4): it failed at t=5
    # and its attempt closed what it had opened.
    assert by_step["silent"] == ["TEXT_MESSAGE_START", "silent0", "silent1", "TEXT_MESSAGE_END"]


async def test_flush_inside_a_concurrent_step_waits_for_its_result(data_dir: Path) -> None:
    rt = new_rt(data_dir)
    flushed = trio.Event()

    @rt.workflow("flushy")
    async def flushy(ctx: perdure.RunContext, inp: dict) -> dict:
        async def talk() -> str:
            await ctx.custom("progress", 1)
            await ctx.flush()
            flushed.set()
            return await gated("talk")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ctx.step, "talk", talk)
        return {}

    async with rt:
        run = (await rt.start("workflow:flushy", {}, owner=P)).run
        await flushed.wait()
        await trio.sleep(0.05)
        assert [e["type"] for e in await wire(rt, run.id)] == ["RUN_STARTED"]
        gate("talk").set()
        await rt.wait(run.id)
        log = await assert_valid_log(rt, run.id)
    assert blocks(log) == [["talk", "CUSTOM"]]


# -- retries and crash recovery --------------------------------------------------------------


async def test_a_concurrent_steps_retries_survive_a_restart(
    data_dir: Path, autojump_clock: Any
) -> None:
    """A keyed step fails twice with a 100 s backoff; the runtime stops during the
    second backoff; the next one resumes at attempt 3 at the recorded due time."""

    def define(rt: perdure.Runtime) -> None:
        async def flaky() -> str:
            CALLS["flaky"] += 1
            if CALLS["flaky"] < 3:
                raise RuntimeError(f"try {CALLS['flaky']}")
            return "ok"

        @rt.workflow("retrying")
        async def retrying(ctx: perdure.RunContext, inp: dict) -> str:
            result = ""

            async def one() -> None:
                nonlocal result
                policy = perdure.RetryPolicy(
                    max_attempts=5, initial=100, maximum=100, jitter=0, backoff="fixed"
                )
                result = await ctx.step("flaky", flaky, retry=policy)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(one)
            return result

    rt = new_rt(data_dir)
    define(rt)
    async with rt:
        run = (await rt.start("workflow:retrying", {}, owner=P)).run
        await wait_until(lambda: CALLS["flaky"] == 2, timeout=150, step=1)
        await trio.sleep(1)
        journal = internals(rt).store.journal(run.id)
    assert [(e.kind, e.name) for e in journal] == [("kretry", "step:flaky#1")] * 2
    started = trio.current_time()
    rt = new_rt(data_dir)
    define(rt)
    async with rt:
        done = await rt.wait(run.id)
        log = await assert_valid_log(rt, run.id)
    assert done.completion is not None and done.completion.result == "ok"
    assert CALLS["flaky"] == 3
    assert 95 < trio.current_time() - started < 101  # the rest of the recorded backoff
    retries = [e["value"]["attempt"] for e in log if e.get("name") == "perdure.step_retry"]
    assert retries == [1, 2]


# -- lanes: sleeps, children and emits of concurrent tasks ---------------------------------


def define_lanes(rt: perdure.Runtime, second: str = "b") -> None:
    @rt.task("kid")
    async def kid(ctx: perdure.RunContext, inp: dict) -> dict:
        CALLS[f"kid-{inp['lane']}"] += 1
        return {"kid": inp["lane"]}

    @rt.workflow("lanes")
    async def lanes(ctx: perdure.RunContext, inp: dict) -> dict:
        out: dict[str, Any] = {}

        async def strand(lane: str, step: str) -> None:
            with ctx.lane(lane):
                await ctx.custom("strand", lane)
                child = await ctx.start_child("task:kid", {"lane": lane})
                await ctx.sleep(10)
                out[lane] = {
                    "child": await child.result(),
                    "step": await ctx.step(step, gated, step),
                }

        async with trio.open_nursery() as nursery:
            nursery.start_soon(strand, "x", "a")
            nursery.start_soon(strand, "y", second)
        return out


async def test_lanes_key_sleeps_children_and_emits(data_dir: Path, autojump_clock: Any) -> None:
    rt = new_rt(data_dir)
    define_lanes(rt)
    gate("a").set()
    async with rt:
        run = (await rt.start("workflow:lanes", {}, owner=P, run_id="lanes-1")).run
        await wait_until(lambda: CALLS["a"] == 1 and CALLS["b"] == 1, timeout=60, step=1)
        await trio.sleep(1)
        kids = rt.list(parent_id=run.id).runs
    assert sorted(kid.input["lane"] for kid in kids) == ["x", "y"]
    GATES.clear()
    gate("b").set()
    rt = new_rt(data_dir)
    define_lanes(rt)
    async with rt:
        done = await rt.wait(run.id)
        assert len(rt.list(parent_id=run.id).runs) == 2  # no second child on replay
        journal = internals(rt).store.journal(run.id)
        log = await assert_valid_log(rt, run.id)
    assert done.completion is not None
    assert done.completion.result == {
        "x": {"child": {"kid": "x"}, "step": "a-result"},
        "y": {"child": {"kid": "y"}, "step": "b-result"},
    }
    assert CALLS["a"] == 1 and CALLS["b"] == 2  # b was cut; a was recorded
    assert CALLS["kid-x"] == CALLS["kid-y"] == 1
    names = sorted(e.name for e in journal)
    assert names == [
        "child:x|task:kid#1",
        "child:y|task:kid#1",
        "emit:x|CUSTOM#1",
        "emit:y|CUSTOM#1",
        "sleep:x|sleep#1",
        "sleep:y|sleep#1",
        "step:x|a#1",
        "step:y|b#1",
    ]
    assert sum(1 for e in log if e.get("name") == "strand") == 2  # emits logged once


async def test_a_lane_that_took_another_path_is_nondeterminism(
    data_dir: Path, autojump_clock: Any
) -> None:
    rt = new_rt(data_dir)
    define_lanes(rt)
    gate("b").set()
    async with rt:
        run = (await rt.start("workflow:lanes", {}, owner=P)).run
        await wait_until(
            lambda: any(e.name == "step:y|b#1" for e in internals(rt).store.journal(run.id)),
            timeout=60,
            step=1,
        )
    GATES.clear()
    gate("a").set()
    gate("renamed").set()
    rt = new_rt(data_dir)
    define_lanes(rt, second="renamed")  # lane y now asks for step "renamed", not "b"
    async with rt:
        done = await rt.wait(run.id)
    assert done.status == "failed" and done.completion and done.completion.error
    # lane x asked for everything it recorded; lane y never asked for step b.
    assert done.completion.error.code == "NON_DETERMINISM"
    assert done.completion.error.detail["lane"] == "y"


# -- a wait in one task, steps in another --------------------------------------------------


async def test_a_wait_beside_running_steps_keeps_the_log_valid(data_dir: Path) -> None:
    """While one task waits for an approval, another records steps: the run shows the
    interrupt throughout (each commit is a segment of its own, ending on the interrupt
    again), and the approval resumes it."""
    rt = new_rt(data_dir)

    @rt.workflow("mixed")
    async def mixed(ctx: perdure.RunContext, inp: dict) -> dict:
        out: dict[str, Any] = {}

        async def approve() -> None:
            out["ok"] = (await ctx.wait_for_approval("go")).approved

        async def work() -> None:
            out["w1"] = await ctx.step("w1", gated, "w1")
            out["w2"] = await ctx.step("w2", gated, "w2")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(approve)
            nursery.start_soon(work)
        return out

    async with rt:
        run = (await rt.start("workflow:mixed", {}, owner=P)).run
        await wait_until(lambda: rt.get(run.id).status == "waiting")
        gate("w1").set()
        gate("w2").set()
        await wait_until(lambda: len(internals(rt).store.journal(run.id)) == 2)
        assert rt.get(run.id).status == "waiting"
        log = await assert_valid_log(rt, run.id)
        assert log[-1]["type"] == "RUN_FINISHED" and log[-1]["outcome"]["type"] == "interrupt"
        await rt.resume(run.id, perdure.ApprovalDecision(key="go", approved=True, approver="x"))
        done = await rt.wait(run.id)
        await assert_valid_log(rt, run.id)
    assert done.completion is not None
    assert done.completion.result == {"ok": True, "w1": "w1-result", "w2": "w2-result"}


async def test_no_passivation_while_a_concurrent_step_runs(data_dir: Path) -> None:
    """A run whose other task waits is idle-eligible, but never stopped under a step."""
    rt = new_rt(data_dir, passivate_after=0.05)

    @rt.workflow("busy")
    async def busy(ctx: perdure.RunContext, inp: dict) -> dict:
        out: dict[str, Any] = {}

        async def approve() -> None:
            out["ok"] = (await ctx.wait_for_approval("go")).approved

        async def work() -> None:
            out["long"] = await ctx.step("long", gated, "long")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(approve)
            nursery.start_soon(work)
        return out

    async with rt:
        run = (await rt.start("workflow:busy", {}, owner=P)).run
        await wait_until(lambda: rt.get(run.id).status == "waiting")
        await trio.sleep(0.3)  # six idle thresholds while the step runs
        assert internals(rt).supervisor.get(run.id) is not None
        gate("long").set()
        await wait_until(lambda: len(internals(rt).store.journal(run.id)) == 1)
        await wait_until(lambda: internals(rt).supervisor.get(run.id) is None)  # now idle
        await rt.resume(run.id, perdure.ApprovalDecision(key="go", approved=True, approver="x"))
        done = await rt.wait(run.id)
    assert done.completion is not None and done.completion.result == {
        "ok": True,
        "long": "long-result",
    }
    assert CALLS["long"] == 1


async def test_a_waiting_parent_is_woken_by_a_child_a_task_awaits(data_dir: Path) -> None:
    """One task waits on an approval (the run is waiting, then passivated), another awaits
    a child: the child's end re-activates the parent, which records what follows."""
    rt = new_rt(data_dir, passivate_after=0.05)

    @rt.task("kid")
    async def kid(ctx: perdure.RunContext, inp: dict) -> str:
        return str(await ctx.step("k", gated, "kid"))

    @rt.workflow("parent")
    async def parent(ctx: perdure.RunContext, inp: dict) -> dict:
        out: dict[str, Any] = {}

        async def approve() -> None:
            out["ok"] = (await ctx.wait_for_approval("go")).approved

        async def child() -> None:
            with ctx.lane("child"):
                handle = await ctx.start_child("task:kid", {})
                out["kid"] = await handle.result()
                out["after"] = await ctx.step("after", gated, "after")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(approve)
            nursery.start_soon(child)
        return out

    gate("after").set()
    async with rt:
        run = (await rt.start("workflow:parent", {}, owner=P)).run
        await wait_until(lambda: internals(rt).supervisor.get(run.id) is None)  # passivated
        gate("kid").set()
        await wait_until(lambda: CALLS["after"] == 1)
        await rt.resume(run.id, perdure.ApprovalDecision(key="go", approved=True, approver="x"))
        done = await rt.wait(run.id)
    assert done.completion is not None
    assert done.completion.result == {"ok": True, "kid": "kid-result", "after": "after-result"}
