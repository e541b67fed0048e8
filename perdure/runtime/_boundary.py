"""Trust at the boundary (R30): every value from outside is checked here, once, before it
is accepted.

A value is accepted only if it can be stored and read back as stored, by every reader:
the msgpack codec of the store, the JSON of the AG-UI wire, the HTTP API and the CLI.
So each check *encodes the value and decodes it back* with the type it is stored as,
and refuses with a typed :class:`~perdure.PerdureError` what does not survive; nothing
is stored before that. The runtime then works on the decoded value, so what a run sees
is exactly what a replay will see.

One function per kind of value:

- :func:`plain`: inputs, results, payloads, log fields: plain data (msgpack builtins)
  that JSON can also carry (string or number keys), at most :data:`MAX_VALUE_BYTES`;
- :func:`text`: names, keys, reasons, prompts: ``str`` that is valid UTF-8 (no lone
  surrogates), within a byte limit (keys end up in LMDB keys, which stop at 511 bytes);
- :func:`seconds` / :func:`instant`: durations and wall times: finite, in range;
- :func:`event`: an AG-UI event a body emits: a real event struct whose wire JSON
  decodes back as the same type, within the 240 KiB cap;
- resume signals are checked by ``_signals.stored_signal`` (the signal module owns
  their codec);
- :func:`usage` and :func:`label`: completion metadata.

What the wire cannot say: NaN and infinities are stored as given (msgpack keeps them)
and read as ``null`` in JSON, as ``JSON.stringify`` does; ``bytes`` in an input become
base64 text (msgspec's builtins form); integer dict keys become strings in JSON.
"""

from __future__ import annotations

import math
from typing import Any, Final

import msgspec

from perdure._errors import InvalidInput, PerdureError, SerializationError
from perdure.agui import (
    MAX_EVENT_BYTES,
    BaseEvent,
    Event,
    TokenUsage,
    event_from_json,
    event_to_json,
)

__all__ = [
    "EVENT_BUDGET",
    "FAILURES",
    "MAX_DURATION",
    "MAX_VALUE_BYTES",
    "event",
    "instant",
    "label",
    "plain",
    "plain_sized",
    "reason",
    "safe_text",
    "seconds",
    "text",
    "usage",
]

MAX_VALUE_BYTES: Final = 16 * 1024 * 1024
"""The largest single value (an input, a result, a payload) a run stores: 16 MiB."""

MAX_DURATION: Final = 100 * 365.25 * 86400.0
"""The longest sleep or timeout: a hundred years (due times must fit u64 milliseconds)."""

EVENT_BUDGET: Final = MAX_EVENT_BYTES - 64
"""The largest event a run may log: room is left for the ``timestamp`` the log adds
when it commits the event."""

_LATEST_INSTANT: Final = 253402300799.0  # 9999-12-31T23:59:59Z
FAILURES = (
    TypeError,
    ValueError,
    OverflowError,
    RecursionError,
    UnicodeError,
    msgspec.EncodeError,
    msgspec.DecodeError,
)
_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder().decode
_json = msgspec.json.Encoder().encode
_json_sorted = msgspec.json.Encoder(order="sorted").encode


def plain(
    value: Any, what: str, error: type[PerdureError] = SerializationError, *, limit: int = 0
) -> Any:
    """``value`` as the plain data it is stored as, or ``error`` saying why it cannot be.

    Structs, dataclasses and the like become builtins first (``msgspec.to_builtins``).
    """
    # Spelled out here and in plain_sized rather than shared through a helper: this
    # runs for every value a run stores, and the extra call cost ~0.2% of a run.
    try:
        builtin = msgspec.to_builtins(value)
        packed = _encode(builtin)
        stored = _decode(packed)
        _wire(stored, what, error)  # the wire (and the HTTP API) must be able to carry it too
    except FAILURES as exc:
        raise error(f"{what} is not storable plain data: {reason(exc)}", what=what) from None
    cap = limit or MAX_VALUE_BYTES
    if len(packed) > cap:
        raise error(
            f"{what} is {len(packed)} bytes encoded; the limit is {cap}",
            what=what,
            size=len(packed),
        )
    return stored


def plain_sized(value: Any, what: str) -> tuple[Any, int]:
    """:func:`plain` for a run's result, with the size of its JSON (the wire form): the
    terminal event carries the result only if it fits the event cap."""
    try:
        builtin = msgspec.to_builtins(value)
        packed = _encode(builtin)
        stored = _decode(packed)
        wire = _wire(stored, what, SerializationError)
    except FAILURES as exc:
        raise SerializationError(
            f"{what} is not storable plain data: {reason(exc)}", what=what
        ) from None
    if len(packed) > MAX_VALUE_BYTES:
        raise SerializationError(
            f"{what} is {len(packed)} bytes encoded; the limit is {MAX_VALUE_BYTES}",
            what=what,
            size=len(packed),
        )
    return stored, len(wire)


def _wire(stored: Any, what: str, error: type[PerdureError]) -> bytes:
    """``stored`` as JSON; a dict whose keys collide as JSON strings (``1`` and ``"1"``)
    is refused: it would reach the wire with a duplicate key, and readers keep one.

    The usual value has string keys only, and sorted encoding (which refuses any other
    key) proves it in one pass. Otherwise the keys are compared: a JSON object keeps
    every key when decoded unless two were equal, so decoding the wire form and encoding
    it again gives the same bytes exactly when none collided.
    """
    try:
        return _json_sorted(stored)
    except TypeError:
        pass
    wire = _json(stored)
    if _json(msgspec.json.decode(wire)) != wire:
        raise error(
            f"{what} has dict keys that are equal as JSON strings (e.g. 1 and '1')", what=what
        )
    return wire


def check_stored(
    stored: Any, what: str, error: type[PerdureError] = SerializationError, step: str = ""
) -> None:
    """For a value already decoded from msgpack (a step's result): can JSON carry it?
    ``step``: the step that returned it, named in the error."""
    try:
        _json(stored)
    except FAILURES as exc:
        detail = {"what": what, "step": step} if step else {"what": what}
        raise error(f"{what} is not storable plain data: {reason(exc)}", **detail) from None


def text(
    value: Any,
    what: str,
    *,
    max_bytes: int,
    error: type[PerdureError] = InvalidInput,
    empty: bool = False,
    forbid: str = "",
    allow_nul: bool = False,
) -> str:
    """``value`` if it is a ``str`` of valid UTF-8 within ``max_bytes`` (and without NUL)."""
    if not isinstance(value, str):
        raise error(f"{what} must be a string (got {type(value).__name__})", field=what)
    try:
        size = len(value.encode())
    except UnicodeEncodeError:
        raise error(f"{what} is not valid UTF-8 text (lone surrogate?)", field=what) from None
    if size > max_bytes or (not empty and not value):
        raise error(
            f"{what} must be {'0' if empty else '1'}-{max_bytes} bytes of UTF-8 (got {size})",
            field=what,
        )
    for char in forbid if allow_nul else "\0" + forbid:
        if char in value:
            raise error(f"{what} may not contain {char!r}", field=what)
    return value


def seconds(value: Any, what: str, *, positive: bool = False) -> float:
    """A duration: a finite number of seconds, ``>= 0`` (``> 0`` if ``positive``), bounded."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInput(f"{what} must be a number of seconds (got {value!r})", field=what)
    number = float(value)
    if not math.isfinite(number) or number < 0 or (positive and number == 0):
        raise InvalidInput(
            f"{what} must be a finite number {'>' if positive else '>='} 0 (got {value!r})",
            field=what,
        )
    if number > MAX_DURATION:
        raise InvalidInput(
            f"{what} may be at most {MAX_DURATION:.0f} s (got {value!r})", field=what
        )
    return number


def instant(value: Any, what: str) -> float:
    """A wall time in seconds since the epoch, finite and before the year 10000."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInput(f"{what} must be a timestamp in seconds (got {value!r})", field=what)
    number = float(value)
    if not math.isfinite(number) or not 0 <= number <= _LATEST_INSTANT:
        raise InvalidInput(f"{what} is not a usable timestamp (got {value!r})", field=what)
    return number


def event(value: Any) -> Event:
    """An AG-UI event a body emits, as its wire JSON decodes it back (R19, R30)."""
    if not isinstance(value, BaseEvent):
        raise InvalidInput(
            f"emit takes AG-UI event structs from perdure.agui (got {type(value).__name__})"
        )
    try:
        wire = event_to_json(value)  # type: ignore[arg-type]  # a BaseEvent subclass
        back = event_from_json(wire)
        _decode(_encode(back))
    except FAILURES as exc:
        raise InvalidInput(
            f"{type(value).__name__} cannot be logged: {reason(exc)}", event=type(value).__name__
        ) from None
    if type(back) is not type(value):
        raise InvalidInput(f"{type(value).__name__} is not an AG-UI event perdure can log")
    if event_to_json(back) != wire:
        # Decoding kept one of two keys that are equal as JSON strings (1 and "1").
        raise InvalidInput(
            f"{type(value).__name__} has dict keys that are equal as JSON strings (e.g. 1 and '1')"
        )
    if len(wire) > EVENT_BUDGET:
        raise InvalidInput(
            f"{type(value).__name__} is {len(wire)} bytes; events are capped at "
            f"{MAX_EVENT_BYTES} bytes",
            size=len(wire),
        )
    return back


def usage(value: TokenUsage | None, counts: dict[str, Any]) -> TokenUsage:
    """Token usage from a :class:`TokenUsage` or keyword counts, checked as stored."""
    if value is not None and counts:
        raise InvalidInput("report_usage takes a TokenUsage or keyword counts, not both")
    if value is not None and not isinstance(value, TokenUsage):
        raise InvalidInput(f"report_usage takes a perdure.TokenUsage (got {type(value).__name__})")
    try:
        built = value if value is not None else TokenUsage(**counts)
        # Built structs are not validated; their stored form is, when decoded back.
        checked = msgspec.msgpack.decode(_encode(built), type=TokenUsage)
    except msgspec.ValidationError as exc:
        raise InvalidInput(f"report_usage: {exc}") from None
    except FAILURES as exc:
        raise InvalidInput(f"report_usage: {reason(exc)}") from None
    for name in ("provider", "model"):
        field = getattr(checked, name)
        if field is not None:
            text(field, f"usage {name}", max_bytes=256)
    return checked


def label(value: Any, what: str) -> str | None:
    """A model, provider or finish reason: ``None`` or a short string."""
    if value is None:
        return None
    return text(value, what, max_bytes=256)


def safe_text(value: str, max_chars: int = 8192) -> str:
    """``value`` cut to ``max_chars`` and made valid UTF-8 (runtime-built messages: an
    exception's text may hold lone surrogates, and a record that cannot be encoded would
    leave the run without its terminal commit)."""
    return value[:max_chars].encode("utf-8", "backslashreplace").decode("utf-8")


def reason(exc: BaseException) -> str:
    """Why a value failed to encode or decode, in words."""
    if isinstance(exc, RecursionError):
        return "it nests too deeply (or contains itself)"
    if isinstance(exc, OverflowError):
        return "an integer is out of the 64-bit range"
    if isinstance(exc, UnicodeError):
        return "a string is not valid UTF-8 (lone surrogate?)"
    return str(exc) or type(exc).__name__
