"""A graph run's node states, derived from what it stored (R23, ``rt.graph_state``).

Node state is part of the run: it is a function of the run's record, its journal and
the graph version it pinned, and nothing else is written for it. The derivation
re-walks the graph (:mod:`._walk`) with effects that run nothing: a node whose outcome
is recorded is ``completed`` or ``failed`` with its recorded output or error; the
first node of a branch of the walk without a record is where that branch is
(``running``); nodes never reached are ``pending``. Predicates see the recorded
outputs, so branches, loops, maps and skips come out exactly as the replay takes
them. The price is that a node's state is only as fresh as the last commit: a step
still executing in another process shows as ``running`` once the node before it is
recorded, which is also when it became ready.

Why derive rather than store: a stored state would be one more record per node,
written with the node's own commit (which costs writer records, the bound of the
write path) or in commits of its own (which cost flushes), for information the journal
already holds. Reading it from storage alone is also what lets it work for passivated
runs and from ``perdure runs graph`` beside a live process, on a read-only store.
"""

from __future__ import annotations

from collections.abc import Coroutine, Sequence
from typing import Any

from perdure._errors import StepFailed
from perdure.runtime import RecordedJournal, RecordedStep
from perdure.storage import ErrorInfo, JournalEntry, RunRecord

from ._context import NodeContext
from ._graph import Graph
from ._nodes import Approval, Node, Sleep, Step, SubWorkflow, WaitEvent
from ._state import GraphState, NodeState
from ._walk import Frontier, Outcome, Scope, Stop, Strand, Walk, error_info

__all__ = ["derive_state"]


def derive_state(
    rec: RunRecord, graph: Graph | None, entries: Sequence[JournalEntry]
) -> GraphState:
    """The :class:`GraphState` of run ``rec`` (its stored journal ``entries``).

    ``graph`` is the definition of the version the run pinned, or ``None`` when that is
    not registered here: the state then lists only the nodes the run recorded.
    """
    recorded = RecordedJournal(entries)
    if graph is None:
        return _recorded_only(rec, entries)
    fx = Derive(recorded)
    if rec.started_at is not None:  # a run still pending (or cancelled so) ran nothing
        walk = Walk(graph, fx, rec.id, rec.input)
        _drive(walk.run(walk.root(rec.started_at)))
    states = fx.states
    if rec.terminal:
        for state in states.values():
            if state.status == "running":
                state.status = "cancelled"
    for node, info in graph.info.items():
        if not info.repeated and node.id not in states:
            states[node.id] = NodeState("pending", node.kind, info.prefix + node.id)
    current = [key for key, state in states.items() if state.status == "running"]
    return GraphState(rec.id, rec.target, rec.version, rec.status, states, current)


def _drive(coro: Coroutine[Any, Any, Any]) -> None:
    """Run the walk to its end: its effects never suspend, so one ``send`` suffices."""
    try:
        coro.send(None)
    except StopIteration:
        return
    except (Frontier, Exception):
        return  # where the run is, or how it failed: the states say it
    finally:
        coro.close()
    raise AssertionError("the state derivation suspended")  # pragma: no cover


def _recorded_only(rec: RunRecord, entries: Sequence[JournalEntry]) -> GraphState:
    states: dict[str, NodeState] = {}
    for entry in entries:
        if entry.kind == "step":
            path = entry.name
        elif entry.kind == "kstep":
            head = entry.name.partition(":")[2].rpartition("#")[0]
            path = head.partition("|")[2] or head
        else:
            continue
        step = RecordedStep(entry.value, entry.error, entry.at, 1)
        key = path.rpartition("/")[2]
        states[key] = _outcome_state(step, "step", path, None)
    return GraphState(rec.id, rec.target, rec.version, rec.status, states, [], complete=False)


def _outcome_state(step: RecordedStep, kind: str, path: str, started: float | None) -> NodeState:
    if step.error is not None:
        return NodeState(
            "failed",
            kind,
            path,
            attempt=step.attempts,
            error=error_info(_failure(step.error)),
            started_at=started,
            finished_at=step.at,
        )
    return NodeState(
        "completed",
        kind,
        path,
        attempt=step.attempts,
        output=step.result(),
        started_at=started,
        finished_at=step.at,
    )


def _failure(error: ErrorInfo) -> StepFailed:
    failure = StepFailed(error.message, **error.detail)
    return failure


class Derive:
    """The effects of a walk that reads the journal instead of running (see above)."""

    __slots__ = ("recorded", "states")
    runs = False

    def __init__(self, recorded: RecordedJournal) -> None:
        self.recorded = recorded
        self.states: dict[str, NodeState] = {}

    # -- what the walk reports -------------------------------------------------------------

    def started(self, node: Node, key: str, path: str, scope: Scope) -> None:
        self.states[key] = NodeState("running", node.kind, path, attempt=1, started_at=scope.t)

    def completed(self, node: Node, key: str, output: Any, scope: Scope) -> None:
        state = self.states[key]
        state.status = "completed"
        state.output = output
        state.finished_at = scope.t

    def failed(self, node: Node, key: str, error: Exception, scope: Scope) -> None:
        state = self.states[key]
        state.status = "failed"
        state.error = error_info(error)
        state.finished_at = scope.t

    def skipped(self, node: Node, key: str, path: str, scope: Scope) -> None:
        self.states[key] = NodeState("skipped", node.kind, path)

    def not_run(self, node: Node, key: str, path: str, status: str) -> None:
        if key not in self.states:
            self.states[key] = NodeState(status, node.kind, path)  # type: ignore[arg-type]

    def cancelled(self, path: str) -> None:
        """A branch a winner or a failure ended: what ran of it, or the branch itself if
        it never started (``concurrency``), is ``cancelled``."""
        inside = path + "/"
        for state in self.states.values():
            if state.path == path:
                if state.status in ("running", "pending"):
                    state.status = "cancelled"
            elif state.status == "running" and state.path.startswith(inside):
                state.status = "cancelled"

    # -- leaves: their records --------------------------------------------------------------

    def _record(self, key: str, path: str, scope: Scope) -> Any:
        step = self.recorded.step(path, keyed=scope.lane is not None, lane=scope.lane)
        state = self.states[key]
        if step is None:
            keyed = scope.lane is not None
            state.attempt = self.recorded.retries(path, scope.lane, keyed=keyed) + 1
            raise Frontier()
        state.attempt = step.attempts
        if step.at is not None and step.at > scope.t:
            scope.t = step.at
        if step.error is not None:
            raise _failure(step.error)
        return step.result()

    async def step(self, node: Step, key: str, path: str, scope: Scope, c: NodeContext) -> Any:
        return self._record(key, path, scope)

    async def child(
        self, node: Step | SubWorkflow, key: str, path: str, scope: Scope, c: NodeContext
    ) -> Any:
        try:
            return self._record(key, path, scope)
        finally:
            assert node.target is not None
            starts = self.recorded.count(
                "child", node.target, keyed=scope.lane is not None, lane=scope.lane
            )
            self.states[key].attempt = max(1, starts)

    async def approval(self, node: Approval, key: str, path: str, scope: Scope) -> Any:
        return self._record(key, path, scope)

    async def wait_event(self, node: WaitEvent, key: str, path: str, scope: Scope) -> Any:
        return self._record(key, path, scope)

    async def sleep(
        self,
        node: Sleep,
        key: str,
        path: str,
        scope: Scope,
        seconds: float | None,
        until: float | None,
    ) -> Any:
        return self._record(key, path, scope)

    async def delay(self, seconds: float, scope: Scope) -> None:
        """A loop's delay is not recorded by name: the next iteration shows where it is."""

    async def race_winner(self, path: str, scope: Scope) -> str | None:
        step = self.recorded.step(path, keyed=scope.lane is not None, lane=scope.lane)
        if step is None or step.error is not None:
            return None
        if step.at is not None and step.at > scope.t:
            scope.t = step.at
        return str(step.result()["winner"])

    async def record_winner(self, path: str, scope: Scope, winner: str) -> None:
        raise Frontier()  # a winner is known once it is recorded (race_winner found none)

    # -- concurrency: each branch in turn ---------------------------------------------------

    async def strands(
        self, scope: Scope, strands: Sequence[Strand], limit: int | None, stop: Stop
    ) -> list[Outcome]:
        """Walk each branch in turn. With a ``limit``, branches start in order as earlier
        ones finish, so the first ``limit`` unfinished ones are in flight and the rest
        have not started."""
        outcomes: list[Outcome] = []
        in_flight = 0
        for i, strand in enumerate(strands):
            if limit is not None and in_flight >= limit:
                self.not_run(strand.node, strand.key, strand.path, "pending")
                outcomes.append(Outcome())
                continue
            try:
                value = await strand.run(strand.scope)
            except Frontier:
                in_flight += 1
                outcomes.append(Outcome("frontier"))
            except Exception as exc:
                outcomes.append(Outcome("failed", error=exc, seq=i))
            else:
                outcomes.append(Outcome("ok", value, seq=i))
        return outcomes

    async def dag(
        self, scope: Scope, strands: Sequence[Strand], deps: Sequence[Sequence[int]]
    ) -> list[Outcome]:
        outcomes: list[Outcome] = []
        for i, strand in enumerate(strands):
            if any(outcomes[dep].status != "ok" for dep in deps[i]):
                self.not_run(strand.node, strand.key, strand.path, "pending")
                outcomes.append(Outcome())
                continue
            try:
                value = await strand.run(strand.scope)
            except Frontier:
                outcomes.append(Outcome("frontier"))
            except Exception as exc:
                outcomes.append(Outcome("failed", error=exc))
            else:
                outcomes.append(Outcome("ok", value))
            if strand.scope.t > scope.t:
                scope.t = strand.scope.t
        return outcomes
