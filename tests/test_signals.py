"""Resume signals (R11-R13, §4): every signal kind end to end and every rule of ``resume``.

Each kind (tool result, approval, external event, human input) is driven through the
public API: the run reports ``waiting`` with the wait listed in ``run.waiting`` and an
AG-UI interrupt in its log, ``rt.resume`` (or ``rt.publish``) delivers the signal and the
body returns its payload. Then every outcome R12/R13 names: duplicates, conflicts,
``NotWaiting``, buffering of an expected early signal, ``RunNotActive``, malformed
signals and payloads failing the wait's JSON Schema (nothing stored), approver
allow-lists and racing approvals.

Every log is checked after each test by the suite's conftest (Python verifier port and
``ag_ui.core`` models) and, per module, by the official ``@ag-ui/client`` verifier when
``tests/agui_node/node_modules`` is installed.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import pytest
import trio
from helpers.checks import (
    assert_valid_log,
    dump_store,
    interrupts,
    read_log,
    types,
    wait_until,
    waiting,
    wire_log,
)

import perdure
from perdure import (
    ApprovalDecision,
    ExternalEvent,
    InputResponse,
    Resumed,
    ToolResult,
    signal_from_resume,
)
from perdure.agui import (
    ToolCallArgsEvent,
    ToolCallEndEvent,
    ToolCallStartEvent,
)
from perdure.testing import internals

P = perdure.Project("p1")
P2 = perdure.Project("p2")
C = perdure.Conversation("c1")

pytestmark = pytest.mark.usefixtures("official_agui_check")


# -- definitions ----------------------------------------------------------------------------


class Hooks:
    """Per-runtime trio Events and counters the bodies use."""

    def __init__(self) -> None:
        self.gates: dict[str, trio.Event] = {}
        self.body_calls: dict[str, int] = {}

    def gate(self, name: str) -> trio.Event:
        return self.gates.setdefault(name, trio.Event())


def make(path: Any, **options: Any) -> perdure.Runtime:
    options.setdefault("durability", "process")
    rt = perdure.Runtime(path, **options)
    hooks = rt.hooks = Hooks()  # type: ignore[attr-defined]

    def enter(ctx: perdure.RunContext) -> None:
        hooks.body_calls[ctx.run_id] = hooks.body_calls.get(ctx.run_id, 0) + 1

    @rt.workflow("tool")
    async def tool(ctx: perdure.RunContext, inp: dict) -> dict:
        enter(ctx)
        content = await ctx.wait_for_tool_result(inp["id"], schema=inp.get("schema"))
        return {"content": content}

    @rt.workflow("tool_then_hold")
    async def tool_then_hold(ctx: perdure.RunContext, inp: dict) -> dict:
        """Takes a tool result, then stays running (blocked in a step) until its gate opens."""
        enter(ctx)
        content = await ctx.wait_for_tool_result("tc1")

        async def hold() -> None:
            await hooks.gate(ctx.run_id).wait()

        await ctx.step("hold", hold)
        return {"content": content}

    @rt.workflow("approval")
    async def approval(ctx: perdure.RunContext, inp: dict) -> dict:
        enter(ctx)
        decision = await ctx.wait_for_approval(
            inp["key"],
            prompt=inp.get("prompt"),
            approvers=inp.get("approvers"),
            schema=inp.get("schema"),
        )
        assert isinstance(decision, ApprovalDecision)
        return {
            "key": decision.key,
            "approved": decision.approved,
            "approver": decision.approver,
            "response": decision.response,
        }

    @rt.workflow("event")
    async def event(ctx: perdure.RunContext, inp: dict) -> dict:
        enter(ctx)
        payload = await ctx.wait_for_event(inp["name"], schema=inp.get("schema"))
        return {"payload": payload}

    @rt.workflow("input")
    async def input_(ctx: perdure.RunContext, inp: dict) -> dict:
        enter(ctx)
        value = await ctx.wait_for_input(
            inp["key"], schema=inp.get("schema"), prompt=inp.get("prompt")
        )
        return {"value": value}

    @rt.workflow("expect")
    async def expect(ctx: perdure.RunContext, inp: dict) -> dict:
        """Declares ``key`` expected, blocks in a step on a gate, then waits on it."""
        enter(ctx)
        await ctx.expect(inp["key"], inp.get("reason"))

        async def blocked() -> str:
            await hooks.gate(ctx.run_id).wait()
            return "open"

        await ctx.step("gate", blocked)
        payloads = [await ctx.wait_for_event(inp["key"]) for _ in range(inp.get("times", 1))]
        return {"payload": payloads[0]} if len(payloads) == 1 else {"payloads": payloads}

    @rt.workflow("twice")
    async def twice(ctx: perdure.RunContext, inp: dict) -> dict:
        """Waits on the same event name twice (two slots)."""
        enter(ctx)
        first = await ctx.wait_for_event("tick")
        second = await ctx.wait_for_event("tick")
        return {"first": first, "second": second}

    @rt.workflow("expect_guarded")
    async def expect_guarded(ctx: perdure.RunContext, inp: dict) -> dict:
        """Expects an approval and an input early, then waits with an allow-list and schemas."""
        enter(ctx)
        await ctx.expect("k", "approval")
        await ctx.expect("age", "input")

        async def blocked() -> None:
            await hooks.gate(ctx.run_id).wait()

        await ctx.step("gate", blocked)
        out: dict[str, Any] = {}
        if inp.get("approval"):
            decision = await ctx.wait_for_approval("k", approvers=["ann"])
            out["approver"] = decision.approver
        if inp.get("input"):
            out["age"] = await ctx.wait_for_input("age", schema={"type": "integer", "minimum": 0})
        return out

    @rt.agent("assistant")
    async def assistant(ctx: perdure.AgentContext, inp: perdure.AgentInput) -> None:
        """A realistic client-side tool call: stream it, wait for its result, answer."""
        enter(ctx)
        await ctx.emit(
            ToolCallStartEvent(tool_call_id="call_1", tool_call_name="get_weather"),
            ToolCallArgsEvent(tool_call_id="call_1", delta='{"city": "Oslo"}'),
            ToolCallEndEvent(tool_call_id="call_1"),
        )
        content = await ctx.wait_for_tool_result("call_1")
        await ctx.say(f"the weather: {content['sky']}")

    return rt


def test_public_api_exports_the_signal_names() -> None:
    """Every name of ``perdure.__all__`` (the §5 contract) is importable from ``perdure``."""
    missing = [name for name in perdure.__all__ if not hasattr(perdure, name)]
    assert missing == []
    assert ToolResult is perdure.runtime.ToolResult is perdure.ToolResult
    assert signal_from_resume is perdure.runtime.signal_from_resume


# -- each signal kind end to end -------------------------------------------------------------


async def test_tool_result_end_to_end(data_dir: Path) -> None:
    rt = make(data_dir)
    async with rt:
        run = (await rt.start("workflow:tool", {"id": "tc1"}, owner=P)).run
        rec = await waiting(rt, run.id)
        assert rec.waiting.reason == "tool"
        [wait] = rec.waiting.waits
        assert (wait.key, wait.reason, wait.slot) == ("tc1", "tool", "tool:tc1#1")
        assert wait.deadline is None and wait.schema is None
        wire = await assert_valid_log(rt, run.id)
        assert types(wire) == ["RUN_STARTED", "RUN_FINISHED"]
        [[interrupt]] = interrupts(wire)
        assert interrupt["id"] == "tool:tc1"
        assert interrupt["reason"] == "tool_call"
        assert interrupt["toolCallId"] == "tc1"

        resumed = await rt.resume(run.id, ToolResult(tool_call_id="tc1", content={"t": 21}))
        assert resumed == Resumed(duplicate=False, run_id=run.id, key="tool:tc1")
        done = await rt.wait(run.id)
        assert done.status == "completed"
        assert done.completion.result == {"content": {"t": 21}}
        assert done.waiting is None
        wire = await assert_valid_log(rt, run.id)
        assert types(wire) == [
            "RUN_STARTED",
            "RUN_FINISHED",
            "RUN_STARTED",
            "TOOL_CALL_RESULT",
            "RUN_FINISHED",
        ]
        result = wire[3]
        assert result["toolCallId"] == "tc1"
        assert json.loads(result["content"]) == {"t": 21}
        assert wire[4].get("outcome", {"type": "success"})["type"] == "success"


async def test_agent_client_side_tool_call(data_dir: Path) -> None:
    rt = make(data_dir)
    async with rt:
        run = (await rt.start("agent:assistant", {"messages": []}, owner=C)).run
        rec = await waiting(rt, run.id)
        assert rec.waiting.waits[0].key == "call_1"
        await rt.resume(run.id, ToolResult(tool_call_id="call_1", content={"sky": "clear"}))
        done = await rt.wait(run.id)
        assert done.status == "completed"
        wire = await assert_valid_log(rt, run.id)
        assert types(wire) == [
            "RUN_STARTED",
            "TOOL_CALL_START",
            "TOOL_CALL_ARGS",
            "TOOL_CALL_END",
            "RUN_FINISHED",
            "RUN_STARTED",
            "TOOL_CALL_RESULT",
            "TEXT_MESSAGE_START",
            "TEXT_MESSAGE_CONTENT",
            "TEXT_MESSAGE_END",
            "RUN_FINISHED",
        ]
        assert all(
            e["threadId"] == "c1" for e in wire if e["type"] in ("RUN_STARTED", "RUN_FINISHED")
        )
        assert wire[8]["delta"] == "the weather: clear"
        # A tool result given as a string is carried verbatim.
        run2 = (await rt.start("workflow:tool", {"id": "x"}, owner=P)).run
        await waiting(rt, run2.id)
        await rt.resume(run2.id, ToolResult(tool_call_id="x", content="plain text"))
        assert (await rt.wait(run2.id)).completion.result == {"content": "plain text"}
        wire2 = await assert_valid_log(rt, run2.id)
        assert [e["content"] for e in wire2 if e["type"] == "TOOL_CALL_RESULT"] == ["plain text"]


async def test_approval_end_to_end(data_dir: Path) -> None:
    rt = make(data_dir)
    schema = {
        "type": "object",
        "properties": {"limit": {"type": "integer", "minimum": 0}},
        "required": ["limit"],
    }
    async with rt:
        run = (
            await rt.start(
                "workflow:approval",
                {
                    "key": "spend",
                    "prompt": "Spend money?",
                    "approvers": ["ann", "bob"],
                    "schema": schema,
                },
                owner=P,
            )
        ).run
        rec = await waiting(rt, run.id)
        [wait] = rec.waiting.waits
        assert rec.waiting.reason == "approval"
        assert (wait.key, wait.reason, wait.slot) == ("spend", "approval", "approval:spend#1")
        assert wait.prompt == "Spend money?"
        assert wait.approvers == ["ann", "bob"]
        assert wait.schema == schema
        [[interrupt]] = interrupts(await assert_valid_log(rt, run.id))
        assert interrupt["id"] == "approval:spend"
        assert interrupt["reason"] == "confirmation"
        assert interrupt["message"] == "Spend money?"
        assert interrupt["responseSchema"] == schema
        assert "toolCallId" not in interrupt or interrupt["toolCallId"] is None

        decision = ApprovalDecision(
            key="spend", approved=True, approver="bob", response={"limit": 5}
        )
        resumed = await rt.resume(run.id, decision)
        assert resumed == Resumed(duplicate=False, run_id=run.id, key="approval:spend")
        done = await rt.wait(run.id)
        assert done.completion.result == {
            "key": "spend",
            "approved": True,
            "approver": "bob",
            "response": {"limit": 5},
        }
        wire = await assert_valid_log(rt, run.id)
        assert types(wire) == [
            "RUN_STARTED",
            "RUN_FINISHED",
            "RUN_STARTED",
            "CUSTOM",
            "RUN_FINISHED",
        ]
        assert wire[3]["name"] == "perdure.approval"
        assert wire[3]["value"] == {"key": "spend", "approved": True, "approver": "bob"}


async def test_rejection_needs_no_response(data_dir: Path) -> None:
    """A rejected approval carries no response, so the response schema does not apply."""
    rt = make(data_dir)
    schema = {"type": "object", "required": ["limit"]}
    async with rt:
        run = (await rt.start("workflow:approval", {"key": "k", "schema": schema}, owner=P)).run
        await waiting(rt, run.id)
        with pytest.raises(perdure.InvalidSignal):
            await rt.resume(run.id, ApprovalDecision(key="k", approved=True, approver="x"))
        await rt.resume(run.id, ApprovalDecision(key="k", approved=False, approver="x"))
        done = await rt.wait(run.id)
        assert done.completion.result["approved"] is False


async def test_event_end_to_end(data_dir: Path) -> None:
    rt = make(data_dir)
    async with rt:
        run = (await rt.start("workflow:event", {"name": "deploy"}, owner=P)).run
        rec = await waiting(rt, run.id)
        assert rec.waiting.reason == "event"
        assert rec.waiting.waits[0].slot == "event:deploy#1"
        [[interrupt]] = interrupts(await assert_valid_log(rt, run.id))
        assert (interrupt["id"], interrupt["reason"]) == ("event:deploy", "event")
        resumed = await rt.resume(run.id, ExternalEvent(name="deploy", payload=[1, "two", None]))
        assert resumed.key == "event:deploy" and not resumed.duplicate
        done = await rt.wait(run.id)
        assert done.completion.result == {"payload": [1, "two", None]}
        wire = await assert_valid_log(rt, run.id)
        assert [e.get("name") for e in wire if e["type"] == "CUSTOM"] == ["perdure.event"]


async def test_input_end_to_end(data_dir: Path) -> None:
    rt = make(data_dir)
    schema = {"type": "string", "minLength": 2}
    async with rt:
        run = (
            await rt.start(
                "workflow:input", {"key": "name", "schema": schema, "prompt": "Your name?"}, owner=P
            )
        ).run
        rec = await waiting(rt, run.id)
        assert rec.waiting.reason == "input"
        [wait] = rec.waiting.waits
        assert (wait.slot, wait.prompt, wait.schema) == ("input:name#1", "Your name?", schema)
        [[interrupt]] = interrupts(await assert_valid_log(rt, run.id))
        assert interrupt["id"] == "input:name"
        assert interrupt["reason"] == "input_required"
        assert interrupt["message"] == "Your name?"
        assert interrupt["responseSchema"] == schema
        await rt.resume(run.id, InputResponse(key="name", value="Ada", responder="ada"))
        assert (await rt.wait(run.id)).completion.result == {"value": "Ada"}


async def test_publish_reaches_every_waiting_run_of_the_owner_only(data_dir: Path) -> None:
    rt = make(data_dir)
    async with rt:
        mine = [
            (await rt.start("workflow:event", {"name": "deploy"}, owner=P)).run.id for _ in range(3)
        ]
        other_name = (await rt.start("workflow:event", {"name": "other"}, owner=P)).run.id
        theirs = [
            (await rt.start("workflow:event", {"name": "deploy"}, owner=P2)).run.id
            for _ in range(2)
        ]
        finished = (await rt.start("workflow:tool", {"id": "t"}, owner=P)).run.id
        for run_id in [*mine, other_name, *theirs, finished]:
            await waiting(rt, run_id)
        await rt.resume(finished, ToolResult(tool_call_id="t", content=1))
        await rt.wait(finished)

        taken = await rt.publish(ExternalEvent(name="deploy", payload={"v": 7}), owner=P)
        assert sorted(taken) == sorted(mine)
        for run_id in mine:
            done = await rt.wait(run_id)
            assert done.completion.result == {"payload": {"v": 7}}
        # Runs of another owner, and runs waiting on another name, are untouched.
        for run_id in [other_name, *theirs]:
            assert rt.get(run_id).status == "waiting"
        # Nobody of P waits for it any more.
        assert await rt.publish(ExternalEvent(name="deploy", payload={"v": 7}), owner=P) == []
        taken2 = await rt.publish(ExternalEvent(name="deploy", payload="p2"), owner=P2)
        assert sorted(taken2) == sorted(theirs)
        for run_id in theirs:
            assert (await rt.wait(run_id)).completion.result == {"payload": "p2"}
        assert rt.get(other_name).status == "waiting"
        with pytest.raises(perdure.InvalidSignal):
            await rt.publish(ToolResult(tool_call_id="t"), owner=P)  # type: ignore[arg-type]
        await rt.cancel(other_name)


async def test_publish_skips_runs_whose_schema_refuses_the_payload(data_dir: Path) -> None:
    """publish delivers per run: one run's schema refusing the payload does not stop the others."""
    rt = make(data_dir)
    async with rt:
        strict = (
            await rt.start("workflow:event", {"name": "e", "schema": {"type": "integer"}}, owner=P)
        ).run.id
        loose = (await rt.start("workflow:event", {"name": "e"}, owner=P)).run.id
        await waiting(rt, strict)
        await waiting(rt, loose)
        try:
            taken = await rt.publish(ExternalEvent(name="e", payload="text"), owner=P)
        except perdure.InvalidSignal:
            taken = None
        assert rt.get(strict).status == "waiting"
        if taken is not None:
            assert taken == [loose]
        await rt.cancel(strict)
        await rt.cancel(loose)
        assert taken == [loose], (
            "publish raised InvalidSignal instead of delivering to the other run"
        )


# -- AG-UI resume[] entries -----------------------------------------------------------------


def test_signal_from_resume_maps_every_interrupt_kind() -> None:
    f = signal_from_resume
    assert f({"interruptId": "tool:tc1", "status": "resolved", "payload": {"a": 1}}) == ToolResult(
        tool_call_id="tc1", content={"a": 1}
    )
    assert f({"interruptId": "event:deploy", "payload": 3}) == ExternalEvent(
        name="deploy", payload=3
    )
    assert f({"interruptId": "input:name", "payload": "Ada"}) == InputResponse(
        key="name", value="Ada"
    )
    approved = f(
        {"interruptId": "approval:k", "status": "resolved", "payload": {"limit": 1}}, approver="ann"
    )
    assert approved == ApprovalDecision(
        key="k", approved=True, approver="ann", response={"limit": 1}
    )
    rejected = f({"interruptId": "approval:k", "status": "cancelled"}, approver="ann")
    assert rejected.approved is False
    explicit = f(
        {"interruptId": "approval:k", "status": "resolved", "payload": {"approved": False}}
    )
    assert explicit.approved is False
    bare = f({"interruptId": "approval:k", "status": "resolved", "payload": False})
    assert bare.approved is False and bare.response is None
    assert f({"interruptId": "approval:k", "payload": True}).approved is True
    # Only an explicit boolean decides: truthy strings and numbers never approve.
    for unclear in ("false", "no", 0, 1, [], {"approved": "false"}, {"approved": 1}):
        with pytest.raises(perdure.InvalidSignal):
            f({"interruptId": "approval:k", "status": "resolved", "payload": unclear})
    for bad in (
        None,
        "approval:k",
        {},
        {"interruptId": 5},
        {"interruptId": "nope:k"},
        {"interruptId": "tool:tc1", "status": "cancelled"},
        {"interruptId": "approval:k", "status": "maybe"},
    ):
        with pytest.raises(perdure.InvalidSignal):
            f(bad)  # type: ignore[arg-type]


async def test_resume_with_agui_resume_entry(data_dir: Path) -> None:
    rt = make(data_dir)
    async with rt:
        run = (
            await rt.start("workflow:approval", {"key": "ship", "approvers": ["ann"]}, owner=P)
        ).run
        rec = await waiting(rt, run.id)
        [[interrupt]] = interrupts(await assert_valid_log(rt, run.id))
        # The client answers the interrupt id it was shown.
        entry = {"interruptId": interrupt["id"], "status": "resolved", "payload": {"note": "ok"}}
        with pytest.raises(perdure.PermissionDenied):
            await rt.resume(run.id, signal_from_resume(entry))  # no approver
        resumed = await rt.resume(run.id, signal_from_resume(entry, approver="ann"))
        assert resumed.key == interrupt["id"] == "approval:" + rec.waiting.waits[0].key
        done = await rt.wait(run.id)
        assert done.completion.result["approved"] is True
        assert done.completion.result["response"] == {"note": "ok"}


# -- R12 outcomes ---------------------------------------------------------------------------------


async def test_duplicate_equal_signal_is_accepted_as_duplicate(data_dir: Path) -> None:
    rt = make(data_dir)
    async with rt:
        run = (await rt.start("workflow:twice", {}, owner=P)).run
        await waiting(rt, run.id)
        first = ExternalEvent(name="tick", payload={"n": 1})
        assert not (await rt.resume(run.id, first)).duplicate
        # The body moved on to its second wait on the same name (slot #2) …
        await wait_until(
            lambda: (
                rt.get(run.id).status == "waiting"
                and rt.get(run.id).waiting.waits[0].slot == "event:tick#2"
            ),
            what="second slot",
        )
        log_before = await read_log(rt, run.id)
        second = ExternalEvent(name="tick", payload={"n": 2})
        assert not (await rt.resume(run.id, second)).duplicate
        done = await rt.wait(run.id)
        assert done.completion.result == {"first": {"n": 1}, "second": {"n": 2}}
        assert len(log_before) < done.last_event_id
        # After the end, a redelivery of the last signal is still recognised as a duplicate.
        log_after = await read_log(rt, run.id)
        again = await rt.resume(run.id, ExternalEvent(name="tick", payload={"n": 2}))
        assert again == Resumed(duplicate=True, run_id=run.id, key="event:tick")
        assert await read_log(rt, run.id) == log_after


async def test_duplicate_while_still_running(data_dir: Path) -> None:
    """A client retrying a resume right after it was taken gets duplicate=True, never a second apply."""
    rt = make(data_dir)
    async with rt:
        run = (await rt.start("workflow:twice", {}, owner=P)).run
        await waiting(rt, run.id)
        sig = ExternalEvent(name="tick", payload="a")
        first, second = [], []

        async def send(out: list[Any]) -> None:
            try:
                out.append(await rt.resume(run.id, sig))
            except perdure.PerdureError as exc:
                out.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send, first)
            nursery.start_soon(send, second)
        results = first + second
        assert sorted(r.duplicate for r in results) == [False, True], results
        await waiting(rt, run.id)
        assert rt.get(run.id).waiting.waits[0].slot == "event:tick#2"
        # The duplicate did not feed the second slot.
        await rt.resume(run.id, ExternalEvent(name="tick", payload="b"))
        assert (await rt.wait(run.id)).completion.result == {"first": "a", "second": "b"}
        wire = await assert_valid_log(rt, run.id)
        assert [e["name"] for e in wire if e["type"] == "CUSTOM"] == [
            "perdure.event",
            "perdure.event",
        ]


async def test_different_payload_for_a_taken_key_conflicts_while_running(data_dir: Path) -> None:
    rt = make(data_dir)
    async with rt:
        run = (await rt.start("workflow:tool_then_hold", {}, owner=P)).run
        await waiting(rt, run.id)
        taken = ToolResult(tool_call_id="tc1", content={"v": 1})
        await rt.resume(run.id, taken)
        await wait_until(lambda: rt.get(run.id).status == "running", what="running again")
        before = dump_store(internals(rt).store)
        for other in (
            ToolResult(tool_call_id="tc1", content={"v": 2}),
            ToolResult(tool_call_id="tc1", content={"v": 1}, is_error=True),
        ):
            with pytest.raises(perdure.SignalConflict) as info:
                await rt.resume(run.id, other)
            assert info.value.code == "SIGNAL_CONFLICT" and info.value.http_status == 409
        assert (await rt.resume(run.id, taken)) == Resumed(
            duplicate=True, run_id=run.id, key="tool:tc1"
        )
        assert dump_store(internals(rt).store) == before
        rt.hooks.gate(run.id).set()
        assert (await rt.wait(run.id)).completion.result == {"content": {"v": 1}}


async def test_different_payload_for_a_taken_key_conflicts(data_dir: Path) -> None:
    rt = make(data_dir)
    async with rt:
        run = (await rt.start("workflow:tool", {"id": "tc1"}, owner=P)).run
        await waiting(rt, run.id)
        await rt.resume(run.id, ToolResult(tool_call_id="tc1", content="yes"))
        await rt.wait(run.id)
        before = dump_store(internals(rt).store)
        with pytest.raises(perdure.SignalConflict) as info:
            await rt.resume(run.id, ToolResult(tool_call_id="tc1", content="no"))
        assert info.value.code == "SIGNAL_CONFLICT"
        assert info.value.http_status == 409
        with pytest.raises(perdure.SignalConflict):
            await rt.resume(run.id, ToolResult(tool_call_id="tc1", content="yes", is_error=True))
        assert dump_store(internals(rt).store) == before
        assert rt.get(run.id).completion.result == {"content": "yes"}


async def test_conflict_while_the_run_is_still_active(data_dir: Path) -> None:
    rt = make(data_dir)
    async with rt:
        run = (await rt.start("workflow:twice", {}, owner=P)).run
        await waiting(rt, run.id)
        await rt.resume(run.id, ExternalEvent(name="tick", payload=1))
        await wait_until(
            lambda: (
                rt.get(run.id).waiting and rt.get(run.id).waiting.waits[0].slot == "event:tick#2"
            )
        )
        # The second slot is open, so a new payload for the key is the answer to it …
        await rt.resume(run.id, ExternalEvent(name="tick", payload=2))
        done = await rt.wait(run.id)
        assert done.completion.result == {"first": 1, "second": 2}
        # … and once the run ended, only the last payload is a duplicate; others conflict.
        with pytest.raises(perdure.RunNotActive):
            await rt.resume(run.id, ExternalEvent(name="tick", payload=3))


async def test_key_not_waited_on_is_not_waiting(data_dir: Path) -> None:
    rt = make(data_dir)
    async with rt:
        run = (await rt.start("workflow:tool", {"id": "tc1"}, owner=P)).run
        await waiting(rt, run.id)
        before = dump_store(internals(rt).store)
        for signal in (
            ToolResult(tool_call_id="tc2", content=1),
            # Keys are namespaced by reason: an input "tc1" is not the tool call "tc1".
            InputResponse(key="tc1", value=1),
            ExternalEvent(name="tc1"),
            ApprovalDecision(key="tc1", approved=True),
        ):
            with pytest.raises(perdure.NotWaiting) as info:
                await rt.resume(run.id, signal)
            assert info.value.code == "NOT_WAITING"
        assert dump_store(internals(rt).store) == before
        assert rt.get(run.id).status == "waiting"
        await rt.resume(run.id, ToolResult(tool_call_id="tc1", content=1))
        assert (await rt.wait(run.id)).status == "completed"


async def test_signal_for_a_running_run_that_waits_on_nothing_is_not_waiting(
    data_dir: Path,
) -> None:
    rt = make(data_dir)
    async with rt:
        run = (await rt.start("workflow:expect", {"key": "other"}, owner=P)).run
        await wait_until(lambda: rt.get(run.id).journal_len >= 1, what="expect journaled")
        assert rt.get(run.id).status == "running"
        with pytest.raises(perdure.NotWaiting):
            await rt.resume(run.id, ExternalEvent(name="early", payload=1))
        rt.hooks.gate(run.id).set()
        await waiting(rt, run.id)
        await rt.resume(run.id, ExternalEvent(name="other", payload=2))
        assert (await rt.wait(run.id)).completion.result == {"payload": 2}


@pytest.mark.parametrize("reason", [None, "event"])
async def test_expected_early_signal_is_buffered_and_consumed(
    data_dir: Path, reason: str | None
) -> None:
    rt = make(data_dir)
    async with rt:
        run = (await rt.start("workflow:expect", {"key": "ready", "reason": reason}, owner=P)).run
        await wait_until(lambda: rt.get(run.id).expected != [], what="expect() stored")
        assert rt.get(run.id).status == "running"
        early = ExternalEvent(name="ready", payload={"early": True})
        log_before = await read_log(rt, run.id)
        resumed = await rt.resume(run.id, early)
        assert resumed == Resumed(duplicate=False, run_id=run.id, key="event:ready")
        # Stored durably, but the body has not asked for it yet.
        assert rt.get(run.id).status == "running"
        assert rt.get(run.id).journal_len > 1
        # Re-delivery of the same early signal is a duplicate and stores nothing.
        store_before = dump_store(internals(rt).store)
        assert (await rt.resume(run.id, early)).duplicate is True
        assert dump_store(internals(rt).store) == store_before
        rt.hooks.gate(run.id).set()
        done = await rt.wait(run.id)
        assert done.status == "completed"
        assert done.completion.result == {"payload": {"early": True}}
        wire = await assert_valid_log(rt, run.id)
        # The wait never had to open: the buffered signal was consumed at once.
        assert interrupts(wire) == []
        assert len(wire) > len(log_before)
        assert "perdure.signal_buffered" in [e.get("name") for e in wire if e["type"] == "CUSTOM"]


async def test_expected_signals_queue_for_successive_waits(data_dir: Path) -> None:
    """Several different early signals for an expected key are kept in order, one per wait."""
    rt = make(data_dir)
    async with rt:
        run = (await rt.start("workflow:expect", {"key": "tick", "times": 3}, owner=P)).run
        await wait_until(lambda: rt.get(run.id).expected != [], what="expect() stored")
        assert not (await rt.resume(run.id, ExternalEvent(name="tick", payload=1))).duplicate
        assert (await rt.resume(run.id, ExternalEvent(name="tick", payload=1))).duplicate
        assert not (await rt.resume(run.id, ExternalEvent(name="tick", payload=2))).duplicate
        rt.hooks.gate(run.id).set()
        # Two were buffered; the third wait opens and waits.
        rec = await waiting(rt, run.id)
        assert rec.waiting.waits[0].slot == "event:tick#3"
        await rt.resume(run.id, ExternalEvent(name="tick", payload=3))
        assert (await rt.wait(run.id)).completion.result == {"payloads": [1, 2, 3]}


async def test_early_signal_while_waiting_on_another_key(data_dir: Path) -> None:
    """While the run shows an interrupt, a buffered signal logs nothing (AG-UI allows only RUN_STARTED)."""
    rt = make(data_dir)

    @rt.workflow("expect_then_wait")
    async def body(ctx: perdure.RunContext, inp: dict) -> dict:
        await ctx.expect("later", "input")
        first = await ctx.wait_for_tool_result("now")
        later = await ctx.wait_for_input("later")
        return {"first": first, "later": later}

    async with rt:
        run = (await rt.start("workflow:expect_then_wait", {}, owner=P)).run
        await waiting(rt, run.id)
        log_before = await read_log(rt, run.id)
        assert not (await rt.resume(run.id, InputResponse(key="later", value="L"))).duplicate
        assert await read_log(rt, run.id) == log_before
        assert rt.get(run.id).status == "waiting"
        await rt.resume(run.id, ToolResult(tool_call_id="now", content="N"))
        done = await rt.wait(run.id)
        assert done.completion.result == {"first": "N", "later": "L"}
        assert [i[0]["id"] for i in interrupts(await assert_valid_log(rt, run.id))] == ["tool:now"]


async def test_buffered_approval_still_honours_the_allow_list(data_dir: Path) -> None:
    rt = make(data_dir)
    async with rt:
        run = (await rt.start("workflow:expect_guarded", {"approval": True}, owner=P)).run
        await wait_until(lambda: len(rt.get(run.id).expected) == 2, what="expect() stored")
        with contextlib.suppress(perdure.PermissionDenied):  # refusing it up front is fine too
            await rt.resume(run.id, ApprovalDecision(key="k", approved=True, approver="eve"))
        rt.hooks.gate(run.id).set()
        await wait_until(lambda: rt.get(run.id).status != "running", what="past the gate")
        rec = rt.get(run.id)
        if rec.status == "waiting":
            await rt.resume(run.id, ApprovalDecision(key="k", approved=True, approver="ann"))
            rec = await rt.wait(run.id)
        assert rec.status != "completed" or rec.completion.result["approver"] == "ann", (
            rec.completion
        )


async def test_buffered_input_still_honours_the_schema(data_dir: Path) -> None:
    rt = make(data_dir)
    async with rt:
        run = (await rt.start("workflow:expect_guarded", {"input": True}, owner=P)).run
        await wait_until(lambda: len(rt.get(run.id).expected) == 2, what="expect() stored")
        with contextlib.suppress(perdure.InvalidSignal):
            await rt.resume(run.id, InputResponse(key="age", value=-5))
        rt.hooks.gate(run.id).set()
        await wait_until(lambda: rt.get(run.id).status != "running", what="past the gate")
        rec = rt.get(run.id)
        if rec.status == "waiting":
            await rt.resume(run.id, InputResponse(key="age", value=5))
            rec = await rt.wait(run.id)
        assert rec.status != "completed" or rec.completion.result["age"] == 5, rec.completion


async def test_expect_with_another_reason_does_not_buffer(data_dir: Path) -> None:
    rt = make(data_dir)
    async with rt:
        run = (await rt.start("workflow:expect", {"key": "ready", "reason": "input"}, owner=P)).run
        await wait_until(lambda: rt.get(run.id).expected != [], what="expect() stored")
        with pytest.raises(perdure.NotWaiting):
            await rt.resume(run.id, ExternalEvent(name="ready", payload=1))
        rt.hooks.gate(run.id).set()
        await waiting(rt, run.id)
        await rt.resume(run.id, ExternalEvent(name="ready", payload=2))
        assert (await rt.wait(run.id)).completion.result == {"payload": 2}


async def test_buffered_signal_survives_a_restart(data_dir: Path) -> None:
    rt = make(data_dir)
    async with rt:
        run = (await rt.start("workflow:expect", {"key": "ready"}, owner=P)).run
        await wait_until(lambda: rt.get(run.id).expected != [], what="expect() stored")
        await rt.resume(run.id, ExternalEvent(name="ready", payload="kept"))
    rt2 = make(data_dir)
    async with rt2:
        assert rt2.recovered["running"] == 1
        rt2.hooks.gate(run.id).set()
        done = await rt2.wait(run.id)
        assert done.completion.result == {"payload": "kept"}
        assert rt2.hooks.body_calls[run.id] == 1


async def test_unknown_and_terminal_runs_are_not_active(data_dir: Path) -> None:
    rt = make(data_dir)
    async with rt:
        with pytest.raises(perdure.RunNotActive) as info:
            await rt.resume("no-such-run", ToolResult(tool_call_id="x"))
        assert info.value.code == "RUN_NOT_ACTIVE" and info.value.http_status == 410
        run = (await rt.start("workflow:tool", {"id": "tc1"}, owner=P)).run
        await waiting(rt, run.id)
        await rt.resume(run.id, ToolResult(tool_call_id="tc1", content=1))
        await rt.wait(run.id)
        cancelled = (await rt.start("workflow:tool", {"id": "tc1"}, owner=P)).run
        await waiting(rt, cancelled.id)
        await rt.cancel(cancelled.id)
        before = dump_store(internals(rt).store)
        for run_id, signal in (
            (run.id, ToolResult(tool_call_id="other", content=1)),
            (run.id, InputResponse(key="tc1", value=1)),
            (cancelled.id, ToolResult(tool_call_id="tc1", content=1)),
        ):
            with pytest.raises(perdure.RunNotActive):
                await rt.resume(run_id, signal)
        assert dump_store(internals(rt).store) == before
        # Answering for a terminal run leaves no actor behind.
        await wait_until(
            lambda: (
                internals(rt).supervisor.get(run.id) is None
                and internals(rt).supervisor.get(cancelled.id) is None
            )
        )


async def test_malformed_signals_are_invalid(data_dir: Path) -> None:
    rt = make(data_dir)
    async with rt:
        run = (await rt.start("workflow:tool", {"id": "tc1"}, owner=P)).run
        await waiting(rt, run.id)
        before = dump_store(internals(rt).store)
        bad: list[Any] = [
            None,
            {"tool_call_id": "tc1", "content": 1},
            "tool:tc1",
            ToolResult(tool_call_id="", content=1),
            ToolResult(tool_call_id="x" * 257, content=1),
            ToolResult(tool_call_id="tc1", content=object()),
            ToolResult(tool_call_id="tc1", content={1, 2}.__iter__()),
        ]
        for signal in bad:
            with pytest.raises(perdure.InvalidSignal) as info:
                await rt.resume(run.id, signal)
            assert info.value.code == "INVALID_SIGNAL" and info.value.http_status == 400
        # An invalid signal to an unknown run is still reported as an invalid signal.
        with pytest.raises(perdure.InvalidSignal):
            await rt.resume("nope", None)  # type: ignore[arg-type]
        assert dump_store(internals(rt).store) == before
        assert rt.get(run.id).status == "waiting"
        await rt.resume(run.id, ToolResult(tool_call_id="tc1", content=1))
        assert (await rt.wait(run.id)).status == "completed"


@pytest.mark.parametrize(
    ("target", "inp", "bad", "good", "result"),
    [
        (
            "workflow:tool",
            {"id": "tc1", "schema": {"type": "object", "required": ["temp"]}},
            ToolResult(tool_call_id="tc1", content={"tmp": 1}),
            ToolResult(tool_call_id="tc1", content={"temp": 1}),
            {"content": {"temp": 1}},
        ),
        (
            "workflow:input",
            {"key": "age", "schema": {"type": "integer", "minimum": 0}},
            InputResponse(key="age", value=-3),
            InputResponse(key="age", value=42),
            {"value": 42},
        ),
        (
            "workflow:event",
            {"name": "e", "schema": {"type": "array", "items": {"type": "string"}}},
            ExternalEvent(name="e", payload=["a", 2]),
            ExternalEvent(name="e", payload=["a", "b"]),
            {"payload": ["a", "b"]},
        ),
        (
            "workflow:approval",
            {"key": "k", "schema": {"type": "object", "properties": {"n": {"type": "integer"}}}},
            ApprovalDecision(key="k", approved=True, response={"n": "x"}),
            ApprovalDecision(key="k", approved=True, response={"n": 1}),
            {"key": "k", "approved": True, "approver": None, "response": {"n": 1}},
        ),
    ],
)
async def test_payload_failing_the_schema_is_invalid_and_nothing_is_stored(
    data_dir: Path, target: str, inp: dict, bad: Any, good: Any, result: Any
) -> None:
    rt = make(data_dir)
    async with rt:
        run = (await rt.start(target, inp, owner=P)).run
        await waiting(rt, run.id)
        log_before = wire_log(await read_log(rt, run.id))
        store_before = dump_store(internals(rt).store)
        with pytest.raises(perdure.InvalidSignal) as info:
            await rt.resume(run.id, bad)
        assert "schema" in info.value.message
        assert dump_store(internals(rt).store) == store_before
        assert wire_log(await read_log(rt, run.id)) == log_before
        assert rt.get(run.id).status == "waiting"
        # The refused payload is not remembered: the good one is not a conflict.
        resumed = await rt.resume(run.id, good)
        assert resumed.duplicate is False
        assert (await rt.wait(run.id)).completion.result == result


async def test_invalid_schema_is_refused_when_the_wait_is_declared(data_dir: Path) -> None:
    rt = make(data_dir)
    async with rt:
        run = (
            await rt.start(
                "workflow:input", {"key": "k", "schema": {"type": "no-such-type"}}, owner=P
            )
        ).run
        done = await rt.wait(run.id)
        assert done.status == "failed"
        assert done.completion.error.code == "INVALID_INPUT"


# -- R13 approvals ---------------------------------------------------------------------------------


async def test_approver_allow_list(data_dir: Path) -> None:
    rt = make(data_dir)
    async with rt:
        run = (
            await rt.start("workflow:approval", {"key": "k", "approvers": ["ann", "bob"]}, owner=P)
        ).run
        await waiting(rt, run.id)
        before = dump_store(internals(rt).store)
        for approver in ("eve", None, "", "ANN"):
            with pytest.raises(perdure.PermissionDenied) as info:
                await rt.resume(run.id, ApprovalDecision(key="k", approved=True, approver=approver))
            assert info.value.code == "PERMISSION_DENIED" and info.value.http_status == 403
        # A rejection by an outsider is refused just the same.
        with pytest.raises(perdure.PermissionDenied):
            await rt.resume(run.id, ApprovalDecision(key="k", approved=False, approver="eve"))
        assert dump_store(internals(rt).store) == before
        assert rt.get(run.id).status == "waiting"
        await rt.resume(run.id, ApprovalDecision(key="k", approved=False, approver="ann"))
        done = await rt.wait(run.id)
        assert done.completion.result["approver"] == "ann"
        assert done.completion.result["approved"] is False


async def test_racing_approvals_exactly_one_wins(data_dir: Path) -> None:
    rt = make(data_dir)
    async with rt:
        for i in range(20):
            run = (
                await rt.start(
                    "workflow:approval", {"key": "k", "approvers": ["ann", "bob"]}, owner=P
                )
            ).run
            await waiting(rt, run.id)
            decisions = {
                "ann": ApprovalDecision(key="k", approved=True, approver="ann"),
                "bob": ApprovalDecision(key="k", approved=False, approver="bob"),
            }
            outcomes: dict[str, Any] = {}

            async def decide(who: str, run_id: str = run.id) -> None:
                try:
                    outcomes[who] = await rt.resume(run_id, decisions[who])
                except perdure.SignalConflict as exc:
                    outcomes[who] = exc

            order = ["ann", "bob"] if i % 2 == 0 else ["bob", "ann"]
            async with trio.open_nursery() as nursery:
                for who in order:
                    nursery.start_soon(decide, who)
            winners = [who for who, r in outcomes.items() if isinstance(r, Resumed)]
            losers = [who for who, r in outcomes.items() if isinstance(r, perdure.SignalConflict)]
            assert len(winners) == 1 and len(losers) == 1, outcomes
            assert outcomes[winners[0]].duplicate is False
            done = await rt.wait(run.id)
            assert done.completion.result["approver"] == winners[0]
            assert done.completion.result["approved"] is decisions[winners[0]].approved
            wire = await assert_valid_log(rt, run.id)
            approvals = [
                e["value"]
                for e in wire
                if e["type"] == "CUSTOM" and e["name"] == "perdure.approval"
            ]
            assert [a["approver"] for a in approvals] == [winners[0]]
            # The winner's retry is a duplicate.
            assert (await rt.resume(run.id, decisions[winners[0]])).duplicate is True


async def test_racing_approvals_for_a_passivated_run(data_dir: Path, autojump_clock: Any) -> None:
    """Both decisions race to re-activate the same passive run: one actor, one winner."""
    rt = make(data_dir, passivate_after=5.0)
    async with rt:
        for _ in range(5):
            run = (await rt.start("workflow:approval", {"key": "k"}, owner=P)).run
            await waiting(rt, run.id)
            await trio.sleep(10)
            assert internals(rt).supervisor.get(run.id) is None
            outcomes: list[Any] = []

            async def decide(approver: str, run_id: str = run.id) -> None:
                try:
                    outcomes.append(
                        await rt.resume(
                            run_id, ApprovalDecision(key="k", approved=True, approver=approver)
                        )
                    )
                except perdure.SignalConflict as exc:
                    outcomes.append(exc)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(decide, "ann")
                nursery.start_soon(decide, "bob")
            assert sorted(type(o).__name__ for o in outcomes) == ["Resumed", "SignalConflict"], (
                outcomes
            )
            assert (await rt.wait(run.id)).status == "completed"
        assert len(internals(rt).supervisor) == 0


async def test_signals_to_many_runs_concurrently(data_dir: Path) -> None:
    rt = make(data_dir)
    async with rt:
        runs = [
            (await rt.start("workflow:input", {"key": f"k{i}"}, owner=P)).run.id for i in range(50)
        ]
        for run_id in runs:
            await waiting(rt, run_id)
        async with trio.open_nursery() as nursery:
            for i, run_id in enumerate(runs):
                nursery.start_soon(rt.resume, run_id, InputResponse(key=f"k{i}", value=i))
        for i, run_id in enumerate(runs):
            assert (await rt.wait(run_id)).completion.result == {"value": i}


async def test_resume_is_durable_before_it_returns(data_dir: Path) -> None:
    """Once resume() returned, a reopened store has the signal even if the body never ran on."""
    rt = make(data_dir, durability="sync")
    async with rt:
        run = (await rt.start("workflow:twice", {}, owner=P)).run
        await waiting(rt, run.id)
        await rt.resume(run.id, ExternalEvent(name="tick", payload="one"))
        await waiting(rt, run.id)
    rt2 = make(data_dir)
    async with rt2:
        rec = rt2.get(run.id)
        assert rec.status == "waiting"
        assert rec.waiting.waits[0].slot == "event:tick#2"
        assert rt2.hooks.body_calls.get(run.id, 0) == 0  # a waiting run stays passive
        await rt2.resume(run.id, ExternalEvent(name="tick", payload="two"))
        assert (await rt2.wait(run.id)).completion.result == {"first": "one", "second": "two"}


async def test_pending_run_is_not_waiting_yet(data_dir: Path) -> None:
    rt = make(data_dir, max_running=1)
    async with rt:
        first = (await rt.start("workflow:expect", {"key": "k"}, owner=P)).run
        second = (await rt.start("workflow:tool", {"id": "a"}, owner=P)).run
        assert rt.get(second.id).status == "pending"
        before = dump_store(internals(rt).store)
        with pytest.raises(perdure.NotWaiting):
            await rt.resume(second.id, ToolResult(tool_call_id="a"))
        assert dump_store(internals(rt).store) == before
        await rt.cancel(second.id)
        await rt.cancel(first.id)
