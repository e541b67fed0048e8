"""Values the Runtime API returns."""

from __future__ import annotations

from typing import Any

import msgspec

from perdure.storage import RunRecord

from ._agui import Event, event_to_json

__all__ = ["Cancelled", "Page", "RunEvent", "Started"]


class Started(msgspec.Struct, frozen=True):
    """Result of ``start``: the run, and whether it already existed (R4)."""

    run: RunRecord
    duplicate: bool = False


class Cancelled(msgspec.Struct, frozen=True):
    """Result of ``cancel``: ``cancelled`` is False when the run was already terminal."""

    cancelled: bool
    run: RunRecord


class Page(msgspec.Struct, frozen=True):
    """One page of ``list``; pass ``next_cursor`` as ``after`` for the next one."""

    runs: list[RunRecord]
    next_cursor: str | None = None


class RunEvent(msgspec.Struct, frozen=True):
    """One committed entry of a run's log."""

    run_id: str
    event_id: int
    event: Event

    @property
    def type(self) -> str:
        return type(self.event).__struct_config__.tag  # type: ignore[return-value]

    def to_wire(self) -> dict[str, Any]:
        """The AG-UI wire form (camelCase JSON object) of the event."""
        result: dict[str, Any] = msgspec.json.decode(event_to_json(self.event))
        return result
