"""Replay and recovery (R6, R7, R21, R26): a reopened runtime replays each interrupted run's
body from its journal; recorded steps never run again and return their recorded values
in order; a body that asks for something else fails ``NON_DETERMINISM``; an attempt cut
mid-step leaves a log that recovery closes before the step re-runs.

"Crash" here is closing the runtime (``async with`` exit) while runs are mid-flight:
closing stops every actor without touching any run, exactly the state a killed process
leaves behind (``tests/crash`` covers real kill -9).
"""

from __future__ import annotations

import random
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio
from helpers.checks import assert_valid_log, wait_until, wire
from helpers.defs import new_rt

import perdure
from perdure import ExternalEvent
from perdure.agui import TextMessageContentEvent, TextMessageStartEvent, verify_prefixes
from perdure.testing import internals

P = perdure.Project("p1")

CALLS: Counter[str] = Counter()
"""Side effects of step functions (and body entries), across runtimes."""

BLOCK: set[str] = set()
"""Step names whose function blocks forever (until the runtime closes)."""

ENTERED: set[str] = set()


@pytest.fixture(autouse=True)
def _reset() -> None:
    CALLS.clear()
    BLOCK.clear()
    ENTERED.clear()


def effect(name: str, value: Any = None) -> Callable[[], Any]:
    """An async step function: counts its call, blocks while ``name`` is in BLOCK."""

    async def fn() -> Any:
        CALLS[name] += 1
        ENTERED.add(name)
        if name in BLOCK:
            await trio.sleep_forever()
        return value if value is not None else f"{name}-result"

    return fn


async def until_entered(rt: perdure.Runtime, run_id: str, name: str, journal_len: int) -> None:
    await wait_until(
        lambda: name in ENTERED and len(internals(rt).store.journal(run_id)) >= journal_len,
        what=f"step {name} entered with {journal_len} journal entries",
    )


# -- recorded steps are not executed again ----------------------------------------------------


def define_four(rt: perdure.Runtime) -> None:
    @rt.workflow("four")
    async def four(ctx: perdure.RunContext, inp: dict) -> dict:
        CALLS["body"] += 1
        out = []
        for name in ("s1", "s2", "s3", "s4"):
            out.append(await ctx.step(name, effect(name)))
        return {"out": out}


async def test_reopen_does_not_reexecute_recorded_steps(data_dir: Path) -> None:
    BLOCK.add("s3")
    rt = new_rt(data_dir)
    define_four(rt)
    async with rt:
        started = await rt.start("workflow:four", {}, owner=P)
        run_id = started.run.id
        await until_entered(rt, run_id, "s3", 2)
        assert [(e.kind, e.name) for e in internals(rt).store.journal(run_id)] == [
            ("step", "s1"),
            ("step", "s2"),
        ]
        assert rt.get(run_id).status == "running"
    assert dict(CALLS) == {"body": 1, "s1": 1, "s2": 1, "s3": 1}

    BLOCK.clear()
    rt = new_rt(data_dir)
    define_four(rt)
    async with rt:
        assert rt.recovered == {"running": 1, "pending": 0, "cancelling": 0, "waiting": 0}
        rec = await rt.wait(run_id)
        assert rec.status == "completed", rec.completion
        assert rec.completion is not None
        assert rec.completion.result == {
            "out": ["s1-result", "s2-result", "s3-result", "s4-result"]
        }
        # Recorded steps ran exactly once; the interrupted one ran again (at least once).
        assert CALLS["s1"] == 1 and CALLS["s2"] == 1
        assert CALLS["s3"] == 2 and CALLS["s4"] == 1
        assert CALLS["body"] == 2  # the body was replayed
        journal = internals(rt).store.journal(run_id)
        assert [(e.kind, e.name) for e in journal] == [("step", f"s{i}") for i in range(1, 5)]
        log = await assert_valid_log(rt, run_id)
        # s3's first attempt committed nothing (no flush): one STEP pair per step.
        assert [(e["type"], e["stepName"]) for e in log if e["type"].startswith("STEP_")] == [
            (kind, f"s{i}") for i in range(1, 5) for kind in ("STEP_STARTED", "STEP_FINISHED")
        ]
        assert [e["type"] for e in log].count("RUN_STARTED") == 1
        assert not any(e["type"] == "CUSTOM" for e in log)


# -- recorded values come back in order ----------------------------------------------------------


def define_random(rt: perdure.Runtime, seen: list[list[Any]]) -> None:
    def roll() -> float:
        CALLS["roll"] += 1
        return random.random()

    async def clock() -> int:
        CALLS["clock"] += 1
        return time.time_ns()

    def token() -> str:
        CALLS["token"] += 1
        return uuid.uuid4().hex

    @rt.workflow("random")
    async def body(ctx: perdure.RunContext, inp: dict) -> dict:
        values: list[Any] = []
        seen.append(values)
        values.append(await ctx.step("roll", roll))
        values.append(await ctx.step("clock", clock))
        values.append(await ctx.step("token", token))
        values.append(await ctx.step("roll2", roll))
        await ctx.step("gate", effect("gate"))
        return {"values": values}


async def test_replay_returns_recorded_values_in_order(data_dir: Path) -> None:
    BLOCK.add("gate")
    first: list[list[Any]] = []
    rt = new_rt(data_dir)
    define_random(rt, first)
    async with rt:
        run_id = (await rt.start("workflow:random", {}, owner=P)).run.id
        await until_entered(rt, run_id, "gate", 4)
    assert len(first) == 1 and len(first[0]) == 4
    assert first[0][0] != first[0][3]  # two genuine random draws

    BLOCK.clear()
    second: list[list[Any]] = []
    rt = new_rt(data_dir)
    define_random(rt, second)
    async with rt:
        rec = await rt.wait(run_id)
        assert rec.status == "completed"
    # The replayed body saw exactly the values of the first execution, in order.
    assert second == first
    assert rec.completion is not None and rec.completion.result == {"values": first[0]}
    assert (CALLS["roll"], CALLS["clock"], CALLS["token"]) == (2, 1, 1)


async def test_recorded_failure_replays_without_running(data_dir: Path) -> None:
    """A step that failed is recorded too: replay raises the same StepFailed, no new attempt."""
    BLOCK.add("gate")
    caught: list[dict[str, Any]] = []

    def define(rt: perdure.Runtime) -> None:
        async def bad() -> None:
            CALLS["bad"] += 1
            raise ValueError("nope")

        @rt.workflow("fails")
        async def body(ctx: perdure.RunContext, inp: dict) -> dict:
            try:
                await ctx.step("bad", bad)
            except perdure.StepFailed as exc:
                caught.append(exc.detail)
            await ctx.step("gate", effect("gate"))
            return {"ok": True}

    rt = new_rt(data_dir)
    define(rt)
    async with rt:
        run_id = (await rt.start("workflow:fails", {}, owner=P)).run.id
        await until_entered(rt, run_id, "gate", 1)
    BLOCK.clear()
    rt = new_rt(data_dir)
    define(rt)
    async with rt:
        assert (await rt.wait(run_id)).status == "completed"
    assert CALLS["bad"] == 1
    assert len(caught) == 2 and caught[0] == caught[1]
    assert caught[0]["step"] == "bad" and caught[0]["cause"] == "STEP_EXCEPTION"


async def test_emits_are_not_repeated_on_replay(data_dir: Path) -> None:
    BLOCK.add("gate")

    def define(rt: perdure.Runtime) -> None:
        @rt.workflow("emitter")
        async def body(ctx: perdure.RunContext, inp: dict) -> dict:
            await ctx.custom("progress", {"pct": 10})
            await ctx.step("a", effect("a"))
            await ctx.custom("progress", {"pct": 50})
            await ctx.step("gate", effect("gate"))
            await ctx.custom("progress", {"pct": 100})
            return {}

    rt = new_rt(data_dir)
    define(rt)
    async with rt:
        run_id = (await rt.start("workflow:emitter", {}, owner=P)).run.id
        await until_entered(rt, run_id, "gate", 3)
    BLOCK.clear()
    rt = new_rt(data_dir)
    define(rt)
    async with rt:
        assert (await rt.wait(run_id)).status == "completed"
        log = await assert_valid_log(rt, run_id)
    progress = [e["value"]["pct"] for e in log if e["type"] == "CUSTOM" and e["name"] == "progress"]
    assert progress == [10, 50, 100]


# -- non-determinism (R7) ------------------------------------------------------------------------


async def test_non_determinism_fails_the_run(data_dir: Path) -> None:
    BLOCK.add("c")

    def v1(rt: perdure.Runtime) -> None:
        @rt.workflow("nd")
        async def body(ctx: perdure.RunContext, inp: dict) -> dict:
            await ctx.step("a", effect("a"))
            await ctx.step("b", effect("b"))
            await ctx.step("c", effect("c"))
            return {}

    def v2(rt: perdure.Runtime) -> None:  # the code changed: "b" became "x"
        @rt.workflow("nd")
        async def body(ctx: perdure.RunContext, inp: dict) -> dict:
            await ctx.step("a", effect("a"))
            await ctx.step("x", effect("x"))
            await ctx.step("c", effect("c"))
            return {}

    rt = new_rt(data_dir)
    v1(rt)
    async with rt:
        run_id = (await rt.start("workflow:nd", {}, owner=P)).run.id
        await until_entered(rt, run_id, "c", 2)
    BLOCK.clear()
    rt = new_rt(data_dir)
    v2(rt)
    async with rt:
        rec = await rt.wait(run_id)
        assert rec.status == "failed"
        assert rec.completion is not None and rec.completion.error is not None
        error = rec.completion.error
        assert error.code == "NON_DETERMINISM"
        assert error.detail["position"] == 1
        assert error.detail["expected"] == {"kind": "step", "name": "b"}
        assert error.detail["got"] == {"kind": "step", "name": "x"}
        assert "'x'" in error.message and "'b'" in error.message
        log = await assert_valid_log(rt, run_id)
        assert log[-1]["type"] == "RUN_ERROR" and log[-1]["code"] == "NON_DETERMINISM"
        # Histories were not mixed: nothing of the new code ran or was recorded.
        assert CALLS["x"] == 0 and CALLS["c"] == 1 and CALLS["a"] == 1
        assert [(e.kind, e.name) for e in internals(rt).store.journal(run_id)] == [
            ("step", "a"),
            ("step", "b"),
        ]


async def test_non_determinism_of_kind(data_dir: Path) -> None:
    """Recorded a step, replay asks for a sleep at that position: also NON_DETERMINISM,
    and a restart policy does not retry it."""
    BLOCK.add("b")

    def define(rt: perdure.Runtime, changed: bool) -> None:
        @rt.workflow("ndk", restart=perdure.RestartPolicy(max_restarts=3, period=60, backoff=0))
        async def body(ctx: perdure.RunContext, inp: dict) -> dict:
            if changed:
                await ctx.sleep(1)
            else:
                await ctx.step("a", effect("a"))
            await ctx.step("b", effect("b"))
            return {}

    rt = new_rt(data_dir)
    define(rt, changed=False)
    async with rt:
        run_id = (await rt.start("workflow:ndk", {}, owner=P)).run.id
        await until_entered(rt, run_id, "b", 1)
    BLOCK.clear()
    rt = new_rt(data_dir)
    define(rt, changed=True)
    async with rt:
        rec = await rt.wait(run_id)
        assert rec.completion is not None and rec.completion.error is not None
        assert rec.completion.error.code == "NON_DETERMINISM"
        assert rec.completion.error.detail["expected"] == {"kind": "step", "name": "a"}
        assert rec.completion.error.detail["got"] == {"kind": "sleep", "name": "sleep"}
        assert rec.restarts == []
        log = await assert_valid_log(rt, run_id)
        assert not any(e["type"] == "CUSTOM" and e["name"] == "perdure.restart" for e in log)


# -- R21: an attempt cut after some of its events were committed ---------------------------------


def define_streamer(rt: perdure.Runtime, attempts: list[int]) -> None:
    @rt.workflow("streamer")
    async def body(ctx: perdure.RunContext, inp: dict) -> dict:
        await ctx.step("before", effect("before"))

        async def llm() -> str:
            attempts.append(ctx.attempt)
            mid = f"msg-{ctx.attempt}"
            await ctx.emit(
                TextMessageStartEvent(message_id=mid, role="assistant"),
                TextMessageContentEvent(message_id=mid, delta="partial "),
            )
            await ctx.flush()
            CALLS["llm"] += 1
            ENTERED.add("llm")
            if "llm" in BLOCK:
                await trio.sleep_forever()
            await ctx.emit(TextMessageContentEvent(message_id=mid, delta="answer"))
            return mid

        mid = await ctx.step("llm", llm)
        await ctx.step("after", effect("after"))
        return {"mid": mid}


async def test_interrupted_step_is_closed_then_rerun(data_dir: Path) -> None:
    BLOCK.add("llm")
    attempts: list[int] = []
    rt = new_rt(data_dir)
    define_streamer(rt, attempts)
    async with rt:
        run_id = (await rt.start("workflow:streamer", {}, owner=P)).run.id
        await until_entered(rt, run_id, "llm", 1)
        cut = [e["type"] for e in await wire(rt, run_id)]
        assert cut == [
            "RUN_STARTED",
            "STEP_STARTED",
            "STEP_FINISHED",
            "STEP_STARTED",
            "TEXT_MESSAGE_START",
            "TEXT_MESSAGE_CONTENT",
        ]
    assert attempts == [1]

    BLOCK.clear()
    rt = new_rt(data_dir)
    define_streamer(rt, attempts)
    async with rt:
        assert rt.recovered["running"] == 1
        rec = await rt.wait(run_id)
        assert rec.status == "completed", rec.completion
        assert rec.attempt == 2
        assert attempts == [1, 2]
        assert CALLS["before"] == 1 and CALLS["llm"] == 2 and CALLS["after"] == 1
        log = await wire(rt, run_id)
        verify_prefixes(log)
        await assert_valid_log(rt, run_id)

    types = [e["type"] if e["type"] != "CUSTOM" else e["name"] for e in log]
    assert types == [
        "RUN_STARTED",
        "STEP_STARTED",  # before
        "STEP_FINISHED",
        "STEP_STARTED",  # llm, attempt 1 (flushed, then cut)
        "TEXT_MESSAGE_START",
        "TEXT_MESSAGE_CONTENT",
        "TEXT_MESSAGE_END",  # recovery closes what the cut attempt left open ...
        "STEP_FINISHED",
        "perdure.attempt_aborted",  # ... marks it ...
        "STEP_STARTED",  # ... then re-runs the step
        "TEXT_MESSAGE_START",
        "TEXT_MESSAGE_CONTENT",
        "TEXT_MESSAGE_CONTENT",
        "TEXT_MESSAGE_END",
        "STEP_FINISHED",
        "STEP_STARTED",  # after
        "STEP_FINISHED",
        "RUN_FINISHED",
    ]
    end = next(i for i, e in enumerate(log) if e["type"] == "TEXT_MESSAGE_END")
    assert log[end]["messageId"] == "msg-1"
    aborted = next(e for e in log if e["type"] == "CUSTOM")
    assert aborted["value"]["attempt"] == 1
    assert aborted["value"]["closed"] == 2  # the message and the step
    rerun = [i for i, e in enumerate(log) if e["type"] == "STEP_STARTED" and e["stepName"] == "llm"]
    assert len(rerun) == 2 and end < types.index("perdure.attempt_aborted") < rerun[1]
    assert [e["messageId"] for e in log if e["type"] == "TEXT_MESSAGE_START"] == ["msg-1", "msg-2"]


async def test_attempt_aborted_is_written_once_per_cut(data_dir: Path) -> None:
    """Two reopens while the step is still cut: each recovery closes only what is open."""
    BLOCK.add("llm")
    attempts: list[int] = []
    for _ in range(2):
        rt = new_rt(data_dir)
        define_streamer(rt, attempts)
        async with rt:
            if not attempts:
                run_id = (await rt.start("workflow:streamer", {}, owner=P)).run.id
            ENTERED.clear()
            await until_entered(rt, run_id, "llm", 1)
    BLOCK.clear()
    rt = new_rt(data_dir)
    define_streamer(rt, attempts)
    async with rt:
        assert (await rt.wait(run_id)).status == "completed"
        log = await wire(rt, run_id)
        verify_prefixes(log)
    assert attempts == [1, 2, 3]
    markers = [e["value"] for e in log if e["type"] == "CUSTOM"]
    assert markers == [{"attempt": 1, "closed": 2}, {"attempt": 2, "closed": 2}]
    assert CALLS["before"] == 1 and CALLS["after"] == 1


# -- recovery counts (R26) -------------------------------------------------------------------------


async def test_recovered_counts(data_dir: Path) -> None:
    BLOCK.add("gate")

    def define(rt: perdure.Runtime) -> None:
        @rt.workflow("gated")
        async def gated(ctx: perdure.RunContext, inp: dict) -> dict:
            await ctx.step("gate", effect("gate"))
            return {}

        @rt.workflow("waits")
        async def waits(ctx: perdure.RunContext, inp: dict) -> dict:
            return {"got": await ctx.wait_for_event("go")}

        @rt.workflow("quick")
        async def quick(ctx: perdure.RunContext, inp: dict) -> dict:
            return {}

    rt = new_rt(data_dir, max_running=1)
    define(rt)
    async with rt:
        quick = (await rt.start("workflow:quick", {}, owner=P)).run.id
        await rt.wait(quick)
        waiting = (await rt.start("workflow:waits", {}, owner=P)).run.id
        await wait_until(lambda: rt.get(waiting).status == "waiting")
        running = (await rt.start("workflow:gated", {}, owner=P)).run.id
        pending = (await rt.start("workflow:gated", {}, owner=P)).run.id
        await wait_until(lambda: "gate" in ENTERED)
        # The gated run holds the only max_running slot (a waiting run holds none).
        assert [rt.get(r).status for r in (waiting, running, pending)] == [
            "waiting",
            "running",
            "pending",
        ]
    BLOCK.clear()
    rt = new_rt(data_dir, max_running=1)
    define(rt)
    async with rt:
        assert rt.recovered == {"running": 1, "pending": 1, "cancelling": 0, "waiting": 1}
        assert rt.get(quick).status == "completed"
        # A waiting run stays passive: no actor until its signal.
        assert internals(rt).supervisor.get(waiting) is None
        for r in (running, pending):
            assert (await rt.wait(r)).status == "completed"
        await rt.resume(waiting, ExternalEvent(name="go", payload={"n": 1}))
        rec = await rt.wait(waiting)
        assert rec.completion is not None and rec.completion.result == {"got": {"n": 1}}


# -- a retry backoff in progress survives a restart ----------------------------------------------


def define_backoff(rt: perdure.Runtime, calls: list[tuple[int, float, float]]) -> None:
    policy = perdure.RetryPolicy(
        max_attempts=4, backoff="fixed", initial=100.0, maximum=1000.0, jitter=0.0
    )

    @rt.workflow("backoff")
    async def body(ctx: perdure.RunContext, inp: dict) -> dict:
        async def flaky() -> str:
            calls.append((len(calls) + 1, ctx.now(), trio.current_time()))
            if len(calls) < 4:
                raise ConnectionError(f"attempt {len(calls)}")
            return "ok"

        return {"value": await ctx.step("call", flaky, retry=policy)}


async def test_retry_backoff_survives_restart(data_dir: Path, autojump_clock: Any) -> None:
    calls: list[tuple[int, float, float]] = []
    rt = new_rt(data_dir)
    define_backoff(rt, calls)
    async with rt:
        run_id = (await rt.start("workflow:backoff", {}, owner=P)).run.id
        await wait_until(
            lambda: len(internals(rt).store.journal(run_id)) == 2, timeout=1000, step=1.0
        )
        await trio.sleep(10)  # well inside the second 100 s backoff
        journal = internals(rt).store.journal(run_id)
        assert [e.kind for e in journal] == ["retry", "retry"]
        due = msgspec.msgpack.decode(journal[1].value)["due"]
    assert len(calls) == 2

    rt = new_rt(data_dir)
    define_backoff(rt, calls)
    async with rt:
        assert rt.recovered["running"] == 1
        rec = await rt.wait(run_id)
        assert rec.status == "completed"
        assert rec.completion is not None and rec.completion.result == {"value": "ok"}
        log = await assert_valid_log(rt, run_id)
    # The attempt count continued (3, then 4) instead of starting over at 1 ...
    assert [n for n, _, _ in calls] == [1, 2, 3, 4]
    # ... and the recorded due time was honoured, not shortened nor restarted.
    third_at = calls[2][1]
    assert due <= third_at <= due + 0.01
    retries = [e["value"]["attempt"] for e in log if e["type"] == "CUSTOM"]
    assert retries == [1, 2, 3]


async def test_retry_backoff_remaining_time_after_restart_in_virtual_time(
    data_dir: Path, autojump_clock: Any
) -> None:
    calls: list[tuple[int, float, float]] = []
    rt = new_rt(data_dir)
    define_backoff(rt, calls)
    async with rt:
        run_id = (await rt.start("workflow:backoff", {}, owner=P)).run.id
        await wait_until(
            lambda: len(internals(rt).store.journal(run_id)) == 2, timeout=1000, step=1.0
        )
        closed_at = trio.current_time()
        due_in = (
            msgspec.msgpack.decode(internals(rt).store.journal(run_id)[1].value)["due"] - rt.now()
        )
    rt = new_rt(data_dir)
    define_backoff(rt, calls)
    async with rt:
        await wait_until(lambda: len(calls) == 3, timeout=10_000, step=10.0)
    waited = calls[2][2] - closed_at
    # The backoff had due_in seconds left when the runtime closed; that is all it waits.
    assert waited <= due_in + 0.01, (waited, due_in)
