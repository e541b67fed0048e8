"""An agent that calls a client-side tool and waits for its result.

The "model" is a scripted fake: it asks for the weather tool, then answers with
what the tool returned. The run pauses in ``waiting`` (an AG-UI interrupt with
reason ``tool_call``) until the client sends a ``ToolResult``.

    python examples/agent_tool.py [DATA_DIR]
"""

from __future__ import annotations

import json
import sys
import tempfile

import trio

import perdure
from perdure.agui import ToolCallArgsEvent, ToolCallEndEvent, ToolCallStartEvent

rt = perdure.Runtime(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp() + "/data")


async def fake_model(messages: list[dict[str, object]]) -> dict[str, object]:
    """Stands in for an LLM call: first asks for a tool, then answers."""
    if not any(m.get("role") == "tool" for m in messages):
        return {"tool": "get_weather", "args": {"city": "Berlin"}, "id": "call_1"}
    return {"text": f"It is {messages[-1]['content']} in Berlin."}


@rt.agent("weather")
async def weather(ctx: perdure.AgentContext, inp: perdure.AgentInput) -> None:
    messages = list(inp.messages)
    reply = await ctx.step("model-1", fake_model, messages)
    await ctx.emit(
        ToolCallStartEvent(tool_call_id=reply["id"], tool_call_name=reply["tool"]),
        ToolCallArgsEvent(tool_call_id=reply["id"], delta=json.dumps(reply["args"])),
        ToolCallEndEvent(tool_call_id=reply["id"]),
    )
    result = await ctx.wait_for_tool_result(reply["id"])
    messages.append({"role": "tool", "content": result, "toolCallId": reply["id"]})
    answer = await ctx.step("model-2", fake_model, messages)
    await ctx.say(answer["text"])
    ctx.report_usage(provider="fake", model="scripted-1", input_tokens=12, output_tokens=9)


async def main() -> str:
    async with rt:
        started = await rt.start(
            "agent:weather",
            {"messages": [{"id": "m1", "role": "user", "content": "Weather?"}]},
            owner=perdure.Conversation("thread-1"),
        )
        run_id = started.run.id
        async for event in rt.events(run_id):
            wire = event.to_wire()
            print(event.event_id, wire["type"])
            outcome = wire.get("outcome") or {}
            if outcome.get("type") == "interrupt":
                break  # the client runs the tool, then resumes
        await rt.resume(run_id, perdure.ToolResult(tool_call_id="call_1", content="sunny, 21 C"))
        done = await rt.wait(run_id)
        print(done.status, done.completion.usage if done.completion else None)
        return done.status


if __name__ == "__main__":
    assert trio.run(main) == "completed"
