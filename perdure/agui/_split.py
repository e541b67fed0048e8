"""Keeping events under the 240 KiB cap (R19): large text and argument deltas are split.

A delta is cut on code-point boundaries into pieces whose JSON encoding, envelope
included, fits the limit; the pieces concatenate back to the original delta.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import msgspec

from ._events import MAX_EVENT_BYTES, TextMessageContentEvent, ToolCallArgsEvent

__all__ = ["split_text_content", "split_tool_call_args"]

_JSON_ENCODER = msgspec.json.Encoder()

_E = TypeVar("_E", TextMessageContentEvent, ToolCallArgsEvent)


def _json_str_cost(s: str) -> int:
    """Bytes ``s`` occupies inside a JSON string literal (escapes included)."""
    return len(_JSON_ENCODER.encode(s)) - 2


def _split(make: Callable[[str], _E], delta: str, limit: int) -> list[_E]:
    overhead = len(_JSON_ENCODER.encode(make("")))
    budget = limit - overhead
    if overhead + _json_str_cost(delta) <= limit:
        return [make(delta)]
    if budget < 6:  # the costliest code point takes 6 bytes (a \u00XX control escape)
        raise ValueError(f"limit {limit} leaves no room for content (envelope {overhead})")
    pieces: list[_E] = []
    start, n = 0, len(delta)
    while start < n:
        # Every code point costs at least one byte, so at most ``budget`` of them fit.
        hi = min(n, start + budget)
        if _json_str_cost(delta[start:hi]) > budget:
            lo = start + 1  # one code point always fits (budget >= 6)
            while lo < hi:  # largest end in [lo, hi] whose slice fits
                mid = (lo + hi + 1) // 2
                if _json_str_cost(delta[start:mid]) <= budget:
                    lo = mid
                else:
                    hi = mid - 1
            hi = lo
        pieces.append(make(delta[start:hi]))
        start = hi
    return pieces


def split_text_content(
    message_id: str, delta: str, limit: int = MAX_EVENT_BYTES
) -> list[TextMessageContentEvent]:
    """Split a text delta into TEXT_MESSAGE_CONTENT events each at most ``limit`` bytes.

    Splits fall on code-point boundaries (never inside a UTF-8 sequence) and the pieces
    concatenate to ``delta``. A delta that fits yields a single event.
    """
    return _split(lambda d: TextMessageContentEvent(message_id=message_id, delta=d), delta, limit)


def split_tool_call_args(
    tool_call_id: str, delta: str, limit: int = MAX_EVENT_BYTES
) -> list[ToolCallArgsEvent]:
    """Split a tool-call argument delta into TOOL_CALL_ARGS events (as above)."""
    return _split(lambda d: ToolCallArgsEvent(tool_call_id=tool_call_id, delta=d), delta, limit)
