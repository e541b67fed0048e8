"""Checking a deploy against recorded runs (R37): every unfinished run, replayed dry.

``rt.check()`` and ``perdure check --app module:rt`` replay the journal of every
unfinished run (pending, running, waiting) against the code registered *now*, the way
an activation would after the deploy, but without acting: a journaled call the run
recorded returns its recorded outcome, and the first call it has not recorded (a step
to run, a wait to open, a child to start, a sleep to take, a child still running) is
where that part of the body stops. No step function runs, nothing is written, and the
store may be a live one (opened read-only beside its owner, R27) or a backup.

How a replay stops. The check gives the body a context whose journaled methods catch
the private :class:`_Stop` that the check's journal raises instead of returning
"nothing recorded": the calling task parks there, and sibling tasks of a body that
waits on several things at once go on replaying until every task is parked or the
body ends. The live actor's code path is untouched: the check runs the real
:class:`~._context.RunContext` methods, steps, waits and journal over a
:class:`_CheckActor` whose commits, timers and sleeps stop instead of acting.

What counts as a mismatch (the run would fail with ``NON_DETERMINISM`` or silently
diverge after the deploy):

- the body asks, at a recorded position, for another call than the one recorded
  (:class:`~perdure.NonDeterminismError`, R7);
- the body stops or ends while the run recorded more than the replay reached: a
  journal entry still ahead, a signal for a wait it did not reopen, or a wait the run
  is parked on that the body did not reach (new code inserting a step before the wait
  a run is parked on would otherwise run that step while the run shows an interrupt).
  Patch markers ahead are not a mismatch: a replay skips them (R37).

Other outcomes: ``error`` (the replay raised: the input no longer converts to the
input type, a recorded step failure the body no longer catches ...), ``unknown_target``
(no definition for the run's target: it would stay as stored), ``timeout`` (the body
blocked on something that is not a journaled call). Runs with a cancellation in flight
are reported ``ok`` without a replay: recovery finishes cancelling them. Every outcome
but ``ok`` makes ``perdure check`` exit with status 1.
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Literal, cast

import msgspec
import trio

from perdure._errors import NonDeterminismError, leaves
from perdure.agui import Event
from perdure.storage import JournalEntry, LogRecord, Op, Owner, RunRecord, Store, TimerRef

from ._context import AgentContext, RunContext
from ._definitions import Definition, Registry
from ._journal import Journal
from ._run_actor import RunActor
from ._starting import Checked, check_start
from ._versioning import behind_record

if TYPE_CHECKING:
    from ._engine_port import EnginePort

__all__ = ["CheckReport", "RunCheck", "check_store"]

Outcome = Literal["ok", "mismatch", "error", "unknown_target", "timeout"]
_UNFINISHED = ("running", "waiting", "pending")
_QUIET_ROUNDS = 8
"""Scheduler rounds without progress after which a parked body is judged."""


class RunCheck(msgspec.Struct, omit_defaults=True):
    """What the check found for one unfinished run.

    ``ok``: the run replays cleanly; ``stopped_at`` is the first call it has not
    recorded (``{"kind": "end"}`` if the body would end, ``{"kind": "cancel"}`` for a
    run being cancelled). ``mismatch``: ``recorded`` is what the run recorded there
    (``kind``, ``name`` and, for a journal entry, ``position``), ``new`` what the
    current code asks for instead (``{"kind": "end"}`` if it ends).
    """

    run_id: str
    target: str
    status: str
    outcome: Outcome
    message: str = ""
    recorded: dict[str, Any] | None = None
    new: dict[str, Any] | None = None
    stopped_at: dict[str, Any] | None = None
    version: int | None = None
    """The definition version the run started under."""
    code_version: int | None = None
    """The version of the definition registered now."""

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"


class CheckReport(msgspec.Struct):
    """Every unfinished run, checked (:meth:`Runtime.check`)."""

    runs: list[RunCheck]

    @property
    def ok(self) -> bool:
        """Whether every run would go on under the current code."""
        return all(run.ok for run in self.runs)

    @property
    def failing(self) -> list[RunCheck]:
        return [run for run in self.runs if not run.ok]


class _Stop(BaseException):
    """The replay reached a call the run has not recorded.

    A ``BaseException`` so that a body's ``except Exception`` cannot swallow it.
    """

    def __init__(self, kind: str, name: str) -> None:
        super().__init__(kind, name)
        self.call = {"kind": kind, "name": name}


class _CheckJournal(Journal):
    """A journal that stops the replay where the run's record ends."""

    def take(self, kind: str, name: str) -> JournalEntry | None:
        entry = super().take(kind, name)
        if entry is None:
            raise _Stop(kind, name)
        return entry

    def slot(self, slot: str) -> JournalEntry | None:
        entry = super().slot(slot)
        if entry is None:
            raise _Stop("wait", slot)
        return entry


class _CheckEngine:
    """The little of an engine a replaying body reaches: definitions, clock, op builders,
    and children's ends (read from the store)."""

    virtual_time = False
    passivate_after = float("inf")
    cancel_grace = 0.0

    def __init__(self, registry: Registry, store: Store) -> None:
        self._registry = registry
        self.store = store
        self.ops = store.ops
        self.actor: _CheckActor | None = None

    def now(self) -> float:
        return time.time()

    def trio_time(self, when: float) -> float:
        return trio.current_time() + (when - time.time())

    def definition(self, target: str) -> Definition | None:
        return self._registry.get(target)

    def arm_timer(self, ref: TimerRef) -> Op:
        raise _Stop("timer", ref.name)

    def stored_events(self, run_id: str) -> list[Event]:
        return []

    def check_child(
        self, target: str, input: Any, *, owner: Owner, run_id: str | None, parent: RunRecord
    ) -> Checked:
        return check_start(self._registry, target, input, owner=owner, run_id=run_id, parent=parent)

    def stored_state(self, run_id: str) -> tuple[RunRecord | None, list[JournalEntry]]:
        return self.store.get_run(run_id), self.store.journal(run_id)

    def stored_last_log(self, run_id: str) -> LogRecord | None:
        # ctx.log numbers entries after the run's stored ones; the check commits none.
        return self.store.last_log(run_id)

    async def start_child(self, *args: Any, **kwargs: Any) -> Any:
        raise _Stop("child", str(kwargs.get("run_id")))

    async def cancel_children(self, run_id: str, reason: str) -> None:
        return None

    async def cancel_run(self, run_id: str, reason: str) -> bool:
        # Cancelling a run that has ended is a no-op (R15), so the replay goes on past
        # a cancel the run already made; a live one would be cancelled: stop there.
        rec = self.store.get_run(run_id)
        if rec is None or rec.terminal:
            return False
        raise _Stop("cancel", run_id)

    async def wait_run(self, run_id: str) -> RunRecord:
        rec = self.store.get_run(run_id)
        if rec is not None and rec.terminal:
            return rec
        assert self.actor is not None
        await self.actor.halt(_Stop("child_result", run_id))
        raise AssertionError("unreachable")  # pragma: no cover

    def run_finished(self, actor: Any) -> None:
        return None

    def actor_stopped(self, actor: Any) -> None:
        return None


class _CheckActor(RunActor):
    """A run actor that never acts: commits, timers and sleeps stop the replay."""

    def __init__(self, engine: _CheckEngine, rec: RunRecord, journal: list[JournalEntry]) -> None:
        super().__init__(cast("EnginePort", engine), rec, journal)
        self.journal = _CheckJournal(rec.id, journal, rec.started_at or rec.created_at)
        self.stops: list[dict[str, Any]] = []
        self.progress = 0

    async def halt(self, stop: _Stop) -> None:
        """This task reached the run's frontier: remember where, and wait there."""
        self.stops.append(stop.call)
        self.progress += 1
        await trio.sleep_forever()

    def persist(self, *args: Any, **kwargs: Any) -> Coroutine[Any, Any, None]:
        raise _Stop("commit", "")

    def record(self, kind: str, name: str, *args: Any, **kwargs: Any) -> Coroutine[Any, Any, None]:
        raise _Stop(kind, name)

    def arm_timer(self, due: float, name: str) -> tuple[TimerRef, Op]:
        raise _Stop("timer", name)

    async def sleep_until(self, due: float, ref: TimerRef | None = None) -> None:
        raise _Stop("sleep", ref.name if ref is not None else "")


def _parking(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    async def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await method(self, *args, **kwargs)
        except _Stop as stop:
            await self._actor.halt(stop)

    return call


def _check_context_class(base: type[RunContext]) -> type[RunContext]:
    """``base`` with every public coroutine method parking the task at a :class:`_Stop`."""
    methods = {
        name: _parking(member)
        for name, member in inspect.getmembers(base, inspect.iscoroutinefunction)
        if not name.startswith("_")
    }
    return type(f"Check{base.__name__}", (base,), methods)


_CHECK_RUN_CONTEXT = _check_context_class(RunContext)
_CHECK_AGENT_CONTEXT = _check_context_class(AgentContext)


# -- one run --------------------------------------------------------------------------------


async def check_run(
    registry: Registry, store: Store, rec: RunRecord, journal: list[JournalEntry], timeout: float
) -> RunCheck:
    """Replay one unfinished run dry against the registered code (module docstring)."""
    definition = registry.get(rec.target)
    found = RunCheck(
        run_id=rec.id,
        target=rec.target,
        status=rec.status,
        outcome="ok",
        version=rec.version,
        code_version=definition.version if definition is not None else None,
    )
    if definition is None:
        found.outcome = "unknown_target"
        found.message = f"no definition is registered for {rec.target}: the run would stay as is"
        return found
    if not definition.runs_version(rec.version):
        # Recovery leaves such a run as stored (R37): not a failure of the new code.
        found.outcome = "unknown_target"
        found.message = (
            f"version {rec.version} of {rec.target} is not registered: the run would stay as is"
        )
        return found
    if rec.cancel is not None:
        found.stopped_at = {"kind": "cancel"}
        found.message = "a cancellation is in flight: recovery finishes it without a replay"
        return found
    engine = _CheckEngine(registry, store)
    actor = engine.actor = _CheckActor(engine, rec, journal)
    context = _CHECK_AGENT_CONTEXT if rec.kind == "agent" else _CHECK_RUN_CONTEXT
    ctx = context(actor)
    ended: list[BaseException | None] = []

    async def body() -> None:
        # The body's own task, as for a live actor: its calls are the positional ones.
        actor.main_task = trio.lowlevel.current_task()
        try:
            await definition.fn(ctx, definition.decode_input(rec.input))
        except BaseException as exc:
            # Whatever the body raises ends the dry run (the cancellation that tears
            # it down once judged too, which is then ignored).
            ended.append(exc)
            if any(isinstance(e, KeyboardInterrupt | SystemExit) for e in leaves(exc)):
                raise
        else:
            ended.append(None)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(body)
        with trio.move_on_after(timeout) as scope:
            quiet, seen = 0, -1
            while not ended and quiet < _QUIET_ROUNDS:
                await trio.sleep(0)
                marks = (
                    actor.progress
                    + actor.journal.pos
                    + sum(actor.journal.wait_counts.values())
                    + len(actor.journal.patches)
                )
                quiet = quiet + 1 if actor.stops and marks == seen else 0
                seen = marks
        judged = _judge(
            found, actor, ended[0] if ended else None, bool(ended), scope.cancelled_caught, timeout
        )
        nursery.cancel_scope.cancel()
    return judged


def _judge(
    found: RunCheck,
    actor: _CheckActor,
    raised: BaseException | None,
    ended: bool,
    timed_out: bool,
    timeout: float,
) -> RunCheck:
    stops = list(actor.stops)
    if raised is not None:
        inner = leaves(raised)
        nondeterminism = next((e for e in inner if isinstance(e, NonDeterminismError)), None)
        if nondeterminism is not None:
            detail = nondeterminism.detail
            found.outcome = "mismatch"
            found.message = nondeterminism.message
            found.recorded = dict(detail.get("expected") or {}, position=detail.get("position"))
            found.new = dict(detail.get("got") or {})
            return found
        stopped = [e for e in inner if isinstance(e, _Stop)]
        if stopped and len(stopped) == len(inner):
            stops.extend(stop.call for stop in stopped)
        else:
            error = next((e for e in inner if not isinstance(e, _Stop)), raised)
            found.outcome = "error"
            found.message = f"the replay raised {type(error).__name__}: {error}"
            return found
    if timed_out and not stops:
        found.outcome = "timeout"
        found.message = (
            f"the body neither ended nor reached a journaled call within {timeout} s "
            "(it blocks on something the journal does not record)"
        )
        return found
    ahead = behind_record(actor.journal, actor.rec, markers=False, entered_only=True)
    new = stops[0] if stops else {"kind": "end"}
    if ahead is not None:
        found.outcome = "mismatch"
        found.recorded = ahead
        found.new = new
        what = "ends" if not stops else f"asks for {new['kind']} {new['name']!r}"
        found.message = (
            f"the body {what} where the run recorded {ahead['kind']} {ahead['name']!r}"
            + (f" at position {ahead['position']}" if "position" in ahead else "")
        )
        return found
    found.stopped_at = new if stops or ended else None
    return found


# -- every unfinished run -------------------------------------------------------------------


async def check_store(registry: Registry, store: Store, *, timeout: float = 5.0) -> CheckReport:
    """Check every unfinished run of ``store`` against ``registry`` (module docstring)."""
    runs: list[RunCheck] = []
    for status in _UNFINISHED:
        for rec in store.iter_runs(status):
            # The record first, then the journal: a journal only grows, so it is at least
            # as far as the record says (never behind the waits the record lists).
            journal = store.journal(rec.id)
            runs.append(await check_run(registry, store, rec, journal, timeout))
    return CheckReport(runs=runs)
