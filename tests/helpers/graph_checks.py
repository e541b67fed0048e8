"""Invariants of step-graph runs: the derived node state agrees with the run's log.

:func:`assert_graph_consistent` checks one run through the public API:

- the log is valid AG-UI (:func:`helpers.checks.assert_valid_log`);
- every ``STEP_STARTED`` is closed by a ``STEP_FINISHED`` of the same name once the run
  is terminal, and every step name in the log is the path of a node in the state;
- a completed node that does work (a step, a child run, a wait, a sleep) has its step
  pair in the log; a node shown ``pending`` or ``skipped`` has none;
- ``current`` lists exactly the ``running`` nodes, and a terminal run has none.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import perdure
from perdure import graph as g

from .checks import assert_valid_log

__all__ = ["LEAVES", "assert_graph_consistent", "statuses"]

LEAVES = frozenset({"step", "sub_workflow", "approval", "wait_event", "sleep"})


def statuses(state: g.GraphState) -> dict[str, str]:
    return {key: node.status for key, node in state.nodes.items()}


async def assert_graph_consistent(
    rt: perdure.Runtime, run_id: str
) -> tuple[g.GraphState, list[dict[str, Any]]]:
    state = rt.graph_state(run_id)
    log = await assert_valid_log(rt, run_id)
    rec = rt.get(run_id)
    started = Counter(e["stepName"] for e in log if e["type"] == "STEP_STARTED")
    finished = Counter(e["stepName"] for e in log if e["type"] == "STEP_FINISHED")
    if rec.terminal:
        assert started == finished, f"unclosed steps: {started - finished}"
        assert state.current == [], f"a terminal run has nodes in flight: {state.current}"
    paths = {node.path for node in state.nodes.values()}
    assert set(started) <= paths, f"steps that are no node: {set(started) - paths}"
    for key, node in state.nodes.items():
        if node.status == "completed" and node.kind in LEAVES:
            assert finished[node.path] >= 1, f"{key} completed without its step in the log"
        if node.status in ("pending", "skipped"):
            assert started[node.path] == 0, f"{key} is {node.status} but logged a step"
    assert state.current == [k for k, n in state.nodes.items() if n.status == "running"]
    return state, log
