"""The engine: the composition root behind :class:`~perdure.Runtime`.

It owns every component of an open runtime and wires them together:

- storage: the :class:`~perdure.storage.Store` and its single
  :class:`~perdure.storage.Writer` (a pykka thread, group commit);
- the trio side: the :class:`~perdure.actors.Supervisor` of run actors, the
  :class:`~._timers.TimerService`, the :class:`~._hub.ChangeHub` followers park on,
  :class:`~._admission.Admission` (``max_running``), the :class:`~._clock.Clock`;
- :class:`~._tuning.ProcessTuning` (GIL switch interval, GC thresholds) while open.

Run actors see it only through :class:`~._engine_port.EnginePort`. The behaviour is
spread over modules named for what they hold: spawning and activation of actors
(:mod:`._spawning`), recovery at open (:mod:`._recovery`), starts and idempotency
(:mod:`._starting`), delivery of signals and cancellations (:mod:`._delivery`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

import trio

from perdure._errors import StorageError
from perdure.actors import Actor, Supervisor
from perdure.storage import (
    Durability,
    JournalEntry,
    Op,
    Ops,
    Owner,
    RunRecord,
    Store,
    TimerRef,
    Writer,
)

from ._admission import Admission
from ._clock import Clock
from ._definitions import Definition, Registry
from ._delivery import cancel, cancel_children, wait_run
from ._hub import ChangeHub
from ._recovery import recover
from ._results import Started
from ._run_actor import RunActor, RunMessage
from ._spawning import start_queued, timer_due, wake_parent
from ._starting import Starter
from ._timers import TimerService
from ._tuning import ProcessTuning

__all__ = ["Engine"]

log = logging.getLogger("perdure")


class Engine:
    """Every component of one open runtime (see the module docstring)."""

    ops: Ops
    writer: Writer
    hub: ChangeHub
    supervisor: Supervisor[RunMessage]
    admission: Admission
    token: trio.lowlevel.TrioToken
    virtual_time: bool

    def __init__(
        self,
        registry: Registry,
        *,
        path: Any,
        durability: Durability,
        map_size: int,
        max_running: int | None,
        cancel_grace: float,
        max_live_actors: int | None,
        passivate_after: float,
        recover: bool,
        tuning: ProcessTuning,
    ) -> None:
        self.registry = registry
        self.path = path
        self.durability = durability
        self.map_size = map_size
        self.max_running = max_running
        self.cancel_grace = cancel_grace
        self.max_live_actors = max_live_actors
        self.passivate_after = passivate_after
        self.recover = recover
        self.tuning = tuning
        self.closing = False
        self.recovered: dict[str, int] = {}
        self.next_seq = 1

    # -- open / close -----------------------------------------------------------------------

    async def open(self) -> None:
        """Open storage, start the writer, the timers and the supervisor, then recover."""
        self.store = Store(self.path, durability=self.durability, map_size=self.map_size)
        try:
            self.clock = Clock()
            self.virtual_time = self.clock.virtual
            self.writer = Writer(self.store, inline=self.virtual_time)
        except BaseException:
            self.store.close()
            raise
        self.ops = self.store.ops
        self.tuning.apply()
        self.now: Callable[[], float] = self.clock.now
        self.trio_time: Callable[[float], float] = self.clock.trio_time
        self.hub = ChangeHub()
        self.token = trio.lowlevel.current_trio_token()
        self.timers = TimerService(self.now, self._timer_due)
        self.admission = Admission(self.max_running, self._start_queued)
        self.admission.enabled = self.recover
        self.starter = Starter(self)
        self._nursery_cm = trio.open_nursery()
        nursery = self.nursery = await self._nursery_cm.__aenter__()
        nursery.start_soon(self.timers.run, name="perdure-timers")
        self.supervisor = Supervisor(
            nursery, on_failure=self._actor_failed, max_live=self.max_live_actors
        )
        try:
            if self.recover:
                self.recovered = recover(self)
            else:
                self.next_seq = self.store.last_seq() + 1
        except BaseException as exc:
            await self.close(exc)
            raise

    async def close(self, exc: BaseException | None) -> None:
        """Stop every actor (runs in flight are recovered at the next open), close storage."""
        self.closing = True
        try:
            with trio.CancelScope(shield=True):
                await self.supervisor.stop_all()
                self.nursery.cancel_scope.cancel()
                self.hub.notify_all()
                await self.writer.aclose()
        finally:
            self.store.close()
            self.tuning.restore()
        # The caller's own exception propagates unchanged: handing it to the nursery
        # would wrap it in an ExceptionGroup and `except RunNotFound:` around
        # `async with rt:` would no longer catch it. Only our tasks' errors surface here.
        await self._nursery_cm.__aexit__(None, None, None)

    # -- the port (what run actors use) -----------------------------------------------------

    def definition(self, target: str) -> Definition | None:
        return self.registry.get(target)

    def arm_timer(self, ref: TimerRef) -> Op:
        self.timers.arm(ref)
        return self.ops.arm_timer(ref)

    def stored_events(self, run_id: str) -> list[bytes]:
        return [raw for _, raw in self.store.events(run_id)]

    def stored_state(self, run_id: str) -> tuple[RunRecord | None, list[JournalEntry]]:
        return self.store.get_run(run_id), self.store.journal(run_id)

    async def start_child(
        self, target: str, input: Any, *, owner: Owner, run_id: str | None, parent: RunRecord
    ) -> Started:
        return await self.starter.start_child(
            target, input, owner=owner, run_id=run_id, parent=parent
        )

    async def cancel_children(self, run_id: str, reason: str) -> None:
        await cancel_children(self, run_id, reason)

    async def cancel_run(self, run_id: str, reason: str) -> bool:
        rec = self.store.get_run(run_id)
        if rec is None or rec.terminal:
            return False
        return (await cancel(self, rec, reason)).cancelled

    async def wait_run(self, run_id: str) -> RunRecord:
        return await wait_run(self, run_id)

    def run_finished(self, actor: RunActor) -> None:
        if not actor.top_level:
            wake_parent(self, actor)

    def actor_stopped(self, actor: RunActor) -> None:
        if actor.top_level:
            self.admission.release(actor.rec.id)

    # -- internal wiring --------------------------------------------------------------------

    def _timer_due(self, ref: TimerRef) -> None:
        timer_due(self, ref)

    def _start_queued(self, run_id: str) -> bool:
        return start_queued(self, run_id)

    def _actor_failed(self, actor: Actor[RunMessage], exc: BaseException) -> None:
        log.error("perdure: run actor %s crashed: %r", actor.actor_id, exc)

    async def drop_timer(self, ref: TimerRef) -> None:
        """Delete the stored timer of a finished run (best effort: it is harmless)."""
        if self.closing:
            return
        with contextlib.suppress(StorageError):
            await self.writer.commit([self.ops.disarm_timer(ref)])
