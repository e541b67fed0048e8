"""A step graph: its nodes, version and options, and its checks at registration (R23).

``rt.graph(name, Graph(...))`` registers the target ``workflow:NAME``. Registration
checks the whole definition and refuses it with :class:`~._errors.InvalidGraph`
naming the node: ids (``[A-Za-z0-9_.-]``, 1-64 characters, unique in the whole
graph), empty containers, unknown modes, loop limits, targets that are not registered
(register tasks, agents and sub-workflows first; a graph may name itself), options a
kind does not take, ``depends_on`` that does not name an earlier sibling, malformed
JSON Schemas, durations (timeouts, sleeps, loop delays) that are not
finite numbers of seconds within the runtime's bound, approval keys, event names,
prompts and approvers the runtime's waits would refuse (sizes in bytes of UTF-8, no
NUL). Nothing about a definition is checked later, when a run could fail half-way.

Versions: a graph has a ``version`` (default 1). Registering the same name again with
another version adds that version: new runs start under the highest one, and every
run keeps the version it started with (``RunRecord.version``) and replays under it.
A stored run whose version is no longer registered is left as it is (R26).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, get_args

import jsonschema

from perdure.runtime import RestartPolicy, RetryPolicy
from perdure.runtime._boundary import MAX_DURATION

from ._errors import InvalidGraph
from ._nodes import (
    MAX_ITERATIONS,
    Approval,
    Branch,
    Loop,
    Map,
    Mode,
    Node,
    OnError,
    Parallel,
    Sleep,
    Step,
    SubWorkflow,
    WaitEvent,
)

if TYPE_CHECKING:
    from ._context import NodeContext

__all__ = ["Graph", "NodeInfo"]

_ID = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_MAX_PATH = 160
_RETRY_KINDS = (Step, SubWorkflow)
_TIMEOUT_KINDS = (Step, SubWorkflow, Approval, WaitEvent)
_MAX_KEY_BYTES = 200
"""An approval key: the runtime takes wait keys of up to 256 bytes; the rest is left for
the ``[i]`` suffixes of the loops and maps around it."""
_MAX_EVENT_BYTES = 256
"""An event name: a wait key as it is (no suffix)."""
_MAX_PROMPT_BYTES = 16 * 1024
_MAX_APPROVERS = 1000
_MAX_APPROVER_BYTES = 256


@dataclass(frozen=True)
class NodeInfo:
    """Where a node sits: its static path prefix, its parent container, its siblings."""

    node: Node
    prefix: str
    """The ids of its containers, each followed by ``/`` (``""`` at the top level)."""
    parent: Node | None
    repeated: bool
    """Inside a loop or a map: it runs under derived keys (``id[i]``)."""


class Graph:
    """A step-graph definition: ``Graph(*nodes, version=1, output=None, ...)``.

    ``nodes`` run in order, each once the one before it has finished (or as soon as the
    earlier siblings named in its ``depends_on`` have). Options:

    - ``version``: see the module docstring;
    - ``output(c)``: the run's result (default: ``{id: output}`` of the top-level
      nodes);
    - ``input_schema``: a JSON Schema the input must satisfy at start (else
      :class:`~perdure.InvalidInput`, nothing stored);
    - ``timeout``, ``restart``, ``inline_steps``, ``description``: as for
      ``@rt.workflow`` (the newest registered version's apply).
    """

    def __init__(
        self,
        *nodes: Node | Sequence[Node],
        version: int = 1,
        output: Callable[[NodeContext], Any] | None = None,
        input_schema: dict[str, Any] | None = None,
        timeout: float | None = None,
        restart: RestartPolicy | None = None,
        inline_steps: bool = False,
        description: str | None = None,
    ) -> None:
        flat: list[Node] = []
        for item in nodes:
            if isinstance(item, Node):
                flat.append(item)
            else:
                flat.extend(item)
        self.nodes: tuple[Node, ...] = tuple(flat)
        self.version = version
        self.output = output
        self.input_schema = input_schema
        self.timeout = timeout
        self.restart = restart
        self.inline_steps = inline_steps
        self.description = description
        self.info: dict[Node, NodeInfo] = {}
        self.by_id: dict[str, Node] = {}
        self.dags: set[int] = set()
        """``id()`` of the node sequences that use ``depends_on`` (run as a DAG)."""
        self._dags: set[int] = set()

    def __repr__(self) -> str:
        return f"Graph({len(self.by_id) or len(self.nodes)} nodes, version={self.version})"

    # -- structure -------------------------------------------------------------------------

    def walk(self) -> Iterator[Node]:
        """Every node, depth first, in declaration order."""

        def visit(nodes: Iterable[Node]) -> Iterator[Node]:
            for node in nodes:
                yield node
                yield from visit(node.children())

        return visit(self.nodes)

    # -- checks at registration --------------------------------------------------------------

    def validate(self, name: str, targets: Iterable[str]) -> None:
        """Check the whole definition for ``workflow:NAME``; raise :class:`InvalidGraph`.

        ``targets`` are the targets registered so far.
        """
        if isinstance(self.version, bool) or not isinstance(self.version, int):
            raise InvalidGraph(f"graph {name!r}: version must be an integer (got {self.version!r})")
        if self.version < 1:
            raise InvalidGraph(f"graph {name!r}: version must be at least 1")
        if not self.nodes:
            raise InvalidGraph(f"graph {name!r} has no nodes")
        _callable_or_none(self.output, f"graph {name!r}: output")
        _schema(self.input_schema, f"graph {name!r}: input_schema")
        if self.timeout is not None:
            _positive(self.timeout, f"graph {name!r}: timeout")
        if self.restart is not None and not isinstance(self.restart, RestartPolicy):
            raise InvalidGraph(f"graph {name!r}: restart must be a perdure.RestartPolicy")
        known = set(targets) | {f"workflow:{name}"}
        info: dict[Node, NodeInfo] = {}
        by_id: dict[str, Node] = {}
        keys: set[str] = set()
        self._dags = set()
        self._sequence(name, self.nodes, "", None, False, known, info, by_id, keys)
        self.info, self.by_id, self.dags = info, by_id, self._dags

    def _sequence(
        self,
        name: str,
        nodes: tuple[Node, ...],
        prefix: str,
        parent: Node | None,
        repeated: bool,
        known: set[str],
        info: dict[Node, NodeInfo],
        by_id: dict[str, Node],
        keys: set[str],
        deps_allowed: bool = True,
    ) -> None:
        earlier: set[str] = set()
        for node in nodes:
            self._node(name, node, prefix, parent, repeated, known, info, by_id, keys)
            if node.depends_on is not None:
                where = f"graph {name!r}: node {node.id!r}"
                if not deps_allowed:
                    raise InvalidGraph(
                        f"{where}: depends_on is for nodes of a sequence (the graph's nodes, a "
                        "branch's arms, a loop's nodes), not for a parallel's or map's"
                    )
                for dep in node.depends_on:
                    if dep not in earlier:
                        raise InvalidGraph(
                            f"{where} depends on {dep!r}, which is not a node listed before it "
                            "in the same sequence"
                        )
                self._dags.add(id(nodes))
            earlier.add(node.id)

    def _node(
        self,
        name: str,
        node: Node,
        prefix: str,
        parent: Node | None,
        repeated: bool,
        known: set[str],
        info: dict[Node, NodeInfo],
        by_id: dict[str, Node],
        keys: set[str],
    ) -> None:
        if not isinstance(node, Node):
            raise InvalidGraph(
                f"graph {name!r}: {node!r} is not a node (use g.step, g.parallel, g.branch …)"
            )
        if not isinstance(node.id, str) or not _ID.fullmatch(node.id):
            raise InvalidGraph(
                f"graph {name!r}: node id {node.id!r} must be 1-64 letters, digits or _.-"
            )
        where = f"graph {name!r}: {node.kind} {node.id!r}"
        if node.id in by_id:
            raise InvalidGraph(f"graph {name!r}: node id {node.id!r} is used twice")
        if len(prefix) + len(node.id) > _MAX_PATH:
            raise InvalidGraph(f"{where}: its path is longer than {_MAX_PATH} characters")
        by_id[node.id] = node
        info[node] = NodeInfo(node, prefix, parent, repeated)
        _callable_or_none(node.skip_if, f"{where}: skip_if")
        if node.retry is not None:
            if not isinstance(node, _RETRY_KINDS):
                raise InvalidGraph(f"{where}: retry= applies to step and sub_workflow nodes")
            if not isinstance(node.retry, RetryPolicy):
                raise InvalidGraph(f"{where}: retry must be a perdure.RetryPolicy")
            # (A RetryPolicy checks its own delays: there is none it cannot sleep.)
        if node.timeout is not None:
            if not isinstance(node, _TIMEOUT_KINDS):
                raise InvalidGraph(
                    f"{where}: timeout= applies to step, sub_workflow, approval and wait_event "
                    "nodes"
                )
            _positive(node.timeout, f"{where}: timeout")
        inner = f"{prefix}{node.id}/"
        if isinstance(node, Step):
            self._step(node, where, known)
        elif isinstance(node, Parallel):
            if not node.nodes:
                raise InvalidGraph(f"{where} has no nodes")
            if node.mode not in get_args(Mode):
                raise InvalidGraph(
                    f"{where}: mode must be one of {get_args(Mode)} (got {node.mode!r})"
                )
            _concurrency(node.concurrency, where)
            self._sequence(name, node.nodes, inner, node, repeated, known, info, by_id, keys, False)
        elif isinstance(node, Branch):
            _callable(node.when, f"{where}: when")
            if not node.then and not node.otherwise:
                raise InvalidGraph(f"{where} has no nodes in either arm")
            self._sequence(name, node.then, inner, node, repeated, known, info, by_id, keys)
            self._sequence(name, node.otherwise, inner, node, repeated, known, info, by_id, keys)
        elif isinstance(node, Loop):
            if not node.nodes:
                raise InvalidGraph(f"{where} has no nodes")
            if (node.until is None) == (node.while_ is None):
                raise InvalidGraph(f"{where}: give exactly one of until= and while_=")
            _callable(node.until or node.while_, f"{where}: until/while_")
            if (
                isinstance(node.max_iterations, bool)
                or not isinstance(node.max_iterations, int)
                or not 1 <= node.max_iterations <= MAX_ITERATIONS
            ):
                raise InvalidGraph(
                    f"{where}: max_iterations must be an integer from 1 to {MAX_ITERATIONS} "
                    f"(got {node.max_iterations!r})"
                )
            if node.delay is not None:
                _non_negative(node.delay, f"{where}: delay")
            self._sequence(name, node.nodes, inner, node, True, known, info, by_id, keys)
        elif isinstance(node, Map):
            _callable(node.items, f"{where}: items")
            _concurrency(node.concurrency, where)
            if node.on_error not in get_args(OnError):
                raise InvalidGraph(
                    f"{where}: on_error must be one of {get_args(OnError)} (got {node.on_error!r})"
                )
            if not isinstance(node.each, Node):
                raise InvalidGraph(f"{where}: each must be one node (g.step(...), ...)")
            self._sequence(name, (node.each,), inner, node, True, known, info, by_id, keys, False)
        elif isinstance(node, SubWorkflow):
            _target(node.target, ("workflow",), known, where)
            _callable_or_none(node.input, f"{where}: input")
            _callable_or_none(node.output, f"{where}: output")
        elif isinstance(node, Approval):
            key = node.key if node.key is not None else node.id
            _text(key, f"{where}: key", _MAX_KEY_BYTES, "#")
            if key in keys:
                raise InvalidGraph(f"{where}: approval key {key!r} is used twice")
            keys.add(key)
            if node.approvers is not None:
                if not all(isinstance(a, str) for a in node.approvers):
                    raise InvalidGraph(f"{where}: approvers must be a list of strings")
                if len(node.approvers) > _MAX_APPROVERS:
                    raise InvalidGraph(f"{where}: at most {_MAX_APPROVERS} approvers")
                for approver in node.approvers:
                    _text(approver, f"{where}: approver", _MAX_APPROVER_BYTES)
            _schema(node.schema, f"{where}: schema")
            if node.prompt is not None:
                _text(node.prompt, f"{where}: prompt", _MAX_PROMPT_BYTES)
        elif isinstance(node, WaitEvent):
            _text(node.event, f"{where}: event", _MAX_EVENT_BYTES, "#")
            _schema(node.schema, f"{where}: schema")
        elif isinstance(node, Sleep):
            if (node.seconds is None) == (node.until is None):
                raise InvalidGraph(f"{where}: give exactly one of seconds and until=")
            if node.until is not None:
                _callable(node.until, f"{where}: until")
            elif not callable(node.seconds):
                _non_negative(node.seconds, f"{where}: seconds")
        else:
            raise InvalidGraph(f"{where}: unknown node kind {type(node).__name__}")

    @staticmethod
    def _step(node: Step, where: str, known: set[str]) -> None:
        if (node.fn is None) == (node.target is None):
            raise InvalidGraph(f"{where}: give a function or a target")
        if node.fn is not None:
            _callable(node.fn, f"{where}: fn")
            if node.input is not None:
                raise InvalidGraph(f"{where}: input= is for task and agent targets")
        else:
            _target(node.target, ("task", "agent"), known, where)
            _callable_or_none(node.input, f"{where}: input")
            if node.inline is not None or node.inactivity_timeout is not None:
                raise InvalidGraph(
                    f"{where}: inline= and inactivity_timeout= are for step functions"
                )
        if node.inline is not None and not isinstance(node.inline, bool):
            raise InvalidGraph(f"{where}: inline must be True, False or None")
        if node.inactivity_timeout is not None:
            _positive(node.inactivity_timeout, f"{where}: inactivity_timeout")


def _target(target: object, prefixes: tuple[str, ...], known: set[str], where: str) -> None:
    kinds = " or ".join(f"'{p}:NAME'" for p in prefixes)
    if not isinstance(target, str) or target.partition(":")[0] not in prefixes:
        raise InvalidGraph(f"{where}: target must be {kinds} (got {target!r})")
    if target not in known:
        raise InvalidGraph(
            f"{where}: {target} is not registered (register it before the graph that uses it)"
        )


def _callable(value: object, what: str) -> None:
    if not callable(value):
        raise InvalidGraph(f"{what} must be a function (got {value!r})")


def _callable_or_none(value: object, what: str) -> None:
    if value is not None:
        _callable(value, what)


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _seconds(value: object, what: str, *, positive: bool) -> None:
    """A duration the runtime takes: finite, ``>= 0`` (``> 0`` if ``positive``), bounded."""
    if (
        _number(value)
        and math.isfinite(value)  # type: ignore[arg-type]
        and (value > 0 if positive else value >= 0)  # type: ignore[operator]
        and value <= MAX_DURATION  # type: ignore[operator]
    ):
        return
    raise InvalidGraph(
        f"{what} must be a {'positive number' if positive else 'number >= 0'} of seconds, "
        f"finite and at most {MAX_DURATION:.0f} (got {value!r})"
    )


def _positive(value: object, what: str) -> None:
    _seconds(value, what, positive=True)


def _non_negative(value: object, what: str) -> None:
    _seconds(value, what, positive=False)


def _text(value: object, what: str, max_bytes: int, forbid: str = "") -> None:
    """A string the runtime's waits take: 1 to ``max_bytes`` bytes of UTF-8, no NUL."""
    if not isinstance(value, str):
        raise InvalidGraph(f"{what} must be a string (got {type(value).__name__})")
    try:
        size = len(value.encode())
    except UnicodeEncodeError:
        raise InvalidGraph(f"{what} is not valid UTF-8 text (lone surrogate?)") from None
    if not 1 <= size <= max_bytes:
        raise InvalidGraph(f"{what} must be 1-{max_bytes} bytes of UTF-8 (got {size})")
    for char in "\0" + forbid:
        if char in value:
            raise InvalidGraph(f"{what} must not contain {char!r}")


def _concurrency(value: object, where: str) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise InvalidGraph(f"{where}: concurrency must be an integer >= 1 or None (got {value!r})")


def _schema(schema: object, what: str) -> None:
    if schema is None:
        return
    if not isinstance(schema, dict):
        raise InvalidGraph(f"{what} must be a JSON Schema (a dict)")
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise InvalidGraph(f"{what} is not a valid JSON Schema: {exc.message}") from None
