"""The walk: how a graph runs, written once for running it and for reading its state (R23).

:class:`Walk` interprets the nodes; everything that touches the run (steps, waits,
child runs, sleeps, concurrency) goes through an :class:`Effects` object. Two exist:

- :class:`~._live.Live` runs the graph inside the run's body, on its
  :class:`~perdure.RunContext`;
- :class:`~._derive.Derive` re-walks a run from its stored journal without running
  anything, to derive every node's state (``rt.graph_state``): a node whose result is
  recorded is done, the first node of a branch of the walk without a record is where
  that branch is (``running``), and what lies beyond is ``pending``.

Because both go through the same control flow (the same ``skip_if``, ``when``,
``until``, ``items`` on the same recorded outputs), the state a run shows is exactly
what a replay would do: a node shown ``completed`` is one whose result the replay
returns without running it again.

Keys, paths and lanes. A node runs under its *key*: its id, plus ``[i]`` for each
enclosing loop iteration or map item (:mod:`._context`). Its *path* is the keys of its
containers and its own, joined by ``/`` (``checks/fraud``, ``ship/line[3]``,
``poll/ship[1]/line[1][3]``): the path names its step in the journal and its
``STEP_STARTED``/``STEP_FINISHED`` pair in the log, and is unique by construction. The
branches of a parallel, the items of a map and the nodes of a ``depends_on`` sequence
run in concurrent tasks, each in a *lane* named by its key (nested: ``a/b``), so their
journal entries are keyed (``step:LANE|PATH#1``, see ``perdure.runtime._journal``);
sequential parts at the top level are positional, like any body's steps.

How each node records its outcome (what a replay finds, and the derivation reads):

- ``step`` functions: their own step, named by the path;
- task, agent and sub-workflow nodes, approvals, event waits, sleeps: the action itself
  (child start, wait, sleep), then a step named by the path recording the node's output
  (or its failure), so every node that does something has one step in the log;
- containers record nothing: their state follows from their nodes' records and their
  predicates, except a race, whose winner is recorded (a step named by its path) so that
  a replay never starts the losers again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, Literal, Protocol

import msgspec

from perdure._errors import PerdureError
from perdure.storage import ErrorInfo

from ._context import NodeContext, Outputs
from ._errors import GraphCallbackError, LoopLimitReached, NodeFailed
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

if TYPE_CHECKING:
    from ._graph import Graph

__all__ = ["Effects", "Frontier", "Outcome", "Scope", "Skipped", "Strand", "Walk", "error_info"]


class Frontier(Exception):
    """Derivation only: this branch of the walk reached a node without a record."""


class Skipped(Exception):
    """A race's branch was skipped (``skip_if``): it ran nothing, so it cannot win."""


Stop = Literal["failure", "success"] | None


# The walk's own records are msgspec structs with ``gc=False``: they are never part of a
# reference cycle (scopes point at output dicts, never back), so the cyclic GC need not
# track them, and graph runs in flight keep tens of thousands of them alive (every
# tracked object is traversed by every collection).


class Outcome(msgspec.Struct, gc=False):
    """How one concurrent branch ended: ``ok`` (``value``), ``failed`` (``error``),
    ``frontier`` (derivation: not finished), or ``None``: never started, or cancelled.
    ``seq`` orders the branches by when they ended (a race's winner ended first)."""

    status: str | None = None
    value: Any = None
    error: Exception | None = None
    seq: int = 0


class Scope(msgspec.Struct, gc=False):
    """Where the walk is: key suffix, path prefix, lane, output layers, repetition.

    ``t`` (derivation only) is when this branch of the walk got here: the latest record
    it has seen.
    """

    suffix: str
    prefix: str
    lane: str | None
    layers: tuple[dict[str, Any], ...]
    local: dict[str, Any] | None
    t: float
    item: Any = None
    index: int | None = None
    iteration: int | None = None
    cached_view: Any = None

    @property
    def view(self) -> Any:
        """What ``c.outputs`` is here (made when first asked: most steps never look)."""
        view = self.cached_view
        if view is None:
            layers = self.layers
            view = self.cached_view = layers[0] if len(layers) == 1 else Outputs(layers)
        return view

    def inside(self, path: str) -> Scope:
        """The scope of a container's sequential nodes (same task, same lane)."""
        return Scope(
            self.suffix,
            path + "/",
            self.lane,
            self.layers,
            self.local,
            self.t,
            self.item,
            self.index,
            self.iteration,
        )

    def strand(self, prefix: str, key: str) -> Scope:
        """The scope of one concurrent branch, in its own lane named ``key``."""
        lane = key if self.lane is None else f"{self.lane}/{key}"
        return Scope(
            self.suffix,
            prefix,
            lane,
            self.layers,
            self.local,
            self.t,
            self.item,
            self.index,
            self.iteration,
        )

    def repeat(
        self,
        path: str,
        index: int,
        lane_key: str | None,
        *,
        item: Any = None,
        is_item: bool = False,
    ) -> Scope:
        """The scope of loop iteration or map item ``index``: a new output layer."""
        local: dict[str, Any] = {}
        lane = self.lane
        if lane_key is not None:
            lane = lane_key if lane is None else f"{lane}/{lane_key}"
        return Scope(
            f"{self.suffix}[{index}]",
            path + "/",
            lane,
            (local, *self.layers),
            local,
            self.t,
            item if is_item else self.item,
            index if is_item else self.index,
            self.iteration if is_item else index,
        )


class Strand(msgspec.Struct, gc=False):
    """One concurrent branch of the walk: its node, key (the lane it runs in), path,
    scope, and what runs it."""

    node: Node
    key: str
    path: str
    scope: Scope
    run: Callable[[Scope], Awaitable[Any]]


class Effects(Protocol):
    """What the walk needs from the run (see the module docstring)."""

    runs: bool
    """True when the effects run the graph; False when they only read what it recorded."""

    def started(self, node: Node, key: str, path: str, scope: Scope) -> None: ...
    def completed(self, node: Node, key: str, output: Any, scope: Scope) -> None: ...
    def failed(self, node: Node, key: str, error: Exception, scope: Scope) -> None: ...
    def skipped(self, node: Node, key: str, path: str, scope: Scope) -> None: ...
    def not_run(self, node: Node, key: str, path: str, status: str) -> None: ...
    def cancelled(self, path: str) -> None: ...

    def step(
        self, node: Step, key: str, path: str, scope: Scope, c: NodeContext
    ) -> Awaitable[Any]: ...
    async def child(
        self, node: Step | SubWorkflow, key: str, path: str, scope: Scope, c: NodeContext
    ) -> Any: ...
    async def approval(self, node: Approval, key: str, path: str, scope: Scope) -> Any: ...
    async def wait_event(self, node: WaitEvent, key: str, path: str, scope: Scope) -> Any: ...
    async def sleep(
        self,
        node: Sleep,
        key: str,
        path: str,
        scope: Scope,
        seconds: float | None,
        until: float | None,
    ) -> Any: ...
    async def delay(self, seconds: float, scope: Scope) -> None: ...
    async def race_winner(self, path: str, scope: Scope) -> str | None: ...
    async def record_winner(self, path: str, scope: Scope, winner: str) -> None: ...
    async def strands(
        self, scope: Scope, strands: Sequence[Strand], limit: int | None, stop: Stop
    ) -> list[Outcome]: ...
    async def dag(
        self, scope: Scope, strands: Sequence[Strand], deps: Sequence[Sequence[int]]
    ) -> list[Outcome]: ...


class Walk:
    """One walk of one graph for one run (see the module docstring)."""

    __slots__ = ("ctx", "fx", "graph", "input", "outputs", "run_id", "skipped")

    def __init__(self, graph: Graph, fx: Effects, run_id: str, input: Any, ctx: Any = None) -> None:
        self.graph = graph
        self.fx = fx
        self.run_id = run_id
        self.input = input
        self.ctx = ctx
        self.outputs: dict[str, Any] = {}
        self.skipped: set[str] = set()

    def root(self, t: float = 0.0) -> Scope:
        return Scope("", "", None, (self.outputs,), None, t)

    async def run(self, scope: Scope) -> Any:
        """Walk every node; the run's result (``output(c)``, default by top-level id)."""
        await self.sequence(self.graph.nodes, scope)
        output = self.graph.output
        if output is None:
            return {node.id: self.outputs.get(node.id) for node in self.graph.nodes}
        c = NodeContext(None, self.run_id, self.input, scope, "", "")
        try:
            return output(c)
        except Exception as exc:
            raise GraphCallbackError(
                f"the graph's output function raised {type(exc).__name__}: {exc}", what="output"
            ) from exc

    def context(self, key: str, path: str, scope: Scope) -> NodeContext:
        return NodeContext(self.ctx, self.run_id, self.input, scope, key, path)

    def call(
        self, fn: Callable[[NodeContext], Any], what: str, key: str, path: str, scope: Scope
    ) -> Any:
        """Call one of the definition's functions; its exception fails the node."""
        try:
            return fn(self.context(key, path, scope))
        except Exception as exc:
            raise GraphCallbackError(
                f"node {key!r}: {what} raised {type(exc).__name__}: {exc}", node=key, what=what
            ) from exc

    # -- sequences -------------------------------------------------------------------------

    async def sequence(self, nodes: tuple[Node, ...], scope: Scope) -> Any:
        """Nodes one after another (or by ``depends_on``); the last one's output."""
        if id(nodes) in self.graph.dags:
            return await self._dag(nodes, scope)
        last = None
        for node in nodes:
            last = await self.node(node, scope)
        return last

    async def _dag(self, nodes: tuple[Node, ...], scope: Scope) -> Any:
        """A sequence with ``depends_on``: every node waits only for its dependencies
        (by default the node before it), each in a lane of its own; a failure cancels
        the rest."""
        index = {node.id: i for i, node in enumerate(nodes)}
        strands: list[Strand] = []
        deps: list[list[int]] = []
        for i, node in enumerate(nodes):
            key = node.id + scope.suffix
            path = scope.prefix + key
            strands.append(
                Strand(node, key, path, scope.strand(scope.prefix, key), self._runner(node))
            )
            if node.depends_on is None:
                deps.append([i - 1] if i else [])
            else:
                deps.append([index[dep] for dep in node.depends_on])
        outcomes = await self.fx.dag(scope, strands, deps)
        self._cancel_rest(outcomes, strands, failed=True)
        _raise_first_failure(outcomes)
        _frontier(outcomes)
        return outcomes[-1].value

    # -- one node --------------------------------------------------------------------------

    async def node(self, node: Node, scope: Scope) -> Any:
        key = node.id + scope.suffix
        path = scope.prefix + key
        fx = self.fx
        if node.skip_if is not None and self.call(node.skip_if, "skip_if", key, path, scope):
            fx.skipped(node, key, path, scope)
            self.skipped.add(key)
            output = None
        elif fx.runs:
            # Running: nothing to report, so the hooks are not even called (hot path).
            output = await _RUNNERS[type(node)](self, node, key, path, scope)
        else:
            fx.started(node, key, path, scope)
            try:
                output = await _RUNNERS[type(node)](self, node, key, path, scope)
            except Frontier:
                raise
            except Exception as exc:
                fx.failed(node, key, exc, scope)
                raise
            fx.completed(node, key, output, scope)
        self.outputs[key] = output
        if scope.local is not None:
            scope.local[node.id] = output
        return output

    def _skip_all(self, nodes: Sequence[Node], scope: Scope, prefix: str) -> None:
        for node in nodes:
            key = node.id + scope.suffix
            self.fx.not_run(node, key, prefix + key, "skipped")
            if not isinstance(node, Loop | Map):  # their nodes run under keys unknown yet
                self._skip_all(node.children(), scope, f"{prefix}{key}/")

    # -- kinds -----------------------------------------------------------------------------

    def _step(self, node: Step, key: str, path: str, scope: Scope) -> Awaitable[Any]:
        # A plain function handing back the step's coroutine: one frame less on the path
        # every step's suspensions and resumptions travel.
        c = self.context(key, path, scope)
        if node.fn is not None:
            return self.fx.step(node, key, path, scope, c)
        return self.fx.child(node, key, path, scope, c)

    async def _sub_workflow(self, node: SubWorkflow, key: str, path: str, scope: Scope) -> Any:
        return await self.fx.child(node, key, path, scope, self.context(key, path, scope))

    async def _approval(self, node: Approval, key: str, path: str, scope: Scope) -> Any:
        return await self.fx.approval(node, key, path, scope)

    async def _wait_event(self, node: WaitEvent, key: str, path: str, scope: Scope) -> Any:
        return await self.fx.wait_event(node, key, path, scope)

    async def _sleep(self, node: Sleep, key: str, path: str, scope: Scope) -> Any:
        seconds: float | None = None
        until: float | None = None
        if node.until is not None:
            until = float(self.call(node.until, "until", key, path, scope))
        elif callable(node.seconds):
            seconds = float(self.call(node.seconds, "seconds", key, path, scope))
        else:
            assert node.seconds is not None
            seconds = float(node.seconds)
        return await self.fx.sleep(node, key, path, scope, seconds, until)

    async def _branch(self, node: Branch, key: str, path: str, scope: Scope) -> Any:
        taken = bool(self.call(node.when, "when", key, path, scope))
        arm, other = (node.then, node.otherwise) if taken else (node.otherwise, node.then)
        self._skip_all(other, scope, path + "/")
        inner = scope.inside(path)
        try:
            last = await self.sequence(arm, inner)
        finally:
            scope.t = max(scope.t, inner.t)
        return {"taken": "then" if taken else "otherwise", "output": last}

    async def _loop(self, node: Loop, key: str, path: str, scope: Scope) -> Any:
        results: list[Any] = []
        # After each iteration a plain id names its latest run, at the loop's level too:
        # ``while_`` (checked before an iteration) and the nodes after the loop see it.
        target = scope.local if scope.local is not None else self.outputs
        i = 0
        while True:
            if node.while_ is not None and not self.call(node.while_, "while_", key, path, scope):
                break
            if i == node.max_iterations:
                raise LoopLimitReached(
                    f"loop {key!r} ran {i} iterations and its condition still asks for "
                    f"more (max_iterations={node.max_iterations})",
                    node=key,
                    max_iterations=node.max_iterations,
                )
            if i and node.delay:
                await self.fx.delay(node.delay, scope)
            inner = scope.repeat(path, i, None)
            try:
                results.append(await self.sequence(node.nodes, inner))
            finally:
                scope.t = max(scope.t, inner.t)
                assert inner.local is not None
                target.update(inner.local)
            if node.until is not None and self.call(node.until, "until", key, path, inner):
                break
            i += 1
        return results

    async def _parallel(self, node: Parallel, key: str, path: str, scope: Scope) -> Any:
        fx = self.fx
        children = node.nodes
        decided = None
        if node.mode == "race":
            decided = await fx.race_winner(path, scope)
            if decided is not None and fx.runs:
                # Decided by an earlier activation: only the winner replays, the losers
                # are never started again.
                for child in children:
                    if child.id != decided:
                        child_key = child.id + scope.suffix
                        fx.not_run(child, child_key, f"{path}/{child_key}", "cancelled")
                children = tuple(c for c in children if c.id == decided)
        strands = []
        race = node.mode == "race"
        for child in children:
            child_key = child.id + scope.suffix
            strands.append(
                Strand(
                    child,
                    child_key,
                    f"{path}/{child_key}",
                    scope.strand(path + "/", child_key),
                    partial(self._contender, child) if race else self._runner(child),
                )
            )
        stop: Stop = {"all": "failure", "race": "success", "all_settled": None}[node.mode]
        outcomes = await fx.strands(scope, strands, node.concurrency, stop)
        scope.t = max([scope.t, *(s.scope.t for s in strands)])
        if node.mode == "all":
            self._cancel_rest(outcomes, strands, failed=True)
            _raise_first_failure(outcomes)
            _frontier(outcomes)
            return {c.id: o.value for c, o in zip(children, outcomes, strict=True)}
        if node.mode == "all_settled":
            _frontier(outcomes)
            return {
                c.id: self._settled(o, s.key)
                for c, o, s in zip(children, outcomes, strands, strict=True)
            }
        ok = [i for i, o in enumerate(outcomes) if o.status == "ok"]
        if decided is not None:
            first = next(i for i, c in enumerate(children) if c.id == decided)
            if outcomes[first].status != "ok":
                raise Frontier()  # derivation: the recorded winner's own records are missing
            self._cancel_rest(outcomes, strands, failed=False)
            return {"winner": decided, "output": outcomes[first].value}
        if ok:
            first = min(ok, key=lambda i: outcomes[i].seq)
            self._cancel_rest(outcomes, strands, failed=False)
            winner = children[first].id
            await fx.record_winner(path, scope, winner)
            return {"winner": winner, "output": outcomes[first].value}
        _frontier(outcomes)
        errors = [o.error for o in outcomes if not isinstance(o.error, Skipped | None)]
        if not errors:
            # Every branch was skipped: nothing ran, so nothing won (and nothing is
            # recorded: the replay takes the same skips).
            return {"winner": None, "output": None}
        raise NodeFailed(
            f"race {key!r}: every branch failed ({len(errors)})",
            node=key,
            errors=[error_info(e).message for e in errors[:10]],
        ) from (errors[0] if errors else None)

    def _runner(self, node: Node) -> Callable[[Scope], Awaitable[Any]]:
        return partial(self.node, node)  # no coroutine of its own around the node's

    async def _contender(self, node: Node, scope: Scope) -> Any:
        """A race's branch: a skipped one ends as :class:`Skipped`, never a success."""
        output = await self.node(node, scope)
        if node.id + scope.suffix in self.skipped:
            raise Skipped(node.id)
        return output

    def _cancel_rest(
        self, outcomes: list[Outcome], strands: Sequence[Strand], *, failed: bool
    ) -> None:
        """Mark the branches a failure (``all``) or a winner (``race``) cancelled."""
        if failed and not any(o.status == "failed" for o in outcomes):
            return
        for outcome, strand in zip(outcomes, strands, strict=True):
            if outcome.status in ("frontier", None):
                self.fx.cancelled(strand.path)

    def _settled(self, outcome: Outcome, key: str) -> dict[str, Any]:
        """An ``all_settled`` / ``on_error="collect"`` entry."""
        if outcome.status == "ok":
            if key in self.skipped:
                return {"status": "skipped"}
            return {"status": "completed", "output": outcome.value}
        assert outcome.error is not None
        info = error_info(outcome.error)
        return {"status": "failed", "error": {"code": info.code, "message": info.message}}

    async def _map(self, node: Map, key: str, path: str, scope: Scope) -> Any:
        items = self.call(node.items, "items", key, path, scope)
        if not isinstance(items, list | tuple):
            raise GraphCallbackError(
                f"map {key!r}: items must return a list (got {type(items).__name__})",
                node=key,
                what="items",
            )
        each = node.each
        run = self._runner(each)
        head = f"{each.id}{scope.suffix}["
        strands = []
        for index, item in enumerate(items):
            each_key = f"{head}{index}]"
            inner = scope.repeat(path, index, each_key, item=item, is_item=True)
            strands.append(Strand(each, each_key, f"{path}/{each_key}", inner, run))
        stop: Stop = "failure" if node.on_error == "fail" else None
        outcomes = await self.fx.strands(scope, strands, node.concurrency, stop)
        scope.t = max([scope.t, *(s.scope.t for s in strands)])
        if node.on_error == "fail":
            self._cancel_rest(outcomes, strands, failed=True)
            _raise_first_failure(outcomes)
        _frontier(outcomes)
        if node.on_error == "collect":
            return [self._settled(o, s.key) for o, s in zip(outcomes, strands, strict=True)]
        return [o.value if o.status == "ok" else None for o in outcomes]


def _raise_first_failure(outcomes: list[Outcome]) -> None:
    for outcome in outcomes:
        if outcome.status == "failed":
            assert outcome.error is not None
            raise outcome.error


def _frontier(outcomes: list[Outcome]) -> None:
    if any(o.status != "ok" and o.status != "failed" for o in outcomes):
        raise Frontier()


def error_info(exc: BaseException) -> ErrorInfo:
    """The stored shape of a node's error."""
    if isinstance(exc, PerdureError):
        detail = exc.detail
        if exc.code == "STEP_FAILED" and detail.get("cause") in _GRAPH_CAUSES:
            # A leaf's recorded failure (see ``Live.fail``): its own code, not the step's.
            return ErrorInfo(detail["cause"], exc.message, dict(detail))
        return ErrorInfo(exc.code, exc.message, _plain(detail))
    return ErrorInfo("UNHANDLED_EXCEPTION", f"{type(exc).__name__}: {exc}", {})


_GRAPH_CAUSES = frozenset({"APPROVAL_REJECTED", "APPROVAL_EXPIRED", "NODE_FAILED", "WAIT_EXPIRED"})


def _plain(detail: dict[str, Any]) -> dict[str, Any]:
    simple = str | int | float | bool | None
    return {k: v if isinstance(v, simple) else repr(v) for k, v in detail.items()}


_RUNNERS: dict[type[Node], Callable[..., Awaitable[Any]]] = {
    Step: Walk._step,
    SubWorkflow: Walk._sub_workflow,
    Approval: Walk._approval,
    WaitEvent: Walk._wait_event,
    Sleep: Walk._sleep,
    Branch: Walk._branch,
    Loop: Walk._loop,
    Parallel: Walk._parallel,
    Map: Walk._map,
}
"""The node kinds and how the walk runs each (a table, not a chain of branches)."""
