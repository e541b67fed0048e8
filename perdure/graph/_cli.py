"""The step-graph command lines: ``perdure runs graph`` and ``perdure graph show``.

::

    perdure runs graph ID [--dir D] [--app MODULE:ATTR] [--json]
    perdure graph show NAME --app MODULE:ATTR [--version V] [--run ID [--dir D]]

``runs graph`` prints a graph run's node states (``rt.graph_state``) from the data
directory opened read-only, so it works beside the process that owns it (R27) and for
passivated runs. Node state is derived from the run's journal and its graph
definition: ``--app`` names the program's :class:`~perdure.Runtime` (``module:attr``,
imported from the current directory first; a function returning one, or a ``Host``,
works too) so that every node is listed, pending and skipped ones included. Without
it only the nodes the run has recorded are shown (a run that is not a step-graph run
is refused either way, as ``rt.graph_state`` and the HTTP route refuse it).

``graph show`` prints the graph (the newest version, or ``--version``) as Mermaid
flowchart text; with ``--run`` its nodes are coloured by that run's states.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import Any

import msgspec
from rich.console import Console
from rich.table import Table
from rich.text import Text

from perdure._errors import InvalidInput, RunNotFound
from perdure._load_app import load_runtime
from perdure.storage import Store

from ._derive import derive_state
from ._graph import Graph
from ._mermaid import to_mermaid
from ._state import GraphState
from ._versions import GraphVersions

__all__ = ["add_commands"]

EXIT_OK = 0

_STYLE = {
    "pending": "dim",
    "running": "cyan",
    "completed": "green",
    "failed": "bold red",
    "skipped": "dim italic",
    "cancelled": "yellow",
}


def add_commands(
    sub: Any, runs_sub: Any, add_dir: Callable[[argparse.ArgumentParser], None]
) -> None:
    """Register ``perdure runs graph`` and ``perdure graph show``."""
    p = runs_sub.add_parser("graph", help="a step-graph run's node states")
    p.add_argument("run_id", metavar="ID")
    add_dir(p)
    p.add_argument(
        "--app",
        metavar="MODULE:ATTR",
        help="the program's Runtime, for every node of the graph (else recorded nodes only)",
    )
    p.add_argument("--json", action="store_true", help="print the GraphState as JSON")
    p.set_defaults(func=_cmd_runs_graph)

    graph = sub.add_parser("graph", help="step-graph definitions")
    graph_sub = graph.add_subparsers(dest="graph_command", metavar="ACTION")
    graph_sub.required = True
    p = graph_sub.add_parser("show", help="print a step graph as Mermaid flowchart text")
    p.add_argument("name", metavar="NAME", help="the graph's name (target workflow:NAME)")
    p.add_argument("--app", metavar="MODULE:ATTR", required=True, help="the program's Runtime")
    p.add_argument("--version", type=int, metavar="V", help="this version (default: newest)")
    p.add_argument("--run", metavar="ID", help="colour the nodes by this run's states")
    add_dir(p)
    p.set_defaults(func=_cmd_graph_show)


# -- commands ----------------------------------------------------------------------------------


def _cmd_runs_graph(args: argparse.Namespace) -> int:
    graphs = dict(load_runtime(args.app).graphs) if args.app else None
    state = _read_state(_directory(args), args.run_id, graphs)
    if args.json:
        sys.stdout.write(msgspec.json.encode(state).decode() + "\n")
        return EXIT_OK
    _print_state(state, with_app=graphs is not None)
    return EXIT_OK


def _cmd_graph_show(args: argparse.Namespace) -> int:
    graphs = dict(load_runtime(args.app).graphs)
    versions = graphs.get(args.name)
    if versions is None:
        known = ", ".join(sorted(graphs)) or "none"
        raise InvalidInput(f"the app registers no step graph {args.name!r} (graphs: {known})")
    graph = versions.latest if args.version is None else versions.get(args.version)
    if graph is None:
        raise InvalidInput(
            f"graph {args.name!r} has no version {args.version} "
            f"(registered: {', '.join(map(str, sorted(versions.graphs)))})"
        )
    state = None
    if args.run is not None:
        state = _read_state(_directory(args), args.run, {args.name: versions})
        if state.target != f"workflow:{args.name}":
            raise InvalidInput(f"run {args.run} is a run of {state.target}, not of {args.name}")
        if state.version != graph.version:
            pinned = versions.get(state.version)
            if pinned is None:
                raise InvalidInput(f"run {args.run} pinned version {state.version}, not registered")
            graph = pinned
    title = f"workflow:{args.name} v{graph.version}" + (f" · run {args.run}" if args.run else "")
    sys.stdout.write(to_mermaid(graph, state, title=title))
    return EXIT_OK


# -- helpers ---------------------------------------------------------------------------------


def _directory(args: argparse.Namespace) -> str:
    return str(args.dir) if args.dir else (os.environ.get("PERDURE_DIR") or "data/")


def _read_state(directory: str, run_id: str, graphs: dict[str, GraphVersions] | None) -> GraphState:
    """The run's state from a read-only store; ``graphs`` the app's (``None``: no app)."""
    store = Store(directory, readonly=True)
    try:
        rec = store.get_run(run_id)
        if rec is None:
            raise RunNotFound(f"no run {run_id!r}", run_id=run_id)
        graph: Graph | None = None
        if graphs is None:
            # No app: what the store alone tells. Every step-graph run is a workflow
            # that pinned its graph's version; anything else is refused, as
            # rt.graph_state and the HTTP route refuse it (a versioned code workflow
            # cannot be told apart without the app).
            if not rec.target.startswith("workflow:") or rec.version is None:
                raise InvalidInput(f"run {run_id} ({rec.target}) is not a step-graph run")
        else:
            name = rec.target.partition(":")[2]
            found = graphs.get(name) if rec.target.startswith("workflow:") else None
            if found is None:
                raise InvalidInput(
                    f"run {run_id} ({rec.target}) is not a step-graph run of the app"
                )
            graph = found.get(rec.version)
        return derive_state(rec, graph, store.journal(run_id))
    finally:
        store.close()


def _print_state(state: GraphState, *, with_app: bool = False) -> None:
    console = Console(file=sys.stdout, width=None if sys.stdout.isatty() else 200, highlight=False)
    title = f"{state.target} v{state.version} · run {state.run_id} · {state.status}"
    table = Table(title=Text(title), title_justify="left")
    for column in ("node", "status", "kind", "attempt", "path", "output / error"):
        table.add_column(column, no_wrap=column in ("node", "status"))
    for key, node in state.nodes.items():
        detail = ""
        if node.error is not None:
            detail = f"{node.error.code}: {node.error.message}"
        elif node.status == "completed":
            detail = _short(node.output)
        table.add_row(
            Text(key),
            Text(node.status, style=_STYLE.get(node.status, "")),
            Text(node.kind),
            Text(str(node.attempt or "")),
            Text(node.path),
            Text(detail),
        )
    console.print(table)
    if not state.complete:
        if with_app:
            hint = (
                f"version {state.version} of this graph is not registered in the app: "
                "only the nodes this run recorded are shown"
            )
        else:
            hint = "only the nodes this run recorded are shown: pass --app MODULE:ATTR for all"
        console.print(Text(hint))
    if state.current:
        console.print(Text(f"in flight: {', '.join(state.current)}"))


def _short(value: Any, limit: int = 80) -> str:
    try:
        text = json.dumps(msgspec.to_builtins(value), ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
