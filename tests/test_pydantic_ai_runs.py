"""pydantic-ai agents as durable perdure agent runs (perdure.integrations.pydantic_ai).

The models are pydantic-ai's own ``FunctionModel``: real offline models that count
their calls, so "a recorded model call is never made again" is counted, not assumed.
Every log is checked with ``verify_prefixes`` here, by the conftest after each test,
and by the official ``@ag-ui/client`` verifier once per module.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import trio
from helpers.checks import (
    assert_valid_log,
    assert_valid_log_host,
    finish,
    interrupts,
    types,
    wait_until,
    waiting,
)
from pydantic_ai import Agent, RunContext
from pydantic_ai.exceptions import CallDeferred, ModelRetry
from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    TextPart,
    ThinkingPart,
    ToolCallPart,
    ToolReturnPart,
    UserPromptPart,
)
from pydantic_ai.models.function import (
    AgentInfo,
    DeltaThinkingCalls,
    DeltaThinkingPart,
    DeltaToolCall,
    DeltaToolCalls,
    FunctionModel,
)
from pydantic_ai.tools import ToolDefinition
from pydantic_ai.toolsets import ExternalToolset
from pydantic_ai.usage import RequestUsage

import perdure
from perdure.integrations.pydantic_ai import register_agent

pytestmark = pytest.mark.usefixtures("official_agui_check")

THREAD = perdure.Conversation("thread-1")


def user(text: str, mid: str = "u1") -> dict[str, Any]:
    return {"id": mid, "role": "user", "content": text}


def responses(messages: list[ModelMessage]) -> int:
    """How many model responses the history already holds (0 on the first request)."""
    return sum(isinstance(m, ModelResponse) for m in messages)


def tool_returns(messages: list[ModelMessage]) -> dict[str, Any]:
    """tool call id -> content of every tool return the model has been sent."""
    return {
        part.tool_call_id: part.content
        for m in messages
        if isinstance(m, ModelRequest)
        for part in m.parts
        if isinstance(part, ToolReturnPart)
    }


class Counting:
    """A FunctionModel function from a script of replies, counting its calls."""

    def __init__(self, *script: Callable[[list[ModelMessage]], ModelResponse]) -> None:
        self.script = script
        self.calls = 0

    async def __call__(self, messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        self.calls += 1
        return self.script[min(responses(messages), len(self.script) - 1)](messages)


def start(rt: perdure.Runtime, name: str, text: str = "hi", **fields: Any) -> Any:
    return rt.start(f"agent:{name}", {"messages": [user(text)], **fields}, owner=THREAD)


def step_names(wire: list[dict[str, Any]]) -> list[str]:
    return [e["stepName"] for e in wire if e["type"] == "STEP_STARTED"]


# -- a model, a tool, the log --------------------------------------------------------------


async def test_model_requests_and_tool_calls_are_steps_with_agui_events(data_dir: Path) -> None:
    model = Counting(
        lambda m: ModelResponse(
            parts=[
                TextPart("Looking it up."),
                ToolCallPart("lookup", {"order": "A1"}, tool_call_id="call_1"),
            ]
        ),
        lambda m: ModelResponse(parts=[TextPart(f"Order A1: {tool_returns(m)['call_1']}.")]),
    )
    agent = Agent(FunctionModel(model))
    looked: list[str] = []

    @agent.tool_plain
    async def lookup(order: str) -> str:
        looked.append(order)
        return "shipped"

    rt = perdure.Runtime(data_dir)
    register_agent(rt, "support", agent)
    async with rt:
        started = await start(rt, "support", "Where is A1?")
        rec, wire = await finish(rt, started.run.id)

    assert rec.status == "completed", rec.completion
    assert rec.completion is not None and rec.completion.result == "Order A1: shipped."
    assert (model.calls, looked) == (2, ["A1"])
    assert step_names(wire) == ["model:1", "tool:lookup:call_1", "model:2"]
    run_types = types(wire)
    assert run_types[:2] == ["RUN_STARTED", "STEP_STARTED"]
    assert run_types[-2:] == ["MESSAGES_SNAPSHOT", "RUN_FINISHED"]
    first = f"msg_{rec.id}_1"
    text_events = [
        {k: v for k, v in e.items() if k != "timestamp"}
        for e in wire
        if e["type"].startswith("TEXT_MESSAGE")
    ]
    assert text_events[:3] == [
        {"type": "TEXT_MESSAGE_START", "messageId": first, "role": "assistant"},
        {"type": "TEXT_MESSAGE_CONTENT", "messageId": first, "delta": "Looking it up."},
        {"type": "TEXT_MESSAGE_END", "messageId": first},
    ]
    start_call = next(e for e in wire if e["type"] == "TOOL_CALL_START")
    assert (
        start_call["toolCallId"],
        start_call["toolCallName"],
        start_call["parentMessageId"],
    ) == ("call_1", "lookup", first)
    args = "".join(e["delta"] for e in wire if e["type"] == "TOOL_CALL_ARGS")
    assert json.loads(args) == {"order": "A1"}
    result = next(e for e in wire if e["type"] == "TOOL_CALL_RESULT")
    assert (result["toolCallId"], result["content"]) == ("call_1", "shipped")
    # Completion metadata: usage per provider/model, the model, on the terminal event too.
    completion = rec.completion
    assert completion is not None and completion.model is not None
    assert completion.model.startswith("function:")
    (usage,) = completion.usage
    assert usage.model == completion.model and usage.input_tokens and usage.output_tokens
    assert wire[-1]["usage"][0]["model"] == completion.model
    # The conversation, for the thread's next run: the user's message keeps its id,
    # the assistant's message has the id its streamed events used.
    snapshot = next(e for e in wire if e["type"] == "MESSAGES_SNAPSHOT")["messages"]
    assert [m["role"] for m in snapshot] == ["user", "assistant", "tool", "assistant"]
    assert snapshot[0]["id"] == "u1" and snapshot[1]["id"] == first
    assert snapshot[1]["toolCalls"][0]["id"] == "call_1"
    assert snapshot[3]["content"] == "Order A1: shipped."


async def test_reasoning_parts_are_reasoning_events(data_dir: Path) -> None:
    agent = Agent(
        FunctionModel(
            Counting(
                lambda m: ModelResponse(parts=[ThinkingPart("Short answer."), TextPart("Yes.")])
            )
        )
    )
    rt = perdure.Runtime(data_dir)
    register_agent(rt, "thinker", agent)
    async with rt:
        started = await start(rt, "thinker")
        rec, wire = await finish(rt, started.run.id)
    assert rec.status == "completed"
    assert [t for t in types(wire) if t.startswith(("REASONING", "TEXT"))] == [
        "REASONING_START",
        "REASONING_MESSAGE_START",
        "REASONING_MESSAGE_CONTENT",
        "REASONING_MESSAGE_END",
        "REASONING_END",
        "TEXT_MESSAGE_START",
        "TEXT_MESSAGE_CONTENT",
        "TEXT_MESSAGE_END",
    ]
    assert (
        next(e for e in wire if e["type"] == "REASONING_MESSAGE_CONTENT")["delta"]
        == "Short answer."
    )


# -- replay ---------------------------------------------------------------------------------


def approval_agent(model: Counting, counts: Counter[str]) -> Agent[None, str]:
    """lookup (plain) + refund (requires approval)."""
    agent = Agent(FunctionModel(model))

    @agent.tool_plain
    async def lookup(order: str) -> str:
        counts["lookup"] += 1
        return f"{order}: paid 30"

    @agent.tool_plain(requires_approval=True)
    async def refund(order: str, amount: int) -> str:
        counts["refund"] += 1
        counts[f"refund:{amount}"] += 1
        return f"refunded {amount} on {order}"

    return agent


def refund_script() -> Counting:
    """lookup + refund in the first response, then a text answer (usage 10+3, 20+4)."""
    return Counting(
        lambda m: ModelResponse(
            parts=[
                ToolCallPart("lookup", {"order": "A1"}, tool_call_id="call_look"),
                ToolCallPart("refund", {"order": "A1", "amount": 30}, tool_call_id="call_refund"),
            ],
            usage=RequestUsage(input_tokens=10, output_tokens=3),
        ),
        lambda m: ModelResponse(
            parts=[TextPart(f"Done: {tool_returns(m)['call_refund']}")],
            usage=RequestUsage(input_tokens=20, output_tokens=4),
        ),
    )


async def test_replay_never_calls_the_model_or_a_tool_again(data_dir: Path) -> None:
    """A waiting run is replayed from its journal by a new process-like runtime: the
    recorded model request and tool call come from the journal, only new ones run."""
    model, counts = refund_script(), Counter[str]()
    agent = approval_agent(model, counts)

    rt = perdure.Runtime(data_dir)
    register_agent(rt, "support", agent)
    async with rt:
        run_id = (await start(rt, "support")).run.id
        rec = await waiting(rt, run_id)
    assert rec.waiting is not None and rec.waiting.waits[0].key == "call_refund"
    assert (model.calls, counts["lookup"], counts["refund"]) == (1, 1, 0)

    # Another runtime over the same directory: nothing of the first one's memory is left.
    rt = perdure.Runtime(data_dir)
    register_agent(rt, "support", agent)
    async with rt:
        assert rt.get(run_id).status == "waiting"
        await rt.resume(
            run_id, perdure.ApprovalDecision(key="call_refund", approved=True, approver="ann")
        )
        rec, wire = await finish(rt, run_id)

    assert rec.status == "completed" and rec.completion is not None
    assert rec.completion.result == "Done: refunded 30 on A1"
    # model:1 and tool:lookup replayed from the journal; only refund and model:2 ran.
    assert (model.calls, counts["lookup"], counts["refund"]) == (2, 1, 1)
    assert step_names(wire) == [
        "model:1",
        "tool:lookup:call_look",
        "tool:refund:call_refund",
        "model:2",
    ]
    assert types(wire).count("TOOL_CALL_START") == 2  # the replay logged nothing twice
    # Usage covers both requests, although this runtime made only the second one.
    (usage,) = rec.completion.usage
    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (30, 7, 37)


async def test_replay_of_changed_code_fails_with_non_determinism(data_dir: Path) -> None:
    """A replay that would take another path than the journal (the tool was renamed)
    fails the run with NON_DETERMINISM instead of mixing histories (R7)."""
    model, counts = refund_script(), Counter[str]()
    rt = perdure.Runtime(data_dir)
    register_agent(rt, "support", approval_agent(model, counts))
    async with rt:
        run_id = (await start(rt, "support")).run.id
        await waiting(rt, run_id)

    changed = Agent(FunctionModel(refund_script()))

    @changed.tool_plain(name="find")
    async def find(order: str) -> str:
        # It was "lookup": the recorded response calls a tool that is gone.
        return "?"

    @changed.tool_plain(requires_approval=True)
    async def refund(order: str, amount: int) -> str:
        return "?"

    rt = perdure.Runtime(data_dir)
    register_agent(rt, "support", changed)
    async with rt:
        await rt.resume(run_id, perdure.ApprovalDecision(key="call_refund", approved=True))
        rec, _ = await finish(rt, run_id)
    assert (
        rec.status == "failed" and rec.completion is not None and rec.completion.error is not None
    )
    assert rec.completion.error.code == "NON_DETERMINISM"


# -- approvals ------------------------------------------------------------------------------


async def test_approval_interrupt_then_approve(data_dir: Path) -> None:
    model, counts = refund_script(), Counter[str]()
    rt = perdure.Runtime(data_dir)
    register_agent(rt, "support", approval_agent(model, counts), approvers=["ann"])
    async with rt:
        run_id = (await start(rt, "support")).run.id
        rec = await waiting(rt, run_id)
        assert rec.waiting is not None
        (wait,) = rec.waiting.waits
        assert (wait.reason, wait.key, wait.approvers) == ("approval", "call_refund", ["ann"])
        assert wait.prompt == 'Run refund({"order":"A1","amount":30})?'
        (interrupt,) = interrupts(await assert_valid_log(rt, run_id))[-1]
        assert (interrupt["id"], interrupt["reason"]) == ("approval:call_refund", "confirmation")
        with pytest.raises(perdure.PermissionDenied):
            await rt.resume(
                run_id, perdure.ApprovalDecision(key="call_refund", approved=True, approver="bob")
            )
        await rt.resume(
            run_id, perdure.ApprovalDecision(key="call_refund", approved=True, approver="ann")
        )
        rec, wire = await finish(rt, run_id)
    assert rec.status == "completed" and counts["refund"] == 1
    assert rec.completion is not None and rec.completion.result == "Done: refunded 30 on A1"
    results = {e["toolCallId"]: e["content"] for e in wire if e["type"] == "TOOL_CALL_RESULT"}
    assert results == {"call_look": "A1: paid 30", "call_refund": "refunded 30 on A1"}


async def test_approval_denied_tells_the_model_and_never_runs_the_tool(data_dir: Path) -> None:
    model, counts = refund_script(), Counter[str]()
    rt = perdure.Runtime(data_dir)
    register_agent(rt, "support", approval_agent(model, counts))
    async with rt:
        run_id = (await start(rt, "support")).run.id
        await waiting(rt, run_id)
        decision = perdure.ApprovalDecision(
            key="call_refund",
            approved=False,
            approver="ann",
            comment="Refunds over 20 need a manager.",
        )
        await rt.resume(run_id, decision)
        rec, wire = await finish(rt, run_id)
    assert rec.status == "completed" and counts["refund"] == 0
    assert rec.completion is not None
    assert rec.completion.result == "Done: Refunds over 20 need a manager."
    denial = [
        e for e in wire if e["type"] == "TOOL_CALL_RESULT" and e["toolCallId"] == "call_refund"
    ]
    assert [e["content"] for e in denial] == ["Refunds over 20 need a manager."]


async def test_approval_can_override_the_arguments(data_dir: Path) -> None:
    model, counts = refund_script(), Counter[str]()
    rt = perdure.Runtime(data_dir)
    register_agent(rt, "support", approval_agent(model, counts))
    async with rt:
        run_id = (await start(rt, "support")).run.id
        await waiting(rt, run_id)
        await rt.resume(
            run_id,
            perdure.ApprovalDecision(
                key="call_refund",
                approved=True,
                response={"override_args": {"order": "A1", "amount": 20}},
            ),
        )
        rec, _ = await finish(rt, run_id)
    assert rec.completion is not None and rec.completion.result == "Done: refunded 20 on A1"
    assert counts["refund:20"] == 1 and counts["refund:30"] == 0


async def test_two_approvals_in_one_response_are_asked_one_after_another(data_dir: Path) -> None:
    model = Counting(
        lambda m: ModelResponse(
            parts=[
                ToolCallPart("refund", {"order": "A1", "amount": 5}, tool_call_id="r1"),
                ToolCallPart("refund", {"order": "B2", "amount": 6}, tool_call_id="r2"),
            ]
        ),
        lambda m: ModelResponse(parts=[TextPart(json.dumps(tool_returns(m), sort_keys=True))]),
    )
    counts = Counter[str]()
    rt = perdure.Runtime(data_dir)
    register_agent(rt, "support", approval_agent(model, counts))
    async with rt:
        run_id = (await start(rt, "support")).run.id
        rec = await waiting(rt, run_id)
        assert rec.waiting is not None and [w.key for w in rec.waiting.waits] == ["r1"]
        await rt.resume(run_id, perdure.ApprovalDecision(key="r1", approved=False))
        await wait_until(
            lambda: (
                rt.get(run_id).waiting is not None and rt.get(run_id).waiting.waits[0].key == "r2"
            )
        )
        await rt.resume(run_id, perdure.ApprovalDecision(key="r2", approved=True))
        rec, _ = await finish(rt, run_id)
    assert rec.completion is not None
    assert json.loads(rec.completion.result) == {
        "r1": "The tool call was denied.",
        "r2": "refunded 6 on B2",
    }
    assert counts["refund"] == 1


# -- deferred and external tools ------------------------------------------------------------


async def test_external_and_frontend_tools_wait_for_tool_results(data_dir: Path) -> None:
    """An ExternalToolset tool, a client's AG-UI frontend tool and a tool raising
    CallDeferred all wait for ToolResults; the two external ones at once."""
    model = Counting(
        lambda m: ModelResponse(
            parts=[
                ToolCallPart("crm_lookup", {"email": "a@b.c"}, tool_call_id="ext_1"),
                ToolCallPart("confirm_dialog", {"text": "Proceed?"}, tool_call_id="ui_1"),
            ]
        ),
        lambda m: ModelResponse(
            parts=[ToolCallPart("ship", {"order": "A1"}, tool_call_id="ship_1")]
        ),
        lambda m: ModelResponse(parts=[TextPart(json.dumps(tool_returns(m), sort_keys=True))]),
    )
    crm = ExternalToolset(
        [ToolDefinition(name="crm_lookup", parameters_json_schema={"type": "object"})]
    )
    agent = Agent(FunctionModel(model), toolsets=[crm])
    ship_calls: list[str] = []

    @agent.tool_plain
    async def ship(order: str) -> str:
        ship_calls.append(order)
        raise CallDeferred(metadata={"queue": "warehouse"})  # the warehouse answers later

    frontend = [
        {"name": "confirm_dialog", "description": "Ask the user", "parameters": {"type": "object"}}
    ]
    rt = perdure.Runtime(data_dir)
    register_agent(rt, "support", agent)
    async with rt:
        run_id = (await start(rt, "support", tools=frontend)).run.id
        rec = await waiting(rt, run_id, count=2)
        assert rec.waiting is not None and rec.waiting.reason == "tool"
        (pending,) = interrupts(await assert_valid_log(rt, run_id))[-1:]
        assert sorted((i["reason"], i["toolCallId"]) for i in pending) == [
            ("tool_call", "ext_1"),
            ("tool_call", "ui_1"),
        ]
        await rt.resume(
            run_id, perdure.ToolResult(tool_call_id="ext_1", content={"customer": "Ann"})
        )
        # The AG-UI way: a resume[] entry is the same signal.
        entry = {"interruptId": "tool:ui_1", "status": "resolved", "payload": "yes"}
        await rt.resume(run_id, perdure.signal_from_resume(entry))
        await waiting(rt, run_id)
        await rt.resume(run_id, perdure.ToolResult(tool_call_id="ship_1", content="shipped by DHL"))
        rec, wire = await finish(rt, run_id)
    assert rec.status == "completed" and rec.completion is not None
    assert [e["toolCallId"] for e in wire if e["type"] == "TOOL_CALL_RESULT"] == [
        "ext_1",
        "ui_1",
        "ship_1",
    ]
    assert json.loads(rec.completion.result) == {
        "ext_1": {"customer": "Ann"},
        "ship_1": "shipped by DHL",
        "ui_1": "yes",
    }
    assert ship_calls == ["A1"]  # deferred once, never re-run: the result came from outside
    assert model.calls == 3


async def test_question_becomes_an_input_wait(data_dir: Path) -> None:
    model = Counting(
        lambda m: ModelResponse(parts=[ToolCallPart("ask_size", {}, tool_call_id="q1")]),
        lambda m: ModelResponse(parts=[TextPart(f"Size {tool_returns(m)['q1']} it is.")]),
    )
    agent = Agent(FunctionModel(model))

    @agent.tool_plain
    async def ask_size() -> str:
        raise CallDeferred(metadata={"prompt": "Which size?"}, kind="question")

    rt = perdure.Runtime(data_dir)
    register_agent(rt, "shop", agent)
    async with rt:
        run_id = (await start(rt, "shop")).run.id
        rec = await waiting(rt, run_id)
        assert rec.waiting is not None
        (wait,) = rec.waiting.waits
        assert (wait.reason, wait.key, wait.prompt) == ("input", "q1", "Which size?")
        await rt.resume(run_id, perdure.InputResponse(key="q1", value="L"))
        rec, _ = await finish(rt, run_id)
    assert rec.completion is not None and rec.completion.result == "Size L it is."


async def test_tool_retry_is_recorded_and_the_model_is_told(data_dir: Path) -> None:
    model = Counting(
        lambda m: ModelResponse(parts=[ToolCallPart("lookup", {"order": "a1"}, tool_call_id="t1")]),
        lambda m: ModelResponse(parts=[ToolCallPart("lookup", {"order": "A1"}, tool_call_id="t2")]),
        lambda m: ModelResponse(parts=[TextPart(str(tool_returns(m)["t2"]))]),
    )
    agent = Agent(FunctionModel(model))

    @agent.tool_plain
    async def lookup(order: str) -> str:
        if order != order.upper():
            raise ModelRetry("order ids are upper case")
        return f"{order} found"

    rt = perdure.Runtime(data_dir)
    register_agent(rt, "support", agent)
    async with rt:
        rec, wire = await finish(rt, (await start(rt, "support")).run.id)
    assert rec.completion is not None and rec.completion.result == "A1 found"
    results = [(e["toolCallId"], e["content"]) for e in wire if e["type"] == "TOOL_CALL_RESULT"]
    assert results == [("t1", "order ids are upper case"), ("t2", "A1 found")]


async def test_model_step_retries_with_its_policy(data_dir: Path) -> None:
    attempts: list[int] = []

    async def flaky(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        attempts.append(1)
        if len(attempts) == 1:
            raise ConnectionError("provider unreachable")
        return ModelResponse(parts=[TextPart("ok")])

    rt = perdure.Runtime(data_dir)
    register_agent(
        rt,
        "a",
        Agent(FunctionModel(flaky)),
        model_retry=perdure.RetryPolicy(max_attempts=2, initial=0.01),
    )
    register_agent(rt, "b", Agent(FunctionModel(flaky)))
    async with rt:
        rec, wire = await finish(rt, (await start(rt, "a")).run.id)
        assert rec.completion is not None and rec.completion.result == "ok" and len(attempts) == 2
        assert any(e["type"] == "CUSTOM" and e["name"] == "perdure.step_retry" for e in wire)
        attempts.clear()
        rec, _ = await finish(rt, (await start(rt, "b")).run.id)
    assert (
        rec.status == "failed" and rec.completion is not None and rec.completion.error is not None
    )
    assert (
        rec.completion.error.code == "STEP_FAILED"
        and "provider unreachable" in rec.completion.error.message
    )


# -- conversations --------------------------------------------------------------------------


async def test_next_run_of_the_thread_continues_from_the_snapshot(data_dir: Path) -> None:
    seen: list[list[str]] = []

    async def chat(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        prompts = [
            part.content
            for m in messages
            if isinstance(m, ModelRequest)
            for part in m.parts
            if isinstance(part, UserPromptPart)
        ]
        seen.append([str(p) for p in prompts])
        answers = [
            p.content
            for m in messages
            if isinstance(m, ModelResponse)
            for p in m.parts
            if isinstance(p, TextPart)
        ]
        return ModelResponse(parts=[TextPart(f"answer {len(answers) + 1} to {prompts[-1]}")])

    rt = perdure.Runtime(data_dir)
    register_agent(rt, "chat", Agent(FunctionModel(chat)))
    async with rt:
        first, wire = await finish(rt, (await start(rt, "chat", "one")).run.id)
        snapshot = next(e for e in wire if e["type"] == "MESSAGES_SNAPSHOT")["messages"]
        history = [*snapshot, user("two", mid="u2")]
        second = await rt.start("agent:chat", {"messages": history}, owner=THREAD)
        rec, wire = await finish(rt, second.run.id)
    assert first.completion is not None and first.completion.result == "answer 1 to one"
    assert rec.completion is not None and rec.completion.result == "answer 2 to two"
    assert seen == [["one"], ["one", "two"]]
    final = next(e for e in wire if e["type"] == "MESSAGES_SNAPSHOT")["messages"]
    assert [(m["role"], m["content"]) for m in final] == [
        ("user", "one"),
        ("assistant", "answer 1 to one"),
        ("user", "two"),
        ("assistant", "answer 2 to two"),
    ]


async def test_bad_messages_fail_the_run_as_invalid_input(data_dir: Path) -> None:
    rt = perdure.Runtime(data_dir)
    register_agent(
        rt, "chat", Agent(FunctionModel(Counting(lambda m: ModelResponse(parts=[TextPart("x")]))))
    )
    async with rt:
        started = await rt.start("agent:chat", {"messages": [{"role": "wizard"}]}, owner=THREAD)
        rec, _ = await finish(rt, started.run.id)
        empty = await rt.start("agent:chat", {"messages": []}, owner=THREAD)
        rec_empty, _ = await finish(rt, empty.run.id)
    for r in (rec, rec_empty):
        assert r.status == "failed" and r.completion is not None and r.completion.error is not None
        assert r.completion.error.code == "INVALID_INPUT"


# -- streaming ------------------------------------------------------------------------------


async def test_streamed_deltas_reach_followers_while_the_request_runs(data_dir: Path) -> None:
    """The second half of the answer is only produced once a follower of the run has
    seen the first half: the deltas are committed live, not with the step's result."""
    seen_first = asyncio.Event()

    async def stream(
        messages: list[ModelMessage], info: AgentInfo
    ) -> AsyncIterator[str | DeltaThinkingCalls]:
        yield {0: DeltaThinkingPart(content="Plan: greet.")}
        yield "Hel"
        await asyncio.wait_for(seen_first.wait(), 10)
        yield "lo!"

    rt = perdure.Runtime(data_dir)
    register_agent(rt, "streamer", Agent(FunctionModel(stream_function=stream)), flush_interval=0)
    async with rt:
        run_id = (await start(rt, "streamer")).run.id
        live: list[str] = []
        async for event in rt.events(run_id):
            wire = event.to_wire()
            live.append(wire["type"])
            if wire["type"] == "TEXT_MESSAGE_CONTENT" and wire["delta"] == "Hel":
                assert "STEP_FINISHED" not in live
                rt_loop_set(seen_first)
        rec, wire = await finish(rt, run_id)
    assert rec.completion is not None and rec.completion.result == "Hello!"
    assert [e["delta"] for e in wire if e["type"] == "TEXT_MESSAGE_CONTENT"] == ["Hel", "lo!"]
    assert [t for t in types(wire) if t.startswith("REASONING")] == [
        "REASONING_START",
        "REASONING_MESSAGE_START",
        "REASONING_MESSAGE_CONTENT",
        "REASONING_MESSAGE_END",
        "REASONING_END",
    ]
    assert live == types(wire)


def rt_loop_set(event: asyncio.Event) -> None:
    """Set an asyncio.Event from trio code: both run on the same thread, so a plain call
    is enough once the asyncio loop has a waiter (call_soon wakes it)."""
    event.set()


# -- cancellation ---------------------------------------------------------------------------


async def test_cancel_cancels_the_in_flight_model_request(data_dir: Path) -> None:
    trace: list[str] = []

    async def hangs(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        trace.append("request")
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            trace.append("cancelled")
            raise
        return ModelResponse(parts=[TextPart("never")])

    # A grace far longer than the hang guard: cancel can only return in time if the
    # request ended on cancellation, never by being abandoned after the grace.
    rt = perdure.Runtime(data_dir, cancel_grace=600)
    register_agent(rt, "slow", Agent(FunctionModel(hangs)))
    async with rt:
        run_id = (await start(rt, "slow")).run.id
        await wait_until(lambda: trace == ["request"])
        with trio.fail_after(60):  # hang guard
            cancelled = await rt.cancel(run_id, reason="user left")
        # Seen by the time cancel returned: the asyncio side of the request was cancelled.
        assert trace == ["request", "cancelled"]
        rec, wire = await finish(rt, run_id)
    assert cancelled.cancelled and rec.status == "cancelled"
    assert wire[-1]["type"] == "RUN_FINISHED" and wire[-1]["outcome"]["type"] == "cancelled"


async def test_cancel_mid_stream_closes_what_the_stream_opened(data_dir: Path) -> None:
    async def stream(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
        yield "partial "
        await asyncio.sleep(3600)
        yield "never"

    rt = perdure.Runtime(data_dir)
    register_agent(rt, "streamer", Agent(FunctionModel(stream_function=stream)), flush_interval=0)
    async with rt:
        run_id = (await start(rt, "streamer")).run.id
        seen: list[str] = []
        async for event in rt.events(run_id):
            seen.append(event.type)
            if event.type == "TEXT_MESSAGE_CONTENT":
                break
        await rt.cancel(run_id)
        rec, wire = await finish(rt, run_id)
    assert rec.status == "cancelled"
    assert "TEXT_MESSAGE_START" in seen  # the message was open, live, when cancelled
    assert "TEXT_MESSAGE_END" in types(wire)  # the half-streamed message is closed


async def test_cancel_while_waiting_for_approval(data_dir: Path) -> None:
    model, counts = refund_script(), Counter[str]()
    rt = perdure.Runtime(data_dir)
    register_agent(rt, "support", approval_agent(model, counts))
    async with rt:
        run_id = (await start(rt, "support")).run.id
        await waiting(rt, run_id)
        await rt.cancel(run_id)
        rec, _ = await finish(rt, run_id)
    assert rec.status == "cancelled" and counts["refund"] == 0


# -- many agents at once ----------------------------------------------------------------------


async def test_concurrent_agents_under_trio_asyncio(data_dir: Path) -> None:
    """200 runs at once, each its own asyncio loop on the one trio thread, each making
    two tool calls whose asyncio sleeps interleave with every other run's."""
    n = 200
    calls: Counter[str] = Counter()

    async def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        first = messages[0]
        assert isinstance(first, ModelRequest)
        who = str(next(p.content for p in first.parts if isinstance(p, UserPromptPart)))
        calls[who] += 1
        if responses(messages) == 0:
            return ModelResponse(
                parts=[
                    ToolCallPart("double", {"x": int(who)}, tool_call_id=f"d{who}"),
                    ToolCallPart("square", {"x": int(who)}, tool_call_id=f"s{who}"),
                ]
            )
        got = tool_returns(messages)
        return ModelResponse(parts=[TextPart(f"{got[f'd{who}']},{got[f's{who}']}")])

    agent = Agent(FunctionModel(model))

    @agent.tool_plain
    async def double(x: int) -> int:
        await asyncio.sleep(0.01)
        return 2 * x

    @agent.tool_plain
    async def square(x: int) -> int:
        await asyncio.sleep(0.01)
        return x * x

    rt = perdure.Runtime(data_dir, durability="process")
    register_agent(rt, "math", agent)
    async with rt:
        ids = [(await start(rt, "math", str(i))).run.id for i in range(n)]
        for i, run_id in enumerate(ids):
            rec, wire = await finish(rt, run_id)
            assert rec.completion is not None and rec.completion.result == f"{2 * i},{i * i}"
            assert step_names(wire) == [
                "model:1",
                f"tool:double:d{i}",
                f"tool:square:s{i}",
                "model:2",
            ]
    assert calls == Counter({str(i): 2 for i in range(n)})


# -- child runs -----------------------------------------------------------------------------


async def test_a_tool_can_be_a_child_run(data_dir: Path) -> None:
    def findings(messages: list[ModelMessage]) -> ModelResponse:
        first = messages[0]
        assert isinstance(first, ModelRequest)
        topic = next(p.content for p in first.parts if isinstance(p, UserPromptPart))
        return ModelResponse(parts=[TextPart(f"findings on {topic}")])

    researcher = Agent(FunctionModel(Counting(findings)))
    lead_model = Counting(
        lambda m: ModelResponse(
            parts=[ToolCallPart("research", {"prompt": "tides"}, tool_call_id="c1")]
        ),
        lambda m: ModelResponse(parts=[TextPart(f"Summary: {tool_returns(m)['c1']}")]),
    )
    lead = Agent(FunctionModel(lead_model))

    @lead.tool_plain(metadata={"perdure": {"child": "agent:researcher"}})
    async def research(prompt: str) -> str:
        raise AssertionError("runs as a child run, not here")

    rt = perdure.Runtime(data_dir)
    register_agent(rt, "researcher", researcher)
    register_agent(rt, "lead", lead)
    async with rt:
        run_id = (await start(rt, "lead")).run.id
        rec, wire = await finish(rt, run_id)
        children = rt.list(parent_id=run_id).runs
        assert len(children) == 1
        child, child_wire = await finish(rt, children[0].id)
    assert rec.completion is not None and rec.completion.result == "Summary: findings on tides"
    assert child.target == "agent:researcher" and child.owner == THREAD
    assert any(
        e["type"] == "TOOL_CALL_RESULT" and e["content"] == "findings on tides" for e in wire
    )
    assert child_wire[0]["type"] == "RUN_STARTED" and child_wire[0]["parentRunId"] == run_id


# -- passivation, deps, timeouts ------------------------------------------------------------


async def test_passivated_waiting_runs_replay_without_calling_anything_again(
    data_dir: Path,
) -> None:
    """With room for one live actor, waiting runs are passivated (their bodies and asyncio
    loops gone); each approval re-activates one, which replays from the journal."""
    model, counts = refund_script(), Counter[str]()
    rt = perdure.Runtime(data_dir, max_live_actors=1)
    register_agent(rt, "support", approval_agent(model, counts))
    async with rt:
        ids = [(await start(rt, "support")).run.id for _ in range(5)]
        for run_id in ids:
            await waiting(rt, run_id)
        assert (model.calls, counts["lookup"]) == (5, 5)
        for run_id in ids:
            await rt.resume(run_id, perdure.ApprovalDecision(key="call_refund", approved=True))
        for run_id in ids:
            rec, _ = await finish(rt, run_id)
            assert rec.completion is not None and rec.completion.result == "Done: refunded 30 on A1"
    assert (model.calls, counts["lookup"], counts["refund"]) == (10, 5, 5)


async def test_deps_are_built_per_activation_and_reach_tools(data_dir: Path) -> None:
    built: list[str] = []
    model = Counting(
        lambda m: ModelResponse(parts=[ToolCallPart("whoami", {}, tool_call_id="w1")]),
        lambda m: ModelResponse(parts=[TextPart(str(tool_returns(m)["w1"]))]),
    )
    agent = Agent(FunctionModel(model), deps_type=dict)

    @agent.tool
    async def whoami(ctx: RunContext[dict[str, str]]) -> str:
        return ctx.deps["user"]

    def deps(ctx: perdure.AgentContext, inp: perdure.AgentInput) -> dict[str, str]:
        built.append(ctx.run_id)
        return {"user": inp.thread_id}

    rt = perdure.Runtime(data_dir)
    register_agent(rt, "support", agent, deps=deps)
    async with rt:
        rec, _ = await finish(rt, (await start(rt, "support")).run.id)
    assert rec.completion is not None and rec.completion.result == "thread-1"
    assert built == [rec.id]


async def test_an_unanswered_approval_expires_and_fails_the_run(data_dir: Path) -> None:
    model, counts = refund_script(), Counter[str]()
    rt = perdure.Runtime(data_dir)
    register_agent(rt, "support", approval_agent(model, counts), approval_timeout=0.2)
    async with rt:
        rec, _ = await finish(rt, (await start(rt, "support")).run.id)
    assert rec.status == "failed" and rec.completion is not None
    assert rec.completion.error is not None and rec.completion.error.code == "WAIT_EXPIRED"
    assert counts["refund"] == 0
    (usage,) = rec.completion.usage  # what the run used before it failed is on the completion
    assert (usage.input_tokens, usage.output_tokens) == (10, 3)


def test_a_blocking_host_runs_durable_agents(data_dir: Path) -> None:
    """From a program that is not trio's: perdure.Host runs the runtime, and so the
    agent's trio-asyncio loop, in its own thread."""
    model = Counting(
        lambda m: ModelResponse(parts=[ToolCallPart("lookup", {"order": "A1"}, tool_call_id="c1")]),
        lambda m: ModelResponse(parts=[TextPart(f"A1: {tool_returns(m)['c1']}")]),
    )
    agent = Agent(FunctionModel(model))

    @agent.tool_plain
    async def lookup(order: str) -> str:
        return "shipped"

    host = perdure.Host(data_dir)
    register_agent(host, "support", agent)
    with host:
        run_id = host.start("agent:support", {"messages": [user("hi")]}, owner=THREAD).run.id
        rec = host.wait(run_id)
        assert_valid_log_host(host, run_id)
    assert rec.completion is not None and rec.completion.result == "A1: shipped"
    assert model.calls == 2


async def test_streamed_tool_calls_and_test_model_provider(data_dir: Path) -> None:
    """pydantic-ai's TestModel streams (so the requests are streamed into the log) and
    names its provider: tool call and text deltas, provider and model on the completion."""
    from pydantic_ai.models.test import TestModel

    agent = Agent(TestModel())
    seen: list[int] = []

    @agent.tool_plain
    async def add(a: int, b: int) -> int:
        seen.append(a + b)
        return a + b

    rt = perdure.Runtime(data_dir)
    register_agent(rt, "calc", agent)
    async with rt:
        rec, wire = await finish(rt, (await start(rt, "calc")).run.id)
    assert rec.status == "completed" and rec.completion is not None
    assert (rec.completion.provider, rec.completion.model) == ("test", "test")
    assert rec.completion.result == '{"add":0}' and seen == [0]
    assert step_names(wire) == ["model:1", "tool:add:pyd_ai_tool_call_id__add", "model:2"]
    call = next(e for e in wire if e["type"] == "TOOL_CALL_START")
    args = "".join(e["delta"] for e in wire if e["type"] == "TOOL_CALL_ARGS")
    assert call["toolCallName"] == "add" and json.loads(args) == {"a": 0, "b": 0}
    text = "".join(e["delta"] for e in wire if e["type"] == "TEXT_MESSAGE_CONTENT")
    assert text == '{"add":0}'


async def test_streamed_tool_call_deltas_from_a_function_model(data_dir: Path) -> None:
    async def stream(
        messages: list[ModelMessage], info: AgentInfo
    ) -> AsyncIterator[str | DeltaToolCalls]:
        if responses(messages) == 0:
            yield {0: DeltaToolCall(name="lookup", tool_call_id="s1")}
            yield {0: DeltaToolCall(json_args='{"order": ')}
            yield {0: DeltaToolCall(json_args='"A1"}')}
        else:
            yield "It has "
            yield str(tool_returns(messages)["s1"])

    agent = Agent(FunctionModel(stream_function=stream))

    @agent.tool_plain
    async def lookup(order: str) -> str:
        return f"{order} shipped"

    rt = perdure.Runtime(data_dir)
    register_agent(rt, "streamer", agent, flush_interval=0)
    async with rt:
        rec, wire = await finish(rt, (await start(rt, "streamer")).run.id)
    assert rec.completion is not None and rec.completion.result == "It has A1 shipped"
    deltas = [e["delta"] for e in wire if e["type"] == "TOOL_CALL_ARGS"]
    assert deltas == ['{"order": ', '"A1"}']  # streamed as they came, not re-serialized
    assert [e["delta"] for e in wire if e["type"] == "TEXT_MESSAGE_CONTENT"] == [
        "It has ",
        "A1 shipped",
    ]
