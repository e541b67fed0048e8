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
from perdure.agui import Event
from perdure.storage import (
    Durability,
    ErrorInfo,
    JournalEntry,
    LogRecord,
    Op,
    Ops,
    Owner,
    RunRecord,
    Store,
    TimerRef,
    Writer,
)

from ._admission import Admission
from ._boundary import safe_text
from ._clock import Clock
from ._definitions import Definition, Registry
from ._delivery import cancel, cancel_children, wait_run
from ._hub import ChangeHub
from ._recovery import recover
from ._results import Started
from ._retention import Retention, RetentionService
from ._run_actor import RunActor, RunMessage
from ._schedules import ScheduleService
from ._spawning import spawn, start_queued, timer_due, wake_parent
from ._starting import Checked, Starter, check_start
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
        retention: Retention | None = None,
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
        self.retention_rules = retention
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
        # Actors live in a nursery hosted by a system task, not in the caller's task
        # tree: closing waits for them at most a bounded time, so a body that swallows
        # cancellation cannot keep `async with rt:` from returning (R31).
        self._actors_ready = trio.Event()
        self._actors_done = trio.Event()
        self._actors_error: BaseException | None = None
        trio.lowlevel.spawn_system_task(self._host_actors, name="perdure-actors")
        await self._actors_ready.wait()
        nursery = self.nursery
        nursery.start_soon(self.timers.run, name="perdure-timers")
        self.supervisor = Supervisor(
            nursery, on_failure=self._actor_failed, max_live=self.max_live_actors
        )
        self.schedules = ScheduleService(self)
        try:
            if self.recover:
                self.recovered = recover(self)
            else:
                self.next_seq = self.store.last_seq() + 1
            await self.schedules.open(self.registry.schedules)  # R25, R26: after recovery
            # Purges (R38): rt.purge, and the rules' background passes when recovering.
            self.retention = RetentionService(self, self.retention_rules)
            if self.retention_rules is not None and self.recover:
                nursery.start_soon(self.retention.run, name="perdure-retention")
        except BaseException as exc:
            await self.close(exc)
            raise

    async def _host_actors(self) -> None:
        """The system task that owns the actors' nursery (see :meth:`open`)."""
        try:
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                self._actors_ready.set()
                await trio.sleep_forever()
        except BaseException as exc:  # a system task must not raise (trio would crash)
            if not isinstance(exc, trio.Cancelled):
                self._actors_error = exc
        finally:
            self._actors_done.set()

    async def close(self, exc: BaseException | None) -> None:
        """Stop every actor (runs in flight are recovered at the next open), close storage.

        Bounded: actors get their cancel grace period to stop; one whose body ignores
        cancellation beyond that is abandoned (logged), so closing always finishes.
        """
        self.closing = True
        bound = 2 * self.cancel_grace + 1.0
        try:
            with trio.CancelScope(shield=True):
                with trio.move_on_after(bound):
                    await self.supervisor.stop_all()
                self.nursery.cancel_scope.cancel()
                self.hub.notify_all()
                with trio.move_on_after(bound) as waited:
                    await self._actors_done.wait()
                if waited.cancelled_caught:
                    stuck = [actor.actor_id for actor in self.supervisor][:10]
                    log.error(
                        "perdure: closed with run bodies that ignore cancellation still running "
                        "(abandoned, their runs are recovered at the next open): %s",
                        stuck,
                    )
                await self.writer.aclose()
        finally:
            self.store.close()
            self.tuning.restore()
        # The caller's own exception propagates unchanged; only our tasks' errors surface.
        if self._actors_error is not None:
            raise self._actors_error

    # -- the port (what run actors use) -----------------------------------------------------

    def definition(self, target: str) -> Definition | None:
        return self.registry.get(target)

    def arm_timer(self, ref: TimerRef) -> Op:
        self.timers.arm(ref)
        return self.ops.arm_timer(ref)

    def stored_events(self, run_id: str) -> list[Event]:
        return [event for _, event in self.store.read_events(run_id)]

    def stored_state(self, run_id: str) -> tuple[RunRecord | None, list[JournalEntry]]:
        return self.store.get_run(run_id), self.store.journal(run_id)

    def stored_last_log(self, run_id: str) -> LogRecord | None:
        return self.store.last_log(run_id)

    async def start_child(self, checked: Checked, *, run_id: str, parent: RunRecord) -> Started:
        return await self.starter.start_child(checked, run_id=run_id, parent=parent)

    def check_child(
        self, target: str, input: Any, *, owner: Owner, run_id: str | None, parent: RunRecord
    ) -> Checked:
        return check_start(self.registry, target, input, owner=owner, run_id=run_id, parent=parent)

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
        elif actor.rec.trigger.type == "schedule":
            self.schedules.run_ended(actor.rec)

    def actor_stopped(self, actor: RunActor) -> None:
        if actor.top_level:
            self.admission.release(actor.rec.id)

    # -- internal wiring --------------------------------------------------------------------

    def _timer_due(self, ref: TimerRef) -> None:
        timer_due(self, ref)

    def _start_queued(self, run_id: str) -> bool:
        return start_queued(self, run_id)

    def _actor_failed(self, actor: Actor[RunMessage], exc: BaseException) -> None:
        """A run actor raised (not its body: the actor itself). Fail the run (R31)."""
        log.error("perdure: run actor %s crashed: %r", actor.actor_id, exc)
        if self.closing or not isinstance(actor, RunActor) or actor.phase == "ended":
            return
        self.nursery.start_soon(self._fail_run, actor.rec.id, exc)

    async def _fail_run(self, run_id: str, exc: BaseException) -> None:
        """Record the failure of a run whose actor crashed; if even that cannot be
        stored, hand the error to everyone waiting on the run instead."""
        error = ErrorInfo(
            "INTERNAL_ERROR",
            safe_text(f"the run's actor failed: {type(exc).__name__}: {exc}"),
            {"type": type(exc).__name__},
        )
        try:
            stale = self.supervisor.stopping(run_id)
            if stale is not None:
                await stale.stopped.wait()
            rec = self.store.get_run(run_id)
            if rec is None or rec.terminal or self.closing:
                return
            if self.supervisor.get(run_id) is not None:
                return  # someone re-activated it meanwhile: that actor owns the run now
            actor = spawn(self, rec, serve_only=True)
            await actor.finalize("failed", error=error)
        except Exception as second:
            log.error("perdure: could not record the failure of run %s: %r", run_id, second)
            self.hub.fail(
                run_id,
                StorageError(
                    f"run {run_id} failed and its failure could not be stored: {second}",
                    run_id=run_id,
                ),
            )

    async def drop_timer(self, ref: TimerRef) -> None:
        """Delete the stored timer of a finished run (best effort: it is harmless)."""
        if self.closing:
            return
        with contextlib.suppress(StorageError):
            await self.writer.commit([self.ops.disarm_timer(ref)])
