"""Streaming and wait-key fixes of the pydantic-ai integration.

- pending deltas commit within ``flush_interval`` even while the model is silent;
- a retried or recovered streamed attempt logs its own message (clients never merge
  two attempts' text), and the conversation reads right while the run waits;
- deltas pydantic-ai sends after a part's ``PartEndEvent`` (interleaved tool-call
  arguments, text after a tool call, reasoning after text) reach the log;
- a tool call id a model reuses across responses gets an approval wait of its own.

Offline ``FunctionModel`` models; no assertion depends on wall-clock timing (the
flush test runs on trio's autojump clock, the others on explicit events).
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
from helpers.checks import assert_valid_log, finish, interrupts, types, wait_until, waiting
from pydantic_ai import Agent
from pydantic_ai.messages import (
    ModelMessage,
    ModelResponse,
    PartEndEvent,
    PartStartEvent,
    TextPart,
    ToolCallPart,
)
from pydantic_ai.models.function import (
    AgentInfo,
    DeltaThinkingCalls,
    DeltaThinkingPart,
    DeltaToolCall,
    DeltaToolCalls,
    FunctionModel,
)

import perdure
from perdure.agui import RunFinishedEvent, RunStartedEvent, event_to_json, verify_prefixes
from perdure.integrations.pydantic_ai import register_agent
from perdure.integrations.pydantic_ai._events import ResponseEvents

pytestmark = pytest.mark.usefixtures("official_agui_check")


def user(text: str = "hi") -> dict[str, Any]:
    return {"id": "u1", "role": "user", "content": text}


def responses(messages: list[ModelMessage]) -> int:
    return sum(isinstance(m, ModelResponse) for m in messages)


async def start(rt: perdure.Runtime, name: str, thread: str = "t") -> str:
    handle = await rt.start(
        f"agent:{name}", {"messages": [user()]}, owner=perdure.Conversation(thread)
    )
    return handle.run.id


def text_of(wire: list[dict[str, Any]], message_id: str) -> str:
    return "".join(
        e["delta"]
        for e in wire
        if e["type"] == "TEXT_MESSAGE_CONTENT" and e["messageId"] == message_id
    )


def args_of(wire: list[dict[str, Any]], tool_call_id: str) -> str:
    return "".join(
        e["delta"]
        for e in wire
        if e["type"] == "TOOL_CALL_ARGS" and e["toolCallId"] == tool_call_id
    )


def final_snapshot(wire: list[dict[str, Any]]) -> tuple[int, list[dict[str, Any]]]:
    """The event id just before the run's last ``MESSAGES_SNAPSHOT``, and its messages."""
    at = max(i for i, e in enumerate(wire, 1) if e["type"] == "MESSAGES_SNAPSHOT")
    return at - 1, wire[at - 1]["messages"]


def assert_fold_matches_snapshot(
    rt: perdure.Runtime, run_id: str, wire: list[dict[str, Any]]
) -> None:
    """What a client folded from the events is what the run's final snapshot says."""
    before, snapshot = final_snapshot(wire)
    folded = rt.snapshot(run_id, upto=before).messages

    def norm(messages: list[dict[str, Any]]) -> list[str]:
        return [json.dumps(m, sort_keys=True) for m in messages]

    assert norm(folded) == norm(snapshot)


# -- 1. a trailing flush ---------------------------------------------------------------------


async def test_pending_deltas_commit_while_the_model_is_silent(
    data_dir: Path, autojump_clock: Any
) -> None:
    """Two deltas inside one flush interval, then the model pauses until a follower has
    seen the second: it must be committed by the flush deadline, not held back until a
    next delta that only comes once it was seen (a deadlock before the fix)."""
    seen_second = asyncio.Event()

    async def stream(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
        yield "Hello, "
        yield "I am thinking"
        await seen_second.wait()
        yield " ... done"

    rt = perdure.Runtime(data_dir)
    register_agent(rt, "a", Agent(FunctionModel(stream_function=stream)))  # 50 ms default
    async with rt:
        run_id = await start(rt, "a")
        live: list[str] = []
        with trio.fail_after(30):  # virtual seconds: the deadlock fails here
            async for event in rt.events(run_id):
                wire = event.to_wire()
                live.append(wire["type"])
                if wire["type"] == "TEXT_MESSAGE_CONTENT" and wire["delta"] == "I am thinking":
                    assert "STEP_FINISHED" not in live  # seen while the request runs
                    seen_second.set()
        rec, wire = await finish(rt, run_id)
    assert rec.completion is not None and rec.completion.result == "Hello, I am thinking ... done"
    assert live == types(wire)


# -- 2. each attempt its own message ------------------------------------------------------------


def refund_agent(calls: Counter[str], fail: set[int]) -> Agent[None, str]:
    """Streams "I will refund you now." and a refund call needing approval; the stream
    breaks after two deltas on the attempts numbered in ``fail``."""
    gate = asyncio.Event()
    gate.set()

    async def stream(
        messages: list[ModelMessage], info: AgentInfo
    ) -> AsyncIterator[str | DeltaToolCalls]:
        if responses(messages):
            calls["answer"] += 1
            yield "Refunded."
            return
        calls["stream"] += 1
        yield "I will "
        yield "refund "
        if calls["stream"] in fail:
            raise ConnectionError("connection reset mid-stream")
        yield "you now."
        yield {0: DeltaToolCall(name="refund", json_args='{"amount":10}', tool_call_id="c1")}

    agent = Agent(FunctionModel(stream_function=stream))

    @agent.tool_plain(requires_approval=True)
    def refund(amount: int) -> str:
        calls["refund"] += 1
        return f"refunded {amount}"

    return agent


async def test_a_retried_streamed_attempt_has_its_own_message_id(data_dir: Path) -> None:
    calls: Counter[str] = Counter()
    agent = refund_agent(calls, fail={1})
    retry = perdure.RetryPolicy(max_attempts=3, initial=0.01)
    rt = perdure.Runtime(data_dir)
    register_agent(rt, "a", agent, model_retry=retry)
    async with rt:
        run_id = await start(rt, "a")
        await waiting(rt, run_id)
        wire = await assert_valid_log(rt, run_id)
        starts = [e["messageId"] for e in wire if e["type"] == "TEXT_MESSAGE_START"]
        assert len(starts) == 2 and len(set(starts)) == 2  # one message per attempt
        assert starts[0] == f"msg_{run_id}_1"
        assert text_of(wire, starts[0]) == "I will refund "
        assert text_of(wire, starts[1]) == "I will refund you now."
        # While the run waits for the approval, the conversation reads right: the
        # aborted attempt's half answer is gone, the call is whole and in its message.
        messages = rt.snapshot(run_id).messages
        assert [(m["role"], m.get("content")) for m in messages] == [
            ("user", "hi"),
            ("assistant", "I will refund you now."),
        ]
        assert messages[1]["id"] == starts[1]
        assert [c["function"]["arguments"] for c in messages[1]["toolCalls"]] == ['{"amount":10}']

    # A new runtime replays the run: the recorded response (and its message id) comes
    # back from the journal; nothing is streamed again.
    rt = perdure.Runtime(data_dir)
    register_agent(rt, "a", agent, model_retry=retry)
    async with rt:
        await rt.resume(run_id, perdure.ApprovalDecision(key="c1", approved=True))
        rec, wire = await finish(rt, run_id)
        assert_fold_matches_snapshot(rt, run_id, wire)
    assert rec.completion is not None and rec.completion.result == "Refunded."
    assert (calls["stream"], calls["answer"], calls["refund"]) == (2, 1, 1)
    assert [e["stepName"] for e in wire if e["type"] == "STEP_STARTED"] == [
        "model:1",
        "model:1",
        "tool:refund:c1",
        "model:2",
    ]
    _, snapshot = final_snapshot(wire)
    assert next(m["id"] for m in snapshot if m["role"] == "assistant") == starts[1]


async def test_a_streamed_attempt_cut_by_a_close_is_recovered_under_a_new_id(
    data_dir: Path,
) -> None:
    """The runtime closes while a streamed request has committed two deltas; the run
    recovers (the cut message closed, ``perdure.attempt_aborted``) and the request runs
    again under another message id, so the second attempt's text is not appended to
    the first's."""
    calls: Counter[str] = Counter()
    release = asyncio.Event()

    async def stream(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
        calls["stream"] += 1
        yield "the "
        yield "answer "
        await release.wait()
        yield "is 42"

    agent = Agent(FunctionModel(stream_function=stream))
    rt = perdure.Runtime(data_dir)
    register_agent(rt, "a", agent, flush_interval=0)
    async with rt:
        run_id = await start(rt, "a")
        deltas = 0
        async for event in rt.events(run_id):
            deltas += event.type == "TEXT_MESSAGE_CONTENT"
            if deltas == 2:
                break

    release.set()
    rt = perdure.Runtime(data_dir)
    register_agent(rt, "a", agent, flush_interval=0)
    async with rt:
        rec, wire = await finish(rt, run_id)
        assert_fold_matches_snapshot(rt, run_id, wire)
        # The retried attempt's snapshot dropped the cut message before it streamed.
        snap = next(i for i, e in enumerate(wire, 1) if e["type"] == "MESSAGES_SNAPSHOT")
        assert [m.get("content") for m in rt.snapshot(run_id, upto=snap).messages] == ["hi"]
    assert rec.completion is not None and rec.completion.result == "the answer is 42"
    assert calls["stream"] == 2
    assert any(e["type"] == "CUSTOM" and e["name"] == "perdure.attempt_aborted" for e in wire)
    first, second = [e["messageId"] for e in wire if e["type"] == "TEXT_MESSAGE_START"]
    assert first == f"msg_{run_id}_1" and second != first
    assert (text_of(wire, first), text_of(wire, second)) == ("the answer ", "the answer is 42")


# -- 3. deltas after PartEndEvent --------------------------------------------------------------


async def test_interleaved_tool_call_arguments_reach_the_log(data_dir: Path) -> None:
    async def stream(
        messages: list[ModelMessage], info: AgentInfo
    ) -> AsyncIterator[DeltaToolCalls]:
        yield {0: DeltaToolCall(name="refund", tool_call_id="c1")}
        yield {1: DeltaToolCall(name="refund", tool_call_id="c2")}  # ends c1 for pydantic-ai
        yield {0: DeltaToolCall(json_args='{"amount": ')}
        yield {1: DeltaToolCall(json_args='{"amount": 20}')}
        yield {0: DeltaToolCall(json_args="10}")}

    agent = Agent(FunctionModel(stream_function=stream))

    @agent.tool_plain(requires_approval=True)
    def refund(amount: int) -> str:
        return f"refunded {amount}"

    rt = perdure.Runtime(data_dir)
    register_agent(rt, "a", agent)
    async with rt:
        run_id = await start(rt, "a")
        await waiting(rt, run_id)
        wire = await assert_valid_log(rt, run_id)
        verify_prefixes(wire)
        assert (args_of(wire, "c1"), args_of(wire, "c2")) == ('{"amount": 10}', '{"amount": 20}')
        calls = [c for m in rt.snapshot(run_id).messages for c in m.get("toolCalls", [])]
        assert [(c["id"], c["function"]["arguments"]) for c in calls] == [
            ("c1", '{"amount": 10}'),
            ("c2", '{"amount": 20}'),
        ]
        await rt.cancel(run_id)


def tool_then(*script: list[Any]) -> Agent[None, str]:
    """An agent whose first response streams ``script[0]`` and whose second says "ok"."""

    async def stream(
        messages: list[ModelMessage], info: AgentInfo
    ) -> AsyncIterator[str | DeltaToolCalls | DeltaThinkingCalls]:
        for item in script[0] if not responses(messages) else ["ok"]:
            yield item

    agent = Agent(FunctionModel(stream_function=stream))

    @agent.tool_plain
    def look(x: int) -> str:
        return f"looked {x}"

    return agent


async def test_text_continued_after_a_tool_call_reaches_the_log(data_dir: Path) -> None:
    agent = tool_then(
        ["hello ", {1: DeltaToolCall(name="look", json_args='{"x":1}', tool_call_id="k")}, "world"]
    )
    rt = perdure.Runtime(data_dir)
    register_agent(rt, "a", agent)
    async with rt:
        run_id = await start(rt, "a")
        rec, wire = await finish(rt, run_id)
        assert rec.completion is not None and rec.completion.result == "ok"
        assert text_of(wire, f"msg_{run_id}_1") == "hello world"
        assert_fold_matches_snapshot(rt, run_id, wire)


async def test_reasoning_continued_after_text_reaches_the_log(data_dir: Path) -> None:
    agent = tool_then(
        [{0: DeltaThinkingPart(content="hmm ")}, "answer", {0: DeltaThinkingPart(content="more")}]
    )
    rt = perdure.Runtime(data_dir)
    register_agent(rt, "a", agent)
    async with rt:
        run_id = await start(rt, "a")
        _, wire = await finish(rt, run_id)
        reasoning = "".join(e["delta"] for e in wire if e["type"] == "REASONING_MESSAGE_CONTENT")
        assert reasoning == "hmm more"
        assert_fold_matches_snapshot(rt, run_id, wire)


def test_finish_completes_an_ended_part_from_the_final_response() -> None:
    """A part ended with less than its final content (no late delta carried the rest):
    finish() reopens it for the rest instead of leaving it short."""
    events = ResponseEvents("m1")
    out = events.on_event(PartStartEvent(index=0, part=TextPart("Hel")))
    out += events.on_event(PartEndEvent(index=0, part=TextPart("Hel")))
    call = ToolCallPart("f", '{"a": 1}', tool_call_id="c")
    out += events.on_event(PartStartEvent(index=1, part=call))
    out += events.on_event(PartEndEvent(index=1, part=call))
    out += events.finish(ModelResponse(parts=[TextPart("Hello"), call]))
    wire = [
        json.loads(event_to_json(e))
        for e in [
            RunStartedEvent(thread_id="t", run_id="r"),
            *out,
            RunFinishedEvent(thread_id="t", run_id="r"),
        ]
    ]
    verify_prefixes(wire)
    assert text_of(wire, "m1") == "Hello"


# -- 4. a tool call id reused across responses --------------------------------------------------


async def test_a_reused_tool_call_id_gets_an_approval_of_its_own(data_dir: Path) -> None:
    """A provider numbering calls per response (call_0 each time): the second refund's
    approval is a wait of its own (``call_0@2``), answered, not taken for a duplicate
    of the first; a replay in a new runtime asks for the same keys."""
    refunded: list[int] = []

    async def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        n = responses(messages)
        if n < 2:
            return ModelResponse(
                parts=[ToolCallPart("refund", {"amount": 10 * (n + 1)}, tool_call_id="call_0")]
            )
        return ModelResponse(parts=[TextPart("done")])

    agent = Agent(FunctionModel(model))

    @agent.tool_plain(requires_approval=True)
    def refund(amount: int) -> str:
        refunded.append(amount)
        return f"refunded {amount}"

    rt = perdure.Runtime(data_dir)
    register_agent(rt, "a", agent)
    async with rt:
        run_id = await start(rt, "a")
        rec = await waiting(rt, run_id)
        assert rec.waiting is not None and rec.waiting.waits[0].key == "call_0"
        resumed = await rt.resume(run_id, perdure.ApprovalDecision(key="call_0", approved=True))
        assert not resumed.duplicate
        await wait_until(lambda: refunded == [10])
        rec = await waiting(rt, run_id)
        assert rec.waiting is not None
        (wait,) = rec.waiting.waits
        assert (wait.key, wait.prompt) == ("call_0@2", 'Run refund({"amount":20})?')

    # Replayed by a new runtime: the same keys, the second answered through AG-UI.
    rt = perdure.Runtime(data_dir)
    register_agent(rt, "a", agent)
    async with rt:
        rec = await waiting(rt, run_id)
        assert rec.waiting is not None and rec.waiting.waits[0].key == "call_0@2"
        signal = perdure.signal_from_resume(
            {"interruptId": "approval:call_0@2", "status": "resolved"}, approver="ann"
        )
        resumed = await rt.resume(run_id, signal)
        assert not resumed.duplicate
        rec, wire = await finish(rt, run_id)
    assert rec.status == "completed" and rec.completion is not None
    assert rec.completion.result == "done" and refunded == [10, 20]
    assert [[i["id"] for i in group] for group in interrupts(wire)] == [
        ["approval:call_0"],
        ["approval:call_0@2"],
    ]


async def test_a_retry_after_a_failure_that_logged_nothing_logs_no_snapshot(
    data_dir: Path,
) -> None:
    """The common retry (the provider refused before streaming anything) has nothing to
    take back: no extra ``MESSAGES_SNAPSHOT``, only the run's final one."""
    calls: Counter[str] = Counter()

    async def stream(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
        calls["stream"] += 1
        if calls["stream"] == 1:
            raise ConnectionError("429 too many requests")
        yield "fine"

    rt = perdure.Runtime(data_dir)
    register_agent(
        rt,
        "a",
        Agent(FunctionModel(stream_function=stream)),
        model_retry=perdure.RetryPolicy(max_attempts=2, initial=0.01),
    )
    async with rt:
        rec, wire = await finish(rt, await start(rt, "a"))
    assert rec.completion is not None and rec.completion.result == "fine"
    assert types(wire).count("MESSAGES_SNAPSHOT") == 1 and calls["stream"] == 2
