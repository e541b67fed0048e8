"""``rt.resume_many``: several signals for one run, checked first, stored all or none."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.checks import assert_valid_log, dump_store, waiting

import perdure
from perdure.testing import internals

P = perdure.Project("p1")


def _define(rt: perdure.Runtime) -> None:
    @rt.workflow("two-tools-and-approval")
    async def body(ctx: perdure.RunContext, inp: dict) -> dict:
        results = await ctx.wait_for_tool_results(["a", "b"])
        decision = await ctx.wait_for_approval("ok", approvers=["ann"], schema={"type": "object"})
        return {"tools": results, "approved": decision.approved}


async def test_answers_are_one_commit_and_one_segment(data_dir: Path) -> None:
    rt = perdure.Runtime(data_dir)
    _define(rt)
    async with rt:
        run = (await rt.start("workflow:two-tools-and-approval", {}, owner=P)).run
        await waiting(rt, run.id, count=2)
        before = rt.get(run.id).last_event_id
        answers = await rt.resume_many(
            run.id,
            [
                perdure.ToolResult(tool_call_id="a", content=1),
                perdure.ToolResult(tool_call_id="b", content=2),
            ],
        )
        assert [(r.key, r.duplicate) for r in answers] == [("tool:a", False), ("tool:b", False)]
        await waiting(rt, run.id)  # now on the approval
        log = await assert_valid_log(rt, run.id)
        resumed = [e["type"] for e in log if e.get("timestamp") is not None][before:]
        assert resumed.count("RUN_STARTED") == 1  # one resumption with both results
        assert resumed.count("TOOL_CALL_RESULT") == 2
        again = await rt.resume_many(
            run.id,
            [
                perdure.ToolResult(tool_call_id="a", content=1),
                perdure.ToolResult(tool_call_id="b", content=2),
            ],
        )
        assert [r.duplicate for r in again] == [True, True]
        await rt.resume(
            run.id, perdure.ApprovalDecision(key="ok", approved=True, approver="ann", response={})
        )
        done = await rt.wait(run.id)
    assert done.completion is not None
    assert done.completion.result == {"tools": {"a": 1, "b": 2}, "approved": True}


@pytest.mark.parametrize(
    "bad",
    [
        perdure.ToolResult(tool_call_id="nope", content=1),  # not waited on: NotWaiting
        perdure.ToolResult(tool_call_id="b", content="x" * 300_000),  # over the event cap
    ],
)
async def test_one_refused_signal_refuses_them_all(data_dir: Path, bad: perdure.ToolResult) -> None:
    rt = perdure.Runtime(data_dir)
    _define(rt)
    async with rt:
        run = (await rt.start("workflow:two-tools-and-approval", {}, owner=P)).run
        await waiting(rt, run.id, count=2)
        image = dump_store(internals(rt).store)
        with pytest.raises(perdure.PerdureError) as info:
            await rt.resume_many(run.id, [perdure.ToolResult(tool_call_id="a", content=1), bad])
        assert info.value.code in ("NOT_WAITING", "INVALID_SIGNAL")
        assert dump_store(internals(rt).store) == image  # nothing applied, not even "a"
        assert len(rt.get(run.id).waiting.waits) == 2
        with pytest.raises(perdure.InvalidSignal):
            await rt.resume_many(
                run.id,
                [
                    perdure.ToolResult(tool_call_id="a", content=1),
                    perdure.ToolResult(tool_call_id="a", content=2),
                ],
            )
        await rt.cancel(run.id)
