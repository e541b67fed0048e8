"""The node kinds of a step graph and the functions that declare them (R23).

A definition is plain data plus callables: frozen dataclasses whose fields are ids,
options and the functions the walk calls (step functions, predicates, mappers). Every
callable that decides control flow (``skip_if``, ``when``, ``until``/``while_``,
``items``, input and output mappers, the graph's ``output``) takes a
:class:`~._context.NodeContext` and must be a pure function of it (``c.input``,
``c.outputs`` …): a replay and the state derivation call them again and must get the
same answer. Work with side effects belongs in ``step`` functions.

=============== ==============================================================================
kind            what it does
=============== ==============================================================================
``step``        ``fn(c)`` (async, or sync in a worker thread unless inline) as one durable
                step; or a ``task:``/``agent:`` target run as a child run
``parallel``    its nodes at once: ``mode="all"`` (fail fast), ``"race"`` (the first to
                succeed wins, the others are cancelled), ``"all_settled"`` (collect
                every outcome); ``concurrency`` bounds how many run at once
``branch``      ``when(c)``: the ``then`` nodes, else the ``otherwise`` nodes
``loop``        its nodes again and again: ``until(c)`` after each iteration or
                ``while_(c)`` before each; at most ``max_iterations`` (default 10, at most
                100), else ``LOOP_LIMIT_REACHED``; optional durable ``delay`` between
``map``         ``each`` once per item of ``items(c)``, ``concurrency`` at a time;
                ``on_error``: ``"fail"`` (default), ``"skip"`` (the item's output is
                ``None``) or ``"collect"`` (outputs become settled records)
``sub_workflow`` a ``workflow:`` target as a child run, with ``input``/``output`` mappers
``approval``    a human decision (allow-list, response schema, ``timeout`` = expiry); a
                rejection or an expiry fails the run
``wait_event``  an :class:`~perdure.ExternalEvent` named ``event``
``sleep``       a durable sleep (``seconds``, or ``until`` a timestamp)
=============== ==============================================================================

Every node takes ``skip_if`` and ``depends_on``; ``retry`` applies to ``step`` and
``sub_workflow`` nodes and ``timeout`` to those and to ``approval`` and ``wait_event``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from perdure.runtime import RetryPolicy

if TYPE_CHECKING:
    from ._context import NodeContext

__all__ = [
    "Approval",
    "Branch",
    "Loop",
    "Map",
    "Mode",
    "Node",
    "OnError",
    "Parallel",
    "Sleep",
    "Step",
    "SubWorkflow",
    "WaitEvent",
    "approval",
    "branch",
    "loop",
    "map",
    "parallel",
    "sleep",
    "step",
    "sub_workflow",
    "wait_event",
]

Mode = Literal["all", "race", "all_settled"]
OnError = Literal["fail", "skip", "collect"]
Predicate = Callable[["NodeContext"], bool]
Mapper = Callable[["NodeContext"], Any]

MAX_ITERATIONS = 100
"""The hard cap of ``loop(max_iterations=…)``."""


@dataclass(frozen=True, kw_only=True, eq=False)
class Node:
    """Base of every node: its id and the options every kind takes."""

    kind: ClassVar[str] = "node"
    id: str
    skip_if: Predicate | None = None
    depends_on: tuple[str, ...] | None = None
    retry: RetryPolicy | None = None
    timeout: float | None = None

    def children(self) -> tuple[Node, ...]:
        """The nodes nested in this one (in declaration order)."""
        return ()


@dataclass(frozen=True, kw_only=True, eq=False)
class Step(Node):
    kind: ClassVar[str] = "step"
    fn: Callable[..., Any] | None = None
    target: str | None = None
    input: Mapper | None = None
    inline: bool | None = None
    inactivity_timeout: float | None = None


@dataclass(frozen=True, kw_only=True, eq=False)
class Parallel(Node):
    kind: ClassVar[str] = "parallel"
    nodes: tuple[Node, ...]
    mode: Mode = "all"
    concurrency: int | None = None

    def children(self) -> tuple[Node, ...]:
        return self.nodes


@dataclass(frozen=True, kw_only=True, eq=False)
class Branch(Node):
    kind: ClassVar[str] = "branch"
    when: Predicate
    then: tuple[Node, ...]
    otherwise: tuple[Node, ...] = ()

    def children(self) -> tuple[Node, ...]:
        return (*self.then, *self.otherwise)


@dataclass(frozen=True, kw_only=True, eq=False)
class Loop(Node):
    kind: ClassVar[str] = "loop"
    nodes: tuple[Node, ...]
    until: Predicate | None = None
    while_: Predicate | None = None
    max_iterations: int = 10
    delay: float | None = None

    def children(self) -> tuple[Node, ...]:
        return self.nodes


@dataclass(frozen=True, kw_only=True, eq=False)
class Map(Node):
    kind: ClassVar[str] = "map"
    items: Mapper
    each: Node
    concurrency: int | None = None
    on_error: OnError = "fail"

    def children(self) -> tuple[Node, ...]:
        return (self.each,)


@dataclass(frozen=True, kw_only=True, eq=False)
class SubWorkflow(Node):
    kind: ClassVar[str] = "sub_workflow"
    target: str
    input: Mapper | None = None
    output: Callable[[Any], Any] | None = None


@dataclass(frozen=True, kw_only=True, eq=False)
class Approval(Node):
    kind: ClassVar[str] = "approval"
    key: str | None = None
    approvers: tuple[str, ...] | None = None
    schema: dict[str, Any] | None = None
    prompt: str | None = None


@dataclass(frozen=True, kw_only=True, eq=False)
class WaitEvent(Node):
    kind: ClassVar[str] = "wait_event"
    event: str
    schema: dict[str, Any] | None = None


@dataclass(frozen=True, kw_only=True, eq=False)
class Sleep(Node):
    kind: ClassVar[str] = "sleep"
    seconds: float | Callable[[NodeContext], float] | None = None
    until: Callable[[NodeContext], float] | None = None


# -- the declaring functions (the public names) ------------------------------------------


def _ids(depends_on: Sequence[str] | str | None) -> tuple[str, ...] | None:
    if depends_on is None:
        return None
    if isinstance(depends_on, str):
        return (depends_on,)
    return tuple(depends_on)


def _nodes(nodes: Sequence[Node] | Node) -> tuple[Node, ...]:
    return (nodes,) if isinstance(nodes, Node) else tuple(nodes)


def step(
    id: str,
    fn: Callable[..., Any] | str,
    *,
    input: Mapper | None = None,
    retry: RetryPolicy | None = None,
    timeout: float | None = None,
    inactivity_timeout: float | None = None,
    inline: bool | None = None,
    skip_if: Predicate | None = None,
    depends_on: Sequence[str] | str | None = None,
) -> Step:
    """A durable step: ``fn(c)`` (``c`` a :class:`NodeContext`), or a target run as a child.

    ``fn`` is an async or a plain function of the node context; its return value is the
    node's output (msgspec-encodable, R10). A plain function runs in a worker thread
    unless ``inline=True`` (or the graph's ``inline_steps``). ``retry`` and ``timeout``
    are those of ``ctx.step`` (per attempt, R8), as is ``inactivity_timeout``
    (``c.heartbeat()`` feeds it).

    ``fn`` may instead be a target string, ``"task:NAME"`` or ``"agent:NAME"``: the node
    starts that run as a child (``input(c)`` its input, default ``c.input``; agents are
    owned by the conversation named after this run) and its output is the child's
    result. ``retry`` then starts a fresh child per attempt; ``timeout`` cancels the
    child.
    """
    if isinstance(fn, str):
        return Step(
            id=id,
            target=fn,
            input=input,
            retry=retry,
            timeout=timeout,
            skip_if=skip_if,
            depends_on=_ids(depends_on),
        )
    return Step(
        id=id,
        fn=fn,
        input=input,
        retry=retry,
        timeout=timeout,
        inactivity_timeout=inactivity_timeout,
        inline=inline,
        skip_if=skip_if,
        depends_on=_ids(depends_on),
    )


def parallel(
    id: str,
    nodes: Sequence[Node],
    *,
    mode: Mode = "all",
    concurrency: int | None = None,
    skip_if: Predicate | None = None,
    depends_on: Sequence[str] | str | None = None,
) -> Parallel:
    """Run ``nodes`` at once (each in a concurrent branch of the run's body).

    ``mode="all"``: the output is ``{node id: output}``; the first failure cancels the
    others and fails the node. ``"race"``: the first node to *succeed* wins, the others
    are cancelled; the output is ``{"winner": id, "output": …}``; if every node fails,
    the race fails. A node skipped by its ``skip_if`` ran nothing and never wins: if
    every node is skipped, the race completes with ``{"winner": None, "output":
    None}`` (if the others all failed, it fails). ``"all_settled"``: every node runs
    to its end; the output is ``{node id: {"status": "completed", "output": …} |
    {"status": "failed", "error": {"code", "message"}} | {"status": "skipped"}}``.
    ``concurrency`` bounds how many run at a time (default: all).
    """
    return Parallel(
        id=id,
        nodes=_nodes(nodes),
        mode=mode,
        concurrency=concurrency,
        skip_if=skip_if,
        depends_on=_ids(depends_on),
    )


def branch(
    id: str,
    *,
    when: Predicate,
    then: Sequence[Node] | Node,
    otherwise: Sequence[Node] | Node = (),
    skip_if: Predicate | None = None,
    depends_on: Sequence[str] | str | None = None,
) -> Branch:
    """``then`` if ``when(c)`` is true, else ``otherwise``, each a sequence of nodes.

    The output is ``{"taken": "then" | "otherwise", "output": <the arm's last output>}``;
    the nodes of the arm not taken are ``skipped``.
    """
    return Branch(
        id=id,
        when=when,
        then=_nodes(then),
        otherwise=_nodes(otherwise),
        skip_if=skip_if,
        depends_on=_ids(depends_on),
    )


def loop(
    id: str,
    nodes: Sequence[Node] | Node,
    *,
    until: Predicate | None = None,
    while_: Predicate | None = None,
    max_iterations: int = 10,
    delay: float | None = None,
    skip_if: Predicate | None = None,
    depends_on: Sequence[str] | str | None = None,
) -> Loop:
    """Run ``nodes`` repeatedly: stop once ``until(c)`` holds after an iteration, or
    before an iteration once ``while_(c)`` no longer holds (give exactly one).

    Iteration ``i`` (from 0) runs node ``x`` as ``x[i]``; inside it and after the loop
    ``c.outputs["x"]`` is the latest iteration's output. A loop that would need more
    than ``max_iterations`` (default 10, at most 100) fails with ``LOOP_LIMIT_REACHED``.
    ``delay`` sleeps durably between iterations. The output is the list of each
    iteration's last output.
    """
    return Loop(
        id=id,
        nodes=_nodes(nodes),
        until=until,
        while_=while_,
        max_iterations=max_iterations,
        delay=delay,
        skip_if=skip_if,
        depends_on=_ids(depends_on),
    )


def map(  # the contract's name (DESIGN §5.1), shadowing the builtin here only
    id: str,
    *,
    items: Mapper,
    each: Node,
    concurrency: int | None = None,
    on_error: OnError = "fail",
    skip_if: Predicate | None = None,
    depends_on: Sequence[str] | str | None = None,
) -> Map:
    """Run ``each`` once per item of ``items(c)`` (a list), ``concurrency`` at a time.

    Item ``k`` (from 0) runs node ``x`` as ``x[k]`` with ``c.item`` and ``c.index`` set.
    The output is the list of the items' outputs, in item order. ``on_error``: ``"fail"``
    (the first failed item cancels the others and fails the map), ``"skip"`` (a failed
    item's output is ``None``) or ``"collect"`` (every entry is a settled record, as in
    ``parallel(mode="all_settled")``).
    """
    return Map(
        id=id,
        items=items,
        each=each,
        concurrency=concurrency,
        on_error=on_error,
        skip_if=skip_if,
        depends_on=_ids(depends_on),
    )


def sub_workflow(
    id: str,
    target: str,
    *,
    input: Mapper | None = None,
    output: Callable[[Any], Any] | None = None,
    retry: RetryPolicy | None = None,
    timeout: float | None = None,
    skip_if: Predicate | None = None,
    depends_on: Sequence[str] | str | None = None,
) -> SubWorkflow:
    """Run ``target`` (``"workflow:NAME"``) as a child run (``parent_id`` this run, same
    root, R17); ``input(c)`` is its input (default ``c.input``), ``output(result)`` maps
    its result to the node's output (default: the result). The child's failure fails
    the node (``NODE_FAILED``); ``retry`` starts a fresh child per attempt; ``timeout``
    cancels the child and fails the attempt.
    """
    return SubWorkflow(
        id=id,
        target=target,
        input=input,
        output=output,
        retry=retry,
        timeout=timeout,
        skip_if=skip_if,
        depends_on=_ids(depends_on),
    )


def approval(
    id: str,
    *,
    approvers: Sequence[str] | None = None,
    schema: dict[str, Any] | None = None,
    prompt: str | None = None,
    key: str | None = None,
    timeout: float | None = None,
    skip_if: Predicate | None = None,
    depends_on: Sequence[str] | str | None = None,
) -> Approval:
    """Wait for an :class:`~perdure.ApprovalDecision` (an AG-UI interrupt, R11, R13).

    The decision's key is ``key`` (default: the node's id), with the node's indices
    inside loops and maps (``ok[2]``). ``approvers`` is an allow-list, ``schema`` a JSON
    Schema for the decision's ``response``, ``timeout`` the expiry in seconds. Approved,
    the output is ``{"approved": True, "approver", "response", "comment"}``; a rejection
    fails the run with ``APPROVAL_REJECTED``, an expiry with ``APPROVAL_EXPIRED``.
    """
    return Approval(
        id=id,
        key=key,
        approvers=None if approvers is None else tuple(approvers),
        schema=schema,
        prompt=prompt,
        timeout=timeout,
        skip_if=skip_if,
        depends_on=_ids(depends_on),
    )


def wait_event(
    id: str,
    *,
    event: str,
    schema: dict[str, Any] | None = None,
    timeout: float | None = None,
    skip_if: Predicate | None = None,
    depends_on: Sequence[str] | str | None = None,
) -> WaitEvent:
    """Wait for an :class:`~perdure.ExternalEvent` named ``event`` (an AG-UI interrupt);
    the output is its payload. ``timeout`` expires the wait (``WAIT_EXPIRED``)."""
    return WaitEvent(
        id=id,
        event=event,
        schema=schema,
        timeout=timeout,
        skip_if=skip_if,
        depends_on=_ids(depends_on),
    )


def sleep(
    id: str,
    seconds: float | Callable[[NodeContext], float] | None = None,
    *,
    until: Callable[[NodeContext], float] | None = None,
    skip_if: Predicate | None = None,
    depends_on: Sequence[str] | str | None = None,
) -> Sleep:
    """A durable sleep (R9): ``seconds`` (a number, or a function of ``c``), or ``until``
    a timestamp ``until(c)`` (seconds since the epoch). The output is ``None``."""
    return Sleep(id=id, seconds=seconds, until=until, skip_if=skip_if, depends_on=_ids(depends_on))
