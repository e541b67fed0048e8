"""``rt.snapshot`` (R22): a run's committed log folded into messages, state, open tool calls."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.checks import waiting

import perdure
from perdure.agui import ToolCallArgsEvent, ToolCallEndEvent, ToolCallStartEvent

C = perdure.Conversation("c1")


async def test_snapshot_folds_messages_state_and_open_tool_calls(data_dir: Path) -> None:
    rt = perdure.Runtime(data_dir)

    @rt.agent("helper")
    async def helper(ctx: perdure.AgentContext, inp: perdure.AgentInput) -> None:
        await ctx.state_snapshot({"count": 0, "items": []})
        await ctx.state_delta([{"op": "replace", "path": "/count", "value": 2}])
        await ctx.say("let me look that up")
        await ctx.emit(
            ToolCallStartEvent(tool_call_id="t1", tool_call_name="search"),
            ToolCallArgsEvent(tool_call_id="t1", delta='{"q": "x"}'),
            ToolCallEndEvent(tool_call_id="t1"),
        )
        found = await ctx.wait_for_tool_result("t1")
        await ctx.say(f"found {found}")

    async with rt:
        inp = perdure.AgentInput(messages=[{"id": "u1", "role": "user", "content": "find x"}])
        run = (await rt.start("agent:helper", inp, owner=C)).run
        await waiting(rt, run.id)
        snap = rt.snapshot(run.id)
        assert snap.state == {"count": 2, "items": []}
        assert snap.open_tool_calls == ["t1"]
        assert [m["role"] for m in snap.messages] == ["user", "assistant", "assistant"]
        assert snap.messages[0]["content"] == "find x"  # the input's history comes first
        call = snap.messages[-1]["toolCalls"][0]
        assert call["function"] == {"name": "search", "arguments": '{"q": "x"}'}
        assert [i.id for i in snap.interrupts] == ["tool:t1"]
        assert snap.run.status == "waiting" and snap.after_event_id == snap.run.last_event_id

        await rt.resume(run.id, perdure.ToolResult(tool_call_id="t1", content="it"))
        done = await rt.wait(run.id)
        final = rt.snapshot(run.id)
        assert final.open_tool_calls == [] and final.interrupts == []
        assert [m["role"] for m in final.messages] == [
            "user",
            "assistant",
            "assistant",
            "tool",
            "assistant",
        ]
        assert final.messages[-1]["content"] == "found it"
        # Any prefix folds as the log's replay up to there does.
        earlier = rt.snapshot(run.id, upto=snap.after_event_id)
        assert earlier.messages == snap.messages and earlier.state == snap.state
        assert rt.snapshot(run.id, upto=0).messages == [inp.messages[0]]
        assert done.status == "completed"
        with pytest.raises(perdure.InvalidInput):
            rt.snapshot(run.id, upto=-1)
        with pytest.raises(perdure.RunNotFound):
            rt.snapshot("no-such-run")
