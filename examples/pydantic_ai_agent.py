"""A pydantic-ai support agent as a durable perdure agent, served over AG-UI.

The agent has one plain tool (``lookup_order``) and one that needs a human's approval
(``refund``). Its model is pydantic-ai's ``FunctionModel`` playing a scripted support
model that streams its answers word by word, so the example runs offline; swap in
``Agent("openai:gpt-4o", ...)`` and the rest stays the same.

Every model request and tool call is a durable step: kill the process while the run
waits for the refund's approval, start it again, and the run picks up where it was
without asking the model or looking the order up again.

In one process (the conversation below, approved through ``rt.resume``)::

    python examples/pydantic_ai_agent.py [DATA_DIR]

Served over HTTP, from the repository's root (``runtime`` is the factory below; data
in ``$SUPPORT_DATA``, default ``./support-data``)::

    perdure serve examples.pydantic_ai_agent:runtime

Then any AG-UI client talks to ``POST /agents/support``: the official ``@ag-ui/client``
``HttpAgent`` gets the streamed text and tool calls, a ``TOOL_CALL_RESULT`` for the
lookup, and a ``RUN_FINISHED`` with an interrupt (reason ``confirmation``, id
``approval:<tool call id>``) for the refund. It answers with a new request on the same
thread carrying ``resume: [{"interruptId": ..., "status": "resolved", "payload":
{"approved": true}, "metadata": {"approver": "ann"}}]`` (``"approved": false`` and a
``"comment"`` deny it, and the model is told why). The next user message on the thread
continues the conversation from the messages the client holds (the run's final
``MESSAGES_SNAPSHOT``). ``POST /runs/{id}/cancel`` stops a run mid-answer.
tests/test_pydantic_ai_agui_e2e.py drives exactly that from node.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import trio
from pydantic_ai import Agent
from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    ModelResponsePart,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
    UserPromptPart,
)
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, DeltaToolCalls, FunctionModel

import perdure
from perdure.integrations.pydantic_ai import register_agent

ORDERS = {
    "A-1001": {"item": "kettle", "paid": 49.0, "status": "delivered broken"},
    "B-2002": {"item": "toaster", "paid": 89.0, "status": "delivered 45 days ago"},
}
APPROVERS = ["ann"]
LATENCY = 0.01
"""Seconds the scripted model takes per streamed word (an LLM's token latency)."""

POLICY = (
    "Our refund policy, in full: an item that arrived broken is refunded at once, "
    "whatever its price. An item that works may be returned within 30 days of delivery "
    "for a full refund, shipping included. After 30 days we repair it instead, free of "
    "charge, for two years. Refunds go back to the card you paid with and take three to "
    "five business days to appear. Gift cards are refunded as store credit. "
) * 4


# -- the scripted model -----------------------------------------------------------------------


@dataclass
class Reply:
    """What the scripted model says next: text, then at most one tool call."""

    text: str
    tool: str | None = None
    args: dict[str, Any] = field(default_factory=dict)
    call_id: str = ""


def decide(messages: list[ModelMessage]) -> Reply:
    """Stands in for an LLM: look the order up, refund it, report back; use the history."""
    question, start = _last_question(messages)
    returns = {
        part.tool_name: part
        for message in messages[start:]
        if isinstance(message, ModelRequest)
        for part in message.parts
        if isinstance(part, ToolReturnPart)
    }
    # Tool call ids are unique in the conversation: the n-th response makes call_<n>.
    call_id = f"call_{1 + sum(isinstance(m, ModelResponse) for m in messages)}"
    if "policy" in question.lower():
        return Reply(POLICY)
    found = re.search(r"[A-Z]-\d{4}", question)
    if found is None:
        earlier = _refunds(messages[:start])
        if earlier:
            return Reply(
                f"Your refund went through ({earlier[-1]}) It shows on your card within "
                "three to five business days."
            )
        return Reply("Which order is it about? Give me its number, like A-1001.")
    order_id = found.group(0)
    if "lookup_order" not in returns:
        return Reply("Let me look that order up.", "lookup_order", {"order_id": order_id}, call_id)
    order = json.loads(str(returns["lookup_order"].content))
    if "error" in order:
        return Reply(f"I cannot find order {order_id}.")
    refund = returns.get("refund")
    if refund is None:
        return Reply(
            f"Your {order['item']} was {order['status']}: I am asking for a refund of "
            f"{order['paid']:.2f} EUR.",
            "refund",
            {"order_id": order_id, "amount": order["paid"]},
            call_id,
        )
    if refund.outcome == "denied":
        return Reply(f"I could not refund order {order_id}: {refund.content}")
    return Reply(f"Done: {refund.content}")


def _last_question(messages: list[ModelMessage]) -> tuple[str, int]:
    """The user's latest prompt and the index of the request that carries it."""
    for index in range(len(messages) - 1, -1, -1):
        message = messages[index]
        if isinstance(message, ModelRequest):
            for part in message.parts:
                if isinstance(part, UserPromptPart):
                    return str(part.content), index
    return "", 0


def _refunds(messages: list[ModelMessage]) -> list[str]:
    """Refunds made earlier in the conversation (the history the client sent back)."""
    return [
        str(part.content)
        for message in messages
        if isinstance(message, ModelRequest)
        for part in message.parts
        if isinstance(part, ToolReturnPart) and str(part.content).startswith("refunded")
    ]


async def support_model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    """The scripted model, answering at once (pydantic-ai's non-streamed requests)."""
    reply = decide(messages)
    parts: list[ModelResponsePart] = [TextPart(reply.text)]
    if reply.tool is not None:
        parts.append(ToolCallPart(reply.tool, reply.args, tool_call_id=reply.call_id))
    return ModelResponse(parts=parts)


async def support_model_stream(
    messages: list[ModelMessage], info: AgentInfo
) -> AsyncIterator[str | DeltaToolCalls]:
    """The scripted model, streaming: words with a token latency, then the tool call."""
    reply = decide(messages)
    for word in re.findall(r"\S+\s*", reply.text):
        await asyncio.sleep(LATENCY)
        yield word
    if reply.tool is not None:
        args = json.dumps(reply.args)
        half = len(args) // 2
        yield {0: DeltaToolCall(name=reply.tool, tool_call_id=reply.call_id)}
        yield {0: DeltaToolCall(json_args=args[:half])}
        yield {0: DeltaToolCall(json_args=args[half:])}


# -- the agent --------------------------------------------------------------------------------

agent = Agent(
    FunctionModel(support_model, stream_function=support_model_stream, model_name="support"),
    instructions="You are a support agent. Refunds need a human's approval.",
)


@agent.tool_plain
async def lookup_order(order_id: str) -> str:
    """Find an order by id."""
    order = ORDERS.get(order_id)
    if order is None:
        return json.dumps({"id": order_id, "error": "no such order"})
    return json.dumps({"id": order_id, **order})


@agent.tool_plain(requires_approval=True)
async def refund(order_id: str, amount: float) -> str:
    """Refund an order (a human approves every refund)."""
    return f"refunded {amount:.2f} EUR on {order_id}."


def build_runtime(path: str) -> perdure.Runtime:
    """A runtime over ``path`` with the agent registered as ``agent:support``."""
    rt = perdure.Runtime(path)
    register_agent(rt, "support", agent, approvers=APPROVERS)
    return rt


def runtime() -> perdure.Runtime:
    """For ``perdure serve examples.pydantic_ai_agent:runtime`` (data in ``$SUPPORT_DATA``)."""
    return build_runtime(os.environ.get("SUPPORT_DATA", "support-data"))


# -- in one process ---------------------------------------------------------------------------


async def main(path: str) -> str:
    rt = build_runtime(path)
    async with rt:
        started = await rt.start(
            "agent:support",
            {"messages": [{"id": "m1", "role": "user", "content": "My order A-1001 is broken."}]},
            owner=perdure.Conversation("thread-1"),
        )
        run_id = started.run.id
        key = None
        async for event in rt.events(run_id):
            wire = event.to_wire()
            if wire["type"] != "TEXT_MESSAGE_CONTENT":  # one line per event, not per word
                print(event.event_id, wire["type"], wire.get("stepName") or "")
            outcome = wire.get("outcome") or {}
            if outcome.get("type") == "interrupt":
                (interrupt,) = outcome["interrupts"]
                print("  interrupt:", interrupt["reason"], interrupt.get("message"))
                key = interrupt["id"].partition(":")[2]  # "approval:<tool call id>"
                break  # a human looks at the refund, then approves it
        assert key is not None
        decision = perdure.ApprovalDecision(key=key, approved=True, approver="ann")
        await rt.resume(run_id, decision)
        done = await rt.wait(run_id)
        completion = done.completion
        assert completion is not None
        print(done.status, repr(completion.result))
        print("usage:", completion.usage, "model:", completion.model)
        return done.status


if __name__ == "__main__":
    data = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp() + "/data"
    assert trio.run(main, data) == "completed"
