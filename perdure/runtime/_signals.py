"""Resume signals, their keys, validation, and their AG-UI interrupt mapping.

A signal is addressed to (run, key). Keys are namespaced by the wait's reason
(``tool:…``, ``approval:…``, ``event:…``, ``input:…``) so a tool call id and an
input key can never collide; that namespaced key is also the AG-UI interrupt id,
which makes an AG-UI ``resume[]`` entry and a signal the same thing.

Validation uses only the durable wait record (its JSON Schema and approver
list), never the body's code, so a signal for a passivated run is checked and
stored without re-running anything.
"""

from __future__ import annotations

import datetime
from typing import Any, Literal

import msgspec

from perdure._errors import InvalidSignal, PermissionDenied
from perdure.agui import Interrupt
from perdure.storage import Wait

from ._boundary import FAILURES, MAX_VALUE_BYTES, reason, text
from ._schemas import schema_errors

__all__ = [
    "ApprovalDecision",
    "ExternalEvent",
    "InputResponse",
    "Resumed",
    "Signal",
    "ToolResult",
    "check_signal",
    "decode_signal",
    "encode_signal",
    "interrupt_for",
    "payload_of",
    "signal_from_resume",
    "signal_key",
    "stored_signal",
    "wait_key",
]


class ToolResult(
    msgspec.Struct, tag="tool_result", kw_only=True, frozen=True, forbid_unknown_fields=True
):
    """The result of a client-side tool call the run waits on."""

    tool_call_id: str
    content: Any = None
    is_error: bool = False


class ApprovalDecision(
    msgspec.Struct, tag="approval", kw_only=True, frozen=True, forbid_unknown_fields=True
):
    """A decision on an approval wait; ``response`` is checked against its schema."""

    key: str
    approved: bool
    approver: str | None = None
    response: Any = None
    comment: str | None = None


class ExternalEvent(
    msgspec.Struct, tag="event", kw_only=True, frozen=True, forbid_unknown_fields=True
):
    """A named event from outside; ``payload`` is what ``wait_for_event`` returns."""

    name: str
    payload: Any = None


class InputResponse(
    msgspec.Struct, tag="input", kw_only=True, frozen=True, forbid_unknown_fields=True
):
    """Human input for ``wait_for_input``; ``value`` is checked against its schema."""

    key: str
    value: Any = None
    responder: str | None = None


Signal = ToolResult | ApprovalDecision | ExternalEvent | InputResponse

_REASON: dict[type, Literal["tool", "approval", "event", "input"]] = {
    ToolResult: "tool",
    ApprovalDecision: "approval",
    ExternalEvent: "event",
    InputResponse: "input",
}
_AGUI_REASON = {
    "tool": "tool_call",
    "approval": "confirmation",
    "input": "input_required",
    "event": "event",
}
_encoder = msgspec.msgpack.Encoder()
_decoder: msgspec.msgpack.Decoder[Signal] = msgspec.msgpack.Decoder(Signal)


class Resumed(msgspec.Struct, frozen=True):
    """Result of ``resume``: ``duplicate`` when an equal signal was already taken."""

    duplicate: bool
    run_id: str
    key: str


def wait_key(reason: str, key: str) -> str:
    """The namespaced key of a wait: also its AG-UI interrupt id."""
    return f"{reason}:{key}"


def _raw_key(signal: Signal) -> str:
    if isinstance(signal, ToolResult):
        return signal.tool_call_id
    if isinstance(signal, ExternalEvent):
        return signal.name
    return signal.key


def signal_key(signal: object) -> str:
    """Namespaced key of a signal; :class:`InvalidSignal` if it is not a signal."""
    reason = _REASON.get(type(signal))
    if reason is None:
        raise InvalidSignal(
            "a signal must be a ToolResult, ApprovalDecision, ExternalEvent or InputResponse "
            f"(got {type(signal).__name__})"
        )
    raw = _raw_key(signal)  # type: ignore[arg-type]
    what = f"the key of a {type(signal).__name__}"
    text(raw, what, max_bytes=256, error=InvalidSignal, forbid="#")
    return wait_key(reason, raw)


def stored_signal(signal: Signal) -> Signal:
    """``signal`` as it will be stored and read back, or :class:`InvalidSignal` (R12, R30).

    Every field is checked against its declared type by decoding the stored form, so an
    ``approved="yes"`` or a payload of raw bytes is refused before it reaches the run.
    """
    try:
        packed = _encoder.encode(signal)
        stored = _decoder.decode(packed)
        msgspec.json.encode(stored)
    except msgspec.ValidationError as exc:
        raise InvalidSignal(f"{type(signal).__name__} is malformed: {exc}") from None
    except FAILURES as exc:
        raise InvalidSignal(f"{type(signal).__name__} cannot be stored: {reason(exc)}") from None
    if len(packed) > MAX_VALUE_BYTES:
        raise InvalidSignal(
            f"{type(signal).__name__} is {len(packed)} bytes encoded; the "
            f"limit is {MAX_VALUE_BYTES}"
        )
    # Names that the runtime writes into events must stay short (R19).
    for name, limit in (("approver", 256), ("responder", 256), ("comment", 16 * 1024)):
        value = getattr(stored, name, None)
        if value is not None:
            text(
                value,
                f"{type(signal).__name__}.{name}",
                max_bytes=limit,
                error=InvalidSignal,
                empty=True,
            )
    return stored


def payload_of(signal: Signal) -> Any:
    """What the waiting body receives: the content, decision, payload or value."""
    if isinstance(signal, ToolResult):
        return signal.content
    if isinstance(signal, ExternalEvent):
        return signal.payload
    if isinstance(signal, InputResponse):
        return signal.value
    return signal


def encode_signal(signal: Signal) -> bytes:
    try:
        return _encoder.encode(signal)
    except (TypeError, msgspec.EncodeError) as exc:
        raise InvalidSignal(f"signal payload is not serializable: {exc}") from None


def decode_signal(data: bytes) -> Signal:
    return _decoder.decode(data)


def same_signal(a: Signal, b: Signal) -> bool:
    """Equal as stored data (the comparison R12 uses for duplicates)."""
    return bool(msgspec.to_builtins(a) == msgspec.to_builtins(b))


def check_signal(signal: Signal, wait: Wait) -> None:
    """Validate a signal against the durable wait: approvers (R13) and schema (R12)."""
    if (
        isinstance(signal, ApprovalDecision)
        and wait.approvers is not None
        and signal.approver not in wait.approvers
    ):
        raise PermissionDenied(
            f"{signal.approver!r} may not decide approval {signal.key!r}",
            key=signal.key,
            approver=signal.approver,
        )
    if wait.schema is None:
        return
    if isinstance(signal, ApprovalDecision):
        if not signal.approved:
            return  # a rejection carries no response to check
        value = signal.response
    else:
        value = payload_of(signal)
    errors = schema_errors(wait.schema, msgspec.to_builtins(value))
    if errors:
        message, path = errors[0]
        raise InvalidSignal(
            f"payload for {wait.reason} {wait.key!r} fails the wait's schema: {message}",
            key=wait.key,
            path=path,
        )


def interrupt_for(wait: Wait) -> Interrupt:
    """The AG-UI interrupt announcing an open wait."""
    expires: str | None = None
    if wait.deadline is not None:
        try:
            expires = datetime.datetime.fromtimestamp(wait.deadline, datetime.UTC).isoformat()
        except (OverflowError, OSError, ValueError):
            expires = None  # beyond what a datetime can say (virtual time only)
    return Interrupt(
        id=wait_key(wait.reason, wait.key),
        reason=_AGUI_REASON[wait.reason],
        message=wait.prompt,
        tool_call_id=wait.key if wait.reason == "tool" else None,
        response_schema=wait.schema,
        expires_at=expires,
    )


def signal_from_resume(entry: dict[str, Any], approver: str | None = None) -> Signal:
    """Translate an AG-UI ``resume[]`` entry (``interruptId``, ``status``, ``payload``).

    ``status: "cancelled"`` on an approval is a rejection; on other waits it is
    refused (cancel the run instead).
    """
    if not isinstance(entry, dict) or not isinstance(entry.get("interruptId"), str):
        raise InvalidSignal("a resume entry needs an interruptId")
    reason, _, key = entry["interruptId"].partition(":")
    status = entry.get("status", "resolved")
    payload = entry.get("payload")
    if status not in ("resolved", "cancelled"):
        raise InvalidSignal(f"resume status must be 'resolved' or 'cancelled' (got {status!r})")
    if reason == "approval":
        # Only an explicit boolean decides: "false", "no" or 0 approving would be the
        # worst way to misread a client.
        approved = status == "resolved"
        decision = payload.get("approved", True) if isinstance(payload, dict) else payload
        if decision is None:
            decision = True
        if not isinstance(decision, bool):
            raise InvalidSignal(
                "an approval's payload is a boolean or an object whose 'approved' is a "
                f"boolean (got {decision!r})"
            )
        return ApprovalDecision(
            key=key,
            approved=approved and decision,
            approver=approver,
            response=payload if isinstance(payload, dict) else None,
        )
    if status == "cancelled":
        raise InvalidSignal(f"only approvals can be answered with status 'cancelled' ({reason})")
    if reason == "tool":
        return ToolResult(tool_call_id=key, content=payload)
    if reason == "event":
        return ExternalEvent(name=key, payload=payload)
    if reason == "input":
        return InputResponse(key=key, value=payload)
    raise InvalidSignal(f"unknown interrupt id {entry['interruptId']!r}")
