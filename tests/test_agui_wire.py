"""AG-UI wire format: perdure's msgspec events against ag_ui's models and the official verifier."""

from __future__ import annotations

import copy
import itertools
import json
import os
import random
import shutil
from typing import Any

import ag_ui.core as agc
import msgspec
import pytest
from helpers.official_verifier import NODE_DIR, run_verify_mjs

from perdure.agui import (
    EVENT_CLASSES,
    MAX_EVENT_BYTES,
    ActivityDeltaEvent,
    ActivitySnapshotEvent,
    AgentInput,
    AGUIProtocolError,
    CustomEvent,
    Event,
    EventVerifier,
    Interrupt,
    MessagesSnapshotEvent,
    RawEvent,
    ReasoningEncryptedValueEvent,
    ReasoningEndEvent,
    ReasoningMessageChunkEvent,
    ReasoningMessageContentEvent,
    ReasoningMessageEndEvent,
    ReasoningMessageStartEvent,
    ReasoningStartEvent,
    RunErrorEvent,
    RunFinishedCancelledOutcome,
    RunFinishedEvent,
    RunFinishedInterruptOutcome,
    RunFinishedSuccessOutcome,
    RunStartedEvent,
    StateDeltaEvent,
    StateSnapshotEvent,
    StepFinishedEvent,
    StepStartedEvent,
    SubagentErrorEvent,
    SubagentFinishedEvent,
    SubagentFinishedSuccessOutcome,
    SubagentFinishedSuspendedOutcome,
    SubagentStartedEvent,
    TextMessageChunkEvent,
    TextMessageContentEvent,
    TextMessageEndEvent,
    TextMessageStartEvent,
    TokenUsage,
    ToolCallArgsEvent,
    ToolCallChunkEvent,
    ToolCallEndEvent,
    ToolCallResultEvent,
    ToolCallStartEvent,
    decode_event,
    encode_event,
    encoded_size_ok,
    event_from_json,
    event_to_json,
    event_type,
    split_text_content,
    split_tool_call_args,
    verify_events,
    verify_prefixes,
)

T, R = "thread-1", "run-1"

# ----------------------------------------------------------------------------- samples

_MESSAGES: list[dict[str, Any]] = [
    {"id": "d1", "role": "developer", "content": "be brief"},
    {"id": "s1", "role": "system", "content": "you are perdure"},
    {"id": "u1", "role": "user", "content": "hi"},
    {
        "id": "u2",
        "role": "user",
        "content": [
            {"type": "text", "text": "look"},
            {"type": "image", "source": {"type": "url", "value": "https://x/y.png"}},
        ],
    },
    {
        "id": "a1",
        "role": "assistant",
        "content": "calling",
        "toolCalls": [
            {"id": "tc1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
        ],
    },
    {"id": "t1", "role": "tool", "content": "42", "toolCallId": "tc1"},
    {"id": "act1", "role": "activity", "activityType": "progress", "content": {"pct": 5}},
    {"id": "r1", "role": "reasoning", "content": "thinking"},
]

_INPUT = AgentInput(
    thread_id=T,
    run_id=R,
    parent_run_id="run-0",
    state={"count": 1},
    messages=_MESSAGES[:3],
    tools=[{"name": "f", "description": "a tool", "parameters": {"type": "object"}}],
    context=[{"description": "locale", "value": "en"}],
    forwarded_props={"mode": "fast"},
    resume=[{"interruptId": "i1", "status": "resolved", "payload": {"ok": True}}],
    protocol_version="1.0",
)

_USAGE = [
    TokenUsage(
        provider="openai",
        model="gpt",
        input_tokens=10,
        output_tokens=5,
        total_tokens=15,
        reasoning_tokens=1,
        cached_input_tokens=2,
        cache_write_input_tokens=3,
    )
]

_INTERRUPT = Interrupt(
    id="i1",
    reason="confirmation",
    message="approve?",
    tool_call_id="tc1",
    response_schema={"type": "object"},
    expires_at="2030-01-01T00:00:00Z",
    metadata={"k": 1},
)

SAMPLES: list[Event] = [
    RunStartedEvent(thread_id=T, run_id=R),
    RunStartedEvent(
        thread_id=T, run_id=R, protocol_version="1.0", parent_run_id="run-0", input=_INPUT
    ),
    RunStartedEvent(thread_id=T, run_id=R, input=AgentInput(messages=[])),
    RunFinishedEvent(thread_id=T, run_id=R),
    RunFinishedEvent(
        thread_id=T,
        run_id=R,
        result={"answer": 42},
        outcome=RunFinishedSuccessOutcome(pending_tool_call_ids=["tc9"]),
        usage=_USAGE,
    ),
    RunFinishedEvent(
        thread_id=T, run_id=R, outcome=RunFinishedInterruptOutcome(interrupts=[_INTERRUPT])
    ),
    RunFinishedEvent(thread_id=T, run_id=R, outcome=RunFinishedCancelledOutcome()),
    RunErrorEvent(message="boom"),
    RunErrorEvent(message="boom", code="E_BODY", usage=_USAGE),
    StepStartedEvent(step_name="node-a"),
    StepFinishedEvent(step_name="node-a", subagent_run_id="sa1"),
    TextMessageStartEvent(message_id="m1"),
    TextMessageStartEvent(message_id="m1", role="assistant", name="bot", subagent_run_id="sa1"),
    TextMessageContentEvent(message_id="m1", delta='héllo \U0001f600 "q"\n'),
    TextMessageContentEvent(message_id="m1", delta=""),
    TextMessageEndEvent(message_id="m1"),
    TextMessageChunkEvent(),
    TextMessageChunkEvent(message_id="m1", role="user", delta="x", name="n"),
    ToolCallStartEvent(tool_call_id="tc1", tool_call_name="f"),
    ToolCallStartEvent(tool_call_id="tc1", tool_call_name="f", parent_message_id="m1"),
    ToolCallArgsEvent(tool_call_id="tc1", delta='{"a": 1}'),
    ToolCallEndEvent(tool_call_id="tc1"),
    ToolCallChunkEvent(),
    ToolCallChunkEvent(tool_call_id="tc1", tool_call_name="f", parent_message_id="m1", delta="{"),
    ToolCallResultEvent(message_id="t1", tool_call_id="tc1", content="42"),
    ToolCallResultEvent(
        message_id="t1",
        tool_call_id="tc1",
        content=[{"type": "text", "text": "42"}],
        role="tool",
    ),
    StateSnapshotEvent(snapshot={"count": 2, "items": [1, 2]}),
    StateDeltaEvent(
        delta=[
            {"op": "add", "path": "/a", "value": 1},
            {"op": "remove", "path": "/b"},
            {"op": "replace", "path": "/c", "value": [1]},
            {"op": "move", "from": "/d", "path": "/e"},
            {"op": "copy", "from": "/e", "path": "/f"},
            {"op": "test", "path": "/a", "value": 1},
        ]
    ),
    MessagesSnapshotEvent(messages=_MESSAGES),
    MessagesSnapshotEvent(messages=[]),
    ActivitySnapshotEvent(message_id="act1", activity_type="progress", content={"pct": 5}),
    ActivitySnapshotEvent(
        message_id="act1", activity_type="progress", content={"pct": 5}, replace=False
    ),
    ActivityDeltaEvent(
        message_id="act1",
        activity_type="progress",
        patch=[{"op": "replace", "path": "/pct", "value": 50}],
    ),
    RawEvent(event={"provider": "x", "n": 1}),
    RawEvent(event=[1, 2], source="openai"),
    CustomEvent(name="perdure.progress", value={"done": 3, "total": 10}),
    CustomEvent(name="flag", value=False),
    ReasoningStartEvent(message_id="r1"),
    ReasoningMessageStartEvent(message_id="r1"),
    ReasoningMessageContentEvent(message_id="r1", delta="hmm"),
    ReasoningMessageEndEvent(message_id="r1"),
    ReasoningMessageChunkEvent(),
    ReasoningMessageChunkEvent(message_id="r1", delta="more"),
    ReasoningEndEvent(message_id="r1"),
    ReasoningEncryptedValueEvent(subtype="message", entity_id="r1", encrypted_value="b64"),
    ReasoningEncryptedValueEvent(subtype="tool-call", entity_id="tc1", encrypted_value="b64"),
    SubagentStartedEvent(subagent_run_id="sa1", name="researcher"),
    SubagentStartedEvent(
        subagent_run_id="sa2",
        name="helper",
        description="helps",
        parent_subagent_run_id="sa1",
        parent_tool_call_id="tc1",
        parent_message_id="m1",
    ),
    SubagentFinishedEvent(subagent_run_id="sa1"),
    SubagentFinishedEvent(
        subagent_run_id="sa1", result={"r": 1}, outcome=SubagentFinishedSuccessOutcome()
    ),
    SubagentFinishedEvent(
        subagent_run_id="sa1", outcome=SubagentFinishedSuspendedOutcome(interrupt_ids=["i1"])
    ),
    SubagentErrorEvent(subagent_run_id="sa1", message="failed", code="E"),
]


def _with_base(ev: Event) -> Event:
    return msgspec.structs.replace(
        ev, timestamp=1_700_000_000_000, raw_event={"native": True}, metadata={"trace": "t"}
    )


ALL_SAMPLES = SAMPLES + [_with_base(ev) for ev in SAMPLES]


def _ids(samples: list[Event]) -> list[str]:
    return [f"{i}-{event_type(ev)}" for i, ev in enumerate(samples)]


def _wire(ev: Event) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(event_to_json(ev))
    return out


# ------------------------------------------------------------------------- wire shape


def test_every_ag_ui_event_type_has_a_struct() -> None:
    assert set(EVENT_CLASSES) == {t.value for t in agc.EventType}
    assert {event_type(ev) for ev in SAMPLES} == set(EVENT_CLASSES)
    for tag, cls in EVENT_CLASSES.items():
        assert cls.__name__ == getattr(agc, cls.__name__).__name__
        model_fields = getattr(agc, cls.__name__).model_fields
        assert set(cls.__struct_fields__) == set(model_fields) - {"type"}, tag


@pytest.mark.parametrize("ev", ALL_SAMPLES, ids=_ids(ALL_SAMPLES))
def test_json_validates_against_ag_ui_model_and_round_trips(ev: Event) -> None:
    model_cls = getattr(agc, type(ev).__name__)
    data = event_to_json(ev)
    assert b"null" not in data or isinstance(ev, CustomEvent | StateSnapshotEvent | RawEvent)
    model = model_cls.model_validate_json(data)
    assert model.type.value == event_type(ev)
    # ag_ui's own serialisation decodes back to an equal struct.
    dumped = model.model_dump_json(by_alias=True, exclude_none=True)
    assert event_from_json(dumped) == ev
    # and so does ours.
    assert event_from_json(data) == ev
    assert type(event_from_json(data)) is type(ev)


@pytest.mark.parametrize("ev", ALL_SAMPLES, ids=_ids(ALL_SAMPLES))
def test_msgpack_round_trip(ev: Event) -> None:
    blob = encode_event(ev)
    back = decode_event(blob)
    assert back == ev
    assert type(back) is type(ev)
    assert msgspec.msgpack.decode(blob) == _wire(ev)  # same field names as the wire


def test_wire_names_and_omitted_optionals() -> None:
    assert _wire(TextMessageStartEvent(message_id="m")) == {
        "type": "TEXT_MESSAGE_START",
        "messageId": "m",
    }
    assert _wire(ToolCallStartEvent(tool_call_id="a", tool_call_name="f")) == {
        "type": "TOOL_CALL_START",
        "toolCallId": "a",
        "toolCallName": "f",
    }
    # Required-on-the-wire values are written even when they equal a default.
    assert _wire(ReasoningMessageStartEvent(message_id="r"))["role"] == "reasoning"
    assert _wire(CustomEvent(name="n", value=None)) == {
        "type": "CUSTOM",
        "name": "n",
        "value": None,
    }
    assert _wire(RunStartedEvent(thread_id=T, run_id=R, input=AgentInput()))["input"] == {
        "threadId": "",
        "runId": "",
        "messages": [],
        "tools": [],
        "context": [],
    }
    assert _wire(_with_base(StepStartedEvent(step_name="s"))) == {
        "type": "STEP_STARTED",
        "timestamp": 1_700_000_000_000,
        "rawEvent": {"native": True},
        "metadata": {"trace": "t"},
        "stepName": "s",
    }


def test_agent_input_defaults() -> None:
    inp = AgentInput(messages=[{"id": "u1", "role": "user", "content": "hi"}])
    assert (inp.thread_id, inp.run_id, inp.tools, inp.context) == ("", "", [], [])
    assert inp.state is None and inp.resume is None
    filled = msgspec.structs.replace(inp, thread_id=T, run_id=R)
    agc.RunAgentInput.model_validate_json(msgspec.json.encode(filled))


def test_ag_ui_produced_events_decode() -> None:
    produced = [
        agc.RunStartedEvent(thread_id=T, run_id=R),
        agc.TextMessageContentEvent(message_id="m", delta="x"),
        agc.RunFinishedEvent(
            thread_id=T,
            run_id=R,
            outcome=agc.RunFinishedInterruptOutcome(
                interrupts=[agc.Interrupt(id="i", reason="tool_call", tool_call_id="tc")]
            ),
        ),
    ]
    decoded = [
        event_from_json(m.model_dump_json(by_alias=True, exclude_none=True)) for m in produced
    ]
    assert decoded[0] == RunStartedEvent(thread_id=T, run_id=R)
    assert decoded[1] == TextMessageContentEvent(message_id="m", delta="x")
    assert decoded[2] == RunFinishedEvent(
        thread_id=T,
        run_id=R,
        outcome=RunFinishedInterruptOutcome(
            interrupts=[Interrupt(id="i", reason="tool_call", tool_call_id="tc")]
        ),
    )


def test_decode_rejects_bad_input() -> None:
    with pytest.raises(msgspec.ValidationError):
        event_from_json(b'{"type":"NOPE"}')
    with pytest.raises(msgspec.ValidationError):
        event_from_json(b'{"type":"TEXT_MESSAGE_CONTENT","messageId":"m"}')
    with pytest.raises(msgspec.ValidationError):
        event_from_json(
            b'{"type":"RUN_FINISHED","threadId":"t","runId":"r",'
            b'"outcome":{"type":"interrupt","interrupts":[]}}'
        )
    # Unknown fields are tolerated, as in ag_ui's models.
    assert event_from_json(b'{"type":"STEP_STARTED","stepName":"s","extra":1}') == (
        StepStartedEvent(step_name="s")
    )


# ---------------------------------------------------------------------------- splitting

_TRICKY = 'aé€\U0001f600\n"\\\x01\u2028' * 7 + "z"


@pytest.mark.parametrize("limit", [120, 200, 1000])
@pytest.mark.parametrize("text", [_TRICKY * 40, "x" * 5000, "\U0001f600" * 3000, "\x01" * 900])
def test_split_text_content(text: str, limit: int) -> None:
    pieces = split_text_content("msg-1", text, limit=limit)
    assert len(pieces) > 1
    assert "".join(p.delta for p in pieces) == text
    for p in pieces:
        assert p.message_id == "msg-1"
        assert p.delta
        wire = event_to_json(p)
        assert len(wire) <= limit
        assert encoded_size_ok(p, limit)
        assert event_from_json(wire) == p
        # No code point was cut: each piece is whole UTF-8 and the bytes concatenate.
        p.delta.encode("utf-8")
    assert b"".join(p.delta.encode() for p in pieces) == text.encode()
    # Greedy: every piece but the last is full enough that the next code point would
    # not have fitted.
    for a, b in itertools.pairwise(pieces):
        grown = TextMessageContentEvent(message_id="msg-1", delta=a.delta + b.delta[0])
        assert len(event_to_json(grown)) > limit


def test_split_default_cap_and_small_delta() -> None:
    big = ("päivää \U0001f600 " * 40_000) + "end"
    pieces = split_text_content("m", big)
    assert len(pieces) >= 2
    assert "".join(p.delta for p in pieces) == big
    assert all(len(event_to_json(p)) <= MAX_EVENT_BYTES for p in pieces)
    assert not encoded_size_ok(TextMessageContentEvent(message_id="m", delta=big))
    assert split_text_content("m", "hello") == [
        TextMessageContentEvent(message_id="m", delta="hello")
    ]
    assert split_text_content("m", "") == [TextMessageContentEvent(message_id="m", delta="")]
    with pytest.raises(ValueError):
        split_text_content("m", "x" * 100, limit=50)


def test_split_tool_call_args() -> None:
    args = json.dumps({"text": _TRICKY * 100, "n": list(range(500))}, ensure_ascii=False)
    pieces = split_tool_call_args("tc-1", args, limit=500)
    assert len(pieces) > 1
    assert all(isinstance(p, ToolCallArgsEvent) and p.tool_call_id == "tc-1" for p in pieces)
    assert all(len(event_to_json(p)) <= 500 for p in pieces)
    assert json.loads("".join(p.delta for p in pieces)) == json.loads(args)


# ----------------------------------------------------------------------------- verifier


def _seq(*events: Event | dict[str, Any]) -> list[dict[str, Any]]:
    return [e if isinstance(e, dict) else _wire(e) for e in events]


def _started(run_id: str = R, **kw: Any) -> RunStartedEvent:
    return RunStartedEvent(thread_id=T, run_id=run_id, **kw)


def _finished(outcome: Any = None, run_id: str = R) -> RunFinishedEvent:
    return RunFinishedEvent(thread_id=T, run_id=run_id, outcome=outcome)


def _interrupt(reason: str = "tool_call", **kw: Any) -> RunFinishedInterruptOutcome:
    return RunFinishedInterruptOutcome(interrupts=[Interrupt(id="i1", reason=reason, **kw)])


VALID: dict[str, list[dict[str, Any]]] = {
    "simple_run": _seq(_started(), _finished()),
    "simple_run_success_result": _seq(
        _started(),
        RunFinishedEvent(thread_id=T, run_id=R, result=1, outcome=RunFinishedSuccessOutcome()),
    ),
    "message_tool_call_step": _seq(
        _started(input=AgentInput(thread_id=T, run_id=R, messages=_MESSAGES[:3])),
        StepStartedEvent(step_name="plan"),
        TextMessageStartEvent(message_id="m1", role="assistant"),
        TextMessageContentEvent(message_id="m1", delta="let me check"),
        TextMessageEndEvent(message_id="m1"),
        ToolCallStartEvent(tool_call_id="tc1", tool_call_name="search", parent_message_id="m1"),
        ToolCallArgsEvent(tool_call_id="tc1", delta='{"q":'),
        ToolCallArgsEvent(tool_call_id="tc1", delta='"x"}'),
        ToolCallEndEvent(tool_call_id="tc1"),
        ToolCallResultEvent(message_id="t1", tool_call_id="tc1", content="found"),
        StepFinishedEvent(step_name="plan"),
        StateSnapshotEvent(snapshot={"n": 1}),
        StateDeltaEvent(delta=[{"op": "replace", "path": "/n", "value": 2}]),
        CustomEvent(name="perdure.progress", value=0.5),
        MessagesSnapshotEvent(messages=_MESSAGES),
        RunFinishedEvent(thread_id=T, run_id=R, outcome=RunFinishedSuccessOutcome(), usage=_USAGE),
    ),
    "interrupt_resume_finish": _seq(
        _started(),
        ToolCallStartEvent(tool_call_id="tc1", tool_call_name="approve"),
        ToolCallArgsEvent(tool_call_id="tc1", delta="{}"),
        ToolCallEndEvent(tool_call_id="tc1"),
        _finished(_interrupt("tool_call", tool_call_id="tc1")),
        _started(
            input=AgentInput(
                thread_id=T,
                run_id=R,
                resume=[{"interruptId": "i1", "status": "resolved", "payload": {"ok": True}}],
            )
        ),
        ToolCallResultEvent(message_id="t1", tool_call_id="tc1", content="approved"),
        TextMessageStartEvent(message_id="m2"),
        TextMessageContentEvent(message_id="m2", delta="done"),
        TextMessageEndEvent(message_id="m2"),
        _finished(RunFinishedSuccessOutcome()),
    ),
    "cancelled": _seq(
        _started(),
        StepStartedEvent(step_name="s"),
        StepFinishedEvent(step_name="s"),
        _finished(RunFinishedCancelledOutcome()),
    ),
    "cancel_while_waiting": _seq(
        _started(),
        _finished(_interrupt("input_required")),
        _started(),
        _finished(RunFinishedCancelledOutcome()),
    ),
    "error_while_waiting": _seq(
        _started(), _finished(_interrupt("event")), RunErrorEvent(message="lost", code="E")
    ),
    "error_with_open_entities": _seq(
        _started(),
        StepStartedEvent(step_name="s"),
        TextMessageStartEvent(message_id="m1"),
        ToolCallStartEvent(tool_call_id="tc1", tool_call_name="f"),
        RunErrorEvent(message="crash"),
    ),
    "bare_run_error": _seq(RunErrorEvent(message="early")),
    "new_run_after_error": _seq(
        _started(), RunErrorEvent(message="x"), _started("run-2"), _finished(run_id="run-2")
    ),
    "reasoning_and_subagents": _seq(
        _started(),
        SubagentStartedEvent(subagent_run_id="sa1", name="researcher"),
        SubagentStartedEvent(subagent_run_id="sa2", name="helper", parent_subagent_run_id="sa1"),
        ReasoningStartEvent(message_id="r1", subagent_run_id="sa1"),
        ReasoningMessageStartEvent(message_id="r1", subagent_run_id="sa1"),
        ReasoningMessageContentEvent(message_id="r1", delta="hmm"),
        ReasoningMessageEndEvent(message_id="r1"),
        ReasoningEndEvent(message_id="r1", subagent_run_id="sa1"),
        ReasoningEncryptedValueEvent(
            subtype="message", entity_id="r1", encrypted_value="x", subagent_run_id="sa1"
        ),
        StepStartedEvent(step_name="tools"),
        StepStartedEvent(step_name="tools", subagent_run_id="sa2"),
        StepFinishedEvent(step_name="tools", subagent_run_id="sa2"),
        StepFinishedEvent(step_name="tools"),
        ActivitySnapshotEvent(
            message_id="a1", activity_type="p", content={}, subagent_run_id="sa2"
        ),
        ActivityDeltaEvent(message_id="a1", activity_type="p", patch=[], subagent_run_id="sa2"),
        SubagentFinishedEvent(subagent_run_id="sa2", outcome=SubagentFinishedSuccessOutcome()),
        SubagentErrorEvent(subagent_run_id="sa1", message="gave up"),
        RawEvent(event={"x": 1}),
        _finished(),
    ),
    "chunks_pass_through": _seq(
        _started(),
        TextMessageChunkEvent(message_id="m1", delta="a"),
        ToolCallChunkEvent(tool_call_id="tc1", tool_call_name="f", delta="{}"),
        _finished(),
    ),
}

INVALID: dict[str, tuple[list[dict[str, Any]], int, str]] = {
    # name: (events, index of the refused event, fragment of the official message)
    "event_before_run_started": (
        _seq(TextMessageStartEvent(message_id="m1"), _started()),
        0,
        "First event must be 'RUN_STARTED'",
    ),
    "run_finished_with_open_tool_call": (
        _seq(_started(), ToolCallStartEvent(tool_call_id="tc1", tool_call_name="f"), _finished()),
        2,
        "Cannot send 'RUN_FINISHED' while tool calls are still active: tc1",
    ),
    "run_finished_with_open_message": (
        _seq(_started(), TextMessageStartEvent(message_id="m1"), _finished(_interrupt())),
        2,
        "Cannot send 'RUN_FINISHED' while text messages are still active: m1",
    ),
    "run_finished_with_open_step": (
        _seq(_started(), StepStartedEvent(step_name="s1"), _finished(_interrupt())),
        2,
        "Cannot send 'RUN_FINISHED' while steps are still active: s1",
    ),
    "event_after_run_error": (
        _seq(_started(), RunErrorEvent(message="x"), CustomEvent(name="c", value=1)),
        2,
        "The run has already errored with 'RUN_ERROR'",
    ),
    "run_finished_after_run_error": (
        _seq(_started(), RunErrorEvent(message="x"), _finished()),
        2,
        "The run has already errored with 'RUN_ERROR'",
    ),
    "content_for_unknown_message": (
        _seq(_started(), TextMessageContentEvent(message_id="nope", delta="x")),
        1,
        "No active text message found with ID 'nope'",
    ),
    "duplicate_open_message_id": (
        _seq(
            _started(),
            TextMessageStartEvent(message_id="m1"),
            TextMessageStartEvent(message_id="m1"),
        ),
        2,
        "A text message with ID 'm1' is already in progress",
    ),
    "non_run_started_after_run_finished": (
        _seq(
            _started(),
            _finished(_interrupt()),
            ToolCallResultEvent(message_id="t1", tool_call_id="tc1", content="late"),
        ),
        2,
        "The run has already finished with 'RUN_FINISHED'",
    ),
    "custom_after_run_finished": (
        _seq(_started(), _finished(), CustomEvent(name="c", value=1)),
        2,
        "The run has already finished with 'RUN_FINISHED'",
    ),
    "run_started_while_active": (
        _seq(_started(), _started()),
        1,
        "Cannot send 'RUN_STARTED' while a run is still active",
    ),
    "duplicate_run_finished": (
        _seq(_started(), _finished(), _finished()),
        2,
        "The run has already finished with 'RUN_FINISHED'",
    ),
    "tool_args_after_end": (
        _seq(
            _started(),
            ToolCallStartEvent(tool_call_id="tc1", tool_call_name="f"),
            ToolCallEndEvent(tool_call_id="tc1"),
            ToolCallArgsEvent(tool_call_id="tc1", delta="{}"),
        ),
        3,
        "No active tool call found with ID 'tc1'",
    ),
    "step_finished_not_started": (
        _seq(_started(), StepFinishedEvent(step_name="s")),
        1,
        "that was not started",
    ),
    "step_finished_by_other_owner": (
        _seq(
            _started(),
            StepStartedEvent(step_name="s"),
            StepFinishedEvent(step_name="s", subagent_run_id="sa1"),
        ),
        2,
        "that step is open under the parent agent",
    ),
    "subagent_tag_mismatch": (
        _seq(
            _started(),
            TextMessageStartEvent(message_id="m1", subagent_run_id="sa1"),
            TextMessageContentEvent(message_id="m1", delta="x", subagent_run_id="sa2"),
        ),
        2,
        "does not match the message 'm1' opener's subagent 'sa1'",
    ),
    "null_subagent_run_id": (
        _seq(_started(), {"type": "STEP_STARTED", "stepName": "s", "subagentRunId": None}),
        1,
        "with 'subagentRunId: null'",
    ),
    "run_finished_with_open_subagent": (
        _seq(_started(), SubagentStartedEvent(subagent_run_id="sa1", name="x"), _finished()),
        2,
        "while subagents are still active: sa1",
    ),
    "reasoning_content_without_start": (
        _seq(_started(), ReasoningMessageContentEvent(message_id="r1", delta="x")),
        1,
        "No active reasoning message found with ID 'r1'",
    ),
}

INCOMPLETE: dict[str, list[dict[str, Any]]] = {
    "empty": [],
    "only_run_started": _seq(_started()),
    "open_message": _seq(_started(), TextMessageStartEvent(message_id="m1")),
    "resumed_not_finished": _seq(_started(), _finished(_interrupt()), _started()),
}


@pytest.mark.parametrize("name", list(VALID))
def test_verifier_accepts_valid_sequences(name: str) -> None:
    verify_events(VALID[name])
    verify_prefixes(VALID[name])


@pytest.mark.parametrize("name", list(INVALID))
def test_verifier_rejects_invalid_sequences(name: str) -> None:
    events, index, fragment = INVALID[name]
    with pytest.raises(AGUIProtocolError) as info:
        verify_events(events)
    assert info.value.index == index
    assert fragment in info.value.reason
    assert fragment in str(info.value)
    assert isinstance(info.value, ValueError)
    # Everything before the refused event is an acceptable prefix.
    verify_events(events[:index])


@pytest.mark.parametrize("name", list(INCOMPLETE))
def test_prefix_verification_requires_a_finished_stream(name: str) -> None:
    events = INCOMPLETE[name]
    verify_events(events)  # acceptable as a stream in progress
    with pytest.raises(AGUIProtocolError, match="The stream ended without"):
        verify_prefixes(events)


def test_verifier_is_spent_after_a_rejection() -> None:
    v = EventVerifier()
    v.feed(_wire(_started()))
    assert v.run_open
    with pytest.raises(AGUIProtocolError):
        v.feed(_wire(TextMessageEndEvent(message_id="x")))
    with pytest.raises(AGUIProtocolError, match="already failed"):
        v.feed(_wire(_finished()))
    assert v.events_seen == 1


# ------------------------------------------------------------------- official verifier

_OWNERS = [None, "sa1", "sa2"]


def _random_event(rng: random.Random) -> dict[str, Any]:
    """A random, schema-valid wire event from a small alphabet (to make collisions likely)."""
    kind = rng.choice(
        [
            "RUN_STARTED", "RUN_FINISHED", "RUN_FINISHED_INT", "RUN_ERROR",
            "TEXT_MESSAGE_START", "TEXT_MESSAGE_CONTENT", "TEXT_MESSAGE_END",
            "TOOL_CALL_START", "TOOL_CALL_ARGS", "TOOL_CALL_END", "TOOL_CALL_RESULT",
            "STEP_STARTED", "STEP_FINISHED", "REASONING_START", "REASONING_MESSAGE_START",
            "REASONING_MESSAGE_CONTENT", "REASONING_MESSAGE_END", "REASONING_END",
            "REASONING_ENCRYPTED_VALUE", "ACTIVITY_SNAPSHOT", "ACTIVITY_DELTA",
            "SUBAGENT_STARTED", "SUBAGENT_FINISHED", "SUBAGENT_ERROR", "MESSAGES_SNAPSHOT",
            "CUSTOM", "TEXT_MESSAGE_START", "TEXT_MESSAGE_END", "TOOL_CALL_START",
            "TOOL_CALL_END", "STEP_STARTED", "STEP_FINISHED",
        ]
    )  # fmt: skip
    mid = rng.choice(["m1", "m2"])
    tid = rng.choice(["tc1", "tc2"])
    sub = rng.choice(_OWNERS)
    ev: Event
    if kind == "RUN_STARTED":
        msgs = rng.choice([[], [{"id": mid, "role": "assistant", "content": "x"}]])
        ev = _started(input=AgentInput(thread_id=T, run_id=R, messages=msgs))
    elif kind == "RUN_FINISHED":
        ev = _finished()
    elif kind == "RUN_FINISHED_INT":
        ev = _finished(_interrupt(subagent_run_id=sub))
    elif kind == "RUN_ERROR":
        ev = RunErrorEvent(message="e")
    elif kind == "TEXT_MESSAGE_START":
        ev = TextMessageStartEvent(message_id=mid, subagent_run_id=sub)
    elif kind == "TEXT_MESSAGE_CONTENT":
        ev = TextMessageContentEvent(message_id=mid, delta="d", subagent_run_id=sub)
    elif kind == "TEXT_MESSAGE_END":
        ev = TextMessageEndEvent(message_id=mid, subagent_run_id=sub)
    elif kind == "TOOL_CALL_START":
        parent = rng.choice([None, mid])
        ev = ToolCallStartEvent(
            tool_call_id=tid, tool_call_name="f", parent_message_id=parent, subagent_run_id=sub
        )
    elif kind == "TOOL_CALL_ARGS":
        ev = ToolCallArgsEvent(tool_call_id=tid, delta="{}", subagent_run_id=sub)
    elif kind == "TOOL_CALL_END":
        ev = ToolCallEndEvent(tool_call_id=tid, subagent_run_id=sub)
    elif kind == "TOOL_CALL_RESULT":
        ev = ToolCallResultEvent(message_id=mid, tool_call_id=tid, content="r", subagent_run_id=sub)
    elif kind == "STEP_STARTED":
        ev = StepStartedEvent(step_name=rng.choice(["s1", "s2"]), subagent_run_id=sub)
    elif kind == "STEP_FINISHED":
        ev = StepFinishedEvent(step_name=rng.choice(["s1", "s2"]), subagent_run_id=sub)
    elif kind == "REASONING_START":
        ev = ReasoningStartEvent(message_id=mid, subagent_run_id=sub)
    elif kind == "REASONING_MESSAGE_START":
        ev = ReasoningMessageStartEvent(message_id=mid, subagent_run_id=sub)
    elif kind == "REASONING_MESSAGE_CONTENT":
        ev = ReasoningMessageContentEvent(message_id=mid, delta="r", subagent_run_id=sub)
    elif kind == "REASONING_MESSAGE_END":
        ev = ReasoningMessageEndEvent(message_id=mid, subagent_run_id=sub)
    elif kind == "REASONING_END":
        ev = ReasoningEndEvent(message_id=mid, subagent_run_id=sub)
    elif kind == "REASONING_ENCRYPTED_VALUE":
        ev = ReasoningEncryptedValueEvent(
            subtype=rng.choice(["message", "tool-call"]),
            entity_id=rng.choice([mid, tid]),
            encrypted_value="v",
            subagent_run_id=sub,
        )
    elif kind == "ACTIVITY_SNAPSHOT":
        ev = ActivitySnapshotEvent(
            message_id=mid,
            activity_type="p",
            content={},
            replace=rng.choice([None, False, True]),
            subagent_run_id=sub,
        )
    elif kind == "ACTIVITY_DELTA":
        ev = ActivityDeltaEvent(message_id=mid, activity_type="p", patch=[], subagent_run_id=sub)
    elif kind == "SUBAGENT_STARTED":
        ev = SubagentStartedEvent(
            subagent_run_id=rng.choice(["sa1", "sa2"]),
            name="n",
            parent_subagent_run_id=rng.choice([None, None, "sa1"]),
        )
    elif kind == "SUBAGENT_FINISHED":
        ev = SubagentFinishedEvent(subagent_run_id=rng.choice(["sa1", "sa2"]))
    elif kind == "SUBAGENT_ERROR":
        ev = SubagentErrorEvent(subagent_run_id=rng.choice(["sa1", "sa2"]), message="x")
    elif kind == "MESSAGES_SNAPSHOT":
        msg: dict[str, Any] = {"id": mid, "role": rng.choice(["assistant", "reasoning"])}
        msg["content"] = "c"
        if sub is not None:
            msg["subagentRunId"] = sub
        ev = MessagesSnapshotEvent(messages=[msg])
    else:
        ev = CustomEvent(name="c", value=1, subagent_run_id=sub)
    return _wire(ev)


def _random_logs(count: int, seed: int = 20240601) -> list[list[dict[str, Any]]]:
    rng = random.Random(seed)
    logs = []
    for _ in range(count):
        events = [_wire(_started())] if rng.random() < 0.9 else []
        events += [_random_event(rng) for _ in range(rng.randint(0, 14))]
        logs.append(events)
    return logs


def _guided_logs(count: int, seed: int = 7) -> list[list[dict[str, Any]]]:
    """Long random walks that mostly stay valid (guided by our verifier), sometimes ending
    in a refused event: they reach deep states that purely random logs rarely do."""
    rng = random.Random(seed)
    logs = []
    for _ in range(count):
        verifier = EventVerifier()
        events: list[dict[str, Any]] = []
        for _ in range(rng.randint(5, 80)):
            candidate = _wire(_started()) if not events else _random_event(rng)
            trial = copy.deepcopy(verifier)
            try:
                trial.feed(candidate)
            except AGUIProtocolError:
                if rng.random() < 0.08:
                    events.append(candidate)
                    break
                continue
            verifier = trial
            events.append(candidate)
        logs.append(events)
    return logs


def _python_verdict(events: list[dict[str, Any]], complete: bool) -> dict[str, Any]:
    try:
        verify_events(events, require_complete=complete)
    except AGUIProtocolError as err:
        return {"ok": False, "index": err.index, "error": err.reason}
    return {"ok": True}


def _run_node(logs: list[list[dict[str, Any]]], *flags: str) -> list[dict[str, Any]]:
    if not (NODE_DIR / "node_modules").is_dir():
        if os.environ.get("PERDURE_REQUIRE_NODE"):
            pytest.fail(f"PERDURE_REQUIRE_NODE is set but {NODE_DIR}/node_modules is missing")
        pytest.skip(f"run `npm ci` in {NODE_DIR} to compare against the official verifier")
    node = shutil.which("node")
    assert node is not None, "node is not on PATH"
    return run_verify_mjs(node, logs, *flags)


def _corpus() -> list[list[dict[str, Any]]]:
    return (
        list(VALID.values())
        + [events for events, _, _ in INVALID.values()]
        + list(INCOMPLETE.values())
        + _random_logs(400)
        + _guided_logs(300)
    )


def _compare(complete: bool) -> None:
    logs = _corpus()
    node_results = _run_node(logs, *(["--complete"] if complete else []))
    mismatches = []
    for i, (events, theirs) in enumerate(zip(logs, node_results, strict=True)):
        ours = _python_verdict(events, complete)
        if ours["ok"] != theirs["ok"] or (
            not ours["ok"]
            and (ours["index"] != theirs["index"] or ours["error"] != theirs["error"])
        ):
            mismatches.append((i, events, ours, theirs))
    assert not mismatches, json.dumps(mismatches[:3], indent=1)
    # The corpus exercises both verdicts.
    assert any(r["ok"] for r in node_results) and not all(r["ok"] for r in node_results)


def test_python_verifier_agrees_with_official_verify_events() -> None:
    _compare(complete=False)


def test_python_prefix_verifier_agrees_with_official_plus_completion() -> None:
    _compare(complete=True)


def test_official_schemas_accept_our_json() -> None:
    results = _run_node([[_wire(ev)] for ev in ALL_SAMPLES], "--schema-only")
    bad = [(event_type(ev), r) for ev, r in zip(ALL_SAMPLES, results, strict=True) if not r["ok"]]
    assert not bad, bad
    results = _run_node(list(VALID.values()), "--schema", "--complete")
    assert all(r["ok"] for r in results), results
