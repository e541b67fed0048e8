"""A graph run's node states, as ``rt.graph_state`` returns them (R23).

Plain msgspec records, so the same value is what the HTTP route (``GET
/runs/{id}/graph``) and ``perdure runs graph --json`` print.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from perdure.storage import ErrorInfo

__all__ = ["NODE_STATUSES", "GraphState", "NodeState", "NodeStatus"]

NodeStatus = Literal["pending", "running", "completed", "failed", "skipped", "cancelled"]
NODE_STATUSES: tuple[NodeStatus, ...] = (
    "pending",
    "running",
    "completed",
    "failed",
    "skipped",
    "cancelled",
)


class NodeState(msgspec.Struct, omit_defaults=True):
    """One node's state in one run.

    ``status``: ``pending`` (not reached), ``running`` (reached and not finished: a
    step executing or retrying, a child run, a wait, a sleep, or a container with a
    node in flight), ``completed``, ``failed``, ``skipped`` (``skip_if``, or the arm of
    a branch not taken) or ``cancelled`` (stopped by a failure or a race's winner, or
    in flight when the run ended). A branch of a parallel, map or ``depends_on``
    sequence that never started (``concurrency``, unmet dependencies) before a failure
    or a winner ended its container is ``cancelled`` too, like the ones it stopped; the
    nodes inside such a branch stay ``pending``. ``attempt`` counts attempts (0: never started).
    ``started_at`` is when the node became ready (what it waited for had finished) and
    ``finished_at`` when its outcome was recorded, in seconds since the epoch.
    """

    status: NodeStatus
    kind: str
    path: str
    attempt: int = 0
    output: Any = None
    error: ErrorInfo | None = None
    started_at: float | None = None
    finished_at: float | None = None


class GraphState(msgspec.Struct):
    """Every node's state in a step-graph run, and the nodes in flight (``current``).

    ``nodes`` is keyed by node key: the id, plus the index of each enclosing loop
    iteration or map item (``line[3]``); nodes inside a loop or a map that has not run
    them yet have no entry. ``complete`` is False when the graph's definition (the
    version the run pinned) is not registered where the state was read: then only the
    nodes the run has recorded are listed.
    """

    run_id: str
    target: str
    version: int | None
    status: str
    nodes: dict[str, NodeState]
    current: list[str]
    complete: bool = True
