"""Snapshots (R22): a run's log folded into what a UI needs to rebuild itself.

The fold itself is :func:`perdure.agui.fold_events` (pure, over AG-UI events); this
module feeds it a run's committed events and the run's own starting point: an agent
run's input messages and state, which perdure does not repeat on ``RUN_STARTED`` but
which are part of the conversation all the same.
"""

from __future__ import annotations

from typing import Any

from perdure.agui import LogSnapshot, fold_events
from perdure.storage import RunRecord, Store

from ._results import Snapshot

__all__ = ["seed_of", "snapshot_of"]


def seed_of(rec: RunRecord) -> LogSnapshot:
    """Where a fold of ``rec``'s log starts: an agent run's input messages and state."""
    inp: Any = rec.input
    if rec.kind != "agent" or not isinstance(inp, dict):
        return LogSnapshot()
    messages = inp.get("messages")
    state = inp.get("state")
    return LogSnapshot(
        messages=[m for m in messages if isinstance(m, dict)] if isinstance(messages, list) else [],
        state=state if state not in (None, {}) else None,
    )


def snapshot_of(store: Store, rec: RunRecord, upto: int | None) -> Snapshot:
    """``rec``'s log folded up to event ``upto`` (the whole committed log when None)."""
    limit = 1 << 62 if upto is None else upto
    events = store.read_events(rec.id, 0, limit) if limit > 0 else []
    snap = fold_events((event for _, event in events), start=seed_of(rec))
    return Snapshot(
        after_event_id=snap.after_event_id,
        messages=snap.messages,
        state=snap.state,
        open_tool_calls=snap.open_tool_calls,
        interrupts=snap.interrupts,
        run=rec,
    )
