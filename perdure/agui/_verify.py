"""A Python port of the official AG-UI event-sequence verifier.

Mirrors ``verifyEvents`` from ``@ag-ui/client`` 1.0.0 (``src/verify/verify.ts``): the same
state machine, the same rules and the same error texts. Events are wire-shaped dicts
(camelCase keys, ``"type"``). The JavaScript distinction between an absent field
(``undefined``) and an explicit ``null`` is kept: a missing key is *absent*, ``None`` is
``null``.

The rules, in short:

* the first event must be ``RUN_STARTED`` (or ``RUN_ERROR``);
* ``RUN_STARTED`` is refused while a run is active; after ``RUN_FINISHED`` (any outcome,
  interrupts included) or ``RUN_ERROR`` it starts a new run and resets all tracking, which
  is how an interrupted run resumes;
* after ``RUN_FINISHED`` only ``RUN_STARTED`` or ``RUN_ERROR`` may follow; after
  ``RUN_ERROR`` only ``RUN_STARTED``;
* ``RUN_FINISHED`` is refused while a step, text message, reasoning message or span, tool
  call or subagent is open;
* text messages, tool calls, reasoning messages/spans and steps must be opened before
  they are continued or closed and may not be opened twice while open;
* subagent attribution (``subagentRunId``) of a continuation must agree with its opener,
  and ``subagentRunId: null`` is refused;
* ``*_CHUNK`` events pass unchecked (the client expands them before verifying).

Like the official 1.0.0 operator, :func:`verify_events` judges each event as it arrives
and so accepts an unfinished stream. :func:`verify_prefixes` (or ``require_complete``)
adds the end-of-stream rule of later upstream releases: the stream must contain a run and
its last run must have ended with ``RUN_FINISHED`` or ``RUN_ERROR``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

__all__ = [
    "AGUIProtocolError",
    "EventVerifier",
    "verify_events",
    "verify_prefixes",
]


class AGUIProtocolError(ValueError):
    """An event sequence the AG-UI verifier rejects.

    ``index`` is the position of the offending event (``None`` for an end-of-stream
    failure), ``event_type`` its ``type`` and ``reason`` the verifier's own message.
    """

    def __init__(self, reason: str, *, index: int | None = None, event_type: Any = None):
        self.reason = reason
        self.index = index
        self.event_type = event_type
        where = "at end of stream" if index is None else f"at event #{index} ({event_type})"
        super().__init__(f"{reason} [{where}]")


class _Undefined:
    """JavaScript ``undefined``: the value of an absent field."""

    _instance: _Undefined | None = None

    def __new__(cls) -> _Undefined:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "undefined"

    def __bool__(self) -> bool:
        return False


UNDEFINED: Final = _Undefined()


class _Fail(Exception):
    """Internal: carries the reason of a rejection up to ``feed``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Owner:
    """Who opened an entity: a subagent run id, or ``UNDEFINED`` for the parent agent."""

    __slots__ = ("subagent_run_id",)

    def __init__(self, subagent_run_id: Any) -> None:
        self.subagent_run_id = subagent_run_id


def _get(obj: Any, key: str) -> Any:
    """``obj.key`` with JavaScript semantics for a JSON value (absent -> ``UNDEFINED``)."""
    if isinstance(obj, Mapping):
        return obj.get(key, UNDEFINED)
    return UNDEFINED


class _Opaque:
    """Key for an object/array used as an id: JS compares those by identity."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def _k(value: Any) -> Any:
    """A hashable key with JS ``Set``/``Map`` identity semantics for a JSON value."""
    if isinstance(value, (Mapping, list)):
        return _Opaque(_js(value))
    return value


def _id(obj: Any, key: str) -> Any:
    """``obj.key`` as a ``Set``/``Map`` key (see :func:`_k`)."""
    return _k(_get(obj, key))


def _js(value: Any) -> str:
    """``String(value)`` / template-literal interpolation for a JSON value."""
    if isinstance(value, _Opaque):
        return value.text
    if value is UNDEFINED:
        return "undefined"
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list):
        return ",".join("" if v is None or v is UNDEFINED else _js(v) for v in value)
    if isinstance(value, Mapping):
        return "[object Object]"
    return str(value)


def _join(values: Iterable[Any]) -> str:
    """``Array.prototype.join(", ")`` (``null``/``undefined`` become empty strings)."""
    return ", ".join("" if v is None or v is UNDEFINED else _js(v) for v in values)


def _truthy(value: Any) -> bool:
    """JavaScript truthiness of a JSON value."""
    if value is UNDEFINED or value is None or value is False:
        return False
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value != 0
    if isinstance(value, str):
        return value != ""
    return True  # objects and arrays, even empty ones


def _owner_label(subagent_run_id: Any) -> str:
    if subagent_run_id is UNDEFINED or subagent_run_id is None:
        return "(the parent agent)"
    return _js(subagent_run_id)


_SUBAGENT_LIFECYCLE_OPTIONALS: Final[dict[str, tuple[str, ...]]] = {
    "SUBAGENT_STARTED": (
        "description",
        "parentSubagentRunId",
        "parentToolCallId",
        "parentMessageId",
    ),
    "SUBAGENT_FINISHED": ("outcome",),
    "SUBAGENT_ERROR": ("code",),
}


class EventVerifier:
    """Incremental verifier: :meth:`feed` one event at a time, then :meth:`check_complete`.

    The verifier is online (each decision depends only on the events before it), so a
    stream is acceptable at every prefix exactly when every :meth:`feed` succeeds. After
    a rejection the verifier is spent and refuses further events, like the errored
    observable it mirrors.
    """

    def __init__(self) -> None:
        self._index = 0
        self._failed: AGUIProtocolError | None = None
        # Insertion-ordered sets (dict keys), so error texts list ids in JS Set order.
        self._active_messages: dict[Any, None] = {}
        self._active_tool_calls: dict[Any, None] = {}
        self._active_reasoning_spans: dict[Any, None] = {}
        self._active_reasoning_messages: dict[Any, None] = {}
        self._owners_message: dict[Any, _Owner] = {}
        self._owners_tool_call: dict[Any, _Owner] = {}
        self._owners_activity: dict[Any, _Owner] = {}
        self._owners_reasoning: dict[Any, _Owner] = {}
        self._active_steps: dict[Any, dict[Any, None]] = {}
        self._active_subagents: dict[Any, None] = {}
        self._closed_subagents: dict[Any, None] = {}
        self._run_finished = False
        self._run_error = False
        self._first_event_received = False
        self._run_started = False

    # ------------------------------------------------------------------ public API

    @property
    def events_seen(self) -> int:
        """How many events were accepted."""
        return self._index

    @property
    def run_open(self) -> bool:
        """Whether a run has started and not yet ended with RUN_FINISHED / RUN_ERROR."""
        return self._run_started and not self._run_finished and not self._run_error

    def feed(self, event: Mapping[str, Any]) -> None:
        """Check one wire event; raise :class:`AGUIProtocolError` if the verifier refuses it."""
        if self._failed is not None:
            raise AGUIProtocolError(
                f"verifier already failed: {self._failed.reason}",
                index=self._index,
                event_type=_js(_get(event, "type")),
            )
        try:
            if not isinstance(event, Mapping):
                raise _Fail(f"Event is not an object: {event!r}")
            self._check(event)
        except _Fail as fail:
            self._failed = AGUIProtocolError(
                fail.reason, index=self._index, event_type=_js(_get(event, "type"))
            )
            raise self._failed from None
        self._index += 1

    def check_complete(self) -> None:
        """Refuse a stream that never started a run or whose last run did not end."""
        if self._failed is not None:
            raise self._failed
        if not self._first_event_received:
            raise AGUIProtocolError("The stream ended without emitting 'RUN_STARTED'.")
        if self.run_open:
            raise AGUIProtocolError(
                "The stream ended without 'RUN_FINISHED' or 'RUN_ERROR': the run is incomplete."
            )

    # --------------------------------------------------------------------- helpers

    def _reset_run_state(self) -> None:
        for d in (
            self._active_messages,
            self._active_tool_calls,
            self._active_reasoning_spans,
            self._active_reasoning_messages,
            self._owners_message,
            self._owners_tool_call,
            self._owners_activity,
            self._owners_reasoning,
            self._active_steps,
            self._active_subagents,
            self._closed_subagents,
        ):
            d.clear()
        self._run_finished = False
        self._run_error = False
        self._run_started = True

    def _steps_for(self, owner: Any) -> dict[Any, None]:
        return self._active_steps.setdefault(owner, {})

    def _any_steps_active(self) -> bool:
        return any(self._active_steps.values())

    def _seed_owners_from_messages(self, raw_messages: Any, authoritative: bool) -> None:
        messages = [] if raw_messages is UNDEFINED or raw_messages is None else raw_messages
        if not isinstance(messages, list):
            return
        for msg in messages:
            msg_id = _get(msg, "id")
            if not _truthy(msg) or not isinstance(msg_id, str):
                continue
            msg_sub = _get(msg, "subagentRunId")
            if msg_sub is None:
                raise _Fail(
                    f"Cannot send a message (id '{msg_id}') with 'subagentRunId: null'. "
                    "The field is optional — omit it entirely."
                )
            role = _get(msg, "role")
            if role == "reasoning":
                bucket = self._owners_reasoning
            elif role == "activity":
                bucket = self._owners_activity
            else:
                bucket = self._owners_message
            if authoritative or msg_id not in bucket:
                bucket[msg_id] = _Owner(_k(msg_sub))
            tool_calls = _get(msg, "toolCalls")
            if tool_calls is UNDEFINED or tool_calls is None or isinstance(tool_calls, str):
                continue
            if not isinstance(tool_calls, list):
                raise _Fail("msg.toolCalls is not iterable")
            for tc in tool_calls:
                tc_id = _get(tc, "id")
                if (
                    _truthy(tc)
                    and isinstance(tc_id, str)
                    and (authoritative or tc_id not in self._owners_tool_call)
                ):
                    self._owners_tool_call[tc_id] = _Owner(_k(msg_sub))

    @staticmethod
    def _subagent_tag_error(
        ev_type: Any, ev_sub: Any, owner: _Owner | None, entity_kind: str, entity_id: Any
    ) -> None:
        if ev_sub is UNDEFINED:
            return
        if owner is not None and owner.subagent_run_id != ev_sub:
            raise _Fail(
                f"Cannot send '{_js(ev_type)}': subagentRunId '{_js(ev_sub)}' does not match "
                f"the {entity_kind} '{_js(entity_id)}' opener's subagent "
                f"'{_owner_label(owner.subagent_run_id)}'."
            )

    # ----------------------------------------------------------------- state machine

    def _check(self, event: Mapping[str, Any]) -> None:
        ev_type = _get(event, "type")
        t = _js(ev_type)

        if self._run_error and ev_type != "RUN_STARTED":
            raise _Fail(
                f"Cannot send event type '{t}': The run has already errored with 'RUN_ERROR'. "
                "No further events can be sent."
            )
        if self._run_finished and ev_type not in ("RUN_ERROR", "RUN_STARTED"):
            raise _Fail(
                f"Cannot send event type '{t}': The run has already finished with "
                "'RUN_FINISHED'. Start a new run with 'RUN_STARTED'."
            )

        if not self._first_event_received:
            self._first_event_received = True
            if ev_type not in ("RUN_STARTED", "RUN_ERROR"):
                raise _Fail("First event must be 'RUN_STARTED'")
        elif ev_type == "RUN_STARTED":
            if self._run_started and not self._run_finished and not self._run_error:
                raise _Fail(
                    "Cannot send 'RUN_STARTED' while a run is still active. The previous run "
                    "must be finished with 'RUN_FINISHED' before starting a new run."
                )
            if self._run_finished or self._run_error:
                self._reset_run_state()

        ev_sub = _get(event, "subagentRunId")
        if ev_sub is None:
            raise _Fail(
                f"Cannot send '{t}' with 'subagentRunId: null'. "
                "The field is optional — omit it entirely."
            )
        if ev_type in _SUBAGENT_LIFECYCLE_OPTIONALS:
            self._check_subagent_nulls(event, t)
        if ev_type == "RUN_FINISHED":
            outcome = _get(event, "outcome")
            interrupts = _get(outcome, "interrupts")
            if _get(outcome, "type") == "interrupt" and isinstance(interrupts, list):
                for interrupt in interrupts:
                    if _truthy(interrupt) and _get(interrupt, "subagentRunId") is None:
                        raise _Fail(
                            "Cannot send 'RUN_FINISHED' with an interrupt (id "
                            f"'{_js(_get(interrupt, 'id'))}') carrying 'subagentRunId: null'. "
                            "The field is optional — omit it entirely."
                        )

        handler = _HANDLERS.get(ev_type) if isinstance(ev_type, str) else None
        if handler is not None:
            handler(self, event, ev_type, _k(ev_sub))

    def _check_subagent_nulls(self, event: Mapping[str, Any], t: str) -> None:
        for field in _SUBAGENT_LIFECYCLE_OPTIONALS[t]:
            if _get(event, field) is None:
                raise _Fail(
                    f"Cannot send '{t}' with '{field}: null'. "
                    "The field is optional — omit it entirely."
                )
        outcome = _get(event, "outcome")
        if (
            outcome is not UNDEFINED
            and outcome is not None
            and _get(outcome, "type") not in ("success", "suspended")
        ):
            raise _Fail(
                f"Cannot send '{t}' with outcome type '{_js(_get(outcome, 'type'))}'. "
                'The outcome is either { type: "success" } or { type: "suspended" }.'
            )
        interrupt_ids = _get(outcome, "interruptIds")
        if _truthy(outcome) and interrupt_ids is None:
            raise _Fail(
                f"Cannot send '{t}' with 'outcome.interruptIds: null'. "
                "The field is optional — omit it entirely."
            )
        if (
            _truthy(outcome)
            and isinstance(interrupt_ids, list)
            and any(not isinstance(i, str) for i in interrupt_ids)
        ):
            raise _Fail(
                f"Cannot send '{t}' with a non-string entry in 'outcome.interruptIds'. "
                "Interrupt ids are strings."
            )

    # Text messages.

    def _text_message_start(self, event: Mapping[str, Any], t: str, ev_sub: Any) -> None:
        message_id = _id(event, "messageId")
        if message_id in self._active_messages:
            raise _Fail(
                f"Cannot send 'TEXT_MESSAGE_START' event: A text message with ID "
                f"'{_js(message_id)}' is already in progress. Complete it with "
                "'TEXT_MESSAGE_END' first."
            )
        existing = self._owners_message.get(message_id)
        if existing is not None:
            self._subagent_tag_error(t, ev_sub, existing, "message", message_id)
        self._active_messages[message_id] = None
        if existing is None:
            self._owners_message[message_id] = _Owner(ev_sub)

    def _text_message_content(self, event: Mapping[str, Any], t: str, ev_sub: Any) -> None:
        message_id = _id(event, "messageId")
        if message_id not in self._active_messages:
            raise _Fail(
                "Cannot send 'TEXT_MESSAGE_CONTENT' event: No active text message found with "
                f"ID '{_js(message_id)}'. Start a text message with 'TEXT_MESSAGE_START' first."
            )
        self._subagent_tag_error(
            t, ev_sub, self._owners_message.get(message_id), "message", message_id
        )

    def _text_message_end(self, event: Mapping[str, Any], t: str, ev_sub: Any) -> None:
        message_id = _id(event, "messageId")
        if message_id not in self._active_messages:
            raise _Fail(
                "Cannot send 'TEXT_MESSAGE_END' event: No active text message found with "
                f"ID '{_js(message_id)}'. A 'TEXT_MESSAGE_START' event must be sent first."
            )
        self._subagent_tag_error(
            t, ev_sub, self._owners_message.get(message_id), "message", message_id
        )
        del self._active_messages[message_id]

    # Tool calls.

    def _tool_call_start(self, event: Mapping[str, Any], t: str, ev_sub: Any) -> None:
        tool_call_id = _id(event, "toolCallId")
        if tool_call_id in self._active_tool_calls:
            raise _Fail(
                f"Cannot send 'TOOL_CALL_START' event: A tool call with ID "
                f"'{_js(tool_call_id)}' is already in progress. Complete it with "
                "'TOOL_CALL_END' first."
            )
        parent_message_id = _id(event, "parentMessageId")
        inherited: _Owner | None = None
        if parent_message_id is not UNDEFINED:
            parent_owner = self._owners_message.get(parent_message_id)
            if parent_owner is not None:
                if ev_sub is not UNDEFINED and ev_sub != parent_owner.subagent_run_id:
                    raise _Fail(
                        f"Cannot send 'TOOL_CALL_START': subagentRunId '{_js(ev_sub)}' does "
                        f"not match its parent message '{_js(parent_message_id)}' owner "
                        f"'{_owner_label(parent_owner.subagent_run_id)}'. A tool call "
                        "belongs to the message that carries it."
                    )
                inherited = parent_owner
        existing = self._owners_tool_call.get(tool_call_id)
        if existing is not None:
            self._subagent_tag_error(t, ev_sub, existing, "tool call", tool_call_id)
            if (
                ev_sub is UNDEFINED
                and inherited is not None
                and inherited.subagent_run_id != existing.subagent_run_id
            ):
                raise _Fail(
                    f"Cannot send 'TOOL_CALL_START': tool call '{_js(tool_call_id)}' is owned "
                    f"by '{_owner_label(existing.subagent_run_id)}' but its parent message "
                    f"'{_js(parent_message_id)}' is owned by "
                    f"'{_owner_label(inherited.subagent_run_id)}'. A tool call belongs to the "
                    "message that carries it."
                )
        self._active_tool_calls[tool_call_id] = None
        if existing is None:
            if ev_sub is not UNDEFINED:
                self._owners_tool_call[tool_call_id] = _Owner(ev_sub)
            else:
                self._owners_tool_call[tool_call_id] = inherited or _Owner(UNDEFINED)

    def _tool_call_args(self, event: Mapping[str, Any], t: str, ev_sub: Any) -> None:
        tool_call_id = _id(event, "toolCallId")
        if tool_call_id not in self._active_tool_calls:
            raise _Fail(
                "Cannot send 'TOOL_CALL_ARGS' event: No active tool call found with ID "
                f"'{_js(tool_call_id)}'. Start a tool call with 'TOOL_CALL_START' first."
            )
        self._subagent_tag_error(
            t, ev_sub, self._owners_tool_call.get(tool_call_id), "tool call", tool_call_id
        )

    def _tool_call_end(self, event: Mapping[str, Any], t: str, ev_sub: Any) -> None:
        tool_call_id = _id(event, "toolCallId")
        if tool_call_id not in self._active_tool_calls:
            raise _Fail(
                "Cannot send 'TOOL_CALL_END' event: No active tool call found with ID "
                f"'{_js(tool_call_id)}'. A 'TOOL_CALL_START' event must be sent first."
            )
        self._subagent_tag_error(
            t, ev_sub, self._owners_tool_call.get(tool_call_id), "tool call", tool_call_id
        )
        del self._active_tool_calls[tool_call_id]

    def _tool_call_result(self, event: Mapping[str, Any], t: str, ev_sub: Any) -> None:
        message_id = _id(event, "messageId")
        if isinstance(message_id, str):
            self._owners_message[message_id] = _Owner(ev_sub)

    # Steps.

    def _step_started(self, event: Mapping[str, Any], t: str, ev_sub: Any) -> None:
        step_name = _id(event, "stepName")
        if step_name in self._steps_for(ev_sub):
            where = f" in subagent '{_js(ev_sub)}'" if ev_sub is not UNDEFINED else ""
            raise _Fail(f"Step \"{_js(step_name)}\" is already active for 'STEP_STARTED'{where}")
        self._steps_for(ev_sub)[step_name] = None

    def _step_finished(self, event: Mapping[str, Any], t: str, ev_sub: Any) -> None:
        step_name = _id(event, "stepName")
        if step_name not in self._steps_for(ev_sub):
            for owner, names in self._active_steps.items():
                if owner != ev_sub and step_name in names:
                    mine = (
                        f"subagent '{_js(ev_sub)}'"
                        if ev_sub is not UNDEFINED
                        else "the parent agent"
                    )
                    theirs = (
                        f"subagent '{_js(owner)}'" if owner is not UNDEFINED else "the parent agent"
                    )
                    raise _Fail(
                        f"Cannot send 'STEP_FINISHED' for step \"{_js(step_name)}\" attributed "
                        f"to {mine}: that step is open under {theirs}. A step must be finished "
                        "by whoever started it."
                    )
            raise _Fail(
                f"Cannot send 'STEP_FINISHED' for step \"{_js(step_name)}\" that was not started"
            )
        del self._steps_for(ev_sub)[step_name]

    # Activity.

    def _activity_snapshot(self, event: Mapping[str, Any], t: str, ev_sub: Any) -> None:
        message_id = _id(event, "messageId")
        is_new = message_id not in self._owners_activity
        if is_new or _get(event, "replace") is not False:
            self._owners_activity[message_id] = _Owner(ev_sub)

    def _activity_delta(self, event: Mapping[str, Any], t: str, ev_sub: Any) -> None:
        message_id = _id(event, "messageId")
        self._subagent_tag_error(
            t, ev_sub, self._owners_activity.get(message_id), "activity", message_id
        )

    # Reasoning.

    def _reasoning_open(self, event: Mapping[str, Any], t: str, ev_sub: Any) -> None:
        message_id = _id(event, "messageId")
        is_span = t == "REASONING_START"
        open_ = self._active_reasoning_spans if is_span else self._active_reasoning_messages
        if message_id in open_:
            if is_span:
                raise _Fail(
                    "Cannot send 'REASONING_START' event: A reasoning span with ID "
                    f"'{_js(message_id)}' is already in progress. Complete it with "
                    "'REASONING_END' first."
                )
            raise _Fail(
                "Cannot send 'REASONING_MESSAGE_START' event: A reasoning message with ID "
                f"'{_js(message_id)}' is already in progress. Complete it with "
                "'REASONING_MESSAGE_END' first."
            )
        existing = self._owners_reasoning.get(message_id)
        if existing is not None:
            self._subagent_tag_error(t, ev_sub, existing, "reasoning message", message_id)
        open_[message_id] = None
        if existing is None:
            self._owners_reasoning[message_id] = _Owner(ev_sub)

    def _reasoning_continue(self, event: Mapping[str, Any], t: str, ev_sub: Any) -> None:
        message_id = _id(event, "messageId")
        is_span = t == "REASONING_END"
        open_ = self._active_reasoning_spans if is_span else self._active_reasoning_messages
        if message_id not in open_:
            if is_span:
                raise _Fail(
                    "Cannot send 'REASONING_END' event: No active reasoning span found with ID "
                    f"'{_js(message_id)}'. A 'REASONING_START' event must be sent first."
                )
            raise _Fail(
                f"Cannot send '{t}' event: No active reasoning message found with ID "
                f"'{_js(message_id)}'. Start a reasoning message with "
                "'REASONING_MESSAGE_START' first."
            )
        self._subagent_tag_error(
            t, ev_sub, self._owners_reasoning.get(message_id), "reasoning message", message_id
        )
        if t in ("REASONING_END", "REASONING_MESSAGE_END"):
            del open_[message_id]

    def _reasoning_encrypted_value(self, event: Mapping[str, Any], t: str, ev_sub: Any) -> None:
        entity_id = _id(event, "entityId")
        subtype = _get(event, "subtype")
        owner: _Owner | None
        if subtype == "tool-call":
            owner, kind = self._owners_tool_call.get(entity_id), "tool call"
        elif subtype == "message":
            owner = self._owners_message.get(entity_id) or self._owners_reasoning.get(entity_id)
            kind = "message"
        else:
            owner, kind = self._owners_reasoning.get(entity_id), "reasoning message"
        self._subagent_tag_error(t, ev_sub, owner, kind, entity_id)

    # Subagents.

    def _subagent_started(self, event: Mapping[str, Any], t: str, ev_sub: Any) -> None:
        if not isinstance(ev_sub, str):
            raise _Fail("Cannot send 'SUBAGENT_STARTED' without a 'subagentRunId'.")
        if not isinstance(_get(event, "name"), str):
            raise _Fail("Cannot send 'SUBAGENT_STARTED' without a 'name'.")
        parent = _id(event, "parentSubagentRunId")
        if ev_sub in self._active_subagents:
            raise _Fail(
                f"Cannot send 'SUBAGENT_STARTED': subagent '{ev_sub}' is already active. "
                "Finish it with 'SUBAGENT_FINISHED' first."
            )
        if ev_sub in self._closed_subagents:
            raise _Fail(
                f"Cannot send 'SUBAGENT_STARTED': subagent '{ev_sub}' has already finished in "
                "this run. Subagent IDs are per-invocation and cannot be reused."
            )
        if (
            parent is not UNDEFINED
            and parent not in self._active_subagents
            and parent not in self._closed_subagents
        ):
            raise _Fail(
                f"Cannot send 'SUBAGENT_STARTED': parentSubagentRunId '{_js(parent)}' has not "
                "been started in this run."
            )
        self._active_subagents[ev_sub] = None

    def _subagent_ended(self, event: Mapping[str, Any], t: str, ev_sub: Any) -> None:
        if not isinstance(ev_sub, str):
            raise _Fail(f"Cannot send '{t}' without a 'subagentRunId'.")
        if t == "SUBAGENT_ERROR" and not isinstance(_get(event, "message"), str):
            raise _Fail("Cannot send 'SUBAGENT_ERROR' without a 'message'.")
        if ev_sub not in self._active_subagents:
            raise _Fail(
                f"Cannot send '{t}': no active subagent found with ID '{ev_sub}'. A "
                "'SUBAGENT_STARTED' event must be sent first."
            )
        del self._active_subagents[ev_sub]
        self._closed_subagents[ev_sub] = None

    # Snapshots and the run lifecycle.

    def _messages_snapshot(self, event: Mapping[str, Any], t: str, ev_sub: Any) -> None:
        self._seed_owners_from_messages(_get(event, "messages"), True)

    def _run_started_event(self, event: Mapping[str, Any], t: str, ev_sub: Any) -> None:
        self._run_started = True
        self._seed_owners_from_messages(_get(_get(event, "input"), "messages"), False)

    def _run_finished_event(self, event: Mapping[str, Any], t: str, ev_sub: Any) -> None:
        if self._any_steps_active():
            parts = [
                f"{_js(name)} (subagent '{_js(owner)}')" if owner is not UNDEFINED else _js(name)
                for owner, names in self._active_steps.items()
                for name in names
            ]
            raise _Fail(
                f"Cannot send 'RUN_FINISHED' while steps are still active: {', '.join(parts)}"
            )
        for active, what in (
            (self._active_messages, "text messages"),
            (self._active_reasoning_messages, "reasoning messages"),
            (self._active_reasoning_spans, "reasoning spans"),
            (self._active_tool_calls, "tool calls"),
            (self._active_subagents, "subagents"),
        ):
            if active:
                raise _Fail(
                    f"Cannot send 'RUN_FINISHED' while {what} are still active: {_join(active)}"
                )
        self._run_finished = True

    def _run_error_event(self, event: Mapping[str, Any], t: str, ev_sub: Any) -> None:
        self._run_error = True


_HANDLERS: Final = {
    "TEXT_MESSAGE_START": EventVerifier._text_message_start,
    "TEXT_MESSAGE_CONTENT": EventVerifier._text_message_content,
    "TEXT_MESSAGE_END": EventVerifier._text_message_end,
    "TOOL_CALL_START": EventVerifier._tool_call_start,
    "TOOL_CALL_ARGS": EventVerifier._tool_call_args,
    "TOOL_CALL_END": EventVerifier._tool_call_end,
    "TOOL_CALL_RESULT": EventVerifier._tool_call_result,
    "STEP_STARTED": EventVerifier._step_started,
    "STEP_FINISHED": EventVerifier._step_finished,
    "ACTIVITY_SNAPSHOT": EventVerifier._activity_snapshot,
    "ACTIVITY_DELTA": EventVerifier._activity_delta,
    "REASONING_START": EventVerifier._reasoning_open,
    "REASONING_MESSAGE_START": EventVerifier._reasoning_open,
    "REASONING_MESSAGE_CONTENT": EventVerifier._reasoning_continue,
    "REASONING_MESSAGE_END": EventVerifier._reasoning_continue,
    "REASONING_END": EventVerifier._reasoning_continue,
    "REASONING_ENCRYPTED_VALUE": EventVerifier._reasoning_encrypted_value,
    "SUBAGENT_STARTED": EventVerifier._subagent_started,
    "SUBAGENT_FINISHED": EventVerifier._subagent_ended,
    "SUBAGENT_ERROR": EventVerifier._subagent_ended,
    "MESSAGES_SNAPSHOT": EventVerifier._messages_snapshot,
    "RUN_STARTED": EventVerifier._run_started_event,
    "RUN_FINISHED": EventVerifier._run_finished_event,
    "RUN_ERROR": EventVerifier._run_error_event,
}


def verify_events(events: Sequence[Mapping[str, Any]], *, require_complete: bool = False) -> None:
    """Verify wire events as ``@ag-ui/client``'s ``verifyEvents`` does.

    Raises :class:`AGUIProtocolError` at the first event the official verifier would
    refuse. With ``require_complete`` the stream must also end its last run (see
    :meth:`EventVerifier.check_complete`).
    """
    verifier = EventVerifier()
    for event in events:
        verifier.feed(event)
    if require_complete:
        verifier.check_complete()


def verify_prefixes(events: Sequence[Mapping[str, Any]]) -> None:
    """Verify that every prefix is an acceptable stream-in-progress and the whole is complete.

    The verifier is online, so one pass checks every prefix: prefix ``k`` is acceptable
    exactly when the first ``k`` events are accepted. The full stream must then have
    started a run and ended its last run with ``RUN_FINISHED`` or ``RUN_ERROR`` (after
    ``RUN_FINISHED`` nothing is open, since the verifier refuses it otherwise).
    """
    verify_events(events, require_complete=True)
