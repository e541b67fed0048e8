"""The Runtime: definitions, the public API, and the owner of every component.

Threads: the trio thread runs every run actor, the supervisor and followers; the
writer thread (a pykka actor) owns LMDB write transactions. Nothing else.
"""

from __future__ import annotations

import builtins
import contextlib
import gc
import logging
import os
import random
import sys
import time
import weakref
from collections import deque
from collections.abc import AsyncGenerator, Callable
from types import TracebackType
from typing import Any, TypeVar

import msgspec
import trio
import trio.testing

from perdure._errors import (
    IdempotencyConflict,
    InvalidInput,
    InvalidSignal,
    NotWaiting,
    PerdureError,
    PermissionDenied,
    RunNotActive,
    RunNotFound,
    SignalConflict,
    StorageError,
)
from perdure.actors import Actor, Supervisor
from perdure.agui import (
    RunStartedEvent,
    decode_event,
    encode_events,
    is_terminal_event,
)
from perdure.storage import (
    DEFAULT_MAP_SIZE,
    Durability,
    JournalEntry,
    Op,
    Owner,
    RunRecord,
    Store,
    Trigger,
    Writer,
    event_op,
    keys,
    owner_key,
    record_ops,
)

from ._definitions import (
    Body,
    Definition,
    Registry,
    RestartPolicy,
    validate_identifier,
    validate_owner,
)
from ._hub import ChangeHub
from ._lifecycle import check_transition
from ._results import Cancelled, Page, RunEvent, Started, check_statuses, parse_cursor
from ._run_actor import CancelMsg, RunActor, RunMessage, SignalMsg
from ._signals import ExternalEvent, Resumed, Signal, encode_signal, signal_key, wait_key
from ._timers import TimerService, timer_key

__all__ = ["Runtime"]

log = logging.getLogger("perdure")

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
        if max_running is not None and max_running < 1:
            raise InvalidInput("max_running must be at least 1")
        self.path = path
        self.durability: Durability = durability
        self.map_size = map_size
        self.max_running = max_running
        self.cancel_grace = cancel_grace
        self.max_live_actors = max_live_actors
        self.passivate_after = passivate_after
        self.recover = recover
        self.switch_interval = switch_interval
        self._saved_switch_interval: float | None = None
        self.gc_threshold = gc_threshold
        self._saved_gc_threshold: tuple[int, int, int] | None = None
        self.registry = Registry()
        self._opened = False
        self._closing = False
        self._claims: dict[tuple[str, ...], trio.Event] = {}
        self._queued: deque[str] = deque()
        self._running_top = 0
        self._epoch = 0.0
        self._clock_now: Callable[[], float] = trio.current_time
        self._next_seq = 1
        self.recovered: dict[str, int] = {}

    # -- definitions --------------------------------------------------------------------------

    def agent(
        self,
        name: str,
        *,
        input_type: Any = None,
        timeout: float | None = None,
        restart: RestartPolicy | None = None,
    ) -> Callable[[F], F]:
        """Register an agent (target ``agent:NAME``); runs are owned by a Conversation."""
        return self._register("agent", name, input_type, timeout, restart)

    def workflow(
        self,
        name: str,
        *,
        input_type: Any = None,
        timeout: float | None = None,
        restart: RestartPolicy | None = None,
    ) -> Callable[[F], F]:
        """Register a code workflow (target ``workflow:NAME``); owned by a Project."""
        return self._register("workflow", name, input_type, timeout, restart)

    def task(
        self,
        name: str,
        *,
        input_type: Any = None,
        timeout: float | None = None,
        restart: RestartPolicy | None = None,
    ) -> Callable[[F], F]:
        """Register a task (target ``task:NAME``), run as a job owned by a Project."""
        return self._register("job", name, input_type, timeout, restart)

    def _register(
        self,
        kind: Any,
        name: str,
        input_type: Any,
        timeout: float | None,
        restart: RestartPolicy | None,
    ) -> Callable[[F], F]:
        def decorate(fn: F) -> F:
            self.registry.add(
                kind, name, fn, input_type=input_type, timeout=timeout, restart=restart
            )
            return fn

        return decorate

    # -- open / close -------------------------------------------------------------------------

    async def __aenter__(self) -> Runtime:
        if self._opened:
            raise PerdureError("this Runtime is already open")
        self.store = Store(self.path, durability=self.durability, map_size=self.map_size)
        try:
            virtual = isinstance(trio.lowlevel.current_clock(), trio.testing.MockClock)
            self.writer = Writer(self.store, inline=virtual)
        except BaseException:
            self.store.close()
            raise
        current = sys.getswitchinterval()
        if self.switch_interval is not None and self.switch_interval < current:
            self._saved_switch_interval = current
            sys.setswitchinterval(self.switch_interval)
        thresholds = gc.get_threshold()
        if self.gc_threshold is not None and thresholds[0] < self.gc_threshold[0]:
            self._saved_gc_threshold = thresholds
            gc.set_threshold(*self.gc_threshold)
        self.hub = ChangeHub()
        self._epoch = _clock_epoch()
        # The clock's own method: trio.current_time() goes through two more calls.
        self._clock_now = trio.lowlevel.current_clock().current_time
        self.token = trio.lowlevel.current_trio_token()
        self.timers = TimerService(self.now, self._timer_due)
        self._nursery_cm = trio.open_nursery()
        nursery = self._nursery = await self._nursery_cm.__aenter__()
        nursery.start_soon(self.timers.run, name="perdure-timers")
        self.supervisor: Supervisor[RunMessage] = Supervisor(
            nursery, on_failure=self._actor_failed, max_live=self.max_live_actors
        )
        self._opened = True
        self._closing = False
        try:
            if self.recover:
                self._recover()
            else:
                self._next_seq = self.store.last_seq() + 1
        except BaseException as exc:
            await self._shutdown(exc)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        return await self._shutdown(exc)

    async def _shutdown(self, exc: BaseException | None) -> bool | None:
        self._closing = True
        try:
            with trio.CancelScope(shield=True):
                await self.supervisor.stop_all()
                self._nursery.cancel_scope.cancel()
                self.hub.notify_all()
                await self.writer.aclose()
        finally:
            self._opened = False
            self.store.close()
            if self._saved_switch_interval is not None:
                sys.setswitchinterval(self._saved_switch_interval)
                self._saved_switch_interval = None
            if self._saved_gc_threshold is not None:
                gc.set_threshold(*self._saved_gc_threshold)
                self._saved_gc_threshold = None
        # The caller's own exception propagates unchanged: handing it to the nursery
        # would wrap it in an ExceptionGroup and `except RunNotFound:` around
        # `async with rt:` would no longer catch it. Only our tasks' errors surface here.
        await self._nursery_cm.__aexit__(None, None, None)
        return None

    def _recover(self) -> None:
        store = self.store
        self._next_seq = store.last_seq() + 1
        for due, run_id, key in store.timers():
            self.timers.arm(due, run_id, key)
        counts = {"running": 0, "pending": 0, "cancelling": 0, "waiting": 0}
        cancelling: set[str] = set()
        for rec, journal, events in list(store.iter_run_states(family=keys.IDX_CANCELLING)):
            assert rec.cancel is not None
            cancelling.add(rec.id)
            counts["cancelling"] += 1
            actor = self._spawn(rec, start_body=False, journal=journal, events=events)
            actor.tell(CancelMsg(rec.cancel.reason))
        for rec, journal, events in store.iter_run_states("running"):
            if rec.id not in cancelling:
                counts["running"] += 1
                self._spawn(rec, journal=journal, events=events)
        for rec in list(store.iter_runs("pending")):
            if rec.id in cancelling:
                continue
            counts["pending"] += 1
            if rec.parent_id is not None:
                self._spawn(rec)
            else:
                self._queued.append(rec.id)
        # Waiting runs stay passive: they are counted, never loaded (R14, R26).
        counts["waiting"] = store.count_waiting()
        self._admit()
        self.recovered = counts
        if any(counts.values()):
            log.info(
                "perdure: recovered %(running)d running, %(pending)d pending, "
                "%(cancelling)d cancelling; %(waiting)d waiting runs stay passive",
                counts,
            )

    def _require_open(self) -> None:
        if not self._opened or self._closing:
            raise PerdureError("the runtime is not open: use `async with rt:`")

    def now(self) -> float:
        """Seconds since the epoch on the runtime's clock (virtual under trio's MockClock)."""
        return self._epoch + self._clock_now()

    def trio_time(self, when: float) -> float:
        """The trio clock reading at which wall time ``when`` arrives."""
        return when - self._epoch

    def _timer_due(self, run_id: str, key: bytes) -> None:
        if self._closing or not self.recover or self.supervisor.get(run_id) is not None:
            return  # a live run wakes from its own sleep
        if self.supervisor.stopping(run_id) is not None:
            self.timers.arm(self.now() + 0.01, run_id, key)
            return
        rec = self.store.get_run(run_id)
        if rec is None or rec.terminal:
            self._nursery.start_soon(self._drop_timer, key)
            return
        if rec.status == "pending":
            return
        self._spawn(rec)

    # -- actors -------------------------------------------------------------------------------

    def _spawn(
        self,
        rec: RunRecord,
        *,
        start_body: bool = True,
        fresh: bool = False,
        reserved: bool = False,
        journal: list[JournalEntry] | None = None,
        events: list[bytes] | None = None,
    ) -> RunActor:
        """Start the actor of ``rec``.

        A top-level run that will run its body holds a ``max_running`` slot: taken
        here, unless ``start()`` ``reserved`` it ahead, and given back when the actor
        stops. ``journal`` and ``events`` are the run's, when already read (recovery).
        """
        if journal is None:
            journal = [] if fresh else self.store.journal(rec.id)
        actor = RunActor(self, rec, journal, start_body=start_body, fresh=fresh, events=events)
        actor.counted = rec.parent_id is None and start_body and not rec.terminal
        if actor.counted and not reserved:
            self._running_top += 1
        self.supervisor.spawn(actor, parent_id=rec.parent_id)
        return actor

    def _actor_failed(self, actor: Actor[RunMessage], exc: BaseException) -> None:
        log.error("perdure: run actor %s crashed: %r", actor.actor_id, exc)

    def run_finished(self, actor: RunActor) -> None:
        """The run reached a terminal status: wake a passivated parent awaiting it."""
        parent_id = actor.rec.parent_id
        if parent_id is None or self._closing or not self.recover:
            return
        if self.supervisor.get(parent_id) is not None:
            return
        if self.supervisor.stopping(parent_id) is not None:
            return
        parent = self.store.get_run(parent_id)
        if parent is not None and parent.status == "running" and parent.cancel is None:
            self._spawn(parent)

    def actor_stopped(self, actor: RunActor) -> None:
        if actor.counted:
            actor.counted = False
            self._running_top -= 1
            if not self._closing:
                self._admit()

    def _admit(self) -> None:
        if not self.recover:
            return  # administration mode runs nothing
        while self._queued and (self.max_running is None or self._running_top < self.max_running):
            run_id = self._queued.popleft()
            if self.supervisor.get(run_id) is not None:
                continue
            rec = self.store.get_run(run_id)
            if rec is not None and rec.status == "pending":
                self._spawn(rec)

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
        return await self._start(target, input, owner, idempotency_key, run_id, None, Trigger())

    def arm_timer(self, run_id: str, due: float, name: str) -> Op:
        """Arm a durable wake-up of ``run_id`` at ``due``; returns the op that stores it."""
        key = timer_key(run_id, due, name)
        self.timers.arm(due, run_id, key)
        return (self.store.dbs["timers"], key, b"")

    async def _drop_timer(self, key: bytes) -> None:
        """Delete the stored timer of a finished run (best effort: it is harmless)."""
        if self._closing:
            return
        with contextlib.suppress(StorageError):
            await self.writer.commit([(self.store.dbs["timers"], key, None)])

    async def start_run(
        self,
        target: str,
        input: Any,
        *,
        owner: Owner,
        run_id: str | None,
        parent: RunRecord,
    ) -> Started:
        """Start a child of ``parent`` (used by ``ctx.start_child``)."""
        return await self._start(
            target, input, owner, None, run_id, parent, Trigger(type="child", ref=parent.id)
        )

    async def _start(
        self,
        target: str,
        input: Any,
        owner: Owner,
        idempotency_key: str | None,
        run_id: str | None,
        parent: RunRecord | None,
        trigger: Trigger,
    ) -> Started:
        self._require_open()
        definition = self.registry.resolve(target)
        owner = self.registry.check_owner(definition, owner)
        if run_id is not None:
            validate_identifier(run_id, "run_id")
        if idempotency_key is not None and (
            not isinstance(idempotency_key, str)
            or not 1 <= len(_utf8(idempotency_key)) <= 256
            or "\0" in idempotency_key
        ):
            raise InvalidInput("idempotency_key must be a string of 1-256 UTF-8 bytes without NUL")
        _typed, plain = definition.convert_input(input)
        if idempotency_key is None and run_id is None:
            # Nothing to deduplicate against: a fresh id cannot collide.
            return await self._create(definition, owner, plain, None, None, parent, trigger)
        okey = owner_key(owner)
        claims: list[tuple[str, ...]] = []
        if idempotency_key is not None:
            claims.append(("key", okey, idempotency_key))
        if run_id is not None:
            claims.append(("id", run_id))
        while any(claim in self._claims for claim in claims):
            await next(self._claims[c] for c in claims if c in self._claims).wait()
        existing = self._existing(claims)
        if existing is not None:
            return self._duplicate(existing, definition, owner)
        done = trio.Event()
        for claim in claims:
            self._claims[claim] = done
        try:
            return await self._create(
                definition, owner, plain, idempotency_key, run_id, parent, trigger
            )
        finally:
            for claim in claims:
                self._claims.pop(claim, None)
            done.set()

    def _existing(self, claims: list[tuple[str, ...]]) -> RunRecord | None:
        for claim in claims:
            if claim[0] == "key":
                found = self.store.get_idem(claim[1], claim[2])
                rec = self.store.get_run(found) if found is not None else None
            else:
                rec = self.store.get_run(claim[1])
            if rec is not None:
                return rec
        return None

    def _duplicate(self, rec: RunRecord, definition: Definition, owner: Owner) -> Started:
        if rec.target != definition.target or rec.owner != owner:
            raise IdempotencyConflict(
                f"run {rec.id} already exists for {rec.target} owned by {owner_key(rec.owner)}",
                run_id=rec.id,
            )
        return Started(run=rec, duplicate=True)

    async def _create(
        self,
        definition: Definition,
        owner: Owner,
        plain: Any,
        idempotency_key: str | None,
        run_id: str | None,
        parent: RunRecord | None,
        trigger: Trigger,
    ) -> Started:
        now = self.now()
        rid = run_id or new_run_id()
        seq = self._next_seq
        self._next_seq += 1
        rec = RunRecord(
            id=rid,
            seq=seq,
            kind=definition.kind,
            owner=owner,
            target=definition.target,
            root_id=parent.root_id if parent is not None else rid,
            status="pending",
            created_at=now,
            updated_at=now,
            input=plain,
            parent_id=parent.id if parent is not None else None,
            trigger=trigger,
            idempotency_key=idempotency_key,
        )
        admit = self.recover and (
            parent is not None
            or (
                not self._queued
                and (self.max_running is None or self._running_top < self.max_running)
            )
        )
        dbs = self.store.dbs
        ops = []
        if admit:
            check_transition(rid, "pending", "running")
            rec = msgspec.structs.replace(rec, status="running", started_at=now, last_event_id=1)
            started = RunStartedEvent(
                thread_id=owner.id if definition.kind == "agent" else rec.root_id,
                run_id=rid,
                parent_run_id=rec.parent_id,
                timestamp=int(now * 1000),
            )
            ops.append(event_op(dbs, rid, 1, encode_events([started])))
            if definition.timeout is not None:
                ops.append(self.arm_timer(rid, now + definition.timeout, "deadline"))
            if parent is None:
                self._running_top += 1  # reserved now so concurrent starts respect the cap
        ops.extend(record_ops(dbs, None, rec))
        try:
            await self.writer.commit(ops)
        except BaseException:
            if admit and parent is None:
                self._running_top -= 1
            raise
        if admit:
            self._spawn(rec, fresh=True, reserved=True)
        else:
            self._queued.append(rid)
            self._admit()  # a slot may have freed while the commit was in flight
        return Started(run=rec, duplicate=False)

    # -- reading ------------------------------------------------------------------------------

    def get(self, run_id: str) -> RunRecord:
        """The committed record of a run; :class:`~perdure.RunNotFound` if there is none."""
        self._require_open()
        validate_identifier(run_id, "run_id")
        rec = self.store.get_run(run_id)
        if rec is None:
            raise RunNotFound(f"no run {run_id!r}", run_id=run_id)
        return rec

    def list(
        self,
        *,
        owner: Owner | None = None,
        status: str | list[str] | None = None,
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
        self._require_open()
        statuses = check_statuses(status)
        if kind is not None and kind not in _KINDS:
            raise InvalidInput(f"kind must be one of {_KINDS} (got {kind!r})")
        if not isinstance(limit, int) or not 1 <= limit <= 1000:
            raise InvalidInput(f"limit must be an integer from 1 to 1000 (got {limit!r})")
        if owner is not None:
            validate_owner(owner)
        for name, value in (("parent_id", parent_id), ("root_id", root_id)):
            if value is not None and (not isinstance(value, str) or not value):
                raise InvalidInput(f"{name} must be a non-empty string")
        runs, next_seq = self.store.query_runs(
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
        cursor = after
        while True:
            changed = self.hub.watch(run_id) if follow else None
            batch = self.store.events(run_id, cursor, 512)
            for event_id, raw in batch:
                event = decode_event(raw)
                cursor = event_id
                yield RunEvent(run_id=run_id, event_id=event_id, event=event)
                if follow and is_terminal_event(event):
                    return
            if len(batch) == 512:
                continue
            if changed is None or not self._opened or self._closing:
                return
            rec = self.store.get_run(run_id)
            if rec is not None and rec.terminal and rec.last_event_id <= cursor:
                return
            await changed.wait()

    async def wait(self, run_id: str) -> RunRecord:
        """Wait until the run is terminal and return its record (with ``completion``)."""
        self._require_open()
        validate_identifier(run_id, "run_id")
        while True:
            end = self.hub.watch_end(run_id)
            actor = self.supervisor.get(run_id)
            # The staged record runs ahead of the stored one: if it is not terminal,
            # the stored one is not either, and the final commit will notify us.
            if not (isinstance(actor, RunActor) and not actor.rec.terminal):
                rec = self.get(run_id)
                if rec.terminal:
                    return rec
            await end.event.wait()
            if end.rec is not None:
                return end.rec
            if not self._opened or self._closing:
                raise PerdureError("the runtime closed while waiting")

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
        self._require_open()
        key = signal_key(signal)
        encode_signal(signal)  # refuse unserializable payloads before routing
        validate_identifier(run_id, "run_id")
        rec = self.store.get_run(run_id)
        if rec is None:
            raise RunNotActive(f"no run {run_id!r}", run_id=run_id)
        if rec.status == "pending":
            raise NotWaiting(f"run {run_id} has not started yet", run_id=run_id, key=key)
        message = SignalMsg(signal, key)
        actor = await self._live_actor(rec)
        actor.tell(message)
        await message.done.wait()
        if message.error is not None:
            raise message.error
        return Resumed(duplicate=message.duplicate, run_id=run_id, key=key)

    async def publish(self, event: ExternalEvent, *, owner: Owner) -> builtins.list[str]:
        """Deliver an :class:`~perdure.ExternalEvent` to every run of ``owner`` waiting on it.

        Returns the ids of the runs that took it.
        """
        self._require_open()
        if not isinstance(event, ExternalEvent):
            raise InvalidSignal("publish takes an ExternalEvent")
        key = signal_key(event)
        validate_owner(owner)
        taken: builtins.list[str] = []
        after = 0
        while True:
            page = self.store.scan_index(keys.IDX_OWNER, owner_key(owner), after, 1000)
            if not page:
                return taken
            for seq, run_id in page:
                after = seq
                rec = self.store.get_run(run_id)
                if rec is None or rec.waiting is None:
                    continue
                if any(wait_key(w.reason, w.key) == key for w in rec.waiting.waits):
                    try:
                        await self.resume(run_id, event)
                    except (
                        NotWaiting,
                        RunNotActive,
                        SignalConflict,
                        InvalidSignal,
                        PermissionDenied,
                    ):
                        continue  # this run refuses it; the others still get it
                    taken.append(run_id)

    async def _live_actor(self, rec: RunRecord) -> RunActor:
        """The run's live actor, activating it (by replay) if it is passive."""
        while True:
            actor = self.supervisor.get(rec.id)
            if isinstance(actor, RunActor):
                return actor
            stale = self.supervisor.stopping(rec.id)
            if stale is None:
                break
            await stale.stopped.wait()
        fresh = self.store.get_run(rec.id) or rec
        return self._spawn(fresh, start_body=self.recover and not fresh.terminal)

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
        message = CancelMsg(reason[:1000])
        actor = self.supervisor.get(run_id)
        if actor is None:
            stale = self.supervisor.stopping(run_id)
            if stale is not None:
                await stale.stopped.wait()
                return await self.cancel(run_id, reason)
            if run_id in self._queued:
                self._queued.remove(run_id)
            actor = self._spawn(rec, start_body=False)
        actor.tell(message)
        await message.done.wait()
        return Cancelled(cancelled=message.cancelled, run=self.get(run_id))

    async def cancel_children(self, run_id: str, reason: str) -> None:
        """Cancel every non-terminal child of ``run_id`` (each cancels its own first)."""
        children = [rid for _, rid in self.store.scan_index(keys.IDX_PARENT, run_id, 0, 1_000_000)]
        if not children:
            return
        async with trio.open_nursery() as nursery:
            for child in children:
                nursery.start_soon(self._cancel_quietly, child, reason)

    async def _cancel_quietly(self, run_id: str, reason: str) -> None:
        with contextlib.suppress(RunNotFound):
            await self.cancel(run_id, reason)


_EPOCHS: weakref.WeakKeyDictionary[trio.abc.Clock, float] = weakref.WeakKeyDictionary()


def _clock_epoch() -> float:
    """Wall time at trio-clock zero; fixed per clock so a reopened runtime agrees.

    Under a MockClock the trio clock is virtual: computing the epoch afresh at every
    open would move "now" back by the virtual time already elapsed.
    """
    clock = trio.lowlevel.current_clock()
    epoch = _EPOCHS.get(clock)
    if epoch is None:
        epoch = _EPOCHS[clock] = time.time() - trio.current_time()
    return epoch


_id_random = random.Random()  # seeded from os.urandom; ~40x cheaper than uuid4 per id


def new_run_id() -> str:
    """A fresh 32-hex-digit run id (128 random bits, time-ordered prefix)."""
    return f"{time.time_ns() // 1_000_000:012x}{_id_random.getrandbits(80):020x}"


def _utf8(text: str) -> bytes:
    try:
        return text.encode()
    except UnicodeEncodeError:
        raise InvalidInput(f"{text!r} is not valid UTF-8 text") from None
