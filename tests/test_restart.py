"""Supervision restarts (R18): OTP-style restart of failed runs from their journal.

* a failed body is restarted while its policy allows (``max_restarts`` within ``period``
  seconds, ``backoff`` doubled per recent restart); the restarted body replays its
  journal, so recorded steps, signals and children are not executed again, and the step
  that failed runs again;
* each restart is visible in the log as ``CUSTOM perdure.restart`` and the log stays
  valid AG-UI (whatever the failed attempt left open is closed first);
* exhaustion fails the run with the body's own error; non-determinism is never
  restarted; a cancelled run is not restarted.

Virtual time (``autojump_clock``) drives the backoff.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
import trio
from helpers.checks import assert_valid_log, wait_until

import perdure
from perdure import ExternalEvent
from perdure.agui import (
    TextMessageContentEvent,
    TextMessageEndEvent,
    TextMessageStartEvent,
)

P = perdure.Project("p1")
C = perdure.Conversation("c1")

pytestmark = pytest.mark.usefixtures("official_agui_check")


# -- definitions ----------------------------------------------------------------------------

COUNTS: dict[str, int] = {}
TIMES: dict[str, list[float]] = {}
GATE: dict[str, trio.Event] = {}


def bump(name: str) -> int:
    COUNTS[name] = COUNTS.get(name, 0) + 1
    return COUNTS[name]


@pytest.fixture(autouse=True)
def _reset() -> None:
    COUNTS.clear()
    TIMES.clear()
    GATE.clear()


def policy(
    max_restarts: int = 3, period: float = 60.0, backoff: float = 1.0
) -> perdure.RestartPolicy:
    return perdure.RestartPolicy(max_restarts=max_restarts, period=period, backoff=backoff)


def make(
    path: Any, restart: perdure.RestartPolicy | None = None, **options: Any
) -> perdure.Runtime:
    options.setdefault("durability", "process")
    rt = perdure.Runtime(path, **options)
    restart = restart or policy()

    def enter(ctx: perdure.RunContext) -> int:
        TIMES.setdefault(ctx.run_id, []).append(trio.current_time())
        return bump(f"body:{ctx.run_id}")

    @rt.workflow("flaky_step", restart=restart)
    async def flaky_step(ctx: perdure.RunContext, inp: dict) -> dict:
        enter(ctx)
        a = await ctx.step("a", lambda: bump(f"a:{ctx.run_id}"))

        def b() -> int:
            n = bump(f"b:{ctx.run_id}")
            if n <= inp["fail_times"]:
                raise ValueError(f"b failed ({n})")
            return n

        bb = await ctx.step("b", b)
        c = await ctx.step("c", lambda: bump(f"c:{ctx.run_id}"))
        return {"a": a, "b": bb, "c": c}

    @rt.workflow("flaky_body", restart=restart)
    async def flaky_body(ctx: perdure.RunContext, inp: dict) -> dict:
        n = enter(ctx)
        a = await ctx.step("a", lambda: bump(f"a:{ctx.run_id}"))
        if n <= inp["fail_times"]:
            raise RuntimeError(f"body failed ({n})")
        return {"a": a, "body": n}

    @rt.workflow("slow_fail", restart=restart)
    async def slow_fail(ctx: perdure.RunContext, inp: dict) -> dict:
        """Runs ``seconds`` (not journaled) before failing, ``fail_times`` times."""
        n = enter(ctx)
        await trio.sleep(inp["seconds"])
        if n <= inp["fail_times"]:
            raise RuntimeError(f"slow failure ({n})")
        return {"body": n}

    @rt.workflow("nondeterministic", restart=restart)
    async def nondeterministic(ctx: perdure.RunContext, inp: dict) -> dict:
        n = enter(ctx)
        await ctx.step(f"step{n}", lambda: n)
        raise RuntimeError("fail so that the restart replays")

    @rt.workflow("wait_then_fail", restart=restart)
    async def wait_then_fail(ctx: perdure.RunContext, inp: dict) -> dict:
        n = enter(ctx)
        a = await ctx.step("a", lambda: bump(f"a:{ctx.run_id}"))
        got = await ctx.wait_for_event("go")
        child = await ctx.start_child("workflow:leaf", {"v": got})
        result = await child.result()
        if n == 1:
            raise RuntimeError("fail after the wait")
        return {"a": a, "got": got, "child": result, "child_id": child.run_id}

    @rt.workflow("leaf")
    async def leaf(ctx: perdure.RunContext, inp: dict) -> dict:
        bump(f"leaf:{ctx.run_id}")
        return {"v": inp["v"]}

    @rt.agent("streamer", restart=restart)
    async def streamer(ctx: perdure.AgentContext, inp: perdure.AgentInput) -> None:
        """Opens a message, fails mid-way once, then finishes it."""
        n = enter(ctx)
        await ctx.emit(TextMessageStartEvent(message_id="m1", role="assistant"))
        await ctx.emit(TextMessageContentEvent(message_id="m1", delta="Hello"))
        if n == 1:
            raise RuntimeError("stream broke")
        await ctx.emit(TextMessageContentEvent(message_id="m1", delta=" world"))
        await ctx.emit(TextMessageEndEvent(message_id="m1"))

    @rt.agent("held_stream")
    async def held_stream(ctx: perdure.AgentContext, inp: perdure.AgentInput) -> None:
        """Opens a message (journaled emit), then blocks in a step until a gate opens."""
        enter(ctx)
        await ctx.emit(TextMessageStartEvent(message_id="m1", role="assistant"))

        async def hold() -> None:
            await GATE.setdefault("hold", trio.Event()).wait()

        await ctx.step("hold", hold)
        await ctx.emit(TextMessageContentEvent(message_id="m1", delta="done"))
        await ctx.emit(TextMessageEndEvent(message_id="m1"))

    @rt.workflow("times_out", restart=restart, timeout=5.0)
    async def times_out(ctx: perdure.RunContext, inp: dict) -> dict:
        enter(ctx)
        await trio.sleep(100)
        return {}

    @rt.workflow("no_policy")
    async def no_policy(ctx: perdure.RunContext, inp: dict) -> dict:
        enter(ctx)
        raise RuntimeError("no policy")

    return rt


def restarts(wire: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e["value"] for e in wire if e["type"] == "CUSTOM" and e["name"] == "perdure.restart"]


# -- restarts -------------------------------------------------------------------------------------


async def test_failed_step_restarts_and_earlier_steps_replay(
    data_dir: Path, autojump_clock: Any
) -> None:
    rt = make(data_dir)
    async with rt:
        run = (await rt.start("workflow:flaky_step", {"fail_times": 2}, owner=P)).run
        done = await rt.wait(run.id)
        assert done.status == "completed", done.completion
        # Step a ran once (replayed twice), b ran three times, c once.
        assert done.completion.result == {"a": 1, "b": 3, "c": 1}
        assert COUNTS[f"body:{run.id}"] == 3
        assert COUNTS[f"a:{run.id}"] == 1
        assert len(done.restarts) == 2
        wire = await assert_valid_log(rt, run.id)
        marks = restarts(wire)
        assert [m["restart"] for m in marks] == [1, 2]
        assert [m["delay"] for m in marks] == [1.0, 2.0]
        assert all(m["error"]["code"] == "STEP_FAILED" for m in marks)
        assert "b failed (1)" in json.dumps(marks[0]["error"])
        assert wire[-1]["type"] == "RUN_FINISHED"


async def test_failed_body_restarts(data_dir: Path, autojump_clock: Any) -> None:
    rt = make(data_dir)
    async with rt:
        run = (await rt.start("workflow:flaky_body", {"fail_times": 3}, owner=P)).run
        done = await rt.wait(run.id)
        assert done.status == "completed", done.completion
        assert done.completion.result == {"a": 1, "body": 4}
        assert COUNTS[f"a:{run.id}"] == 1
        marks = restarts(await assert_valid_log(rt, run.id))
        assert [m["restart"] for m in marks] == [1, 2, 3]
        assert all(m["error"]["code"] == "UNHANDLED_EXCEPTION" for m in marks)


async def test_backoff_doubles_per_recent_restart(data_dir: Path, autojump_clock: Any) -> None:
    rt = make(data_dir, restart=policy(max_restarts=3, period=600, backoff=5.0))
    async with rt:
        run = (await rt.start("workflow:flaky_body", {"fail_times": 3}, owner=P)).run
        await rt.wait(run.id)
        times = TIMES[run.id]
        gaps = [round(b - a, 3) for a, b in itertools.pairwise(times)]
        assert len(gaps) == 3
        for gap, expected in zip(gaps, [5.0, 10.0, 20.0], strict=True):
            assert expected <= gap < expected + 0.5, gaps


async def test_exhaustion_fails_the_run(data_dir: Path, autojump_clock: Any) -> None:
    rt = make(data_dir, restart=policy(max_restarts=2))
    async with rt:
        run = (await rt.start("workflow:flaky_body", {"fail_times": 100}, owner=P)).run
        done = await rt.wait(run.id)
        assert done.status == "failed"
        assert done.completion.error.code == "UNHANDLED_EXCEPTION"
        assert "body failed (3)" in done.completion.error.message
        assert COUNTS[f"body:{run.id}"] == 3
        assert COUNTS[f"a:{run.id}"] == 1
        wire = await assert_valid_log(rt, run.id)
        assert [m["restart"] for m in restarts(wire)] == [1, 2]
        assert wire[-1]["type"] == "RUN_ERROR" and wire[-1]["code"] == "UNHANDLED_EXCEPTION"


async def test_restarts_outside_the_period_do_not_count(
    data_dir: Path, autojump_clock: Any
) -> None:
    """Each attempt lasts 10 s and the period is 5 s: no restart is ever 'recent'."""
    rt = make(data_dir, restart=policy(max_restarts=1, period=5.0, backoff=1.0))
    async with rt:
        run = (await rt.start("workflow:slow_fail", {"seconds": 10, "fail_times": 4}, owner=P)).run
        done = await rt.wait(run.id)
        assert done.status == "completed", done.completion
        assert done.completion.result == {"body": 5}
        marks = restarts(await assert_valid_log(rt, run.id))
        assert [m["restart"] for m in marks] == [1, 1, 1, 1]
        assert [m["delay"] for m in marks] == [1.0] * 4
        # Within the period the same policy gives up after one restart.
        quick = (await rt.start("workflow:slow_fail", {"seconds": 0, "fail_times": 4}, owner=P)).run
        assert (await rt.wait(quick.id)).status == "failed"
        assert COUNTS[f"body:{quick.id}"] == 2


async def test_no_policy_no_restart(data_dir: Path) -> None:
    rt = make(data_dir)
    async with rt:
        run = (await rt.start("workflow:no_policy", {}, owner=P)).run
        done = await rt.wait(run.id)
        assert done.status == "failed"
        assert COUNTS[f"body:{run.id}"] == 1
        assert restarts(await assert_valid_log(rt, run.id)) == []
        assert done.restarts == []


async def test_non_determinism_is_never_restarted(data_dir: Path, autojump_clock: Any) -> None:
    rt = make(data_dir, restart=policy(max_restarts=5))
    async with rt:
        run = (await rt.start("workflow:nondeterministic", {}, owner=P)).run
        done = await rt.wait(run.id)
        assert done.status == "failed"
        assert done.completion.error.code == "NON_DETERMINISM"
        assert COUNTS[f"body:{run.id}"] == 2
        assert [m["restart"] for m in restarts(await assert_valid_log(rt, run.id))] == [1]


async def test_run_timeout_is_never_restarted(data_dir: Path, autojump_clock: Any) -> None:
    rt = make(data_dir, restart=policy(max_restarts=5))
    async with rt:
        run = (await rt.start("workflow:times_out", {}, owner=P)).run
        done = await rt.wait(run.id)
        assert done.status == "failed" and done.completion.error.code == "RUN_TIMEOUT"
        assert COUNTS[f"body:{run.id}"] == 1
        assert restarts(await assert_valid_log(rt, run.id)) == []


async def test_restart_replays_signals_and_children(data_dir: Path, autojump_clock: Any) -> None:
    rt = make(data_dir)
    async with rt:
        run = (await rt.start("workflow:wait_then_fail", {}, owner=P)).run
        await wait_until(lambda: rt.get(run.id).status == "waiting", what="waiting")
        await rt.resume(run.id, ExternalEvent(name="go", payload=9))
        done = await rt.wait(run.id)
        assert done.status == "completed", done.completion
        assert done.completion.result["got"] == 9
        assert done.completion.result["child"] == {"v": 9}
        assert COUNTS[f"body:{run.id}"] == 2
        assert COUNTS[f"a:{run.id}"] == 1
        # The restarted body neither waited again nor started a second child.
        children = rt.list(parent_id=run.id).runs
        assert [c.id for c in children] == [done.completion.result["child_id"]]
        assert COUNTS[f"leaf:{children[0].id}"] == 1
        wire = await assert_valid_log(rt, run.id)
        interrupts = [
            e
            for e in wire
            if e["type"] == "RUN_FINISHED" and e.get("outcome", {}).get("type") == "interrupt"
        ]
        assert len(interrupts) == 1
        assert len(restarts(wire)) == 1


async def test_restart_of_an_agent_with_an_open_message(
    data_dir: Path, autojump_clock: Any
) -> None:
    rt = make(data_dir)
    async with rt:
        run = (await rt.start("agent:streamer", {"messages": []}, owner=C)).run
        done = await rt.wait(run.id)
        wire = await assert_valid_log(rt, run.id)
        # Whatever happens, the log stays valid and shows the restart.
        assert len(restarts(wire)) >= 1
        assert done.status == "completed", done.completion


async def test_restart_keeps_a_journaled_message_open_for_the_rerun_body(
    data_dir: Path, autojump_clock: Any
) -> None:
    """A message opened by a journaled emit belongs to the body, not to the failed
    attempt: the restarted body replays its start and finishes it."""
    rt = make(data_dir, restart=policy(max_restarts=1))
    async with rt:
        run = (await rt.start("agent:streamer", {"messages": []}, owner=C)).run
        await rt.wait(run.id)
        wire = await assert_valid_log(rt, run.id)
        first_restart = next(
            i
            for i, e in enumerate(wire)
            if e["type"] == "CUSTOM" and e["name"] == "perdure.restart"
        )
        before = [e["type"] for e in wire[:first_restart]]
        assert before == ["RUN_STARTED", "TEXT_MESSAGE_START", "TEXT_MESSAGE_CONTENT"]
        after = [(e["type"], e.get("delta")) for e in wire[first_restart + 1 :]]
        assert after == [
            ("TEXT_MESSAGE_CONTENT", " world"),
            ("TEXT_MESSAGE_END", None),
            ("RUN_FINISHED", None),
        ]


async def test_cancel_during_backoff(data_dir: Path, autojump_clock: Any) -> None:
    rt = make(data_dir, restart=policy(max_restarts=3, backoff=100.0))
    async with rt:
        run = (await rt.start("workflow:flaky_body", {"fail_times": 100}, owner=P)).run
        await wait_until(lambda: rt.get(run.id).restarts != [], what="first restart")
        t0 = trio.current_time()
        result = await rt.cancel(run.id, "give up")
        assert trio.current_time() - t0 < 5
        assert result.cancelled and result.run.status == "cancelled"
        await trio.sleep(1000)
        assert COUNTS[f"body:{run.id}"] == 1
        wire = await assert_valid_log(rt, run.id)
        assert wire[-1]["outcome"] == {"type": "cancelled"}
        assert len(restarts(wire)) == 1


async def test_restart_budget_survives_a_process_restart(
    data_dir: Path, autojump_clock: Any
) -> None:
    """Restarts are durable: after reopening, the run's recent restarts still count."""
    rt = make(data_dir, restart=policy(max_restarts=1, period=600, backoff=50.0))
    async with rt:
        run = (await rt.start("workflow:flaky_body", {"fail_times": 100}, owner=P)).run
        await wait_until(lambda: rt.get(run.id).restarts != [], what="first restart")
    assert COUNTS[f"body:{run.id}"] == 1
    rt2 = make(data_dir, restart=policy(max_restarts=1, period=600, backoff=50.0))
    async with rt2:
        assert rt2.recovered["running"] == 1
        done = await rt2.wait(run.id)
        assert done.status == "failed"
        assert COUNTS[f"body:{run.id}"] == 2
        assert COUNTS[f"a:{run.id}"] == 1
        assert len(restarts(await assert_valid_log(rt2, run.id))) == 1


async def test_recovery_replay_of_an_agent_with_an_open_message(data_dir: Path) -> None:
    rt = make(data_dir)
    async with rt:
        run = (await rt.start("agent:held_stream", {"messages": []}, owner=C)).run
        await wait_until(lambda: rt.get(run.id).last_event_id >= 2, what="message opened")
    GATE.clear()
    rt2 = make(data_dir)
    async with rt2:
        assert rt2.recovered["running"] == 1
        GATE.setdefault("hold", trio.Event()).set()
        done = await rt2.wait(run.id)
        await assert_valid_log(rt2, run.id)
        assert done.status == "completed", done.completion
