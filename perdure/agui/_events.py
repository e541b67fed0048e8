"""AG-UI 1.0 wire events as msgspec Structs.

Every run-log record is one of these events. Python attributes are snake_case, the wire
(JSON and msgpack alike) is camelCase, and the ``type`` discriminator carries the AG-UI
event type string (``"RUN_STARTED"`` ...). Optional fields left at ``None`` are omitted
from the encoding, which is what the AG-UI schemas require (they reject ``null`` for an
absent optional field).

The field sets mirror ``ag_ui.core`` (the ``ag-ui-protocol`` 1.0 pydantic models) and
``@ag-ui/core`` 1.0. Nested conversation objects (messages, tools, context, content
parts, JSON-patch operations, resume entries) are carried as plain ``dict`` values in
their wire shape rather than modelled as structs.

This module is the lowest layer of perdure: it imports nothing else from perdure, so
storage (which keeps :class:`TokenUsage` in completions) may depend on it.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal, get_args

import msgspec

__all__ = [
    "EVENT_CLASSES",
    "MAX_EVENT_BYTES",
    "PROTOCOL_VERSION",
    "TYPE_OF",
    "ActivityDeltaEvent",
    "ActivitySnapshotEvent",
    "AgentInput",
    "BaseEvent",
    "CustomEvent",
    "Event",
    "EventTypeName",
    "Interrupt",
    "MessagesSnapshotEvent",
    "RawEvent",
    "ReasoningEncryptedValueEvent",
    "ReasoningEndEvent",
    "ReasoningMessageChunkEvent",
    "ReasoningMessageContentEvent",
    "ReasoningMessageEndEvent",
    "ReasoningMessageStartEvent",
    "ReasoningStartEvent",
    "RunErrorEvent",
    "RunFinishedCancelledOutcome",
    "RunFinishedEvent",
    "RunFinishedInterruptOutcome",
    "RunFinishedOutcome",
    "RunFinishedSuccessOutcome",
    "RunStartedEvent",
    "StateDeltaEvent",
    "StateSnapshotEvent",
    "StepFinishedEvent",
    "StepStartedEvent",
    "SubagentErrorEvent",
    "SubagentFinishedEvent",
    "SubagentFinishedOutcome",
    "SubagentFinishedSuccessOutcome",
    "SubagentFinishedSuspendedOutcome",
    "SubagentStartedEvent",
    "TextMessageChunkEvent",
    "TextMessageContentEvent",
    "TextMessageEndEvent",
    "TextMessageRole",
    "TextMessageStartEvent",
    "TokenCount",
    "TokenUsage",
    "ToolCallArgsEvent",
    "ToolCallChunkEvent",
    "ToolCallEndEvent",
    "ToolCallResultEvent",
    "ToolCallStartEvent",
]

PROTOCOL_VERSION: Final = "1.0"
"""The AG-UI protocol version these structs follow."""

MAX_EVENT_BYTES: Final = 240 * 1024
"""Upper bound for one event's JSON encoding; large deltas are split to stay under it."""

_MAX_SAFE_INT: Final = 2**53 - 1

Timestamp = Annotated[int, msgspec.Meta(ge=-_MAX_SAFE_INT, le=_MAX_SAFE_INT)]
TokenCount = Annotated[int, msgspec.Meta(ge=0, le=_MAX_SAFE_INT)]


class TokenUsage(
    msgspec.Struct, gc=False, omit_defaults=True, rename="camel", kw_only=True, frozen=True
):
    """Token counts for one provider and model (AG-UI ``TokenUsage``, camelCase on the wire)."""

    provider: str | None = None
    model: str | None = None
    input_tokens: TokenCount | None = None
    output_tokens: TokenCount | None = None
    total_tokens: TokenCount | None = None
    reasoning_tokens: TokenCount | None = None
    cached_input_tokens: TokenCount | None = None
    cache_write_input_tokens: TokenCount | None = None


JSONObject = dict[str, Any]
TextMessageRole = Literal["developer", "system", "assistant", "user"]
"""Roles a streamed text message may take (absent means ``assistant``)."""


# Default factories that are *not* ``list``/``str``-builtins: msgspec's ``omit_defaults``
# only drops a factory default when the factory is a builtin collection type, so fields
# using these are always written. That is how wire-required fields get a Python default.
def _empty_str() -> str:
    return ""


def _empty_list() -> list[JSONObject]:
    return []


def _reasoning_role() -> Literal["reasoning"]:
    return "reasoning"


class _Wire(
    msgspec.Struct, rename="camel", omit_defaults=True, kw_only=True, frozen=True, gc=False
):
    """Common config: camelCase wire names, omitted defaults, keyword-only, immutable."""


# --------------------------------------------------------------------------- shared parts


class Interrupt(_Wire, frozen=True, kw_only=True):
    """A reason the run paused (``RUN_FINISHED`` outcome ``interrupt``).

    ``reason`` is an open string; perdure uses ``tool_call``, ``confirmation``,
    ``input_required`` and ``event``. ``expires_at`` is an ISO-8601 timestamp string.
    """

    id: str
    reason: str
    message: str | None = None
    tool_call_id: str | None = None
    response_schema: JSONObject | None = None
    expires_at: str | None = None
    metadata: JSONObject | None = None
    subagent_run_id: str | None = None


class _RunOutcome(_Wire, tag_field="type", frozen=True, kw_only=True):
    """Base of the RUN_FINISHED outcomes (tagged on ``type``)."""


class RunFinishedSuccessOutcome(_RunOutcome, tag="success", frozen=True, kw_only=True):
    """The run completed; ``pending_tool_call_ids`` are calls left for the client."""

    pending_tool_call_ids: list[str] | None = None


class RunFinishedInterruptOutcome(_RunOutcome, tag="interrupt", frozen=True, kw_only=True):
    """The run paused on one or more interrupts; a resume is a new RUN_STARTED."""

    interrupts: Annotated[list[Interrupt], msgspec.Meta(min_length=1)]


class RunFinishedCancelledOutcome(_RunOutcome, tag="cancelled", frozen=True, kw_only=True):
    """The run was cancelled."""


RunFinishedOutcome = (
    RunFinishedSuccessOutcome | RunFinishedInterruptOutcome | RunFinishedCancelledOutcome
)


class _SubagentOutcome(_Wire, tag_field="type", frozen=True, kw_only=True):
    """Base of the SUBAGENT_FINISHED outcomes (tagged on ``type``)."""


class SubagentFinishedSuccessOutcome(_SubagentOutcome, tag="success", frozen=True, kw_only=True):
    """The subagent completed."""


class SubagentFinishedSuspendedOutcome(
    _SubagentOutcome, tag="suspended", frozen=True, kw_only=True
):
    """The subagent stopped on interrupts (named by id) raised in the parent run."""

    interrupt_ids: list[str] | None = None


SubagentFinishedOutcome = SubagentFinishedSuccessOutcome | SubagentFinishedSuspendedOutcome


class AgentInput(_Wire, frozen=True, kw_only=True):
    """Input of an agent run, shaped like AG-UI ``RunAgentInput``.

    ``thread_id`` and ``run_id`` default to ``""`` so that ``AgentInput(messages=[...])``
    works. The runtime sets them to the run's conversation id and run id when the run
    starts, whatever the caller passed: the stored input and what the body receives
    always name the run itself. The input is not echoed on ``RUN_STARTED`` (its
    message history could exceed the event cap; ``rt.get(run_id).input`` has it).
    ``thread_id``, ``run_id``, ``messages``, ``tools`` and ``context`` are always
    encoded (the wire requires them); the other fields are omitted while ``None``.
    Messages, tools, context and resume entries are wire-shaped dicts (camelCase keys),
    e.g. ``{"id": "m1", "role": "user", "content": "hi"}`` and
    ``{"interruptId": "i1", "status": "resolved", "payload": ...}``.
    """

    thread_id: str = msgspec.field(default_factory=_empty_str)
    run_id: str = msgspec.field(default_factory=_empty_str)
    parent_run_id: str | None = None
    state: Any = None
    messages: list[JSONObject] = msgspec.field(default_factory=_empty_list)
    tools: list[JSONObject] = msgspec.field(default_factory=_empty_list)
    context: list[JSONObject] = msgspec.field(default_factory=_empty_list)
    forwarded_props: Any = None
    resume: list[JSONObject] | None = None
    protocol_version: str | None = None


# --------------------------------------------------------------------------------- events


class BaseEvent(_Wire, tag_field="type", frozen=True, kw_only=True):
    """Fields every event carries. Never encoded itself; use a concrete event."""

    timestamp: Timestamp | None = None
    raw_event: Any = None
    metadata: JSONObject | None = None


class _AttributableEvent(BaseEvent, frozen=True, kw_only=True):
    """An event that may belong to a subagent invocation."""

    subagent_run_id: str | None = None


# Run lifecycle (not attributable).


class RunStartedEvent(BaseEvent, tag="RUN_STARTED", frozen=True, kw_only=True):
    """A run (or the resumption of a paused run) started."""

    thread_id: str
    run_id: str
    protocol_version: str | None = None
    parent_run_id: str | None = None
    input: AgentInput | None = None


class RunFinishedEvent(BaseEvent, tag="RUN_FINISHED", frozen=True, kw_only=True):
    """A run ended: completed, paused on interrupts, or cancelled (see ``outcome``)."""

    thread_id: str
    run_id: str
    result: Any = None
    outcome: RunFinishedOutcome | None = None
    usage: list[TokenUsage] | None = None


class RunErrorEvent(BaseEvent, tag="RUN_ERROR", frozen=True, kw_only=True):
    """A run failed. Terminal."""

    message: str
    code: str | None = None
    usage: list[TokenUsage] | None = None


class StepStartedEvent(_AttributableEvent, tag="STEP_STARTED", frozen=True, kw_only=True):
    """A named step (workflow node) started."""

    step_name: str


class StepFinishedEvent(_AttributableEvent, tag="STEP_FINISHED", frozen=True, kw_only=True):
    """A named step (workflow node) finished."""

    step_name: str


# Text messages.


class TextMessageStartEvent(
    _AttributableEvent, tag="TEXT_MESSAGE_START", frozen=True, kw_only=True
):
    """Opens a streamed text message."""

    message_id: str
    role: TextMessageRole | None = None
    name: str | None = None


class TextMessageContentEvent(
    _AttributableEvent, tag="TEXT_MESSAGE_CONTENT", frozen=True, kw_only=True
):
    """Appends ``delta`` to an open text message."""

    message_id: str
    delta: str


class TextMessageEndEvent(_AttributableEvent, tag="TEXT_MESSAGE_END", frozen=True, kw_only=True):
    """Closes a streamed text message."""

    message_id: str


class TextMessageChunkEvent(
    _AttributableEvent, tag="TEXT_MESSAGE_CHUNK", frozen=True, kw_only=True
):
    """Shorthand for start/content/end; expanded by the client."""

    message_id: str | None = None
    role: TextMessageRole | None = None
    delta: str | None = None
    name: str | None = None


# Tool calls.


class ToolCallStartEvent(_AttributableEvent, tag="TOOL_CALL_START", frozen=True, kw_only=True):
    """Opens a streamed tool call."""

    tool_call_id: str
    tool_call_name: str
    parent_message_id: str | None = None


class ToolCallArgsEvent(_AttributableEvent, tag="TOOL_CALL_ARGS", frozen=True, kw_only=True):
    """Appends ``delta`` to an open tool call's JSON argument string."""

    tool_call_id: str
    delta: str


class ToolCallEndEvent(_AttributableEvent, tag="TOOL_CALL_END", frozen=True, kw_only=True):
    """Closes a streamed tool call."""

    tool_call_id: str


class ToolCallChunkEvent(_AttributableEvent, tag="TOOL_CALL_CHUNK", frozen=True, kw_only=True):
    """Shorthand for start/args/end; expanded by the client."""

    tool_call_id: str | None = None
    tool_call_name: str | None = None
    parent_message_id: str | None = None
    delta: str | None = None


class ToolCallResultEvent(_AttributableEvent, tag="TOOL_CALL_RESULT", frozen=True, kw_only=True):
    """A tool's result, materialised as tool message ``message_id``.

    ``content`` is text or a list of wire-shaped content parts.
    """

    message_id: str
    tool_call_id: str
    content: str | list[JSONObject]
    role: Literal["tool"] | None = None


# State, messages, activity.


class StateSnapshotEvent(_AttributableEvent, tag="STATE_SNAPSHOT", frozen=True, kw_only=True):
    """The complete shared state."""

    snapshot: Any


class StateDeltaEvent(_AttributableEvent, tag="STATE_DELTA", frozen=True, kw_only=True):
    """An RFC 6902 JSON patch (list of operation dicts) against the shared state."""

    delta: list[JSONObject]


class MessagesSnapshotEvent(BaseEvent, tag="MESSAGES_SNAPSHOT", frozen=True, kw_only=True):
    """The complete conversation (wire-shaped message dicts, in order)."""

    messages: list[JSONObject]


class ActivitySnapshotEvent(_AttributableEvent, tag="ACTIVITY_SNAPSHOT", frozen=True, kw_only=True):
    """Structured progress rendered as its own widget (an activity message)."""

    message_id: str
    activity_type: str
    content: JSONObject
    replace: bool | None = None


class ActivityDeltaEvent(_AttributableEvent, tag="ACTIVITY_DELTA", frozen=True, kw_only=True):
    """A JSON patch against an activity message's content."""

    message_id: str
    activity_type: str
    patch: list[JSONObject]


# Pass-through.


class RawEvent(_AttributableEvent, tag="RAW", frozen=True, kw_only=True):
    """A provider-native event carried verbatim."""

    event: Any
    source: str | None = None


class CustomEvent(_AttributableEvent, tag="CUSTOM", frozen=True, kw_only=True):
    """Application-defined event (perdure: job progress and other data)."""

    name: str
    value: Any


# Reasoning.


class ReasoningStartEvent(_AttributableEvent, tag="REASONING_START", frozen=True, kw_only=True):
    """Opens a reasoning span."""

    message_id: str


class ReasoningMessageStartEvent(
    _AttributableEvent, tag="REASONING_MESSAGE_START", frozen=True, kw_only=True
):
    """Opens a reasoning message (``role`` is always written: the wire requires it)."""

    message_id: str
    role: Literal["reasoning"] = msgspec.field(default_factory=_reasoning_role)


class ReasoningMessageContentEvent(
    _AttributableEvent, tag="REASONING_MESSAGE_CONTENT", frozen=True, kw_only=True
):
    """Appends ``delta`` to an open reasoning message."""

    message_id: str
    delta: str


class ReasoningMessageEndEvent(
    _AttributableEvent, tag="REASONING_MESSAGE_END", frozen=True, kw_only=True
):
    """Closes a reasoning message."""

    message_id: str


class ReasoningMessageChunkEvent(
    _AttributableEvent, tag="REASONING_MESSAGE_CHUNK", frozen=True, kw_only=True
):
    """Shorthand for reasoning message start/content/end."""

    message_id: str | None = None
    delta: str | None = None


class ReasoningEndEvent(_AttributableEvent, tag="REASONING_END", frozen=True, kw_only=True):
    """Closes a reasoning span."""

    message_id: str


class ReasoningEncryptedValueEvent(
    _AttributableEvent, tag="REASONING_ENCRYPTED_VALUE", frozen=True, kw_only=True
):
    """An opaque provider artefact attached to a message or tool call."""

    subtype: Literal["tool-call", "message"]
    entity_id: str
    encrypted_value: str


# Subagents (``subagent_run_id`` is the invocation's identity here, so required).


class SubagentStartedEvent(BaseEvent, tag="SUBAGENT_STARTED", frozen=True, kw_only=True):
    """A subagent invocation started."""

    subagent_run_id: str
    name: str
    description: str | None = None
    parent_subagent_run_id: str | None = None
    parent_tool_call_id: str | None = None
    parent_message_id: str | None = None


class SubagentFinishedEvent(BaseEvent, tag="SUBAGENT_FINISHED", frozen=True, kw_only=True):
    """A subagent invocation finished."""

    subagent_run_id: str
    result: Any = None
    outcome: SubagentFinishedOutcome | None = None


class SubagentErrorEvent(BaseEvent, tag="SUBAGENT_ERROR", frozen=True, kw_only=True):
    """A subagent invocation failed."""

    subagent_run_id: str
    message: str
    code: str | None = None


Event = (
    RunStartedEvent
    | RunFinishedEvent
    | RunErrorEvent
    | StepStartedEvent
    | StepFinishedEvent
    | TextMessageStartEvent
    | TextMessageContentEvent
    | TextMessageEndEvent
    | TextMessageChunkEvent
    | ToolCallStartEvent
    | ToolCallArgsEvent
    | ToolCallEndEvent
    | ToolCallChunkEvent
    | ToolCallResultEvent
    | StateSnapshotEvent
    | StateDeltaEvent
    | MessagesSnapshotEvent
    | ActivitySnapshotEvent
    | ActivityDeltaEvent
    | RawEvent
    | CustomEvent
    | ReasoningStartEvent
    | ReasoningMessageStartEvent
    | ReasoningMessageContentEvent
    | ReasoningMessageEndEvent
    | ReasoningMessageChunkEvent
    | ReasoningEndEvent
    | ReasoningEncryptedValueEvent
    | SubagentStartedEvent
    | SubagentFinishedEvent
    | SubagentErrorEvent
)
"""Any AG-UI 1.0 event (tagged union on ``type``)."""

EventTypeName = Literal[
    "RUN_STARTED",
    "RUN_FINISHED",
    "RUN_ERROR",
    "STEP_STARTED",
    "STEP_FINISHED",
    "TEXT_MESSAGE_START",
    "TEXT_MESSAGE_CONTENT",
    "TEXT_MESSAGE_END",
    "TEXT_MESSAGE_CHUNK",
    "TOOL_CALL_START",
    "TOOL_CALL_ARGS",
    "TOOL_CALL_END",
    "TOOL_CALL_CHUNK",
    "TOOL_CALL_RESULT",
    "STATE_SNAPSHOT",
    "STATE_DELTA",
    "MESSAGES_SNAPSHOT",
    "ACTIVITY_SNAPSHOT",
    "ACTIVITY_DELTA",
    "RAW",
    "CUSTOM",
    "REASONING_START",
    "REASONING_MESSAGE_START",
    "REASONING_MESSAGE_CONTENT",
    "REASONING_MESSAGE_END",
    "REASONING_MESSAGE_CHUNK",
    "REASONING_END",
    "REASONING_ENCRYPTED_VALUE",
    "SUBAGENT_STARTED",
    "SUBAGENT_FINISHED",
    "SUBAGENT_ERROR",
]
"""The wire ``type`` strings, one per event struct."""

EVENT_CLASSES: Final[dict[str, type[BaseEvent]]] = {
    str(cls.__struct_config__.tag): cls for cls in get_args(Event)
}
"""Wire ``type`` string -> event struct class."""

TYPE_OF: Final[dict[type[BaseEvent], str]] = {cls: tag for tag, cls in EVENT_CLASSES.items()}
"""Event struct class -> wire ``type`` string."""
