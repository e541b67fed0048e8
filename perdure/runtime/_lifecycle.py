"""The run lifecycle (R1): the one table every status change goes through.

::

    pending ──> running ──> waiting ──> running ... ──> completed | failed | cancelled
       └──────────────────────└──────────────────────> cancelled

Terminal statuses never change again.
"""

from __future__ import annotations

from perdure._errors import InvalidTransition
from perdure.storage import STATUSES

__all__ = ["STATUSES", "TERMINAL", "TRANSITIONS", "check_transition", "is_terminal"]

TERMINAL: frozenset[str] = frozenset({"completed", "failed", "cancelled"})

TRANSITIONS: dict[str, frozenset[str]] = {
    "pending": frozenset({"running", "cancelled"}),
    "running": frozenset({"waiting", "completed", "failed", "cancelled"}),
    "waiting": frozenset({"running", "cancelled"}),
    "completed": frozenset(),
    "failed": frozenset(),
    "cancelled": frozenset(),
}


def is_terminal(status: str) -> bool:
    return status in TERMINAL


def check_transition(run_id: str, old: str, new: str) -> None:
    """Raise :class:`InvalidTransition` unless ``old -> new`` is in the lifecycle."""
    allowed = TRANSITIONS.get(old)
    if allowed is None or new not in allowed:
        raise InvalidTransition(
            f"run {run_id}: {old} -> {new} is not a valid transition",
            run_id=run_id,
            old=old,
            new=new,
        )
