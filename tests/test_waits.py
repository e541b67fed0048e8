"""Waiting checkpoints (R2, R11, R14, R26): open waits, timeouts, passivation, restarts.

* ``run.waiting`` lists every open wait; parallel tool calls open in one checkpoint and a
  partial resume leaves the rest open (R2).
* ``timeout`` raises :class:`perdure.WaitExpired` in the body: handled, the body goes on;
  unhandled, the run fails with ``WAIT_EXPIRED`` (R11).
* a waiting run needs no memory: it is passivated and a signal, its deadline or a
  reopened runtime re-activates it by replay, without re-executing recorded steps (R14).
* the checkpoint is durable before the run reports ``waiting``; a closed and reopened
  runtime keeps waiting runs passive and resumes them (R26).

Virtual time (pytest-trio's ``autojump_clock``) drives every timeout and passivation.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import trio
from helpers.checks import assert_valid_log, dump_store, interrupts, read_log, wait_until, waiting

import perdure
from perdure import ExternalEvent, InputResponse, ToolResult
from perdure.testing import internals

P = perdure.Project("p1")

pytestmark = pytest.mark.usefixtures("official_agui_check")


# -- definitions ----------------------------------------------------------------------------

COUNTS: dict[str, int] = {}


def bump(name: str) -> int:
    COUNTS[name] = COUNTS.get(name, 0) + 1
    return COUNTS[name]


@pytest.fixture(autouse=True)
def _reset_counts() -> None:
    COUNTS.clear()


def make(path: Any, **options: Any) -> perdure.Runtime:
    options.setdefault("durability", "process")
    rt = perdure.Runtime(path, **options)

    @rt.workflow("timeout_handled")
    async def timeout_handled(ctx: perdure.RunContext, inp: dict) -> dict:
        bump(f"body:{ctx.run_id}")
        try:
            payload = await ctx.wait_for_event("e", timeout=inp["timeout"])
        except perdure.WaitExpired as exc:
            await ctx.custom("gave_up", {"code": exc.code, "detail": exc.detail})
            late = await ctx.wait_for_input("after")
            return {"expired": True, "code": exc.code, "after": late}
        return {"expired": False, "payload": payload}

    @rt.workflow("timeout_unhandled")
    async def timeout_unhandled(ctx: perdure.RunContext, inp: dict) -> dict:
        bump(f"body:{ctx.run_id}")
        return await ctx.wait_for_approval("k", timeout=inp["timeout"])

    @rt.workflow("step_then_wait")
    async def step_then_wait(ctx: perdure.RunContext, inp: dict) -> dict:
        bump(f"body:{ctx.run_id}")

        async def before() -> int:
            return bump(f"step:{ctx.run_id}")

        n = await ctx.step("before", before)
        content = await ctx.wait_for_tool_result("tc1", timeout=inp.get("timeout"))
        after = await ctx.step("after", lambda: bump(f"after:{ctx.run_id}"))
        return {"n": n, "content": content, "after": after}

    @rt.workflow("parallel")
    async def parallel(ctx: perdure.RunContext, inp: dict) -> dict:
        bump(f"body:{ctx.run_id}")
        try:
            results = await ctx.wait_for_tool_results(inp["ids"], timeout=inp.get("timeout"))
        except perdure.WaitExpired as exc:
            return {"expired": exc.detail.get("key")}
        return {"results": results}

    @rt.workflow("sequence")
    async def sequence(ctx: perdure.RunContext, inp: dict) -> list:
        bump(f"body:{ctx.run_id}")
        out = []
        for i in range(inp["n"]):
            out.append(await ctx.wait_for_event(f"e{i}"))
            await ctx.custom("got", {"i": i})
        return out

    @rt.workflow("retry_wait")
    async def retry_wait(ctx: perdure.RunContext, inp: dict) -> dict:
        """Waits on the same key with a timeout until a signal comes; counts expiries."""
        bump(f"body:{ctx.run_id}")
        expired = 0
        while True:
            try:
                value = await ctx.wait_for_input("answer", timeout=10)
            except perdure.WaitExpired:
                expired += 1
                continue
            return {"value": value, "expired": expired}

    @rt.workflow("concurrent")
    async def concurrent(ctx: perdure.RunContext, inp: dict) -> dict:
        """Two different waits open at once from two tasks of one body."""
        out: dict[str, Any] = {}

        async def tool() -> None:
            out["tool"] = await ctx.wait_for_tool_result("t1")

        async def approval() -> None:
            out["approved"] = (await ctx.wait_for_approval("a1")).approved

        async with trio.open_nursery() as nursery:
            nursery.start_soon(tool)
            await trio.sleep(0)
            nursery.start_soon(approval)
        return out

    @rt.workflow("bad_waits")
    async def bad_waits(ctx: perdure.RunContext, inp: dict) -> list:
        codes = []
        attempts = [
            lambda: ctx.wait_for_event(""),
            lambda: ctx.wait_for_event("a#b"),
            lambda: ctx.wait_for_event("x" * 257),
            lambda: ctx.wait_for_event(5),  # type: ignore[arg-type]
            lambda: ctx.wait_for_event("ok", timeout=0),
            lambda: ctx.wait_for_event("ok", timeout=-1),
            lambda: ctx.wait_for_event("ok", timeout=True),
            lambda: ctx.wait_for_event("ok", timeout="5"),  # type: ignore[arg-type]
            lambda: ctx.wait_for_approval("ok", approvers="ann"),  # type: ignore[arg-type]
            lambda: ctx.wait_for_input("ok", schema={"type": 12}),
            lambda: ctx.wait_for_tool_results(["a", "a"]),
            lambda: ctx.wait_for_tool_results(["a", "b#"]),
            lambda: ctx.expect("k", reason="bogus"),
        ]
        for attempt in attempts:
            try:
                await attempt()
            except perdure.PerdureError as exc:
                codes.append(exc.code)
        assert await ctx.wait_for_tool_results([]) == {}

        async def in_step() -> None:
            await ctx.wait_for_event("inside")

        try:
            await ctx.step("in_step", in_step)
        except perdure.PerdureError as exc:
            codes.append(exc.code)
        return codes

    return rt


def customs(wire: list[dict[str, Any]]) -> list[str]:
    return [e["name"] for e in wire if e["type"] == "CUSTOM"]


# -- timeouts (R11) ---------------------------------------------------------------------------------


async def test_timeout_handled_by_the_body(data_dir: Path, autojump_clock: Any) -> None:
    rt = make(data_dir)
    async with rt:
        run = (await rt.start("workflow:timeout_handled", {"timeout": 30}, owner=P)).run
        rec = await waiting(rt, run.id)
        [wait] = rec.waiting.waits
        assert wait.deadline == pytest.approx(rt.now() + 30, abs=0.5)
        [[interrupt]] = interrupts(await assert_valid_log(rt, run.id))
        assert interrupt["expiresAt"] is not None
        await trio.sleep(31)
        rec = await waiting(rt, run.id)
        assert [w.key for w in rec.waiting.waits] == ["after"]
        # The expired key is no longer waited on.
        with pytest.raises(perdure.NotWaiting):
            await rt.resume(run.id, ExternalEvent(name="e", payload="too late"))
        await rt.resume(run.id, InputResponse(key="after", value="go on"))
        done = await rt.wait(run.id)
        assert done.completion.result == {"expired": True, "code": "WAIT_EXPIRED", "after": "go on"}
        wire = await assert_valid_log(rt, run.id)
        assert customs(wire) == ["perdure.wait_expired", "gave_up", "perdure.input"]
        gave_up = next(e for e in wire if e["type"] == "CUSTOM" and e["name"] == "gave_up")
        assert gave_up["value"]["detail"]["key"] == "e"
        assert gave_up["value"]["detail"]["reason"] == "event"
        assert [e["type"] for e in wire[:4]] == [
            "RUN_STARTED",
            "RUN_FINISHED",
            "RUN_STARTED",
            "CUSTOM",
        ]


async def test_signal_before_the_deadline_wins(data_dir: Path, autojump_clock: Any) -> None:
    rt = make(data_dir)
    async with rt:
        run = (await rt.start("workflow:timeout_handled", {"timeout": 30}, owner=P)).run
        await waiting(rt, run.id)
        await trio.sleep(29)
        await rt.resume(run.id, ExternalEvent(name="e", payload=1))
        done = await rt.wait(run.id)
        assert done.completion.result == {"expired": False, "payload": 1}
        await trio.sleep(60)  # the disarmed deadline never fires afterwards
        assert rt.get(run.id).last_event_id == done.last_event_id
        assert "perdure.wait_expired" not in customs(await assert_valid_log(rt, run.id))
        assert internals(rt).store.timers() == []


async def test_signal_at_the_deadline_is_not_waiting(data_dir: Path, autojump_clock: Any) -> None:
    """At (or after) the deadline the wait is expired, even if its timer has not fired yet."""
    rt = make(data_dir, passivate_after=5.0)
    async with rt:
        run = (await rt.start("workflow:timeout_handled", {"timeout": 30}, owner=P)).run
        rec = await waiting(rt, run.id)
        deadline = rec.waiting.waits[0].deadline
        await trio.sleep_until(internals(rt).trio_time(deadline))
        with pytest.raises(perdure.NotWaiting):
            await rt.resume(run.id, ExternalEvent(name="e", payload="at the deadline"))
        rec = await waiting(rt, run.id)
        assert rec.waiting.waits[0].key == "after"
        await rt.resume(run.id, InputResponse(key="after", value=0))
        assert (await rt.wait(run.id)).completion.result["expired"] is True
        wire = await assert_valid_log(rt, run.id)
        assert customs(wire).count("perdure.wait_expired") == 1


async def test_timeout_unhandled_fails_the_run(data_dir: Path, autojump_clock: Any) -> None:
    rt = make(data_dir)
    async with rt:
        run = (await rt.start("workflow:timeout_unhandled", {"timeout": 5}, owner=P)).run
        await waiting(rt, run.id)
        done = await rt.wait(run.id)
        assert done.status == "failed"
        assert done.completion.error.code == "WAIT_EXPIRED"
        assert done.completion.error.detail["key"] == "k"
        assert done.completion.error.detail["reason"] == "approval"
        wire = await assert_valid_log(rt, run.id)
        assert wire[-1]["type"] == "RUN_ERROR" and wire[-1]["code"] == "WAIT_EXPIRED"
        assert [e["type"] for e in wire] == [
            "RUN_STARTED",
            "RUN_FINISHED",
            "RUN_STARTED",
            "CUSTOM",
            "RUN_ERROR",
        ]
        with pytest.raises(perdure.RunNotActive):
            await rt.resume(run.id, perdure.ApprovalDecision(key="k", approved=True))


async def test_timeout_of_a_passivated_run(data_dir: Path, autojump_clock: Any) -> None:
    """The deadline timer re-activates a passivated run, whose body then sees WaitExpired."""
    rt = make(data_dir, passivate_after=5.0)
    async with rt:
        run = (await rt.start("workflow:timeout_handled", {"timeout": 100}, owner=P)).run
        await waiting(rt, run.id)
        await trio.sleep(50)
        assert len(internals(rt).supervisor) == 0
        await trio.sleep(51)
        rec = await waiting(rt, run.id)
        assert rec.waiting.waits[0].key == "after"
        assert COUNTS[f"body:{run.id}"] == 2
        await trio.sleep(10)
        assert len(internals(rt).supervisor) == 0
        await rt.resume(run.id, InputResponse(key="after", value=1))
        assert (await rt.wait(run.id)).completion.result["expired"] is True
        assert COUNTS[f"body:{run.id}"] == 3


async def test_deadline_survives_a_restart(data_dir: Path, autojump_clock: Any) -> None:
    rt = make(data_dir)
    async with rt:
        run = (await rt.start("workflow:timeout_unhandled", {"timeout": 60}, owner=P)).run
        await waiting(rt, run.id)
        await trio.sleep(10)
    rt2 = make(data_dir)
    async with rt2:
        assert rt2.recovered["waiting"] == 1
        assert len(internals(rt2).supervisor) == 0
        assert rt2.get(run.id).status == "waiting"
        await trio.sleep(60)
        done = await rt2.wait(run.id)
        assert done.status == "failed" and done.completion.error.code == "WAIT_EXPIRED"


async def test_repeated_waits_on_one_key_with_timeouts(data_dir: Path, autojump_clock: Any) -> None:
    """Each wait on a key is its own slot; expired slots replay as expired after a restart."""
    rt = make(data_dir)
    async with rt:
        run = (await rt.start("workflow:retry_wait", {}, owner=P)).run
        await waiting(rt, run.id)
        await trio.sleep(35)  # three expiries
        rec = await waiting(rt, run.id)
        assert rec.waiting.waits[0].slot == "input:answer#4"
    rt2 = make(data_dir)
    async with rt2:
        assert rt2.get(run.id).waiting.waits[0].slot == "input:answer#4"
        await rt2.resume(run.id, InputResponse(key="answer", value=42))
        done = await rt2.wait(run.id)
        assert done.completion.result == {"value": 42, "expired": 3}
        wire = await assert_valid_log(rt2, run.id)
        assert customs(wire).count("perdure.wait_expired") == 3
        assert len(interrupts(wire)) == 4


# -- several open waits (R2) -----------------------------------------------------------------------


async def test_parallel_tool_calls_and_partial_resume(data_dir: Path) -> None:
    rt = make(data_dir)
    async with rt:
        run = (await rt.start("workflow:parallel", {"ids": ["a", "b", "c"]}, owner=P)).run
        rec = await waiting(rt, run.id, 3)
        assert [(w.key, w.reason, w.slot) for w in rec.waiting.waits] == [
            ("a", "tool", "tool:a#1"),
            ("b", "tool", "tool:b#1"),
            ("c", "tool", "tool:c#1"),
        ]
        assert rec.waiting.reason == "tool"
        wire = await assert_valid_log(rt, run.id)
        assert [e["type"] for e in wire] == [
            "RUN_STARTED",
            "RUN_FINISHED",
        ]  # one checkpoint for all
        [opened] = interrupts(wire)
        assert [(i["id"], i["reason"], i["toolCallId"]) for i in opened] == [
            ("tool:a", "tool_call", "a"),
            ("tool:b", "tool_call", "b"),
            ("tool:c", "tool_call", "c"),
        ]
        await rt.resume(run.id, ToolResult(tool_call_id="b", content="B"))
        rec = await waiting(rt, run.id, 2)
        assert [w.key for w in rec.waiting.waits] == ["a", "c"]
        wire = await assert_valid_log(rt, run.id)
        assert [e["type"] for e in wire] == [
            "RUN_STARTED",
            "RUN_FINISHED",
            "RUN_STARTED",
            "TOOL_CALL_RESULT",
            "RUN_FINISHED",
        ]
        assert [i["id"] for i in interrupts(wire)[-1]] == ["tool:a", "tool:c"]
        # A result for b again is a duplicate; another one conflicts.
        assert (await rt.resume(run.id, ToolResult(tool_call_id="b", content="B"))).duplicate
        with pytest.raises(perdure.SignalConflict):
            await rt.resume(run.id, ToolResult(tool_call_id="b", content="B2"))
        await rt.resume(run.id, ToolResult(tool_call_id="c", content="C"))
        rec = await waiting(rt, run.id, 1)
        assert [w.key for w in rec.waiting.waits] == ["a"]
        await rt.resume(run.id, ToolResult(tool_call_id="a", content="A"))
        done = await rt.wait(run.id)
        assert done.completion.result == {"results": {"a": "A", "b": "B", "c": "C"}}
        wire = await assert_valid_log(rt, run.id)
        assert [e["toolCallId"] for e in wire if e["type"] == "TOOL_CALL_RESULT"] == ["b", "c", "a"]


async def test_partial_resume_across_passivation_and_restart(
    data_dir: Path, autojump_clock: Any
) -> None:
    rt = make(data_dir, passivate_after=5.0)
    async with rt:
        run = (await rt.start("workflow:parallel", {"ids": ["a", "b"]}, owner=P)).run
        await waiting(rt, run.id, 2)
        await trio.sleep(10)
        assert len(internals(rt).supervisor) == 0
        await rt.resume(run.id, ToolResult(tool_call_id="a", content=1))
        await waiting(rt, run.id, 1)
    rt2 = make(data_dir)
    async with rt2:
        assert rt2.recovered["waiting"] == 1
        assert [w.key for w in rt2.get(run.id).waiting.waits] == ["b"]
        await rt2.resume(run.id, ToolResult(tool_call_id="b", content=2))
        done = await rt2.wait(run.id)
        assert done.completion.result == {"results": {"a": 1, "b": 2}}


async def test_expiry_closes_every_wait_of_the_call(data_dir: Path, autojump_clock: Any) -> None:
    rt = make(data_dir)
    async with rt:
        run = (
            await rt.start("workflow:parallel", {"ids": ["a", "b", "c"], "timeout": 20}, owner=P)
        ).run
        await waiting(rt, run.id, 3)
        await rt.resume(run.id, ToolResult(tool_call_id="b", content="B"))
        await waiting(rt, run.id, 2)
        done = await rt.wait(run.id)
        assert done.status == "completed"
        assert done.completion.result["expired"] in ("a", "c")
        assert done.waiting is None
        wire = await assert_valid_log(rt, run.id)
        assert customs(wire).count("perdure.wait_expired") == 2


async def test_two_waits_opened_by_concurrent_tasks(data_dir: Path) -> None:
    rt = make(data_dir)
    async with rt:
        run = (await rt.start("workflow:concurrent", {}, owner=P)).run
        rec = await waiting(rt, run.id, 2)
        assert sorted((w.reason, w.key) for w in rec.waiting.waits) == [
            ("approval", "a1"),
            ("tool", "t1"),
        ]
        wire = await assert_valid_log(rt, run.id)
        assert sorted(i["id"] for i in interrupts(wire)[-1]) == ["approval:a1", "tool:t1"]
        await rt.resume(run.id, perdure.ApprovalDecision(key="a1", approved=True))
        rec = await waiting(rt, run.id, 1)
        assert rec.waiting.reason == "tool"
        await rt.resume(run.id, ToolResult(tool_call_id="t1", content="T"))
        assert (await rt.wait(run.id)).completion.result == {"tool": "T", "approved": True}


async def test_concurrent_waits_with_passivation(data_dir: Path, autojump_clock: Any) -> None:
    """One of two concurrent waits is answered; the other idles past passivate_after."""
    rt = make(data_dir, passivate_after=5.0)
    async with rt:
        run = (await rt.start("workflow:concurrent", {}, owner=P)).run
        await waiting(rt, run.id, 2)
        await trio.sleep(1)
        await rt.resume(run.id, perdure.ApprovalDecision(key="a1", approved=True))
        await waiting(rt, run.id, 1)
        await trio.sleep(10)
        await rt.resume(run.id, ToolResult(tool_call_id="t1", content="T"))
        with trio.fail_after(60):
            done = await rt.wait(run.id)
        assert done.completion.result == {"tool": "T", "approved": True}


async def test_invalid_waits_are_refused_in_the_body(data_dir: Path) -> None:
    rt = make(data_dir)
    async with rt:
        run = (await rt.start("workflow:bad_waits", {}, owner=P)).run
        done = await rt.wait(run.id)
        assert done.status == "completed", done.completion
        codes = done.completion.result
        # 13 refused declarations, and a wait inside a step fails that step.
        assert codes[:13] == ["INVALID_INPUT"] * 13
        assert len(codes) == 14 and codes[13] in ("INVALID_INPUT", "STEP_FAILED")
        wire = await assert_valid_log(rt, run.id)
        assert interrupts(wire) == []


# -- passivation (R14) -------------------------------------------------------------------------------


async def test_signal_to_a_passivated_run(data_dir: Path, autojump_clock: Any) -> None:
    rt = make(data_dir, passivate_after=5.0)
    async with rt:
        run = (await rt.start("workflow:step_then_wait", {}, owner=P)).run
        await waiting(rt, run.id)
        assert len(internals(rt).supervisor) == 1
        await trio.sleep(6)
        assert len(internals(rt).supervisor) == 0
        assert internals(rt).supervisor.get(run.id) is None
        assert rt.get(run.id).status == "waiting"
        log_before = await read_log(rt, run.id)
        resumed = await rt.resume(run.id, ToolResult(tool_call_id="tc1", content="late"))
        assert not resumed.duplicate
        done = await rt.wait(run.id)
        assert done.completion.result == {"n": 1, "content": "late", "after": 1}
        # Re-activation replayed the body: the recorded step did not run again.
        assert COUNTS[f"body:{run.id}"] == 2
        assert COUNTS[f"step:{run.id}"] == 1
        wire = await assert_valid_log(rt, run.id)
        assert [e.to_wire() for e in log_before] == wire[: len(log_before)]
        assert [e["type"] for e in wire[len(log_before) :]] == [
            "RUN_STARTED",
            "TOOL_CALL_RESULT",
            "STEP_STARTED",
            "STEP_FINISHED",
            "RUN_FINISHED",
        ]
        await wait_until(lambda: len(internals(rt).supervisor) == 0, what="actor stopped")


async def test_passivated_run_answers_r12_without_running_its_body(
    data_dir: Path, autojump_clock: Any
) -> None:
    """Refusals of a passive run are decided from the durable wait alone."""
    rt = make(data_dir, passivate_after=5.0)
    async with rt:
        run = (await rt.start("workflow:step_then_wait", {}, owner=P)).run
        await waiting(rt, run.id)
        await trio.sleep(6)
        assert len(internals(rt).supervisor) == 0
        before = dump_store(internals(rt).store)
        with pytest.raises(perdure.NotWaiting):
            await rt.resume(run.id, ToolResult(tool_call_id="other", content=1))
        with pytest.raises(perdure.InvalidSignal):
            await rt.resume(run.id, ToolResult(tool_call_id="tc1", content=object()))
        assert dump_store(internals(rt).store) == before
        assert rt.get(run.id).status == "waiting"
        await rt.resume(run.id, ToolResult(tool_call_id="tc1", content=1))
        assert (await rt.wait(run.id)).status == "completed"


async def test_a_sequence_of_waits_each_passivated(data_dir: Path, autojump_clock: Any) -> None:
    rt = make(data_dir, passivate_after=5.0)
    async with rt:
        run = (await rt.start("workflow:sequence", {"n": 4}, owner=P)).run
        for i in range(4):
            rec = await waiting(rt, run.id)
            assert rec.waiting.waits[0].slot == f"event:e{i}#1"
            await trio.sleep(6)
            assert len(internals(rt).supervisor) == 0
            await rt.resume(run.id, ExternalEvent(name=f"e{i}", payload=i * 10))
        done = await rt.wait(run.id)
        assert done.completion.result == [0, 10, 20, 30]
        assert COUNTS[f"body:{run.id}"] == 5
        wire = await assert_valid_log(rt, run.id)
        assert customs(wire) == ["perdure.event", "got"] * 4
        assert len(interrupts(wire)) == 4


async def test_many_waiting_runs_need_no_actors(data_dir: Path, autojump_clock: Any) -> None:
    rt = make(data_dir, passivate_after=1.0)
    async with rt:
        runs = [(await rt.start("workflow:sequence", {"n": 1}, owner=P)).run.id for _ in range(200)]
        for run_id in runs:
            await waiting(rt, run_id)
        await trio.sleep(2)
        assert len(internals(rt).supervisor) == 0
        async with trio.open_nursery() as nursery:
            for run_id in runs:
                nursery.start_soon(rt.resume, run_id, ExternalEvent(name="e0", payload=run_id))
        for run_id in runs:
            assert (await rt.wait(run_id)).completion.result == [run_id]
        await wait_until(lambda: len(internals(rt).supervisor) == 0, what="all actors stopped")


# -- durability and restarts (R11, R26) -------------------------------------------------------------


_READER = """
import json, sys
from perdure.storage import Store
store = Store(sys.argv[1], readonly=True)
rec = store.get_run(sys.argv[2])
print(json.dumps({"status": rec.status,
                  "waits": [[w.slot, w.reason, w.key, w.deadline] for w in rec.waiting.waits]}))
store.close()
"""


async def test_checkpoint_is_durable_before_the_run_reports_waiting(data_dir: Path) -> None:
    """As soon as rt.get() says ``waiting``, another process opening the store sees the waits."""
    rt = make(data_dir, durability="sync")
    async with rt:
        run = (
            await rt.start("workflow:parallel", {"ids": ["x", "y"], "timeout": 3600}, owner=P)
        ).run
        while rt.get(run.id).status != "waiting":
            await trio.sleep(0)
        rec = rt.get(run.id)
        proc = await trio.run_process(
            [sys.executable, "-c", _READER, str(data_dir), run.id],
            capture_stdout=True,
            capture_stderr=True,
        )
        seen = json.loads(proc.stdout)
        assert seen == {
            "status": "waiting",
            "waits": [[w.slot, w.reason, w.key, w.deadline] for w in rec.waiting.waits],
        }
        assert [w[2] for w in seen["waits"]] == ["x", "y"]
        await rt.cancel(run.id)


async def test_resume_across_a_process_restart(data_dir: Path) -> None:
    rt = make(data_dir, durability="sync")
    async with rt:
        run = (await rt.start("workflow:step_then_wait", {}, owner=P)).run
        rec = await waiting(rt, run.id)
        log_before = await read_log(rt, run.id)
    assert COUNTS[f"body:{run.id}"] == 1
    rt2 = make(data_dir, durability="sync")
    async with rt2:
        assert rt2.recovered["waiting"] == 1
        assert rt2.recovered["running"] == 0
        # It stays passive: no actor, no replay, until a signal comes.
        await trio.sleep(0.05)
        assert len(internals(rt2).supervisor) == 0
        assert COUNTS[f"body:{run.id}"] == 1
        again = rt2.get(run.id)
        assert again.status == "waiting"
        assert again.waiting == rec.waiting
        assert await read_log(rt2, run.id) == log_before
        resumed = await rt2.resume(run.id, ToolResult(tool_call_id="tc1", content={"ok": 1}))
        assert resumed == perdure.Resumed(duplicate=False, run_id=run.id, key="tool:tc1")
        done = await rt2.wait(run.id)
        assert done.completion.result == {"n": 1, "content": {"ok": 1}, "after": 1}
        assert COUNTS[f"step:{run.id}"] == 1
        assert COUNTS[f"body:{run.id}"] == 2
        wire = await assert_valid_log(rt2, run.id)
        assert [e["type"] for e in wire] == [
            "RUN_STARTED",
            "STEP_STARTED",
            "STEP_FINISHED",
            "RUN_FINISHED",
            "RUN_STARTED",
            "TOOL_CALL_RESULT",
            "STEP_STARTED",
            "STEP_FINISHED",
            "RUN_FINISHED",
        ]
    rt3 = make(data_dir)
    async with rt3:
        assert rt3.recovered == {"running": 0, "pending": 0, "cancelling": 0, "waiting": 0}
        # The signal is remembered after the end too.
        assert (
            await rt3.resume(run.id, ToolResult(tool_call_id="tc1", content={"ok": 1}))
        ).duplicate


async def test_signal_stored_but_body_not_yet_continued_survives_restart(data_dir: Path) -> None:
    """A signal accepted just before the runtime closes is replayed into the body after reopening."""
    rt = make(data_dir, durability="sync")
    async with rt:
        run = (await rt.start("workflow:sequence", {"n": 2}, owner=P)).run
        await waiting(rt, run.id)
        await rt.resume(run.id, ExternalEvent(name="e0", payload="zero"))
    rt2 = make(data_dir)
    async with rt2:
        rec = await waiting(rt2, run.id)
        assert rec.waiting.waits[0].key == "e1"
        await rt2.resume(run.id, ExternalEvent(name="e1", payload="one"))
        done = await rt2.wait(run.id)
        assert done.completion.result == ["zero", "one"]
        wire = await assert_valid_log(rt2, run.id)
        assert customs(wire) == ["perdure.event", "got", "perdure.event", "got"]


async def test_signals_racing_passivation_never_strand_a_run(data_dir: Path) -> None:
    """Real clock, tiny passivate_after: signals land while actors are being passivated."""
    import random

    rng = random.Random(1234)
    rt = make(data_dir, durability="memory", passivate_after=0.002)
    async with rt:
        runs = [(await rt.start("workflow:sequence", {"n": 6}, owner=P)).run.id for _ in range(20)]
        stranded: list[str] = []

        async def drive(run_id: str) -> None:
            for i in range(6):
                orphan_since = None
                while True:
                    rec = rt.get(run_id)
                    if rec.status == "waiting" and rec.waiting.waits[0].key == f"e{i}":
                        break
                    if rec.status == "running" and internals(rt).supervisor.get(run_id) is None:
                        now = trio.current_time()
                        orphan_since = orphan_since or now
                        # Far above scheduling jitter: an actor that never comes back.
                        if now - orphan_since > 5:
                            stranded.append(f"{run_id} before e{i}")
                            return
                    else:
                        orphan_since = None
                    await trio.sleep(rng.random() * 0.003)
                await trio.sleep(rng.random() * 0.004)
                await rt.resume(run_id, ExternalEvent(name=f"e{i}", payload=i))

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                for run_id in runs:
                    nursery.start_soon(drive, run_id)
        assert stranded == []
        for run_id in runs:
            assert (await rt.wait(run_id)).completion.result == [0, 1, 2, 3, 4, 5]
