"""Unit tests of the engine's pieces: the journal, the lifecycle changes, the writer chains,
and the behaviours the restructure fixed (replay-stable clock, inline sync steps under
virtual time, concurrent steps, an agent run's identity in its input)."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio
import trio.testing
from helpers.defs import new_rt

import perdure
from perdure.agui import (
    RunErrorEvent,
    RunFinishedEvent,
    RunFinishedInterruptOutcome,
    RunStartedEvent,
    TextMessageEndEvent,
)
from perdure.runtime import TERMINAL, TRANSITIONS
from perdure.storage import Chain, JournalEntry, RunRecord, Store, Wait, Writer
from perdure.testing import internals

P = perdure.Project("p1")


# -- the journal ----------------------------------------------------------------------------


def _journal(entries: list[JournalEntry], start: float = 100.0) -> Any:
    from perdure.runtime._journal import Journal  # the unit under test

    return Journal("r1", entries, start)


def test_journal_replays_positional_entries_and_skips_keyed_ones() -> None:
    stored = [
        JournalEntry("step", "a", b"\x01", at=101.0),
        JournalEntry("signal", "tool:t1#1", b"x", at=150.0),
        JournalEntry("emit", "CUSTOM", at=102.0),
        JournalEntry("child", "task:x", b"kid", at=103.0),
    ]
    j = _journal(stored)
    assert j.replaying and j.has_children
    assert j.take("step", "a") is stored[0]
    assert j.time == 101.0  # the clock a replayed body sees is the one it saw live
    assert j.take("emit", "CUSTOM") is stored[2]
    assert j.take("child", "task:x") is stored[3]
    assert not j.replaying and j.take("step", "b") is None
    assert j.slot("tool:t1#1") is stored[1] and j.latest("tool:t1") is stored[1]
    assert j.next_buffer_slot("tool:t1") == "tool:t1#2"


def test_journal_refuses_a_different_action_at_a_recorded_position() -> None:
    j = _journal([JournalEntry("step", "a")])
    with pytest.raises(perdure.NonDeterminismError) as info:
        j.take("step", "b")
    assert info.value.detail["expected"] == {"kind": "step", "name": "a"}
    assert info.value.detail["position"] == 0


def test_journal_slots_number_waits_per_key_and_void_removes() -> None:
    j = _journal([JournalEntry("buffered", "event:e#1"), JournalEntry("void", "event:e#1")])
    assert j.slot("event:e#1") is None and j.latest("event:e") is None
    assert j.next_slot("event:e") == "event:e#1"
    assert j.next_slot("event:e") == "event:e#2"
    assert j.next_slot("tool:x") == "tool:x#1"
    j.rewind()
    assert j.next_slot("event:e") == "event:e#1" and j.pos == 0


def test_journal_time_only_moves_forward() -> None:
    j = _journal([JournalEntry("step", "a", at=90.0), JournalEntry("step", "b", at=120.0)])
    j.take("step", "a")
    assert j.time == 100.0  # an older entry never moves the clock back
    j.take("step", "b")
    j.advance_time(110.0)
    assert j.time == 120.0
    j.advance_time(130.0)
    assert j.time == 130.0


def test_journal_entry_kinds_are_one_literal() -> None:
    from perdure.runtime._journal import KEYED, POSITIONAL

    assert KEYED.isdisjoint(POSITIONAL)
    assert {"step", "retry", "emit", "sleep", "child", "expect"} <= POSITIONAL
    assert {"signal", "buffered", "void"} == KEYED


def test_journal_entries_written_without_a_time_still_decode() -> None:
    """Entries stored before ``at`` existed (array form without it) read back with None."""
    old = msgspec.msgpack.encode(["step", "a", b"\x01"])
    entry = msgspec.msgpack.decode(old, type=JournalEntry)
    assert entry.at is None and entry.value == b"\x01"


# -- lifecycle changes ----------------------------------------------------------------------


def _rec(status: str, **fields: Any) -> RunRecord:
    return RunRecord(
        id="r1",
        seq=1,
        kind="workflow",
        owner=P,
        target="workflow:w",
        root_id="r1",
        status=status,  # type: ignore[arg-type]
        created_at=1.0,
        updated_at=1.0,
        **fields,
    )


def test_terminal_is_one_definition() -> None:
    assert {s for s, allowed in TRANSITIONS.items() if not allowed} == TERMINAL
    for status in TRANSITIONS:
        assert _rec(status).terminal == (status in TERMINAL)


def test_begin_logs_run_started() -> None:
    from perdure.runtime._lifecycle import begin

    change = begin(_rec("pending"), 5.0)
    assert change.record.status == "running" and change.record.started_at == 5.0
    assert [type(e) for e in change.events] == [RunStartedEvent]
    with pytest.raises(perdure.InvalidTransition):
        begin(_rec("running"), 5.0)


def test_entering_and_leaving_waiting_write_the_interrupt_and_the_new_segment() -> None:
    from perdure.runtime._lifecycle import enter_waiting, leave_wait
    from perdure.runtime._signals import interrupt_for

    waits = [
        Wait(key="a", reason="tool", slot="tool:a#1"),
        Wait(key="b", reason="tool", slot="tool:b#1"),
    ]
    closing = [TextMessageEndEvent(message_id="m")]
    change = enter_waiting(
        _rec("running", expected=["tool:a", "event:z"]),
        waits,
        waits,
        [interrupt_for(w) for w in waits],
        closing,
    )
    rec = change.record
    assert rec.status == "waiting" and rec.expected == ["event:z"]
    assert change.events[0] == closing[0]
    finished = change.events[-1]
    assert isinstance(finished, RunFinishedEvent)
    assert isinstance(finished.outcome, RunFinishedInterruptOutcome)
    # one of two answered: a new segment that ends with an interrupt for the other
    partial = leave_wait(rec, ["tool:a#1"], [], [interrupt_for(waits[1])])
    assert partial.record.status == "waiting"
    assert [type(e) for e in partial.events] == [RunStartedEvent, RunFinishedEvent]
    rest = leave_wait(partial.record, ["tool:b#1"], [], [])
    assert rest.record.status == "running" and rest.record.waiting is None
    assert [type(e) for e in rest.events] == [RunStartedEvent]


def test_finish_from_waiting_opens_a_segment_and_closes_what_is_open() -> None:
    from perdure.runtime._lifecycle import finish

    rec = _rec("waiting", last_event_id=3)
    error = perdure.ErrorInfo("X", "m" * 10_000)
    change = finish(
        rec, "failed", error=error, closing=[TextMessageEndEvent(message_id="m")], now=9
    )
    assert [type(e) for e in change.events] == [RunStartedEvent, TextMessageEndEvent, RunErrorEvent]
    done = change.record
    assert done.status == "failed" and done.finished_at == 9 and done.waiting is None
    assert done.completion is not None and done.completion.error is not None
    assert done.completion.error.message.endswith("[truncated]")
    with pytest.raises(perdure.InvalidTransition):
        finish(done, "completed", now=10)


# -- writer chains (R32) ----------------------------------------------------------------------


async def test_a_failed_batch_fails_the_later_batches_of_its_chain_only(tmp_path: Path) -> None:
    store = Store(tmp_path / "data", durability="process")
    writer = Writer(store)
    try:
        runs = store.dbs["runs"]
        chain, other = Chain(), Chain()
        bad = writer.submit([(runs, b"k" * 600, b"v")], chain)  # over LMDB's key limit
        later = writer.submit([(runs, b"a", b"1")], chain)
        unrelated = writer.submit([(runs, b"b", b"2")], other)
        for pending in (bad, later):
            with pytest.raises(perdure.StorageError):
                await writer.wait(pending)
        await writer.wait(unrelated)
        with store.read() as txn:
            assert txn.get(b"a", db=runs) is None and txn.get(b"b", db=runs) == b"2"
        # The chain stays failed: a batch computed on top of the failed ones never lands.
        with pytest.raises(perdure.StorageError):
            await writer.commit([(runs, b"c", b"3")], chain)
        await writer.commit([(runs, b"c", b"3")], Chain())
    finally:
        await writer.aclose()
        store.close()


async def test_a_failed_commit_rolls_the_run_back_and_it_goes_on(data_dir: Path) -> None:
    """A step whose commit fails raises StorageError in the body; the run's memory is
    rolled back to what is stored, so what the body does next gets the next event ids
    (the suite's log check verifies there is no gap) and the run completes."""
    rt = new_rt(data_dir)

    @rt.workflow("resilient")
    async def resilient(ctx: perdure.RunContext, inp: dict) -> dict:
        await ctx.step("first", lambda: 1, inline=True)
        with contextlib.suppress(perdure.StorageError):
            await ctx.step("boom", lambda: 2, inline=True)
        return {"after": await ctx.step("second", lambda: 3, inline=True)}

    async with rt:
        engine = internals(rt)
        real_submit = engine.writer.submit
        failed = {"n": 0}

        def failing_submit(ops: Any, chain: Any = None) -> Any:
            # The commit of step "boom" gets an op LMDB refuses (a key over its limit).
            if failed["n"] == 0 and any(b"boom" in (op[2] or b"") for op in ops):
                failed["n"] += 1
                ops = [*ops, (engine.store.dbs["runs"], b"k" * 600, b"v")]
            return real_submit(ops, chain)

        engine.writer.submit = failing_submit
        run = (await rt.start("workflow:resilient", {}, owner=P)).run
        done = await rt.wait(run.id)
        log = [e.to_wire() async for e in rt.events(run.id, follow=False)]
    assert failed["n"] == 1
    assert done.status == "completed" and done.completion is not None
    assert done.completion.result == {"after": 3}
    steps = [e["stepName"] for e in log if e["type"] == "STEP_STARTED"]
    assert steps == ["first", "second"]


# -- the clock a body sees (ctx.now) ----------------------------------------------------------


async def test_ctx_now_is_stable_across_passivation_and_replay(
    data_dir: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """``t0 = ctx.now()`` before a one-hour durable sleep still reads t0 after the run was
    passivated and replayed, and the time after the sleep is t0 + 1 h."""
    rt = new_rt(data_dir, passivate_after=60)
    seen: list[tuple[str, float]] = []

    @rt.workflow("clock")
    async def clock(ctx: perdure.RunContext, inp: dict) -> dict:
        await ctx.step("first", lambda: None, inline=True)
        t0 = ctx.now()
        seen.append(("t0", t0))
        await ctx.sleep(3600)
        seen.append(("after", ctx.now()))
        return {"t0": t0, "elapsed": ctx.now() - t0}

    async with rt:
        run = (await rt.start("workflow:clock", {}, owner=P)).run
        done = await rt.wait(run.id)
    t0s = [t for name, t in seen if name == "t0"]
    assert len(t0s) == 2 and t0s[0] == t0s[1]  # replayed after the passivation: same value
    assert done.completion is not None
    assert done.completion.result["elapsed"] == pytest.approx(3600, abs=0.01)


def test_sync_steps_under_a_mock_clock_are_deterministic(data_dir: Path) -> None:
    """Plain (sync) step functions run inline under virtual time: a step timeout does not
    fire while the function runs, and clock readings repeat exactly run after run."""

    def blocking_but_quick() -> float:
        time.sleep(0.05)  # real time passes; virtual time must not jump meanwhile
        return 1.0

    async def one(path: Path) -> tuple[Any, ...]:
        rt = perdure.Runtime(path)

        @rt.workflow("sim")
        async def sim(ctx: perdure.RunContext, inp: dict) -> dict:
            value = await ctx.step("quick", blocking_but_quick, timeout=1.0)
            await ctx.sleep(10)
            return {"value": value, "now": ctx.now() - ctx.run.created_at}

        async with rt:
            run = (await rt.start("workflow:sim", {}, owner=P)).run
            done = await rt.wait(run.id)
        assert done.completion is not None
        return done.status, done.completion.result, trio.current_time()

    results = []
    for i in range(3):
        results.append(
            trio.run(one, data_dir / str(i), clock=trio.testing.MockClock(autojump_threshold=0))
        )
    assert results[0][0] == "completed"
    assert results[0] == results[1] == results[2]


async def test_inline_steps_per_definition_run_on_the_trio_thread(data_dir: Path) -> None:
    import threading

    rt = new_rt(data_dir)
    threads: dict[str, int] = {}

    @rt.workflow("inline", inline_steps=True)
    async def inline(ctx: perdure.RunContext, inp: dict) -> dict:
        await ctx.step("a", lambda: threads.setdefault("a", threading.get_ident()))
        await ctx.step("b", lambda: threads.setdefault("b", threading.get_ident()), inline=False)
        return {}

    async with rt:
        run = (await rt.start("workflow:inline", {}, owner=P)).run
        assert (await rt.wait(run.id)).status == "completed"
    assert threads["a"] == threading.get_ident()
    assert threads["b"] != threading.get_ident()


# -- messages that say what happened --------------------------------------------------------


async def test_concurrent_steps_run_and_are_journaled_by_key(data_dir: Path) -> None:
    """Steps awaited concurrently (a nursery) run at once and are keyed, not positional.

    (This replaced a test of the old refusal; tests/test_concurrent_steps.py has the rest.)
    """
    rt = new_rt(data_dir)
    both_running = trio.Event()
    running = 0

    @rt.workflow("two-at-once")
    async def two(ctx: perdure.RunContext, inp: dict) -> dict:
        async def slow(tag: str) -> str:
            nonlocal running
            running += 1
            if running == 2:
                both_running.set()
            await both_running.wait()  # only returns once both are in flight
            return tag

        results: dict[str, str] = {}

        async def one(tag: str) -> None:
            results[tag] = await ctx.step(tag, slow, tag)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(one, "a")
            nursery.start_soon(one, "b")
        return results

    async with rt:
        run = (await rt.start("workflow:two-at-once", {}, owner=P)).run
        done = await rt.wait(run.id)
        journal = internals(rt).store.journal(run.id)
    assert done.status == "completed" and done.completion is not None
    assert done.completion.result == {"a": "a", "b": "b"}
    assert sorted((e.kind, e.name) for e in journal) == [
        ("kstep", "step:a#1"),
        ("kstep", "step:b#1"),
    ]


async def test_an_agent_run_input_names_the_run_itself(data_dir: Path) -> None:
    rt = new_rt(data_dir)
    seen: list[perdure.AgentInput] = []

    @rt.agent("echo-ids")
    async def echo_ids(ctx: perdure.AgentContext, inp: perdure.AgentInput) -> dict:
        seen.append(inp)
        return {}

    async with rt:
        inp = perdure.AgentInput(thread_id="someone-else", run_id="not-this-one")
        run = (await rt.start("agent:echo-ids", inp, owner=perdure.Conversation("c1"))).run
        await rt.wait(run.id)
        stored = rt.get(run.id).input
    assert (seen[0].thread_id, seen[0].run_id) == ("c1", run.id)
    assert (stored["threadId"], stored["runId"]) == ("c1", run.id)


async def test_host_covers_resume_and_publish(data_dir: Path) -> None:
    host = perdure.Host(data_dir)

    @host.workflow("approve")
    async def approve(ctx: perdure.RunContext, inp: dict) -> dict:
        decision = await ctx.wait_for_approval("ok")
        event = await ctx.wait_for_event("paid")
        return {"approved": decision.approved, "paid": event}

    def drive() -> perdure.RunRecord:
        with host:
            run = host.start("workflow:approve", {}, owner=P).run
            while host.get(run.id).status != "waiting":
                time.sleep(0.01)
            assert not host.resume(
                run.id, perdure.ApprovalDecision(key="ok", approved=True)
            ).duplicate
            while not (host.get(run.id).waiting and host.get(run.id).waiting.reason == "event"):
                time.sleep(0.01)
            assert host.publish(perdure.ExternalEvent(name="paid", payload=5), owner=P) == [run.id]
            return host.wait(run.id)

    done = await trio.to_thread.run_sync(drive)
    assert done.completion is not None
    assert done.completion.result == {"approved": True, "paid": 5}
