"""Values the Runtime API returns."""

from __future__ import annotations

from typing import Any

import msgspec

from perdure._errors import InvalidInput
from perdure.agui import Event, Interrupt, event_to_json
from perdure.storage import STATUSES, RunRecord

__all__ = [
    "Cancelled",
    "Page",
    "RunEvent",
    "RuntimeStats",
    "Snapshot",
    "Started",
    "TargetInfo",
    "check_statuses",
    "parse_cursor",
]


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


class Snapshot(msgspec.Struct, frozen=True):
    """A run's log folded up to ``after_event_id`` (``rt.snapshot``, R22).

    ``messages`` are AG-UI wire message dicts (text, tool calls with their arguments
    and results, reasoning), ``state`` the shared state after every ``STATE_SNAPSHOT``
    and JSON Patch ``STATE_DELTA``, ``open_tool_calls`` the tool calls without a result
    yet, ``interrupts`` the open interrupts if the log ended on one, ``run`` the record.
    """

    after_event_id: int
    messages: list[dict[str, Any]]
    state: Any
    open_tool_calls: list[str]
    interrupts: list[Interrupt]
    run: RunRecord


class TargetInfo(msgspec.Struct, frozen=True, omit_defaults=True):
    """A registered definition, as ``rt.targets()`` lists it."""

    target: str
    kind: str
    name: str
    description: str | None = None
    timeout: float | None = None
    input_schema: dict[str, Any] | None = None
    output_schema: dict[str, Any] | None = None
    max_attempts: int | None = None
    version: int | None = None


class RuntimeStats(msgspec.Struct, frozen=True):
    """Counters of an open runtime (``rt.stats()``), for monitoring and benchmarks.

    ``txns`` write transactions (one flush each in ``sync`` mode), ``batches`` commits
    grouped into them, ``records`` LMDB puts and deletes; ``live_actors`` runs with an
    actor in memory, ``passivations`` actors stopped to save memory so far, ``running``
    top-level bodies holding a ``max_running`` slot (0 without a cap).
    """

    txns: int
    batches: int
    records: int
    map_grows: int
    map_size: int
    live_actors: int
    passivations: int
    running: int


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


def check_statuses(status: str | list[str] | None, what: str = "status") -> set[str] | None:
    """The status filter of a list query as a set; :class:`InvalidInput` if malformed."""
    if status is None:
        return None
    values = [status] if isinstance(status, str) else status
    if not isinstance(values, list | tuple | set) or not values:
        raise InvalidInput(f"{what} must be a status or a non-empty list of statuses")
    for value in values:
        if value not in STATUSES:
            raise InvalidInput(f"{what} must be one of {', '.join(STATUSES)} (got {value!r})")
    return set(values)


def parse_cursor(after: str | None, what: str = "after") -> int:
    """A :attr:`Page.next_cursor` back as the creation seq it stands for (0 for None)."""
    if after is None:
        return 0
    if not isinstance(after, str) or not after.isascii() or not after.isdigit() or len(after) > 18:
        raise InvalidInput(f"{what} must be a cursor returned by a previous page (got {after!r})")
    return int(after)
