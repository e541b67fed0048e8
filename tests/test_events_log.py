"""The run log (R19, R20): replay from any offset, live followers, reconnects, validity."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
import trio
from helpers.checks import assert_valid_log, read_log, wait_until, wire_log

import perdure
from perdure.agui import (
    MAX_EVENT_BYTES,
    AGUIProtocolError,
    CustomEvent,
    RunStartedEvent,
    StepFinishedEvent,
    StepStartedEvent,
    TextMessageContentEvent,
    TextMessageEndEvent,
    TextMessageStartEvent,
    ToolCallArgsEvent,
    ToolCallEndEvent,
    ToolCallStartEvent,
)

P = perdure.Project("p1")
C = perdure.Conversation("c1")


def gated_emitter(rt: perdure.Runtime, name: str = "paced") -> trio.Event:
    """``workflow:NAME`` {"n": N}: waits for the returned gate, then emits N events."""
    gate = trio.Event()

    @rt.workflow(name)
    async def paced(ctx: perdure.RunContext, inp: dict) -> dict:
        await gate.wait()
        for i in range(inp["n"]):
            await ctx.custom("tick", {"i": i})
            await trio.sleep(0)
            if i % 3 == 0:
                await ctx.emit(
                    StepStartedEvent(step_name=f"s{i}"), StepFinishedEvent(step_name=f"s{i}")
                )
                await trio.sleep(0)
        return {"n": inp["n"]}

    return gate


async def test_replay_from_every_offset_is_the_tail_of_the_log(make_rt: Any) -> None:
    rt = make_rt()
    async with rt:
        run = (await rt.start("workflow:emit", {"n": 12}, owner=P)).run
        await rt.wait(run.id)
        full = await read_log(rt, run.id)
        assert [e.event_id for e in full] == list(range(1, 15))
        await assert_valid_log(rt, run.id)
        for k in range(len(full) + 3):
            assert await read_log(rt, run.id, after=k) == full[k:], k
            # follow=True on a terminal run replays the same tail and ends
            with trio.fail_after(2):
                followed = [e async for e in rt.events(run.id, after=k, follow=True)]
            assert followed == full[k:], k
        assert [e.to_wire()["value"] for e in full[1:-1]] == [{"i": i} for i in range(12)]


async def test_live_follower_sees_exactly_the_committed_sequence(make_rt: Any) -> None:
    rt = make_rt()
    gate = gated_emitter(rt)
    async with rt:
        run = (await rt.start("workflow:paced", {"n": 20}, owner=P)).run
        seen: dict[str, list[perdure.RunEvent]] = {"a": [], "b": [], "c": []}
        first_seen = trio.Event()

        async def follow(name: str, after: int, pause: float) -> None:
            async for event in rt.events(run.id, after=after):
                seen[name].append(event)
                first_seen.set()
                await trio.sleep(pause)  # a fast and a slow consumer

        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(follow, "a", 0, 0)
                nursery.start_soon(follow, "b", 1, 0)
                nursery.start_soon(follow, "c", 0, 0.001)
                await first_seen.wait()
                await trio.sleep(0.01)  # every follower is parked, waiting for more
                assert rt.get(run.id).last_event_id == 1  # nothing but RUN_STARTED yet
                assert seen["b"] == []
                gate.set()
        replay = await read_log(rt, run.id)
        assert seen["a"] == replay
        assert seen["c"] == replay
        assert seen["b"] == replay[1:]
        assert replay[-1].type == "RUN_FINISHED"
        await assert_valid_log(rt, run.id)


async def test_reconnecting_client_loses_nothing_and_sees_nothing_twice(make_rt: Any) -> None:
    rt = make_rt()
    gate = gated_emitter(rt)
    async with rt:
        run = (await rt.start("workflow:paced", {"n": 30}, owner=P)).run
        got: list[perdure.RunEvent] = []
        gate.set()
        with trio.fail_after(5):
            last = 0
            while True:
                # read a couple of events, drop the connection, come back with Last-Event-ID
                n = 0
                async for event in rt.events(run.id, after=last):
                    got.append(event)
                    last = event.event_id
                    n += 1
                    if n == 2:
                        break
                if got and got[-1].type in ("RUN_FINISHED", "RUN_ERROR"):
                    break
                await trio.sleep(0)
        assert got == await read_log(rt, run.id)
        assert [e.event_id for e in got] == list(range(1, len(got) + 1))


async def test_many_concurrent_runs_keep_separate_gapless_logs(make_rt: Any) -> None:
    rt = make_rt(durability="process")
    async with rt:
        ids: list[str] = []
        collected: dict[str, list[perdure.RunEvent]] = {}

        async def run_and_follow(i: int) -> None:
            rid = (await rt.start("workflow:emit", {"n": 5 + i % 4}, owner=P)).run.id
            ids.append(rid)
            collected[rid] = [e async for e in rt.events(rid)]

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                for i in range(40):
                    nursery.start_soon(run_and_follow, i)
        for rid in ids:
            log = await read_log(rt, rid)
            assert collected[rid] == log
            assert all(e.run_id == rid for e in log)
            wire = await assert_valid_log(rt, rid)
            n = rt.get(rid).input["n"]
            assert [e["type"] for e in wire] == ["RUN_STARTED", *["CUSTOM"] * n, "RUN_FINISHED"]


async def test_follower_of_a_cancelled_run_ends_with_the_cancel(make_rt: Any) -> None:
    rt = make_rt()
    async with rt:
        run = (await rt.start("workflow:block", {}, owner=P)).run
        got: list[perdure.RunEvent] = []

        async def follow() -> None:
            async for event in rt.events(run.id):
                got.append(event)

        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(follow)
                await wait_until(lambda: len(got) == 2)
                await rt.cancel(run.id, "bye")
        assert [e.type for e in got] == ["RUN_STARTED", "CUSTOM", "RUN_FINISHED"]
        assert got[-1].to_wire()["outcome"] == {"type": "cancelled"}
        assert got == await read_log(rt, run.id)


async def test_following_a_cancelled_run_replays_and_ends(make_rt: Any) -> None:
    rt = make_rt()
    async with rt:
        run = (await rt.start("workflow:block", {}, owner=P)).run
        await rt.cancel(run.id)
        full = await read_log(rt, run.id)
        with trio.fail_after(2):
            for k in range(len(full) + 1):
                assert [e async for e in rt.events(run.id, after=k)] == full[k:]


async def test_followers_and_waiters_end_when_the_runtime_closes(make_rt: Any) -> None:
    rt = make_rt()
    got: list[perdure.RunEvent] = []
    outcome: list[Any] = []

    async def follow(run_id: str) -> None:
        async for event in rt.events(run_id):
            got.append(event)
        outcome.append("follower ended")

    async def waiter(run_id: str) -> None:
        try:
            await rt.wait(run_id)
        except perdure.PerdureError as exc:
            outcome.append(type(exc))

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery, rt:
            run = (await rt.start("workflow:block", {}, owner=P)).run
            nursery.start_soon(follow, run.id)
            nursery.start_soon(waiter, run.id)
            await wait_until(lambda: len(got) == 2)
    assert sorted(map(str, outcome)) == sorted(["follower ended", str(perdure.PerdureError)])
    assert [e.type for e in got] == ["RUN_STARTED", "CUSTOM"]


async def test_pending_run_log_is_empty_until_it_starts(make_rt: Any) -> None:
    rt = make_rt(max_running=1)
    async with rt:
        first = (await rt.start("workflow:block", {}, owner=P)).run
        second = (await rt.start("workflow:emit", {"n": 2}, owner=P)).run
        assert await read_log(rt, second.id) == []
        got: list[perdure.RunEvent] = []

        async def follow() -> None:
            async for event in rt.events(second.id):
                got.append(event)

        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(follow)
                await trio.sleep(0.01)
                assert got == []
                rt.gates.open()
        assert [e.type for e in got] == ["RUN_STARTED", "CUSTOM", "CUSTOM", "RUN_FINISHED"]
        assert got == await read_log(rt, second.id)
        await rt.wait(first.id)


async def test_events_of_an_unknown_run(make_rt: Any) -> None:
    rt = make_rt()
    async with rt:
        with pytest.raises(perdure.RunNotFound):
            async for _ in rt.events("nope"):
                pass
        with pytest.raises(perdure.RunNotFound):
            await read_log(rt, "nope")


# -- what bodies may log ---------------------------------------------------------------------


async def test_agent_log_messages_state_and_tools(data_dir: Any) -> None:
    rt = perdure.Runtime(data_dir)

    @rt.agent("rich")
    async def rich(ctx: perdure.AgentContext, inp: perdure.AgentInput) -> None:
        await ctx.state_snapshot({"count": 0, "items": []})
        mid = await ctx.say("hello", message_id="m1")
        assert mid == "m1"
        auto = await ctx.say("second")
        assert auto.startswith("msg_")
        await ctx.state_delta([{"op": "replace", "path": "/count", "value": 1}])
        await ctx.emit(
            ToolCallStartEvent(tool_call_id="t1", tool_call_name="search", parent_message_id="m1"),
            ToolCallArgsEvent(tool_call_id="t1", delta='{"q":'),
        )
        await ctx.emit(
            ToolCallArgsEvent(tool_call_id="t1", delta='"x"}'), ToolCallEndEvent(tool_call_id="t1")
        )
        await ctx.emit(TextMessageStartEvent(message_id="m2", role="assistant"))
        for word in ("streamed ", "in ", "parts"):
            await ctx.emit(TextMessageContentEvent(message_id="m2", delta=word))
        await ctx.emit(TextMessageEndEvent(message_id="m2"))
        await ctx.messages_snapshot([{"id": "m1", "role": "assistant", "content": "hello"}])
        await ctx.custom("done", None)

    async with rt:
        run = (await rt.start("agent:rich", {}, owner=C)).run
        assert (await rt.wait(run.id)).status == "completed"
        wire = await assert_valid_log(rt, run.id)
        assert [e["type"] for e in wire] == [
            "RUN_STARTED",
            "STATE_SNAPSHOT",
            *["TEXT_MESSAGE_START", "TEXT_MESSAGE_CONTENT", "TEXT_MESSAGE_END"] * 2,
            "STATE_DELTA",
            "TOOL_CALL_START",
            "TOOL_CALL_ARGS",
            "TOOL_CALL_ARGS",
            "TOOL_CALL_END",
            "TEXT_MESSAGE_START",
            *["TEXT_MESSAGE_CONTENT"] * 3,
            "TEXT_MESSAGE_END",
            "MESSAGES_SNAPSHOT",
            "CUSTOM",
            "RUN_FINISHED",
        ]
        assert wire[9]["toolCallName"] == "search" and wire[9]["parentMessageId"] == "m1"
        assert all(isinstance(e.get("timestamp"), int) for e in wire)


async def test_emit_refuses_invalid_sequences_and_logs_nothing(data_dir: Any) -> None:
    rt = perdure.Runtime(data_dir)
    refused: list[str] = []

    @rt.workflow("strict")
    async def strict(ctx: perdure.RunContext, inp: dict) -> None:
        attempts = [
            (RunStartedEvent(thread_id="t", run_id="r"),),
            (TextMessageContentEvent(message_id="nope", delta="x"),),
            (TextMessageEndEvent(message_id="nope"),),
            (ToolCallEndEvent(tool_call_id="nope"),),
            (
                TextMessageStartEvent(message_id="m", role="assistant"),
                TextMessageStartEvent(message_id="m", role="assistant"),
            ),
            (
                CustomEvent(name="ok", value=1),
                CustomEvent(name="too big", value="x" * (MAX_EVENT_BYTES + 1)),
            ),
            (CustomEvent(name="bad", value=object()),),
        ]
        for events in attempts:
            try:
                await ctx.emit(*events)
            except perdure.InvalidInput:
                refused.append(type(events[-1]).__name__)
        await ctx.custom("after", 1)

    async with rt:
        run = (await rt.start("workflow:strict", {}, owner=P)).run
        assert (await rt.wait(run.id)).status == "completed"
        assert len(refused) == 7
        wire = await assert_valid_log(rt, run.id)
        # a refused batch logs none of its events, not even its valid first ones
        assert [(e["type"], e.get("name")) for e in wire] == [
            ("RUN_STARTED", None),
            ("CUSTOM", "after"),
            ("RUN_FINISHED", None),
        ]


@pytest.mark.no_log_check
async def test_large_text_deltas_are_split_under_the_cap(data_dir: Any) -> None:
    rt = perdure.Runtime(data_dir)
    text = 'ab"c\\dé€😀\n' * 60_000  # ~ 900 KB of JSON with escapes and multibyte chars

    @rt.agent("big")
    async def big(ctx: perdure.AgentContext, inp: perdure.AgentInput) -> None:
        await ctx.say(text, message_id="m1")

    async with rt:
        run = (await rt.start("agent:big", {}, owner=C)).run
        assert (await rt.wait(run.id)).status == "completed"
        wire = await assert_valid_log(rt, run.id)
        contents = [e for e in wire if e["type"] == "TEXT_MESSAGE_CONTENT"]
        assert len(contents) >= 4
        assert "".join(e["delta"] for e in contents) == text
        for event in wire:
            assert len(msgspec.json.encode(event)) <= MAX_EVENT_BYTES
        assert wire_log(await read_log(rt, run.id)) == wire


# -- the suite's own log checker ---------------------------------------------------------------


def test_the_log_checker_rejects_broken_logs() -> None:
    """``check_log`` (run after every test on every store) must catch what it claims to."""
    from helpers.checks import check_log

    rec = perdure.RunRecord(
        id="r1",
        seq=1,
        kind="workflow",
        owner=P,
        target="workflow:x",
        root_id="r1",
        status="completed",
        created_at=0.0,
        updated_at=0.0,
        completion=perdure.Completion(status="completed", result=1),
        last_event_id=2,
    )
    started = {"type": "RUN_STARTED", "threadId": "r1", "runId": "r1"}
    finished = {"type": "RUN_FINISHED", "threadId": "r1", "runId": "r1", "result": 1}
    check_log(rec, [1, 2], [started, finished])  # the good one
    broken: list[tuple[list[int], list[dict[str, Any]]]] = [
        ([1, 3], [started, finished]),  # a gap
        ([1, 2], [started, {**finished, "result": 2}]),  # disagrees with the completion
        ([1, 2], [started, {**finished, "threadId": "other"}]),  # wrong thread
        ([1, 2], [started, {"type": "RUN_ERROR", "message": "x"}]),  # wrong terminal event
        ([1, 2], [{"type": "CUSTOM", "name": "x", "value": 1}, finished]),  # no RUN_STARTED
        ([1, 2], [started, {"type": "TEXT_MESSAGE_END", "messageId": "m"}]),  # not terminal
        ([1, 2], [started, {**finished, "outcome": {"type": "bogus"}}]),  # fails ag_ui.core
    ]
    for ids, wire in broken:
        with pytest.raises((AssertionError, AGUIProtocolError)):
            check_log(rec, ids, wire)
    three = msgspec.structs.replace(rec, last_event_id=3)
    message = [
        started,
        {"type": "TEXT_MESSAGE_START", "messageId": "m", "role": "assistant"},
        finished,
    ]
    with pytest.raises((AssertionError, AGUIProtocolError)):  # RUN_FINISHED, message open
        check_log(three, [1, 2, 3], message)
