"""Cron schedules in the engine (R25, R26): declared in code, fired exactly once per tick.

The time logic is pure and lives in :mod:`._cron` (expressions, zones and DST, catch-up
plans, the overlap table, fire keys); this module applies it to a live runtime.

Declaring
    ``rt.schedule(name, cron, target=…)`` before opening records a declaration
    (:class:`Declaration`). At open each one is applied: created if the store has no
    schedule of that name, updated if its definition changed, left alone otherwise
    (counters, the pause flag and the history stay). A changed cron expression or time
    zone starts from now: no catch-up for ticks the old expression never had. A stored
    schedule that the opening code does not declare is kept but inert: it does not
    fire in that process, and shows ``declared=False``.

Exactly once per tick
    A tick is keyed by (schedule name, scheduled instant in integer UTC ms,
    :func:`._cron.fire_key`). The ``fires`` entry of that key, the run it starts (whose
    id is derived from the key, ``schedule:NAME:MS``) and the schedule's record with
    its moved cursor are written in **one** transaction. So a tick that has a key has
    its run, a crash either kept all three or none, and after a restart the cursor is
    past every tick that fired. Before firing, the key and the run id are also looked
    up, which makes a second attempt at the same tick a no-op whatever its cause.
    Within the process every decision about a schedule is taken on the trio thread
    without an await between reading its state and submitting the commit, so two
    fires of one schedule cannot race.

Timers
    One trio task and one heap of ``(next instant, name)`` for all schedules, with one
    :func:`._cron.iter_fires` iterator per schedule pulled as time reaches it. The task
    sleeps until the earliest tick (a cancel-scope deadline, like the run timer
    service), so idle schedules cost a heap entry and an iterator each, and no CPU.
    Schedules do not use the run :class:`~._timers.TimerService`: its entries are
    stored ``TimerRef`` s of runs, while a schedule's next tick is derived from its
    stored cursor at every open and needs no stored timer. Under
    ``trio.testing.MockClock`` the heap's deadlines are virtual, so a simulated year
    takes what its fires cost, deterministically.

Overlap, catch-up, limits (the tables are in :mod:`._cron`)
    A due tick goes through :func:`._cron.overlap_action` with the schedule's state:
    ``running`` while a run it started has not ended (``active``), ``buffered`` while a
    tick waits for it. ``replace`` cancels the active runs and keeps the new tick
    waiting like a buffered one; a waiting tick starts, under its own key, when the
    last active run ends (whatever its outcome). After downtime the ticks missed since
    the cursor follow :func:`._cron.plan_catchup` (R26) and then the overlap table one
    by one. ``max_runs`` counts the ticks that started a run; past it the schedule
    stops firing. Pausing stops future ticks; resuming starts from now (ticks of the
    paused stretch are not caught up); deleting removes the schedule (a tick already
    waiting is dropped; runs already started go on). A manual ``trigger`` starts a run
    at once, whatever the overlap policy, idempotent with its key, and does not count
    towards ``max_runs``.

Runs a schedule starts are ``Trigger(type="schedule", ref=name, scheduled_at=tick)``
(``scheduled_at`` unset for manual triggers), owned by ``Project("schedule:NAME")``
unless the declaration names an owner.
"""

from __future__ import annotations

import heapq
import logging
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import msgspec
import trio

from perdure._errors import (
    InvalidInput,
    PerdureError,
    RunNotFound,
    ScheduleNotFound,
    StorageError,
    UnknownTarget,
)
from perdure.storage import Op, Owner, Project, RunRecord, ScheduleRecord, Trigger, owner_key

from ._boundary import text
from ._cron import (
    DEFAULT_CATCHUP_BOUND,
    Action,
    CronSpec,
    check_catchup,
    check_overlap,
    fire_key,
    iter_fires,
    next_fires,
    overlap_action,
    plan_catchup,
)
from ._definitions import Definition, validate_owner
from ._delivery import cancel
from ._results import Started

if TYPE_CHECKING:
    from ._engine import Engine

__all__ = ["Declaration", "ScheduleInfo", "ScheduleService", "declare"]

log = logging.getLogger("perdure.schedules")

_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,100}")
_EARLY: Final = 0.001
"""A tick is due this close to its instant (the wake-up deadline rounds through floats)."""
_NEXT: Final = 5


@dataclass(frozen=True)
class Declaration:
    """A schedule declared in code (``rt.schedule``), applied when the runtime opens."""

    name: str
    spec: CronSpec
    target: str
    input: Any
    owner: Owner
    overlap: str
    catchup: str
    catchup_bound: int
    max_runs: int | None
    description: str | None


def check_name(name: object) -> str:
    """``name`` if it is a valid schedule name; :class:`~perdure.InvalidInput` otherwise."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidInput(f"schedule name must match {_NAME.pattern} (got {name!r})", field="name")
    return name


def declare(
    name: object,
    cron: object,
    *,
    target: object,
    input: Any,
    timezone: object,
    overlap: object,
    catchup: object,
    catchup_bound: object,
    max_runs: object,
    owner: object,
    description: object,
) -> Declaration:
    """Check a declaration (everything that needs no registry): InvalidInput if unfit."""
    name = check_name(name)
    spec = CronSpec(cron, timezone)  # type: ignore[arg-type]  # checked there
    if not isinstance(target, str) or not target.startswith(("task:", "workflow:")):
        raise InvalidInput(
            f"schedule target must be 'task:NAME' or 'workflow:NAME' (got {target!r})",
            field="target",
        )
    policy = check_overlap(overlap)
    catch = check_catchup(catchup, catchup_bound)
    if max_runs is not None and (
        isinstance(max_runs, bool) or not isinstance(max_runs, int) or max_runs < 1
    ):
        raise InvalidInput("max_runs must be a positive integer or None", field="max_runs")
    if owner is None:
        owner = Project(f"schedule:{name}")
    owner = validate_owner(owner)
    if not isinstance(owner, Project):
        raise InvalidInput("a schedule's runs are owned by a Project", field="owner")
    if description is not None and not isinstance(description, str):
        raise InvalidInput("description must be a string", field="description")
    try:  # R30: what will be stored must read back
        msgspec.msgpack.decode(msgspec.msgpack.encode(input))
    except (TypeError, msgspec.EncodeError, msgspec.DecodeError) as exc:
        raise InvalidInput(f"schedule {name!r}: input is not serializable: {exc}") from None
    return Declaration(
        name=name,
        spec=spec,
        target=target,
        input=input,
        owner=owner,
        overlap=policy,
        catchup=catch,
        catchup_bound=catchup_bound,  # type: ignore[arg-type]  # checked above
        max_runs=max_runs,
        description=description,
    )


class ScheduleInfo(msgspec.Struct, frozen=True, omit_defaults=True):
    """A schedule as ``rt.get_schedule`` / ``rt.list_schedules`` show it.

    Instants are UTC epoch seconds. ``last_scheduled_at``: the tick of the last fire
    that started a run; ``last_successful_at``: when the last run it started that
    completed finished. ``next_fire_times``: the next five ticks (empty while paused,
    past ``max_runs``, or not declared by the open code). ``runs``: runs started
    (``fired`` ticks plus ``triggered`` by hand); ``skipped``: ticks the overlap
    policy skipped; ``buffered``: ticks that waited for a run to end; ``missed``:
    ticks dropped by catch-up after downtime. ``active``: its runs not yet ended.
    """

    name: str
    cron: str
    timezone: str
    target: str
    owner: Owner
    overlap: str
    catchup: str
    paused: bool
    next_fire_times: list[float]
    runs: int
    fired: int
    triggered: int
    skipped: int
    buffered: int
    missed: int
    created_at: float
    updated_at: float
    declared: bool
    input: Any = None
    catchup_bound: int = DEFAULT_CATCHUP_BOUND
    max_runs: int | None = None
    description: str | None = None
    last_scheduled_at: float | None = None
    last_successful_at: float | None = None
    last_run_id: str | None = None
    active: list[str] = msgspec.field(default_factory=list)
    buffered_at: float | None = None


def info_of(rec: ScheduleRecord, declared: bool, now: float) -> ScheduleInfo:
    """The public view of a stored schedule at time ``now``."""
    upcoming: list[float] = []
    exhausted = rec.max_runs is not None and rec.fired >= rec.max_runs
    if declared and not rec.paused and not exhausted:
        upcoming = next_fires(CronSpec(rec.cron, rec.timezone), max(rec.cursor, now), _NEXT)
    return ScheduleInfo(
        name=rec.name,
        cron=rec.cron,
        timezone=rec.timezone,
        target=rec.target,
        owner=rec.owner,
        overlap=rec.overlap,
        catchup=rec.catchup,
        paused=rec.paused,
        next_fire_times=upcoming,
        runs=rec.fired + rec.triggered,
        fired=rec.fired,
        triggered=rec.triggered,
        skipped=rec.skipped,
        buffered=rec.buffered,
        missed=rec.missed,
        created_at=rec.created_at,
        updated_at=rec.updated_at,
        declared=declared,
        input=rec.input,
        catchup_bound=rec.catchup_bound,
        max_runs=rec.max_runs,
        description=rec.description,
        last_scheduled_at=rec.last_scheduled_at,
        last_successful_at=rec.last_successful_at,
        last_run_id=rec.last_run_id,
        active=list(rec.active),
        buffered_at=rec.buffered_at,
    )


def fire_run_id(name: str, at_ms: int) -> str:
    """The id of the run a tick starts: derived from its fire key, so unique per tick."""
    return f"schedule:{name}:{at_ms}"


class _Live:
    """One schedule in memory: its staged record and, if it fires here, its iterator."""

    __slots__ = ("declared", "fires", "rec", "spec", "version")

    def __init__(self, rec: ScheduleRecord, declared: bool) -> None:
        self.rec = rec
        self.declared = declared
        self.spec = CronSpec(rec.cron, rec.timezone)
        self.fires: Iterator[float] | None = None
        self.version = 0
        """Bumped whenever the heap entry must be ignored (pause, delete, re-arm)."""


class _Plan:
    """One commit a tick produced, and what to do once it is durable (or failed)."""

    __slots__ = ("done", "failed", "name", "ops")

    def __init__(
        self,
        name: str,
        ops: list[Op],
        done: Callable[[], None] | None = None,
        failed: Callable[[], None] | None = None,
    ) -> None:
        self.name = name
        self.ops = ops
        self.done = done
        self.failed = failed


async def _unregistered(ctx: Any, inp: Any) -> Any:  # pragma: no cover - never run
    raise UnknownTarget("this target is not registered in this process")


class ScheduleService:
    """Every schedule of one open engine: declarations applied, ticks fired, API calls."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._live: dict[str, _Live] = {}
        self._heap: list[tuple[float, str, int]] = []
        self._ended: list[RunRecord] = []
        self._scope: trio.CancelScope | None = None
        self._opened = False

    # -- opening ------------------------------------------------------------------------------

    async def open(self, declarations: dict[str, Declaration]) -> None:
        """Load stored schedules; when the engine recovers, apply the declarations, catch
        up on missed ticks (R26) and start firing."""
        engine = self._engine
        for rec in engine.store.schedules():
            self._live[rec.name] = _Live(rec, declared=False)
        self._opened = True
        if not engine.recover:
            return  # administration: schedules can be read and changed, nothing fires
        now = engine.now()
        plans: list[_Plan] = []
        for declaration in declarations.values():
            plans.extend(self._apply(declaration, now))
        await self._commit(plans)
        plans = []
        for live in self._live.values():
            plans.extend(self._reconcile(live, now))
        for live in self._live.values():
            if live.declared and not live.rec.paused:
                plans.extend(self._catch_up(live, now))
        await self._commit(plans)
        for live in self._live.values():
            self._arm(live)
        engine.nursery.start_soon(self._run, name="perdure-schedules")

    def _apply(self, declaration: Declaration, now: float) -> list[_Plan]:
        """Create, update or leave alone the stored schedule a declaration names."""
        engine = self._engine
        registry = engine.registry
        definition = registry.resolve(declaration.target)
        owner = registry.check_owner(definition, declaration.owner)
        _, plain = definition.convert_input(declaration.input)
        spec = declaration.spec
        wanted = {
            "cron": spec.expr,
            "timezone": spec.timezone,
            "target": definition.target,
            "input": plain,
            "owner": owner,
            "overlap": declaration.overlap,
            "catchup": declaration.catchup,
            "catchup_bound": declaration.catchup_bound,
            "max_runs": declaration.max_runs,
            "description": declaration.description,
        }
        live = self._live.get(declaration.name)
        if live is None:
            rec = ScheduleRecord(
                name=declaration.name,
                created_at=now,
                updated_at=now,
                cursor=now,
                **wanted,
            )
            live = self._live[declaration.name] = _Live(rec, declared=True)
            return [self._save(live)]
        live.declared = True
        old = live.rec
        if all(getattr(old, field) == value for field, value in wanted.items()):
            return []
        rec = msgspec.structs.replace(old, updated_at=now, **wanted)
        if (old.cron, old.timezone) != (spec.expr, spec.timezone):
            rec = msgspec.structs.replace(rec, cursor=max(old.cursor, now))
            live.spec = spec
        elif self._exhausted(old) and not self._exhausted(rec):
            # More runs allowed for a schedule that had used them all: it goes on from
            # now. The ticks since it stopped were not missed by downtime; catching them
            # up would fire the past.
            rec = msgspec.structs.replace(rec, cursor=max(old.cursor, now))
        live.rec = rec
        log.info("perdure: schedule %s updated from its declaration", declaration.name)
        return [self._save(live)]

    def _reconcile(self, live: _Live, now: float) -> list[_Plan]:
        """Forget active runs that ended while the process was down; start a waiting tick."""
        rec = live.rec
        if not rec.active:
            return self._start_waiting(live) if rec.buffered_at is not None else []
        store = self._engine.store
        still: list[str] = []
        last_ok = rec.last_successful_at
        for run_id in rec.active:
            run = store.get_run(run_id)
            if run is None or not run.terminal:
                if run is not None:
                    still.append(run_id)
                continue
            if run.status == "completed" and run.finished_at is not None:
                last_ok = max(last_ok or 0.0, run.finished_at)
        if still == rec.active:
            return []
        live.rec = msgspec.structs.replace(rec, active=still, last_successful_at=last_ok)
        plans = self._start_waiting(live)
        return plans or [self._save(live)]

    def _catch_up(self, live: _Live, now: float) -> list[_Plan]:
        rec = live.rec
        if rec.cursor >= now or self._exhausted(rec):
            return []
        plan = plan_catchup(
            live.spec,
            rec.cursor,
            now,
            rec.catchup,  # type: ignore[arg-type]
            rec.catchup_bound,
        )
        plans: list[_Plan] = []
        for at in plan.fire:
            plans.extend(self._on_tick(live, at))
        live.rec = msgspec.structs.replace(
            live.rec, cursor=max(live.rec.cursor, now), missed=live.rec.missed + plan.dropped
        )
        if plan.dropped:
            log.info(
                "perdure: schedule %s: %d tick(s) missed while down were dropped (%s)",
                rec.name,
                plan.dropped,
                rec.catchup,
            )
        plans.append(self._save(live))
        return plans

    # -- the timer task -----------------------------------------------------------------------

    def _arm(self, live: _Live) -> None:
        """Put the schedule's next tick on the heap, if it fires in this process."""
        live.version += 1
        rec = live.rec
        if not live.declared or rec.paused or self._exhausted(rec):
            live.fires = None
            return
        if live.fires is None:
            live.fires = iter_fires(live.spec, rec.cursor)
        at = next(live.fires, None)
        if at is None:
            live.fires = None
            return
        heapq.heappush(self._heap, (at, rec.name, live.version))
        scope = self._scope
        if scope is not None and self._heap[0][0] == at:
            scope.deadline = min(scope.deadline, self._engine.trio_time(at))

    def _wake(self) -> None:
        if self._scope is not None:
            self._scope.deadline = -math.inf

    async def _run(self) -> None:
        engine = self._engine
        while True:
            with trio.CancelScope() as scope:
                self._scope = scope
                if self._ended:
                    scope.deadline = -math.inf
                elif self._heap:
                    scope.deadline = engine.trio_time(self._heap[0][0])
                await trio.sleep_forever()
            self._scope = None
            await self._tick()

    async def _tick(self) -> None:
        plans: list[_Plan] = []
        ended, self._ended = self._ended, []
        by_schedule: dict[str, list[RunRecord]] = {}
        for rec in ended:
            if rec.trigger.ref is not None:
                by_schedule.setdefault(rec.trigger.ref, []).append(rec)
        for name, runs in by_schedule.items():
            plans.extend(self._on_ended(name, runs))
        heap = self._heap
        now = self._engine.now()
        while heap and heap[0][0] <= now + _EARLY:
            at, name, version = heapq.heappop(heap)
            live = self._live.get(name)
            if live is None or live.version != version:
                continue
            plans.extend(self._on_tick(live, at))
            live.version += 1
            self._arm(live)
        if plans:
            await self._commit(plans)
        else:
            await trio.lowlevel.checkpoint()

    # -- decisions (synchronous: nothing awaits between a decision and its submission) -------

    @staticmethod
    def _exhausted(rec: ScheduleRecord) -> bool:
        return rec.max_runs is not None and rec.fired >= rec.max_runs

    def _save(self, live: _Live) -> _Plan:
        return _Plan(live.rec.name, [self._engine.ops.save_schedule(live.rec)])

    def _on_tick(self, live: _Live, at: float) -> list[_Plan]:
        """A tick of ``live`` is due: start, skip, buffer, or replace (the overlap table)."""
        rec = live.rec
        if at <= rec.cursor or self._exhausted(rec):
            return []  # handled already, or the schedule is done
        action = overlap_action(
            rec.overlap,  # type: ignore[arg-type]
            bool(rec.active),
            rec.buffered_at is not None and bool(rec.active),
        )
        rec = live.rec = msgspec.structs.replace(rec, cursor=max(rec.cursor, at))
        if action == Action.START:
            key = fire_key(rec.name, at)
            run_id = fire_run_id(rec.name, key.at_ms)
            if self._engine.store.tick_taken(key.schedule, key.at_ms, run_id):
                if self._engine.store.get_fire(key.schedule, key.at_ms) is not None:
                    return []  # fired already
                log.error(
                    "perdure: schedule %s: run id %s is taken; tick skipped", rec.name, run_id
                )
                live.rec = msgspec.structs.replace(rec, skipped=rec.skipped + 1)
                return [self._save(live)]
            return self._start(live, at)
        if action == Action.SKIP:
            live.rec = msgspec.structs.replace(rec, skipped=rec.skipped + 1)
            return [self._save(live)]
        if action == Action.BUFFER:
            live.rec = msgspec.structs.replace(rec, buffered_at=at, buffered=rec.buffered + 1)
            return [self._save(live)]
        # CANCEL_THEN_START: this tick waits for the active runs, which are cancelled.
        superseded = 1 if rec.buffered_at is not None else 0
        live.rec = msgspec.structs.replace(rec, buffered_at=at, skipped=rec.skipped + superseded)
        for run_id in rec.active:
            self._engine.nursery.start_soon(self._cancel, run_id, rec.name)
        return [self._save(live)]

    def _start_waiting(self, live: _Live) -> list[_Plan]:
        """The active runs ended: start the tick that waited for them, if any."""
        rec = live.rec
        at = rec.buffered_at
        if at is None or rec.active:
            return []
        live.rec = msgspec.structs.replace(rec, buffered_at=None)
        if self._exhausted(rec):
            return [self._save(live)]
        key = fire_key(rec.name, at)
        if self._engine.store.tick_taken(key.schedule, key.at_ms, fire_run_id(rec.name, key.at_ms)):
            return [self._save(live)]  # fired already (or its run id is taken)
        return self._start(live, at)

    def _on_ended(self, name: str, runs: list[RunRecord]) -> list[_Plan]:
        live = self._live.get(name)
        if live is None:
            return []
        rec = live.rec
        ids = {run.id for run in runs}
        last_ok = rec.last_successful_at
        for run in runs:
            if run.status == "completed" and run.finished_at is not None:
                last_ok = max(last_ok or 0.0, run.finished_at)
        active = [run_id for run_id in rec.active if run_id not in ids]
        if active == rec.active and last_ok == rec.last_successful_at:
            return []
        live.rec = msgspec.structs.replace(rec, active=active, last_successful_at=last_ok)
        return self._start_waiting(live) or [self._save(live)]

    def _definition(self, target: str) -> Definition:
        definition = self._engine.registry.get(target)
        if definition is not None:
            return definition
        if self._engine.recover:
            raise UnknownTarget(f"no definition is registered for {target!r}", target=target)
        # Administration mode (the CLI): the run is stored pending and runs when the
        # directory's owner, which registers the target, next opens it.
        prefix, _, name = target.partition(":")
        return Definition(
            kind="job" if prefix == "task" else "workflow",
            name=name,
            fn=_unregistered,
            input_type=Any,
        )

    def _start(self, live: _Live, at: float) -> list[_Plan]:
        """Start the run of tick ``at``: run, fire key and schedule record in one commit."""
        engine = self._engine
        rec = live.rec
        key = fire_key(rec.name, at)
        run_id = fire_run_id(rec.name, key.at_ms)
        try:
            definition = self._definition(rec.target)
        except UnknownTarget:
            log.error(
                "perdure: schedule %s: %s is not registered; tick skipped", rec.name, rec.target
            )
            live.rec = msgspec.structs.replace(rec, skipped=rec.skipped + 1)
            return [self._save(live)]
        starter = engine.starter
        trigger = Trigger(type="schedule", ref=rec.name, scheduled_at=at)
        run, ops, admit = starter.build(
            definition, rec.owner, rec.input, rec.input, None, run_id, None, trigger
        )
        live.rec = msgspec.structs.replace(
            rec,
            fired=rec.fired + 1,
            last_scheduled_at=at
            if rec.last_scheduled_at is None
            else max(rec.last_scheduled_at, at),
            last_run_id=run_id,
            active=[*rec.active, run_id],
        )
        ops.append(engine.ops.fire(rec.name, key.at_ms, run_id))
        ops.append(engine.ops.save_schedule(live.rec))
        return [
            _Plan(
                rec.name,
                ops,
                done=lambda: starter.launch(run, admit),
                failed=lambda: starter.abandon(run, admit),
            )
        ]

    async def _commit(self, plans: list[_Plan]) -> None:
        """Submit every plan (each its own batch, grouped by the writer), then settle them."""
        if not plans:
            return
        writer = self._engine.writer
        pendings = [writer.submit(plan.ops) for plan in plans]
        broken: set[str] = set()
        for plan, pending in zip(plans, pendings, strict=True):
            try:
                await writer.wait(pending)
            except StorageError as exc:
                if self._engine.closing:
                    return
                log.error("perdure: schedule %s: a commit failed: %s", plan.name, exc)
                broken.add(plan.name)
                if plan.failed is not None:
                    plan.failed()
                continue
            if plan.done is not None:
                plan.done()
        for name in broken:
            self._reload(name)

    def _reload(self, name: str) -> None:
        """Back to the stored state of a schedule after a failed commit."""
        stored = self._engine.store.get_schedule(name)
        live = self._live.get(name)
        if stored is None or live is None:
            self._live.pop(name, None)
            return
        live.rec = stored
        live.spec = CronSpec(stored.cron, stored.timezone)
        live.fires = None
        if self._engine.recover and self._opened:
            self._arm(live)

    async def _cancel(self, run_id: str, name: str) -> None:
        rec = self._engine.store.get_run(run_id)
        if rec is None or rec.terminal:
            return
        try:
            await cancel(self._engine, rec, f"replaced by a newer tick of schedule {name}")
        except (RunNotFound, PerdureError) as exc:
            log.warning("perdure: schedule %s: cancelling %s failed: %r", name, run_id, exc)

    # -- what the engine tells us -------------------------------------------------------------

    def run_ended(self, rec: RunRecord) -> None:
        """A run a schedule started is terminal (called after its final commit)."""
        if self._engine.closing:
            return
        self._ended.append(rec)
        self._wake()

    # -- the API ------------------------------------------------------------------------------

    def _get(self, name: str) -> _Live:
        check_name(name)
        live = self._live.get(name)
        if live is None:
            raise ScheduleNotFound(f"no schedule {name!r}", name=name)
        return live

    def info(self, name: str) -> ScheduleInfo:
        live = self._get(name)
        stored = self._engine.store.get_schedule(name) or live.rec
        return info_of(stored, live.declared, self._engine.now())

    def infos(self) -> list[ScheduleInfo]:
        now = self._engine.now()
        declared = {name for name, live in self._live.items() if live.declared}
        return [info_of(rec, rec.name in declared, now) for rec in self._engine.store.schedules()]

    async def pause(self, name: str) -> None:
        live = self._get(name)
        if live.rec.paused:
            return
        live.rec = msgspec.structs.replace(live.rec, paused=True, updated_at=self._engine.now())
        self._arm(live)
        await self._commit([self._save(live)])

    async def resume(self, name: str) -> None:
        live = self._get(name)
        if not live.rec.paused:
            return
        now = self._engine.now()
        live.rec = msgspec.structs.replace(
            live.rec, paused=False, updated_at=now, cursor=max(live.rec.cursor, now)
        )
        live.fires = None
        if self._engine.recover:
            self._arm(live)
        await self._commit([self._save(live)])

    async def delete(self, name: str, declarations: dict[str, Declaration]) -> None:
        live = self._get(name)
        live.version += 1
        del self._live[name]
        declarations.pop(name, None)
        await self._commit([_Plan(name, [self._engine.ops.delete_schedule(name)])])

    async def trigger(self, name: str, idempotency_key: str | None) -> Started:
        """Start a run of the schedule now (idempotent with ``idempotency_key``)."""
        live = self._get(name)
        if idempotency_key is not None:
            text(idempotency_key, "idempotency_key", max_bytes=128)
        engine = self._engine
        definition = self._definition(live.rec.target)
        owner = live.rec.owner
        key = None if idempotency_key is None else f"schedule:{name}:{idempotency_key}"
        claims: list[tuple[str, ...]] = [] if key is None else [("key", owner_key(owner), key)]
        starter = engine.starter
        async with starter.claim(claims):
            if key is not None:
                found = engine.store.get_idem(owner_key(owner), key)
                existing = engine.store.get_run(found) if found is not None else None
                if existing is not None:
                    return Started(run=existing, duplicate=True)
            live = self._get(name)  # still there after waiting for the claim?
            rec = live.rec
            trigger = Trigger(type="schedule", ref=name)
            run, ops, admit = starter.build(
                definition, owner, rec.input, rec.input, key, None, None, trigger
            )
            live.rec = msgspec.structs.replace(
                rec,
                triggered=rec.triggered + 1,
                last_run_id=run.id,
                active=[*rec.active, run.id],
            )
            ops.append(engine.ops.save_schedule(live.rec))
            try:
                await engine.writer.commit(ops)
            except BaseException:
                starter.abandon(run, admit)
                self._reload(name)
                raise
            starter.launch(run, admit)
        return Started(run=run, duplicate=False)
