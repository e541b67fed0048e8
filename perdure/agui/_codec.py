"""The two codecs of AG-UI events.

``encode_event``/``encode_events``/``decode_event`` are the storage codec (msgpack with
the wire field names; one commit's events are stored as one msgpack array);
``event_to_json``/``event_from_json`` are the wire codec (SSE ``data:`` lines). Encoders
and decoders are built once and reused: they are on the hot path of every commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import msgspec

from ._events import (
    MAX_EVENT_BYTES,
    TYPE_OF,
    BaseEvent,
    Event,
    RunErrorEvent,
    RunFinishedEvent,
    RunFinishedInterruptOutcome,
)

__all__ = [
    "decode_event",
    "encode_event",
    "encode_events",
    "encoded_size_ok",
    "event_from_json",
    "event_to_json",
    "event_type",
    "is_terminal_event",
]

_MSGPACK_ENCODER: Final = msgspec.msgpack.Encoder()
_MSGPACK_DECODER: Final[msgspec.msgpack.Decoder[Event]] = msgspec.msgpack.Decoder(Event)
_JSON_ENCODER: Final = msgspec.json.Encoder()
_JSON_DECODER: Final[msgspec.json.Decoder[Event]] = msgspec.json.Decoder(Event)


def encode_event(ev: Event) -> bytes:
    """Encode an event as msgpack (the storage format; same field names as the wire)."""
    return _MSGPACK_ENCODER.encode(ev)


def is_terminal_event(event: Event) -> bool:
    """Whether ``event`` ends a run's log (an interrupt ``RUN_FINISHED`` does not)."""
    if isinstance(event, RunErrorEvent):
        return True
    if isinstance(event, RunFinishedEvent):
        return not isinstance(event.outcome, RunFinishedInterruptOutcome)
    return False


def encode_events(events: Sequence[Event]) -> bytes:
    """Encode one commit's events as a msgpack array (the stored chunk)."""
    return _MSGPACK_ENCODER.encode(events)


def decode_event(data: bytes | bytearray | memoryview) -> Event:
    """Decode a msgpack event written by :func:`encode_event`."""
    return _MSGPACK_DECODER.decode(data)


def event_to_json(ev: Event) -> bytes:
    """Encode an event as AG-UI wire JSON (camelCase, ``None`` optionals omitted)."""
    return _JSON_ENCODER.encode(ev)


def event_from_json(data: bytes | str) -> Event:
    """Decode AG-UI wire JSON into an event struct (unknown fields are ignored)."""
    return _JSON_DECODER.decode(data)


def event_type(ev: BaseEvent) -> str:
    """The wire ``type`` string of an event (``"RUN_STARTED"`` ...)."""
    return TYPE_OF[type(ev)]


def encoded_size_ok(ev: Event, limit: int = MAX_EVENT_BYTES) -> bool:
    """Whether the event's wire JSON fits in ``limit`` bytes."""
    return len(_JSON_ENCODER.encode(ev)) <= limit
