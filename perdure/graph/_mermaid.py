"""A graph as Mermaid flowchart text, optionally coloured by a run's node states.

``perdure graph show NAME --app module:rt [--run ID]`` prints it. Containers are
subgraphs: a parallel's nodes side by side, a branch's decision with its two arms, a
loop's nodes with the edge back to its start, a map's node once per item. Nodes are
drawn by kind (a step a box, a sub-workflow a subroutine box, an approval a hexagon,
an event wait a flag, a sleep a stadium). With a :class:`GraphState`, each node gets
the class of its status; a node that runs once per loop iteration or map item shows
the most telling status of its runs (running, failed, cancelled, completed, skipped,
pending, in that order).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from ._graph import Graph
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
)
from ._state import GraphState

__all__ = ["to_mermaid"]

_STYLES = {
    "pending": "fill:#ffffff,stroke:#6b7280,color:#374151",
    "running": "fill:#dbeafe,stroke:#2563eb,stroke-width:2px,color:#1e3a8a",
    "completed": "fill:#d1fae5,stroke:#059669,color:#064e3b",
    "failed": "fill:#fee2e2,stroke:#dc2626,stroke-width:2px,color:#7f1d1d",
    "skipped": "fill:#f3f4f6,stroke:#9ca3af,stroke-dasharray:4 3,color:#6b7280",
    "cancelled": "fill:#fef3c7,stroke:#d97706,color:#78350f",
}
_RANK = ("running", "failed", "cancelled", "completed", "skipped", "pending")
_UNSAFE = re.compile(r"[^A-Za-z0-9_]")


def to_mermaid(graph: Graph, state: GraphState | None = None, *, title: str | None = None) -> str:
    """The flowchart of ``graph`` (validated, i.e. registered); coloured by ``state``."""
    lines = ["flowchart TD"]
    if title:
        lines.insert(0, f"---\ntitle: {_text(title)}\n---")
    ids = {node: f"n_{_UNSAFE.sub('_', node.id)}" for node in graph.walk()}
    drawer = _Drawer(ids, lines)
    drawer.sequence(graph.nodes, "  ")
    if state is not None:
        statuses = _statuses(graph, state)
        used = sorted(set(statuses.values()), key=_RANK.index)
        for status in used:
            lines.append(f"  classDef {status} {_STYLES[status]}")
        for status in used:
            members = [ids[node] for node, s in statuses.items() if s == status]
            lines.append(f"  class {','.join(members)} {status}")
    return "\n".join(lines) + "\n"


class _Drawer:
    def __init__(self, ids: dict[Node, str], lines: list[str]) -> None:
        self.ids = ids
        self.lines = lines
        self.extra = 0

    def sequence(self, nodes: Sequence[Node], indent: str) -> None:
        for node in nodes:
            self.node(node, indent)
        for i, node in enumerate(nodes):
            if node.depends_on is not None:
                deps = [n for n in nodes if n.id in node.depends_on]
            else:
                deps = [nodes[i - 1]] if i else []
            for dep in deps:
                self.lines.append(f"{indent}{self.ids[dep]} --> {self.ids[node]}")

    def node(self, node: Node, indent: str) -> None:
        mid = self.ids[node]
        out = self.lines
        label = node.id
        if node.skip_if is not None:
            label += " ⟂"  # a marker: may be skipped
        if isinstance(node, Step):
            if node.target is None:
                out.append(f'{indent}{mid}["{_text(label)}"]')
            else:
                out.append(f'{indent}{mid}[["{_text(label)} · {_text(node.target)}"]]')
        elif isinstance(node, SubWorkflow):
            out.append(f'{indent}{mid}[["{_text(label)} · {_text(node.target)}"]]')
        elif isinstance(node, Approval):
            out.append(f'{indent}{mid}{{{{"{_text(label)} · approval"}}}}')
        elif isinstance(node, WaitEvent):
            out.append(f'{indent}{mid}>"{_text(label)} · event {_text(node.event)}"]')
        elif isinstance(node, Sleep):
            out.append(f'{indent}{mid}(["{_text(label)} · sleep"])')
        elif isinstance(node, Parallel):
            head = f"{label} · parallel ({node.mode}"
            head += f", {node.concurrency} at a time)" if node.concurrency else ")"
            out.append(f'{indent}subgraph {mid}["{_text(head)}"]')
            out.append(f"{indent}  direction LR")
            for child in node.nodes:
                self.node(child, indent + "  ")
            out.append(f"{indent}end")
        elif isinstance(node, Branch):
            out.append(f'{indent}subgraph {mid}["{_text(label)} · branch"]')
            decision = f"{mid}__when"
            out.append(f'{indent}  {decision}{{"when"}}')
            for arm, name in ((node.then, "then"), (node.otherwise, "otherwise")):
                if arm:
                    self.sequence(arm, indent + "  ")
                    out.append(f"{indent}  {decision} -- {name} --> {self.ids[arm[0]]}")
                else:
                    self.extra += 1
                    skip = f"{mid}__{name}"
                    out.append(f'{indent}  {skip}(("{name}: nothing"))')
                    out.append(f"{indent}  {decision} -- {name} --> {skip}")
            out.append(f"{indent}end")
        elif isinstance(node, Loop):
            cond = "until" if node.until is not None else "while"
            head = f"{label} · loop ({cond}, at most {node.max_iterations})"
            out.append(f'{indent}subgraph {mid}["{_text(head)}"]')
            self.sequence(node.nodes, indent + "  ")
            first, last = self.ids[node.nodes[0]], self.ids[node.nodes[-1]]
            out.append(f"{indent}  {last} -. again .-> {first}")
            out.append(f"{indent}end")
        elif isinstance(node, Map):
            head = f"{label} · map (on_error {node.on_error}"
            head += f", {node.concurrency} at a time)" if node.concurrency else ")"
            out.append(f'{indent}subgraph {mid}["{_text(head)}"]')
            self.node(node.each, indent + "  ")
            out.append(f"{indent}end")


def _statuses(graph: Graph, state: GraphState) -> dict[Node, str]:
    by_id: dict[str, list[str]] = {}
    for key, node_state in state.nodes.items():
        by_id.setdefault(key.partition("[")[0], []).append(node_state.status)
    out: dict[Node, str] = {}
    for node in graph.walk():
        seen = by_id.get(node.id, [])
        if not seen:
            out[node] = "pending"
        elif "running" in seen:
            out[node] = "running"
        elif "failed" in seen:
            out[node] = "failed"
        elif "cancelled" in seen:
            out[node] = "cancelled"
        elif "completed" in seen:
            out[node] = "completed"
        elif all(s == "skipped" for s in seen):
            out[node] = "skipped"
        else:
            out[node] = "pending"
    return out


def _text(value: str) -> str:
    """Text inside a quoted Mermaid label: quotes and markup characters as entities."""
    return (
        value.replace("&", "#amp;").replace('"', "#quot;").replace("<", "#lt;").replace(">", "#gt;")
    )
