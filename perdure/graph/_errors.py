"""The errors a step graph adds, each with a stable code (R23).

A failed run stores ``{code, message, detail}`` of the error that ended it, so these
codes are what programs match on: a rejected approval fails the run with
``APPROVAL_REJECTED``, an expired one with ``APPROVAL_EXPIRED``, a loop that would need
more than ``max_iterations`` with ``LOOP_LIMIT_REACHED``. ``detail["node"]`` names the
node (its key, see :mod:`._walk`).
"""

from __future__ import annotations

from perdure._errors import InvalidInput, PerdureError, WaitExpired

__all__ = [
    "ApprovalExpired",
    "ApprovalRejected",
    "GraphCallbackError",
    "InvalidGraph",
    "LoopLimitReached",
    "NodeFailed",
]


class InvalidGraph(InvalidInput):
    """A graph definition refused at registration (duplicate ids, unknown targets …)."""

    code = "INVALID_GRAPH"
    http_status = 400


class ApprovalRejected(PerdureError):
    """An approval node's decision was a rejection: the run fails (R23)."""

    code = "APPROVAL_REJECTED"
    http_status = 409


class ApprovalExpired(WaitExpired):
    """An approval node's deadline passed before a decision: the run fails (R23)."""

    code = "APPROVAL_EXPIRED"


class LoopLimitReached(PerdureError):
    """A loop node ran ``max_iterations`` times and its condition still asks for more."""

    code = "LOOP_LIMIT_REACHED"


class NodeFailed(PerdureError):
    """A node failed: a child run of a task, agent or sub-workflow node, every branch of
    a race, or an item of a map whose ``on_error`` is ``"fail"`` wraps its cause here."""

    code = "NODE_FAILED"


class GraphCallbackError(PerdureError):
    """A callable of the definition (``when``, ``until``, ``items``, ``skip_if``, an input
    or output mapper …) raised: the node it belongs to fails with this."""

    code = "GRAPH_CALLBACK_FAILED"
