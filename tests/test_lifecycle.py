"""Run lifecycle (R1, R3, R15, R16): the transition table, completion, failure, cancellation."""

from __future__ import annotations

import contextlib
import itertools
from typing import Any

import msgspec
import pytest
import trio
import trio.testing
from helpers.checks import assert_valid_log, dump_store, read_log, wait_until, wire_log
from helpers.defs import BODY_CALLS

import perdure
from perdure.agui import MAX_EVENT_BYTES, TextMessageStartEvent
from perdure.runtime import STATUSES, TERMINAL, TRANSITIONS, check_transition
from perdure.storage import Store
from perdure.testing import internals

P = perdure.Project("p1")
C = perdure.Conversation("c1")

# The contract's lifecycle, written out independently of the implementation.
LEGAL = {
    ("pending", "running"),
    ("pending", "cancelled"),
    ("running", "waiting"),
    ("running", "completed"),
    ("running", "failed"),
    ("running", "cancelled"),
    ("waiting", "running"),
    ("waiting", "cancelled"),
}
ALL = ("pending", "running", "waiting", "completed", "failed", "cancelled")


# -- the table -----------------------------------------------------------------------------


def test_statuses_and_terminal_set() -> None:
    assert tuple(STATUSES) == ALL
    assert set(TERMINAL) == {"completed", "failed", "cancelled"}
    assert set(TRANSITIONS) == set(ALL)
    assert {(old, new) for old, news in TRANSITIONS.items() for new in news} == LEGAL


@pytest.mark.parametrize(("old", "new"), list(itertools.product(ALL, ALL)))
def test_every_pair_of_statuses(old: str, new: str) -> None:
    if (old, new) in LEGAL:
        check_transition("r1", old, new)
        return
    with pytest.raises(perdure.InvalidTransition) as info:
        check_transition("r1", old, new)
    err = info.value
    assert err.code == "INVALID_TRANSITION"
    assert err.http_status == 409
    assert err.detail == {"run_id": "r1", "old": old, "new": new}
    assert old in err.message and new in err.message


@pytest.mark.parametrize("terminal", sorted(TERMINAL))
def test_terminal_statuses_never_change(terminal: str) -> None:
    for new in (*ALL, "bogus", ""):
        with pytest.raises(perdure.InvalidTransition):
            check_transition("r1", terminal, new)


@pytest.mark.parametrize(("old", "new"), [("bogus", "running"), ("running", "bogus"), ("", "")])
def test_unknown_statuses_are_refused(old: str, new: str) -> None:
    with pytest.raises(perdure.InvalidTransition):
        check_transition("r1", old, new)


# -- a run's path through the lifecycle ---------------------------------------------------


async def test_completed_run_record_and_log(make_rt: Any) -> None:
    rt = make_rt()
    async with rt:
        started = await rt.start("workflow:echo", {"a": [1, 2, {"b": None}]}, owner=P)
        assert not started.duplicate
        run = started.run
        assert run.status == "running"
        assert run.kind == "workflow" and run.target == "workflow:echo" and run.owner == P
        assert run.root_id == run.id and run.parent_id is None
        assert run.trigger == perdure.Trigger(type="api")
        assert run.completion is None
        done = await rt.wait(run.id)
        assert done.status == "completed"
        assert done.completion is not None
        assert done.completion.result == {"a": [1, 2, {"b": None}]}
        assert done.completion.error is None
        assert done.created_at <= done.started_at <= done.finished_at  # type: ignore[operator]
        assert done == rt.get(run.id)
        wire = await assert_valid_log(rt, run.id)
        assert [e["type"] for e in wire] == ["RUN_STARTED", "RUN_FINISHED"]
        assert wire[-1]["result"] == {"a": [1, 2, {"b": None}]}


async def test_thread_ids_agent_and_project_runs(make_rt: Any) -> None:
    rt = make_rt()
    async with rt:
        agent = await rt.start("agent:chat", {"messages": []}, owner=C)
        job = await rt.start("task:job", {}, owner=P)
        assert agent.run.kind == "agent" and job.run.kind == "job"
        for run in (agent.run, job.run):
            await rt.wait(run.id)
        agent_log = await assert_valid_log(rt, agent.run.id)
        job_log = await assert_valid_log(rt, job.run.id)
        assert agent_log[0]["threadId"] == "c1"  # the conversation
        assert job_log[0]["threadId"] == job.run.id  # project runs: the root run id
        assert [e["type"] for e in agent_log] == [
            "RUN_STARTED",
            "TEXT_MESSAGE_START",
            "TEXT_MESSAGE_CONTENT",
            "TEXT_MESSAGE_END",
            "RUN_FINISHED",
        ]
        assert agent_log[2]["delta"] == "hello"


async def test_terminal_run_never_changes(make_rt: Any) -> None:
    """Cancelling a completed, failed or cancelled run changes nothing (R1, R15)."""
    rt = make_rt()
    async with rt:
        ok = (await rt.start("workflow:echo", {}, owner=P)).run.id
        bad = (await rt.start("task:fail", {}, owner=P)).run.id
        stop = (await rt.start("workflow:block", {}, owner=P)).run.id
        await rt.cancel(stop, "first")
        for rid in (ok, bad):
            await rt.wait(rid)
        before = dump_store(internals(rt).store)
        for rid, status in ((ok, "completed"), (bad, "failed"), (stop, "cancelled")):
            result = await rt.cancel(rid, "again")
            assert result.cancelled is False
            assert result.run.status == status
            assert result.run == rt.get(rid)
        assert dump_store(internals(rt).store) == before
    rt2 = make_rt()
    async with rt2:
        assert dump_store(internals(rt2).store) == before
        assert [rt2.get(r).status for r in (ok, bad, stop)] == ["completed", "failed", "cancelled"]


# -- completion metadata (R3) -------------------------------------------------------------


async def test_completion_metadata_on_record_and_terminal_event(data_dir: Any) -> None:
    rt = perdure.Runtime(data_dir)

    @rt.agent("llm")
    async def llm(ctx: perdure.AgentContext, inp: perdure.AgentInput) -> dict:
        ctx.report_usage(
            perdure.TokenUsage(provider="acme", model="m-1", input_tokens=10, output_tokens=3)
        )
        ctx.report_usage(perdure.TokenUsage(provider="other", model="m-2", total_tokens=5))
        ctx.set_model("m-1", "acme")
        ctx.set_finish_reason("stop")
        await ctx.say("hi")
        return {"answer": 42}

    async with rt:
        run = (await rt.start("agent:llm", {}, owner=C)).run
        done = await rt.wait(run.id)
        comp = done.completion
        assert comp is not None
        assert comp.status == "completed" and comp.result == {"answer": 42}
        assert comp.model == "m-1" and comp.provider == "acme" and comp.finish_reason == "stop"
        assert comp.usage == [
            perdure.TokenUsage(provider="acme", model="m-1", input_tokens=10, output_tokens=3),
            perdure.TokenUsage(provider="other", model="m-2", total_tokens=5),
        ]
        wire = await assert_valid_log(rt, run.id)
        assert wire[-1]["usage"] == [
            {"provider": "acme", "model": "m-1", "inputTokens": 10, "outputTokens": 3},
            {"provider": "other", "model": "m-2", "totalTokens": 5},
        ]
        assert wire[-1]["result"] == {"answer": 42}
    async with perdure.Runtime(data_dir) as again:
        assert again.get(run.id) == done  # stored, not only in memory


async def test_report_usage_keyword_form(data_dir: Any) -> None:
    rt = perdure.Runtime(data_dir)

    @rt.task("counted")
    async def counted(ctx: perdure.RunContext, inp: dict) -> None:
        ctx.report_usage(model="m", provider="p", input_tokens=5, output_tokens=7)

    async with rt:
        run = (await rt.start("task:counted", {}, owner=P)).run
        done = await rt.wait(run.id)
        assert done.completion is not None
        assert done.completion.usage == [
            perdure.TokenUsage(provider="p", model="m", input_tokens=5, output_tokens=7)
        ]
        wire = await assert_valid_log(rt, run.id)
        assert wire[-1]["usage"] == [
            {"provider": "p", "model": "m", "inputTokens": 5, "outputTokens": 7}
        ]


# -- failing bodies -----------------------------------------------------------------------


class QuotaExceeded(perdure.PerdureError):
    code = "QUOTA_EXCEEDED"


async def test_failing_bodies_fail_with_a_code(data_dir: Any) -> None:
    rt = perdure.Runtime(data_dir)

    @rt.task("raise")
    async def raise_(ctx: perdure.RunContext, inp: dict) -> None:
        ctx.report_usage(perdure.TokenUsage(model="m", input_tokens=1))
        kind = inp["kind"]
        if kind == "value":
            raise ValueError("boom")
        if kind == "perdure":
            raise perdure.InvalidInput("bad thing", field="x")
        if kind == "custom":
            raise QuotaExceeded("too much", used=7, obj=object())
        if kind == "open-message":
            await ctx.emit(TextMessageStartEvent(message_id="m1", role="assistant"))
            raise RuntimeError("mid-message")

    @rt.task("bad-result")
    async def bad_result(ctx: perdure.RunContext, inp: dict) -> object:
        return {"x": object()}

    async with rt:
        runs = {}
        for kind in ("value", "perdure", "custom", "open-message"):
            runs[kind] = (await rt.start("task:raise", {"kind": kind}, owner=P)).run.id
        runs["result"] = (await rt.start("task:bad-result", {}, owner=P)).run.id
        expected = {
            "value": "UNHANDLED_EXCEPTION",
            "perdure": "INVALID_INPUT",
            "custom": "QUOTA_EXCEEDED",
            "open-message": "UNHANDLED_EXCEPTION",
            "result": "SERIALIZATION_ERROR",
        }
        for kind, rid in runs.items():
            done = await rt.wait(rid)
            assert done.status == "failed", kind
            assert done.completion is not None and done.completion.error is not None
            err = done.completion.error
            assert err.code == expected[kind], (kind, err)
            wire = await assert_valid_log(rt, rid)
            assert wire[-1]["type"] == "RUN_ERROR"
            assert wire[-1]["code"] == expected[kind]
        value_err = rt.get(runs["value"]).completion.error  # type: ignore[union-attr]
        assert value_err.message == "ValueError: boom"
        assert value_err.detail["type"] == "ValueError"
        assert "boom" in value_err.detail["traceback"]
        assert rt.get(runs["perdure"]).completion.error.detail == {"field": "x"}  # type: ignore[union-attr]
        custom = rt.get(runs["custom"]).completion.error  # type: ignore[union-attr]
        assert str(custom.detail["used"]) == "7" and isinstance(custom.detail["obj"], str)
        # usage is kept on failure too, on RUN_ERROR
        wire = await assert_valid_log(rt, runs["value"])
        assert wire[-1]["usage"] == [{"model": "m", "inputTokens": 1}]
        # an item the body left open is closed before RUN_ERROR (R19)
        wire = await assert_valid_log(rt, runs["open-message"])
        assert [e["type"] for e in wire] == [
            "RUN_STARTED",
            "TEXT_MESSAGE_START",
            "TEXT_MESSAGE_END",
            "RUN_ERROR",
        ]


@pytest.mark.no_log_check
async def test_huge_error_message_keeps_events_under_the_cap(data_dir: Any) -> None:
    rt = perdure.Runtime(data_dir)

    @rt.task("loud")
    async def loud(ctx: perdure.RunContext, inp: dict) -> None:
        raise ValueError("x" * 300_000)

    async with rt:
        run = (await rt.start("task:loud", {}, owner=P)).run
        done = await rt.wait(run.id)
        assert done.status == "failed"
        events = await read_log(rt, run.id)
        for event in events:
            assert len(msgspec.json.encode(event.to_wire())) <= MAX_EVENT_BYTES


# -- cancellation (R15, R16) --------------------------------------------------------------


async def test_cancel_pending_run(make_rt: Any) -> None:
    rt = make_rt(max_running=1)
    async with rt:
        first = (await rt.start("workflow:block", {"gate": "a"}, owner=P)).run
        second = (await rt.start("workflow:block", {"gate": "b"}, owner=P)).run
        assert first.status == "running"
        assert second.status == "pending"
        assert rt.get(second.id).status == "pending"
        assert await read_log(rt, second.id) == []

        result = await rt.cancel(second.id, "not needed")
        assert result.cancelled is True
        assert result.run.status == "cancelled"
        assert result.run.cancel is not None and result.run.cancel.reason == "not needed"
        assert result.run.completion == perdure.Completion(status="cancelled")
        wire = await assert_valid_log(rt, second.id)
        assert [e["type"] for e in wire] == ["RUN_STARTED", "RUN_FINISHED"]
        assert wire[-1]["outcome"] == {"type": "cancelled"}
        assert rt.get(first.id).status == "running"  # the other run is untouched

        rt.gates.open("a")
        await rt.wait(first.id)
        # the cancelled run never runs, not even once the slot is free again
        await trio.sleep(0.02)
        assert BODY_CALLS[second.id] == 0
        assert rt.get(second.id) == result.run


async def test_cancel_running_run(make_rt: Any) -> None:
    rt = make_rt()
    async with rt:
        run = (await rt.start("workflow:block", {}, owner=P)).run
        await wait_until(lambda: rt.get(run.id).last_event_id == 2, what="blocked event")
        result = await rt.cancel(run.id, "user")
        assert result.cancelled is True
        assert result.run.status == "cancelled"
        assert rt.get(run.id) == result.run
        wire = await assert_valid_log(rt, run.id)
        assert [e["type"] for e in wire] == ["RUN_STARTED", "CUSTOM", "RUN_FINISHED"]
        assert wire[-1]["outcome"] == {"type": "cancelled"}
        # the body stays cancelled: opening its gate now does nothing
        rt.gates.open()
        await trio.sleep(0.01)
        assert rt.get(run.id) == result.run


async def test_cancelled_body_may_clean_up_under_a_shield(data_dir: Any) -> None:
    rt = perdure.Runtime(data_dir)
    seen: list[str] = []

    @rt.workflow("tidy")
    async def tidy(ctx: perdure.RunContext, inp: dict) -> None:
        await ctx.custom("working")
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            seen.append("cancelled")
            with trio.CancelScope(shield=True):
                await trio.sleep(0.01)
                await ctx.custom("cleaned", {"ok": True})
            raise

    async with rt:
        run = (await rt.start("workflow:tidy", {}, owner=P)).run
        await wait_until(lambda: rt.get(run.id).last_event_id == 2)
        result = await rt.cancel(run.id, "stop")
        assert result.cancelled and result.run.status == "cancelled"
        assert seen == ["cancelled"]
        wire = await assert_valid_log(rt, run.id)
        assert [(e["type"], e.get("name")) for e in wire] == [
            ("RUN_STARTED", None),
            ("CUSTOM", "working"),
            ("CUSTOM", "cleaned"),
            ("RUN_FINISHED", None),
        ]


async def test_body_ignoring_cancellation_is_finalized_after_the_grace(
    data_dir: Any, autojump_clock: Any
) -> None:
    rt = perdure.Runtime(data_dir, cancel_grace=0.1)
    entered = trio.Event()
    body_done = trio.Event()

    @rt.workflow("stubborn")
    async def stubborn(ctx: perdure.RunContext, inp: dict) -> None:
        entered.set()
        try:
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):
                await trio.sleep(0.8)
                body_done.set()

    async with rt:
        run = (await rt.start("workflow:stubborn", {}, owner=P)).run
        await entered.wait()
        t0 = trio.current_time()
        result = await rt.cancel(run.id, "now")
        elapsed = trio.current_time() - t0  # virtual seconds
        assert result.cancelled and result.run.status == "cancelled"
        # Finalized exactly at the grace (0.1 s), not when the body ends (0.8 s).
        assert elapsed == pytest.approx(0.1, abs=1e-9), elapsed
        assert not body_done.is_set()
        final = await assert_valid_log(rt, run.id)
        await body_done.wait()  # the abandoned body ends later, writing nothing
        assert await assert_valid_log(rt, run.id) == final


@pytest.mark.no_log_check
async def test_abandoned_body_cannot_write_after_the_terminal_event(data_dir: Any) -> None:
    rt = perdure.Runtime(data_dir, cancel_grace=0.05)
    tried = trio.Event()

    @rt.workflow("late")
    async def late(ctx: perdure.RunContext, inp: dict) -> None:
        try:
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):
                await trio.sleep(0.2)
                with contextlib.suppress(perdure.PerdureError):
                    await ctx.custom("too-late")
                tried.set()

    async with rt:
        run = (await rt.start("workflow:late", {}, owner=P)).run
        await trio.sleep(0.01)
        result = await rt.cancel(run.id, "now")
        assert result.run.status == "cancelled"
        with trio.fail_after(5):
            await tried.wait()  # the abandoned body woke up and tried to log
        assert rt.get(run.id) == result.run
        wire = wire_log(await read_log(rt, run.id))
        assert wire[-1]["type"] == "RUN_FINISHED"


async def test_concurrent_cancels_cancel_once(make_rt: Any) -> None:
    rt = make_rt()
    async with rt:
        run = (await rt.start("workflow:block", {}, owner=P)).run
        results: list[perdure.Cancelled] = []

        async def cancel() -> None:
            results.append(await rt.cancel(run.id, "race"))

        async with trio.open_nursery() as nursery:
            for _ in range(10):
                nursery.start_soon(cancel)
        assert sorted(r.cancelled for r in results) == [False] * 9 + [True]
        assert {r.run.status for r in results} == {"cancelled"}
        await assert_valid_log(rt, run.id)


async def test_freed_slots_admit_pending_runs_in_order(make_rt: Any) -> None:
    rt = make_rt(max_running=2)
    async with rt:
        ids = [
            (await rt.start("workflow:block", {"gate": f"g{i}"}, owner=P)).run.id for i in range(5)
        ]
        assert [rt.get(i).status for i in ids] == ["running"] * 2 + ["pending"] * 3
        await wait_until(lambda: len(rt.gates.entered) == 2)
        assert sorted(rt.gates.entered) == sorted(ids[:2])
        for i in range(5):
            # each freed slot admits the oldest pending run: first come, first served
            rt.gates.open(f"g{i}")
            assert (await rt.wait(ids[i])).status == "completed"
            expect = min(i + 3, 5)
            await wait_until(
                lambda expect=expect: len(rt.gates.entered) == expect, what=f"{expect} entered"
            )
            assert rt.gates.entered[2:] == ids[2:expect]
            running = [rid for rid in ids if rt.get(rid).status == "running"]
            assert len(running) <= 2
        for rid in ids:
            await assert_valid_log(rt, rid)


async def test_run_started_while_a_slot_frees_is_admitted(make_rt: Any) -> None:
    rt = make_rt(max_running=1)
    async with rt:
        first = (await rt.start("workflow:block", {}, owner=P)).run
        rt.gates.open()
        await rt.wait(first.id)  # terminal; its actor is about to give the slot back
        second = (await rt.start("workflow:echo", {}, owner=P)).run
        with trio.move_on_after(0.5):
            await rt.wait(second.id)
        assert rt.get(second.id).status == "completed"


async def test_close_changes_no_run_and_reopen_recovers(make_rt: Any, data_dir: Any) -> None:
    """Closing stops actors without writing (R26): a running run resumes at the next open."""
    rt = make_rt()
    async with rt:
        run = (await rt.start("workflow:block", {}, owner=P)).run
        await wait_until(lambda: rt.get(run.id).last_event_id == 2)
        before = dump_store(internals(rt).store)
    closed = Store(data_dir, readonly=True)
    try:
        assert dump_store(closed) == before  # closing wrote nothing
    finally:
        closed.close()
    rt2 = make_rt()
    async with rt2:
        rec = rt2.get(run.id)
        assert rec.status == "running"
        assert rec.completion is None
        await wait_until(lambda: len(rt2.gates.entered) == 1, what="body re-entered")
        rt2.gates.open()
        done = await rt2.wait(run.id)
        assert done.status == "completed"
        wire = await assert_valid_log(rt2, run.id)
        # the recorded CUSTOM event is not logged twice by the replay
        assert [e["type"] for e in wire] == ["RUN_STARTED", "CUSTOM", "RUN_FINISHED"]


async def test_wait_returns_the_stored_terminal_record_and_fails_on_close(make_rt: Any) -> None:
    """``wait()`` parks on the run's end only: it returns the committed terminal record
    (not a staged one), and a runtime closing under it raises instead of hanging."""
    rt = make_rt()
    errors: list[BaseException] = []
    with trio.fail_after(10):
        async with trio.open_nursery() as outer, rt:
            run = (await rt.start("workflow:block", {"gate": "g"}, owner=P)).run
            waited: list[perdure.RunRecord] = []

            async def waiter() -> None:
                waited.append(await rt.wait(run.id))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(waiter)
                await wait_until(lambda: len(rt.gates.entered) == 1, what="body entered")
                assert waited == []  # RUN_STARTED and CUSTOM commits wake no one
                rt.gates.open("g")
            assert waited == [rt.get(run.id)]
            assert waited[0].status == "completed" and waited[0].completion is not None

            parked = (await rt.start("workflow:block", {"gate": "never"}, owner=P)).run
            await wait_until(lambda: len(rt.gates.entered) == 2, what="second body")

            async def closing_waiter() -> None:
                try:
                    await rt.wait(parked.id)
                except perdure.PerdureError as exc:
                    errors.append(exc)

            outer.start_soon(closing_waiter)
            await trio.testing.wait_all_tasks_blocked()
            # closing the runtime woke the waiter; ``outer`` would hang otherwise
    assert len(errors) == 1 and "closed" in str(errors[0])
