"""Step-graph workflows (R23): declare a workflow as a graph of nodes instead of code.

::

    from perdure import graph as g

    rt.graph("order", g.Graph(
        g.step("fetch", fetch),                       # fn(c: g.NodeContext) -> output
        g.parallel("checks", [g.step("fraud", fraud), g.step("stock", stock)]),
        g.branch("big", when=lambda c: c.outputs["fetch"]["total"] > 100,
                 then=[g.approval("ok", approvers=["ann"])]),
        g.map("ship", items=lambda c: c.outputs["fetch"]["lines"],
              each=g.step("line", ship), concurrency=4),
        version=1, output=lambda c: {"shipped": c.outputs["ship"]},
    ))
    run = await rt.start("workflow:order", {"id": 7}, owner=perdure.Project("p1"))
    rt.graph_state(run.run.id)          # every node's status, output, error, times

A graph runs as the body of an ordinary workflow run, on the same journal: every node
is durable, a replay (after a crash, a wait, a passivation) never runs a finished node
again, waits are AG-UI interrupts, and each node that does work logs a
``STEP_STARTED``/``STEP_FINISHED`` pair named by its path. The node kinds and their
options are in :mod:`perdure.graph._nodes`; keys, paths and lanes in
:mod:`perdure.graph._walk`; versions in :mod:`perdure.graph._graph`; how node state
is derived from storage in :mod:`perdure.graph._derive`.
"""

from ._context import NodeContext, Outputs
from ._derive import derive_state
from ._errors import (
    ApprovalExpired,
    ApprovalRejected,
    GraphCallbackError,
    InvalidGraph,
    LoopLimitReached,
    NodeFailed,
)
from ._graph import Graph
from ._mermaid import to_mermaid
from ._nodes import (
    Approval,
    Branch,
    Loop,
    Map,
    Node,
    Parallel,
    Sleep,
    Step,
    SubWorkflow,
    WaitEvent,
    approval,
    branch,
    loop,
    map,
    parallel,
    sleep,
    step,
    sub_workflow,
    wait_event,
)
from ._state import NODE_STATUSES, GraphState, NodeState, NodeStatus
from ._versions import GraphVersions

__all__ = [
    "NODE_STATUSES",
    "Approval",
    "ApprovalExpired",
    "ApprovalRejected",
    "Branch",
    "Graph",
    "GraphCallbackError",
    "GraphState",
    "GraphVersions",
    "InvalidGraph",
    "Loop",
    "LoopLimitReached",
    "Map",
    "Node",
    "NodeContext",
    "NodeFailed",
    "NodeState",
    "NodeStatus",
    "Outputs",
    "Parallel",
    "Sleep",
    "Step",
    "SubWorkflow",
    "WaitEvent",
    "approval",
    "branch",
    "derive_state",
    "loop",
    "map",
    "parallel",
    "sleep",
    "step",
    "sub_workflow",
    "to_mermaid",
    "wait_event",
]
