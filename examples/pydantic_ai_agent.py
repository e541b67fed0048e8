"""A pydantic-ai support agent as a durable perdure agent run.

The agent has one plain tool (``lookup_order``) and one that needs a human's approval
(``refund``). Its model is pydantic-ai's ``FunctionModel`` playing a scripted support
model, so the example runs offline; swap in ``Agent("openai:gpt-4o", ...)`` and the
rest stays the same.

The run streams its model output and tool calls into its AG-UI log, pauses on the
refund (an AG-UI interrupt, reason ``confirmation``), and continues when the approval
arrives through ``rt.resume``. Every model request and tool call is a durable step: kill
the process while it waits and start it again, and the run picks up where it was
without asking the model or looking the order up again.

    python examples/pydantic_ai_agent.py [DATA_DIR]

Driving it from an AG-UI client: perdure's HTTP server exposes agent targets at
``POST /agents/{name}`` (``RunAgentInput`` in, the run's events as SSE out); a
``@ag-ui/client`` ``HttpAgent`` pointed at ``/agents/support`` runs this same agent,
and answers the interrupt by sending ``resume: [{"interruptId": "approval:<tool call
id>", "status": "resolved"}]`` (``"cancelled"`` denies). Nothing below changes.
"""

from __future__ import annotations

import json
import re
import sys
import tempfile

import trio
from pydantic_ai import Agent
from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
    UserPromptPart,
)
from pydantic_ai.models.function import AgentInfo, FunctionModel

import perdure
from perdure.integrations.pydantic_ai import register_agent

ORDERS = {"A-1001": {"item": "kettle", "paid": 49.0, "status": "delivered broken"}}


async def support_model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    """Stands in for an LLM: look the order up, ask for a refund, then report back."""
    returns = {
        part.tool_name: part.content
        for message in messages
        if isinstance(message, ModelRequest)
        for part in message.parts
        if isinstance(part, ToolReturnPart)
    }
    if "lookup_order" not in returns:
        prompt = next(
            str(part.content)
            for message in messages
            if isinstance(message, ModelRequest)
            for part in message.parts
            if isinstance(part, UserPromptPart)
        )
        order = re.search(r"[A-Z]-\d+", prompt)
        return ModelResponse(
            parts=[
                TextPart("Let me look that order up."),
                ToolCallPart(
                    "lookup_order",
                    {"order_id": order.group(0) if order else "?"},
                    tool_call_id="call_lookup",
                ),
            ]
        )
    if "refund" not in returns:
        order = json.loads(str(returns["lookup_order"]))
        return ModelResponse(
            parts=[
                TextPart(f"Your {order['item']} arrived broken; I'll refund it."),
                ToolCallPart(
                    "refund",
                    {"order_id": order["id"], "amount": order["paid"]},
                    tool_call_id="call_refund",
                ),
            ]
        )
    return ModelResponse(parts=[TextPart(f"Done: {returns['refund']}")])


agent = Agent(FunctionModel(support_model), instructions="You are a support agent.")


@agent.tool_plain
async def lookup_order(order_id: str) -> str:
    """Find an order by id."""
    return json.dumps({"id": order_id, **ORDERS[order_id]})


@agent.tool_plain(requires_approval=True)
async def refund(order_id: str, amount: float) -> str:
    """Refund an order (a human approves every refund)."""
    return f"refunded {amount:.2f} EUR on {order_id}."


rt = perdure.Runtime(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp() + "/data")
register_agent(rt, "support", agent, approvers=["ann"])


async def main() -> str:
    async with rt:
        started = await rt.start(
            "agent:support",
            {"messages": [{"id": "m1", "role": "user", "content": "My order A-1001 is broken."}]},
            owner=perdure.Conversation("thread-1"),
        )
        run_id = started.run.id
        async for event in rt.events(run_id):
            wire = event.to_wire()
            print(event.event_id, wire["type"], wire.get("stepName") or wire.get("delta") or "")
            outcome = wire.get("outcome") or {}
            if outcome.get("type") == "interrupt":
                (interrupt,) = outcome["interrupts"]
                print("  interrupt:", interrupt["reason"], interrupt.get("message"))
                break  # a human looks at the refund, then approves it
        decision = perdure.ApprovalDecision(key="call_refund", approved=True, approver="ann")
        await rt.resume(run_id, decision)
        done = await rt.wait(run_id)
        completion = done.completion
        assert completion is not None
        print(done.status, repr(completion.result))
        print("usage:", completion.usage, "model:", completion.model)
        return done.status


if __name__ == "__main__":
    assert trio.run(main) == "completed"
