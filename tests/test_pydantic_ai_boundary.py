"""Durable pydantic-ai agents against perdure's checks at the boundary (R30, R19).

perdure validates what enters storage strictly: usage counts, model labels, step names,
wait keys and prompts, the size of every event. What pydantic-ai or a model hands over
is made acceptable by the integration, never a reason to fail a run that otherwise
worked. And the run's final ``MESSAGES_SNAPSHOT`` names every message the way the
run's events did, so a client that applies it keeps the conversation in order.

The models are pydantic-ai's ``FunctionModel`` with scripted responses.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers.checks import finish, waiting
from pydantic_ai import Agent, RunContext
from pydantic_ai.exceptions import ApprovalRequired, CallDeferred
from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    TextPart,
    ThinkingPart,
    ToolCallPart,
    ToolReturnPart,
)
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.usage import RequestUsage, UsageLimits

import perdure
from perdure.agui import MAX_EVENT_BYTES
from perdure.integrations.pydantic_ai import register_agent

pytestmark = pytest.mark.usefixtures("official_agui_check")

THREAD = perdure.Conversation("thread-b")
Script = list[Callable[[list[ModelMessage]], ModelResponse]]


def scripted(*script: Callable[[list[ModelMessage]], ModelResponse]) -> Any:
    """A FunctionModel function answering the n-th request with ``script[n]``."""

    async def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        done = sum(isinstance(m, ModelResponse) for m in messages)
        return script[min(done, len(script) - 1)](messages)

    return model


def returned(messages: list[ModelMessage]) -> dict[str, Any]:
    return {
        part.tool_call_id: part.content
        for m in messages
        if isinstance(m, ModelRequest)
        for part in m.parts
        if isinstance(part, ToolReturnPart)
    }


def start(rt: perdure.Runtime, name: str, text: str = "hi") -> Any:
    message = {"id": "u1", "role": "user", "content": text}
    return rt.start(f"agent:{name}", {"messages": [message]}, owner=THREAD)


def snapshot_of(wire: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return next(e for e in wire if e["type"] == "MESSAGES_SNAPSHOT")["messages"]


# -- completion metadata -----------------------------------------------------------------------


async def test_usage_and_labels_perdure_would_refuse_are_made_valid(data_dir: Path) -> None:
    """Huge and negative counts, a 400-byte model name with a NUL, an empty provider: the
    run completes and reports what perdure can store (counts clamped to 0..2**53-1,
    what JSON carries exactly)."""
    huge = 2**60
    model = scripted(
        lambda m: ModelResponse(
            parts=[ToolCallPart("noop", {}, tool_call_id="c1")],
            usage=RequestUsage(input_tokens=huge, output_tokens=-3, cache_read_tokens=huge),
            provider_name="",
            finish_reason="tool_call",
        ),
        lambda m: ModelResponse(
            parts=[TextPart("done")],
            usage=RequestUsage(input_tokens=huge, output_tokens=7),
            provider_name="p" * 300,
            finish_reason="stop",
        ),
    )
    name = "m\0" + "é" * 200
    agent = Agent(FunctionModel(model, model_name=name))

    @agent.tool_plain
    async def noop() -> str:
        return "ok"

    rt = perdure.Runtime(data_dir)
    register_agent(rt, "odd", agent)
    async with rt:
        rec, wire = await finish(rt, (await start(rt, "odd")).run.id)
    assert rec.status == "completed", rec.completion
    completion = rec.completion
    assert completion is not None and completion.result == "done"
    label = "m" + "é" * 127  # NUL dropped, cut at 256 bytes on a character boundary
    assert completion.model == label and completion.provider == "p" * 256
    assert completion.finish_reason == "stop"
    by_provider = {u.provider: u for u in completion.usage}
    assert set(by_provider) == {None, "p" * 256}
    first, second = by_provider[None], by_provider["p" * 256]
    top = 2**53 - 1
    assert (first.model, first.input_tokens, first.output_tokens) == (label, top, 0)
    assert first.cached_input_tokens == top and first.total_tokens == top
    assert (second.input_tokens, second.output_tokens, second.total_tokens) == (top, 7, top)
    assert [u["inputTokens"] for u in wire[-1]["usage"]] == [top, top]


async def test_more_providers_than_perdure_keeps_are_summed_into_one(data_dir: Path) -> None:
    """perdure keeps 100 usage entries per run: the 100th sums the rest."""
    count = 102

    async def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        n = sum(isinstance(m, ModelResponse) for m in messages)
        usage = RequestUsage(input_tokens=1, output_tokens=1)
        if n < count - 1:
            return ModelResponse(
                parts=[ToolCallPart("noop", {}, tool_call_id=f"c{n}")],
                usage=usage,
                provider_name=f"p{n}",
            )
        return ModelResponse(parts=[TextPart("done")], usage=usage, provider_name=f"p{n}")

    agent = Agent(FunctionModel(model))

    @agent.tool_plain
    async def noop() -> str:
        return "ok"

    rt = perdure.Runtime(data_dir, durability="memory")
    register_agent(rt, "many", agent, usage_limits=UsageLimits(request_limit=None))
    async with rt:
        rec, _ = await finish(rt, (await start(rt, "many")).run.id)
    assert rec.status == "completed", rec.completion
    assert rec.completion is not None
    usage = rec.completion.usage
    assert len(usage) == 100
    assert [u.provider for u in usage[:99]] == [f"p{n}" for n in range(99)]
    assert usage[99].provider is None and usage[99].input_tokens == count - 99
    assert sum(u.input_tokens or 0 for u in usage) == count


# -- names and sizes ----------------------------------------------------------------------------


async def test_odd_tool_call_ids_become_valid_step_names_and_wait_keys(data_dir: Path) -> None:
    """A 300-byte tool call id and one with a NUL: the step name and the approval's wait
    key are digests perdure accepts; the run waits, is approved and completes."""
    long_id, nul_id = "é" * 150, "call\0x"
    model = scripted(
        lambda m: ModelResponse(
            parts=[
                ToolCallPart("lookup", {}, tool_call_id=long_id),
                ToolCallPart("refund", {}, tool_call_id=nul_id),
            ]
        ),
        lambda m: ModelResponse(parts=[TextPart(f"{returned(m)[long_id]}, {returned(m)[nul_id]}")]),
    )
    agent = Agent(FunctionModel(model))

    @agent.tool_plain
    async def lookup() -> str:
        return "found"

    @agent.tool_plain(requires_approval=True)
    async def refund() -> str:
        return "refunded"

    rt = perdure.Runtime(data_dir)
    register_agent(rt, "ids", agent)
    async with rt:
        run_id = (await start(rt, "ids")).run.id
        rec = await waiting(rt, run_id)
        assert rec.waiting is not None
        (wait,) = rec.waiting.waits
        assert wait.reason == "approval" and wait.key.startswith("call_") and "\0" not in wait.key
        await rt.resume(run_id, perdure.ApprovalDecision(key=wait.key, approved=True))
        rec, wire = await finish(rt, run_id)
    assert rec.status == "completed", rec.completion
    assert rec.completion is not None and rec.completion.result == "found, refunded"
    steps = [e["stepName"] for e in wire if e["type"] == "STEP_STARTED"]
    assert steps[0] == "model:1" and steps[1].startswith("tool:lookup:")
    assert all(len(s.encode()) <= 200 and "\0" not in s for s in steps)
    # The events keep the model's own ids.
    calls = [e["toolCallId"] for e in wire if e["type"] == "TOOL_CALL_START"]
    assert calls == [long_id, nul_id]


async def test_a_huge_reasoning_part_is_split_under_the_event_cap(data_dir: Path) -> None:
    thinking = "why\u0001 " * 60_000  # 300,000 characters, 600 KB as JSON
    model = scripted(lambda m: ModelResponse(parts=[ThinkingPart(thinking), TextPart("Yes.")]))
    rt = perdure.Runtime(data_dir)
    register_agent(rt, "thinker", Agent(FunctionModel(model)))
    async with rt:
        rec, wire = await finish(rt, (await start(rt, "thinker")).run.id)
    assert rec.status == "completed", rec.completion
    pieces = [e["delta"] for e in wire if e["type"] == "REASONING_MESSAGE_CONTENT"]
    assert len(pieces) == 10 and "".join(pieces) == thinking
    # The conversation no longer fits one event either: perdure says so instead.
    assert not any(e["type"] == "MESSAGES_SNAPSHOT" for e in wire)
    skipped = next(e for e in wire if e["type"] == "CUSTOM")
    assert skipped["name"] == "perdure.messages_snapshot_skipped"
    assert skipped["value"]["bytes"] > MAX_EVENT_BYTES


async def test_a_long_approval_prompt_is_cut_not_refused(data_dir: Path) -> None:
    prompt = "Refund this? " + "é" * 10_000  # 20 KB; perdure takes 16 KiB
    model = scripted(
        lambda m: ModelResponse(parts=[ToolCallPart("refund", {}, tool_call_id="r1")]),
        lambda m: ModelResponse(parts=[TextPart(str(returned(m)["r1"]))]),
    )
    agent = Agent(FunctionModel(model))

    @agent.tool
    async def refund(ctx: RunContext[None]) -> str:
        if not ctx.tool_call_approved:
            raise ApprovalRequired(metadata={"prompt": prompt})
        return "refunded"

    rt = perdure.Runtime(data_dir)
    register_agent(rt, "asks", agent)
    async with rt:
        run_id = (await start(rt, "asks")).run.id
        rec = await waiting(rt, run_id)
        assert rec.waiting is not None
        (wait,) = rec.waiting.waits
        assert wait.prompt is not None and prompt.startswith(wait.prompt)
        assert 16 * 1024 - 2 <= len(wait.prompt.encode()) <= 16 * 1024
        await rt.resume(run_id, perdure.ApprovalDecision(key="r1", approved=True))
        rec, _ = await finish(rt, run_id)
    assert rec.completion is not None and rec.completion.result == "refunded"


# -- the conversation as the events told it -------------------------------------------------


async def test_the_snapshot_names_messages_as_the_events_did(data_dir: Path) -> None:
    """Reasoning, tool calls before text, text after tool calls, adjacent texts, a
    denied call, a question answered: applying the snapshot to what the events built
    moves nothing (perdure's fold, like the official client, appends unknown ids)."""
    model = scripted(
        lambda m: ModelResponse(
            parts=[
                ThinkingPart("First the order."),
                TextPart("Let me check."),
                ToolCallPart("lookup", {"order": 1}, tool_call_id="c1"),
            ]
        ),
        lambda m: ModelResponse(
            parts=[
                ToolCallPart("lookup", {"order": 2}, tool_call_id="c2"),
                TextPart("And the other one."),
                ToolCallPart("refund", {}, tool_call_id="c3"),
                ToolCallPart("ask_size", {}, tool_call_id="c4"),
            ]
        ),
        lambda m: ModelResponse(parts=[TextPart("All "), TextPart("done.")]),
    )
    agent = Agent(FunctionModel(model))

    @agent.tool_plain
    async def lookup(order: int) -> str:
        return f"order {order}: shipped"

    @agent.tool_plain(requires_approval=True)
    async def refund() -> str:
        return "refunded"

    @agent.tool_plain
    async def ask_size() -> str:
        raise CallDeferred(metadata={"prompt": "Which size?"}, kind="question")

    rt = perdure.Runtime(data_dir)
    register_agent(rt, "talk", agent)
    async with rt:
        run_id = (await start(rt, "talk")).run.id
        await waiting(rt, run_id)
        denial = perdure.ApprovalDecision(key="c3", approved=False, response={"comment": "no"})
        await rt.resume(run_id, denial)
        await waiting(rt, run_id)
        await rt.resume(run_id, perdure.InputResponse(key="c4", value="L"))
        rec, wire = await finish(rt, run_id)
        folded = rt.snapshot(run_id).messages
    assert rec.status == "completed", rec.completion
    snapshot = snapshot_of(wire)
    m = f"msg_{run_id}"
    assert [(x["role"], x["id"]) for x in snapshot] == [
        ("user", "u1"),
        ("reasoning", f"{m}_1-reasoning-0"),
        ("assistant", f"{m}_1"),  # "Let me check." + c1
        ("tool", "toolresult_c1"),
        ("assistant", f"{m}_2"),  # c2
        ("tool", "toolresult_c2"),  # right after its call, where the client put it
        ("assistant", f"{m}_2-1"),  # "And the other one." + c3 + c4
        ("tool", "toolresult_c3"),  # the denial
        ("tool", "toolresult_c4"),  # the answer
        ("assistant", f"{m}_3"),  # "All done."
    ]
    assert [x["id"] for x in folded] == [x["id"] for x in snapshot]
    results = {e["toolCallId"]: e["content"] for e in wire if e["type"] == "TOOL_CALL_RESULT"}
    assert results == {"c1": "order 1: shipped", "c2": "order 2: shipped", "c3": "no", "c4": "L"}
    parents = {
        e["toolCallId"]: e["parentMessageId"] for e in wire if e["type"] == "TOOL_CALL_START"
    }
    assert parents == {"c1": f"{m}_1", "c2": f"{m}_2", "c3": f"{m}_2-1", "c4": f"{m}_2-1"}
