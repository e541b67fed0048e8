"""What a log adds up to: the pure fold of AG-UI events into a snapshot (R22).

:class:`LogFolder` applies events one at a time, the way the official
``@ag-ui/client`` applies them to an agent (``defaultApplyEvents``): text,
reasoning and activity messages, tool calls with their streamed arguments and
their results, the shared state (``STATE_SNAPSHOT`` replaced, ``STATE_DELTA``
patched with RFC 6902 JSON Patch through the maintained ``jsonpatch`` library),
``MESSAGES_SNAPSHOT`` merged as the client merges it. A patch that does not
apply is skipped, as the client skips it (it warns and keeps the old state).

The fold also keeps what a client needs to *join* a log in the middle of a
segment (a ``RUN_STARTED`` .. ``RUN_FINISHED``/``RUN_ERROR`` stretch): the
segment's ``RUN_STARTED`` and the opening event of every message, tool call,
step, reasoning span and subagent still open. :func:`prelude_events` turns a
snapshot into the few events that bring a fresh client to the same point, so
what it receives from there on passes the AG-UI verifier and ends in the same
messages and state as a client that saw the whole log.

One case no prelude can mend: a ``MESSAGES_SNAPSHOT`` that leaves out a message
or tool call still streaming drops it for every client (the client ignores the
deltas that follow), while a joining client, whose prelude reopens it, would see
it again. Producers snapshot between messages (perdure's agents do).

Folding is pure and incremental: ``fold_events(a + b)`` equals
``fold_events(b, start=fold_events(a))``, and a snapshot never shares mutable
data with the events it came from or with the snapshot it started from.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import jsonpatch
import jsonpointer
import msgspec

from ._events import (
    ActivityDeltaEvent,
    ActivitySnapshotEvent,
    Event,
    Interrupt,
    MessagesSnapshotEvent,
    ReasoningEncryptedValueEvent,
    ReasoningEndEvent,
    ReasoningMessageChunkEvent,
    ReasoningMessageContentEvent,
    ReasoningMessageEndEvent,
    ReasoningMessageStartEvent,
    ReasoningStartEvent,
    RunErrorEvent,
    RunFinishedEvent,
    RunFinishedInterruptOutcome,
    RunStartedEvent,
    StateDeltaEvent,
    StateSnapshotEvent,
    StepFinishedEvent,
    StepStartedEvent,
    SubagentErrorEvent,
    SubagentFinishedEvent,
    SubagentStartedEvent,
    TextMessageChunkEvent,
    TextMessageContentEvent,
    TextMessageEndEvent,
    TextMessageStartEvent,
    ToolCallArgsEvent,
    ToolCallChunkEvent,
    ToolCallEndEvent,
    ToolCallResultEvent,
    ToolCallStartEvent,
)

__all__ = ["LogFolder", "LogSnapshot", "fold_events", "prelude_events"]

JSONObject = dict[str, Any]


class LogSnapshot(msgspec.Struct, kw_only=True, frozen=True):
    """A run log folded up to ``after_event_id``.

    Field names are snake_case (a perdure record); the messages, interrupts and
    events inside are AG-UI wire objects (camelCase).

    - ``after_event_id``: how many events were folded (event ids are 1..n).
    - ``messages``: the conversation, as AG-UI wire message dicts, in order.
    - ``state``: the shared state; ``None`` while no state event (nor a seeded
      state) was seen.
    - ``open_tool_calls``: ids of the tool calls in ``messages`` that have no
      result message yet, in order (streaming or waiting for a client's result).
    - ``interrupts``: the open interrupts when the log's last segment ended with
      an interrupt ``RUN_FINISHED``; empty otherwise.
    - ``run_started``: the ``RUN_STARTED`` of the segment still open (without its
      ``input``, whose messages are in ``messages``), ``None`` between segments
      (nothing started yet, or the last one ended).
    - ``open_items``: the opening event of each text message, reasoning message,
      reasoning span, tool call, step and subagent still open, in log order.
    """

    after_event_id: int = 0
    messages: list[JSONObject] = msgspec.field(default_factory=list)
    state: Any = None
    open_tool_calls: list[str] = msgspec.field(default_factory=list)
    interrupts: list[Interrupt] = msgspec.field(default_factory=list)
    run_started: RunStartedEvent | None = None
    open_items: list[Event] = msgspec.field(default_factory=list)


# opening event type -> (item kind, id attribute); closing event type -> the same key.
_OPENS: dict[type, tuple[str, str]] = {
    TextMessageStartEvent: ("message", "message_id"),
    ToolCallStartEvent: ("tool", "tool_call_id"),
    StepStartedEvent: ("step", "step_name"),
    ReasoningStartEvent: ("reasoning", "message_id"),
    ReasoningMessageStartEvent: ("reasoning_message", "message_id"),
    SubagentStartedEvent: ("subagent", "subagent_run_id"),
}
_CLOSES: dict[type, tuple[str, str]] = {
    TextMessageEndEvent: ("message", "message_id"),
    ToolCallEndEvent: ("tool", "tool_call_id"),
    StepFinishedEvent: ("step", "step_name"),
    ReasoningEndEvent: ("reasoning", "message_id"),
    ReasoningMessageEndEvent: ("reasoning_message", "message_id"),
    SubagentFinishedEvent: ("subagent", "subagent_run_id"),
    SubagentErrorEvent: ("subagent", "subagent_run_id"),
}


def _merge_metadata(target: JSONObject, event: Any) -> None:
    """Carry an event's ``metadata`` onto the message or tool call it touches."""
    metadata = event.metadata
    if metadata is not None:
        merged = dict(target.get("metadata") or {})
        merged.update(copy.deepcopy(metadata))
        target["metadata"] = merged


def _attribute(target: JSONObject, event: Any) -> None:
    """Tag a new message with the event's subagent, as the client does."""
    sub = getattr(event, "subagent_run_id", None)
    if sub is not None:
        target["subagentRunId"] = sub


class LogFolder:
    """Incremental fold of AG-UI events; :meth:`feed` them, read :meth:`snapshot`.

    ``start`` continues from an earlier snapshot (its data is copied, never shared).
    """

    def __init__(self, start: LogSnapshot | None = None) -> None:
        start = start or LogSnapshot()
        self.after_event_id = start.after_event_id
        self._messages: list[JSONObject] = copy.deepcopy(start.messages)
        self._state: Any = copy.deepcopy(start.state)
        self._interrupts: list[Interrupt] = list(start.interrupts)
        self._segment = start.run_started
        self._open: dict[tuple[str, Any], Event] = {}
        for event in start.open_items:
            kind, attr = _OPENS[type(event)]
            self._open[(kind, getattr(event, attr))] = event
        # The chunk shorthand continues the last chunked message / tool call.
        self._chunk_message: str | None = None
        self._chunk_tool: str | None = None
        self._chunk_reasoning: str | None = None

    # -- reading ---------------------------------------------------------------------------

    def snapshot(self) -> LogSnapshot:
        """The fold so far (a deep copy: later feeding does not change it)."""
        messages = copy.deepcopy(self._messages)
        return LogSnapshot(
            after_event_id=self.after_event_id,
            messages=messages,
            state=copy.deepcopy(self._state),
            open_tool_calls=_open_tool_calls(messages),
            interrupts=list(self._interrupts),
            run_started=self._segment,
            open_items=list(self._open.values()),
        )

    # -- feeding ---------------------------------------------------------------------------

    def feed_all(self, events: Iterable[Event]) -> None:
        for event in events:
            self.feed(event)

    def feed(self, event: Event) -> None:
        """Apply one event (unknown kinds, ``CUSTOM`` and ``RAW`` change nothing)."""
        self.after_event_id += 1
        kind = type(event)
        opens = _OPENS.get(kind)
        if opens is not None:
            self._open[(opens[0], getattr(event, opens[1]))] = event
        else:
            closes = _CLOSES.get(kind)
            if closes is not None:
                self._open.pop((closes[0], getattr(event, closes[1])), None)
        handler = _HANDLERS.get(kind)
        if handler is not None:
            handler(self, event)

    # -- messages ----------------------------------------------------------------------------

    def _find(self, message_id: Any) -> JSONObject | None:
        return next((m for m in self._messages if m.get("id") == message_id), None)

    def _find_tool_call(self, tool_call_id: Any) -> JSONObject | None:
        for message in self._messages:
            for call in message.get("toolCalls") or ():
                if isinstance(call, dict) and call.get("id") == tool_call_id:
                    return call
        return None

    def _text_start(self, event: TextMessageStartEvent) -> None:
        message = self._find(event.message_id)
        if message is None:
            message = {"id": event.message_id, "role": event.role or "assistant", "content": ""}
            if event.name is not None:
                message["name"] = event.name
            _attribute(message, event)
            self._messages.append(message)
        if message.get("role") != "activity":
            _merge_metadata(message, event)

    def _text_append(self, message_id: Any, delta: str, event: Any) -> None:
        message = self._find(message_id)
        if message is None or message.get("role") == "activity":
            return
        content = message.get("content")
        message["content"] = (content if isinstance(content, str) else "") + delta
        _merge_metadata(message, event)

    def _text_content(self, event: TextMessageContentEvent) -> None:
        self._text_append(event.message_id, event.delta, event)

    def _text_end(self, event: TextMessageEndEvent | ReasoningMessageEndEvent) -> None:
        message = self._find(event.message_id)
        if message is not None and message.get("role") != "activity":
            _merge_metadata(message, event)

    def _text_chunk(self, event: TextMessageChunkEvent) -> None:
        message_id = event.message_id if event.message_id is not None else self._chunk_message
        if message_id is None:
            return
        if event.message_id is not None and self._find(message_id) is None:
            self._text_start(
                TextMessageStartEvent(
                    message_id=message_id,
                    role=event.role or "assistant",
                    name=event.name,
                    subagent_run_id=event.subagent_run_id,
                )
            )
        self._chunk_message = message_id
        if event.delta is not None:
            self._text_append(message_id, event.delta, event)

    def _tool_start(self, event: ToolCallStartEvent) -> None:
        existing = self._find_tool_call(event.tool_call_id)
        if existing is not None:
            existing["function"]["name"] = event.tool_call_name
            _merge_metadata(existing, event)
            return
        known = {m.get("id") for m in self._messages}
        parent = self._tool_parent(event.parent_message_id, event.tool_call_id)
        if parent.get("id") not in known:
            _attribute(parent, event)
        call: JSONObject = {
            "id": event.tool_call_id,
            "type": "function",
            "function": {"name": event.tool_call_name, "arguments": ""},
        }
        _merge_metadata(call, event)
        parent.setdefault("toolCalls", []).append(call)

    def _tool_parent(self, parent_id: str | None, tool_call_id: str) -> JSONObject:
        """The assistant message a new tool call goes into (created if need be)."""
        if parent_id is not None:
            found = self._find(parent_id)
            if found is not None and found.get("role") == "assistant":
                return found
            new: JSONObject = {
                "id": tool_call_id if found is not None else parent_id,
                "role": "assistant",
                "toolCalls": [],
            }
        else:
            new = {"id": tool_call_id, "role": "assistant", "toolCalls": []}
        self._messages.append(new)
        return new

    def _tool_args(self, event: ToolCallArgsEvent) -> None:
        call = self._find_tool_call(event.tool_call_id)
        if call is not None:
            call["function"]["arguments"] += event.delta
            _merge_metadata(call, event)

    def _tool_end(self, event: ToolCallEndEvent) -> None:
        call = self._find_tool_call(event.tool_call_id)
        if call is not None:
            _merge_metadata(call, event)

    def _tool_chunk(self, event: ToolCallChunkEvent) -> None:
        tool_call_id = event.tool_call_id if event.tool_call_id is not None else self._chunk_tool
        if tool_call_id is None:
            return
        if event.tool_call_id is not None and self._find_tool_call(tool_call_id) is None:
            if event.tool_call_name is None:
                return  # the client refuses a first chunk without a name
            self._tool_start(
                ToolCallStartEvent(
                    tool_call_id=tool_call_id,
                    tool_call_name=event.tool_call_name,
                    parent_message_id=event.parent_message_id,
                    subagent_run_id=event.subagent_run_id,
                )
            )
        self._chunk_tool = tool_call_id
        if event.delta is not None:
            call = self._find_tool_call(tool_call_id)
            if call is not None:
                call["function"]["arguments"] += event.delta

    def _tool_result(self, event: ToolCallResultEvent) -> None:
        message: JSONObject = {
            "id": event.message_id,
            "toolCallId": event.tool_call_id,
            "role": event.role or "tool",
            "content": copy.deepcopy(event.content),
        }
        _attribute(message, event)
        _merge_metadata(message, event)
        owner = next(
            (
                i
                for i, m in enumerate(self._messages)
                if m.get("role") == "assistant"
                and any(
                    isinstance(c, dict) and c.get("id") == event.tool_call_id
                    for c in m.get("toolCalls") or ()
                )
            ),
            None,
        )
        if owner is None:
            self._messages.append(message)
            return
        at = owner + 1
        while at < len(self._messages) and self._messages[at].get("role") == "tool":
            at += 1
        self._messages.insert(at, message)

    def _reasoning_start(self, event: ReasoningMessageStartEvent) -> None:
        message = self._find(event.message_id)
        if message is None:
            message = {"id": event.message_id, "role": "reasoning", "content": ""}
            _attribute(message, event)
            self._messages.append(message)
        if message.get("role") != "activity":
            _merge_metadata(message, event)

    def _reasoning_content(self, event: ReasoningMessageContentEvent) -> None:
        self._text_append(event.message_id, event.delta, event)

    def _reasoning_end(self, event: ReasoningMessageEndEvent) -> None:
        self._text_end(event)

    def _reasoning_chunk(self, event: ReasoningMessageChunkEvent) -> None:
        message_id = event.message_id if event.message_id is not None else self._chunk_reasoning
        if message_id is None:
            return
        if event.message_id is not None and self._find(message_id) is None:
            self._reasoning_start(
                ReasoningMessageStartEvent(
                    message_id=message_id, subagent_run_id=event.subagent_run_id
                )
            )
        self._chunk_reasoning = message_id
        if event.delta is not None:
            self._text_append(message_id, event.delta, event)

    def _encrypted_value(self, event: ReasoningEncryptedValueEvent) -> None:
        if event.subtype == "tool-call":
            target = self._find_tool_call(event.entity_id)
        else:
            target = self._find(event.entity_id)
        if target is not None:
            target["encryptedValue"] = event.encrypted_value

    def _messages_snapshot(self, event: MessagesSnapshotEvent) -> None:
        incoming = [
            {k: v for k, v in m.items() if not (k == "subagentRunId" and v is None)}
            if isinstance(m, dict)
            else m
            for m in copy.deepcopy(event.messages)
        ]
        by_id = {m.get("id"): m for m in incoming if isinstance(m, dict)}
        has_activity = any(isinstance(m, dict) and m.get("role") == "activity" for m in incoming)
        has_reasoning = any(isinstance(m, dict) and m.get("role") == "reasoning" for m in incoming)

        def kept(m: JSONObject) -> bool:
            # Like the client: a snapshot without activity (reasoning) messages leaves the
            # ones it already has; everything else it does not name is dropped.
            if m.get("id") in by_id:
                return True
            role = m.get("role")
            return (role == "activity" and not has_activity) or (
                role == "reasoning" and not has_reasoning
            )

        merged = [by_id.get(m.get("id"), m) for m in self._messages if kept(m)]
        present = {m.get("id") for m in merged}
        merged.extend(m for m in incoming if not isinstance(m, dict) or m.get("id") not in present)
        self._messages = merged

    def _activity_snapshot(self, event: ActivitySnapshotEvent) -> None:
        index = next(
            (i for i, m in enumerate(self._messages) if m.get("id") == event.message_id), None
        )
        new: JSONObject = {
            "id": event.message_id,
            "role": "activity",
            "activityType": event.activity_type,
            "content": copy.deepcopy(event.content),
        }
        _attribute(new, event)
        if index is None:
            self._messages.append(new)
        elif event.replace is not False:
            self._messages[index] = new

    def _activity_delta(self, event: ActivityDeltaEvent) -> None:
        message = self._find(event.message_id)
        if message is None or message.get("role") != "activity":
            return
        patched = _apply_patch(message.get("content") or {}, event.patch)
        if patched is not _FAILED:
            message["content"] = patched
            message["activityType"] = event.activity_type

    # -- state and the run lifecycle -------------------------------------------------------

    def _state_snapshot(self, event: StateSnapshotEvent) -> None:
        self._state = copy.deepcopy(event.snapshot)

    def _state_delta(self, event: StateDeltaEvent) -> None:
        patched = _apply_patch({} if self._state is None else self._state, event.delta)
        if patched is not _FAILED:
            self._state = patched

    def _run_started(self, event: RunStartedEvent) -> None:
        # Kept without its input: the input's messages are folded into the messages.
        self._segment = event if event.input is None else msgspec.structs.replace(event, input=None)
        self._interrupts = []
        self._open.clear()
        self._chunk_message = self._chunk_tool = self._chunk_reasoning = None
        if event.input is not None:
            present = {m.get("id") for m in self._messages}
            for message in copy.deepcopy(event.input.messages):
                if message.get("id") not in present:
                    self._messages.append(message)

    def _run_finished(self, event: RunFinishedEvent) -> None:
        self._segment = None
        self._open.clear()
        outcome = event.outcome
        self._interrupts = (
            list(outcome.interrupts) if isinstance(outcome, RunFinishedInterruptOutcome) else []
        )

    def _run_error(self, event: RunErrorEvent) -> None:
        self._segment = None
        self._open.clear()
        self._interrupts = []


_HANDLERS: dict[type, Any] = {
    TextMessageStartEvent: LogFolder._text_start,
    TextMessageContentEvent: LogFolder._text_content,
    TextMessageEndEvent: LogFolder._text_end,
    TextMessageChunkEvent: LogFolder._text_chunk,
    ToolCallStartEvent: LogFolder._tool_start,
    ToolCallArgsEvent: LogFolder._tool_args,
    ToolCallEndEvent: LogFolder._tool_end,
    ToolCallChunkEvent: LogFolder._tool_chunk,
    ToolCallResultEvent: LogFolder._tool_result,
    ReasoningMessageStartEvent: LogFolder._reasoning_start,
    ReasoningMessageContentEvent: LogFolder._reasoning_content,
    ReasoningMessageEndEvent: LogFolder._reasoning_end,
    ReasoningMessageChunkEvent: LogFolder._reasoning_chunk,
    ReasoningEncryptedValueEvent: LogFolder._encrypted_value,
    MessagesSnapshotEvent: LogFolder._messages_snapshot,
    ActivitySnapshotEvent: LogFolder._activity_snapshot,
    ActivityDeltaEvent: LogFolder._activity_delta,
    StateSnapshotEvent: LogFolder._state_snapshot,
    StateDeltaEvent: LogFolder._state_delta,
    RunStartedEvent: LogFolder._run_started,
    RunFinishedEvent: LogFolder._run_finished,
    RunErrorEvent: LogFolder._run_error,
}

_FAILED: Any = object()


def _apply_patch(document: Any, patch: list[JSONObject]) -> Any:
    """``document`` patched (a new object), or ``_FAILED`` if the patch does not apply."""
    try:
        return jsonpatch.apply_patch(document, copy.deepcopy(patch), in_place=False)
    except (
        jsonpatch.JsonPatchException,
        jsonpointer.JsonPointerException,
        TypeError,
        ValueError,
        KeyError,
        IndexError,
        AttributeError,
    ):
        return _FAILED


def _open_tool_calls(messages: list[JSONObject]) -> list[str]:
    answered = {m.get("toolCallId") for m in messages if m.get("role") == "tool"}
    out: list[str] = []
    for message in messages:
        for call in message.get("toolCalls") or ():
            if isinstance(call, dict):
                call_id = call.get("id")
                if isinstance(call_id, str) and call_id not in answered and call_id not in out:
                    out.append(call_id)
    return out


def fold_events(
    events: Iterable[Event], upto: int | None = None, *, start: LogSnapshot | None = None
) -> LogSnapshot:
    """Fold ``events`` (event ids ``start.after_event_id + 1`` ...) up to event id ``upto``.

    ``upto=None`` folds them all. ``start`` continues an earlier fold, so a reader
    can keep a snapshot current without re-reading the log from the beginning.
    """
    folder = LogFolder(start)
    if upto is not None and upto < folder.after_event_id:
        raise ValueError(f"upto={upto} is before the start snapshot ({folder.after_event_id})")
    for event in events:
        if upto is not None and folder.after_event_id >= upto:
            break
        folder.feed(event)
    return folder.snapshot()


def prelude_events(snapshot: LogSnapshot) -> list[Event]:
    """Events that bring a client joining after ``snapshot`` to the same point.

    Empty between segments (the next event the log holds is a ``RUN_STARTED``).
    In a segment: its ``RUN_STARTED``, a ``MESSAGES_SNAPSHOT`` of the conversation
    so far, a ``STATE_SNAPSHOT`` (when there is state), then the opening event of
    every item still open, so the log's next events continue what they reopen.
    """
    if snapshot.run_started is None:
        return []
    out: list[Event] = [
        snapshot.run_started,
        MessagesSnapshotEvent(messages=copy.deepcopy(snapshot.messages)),
    ]
    if snapshot.state is not None:
        out.append(StateSnapshotEvent(snapshot=copy.deepcopy(snapshot.state)))
    out.extend(snapshot.open_items)
    return out
