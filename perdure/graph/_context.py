"""What a node's functions see: :class:`NodeContext` and its view of the outputs (R23).

Outputs are addressed by node id. A node inside a loop or a map runs once per iteration
or item under a *derived* key: its id followed by the index of every enclosing
repetition, outermost first (``check[2]``, ``line[0][5]``; indices count from 0, as
list positions do). ``c.outputs`` resolves a plain id to the execution of the current
iteration or item first, then outward, then to the graph's top level, where after a
loop a plain id names its last iteration. Derived keys can always be used directly.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from perdure._errors import PerdureError
from perdure.agui import CustomEvent, Event

if TYPE_CHECKING:
    from perdure.runtime import RunContext

__all__ = ["NodeContext", "Outputs"]


class _Scope(Protocol):
    """Where the walk is (``perdure.graph._walk.Scope``), as a node context reads it."""

    @property
    def view(self) -> Mapping[str, Any]: ...

    item: Any
    index: int | None
    iteration: int | None


class Outputs(Mapping[str, Any]):
    """Node outputs by key, innermost repetition first (see the module docstring)."""

    __slots__ = ("_layers",)

    def __init__(self, layers: tuple[dict[str, Any], ...]) -> None:
        self._layers = layers

    def __getitem__(self, key: str) -> Any:
        for layer in self._layers:
            if key in layer:
                return layer[key]
        raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        return any(key in layer for layer in self._layers)

    def __iter__(self) -> Iterator[str]:
        seen: set[str] = set()
        for layer in self._layers:
            for key in layer:
                if key not in seen:
                    seen.add(key)
                    yield key

    def __len__(self) -> int:
        return sum(1 for _ in self)


class NodeContext(msgspec.Struct, gc=False, repr_omit_defaults=True):
    """The argument of every node function: ``fn(c)``, ``when(c)``, ``items(c)`` …

    - ``c.input``: the run's input; ``c.outputs``: outputs by node id (above);
    - ``c.run_id``; ``c.node``: the key of the node being run, ``c.path`` its path;
    - in a map item ``c.item`` and ``c.index``; in a loop ``c.iteration`` (from 0);
    - in a ``step`` function: ``c.emit(...)``, ``c.custom(...)``, ``c.flush()`` and
      ``c.heartbeat()``, as on the run context (events go into the node's step).

    Predicates and mappers must be pure functions of it: they run again on replay and
    when the graph's state is derived from storage. (A struct the cyclic GC does not
    track: graphs in flight hold one per running step, and it refers to nothing that
    could refer back to it.)
    """

    _ctx: RunContext | None
    run_id: str
    input: Any
    _scope: _Scope
    node: str
    path: str

    @property
    def outputs(self) -> Mapping[str, Any]:
        """Outputs by node key (see the module docstring)."""
        view: Mapping[str, Any] = self._scope.view
        return view

    @property
    def item(self) -> Any:
        """The item of the enclosing map (``None`` outside one)."""
        return self._scope.item

    @property
    def index(self) -> int | None:
        """The index of that item (from 0)."""
        return self._scope.index

    @property
    def iteration(self) -> int | None:
        """The iteration of the enclosing loop (from 0)."""
        return self._scope.iteration

    def _run(self) -> RunContext:
        if self._ctx is None:
            raise PerdureError("events are emitted from step functions, not from predicates")
        return self._ctx

    async def emit(self, *events: Event) -> None:
        """Log AG-UI events inside this node's step (``RunContext.emit``)."""
        await self._run().emit(*events)

    async def custom(self, name: str, value: Any = None) -> None:
        """Log a ``CUSTOM`` event inside this node's step."""
        await self._run().emit(CustomEvent(name=name, value=value))

    async def flush(self) -> None:
        """Commit this step's events so far (``RunContext.flush``)."""
        await self._run().flush()

    def heartbeat(self) -> None:
        """Feed the step's ``inactivity_timeout`` (from async code or its worker thread)."""
        self._run().heartbeat()

    def __repr__(self) -> str:
        return f"NodeContext(run_id={self.run_id!r}, node={self.node!r})"

    def __eq__(self, other: object) -> bool:
        return self is other

    def __hash__(self) -> int:
        return id(self)
