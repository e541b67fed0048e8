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
from perdure.agui import is_terminal_event
from perdure.storage import DEFAULT_MAP_SIZE, Durability, Owner, RunRecord, Store, Trigger

from ._batches import BatchInfo, batch_info, cancel_batch, start_batch
from ._boundary import text
from ._check import CheckReport, check_store
from ._definitions import Body, Registry, RestartPolicy, validate_identifier, validate_owner
from ._delivery import cancel, publish, resume, wait_run
from ._engine import Engine
from ._logs import LogPage, log_entry
from ._results import (
    Cancelled,
    Page,
    RunEvent,
    RuntimeStats,
    Snapshot,
    Started,
    TargetInfo,
    check_statuses,
    parse_cursor,
)
from ._retention import Retention, check_purge_args
from ._schedules import ScheduleInfo, declare
from ._schemas import CompiledSchema
from ._signals import ExternalEvent, Resumed, Signal, signal_key, stored_signal
from ._snapshots import snapshot_of
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
            The first threshold then adapts: a pass that frees almost nothing doubles
            it (up to 8x this value), one that frees much halves it back. The price is
            cyclic garbage waiting longer (at most ~200k objects, a few tens of MB,
            while the collector finds garbage). ``None`` leaves the collector alone.
        recover: ``False`` opens for administration only: nothing is re-activated, no
            timer fires, pending runs stay queued; ``get``/``list``/``events``/
            ``cancel``/``resume`` work, even for targets this process does not register.
        retention: a :class:`~perdure.Retention`: how long terminal run trees are kept,
            by age and/or count per status; purged in the background (R38). ``None``
            (default) keeps every run; :meth:`purge` removes runs on demand.

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
        retention: Retention | None = None,
        switch_interval: float | None = 0.001,
        gc_threshold: tuple[int, int, int] | None = (200_000, 20, 100),
    ) -> None:
        if durability not in ("sync", "process", "memory"):
            raise InvalidInput(
                f"durability must be 'sync', 'process' or 'memory', not {durability!r}"
            )
        if max_running is not None and (not isinstance(max_running, int) or max_running < 1):
            raise InvalidInput("max_running must be at least 1")
        if retention is not None and not isinstance(retention, Retention):
            raise InvalidInput(f"retention must be a perdure.Retention (got {retention!r})")
        # The options, readable; they take effect at the next open.
        self.path = path
        self.durability: Durability = durability
        self.map_size = map_size
        self.max_running = max_running
        self.cancel_grace = cancel_grace
        self.max_live_actors = max_live_actors
        self.passivate_after = passivate_after
        self.recover = recover
        self.retention = retention
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
        version: int | None = None,
    ) -> Callable[[F], F]:
        """Register an agent (target ``agent:NAME``); runs are owned by a Conversation.

        ``inline_steps=True`` runs the body's plain (non-async) step functions on the
        trio thread, without a worker-thread hop (see :meth:`RunContext.step`).
        ``version`` (an integer) is recorded on every run the definition starts
        (``run.version``); raise it when a change needs :meth:`RunContext.patched` (R37).
        """
        return self._register("agent", name, input_type, timeout, restart, inline_steps, version)

    def workflow(
        self,
        name: str,
        *,
        input_type: Any = None,
        timeout: float | None = None,
        restart: RestartPolicy | None = None,
        inline_steps: bool = False,
        version: int | None = None,
    ) -> Callable[[F], F]:
        """Register a code workflow (target ``workflow:NAME``); owned by a Project."""
        return self._register("workflow", name, input_type, timeout, restart, inline_steps, version)

    def task(
        self,
        name: str,
        *,
        input_type: Any = None,
        timeout: float | None = None,
        restart: RestartPolicy | None = None,
        inline_steps: bool = False,
        description: str | None = None,
        input_schema: dict[str, Any] | None = None,
        output_schema: dict[str, Any] | None = None,
        max_attempts: int | None = None,
        version: int | None = None,
    ) -> Callable[[F], F]:
        """Register a task (target ``task:NAME``), run as a job owned by a Project (R24).

        ``description`` (default: the body's docstring) is listed by ``targets()``.
        ``input_schema`` / ``output_schema`` are JSON Schemas: an input failing it is
        :class:`~perdure.InvalidInput` and nothing is stored; a result failing it fails
        the job with code ``INVALID_OUTPUT``. Checks are bounded in time and never fetch
        remote ``$ref`` s (see :mod:`perdure.runtime._schemas`). ``timeout`` bounds the
        whole job, retries included. ``max_attempts=N`` retries a failed job up to
        N - 1 times, waiting 1 s, 2 s, 4 s … : each attempt re-runs the body from its
        journal (recorded steps are not run again, the failed step is), logged as
        ``CUSTOM perdure.restart``; it is a restart policy (R18), so not both.
        """

        def decorate(fn: F) -> F:
            self._registry.add(
                "job",
                name,
                fn,
                input_type=input_type,
                timeout=timeout,
                restart=restart,
                inline_steps=inline_steps,
                description=description,
                input_schema=input_schema,
                output_schema=output_schema,
                max_attempts=max_attempts,
                version=version,
            )
            return fn

        return decorate

    def _register(
        self,
        kind: Any,
        name: str,
        input_type: Any,
        timeout: float | None,
        restart: RestartPolicy | None,
        inline_steps: bool,
        version: int | None = None,
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
                version=version,
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
            map_size=self.map_size,
            max_running=self.max_running,
            cancel_grace=self.cancel_grace,
            max_live_actors=self.max_live_actors,
            passivate_after=self.passivate_after,
            recover=self.recover,
            retention=self.retention,
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
                    input_schema=_schema_of(d.input_schema),
                    output_schema=_schema_of(d.output_schema),
                    max_attempts=d.max_attempts,
                    version=d.version,
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
        definition.input_schema = (
            None
            if latest.input_schema is None
            else CompiledSchema(latest.input_schema, "input_schema")
        )
        definition.description = latest.description
        self._graphs[name] = versions
        return graph

    def workflow_graph(self, name: str, graph: Graph) -> Graph:
        """:meth:`graph` under its other name (DESIGN §5): registers ``workflow:NAME``."""
        return self.graph(name, graph)

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

    # -- jobs: logs and batches ---------------------------------------------------------------

    def logs(
        self,
        run_id: str,
        after: int | str | None = None,
        limit: int = 100,
        direction: str = "forward",
    ) -> LogPage:
        """A page of the run's raw log entries (``ctx.log``), apart from its events (R24).

        ``forward`` (default): entries with ``seq > after``, oldest first; ``backward``:
        ``seq < after`` (from the newest when ``after`` is None), newest first. At most
        ``limit`` (1-1000) entries; ``next_cursor`` continues in the same direction
        (``None`` when nothing more was there).
        """
        engine = self._open_engine()
        self.get(run_id)
        if direction not in ("forward", "backward"):
            raise InvalidInput(f"direction must be 'forward' or 'backward' (got {direction!r})")
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 1000:
            raise InvalidInput(f"limit must be an integer from 1 to 1000 (got {limit!r})")
        cursor = _log_cursor(after)
        backward = direction == "backward"
        records = engine.store.logs(run_id, cursor, limit + 1, backward=backward)
        entries = [log_entry(record) for record in records[:limit]]
        more = len(records) > limit
        return LogPage(entries=entries, next_cursor=entries[-1].seq if more else None)

    async def start_batch(
        self,
        target: str,
        inputs: builtins.list[Any],
        *,
        owner: Owner,
        idempotency_key: str | None = None,
    ) -> BatchInfo:
        """Start one job of ``target`` per input, atomically, under one batch id (R24).

        Every input is checked first (the first bad one is :class:`~perdure.InvalidInput`
        naming its index; nothing is stored), then all jobs and the batch commit in one
        transaction (at most 10,000 jobs). Idempotent with ``idempotency_key`` (per
        owner): the same key returns the existing batch with ``duplicate=True``.
        """
        engine = self._open_engine()
        return await start_batch(engine, target, inputs, owner, idempotency_key)

    def batch(self, batch_id: str) -> BatchInfo:
        """A batch and how many of its jobs are in each status now."""
        return batch_info(self._open_engine(), batch_id)

    async def cancel_batch(self, batch_id: str, reason: str = "batch cancelled") -> int:
        """Cancel every job of the batch that has not ended (R15); how many it cancelled."""
        if not isinstance(reason, str):
            raise InvalidInput("reason must be a string")
        return await cancel_batch(self._open_engine(), batch_id, reason[:1000])

    # -- schedules ----------------------------------------------------------------------------

    def schedule(
        self,
        name: str,
        cron: str,
        *,
        target: str,
        input: Any = None,
        timezone: str = "UTC",
        overlap: str = "forbid",
        catchup: str = "latest",
        catchup_bound: int = 100,
        max_runs: int | None = None,
        owner: Owner | None = None,
        description: str | None = None,
    ) -> None:
        """Declare a cron schedule (R25); it is applied when the runtime opens.

        ``cron``: 5 fields (names, ranges, lists, steps) in the IANA ``timezone``, with
        the DST rules of docs/schedules.md. At open the stored schedule of that name is
        created, updated if this declaration changed, or left alone (its counters and
        pause state stay). Each tick fires exactly once, even across crashes: its fire
        key, its run and the schedule's cursor commit together. ``overlap`` (``forbid``,
        ``allow``, ``replace``, ``buffer_one``) decides a tick that comes while a run it
        started still runs; ``catchup`` (``latest``, ``skip``, ``all`` up to
        ``catchup_bound``) the ticks missed while the runtime was down (R26);
        ``max_runs`` stops it after that many ticks started a run. Runs are owned by
        ``owner`` (default ``Project("schedule:NAME")``), with trigger type
        ``schedule``.
        """
        if self._engine is not None:
            raise PerdureError("declare schedules before opening the runtime")
        declaration = declare(
            name,
            cron,
            target=target,
            input=input,
            timezone=timezone,
            overlap=overlap,
            catchup=catchup,
            catchup_bound=catchup_bound,
            max_runs=max_runs,
            owner=owner,
            description=description,
        )
        if declaration.name in self._registry.schedules:
            raise InvalidInput(f"schedule {declaration.name!r} is already declared")
        self._registry.schedules[declaration.name] = declaration

    async def pause_schedule(self, name: str) -> None:
        """Stop firing ``name`` until resumed (future ticks only; runs go on)."""
        await self._open_engine().schedules.pause(name)

    async def resume_schedule(self, name: str) -> None:
        """Fire ``name`` again, from now on (ticks of the paused stretch are not caught up)."""
        await self._open_engine().schedules.resume(name)

    async def delete_schedule(self, name: str) -> None:
        """Remove ``name`` (its runs go on). A declaration in code creates it again at
        the next open: remove it from the code to delete it for good."""
        engine = self._open_engine()
        await engine.schedules.delete(name, self._registry.schedules)

    async def trigger_schedule(self, name: str, idempotency_key: str | None = None) -> Started:
        """Start a run of ``name`` now, whatever its overlap policy; idempotent with
        ``idempotency_key`` (the same key returns the same run, ``duplicate=True``)."""
        return await self._open_engine().schedules.trigger(name, idempotency_key)

    def get_schedule(self, name: str) -> ScheduleInfo:
        """The stored schedule ``name``: definition, counters, next five ticks."""
        return self._open_engine().schedules.info(name)

    def list_schedules(self) -> builtins.list[ScheduleInfo]:
        """Every stored schedule, by name."""
        return self._open_engine().schedules.infos()

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
        batch_id: str | None = None,
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
        for name, value in (("parent_id", parent_id), ("root_id", root_id), ("batch_id", batch_id)):
            if value is not None and (not isinstance(value, str) or not value):
                raise InvalidInput(f"{name} must be a non-empty string")
        runs, next_seq = engine.store.query_runs(
            owner=owner,
            statuses=statuses,
            kind=kind,
            parent_id=parent_id,
            root_id=root_id,
            batch_id=batch_id,
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
            try:
                batch = store.read_events(run_id, cursor, 512)
                for event_id, event in batch:
                    cursor = event_id
                    yield RunEvent(run_id=run_id, event_id=event_id, event=event)
                    if follow and is_terminal_event(event):
                        return
                if len(batch) == 512:
                    continue
                if changed is None or engine.closing:
                    return
                rec = store.get_run(run_id)
                if rec is None or (rec.terminal and rec.last_event_id <= cursor):
                    return  # ended, or purged while read (R38): nothing more will come
                await changed.event.wait()
            finally:
                if changed is not None:
                    hub.release(run_id, changed)
            if changed is not None and changed.error is not None:
                raise changed.error

    def snapshot(self, run_id: str, upto: int | None = None) -> Snapshot:
        """The run's committed log folded into messages, state and open tool calls (R22).

        ``upto`` folds only events ``1..upto`` (any prefix of the log folds the same as
        its replay: a UI rebuilt from a snapshot at event N, then fed events N+1...,
        ends where a live one does).
        """
        rec = self.get(run_id)
        if upto is not None and (
            not isinstance(upto, int) or isinstance(upto, bool) or not 0 <= upto < 2**62
        ):
            raise InvalidInput(f"upto must be an event id >= 0 (got {upto!r})")
        return snapshot_of(self._open_engine().store, rec, upto)

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
        checked = stored_signal(signal)  # what will be stored, decoded back (R30)
        validate_identifier(run_id, "run_id")
        return (await resume(engine, run_id, [(checked, key)]))[0]

    async def resume_many(
        self, run_id: str, signals: builtins.list[Signal]
    ) -> builtins.list[Resumed]:
        """Deliver several resume signals to one run, all or none (R12, R13).

        Every signal is checked against the run's waits before any is stored: if one
        is refused (the same errors as :meth:`resume`), none is applied. Signals that
        answer waits are stored in one commit, so the run's log shows one resumption
        with every result (an AG-UI ``resume[]`` answering several interrupts at once).
        Each key may appear once. Returns one :class:`Resumed` per signal, in order.
        """
        engine = self._open_engine()
        validate_identifier(run_id, "run_id")
        if not isinstance(signals, list | tuple) or not 1 <= len(signals) <= 1000:
            raise InvalidSignal("resume_many takes a list of 1 to 1000 signals")
        checked = [(stored_signal(signal), signal_key(signal)) for signal in signals]
        return await resume(engine, run_id, checked)

    async def publish(self, event: ExternalEvent, *, owner: Owner) -> builtins.list[str]:
        """Deliver an :class:`~perdure.ExternalEvent` to every run of ``owner`` waiting on it.

        Returns the ids of the runs that took it.
        """
        engine = self._open_engine()
        if not isinstance(event, ExternalEvent):
            raise InvalidSignal("publish takes an ExternalEvent")
        key = signal_key(event)
        checked = stored_signal(event)
        assert isinstance(checked, ExternalEvent)
        validate_owner(owner)
        return await publish(engine, checked, key, owner)

    # -- cancellation -------------------------------------------------------------------------

    async def cancel(self, run_id: str, reason: str = "cancelled") -> Cancelled:
        """Cancel a run and, first, all its non-terminal descendants (R15).

        A pending or waiting run ends at once; a running body gets trio
        cancellation at its next await and may clean up under a shielded scope for
        ``cancel_grace`` seconds (R16). Cancelling a terminal run changes nothing
        and returns ``cancelled=False``.
        """
        reason = text(reason, "reason", max_bytes=64 * 1024, empty=True)[:1000]
        rec = self.get(run_id)
        if rec.terminal:
            return Cancelled(cancelled=False, run=rec)
        return await cancel(self._open_engine(), rec, reason)

    # -- long-lived stores ---------------------------------------------------------------------

    async def check(
        self, path: str | os.PathLike[str] | None = None, *, timeout: float = 5.0
    ) -> CheckReport:
        """Replay every unfinished run against the code registered now, acting on nothing (R37).

        Run it before a deploy: each pending, running or waiting run's journal is
        replayed dry (recorded steps return their recorded values; the replay of a run
        stops at the first call it has not recorded) and the report says, per run,
        ``ok`` or the first mismatch: what the run recorded there and what the code
        asks for instead. The store is this open runtime's, else the one at ``path``
        (default: this runtime's directory), opened read-only: beside the live process
        that owns it, or a backup. ``timeout``: seconds a body may block on something
        that is not a journaled call before its run is reported ``timeout``.
        """
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise InvalidInput(f"timeout must be a positive number of seconds (got {timeout!r})")
        engine = self._engine
        if (
            engine is not None
            and not engine.closing
            and (path is None or _same_directory(path, engine.store.path))
        ):
            return await check_store(self._registry, engine.store, timeout=timeout)
        where = path if path is not None else self.path
        if where is None:
            raise InvalidInput("check needs a path: this runtime keeps no directory")
        store = Store(where, readonly=True)
        try:
            return await check_store(self._registry, store, timeout=timeout)
        finally:
            store.close()

    async def purge(
        self,
        before: float | None = None,
        statuses: builtins.list[str] | tuple[str, ...] = ("completed", "failed", "cancelled"),
    ) -> int:
        """Delete terminal run trees whose root ended before ``before``; returns runs purged.

        Only whole trees go, and only when every run of the tree is terminal (R38); a
        tree is chosen by its root's status (``statuses``) and end time, and its
        descendants go with it. ``before=None`` purges every such tree. A purged run
        is :class:`~perdure.RunNotFound`; its idempotency key is free again. Deletes
        run in small background batches beside the runs' own commits.
        """
        cutoff, chosen = check_purge_args(before, statuses)
        engine = self._open_engine()
        return await engine.retention.purge(cutoff, chosen)


def _same_directory(path: str | os.PathLike[str], other: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names the directory ``other`` (through symlinks too)."""
    return os.path.realpath(path) == os.path.realpath(other)


def _schema_of(schema: CompiledSchema | None) -> Any:
    return None if schema is None else schema.schema


def _log_cursor(after: object) -> int | None:
    """``rt.logs``'s ``after``: a seq (int), its text (a ``next_cursor`` sent as text), None."""
    if after is None:
        return None
    if isinstance(after, int) and not isinstance(after, bool):
        if not 0 <= after < 2**63:
            raise InvalidInput(f"after must be a log seq from 0 to 2**63-1 (got {after!r})")
        return after
    if isinstance(after, str):
        return parse_cursor(after)
    raise InvalidInput(f"after must be a log seq (got {after!r})")
