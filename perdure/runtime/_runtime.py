"""The Runtime: the public facade of perdure.

It holds the definitions registered before opening and the options, and forwards each
public call, once its arguments are checked, to the engine that exists while the
runtime is open (:mod:`._engine`). Nothing here is a callback of the engine or of run
actors: those depend on :class:`~._engine_port.EnginePort`, never on this class.
"""

from __future__ import annotations

import builtins
import os
from collections.abc import AsyncGenerator, Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from perdure._errors import InvalidInput, InvalidSignal, PerdureError, RunNotFound
from perdure.agui import decode_event, is_terminal_event
from perdure.storage import DEFAULT_MAP_SIZE, Durability, Owner, RunRecord, Trigger

from ._definitions import Body, Registry, RestartPolicy, validate_identifier, validate_owner
from ._delivery import cancel, publish, resume, wait_run
from ._engine import Engine
from ._results import (
    Cancelled,
    Page,
    RunEvent,
    RuntimeStats,
    Started,
    TargetInfo,
    check_statuses,
    parse_cursor,
)
from ._signals import ExternalEvent, Resumed, Signal, encode_signal, signal_key
from ._tuning import ProcessTuning

if TYPE_CHECKING:
    from perdure.graph import Graph, GraphState, GraphVersions

__all__ = ["Runtime"]

F = TypeVar("F", bound=Body)
_KINDS = ("agent", "workflow", "job")


class Runtime:
    """An embedded durable-execution runtime over one data directory.

    Register definitions first (``@rt.agent``, ``@rt.workflow``, ``@rt.task``), then
    open it under trio with ``async with rt:``. Opening takes the directory's
    writer lock (R27) and recovers (R26): running and pending runs are re-activated
    and replayed, cancellations in flight finish. Closing stops every run actor
    without changing any run: interrupted runs are simply recovered at the next
    open.

    Parameters:
        path: data directory (created if missing). ``None`` with ``durability="memory"``
            uses a temporary directory.
        durability: ``"sync"`` (default; acknowledged writes survive power loss),
            ``"process"`` (survive a process crash; no fsync), ``"memory"``.
        map_size: initial LMDB map size in bytes; the map doubles by itself when full.
        max_running: at most this many top-level runs execute at once; the others
            wait durably in ``pending`` (child runs are always admitted, so a parent
            can never deadlock on its own children).
        cancel_grace: seconds a cancelled body may spend in shielded cleanup (R16).
        max_live_actors: beyond this many live actors, idle ones (waiting or sleeping)
            are passivated, least recently idle first (default 10,000, like Temporal's
            workflow cache; ``None`` for no cap). Busy actors are never evicted.
        passivate_after: a run that will sleep at least this long is passivated at
            once (its actor stopped, its state only in LMDB) and woken by its timer.
        switch_interval: while open, lower CPython's GIL switch interval to this many
            seconds (if it is higher; restored on close). The writer thread needs the
            GIL back after every flush; at the default 5 ms a busy trio thread starves
            it and group commit degrades. ``None`` leaves the interpreter alone.
        gc_threshold: while open, raise CPython's cyclic-GC thresholds to this (if the
            current first generation threshold is lower; restored on close). Every run
            allocates a few hundred short-lived objects; at the default (700, 10, 10)
            collections cost about a third of the trio thread's time under load. A
            first-generation pass walks every young object still alive, and with a
            thousand runs in flight that is most of them: fewer passes is the saving.
            The price is cyclic garbage waiting longer (at most ~200k objects, a few
            tens of MB). ``None`` leaves the collector alone.
        recover: ``False`` opens for administration only: nothing is re-activated, no
            timer fires, pending runs stay queued; ``get``/``list``/``events``/
            ``cancel``/``resume`` work, even for targets this process does not register.

    Virtual time: every timer, timeout and timestamp reads the trio clock, so a
    test or simulation run under ``trio.testing.MockClock`` sees hours pass
    instantly and deterministically.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = "data/",
        *,
        durability: Durability = "sync",
        map_size: int = DEFAULT_MAP_SIZE,
        max_running: int | None = None,
        cancel_grace: float = 1.0,
        max_live_actors: int | None = 10_000,
        passivate_after: float = 60.0,
        recover: bool = True,
        switch_interval: float | None = 0.001,
        gc_threshold: tuple[int, int, int] | None = (200_000, 20, 100),
    ) -> None:
        if durability not in ("sync", "process", "memory"):
            raise InvalidInput(
                f"durability must be 'sync', 'process' or 'memory', not {durability!r}"
            )
        if max_running is not None and (not isinstance(max_running, int) or max_running < 1):
            raise InvalidInput("max_running must be at least 1")
        self.path = path
        self.durability: Durability = durability
        self._options: dict[str, Any] = {
            "map_size": map_size,
            "max_running": max_running,
            "cancel_grace": cancel_grace,
            "max_live_actors": max_live_actors,
            "passivate_after": passivate_after,
            "recover": recover,
        }
        self._tuning = ProcessTuning(switch_interval, gc_threshold)
        self._registry = Registry()
        self._graphs: dict[str, GraphVersions] = {}
        self._engine: Engine | None = None
        self._recovered: dict[str, int] = {}

    # -- definitions --------------------------------------------------------------------------

    def agent(
        self,
        name: str,
        *,
        input_type: Any = None,
        timeout: float | None = None,
        restart: RestartPolicy | None = None,
        inline_steps: bool = False,
    ) -> Callable[[F], F]:
        """Register an agent (target ``agent:NAME``); runs are owned by a Conversation.

        ``inline_steps=True`` runs the body's plain (non-async) step functions on the
        trio thread, without a worker-thread hop (see :meth:`RunContext.step`).
        """
        return self._register("agent", name, input_type, timeout, restart, inline_steps)

    def workflow(
        self,
        name: str,
        *,
        input_type: Any = None,
        timeout: float | None = None,
        restart: RestartPolicy | None = None,
        inline_steps: bool = False,
    ) -> Callable[[F], F]:
        """Register a code workflow (target ``workflow:NAME``); owned by a Project."""
        return self._register("workflow", name, input_type, timeout, restart, inline_steps)

    def task(
        self,
        name: str,
        *,
        input_type: Any = None,
        timeout: float | None = None,
        restart: RestartPolicy | None = None,
        inline_steps: bool = False,
    ) -> Callable[[F], F]:
        """Register a task (target ``task:NAME``), run as a job owned by a Project."""
        return self._register("job", name, input_type, timeout, restart, inline_steps)

    def _register(
        self,
        kind: Any,
        name: str,
        input_type: Any,
        timeout: float | None,
        restart: RestartPolicy | None,
        inline_steps: bool,
    ) -> Callable[[F], F]:
        def decorate(fn: F) -> F:
            self._registry.add(
                kind,
                name,
                fn,
                input_type=input_type,
                timeout=timeout,
                restart=restart,
                inline_steps=inline_steps,
            )
            return fn

        return decorate

    # -- open / close -------------------------------------------------------------------------

    async def __aenter__(self) -> Runtime:
        if self._engine is not None:
            raise PerdureError("this Runtime is already open")
        engine = Engine(
            self._registry,
            path=self.path,
            durability=self.durability,
            tuning=self._tuning,
            **self._options,
        )
        await engine.open()
        self._engine = engine
        self._recovered = engine.recovered
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        engine = self._engine
        if engine is not None:
            try:
                await engine.close(exc)
            finally:
                self._engine = None
        return None

    @property
    def is_open(self) -> bool:
        """Whether the runtime is open (inside ``async with rt:``)."""
        return self._engine is not None and not self._engine.closing

    @property
    def recovered(self) -> dict[str, int]:
        """What the last open recovered: counts of running, pending, cancelling, waiting runs."""
        return dict(self._recovered)

    def _open_engine(self) -> Engine:
        engine = self._engine
        if engine is None or engine.closing:
            raise PerdureError("the runtime is not open: use `async with rt:`")
        return engine

    def now(self) -> float:
        """Seconds since the epoch on the runtime's clock (virtual under trio's MockClock)."""
        return self._open_engine().now()

    def stats(self) -> RuntimeStats:
        """Counters of the open runtime: writer transactions and records, live actors …"""
        engine = self._open_engine()
        writer = engine.writer.stats
        return RuntimeStats(
            txns=writer.txns,
            batches=writer.batches,
            records=writer.records,
            map_grows=writer.grows,
            map_size=engine.store.map_size,
            live_actors=len(engine.supervisor),
            passivations=engine.supervisor.passivations,
            running=engine.admission.running,
        )

    def targets(self) -> builtins.list[TargetInfo]:
        """Every registered definition (agents, workflows, tasks), sorted by target."""
        return sorted(
            (
                TargetInfo(
                    target=d.target,
                    kind=d.kind,
                    name=d.name,
                    description=d.description,
                    timeout=d.timeout,
                )
                for d in self._registry
            ),
            key=lambda info: info.target,
        )

    # -- step graphs --------------------------------------------------------------------------

    def graph(self, name: str, graph: Graph) -> Graph:
        """Register a step-graph workflow as target ``workflow:NAME`` (R23); returns ``graph``.

        The definition is checked whole (:class:`perdure.graph.InvalidGraph` names what
        is wrong); the targets its nodes run must be registered first. Registering the
        name again with another ``version`` adds that version: new runs start under the
        highest, every run replays under the version it started with, and a stored run
        whose version is not registered is left as it is. See :mod:`perdure.graph`.
        """
        from perdure.graph import Graph, GraphVersions

        if not isinstance(graph, Graph):
            raise InvalidInput("rt.graph takes a perdure.graph.Graph")
        versions = self._graphs.get(name)
        target = f"workflow:{name}"
        if versions is None and self._registry.get(target) is not None:
            raise InvalidInput(f"{target} is already registered (as a code workflow)")
        if versions is not None and graph.version in versions.graphs:
            raise InvalidInput(f"{target} version {graph.version} is already registered")
        graph.validate(name, (d.target for d in self._registry))
        if versions is None:
            versions = GraphVersions(name)
            definition = self._registry.add(
                "workflow", name, versions.body, input_type=Any, inline_steps=graph.inline_steps
            )
        else:
            definition = self._registry.resolve(target)
        versions.graphs[graph.version] = graph
        latest = versions.latest
        definition.version = latest.version
        definition.versions = frozenset(versions.graphs)
        definition.timeout = latest.timeout
        definition.restart = latest.restart
        definition.inline_steps = latest.inline_steps
        definition.input_schema = latest.input_schema
        definition.description = latest.description
        self._graphs[name] = versions
        return graph

    @property
    def graphs(self) -> Mapping[str, GraphVersions]:
        """The registered step graphs by name (each with its versions)."""
        return self._graphs

    def graph_state(self, run_id: str) -> GraphState:
        """Every node's state in a step-graph run, and the nodes in flight (R23).

        Derived from what the run stored (its record, its journal and the version it
        pinned), so it works for passivated runs as for live ones; see
        :class:`perdure.graph.GraphState`. :class:`~perdure.InvalidInput` if the run is
        not a step-graph run of this runtime.
        """
        from perdure.graph import derive_state

        rec = self.get(run_id)
        versions = self._graphs.get(rec.target.partition(":")[2])
        if not rec.target.startswith("workflow:") or versions is None:
            raise InvalidInput(f"run {run_id} ({rec.target}) is not a step-graph run")
        journal = self._open_engine().store.journal(run_id)
        return derive_state(rec, versions.get(rec.version), journal)

    # -- starting runs ------------------------------------------------------------------------

    async def start(
        self,
        target: str,
        input: Any = None,
        *,
        owner: Owner,
        idempotency_key: str | None = None,
        run_id: str | None = None,
    ) -> Started:
        """Start a run of ``target`` and return once it is durably recorded.

        Idempotent (R4): the same ``idempotency_key`` within one owner, or the same
        caller-chosen ``run_id``, returns the existing run with ``duplicate=True``.
        Reusing either for another target or owner raises
        :class:`~perdure.IdempotencyConflict`. Everything is validated before
        anything is stored (R5).
        """
        engine = self._open_engine()
        return await engine.starter.start(
            target, input, owner, idempotency_key, run_id, None, Trigger()
        )

    # -- reading ------------------------------------------------------------------------------

    def get(self, run_id: str) -> RunRecord:
        """The committed record of a run; :class:`~perdure.RunNotFound` if there is none."""
        engine = self._open_engine()
        validate_identifier(run_id, "run_id")
        rec = engine.store.get_run(run_id)
        if rec is None:
            raise RunNotFound(f"no run {run_id!r}", run_id=run_id)
        return rec

    def list(
        self,
        *,
        owner: Owner | None = None,
        status: str | builtins.list[str] | None = None,
        kind: str | None = None,
        parent_id: str | None = None,
        root_id: str | None = None,
        after: str | None = None,
        limit: int = 100,
    ) -> Page:
        """Runs matching every given filter, oldest first, ``limit`` per page.

        Pass the page's ``next_cursor`` as ``after`` to get the next page; it is
        ``None`` on the last page.
        """
        engine = self._open_engine()
        statuses = check_statuses(status)
        if kind is not None and kind not in _KINDS:
            raise InvalidInput(f"kind must be one of {_KINDS} (got {kind!r})")
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 1000:
            raise InvalidInput(f"limit must be an integer from 1 to 1000 (got {limit!r})")
        if owner is not None:
            validate_owner(owner)
        for name, value in (("parent_id", parent_id), ("root_id", root_id)):
            if value is not None and (not isinstance(value, str) or not value):
                raise InvalidInput(f"{name} must be a non-empty string")
        runs, next_seq = engine.store.query_runs(
            owner=owner,
            statuses=statuses,
            kind=kind,
            parent_id=parent_id,
            root_id=root_id,
            after=parse_cursor(after),
            limit=limit,
        )
        return Page(runs=runs, next_cursor=None if next_seq is None else str(next_seq))

    async def events(
        self, run_id: str, after: int = 0, *, follow: bool = True
    ) -> AsyncGenerator[RunEvent, None]:
        """The run's committed log from ``event_id > after``, then live events.

        With ``follow=True`` the iterator ends after the run's terminal event (or
        when the runtime closes); a client that reconnects with the last id it saw
        loses nothing and sees nothing twice (R20).
        """
        self.get(run_id)
        if not isinstance(after, int) or isinstance(after, bool) or not 0 <= after < 2**63:
            raise InvalidInput(f"after must be an integer from 0 to 2**63-1 (got {after!r})")
        engine = self._open_engine()
        store, hub = engine.store, engine.hub
        cursor = after
        while True:
            changed = hub.watch(run_id) if follow else None
            batch = store.events(run_id, cursor, 512)
            for event_id, raw in batch:
                event = decode_event(raw)
                cursor = event_id
                yield RunEvent(run_id=run_id, event_id=event_id, event=event)
                if follow and is_terminal_event(event):
                    return
            if len(batch) == 512:
                continue
            if changed is None or engine.closing:
                return
            rec = store.get_run(run_id)
            if rec is not None and rec.terminal and rec.last_event_id <= cursor:
                return
            await changed.wait()

    async def wait(self, run_id: str) -> RunRecord:
        """Wait until the run is terminal and return its record (with ``completion``)."""
        engine = self._open_engine()
        validate_identifier(run_id, "run_id")
        return await wait_run(engine, run_id)

    # -- signals ------------------------------------------------------------------------------

    async def resume(self, run_id: str, signal: Signal) -> Resumed:
        """Deliver a resume signal to a run; durable before it returns (R12, R13).

        Same key and equal payload again: accepted with ``duplicate=True``. Same key,
        different payload: :class:`~perdure.SignalConflict`. A key the run neither
        waits on nor expects (``ctx.expect``): :class:`~perdure.NotWaiting`.
        Unknown or terminal run: :class:`~perdure.RunNotActive`. Malformed signal or
        payload failing the wait's schema: :class:`~perdure.InvalidSignal`; an
        approver not on the allow-list: :class:`~perdure.PermissionDenied`.
        A passivated run is re-activated to take the signal.
        """
        engine = self._open_engine()
        key = signal_key(signal)
        encode_signal(signal)  # refuse unserializable payloads before routing
        validate_identifier(run_id, "run_id")
        return await resume(engine, run_id, signal, key)

    async def publish(self, event: ExternalEvent, *, owner: Owner) -> builtins.list[str]:
        """Deliver an :class:`~perdure.ExternalEvent` to every run of ``owner`` waiting on it.

        Returns the ids of the runs that took it.
        """
        engine = self._open_engine()
        if not isinstance(event, ExternalEvent):
            raise InvalidSignal("publish takes an ExternalEvent")
        key = signal_key(event)
        encode_signal(event)
        validate_owner(owner)
        return await publish(engine, event, key, owner)

    # -- cancellation -------------------------------------------------------------------------

    async def cancel(self, run_id: str, reason: str = "cancelled") -> Cancelled:
        """Cancel a run and, first, all its non-terminal descendants (R15).

        A pending or waiting run ends at once; a running body gets trio
        cancellation at its next await and may clean up under a shielded scope for
        ``cancel_grace`` seconds (R16). Cancelling a terminal run changes nothing
        and returns ``cancelled=False``.
        """
        if not isinstance(reason, str):
            raise InvalidInput("reason must be a string")
        rec = self.get(run_id)
        if rec.terminal:
            return Cancelled(cancelled=False, run=rec)
        return await cancel(self._open_engine(), rec, reason[:1000])
