"""The snapshot fold (R22): ``perdure.agui.fold_events`` and ``prelude_events``.

Properties checked on random valid AG-UI logs (hypothesis):

* a client that joins a log at any event id (the prelude of the fold so far, then
  the rest of the log) receives a stream the verifier accepts and ends with the
  same snapshot as a client that saw the whole log;
* folding is incremental: folding a prefix and then the rest from that snapshot
  equals folding everything at once;
* folding the log read back from either codec (msgpack storage, JSON wire) equals
  folding the events as written.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from perdure.agui import (
    AgentInput,
    CustomEvent,
    Event,
    Interrupt,
    LogSnapshot,
    MessagesSnapshotEvent,
    ReasoningMessageContentEvent,
    ReasoningMessageEndEvent,
    ReasoningMessageStartEvent,
    RunErrorEvent,
    RunFinishedEvent,
    RunFinishedInterruptOutcome,
    RunFinishedSuccessOutcome,
    RunStartedEvent,
    StateDeltaEvent,
    StateSnapshotEvent,
    StepFinishedEvent,
    StepStartedEvent,
    SubagentFinishedEvent,
    SubagentStartedEvent,
    TextMessageContentEvent,
    TextMessageEndEvent,
    TextMessageStartEvent,
    ToolCallArgsEvent,
    ToolCallEndEvent,
    ToolCallResultEvent,
    ToolCallStartEvent,
    decode_event,
    encode_event,
    event_from_json,
    event_to_json,
    fold_events,
    prelude_events,
    verify_events,
    verify_prefixes,
)


def wire(events: list[Event]) -> list[dict[str, Any]]:
    return [json.loads(event_to_json(e)) for e in events]


def same_state(a: LogSnapshot, b: LogSnapshot) -> bool:
    """Equal in everything but ``after_event_id`` (a prelude is not part of the log)."""
    return msgspec.structs.replace(a, after_event_id=0) == msgspec.structs.replace(
        b, after_event_id=0
    )


# -- a generator of valid logs -----------------------------------------------------------


class _LogModel:
    """Builds a valid log one random action at a time (tracks what is open)."""

    def __init__(self, data: st.DataObject) -> None:
        self.draw = data.draw
        self.events: list[Event] = []
        self.in_run = False
        self.messages: dict[str, str | None] = {}  # open text message -> subagent tag
        self.reasoning: set[str] = set()
        self.tools: dict[str, str | None] = {}
        self.ended_tools: list[str] = []
        self.steps: set[str] = set()
        self.subagents: set[str] = set()
        self.closed_subagents: set[str] = set()
        self.state: dict[str, Any] | None = None
        self.n = 0

    def fresh(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}{self.n}"

    def emit(self, event: Event) -> None:
        self.events.append(event)

    def pick(self, pool: Any) -> Any:
        return self.draw(st.sampled_from(sorted(pool)))

    def start_run(self) -> None:
        with_input = self.draw(st.booleans())
        inp = (
            AgentInput(
                thread_id="t",
                run_id="r",
                messages=[{"id": self.fresh("u"), "role": "user", "content": "hi"}],
            )
            if with_input
            else None
        )
        self.emit(RunStartedEvent(thread_id="t", run_id="r", input=inp))
        self.in_run = True
        self.closed_subagents.clear()

    def nothing_open(self) -> bool:
        return not (self.messages or self.reasoning or self.tools or self.steps or self.subagents)

    def step(self) -> None:
        if not self.in_run:
            self.start_run()
            return
        actions = ["text_start", "tool_start", "reasoning_start", "state", "custom"]
        actions += ["step_start", "error"]
        if not (self.messages or self.tools or self.reasoning):
            # A snapshot that drops a message still streaming loses it for every
            # client (later deltas find nothing): producers snapshot between messages.
            actions.append("msgs")
        if self.messages:
            actions += ["text_content", "text_content", "text_end"]
        if self.tools:
            actions += ["tool_args", "tool_end"]
        if self.ended_tools:
            actions.append("tool_result")
        if self.reasoning:
            actions += ["reasoning_content", "reasoning_end"]
        if self.steps:
            actions.append("step_end")
        if len(self.subagents) < 2:
            actions.append("sub_start")
        if self.subagents:
            actions.append("sub_end")
        if self.nothing_open():
            actions += ["finish", "interrupt"]
        getattr(self, "_" + self.draw(st.sampled_from(actions)))()

    def tag(self) -> str | None:
        if not self.subagents or not self.draw(st.booleans()):
            return None
        return str(self.pick(self.subagents))

    def _text_start(self) -> None:
        mid = self.fresh("m")
        sub = self.tag()
        role = self.draw(st.sampled_from(["assistant", "user", None]))
        self.emit(TextMessageStartEvent(message_id=mid, role=role, subagent_run_id=sub))
        self.messages[mid] = sub

    def _text_content(self) -> None:
        mid = self.pick(self.messages)
        delta = self.draw(st.text(max_size=5))
        self.emit(
            TextMessageContentEvent(message_id=mid, delta=delta, subagent_run_id=self.messages[mid])
        )

    def _text_end(self) -> None:
        mid = self.pick(self.messages)
        self.emit(TextMessageEndEvent(message_id=mid, subagent_run_id=self.messages.pop(mid)))

    def _tool_start(self) -> None:
        tid = self.fresh("tc")
        parents = [m for m, sub in self.messages.items() if sub is None]
        parent = self.draw(st.sampled_from([None, *sorted(parents)]))
        sub = None if parent is not None else self.tag()
        self.emit(
            ToolCallStartEvent(
                tool_call_id=tid,
                tool_call_name=self.draw(st.sampled_from(["a", "b"])),
                parent_message_id=parent,
                subagent_run_id=sub,
            )
        )
        self.tools[tid] = sub

    def _tool_args(self) -> None:
        tid = self.pick(self.tools)
        delta = self.draw(st.sampled_from(['{"x":', "1", "}", ""]))
        self.emit(ToolCallArgsEvent(tool_call_id=tid, delta=delta, subagent_run_id=self.tools[tid]))

    def _tool_end(self) -> None:
        tid = self.pick(self.tools)
        self.emit(ToolCallEndEvent(tool_call_id=tid, subagent_run_id=self.tools.pop(tid)))
        self.ended_tools.append(tid)

    def _tool_result(self) -> None:
        tid = self.draw(st.sampled_from(self.ended_tools))
        self.ended_tools.remove(tid)
        self.emit(
            ToolCallResultEvent(
                message_id=self.fresh("res"), tool_call_id=tid, content="ok", role="tool"
            )
        )

    def _reasoning_start(self) -> None:
        mid = self.fresh("rm")
        self.emit(ReasoningMessageStartEvent(message_id=mid))
        self.reasoning.add(mid)

    def _reasoning_content(self) -> None:
        mid = self.pick(self.reasoning)
        self.emit(
            ReasoningMessageContentEvent(message_id=mid, delta=self.draw(st.text(max_size=3)))
        )

    def _reasoning_end(self) -> None:
        mid = self.pick(self.reasoning)
        self.reasoning.discard(mid)
        self.emit(ReasoningMessageEndEvent(message_id=mid))

    def _step_start(self) -> None:
        name = self.fresh("s")
        self.emit(StepStartedEvent(step_name=name))
        self.steps.add(name)

    def _step_end(self) -> None:
        name = self.pick(self.steps)
        self.steps.discard(name)
        self.emit(StepFinishedEvent(step_name=name))

    def _sub_start(self) -> None:
        sid = self.fresh("sub")
        self.emit(SubagentStartedEvent(subagent_run_id=sid, name="helper"))
        self.subagents.add(sid)

    def _sub_end(self) -> None:
        candidates = [
            s
            for s in self.subagents
            if s not in self.messages.values() and s not in self.tools.values()
        ]
        if not candidates:
            self._custom()
            return
        sid = self.pick(candidates)
        self.subagents.discard(sid)
        self.closed_subagents.add(sid)
        self.emit(SubagentFinishedEvent(subagent_run_id=sid))

    def _state(self) -> None:
        choice = self.draw(st.sampled_from(["snapshot", "delta", "delta", "bad"]))
        if choice == "snapshot" or self.state is None:
            self.state = {"k0": self.draw(st.integers(0, 9))}
            self.emit(StateSnapshotEvent(snapshot=dict(self.state)))
            return
        if choice == "bad":  # a patch that does not apply is skipped, never fatal
            self.emit(StateDeltaEvent(delta=[{"op": "remove", "path": "/missing"}]))
            return
        key = self.draw(st.sampled_from(["k0", "k1", "k2"]))
        if key in self.state and self.draw(st.booleans()):
            op: dict[str, Any] = {"op": "remove", "path": f"/{key}"}
            del self.state[key]
        else:
            value = self.draw(st.integers(0, 9) | st.lists(st.integers(0, 3), max_size=2))
            op = {"op": "add", "path": f"/{key}", "value": value}
            self.state[key] = value
        self.emit(StateDeltaEvent(delta=[op]))

    def _custom(self) -> None:
        self.emit(CustomEvent(name="tick", value=self.n))

    def _msgs(self) -> None:
        keep = self.draw(st.booleans())
        messages = [{"id": self.fresh("snap"), "role": "user", "content": "from a snapshot"}]
        if keep:
            messages.insert(0, {"id": "u1", "role": "user", "content": "replaced"})
        self.emit(MessagesSnapshotEvent(messages=messages))

    def _finish(self) -> None:
        self.emit(RunFinishedEvent(thread_id="t", run_id="r", outcome=RunFinishedSuccessOutcome()))
        self.in_run = False

    def _interrupt(self) -> None:
        interrupt = Interrupt(id=self.fresh("tool:"), reason="tool_call")
        self.emit(
            RunFinishedEvent(
                thread_id="t",
                run_id="r",
                outcome=RunFinishedInterruptOutcome(interrupts=[interrupt]),
            )
        )
        self.in_run = False

    def _error(self) -> None:
        self.emit(RunErrorEvent(message="boom", code="X"))
        self.in_run = False
        self.messages.clear()
        self.reasoning.clear()
        self.tools.clear()
        self.steps.clear()
        self.subagents.clear()

    def close_all(self) -> None:
        """End the log: close what is open, then finish the run."""
        if not self.in_run:
            return
        for mid, sub in list(self.messages.items()):
            self.emit(TextMessageEndEvent(message_id=mid, subagent_run_id=sub))
        for tid, sub in list(self.tools.items()):
            self.emit(ToolCallEndEvent(tool_call_id=tid, subagent_run_id=sub))
        for mid in sorted(self.reasoning):
            self.emit(ReasoningMessageEndEvent(message_id=mid))
        for name in sorted(self.steps):
            self.emit(StepFinishedEvent(step_name=name))
        for sid in sorted(self.subagents):
            self.emit(SubagentFinishedEvent(subagent_run_id=sid))
        self.messages.clear()
        self.tools.clear()
        self.reasoning.clear()
        self.steps.clear()
        self.subagents.clear()
        self._finish()


@st.composite
def valid_logs(draw: st.DrawFn) -> list[Event]:
    model = _LogModel(draw(st.data()))
    for _ in range(draw(st.integers(1, 40))):
        model.step()
    model.close_all()
    return model.events


_SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_SETTINGS
@given(valid_logs())
def test_generated_logs_are_valid(log: list[Event]) -> None:
    verify_prefixes(wire(log))


@_SETTINGS
@given(valid_logs())
def test_joining_anywhere_verifies_and_ends_in_the_same_snapshot(log: list[Event]) -> None:
    whole = fold_events(log)
    for cut in range(len(log) + 1):
        prefix = fold_events(log[:cut])
        prelude = prelude_events(prefix)
        if prefix.run_started is None:
            # Between segments the log itself goes on with a RUN_STARTED.
            assert prelude == []
            continue
        # What the prelude alone rebuilds is what the prefix folded to...
        assert same_state(fold_events(prelude), prefix)
        # ... so a client joining here receives a valid stream and ends where a
        # client that saw the whole log ends.
        joined = prelude + log[cut:]
        verify_prefixes(wire(joined))
        assert same_state(fold_events(joined), whole)


@_SETTINGS
@given(valid_logs(), st.data())
def test_folding_is_incremental(log: list[Event], data: st.DataObject) -> None:
    whole = fold_events(log)
    cut = data.draw(st.integers(0, len(log)))
    first = fold_events(log[:cut])
    assert fold_events(log[cut:], start=first) == whole
    assert fold_events(log, upto=cut) == first
    # Continuing never changes the snapshot it started from.
    assert fold_events(log[:cut]) == first


@_SETTINGS
@given(valid_logs())
def test_folding_the_replayed_log_equals_folding_the_written_one(log: list[Event]) -> None:
    from_storage = [decode_event(encode_event(e)) for e in log]
    from_wire = [event_from_json(event_to_json(e)) for e in log]
    assert fold_events(from_storage) == fold_events(log) == fold_events(from_wire)


# -- examples ------------------------------------------------------------------------------


def test_fold_builds_messages_tool_calls_results_reasoning_and_state() -> None:
    log: list[Event] = [
        RunStartedEvent(
            thread_id="t",
            run_id="r",
            input=AgentInput(messages=[{"id": "u1", "role": "user", "content": "weather?"}]),
        ),
        StateSnapshotEvent(snapshot={"city": "Paris", "tags": []}),
        ReasoningMessageStartEvent(message_id="think"),
        ReasoningMessageContentEvent(message_id="think", delta="need a tool"),
        ReasoningMessageEndEvent(message_id="think"),
        TextMessageStartEvent(message_id="a1", role="assistant"),
        TextMessageContentEvent(message_id="a1", delta="Let me "),
        TextMessageContentEvent(message_id="a1", delta="check."),
        TextMessageEndEvent(message_id="a1"),
        ToolCallStartEvent(tool_call_id="tc1", tool_call_name="weather", parent_message_id="a1"),
        ToolCallArgsEvent(tool_call_id="tc1", delta='{"city":'),
        ToolCallArgsEvent(tool_call_id="tc1", delta='"Paris"}'),
        ToolCallEndEvent(tool_call_id="tc1"),
        ToolCallStartEvent(tool_call_id="tc2", tool_call_name="clock"),
        ToolCallEndEvent(tool_call_id="tc2"),
        StateDeltaEvent(delta=[{"op": "add", "path": "/tags/-", "value": "sunny"}]),
        StateDeltaEvent(delta=[{"op": "remove", "path": "/nope"}]),  # skipped
        RunFinishedEvent(
            thread_id="t",
            run_id="r",
            outcome=RunFinishedInterruptOutcome(
                interrupts=[Interrupt(id="tool:tc1", reason="tool_call", tool_call_id="tc1")]
            ),
        ),
    ]
    snap = fold_events(log)
    assert snap.after_event_id == len(log)
    assert snap.messages == [
        {"id": "u1", "role": "user", "content": "weather?"},
        {"id": "think", "role": "reasoning", "content": "need a tool"},
        {
            "id": "a1",
            "role": "assistant",
            "content": "Let me check.",
            "toolCalls": [
                {
                    "id": "tc1",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city":"Paris"}'},
                }
            ],
        },
        {
            "id": "tc2",
            "role": "assistant",
            "toolCalls": [
                {"id": "tc2", "type": "function", "function": {"name": "clock", "arguments": ""}}
            ],
        },
    ]
    assert snap.state == {"city": "Paris", "tags": ["sunny"]}
    assert snap.open_tool_calls == ["tc1", "tc2"]
    assert [i.id for i in snap.interrupts] == ["tool:tc1"]
    assert snap.run_started is None and snap.open_items == []

    resumed = [
        *log,
        RunStartedEvent(thread_id="t", run_id="r"),
        ToolCallResultEvent(message_id="res1", tool_call_id="tc1", content="18C", role="tool"),
    ]
    later = fold_events(resumed[len(log) :], start=snap)
    assert later.interrupts == [] and later.run_started is not None
    assert later.open_tool_calls == ["tc2"]
    # The result goes right after the assistant message that made the call.
    assert [m["id"] for m in later.messages] == ["u1", "think", "a1", "res1", "tc2"]
    assert later.messages[3] == {
        "id": "res1",
        "toolCallId": "tc1",
        "role": "tool",
        "content": "18C",
    }
    # Folding again from the same start gives the same answer: nothing was shared.
    assert fold_events(resumed[len(log) :], start=snap) == later
    assert snap.open_tool_calls == ["tc1", "tc2"]


def test_prelude_reopens_what_is_open_mid_segment() -> None:
    log: list[Event] = [
        RunStartedEvent(thread_id="t", run_id="r"),
        StepStartedEvent(step_name="plan"),
        TextMessageStartEvent(message_id="m1", role="assistant"),
        TextMessageContentEvent(message_id="m1", delta="Hel"),
        ToolCallStartEvent(tool_call_id="tc1", tool_call_name="search", parent_message_id="m1"),
        ToolCallArgsEvent(tool_call_id="tc1", delta='{"q":'),
    ]
    rest: list[Event] = [
        ToolCallArgsEvent(tool_call_id="tc1", delta='"x"}'),
        ToolCallEndEvent(tool_call_id="tc1"),
        TextMessageContentEvent(message_id="m1", delta="lo"),
        TextMessageEndEvent(message_id="m1"),
        StepFinishedEvent(step_name="plan"),
        RunFinishedEvent(thread_id="t", run_id="r"),
    ]
    prelude = prelude_events(fold_events(log))
    assert [type(e).__name__ for e in prelude] == [
        "RunStartedEvent",
        "MessagesSnapshotEvent",
        "StepStartedEvent",
        "TextMessageStartEvent",
        "ToolCallStartEvent",
    ]
    joined = prelude + rest
    verify_prefixes(wire(joined))
    assert same_state(fold_events(joined), fold_events(log + rest))
    assert fold_events(joined).messages[0]["content"] == "Hello"


def test_upto_before_the_start_is_refused() -> None:
    start = fold_events([RunStartedEvent(thread_id="t", run_id="r")])
    with pytest.raises(ValueError):
        fold_events([], upto=0, start=start)


def test_verify_events_accepts_a_prelude_only_stream_as_a_prefix() -> None:
    log: list[Event] = [RunStartedEvent(thread_id="t", run_id="r"), CustomEvent(name="x", value=1)]
    verify_events(wire(prelude_events(fold_events(log))))
