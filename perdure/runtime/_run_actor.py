"""The run actor: one trio task per live run, owning its state machine.

The actor holds the run's *staged* record: every change is computed from values
(:mod:`._lifecycle` for status changes), applied to the staged record synchronously
(so concurrent activity inside one run — the body emitting while a cancel arrives —
is ordered) and submitted to the writer in that order. The writer commits a run's
batches in submission order, so the stored record always equals a prefix of the
staged history. If a commit fails, every later batch of the run fails with it (they
share a :class:`~perdure.storage.Chain`) and the actor rolls its memory back to what
is stored, so event ids stay gap-free and the run can go on or fail cleanly (R32).
Readers outside the actor only read the store and therefore only see committed state
(R20).

The user body runs in the actor's main task inside its own cancel scope. Messages
(cancellation, signals) arrive in the mailbox and are handled one at a time while the
body runs.

Phases (:data:`Phase`): ``serving`` actors only answer messages (administration mode,
or a run activated just to take a cancel or a signal); ``live`` ones run or will run
the body; ``finalizing`` is set once the terminal commit is being written and
``ended`` once it is durable. Nothing is written after ``ended``.

Replay: the body is re-run from the start on every activation; each journaled action
(``emit``, ``step`` …) first consults the :class:`~._journal.Journal` and returns the
recorded outcome without acting again while the cursor is behind the journal's end
(R6). Asking for a different action than the one recorded raises
:class:`NonDeterminismError` (R7).
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Coroutine, Sequence
from typing import TYPE_CHECKING, Any, Literal

import msgspec
import trio

from perdure._errors import NonDeterminismError, PerdureError, RunNotActive, StorageError, leaves
from perdure.actors import Actor, LazyEvent
from perdure.agui import CustomEvent, Event, OpenItems
from perdure.storage import (
    Chain,
    ErrorInfo,
    JournalEntry,
    Op,
    RunRecord,
    Status,
    TimerRef,
    TokenUsage,
)

from ._boundary import plain, plain_sized, safe_text
from ._context import make_context
from ._journal import Journal
from ._lifecycle import begin, finish, request_cancel, run_started, thread_id, while_waiting
from ._signals import Signal, interrupt_for
from ._steps import step_of
from ._waits import WaitFuture, accept_signals

if TYPE_CHECKING:
    from ._engine_port import EnginePort
    from ._logs import RunLogs

__all__ = ["CancelMsg", "Phase", "RunActor", "RunMessage", "SignalMsg"]

log = logging.getLogger("perdure.run")

Phase = Literal["serving", "live", "finalizing", "ended"]
"""Where an actor is in its life (see the module docstring)."""

_NEVER_RESTART = frozenset(
    {"NON_DETERMINISM", "RUN_TIMEOUT", "SERIALIZATION_ERROR", "INVALID_OUTPUT"}
)


class RunMessage:
    """Base of the messages a run actor handles; ``done`` is set once it is handled."""

    __slots__ = ("done", "error")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.error: PerdureError | None = None


class CancelMsg(RunMessage):
    """Cancel the run (R15); ``cancelled`` is False if it had already ended."""

    __slots__ = ("cancelled", "reason")

    def __init__(self, reason: str) -> None:
        super().__init__()
        self.reason = reason
        self.cancelled = False


class SignalMsg(RunMessage):
    """Deliver resume signals (R12), all or none; ``done`` once stored or refused.

    ``signals`` are ``(signal, namespaced key)`` pairs; ``duplicates`` says, for each,
    whether an equal signal had already been taken.
    """

    __slots__ = ("duplicates", "signals")

    def __init__(self, signals: list[tuple[Signal, str]]) -> None:
        super().__init__()
        self.signals = signals
        self.duplicates: list[bool] = []


class RunActor(Actor[RunMessage]):
    """Owns one run: its record, its body task, its journal, its open items."""

    __slots__ = (
        "body_done",
        "body_scope",
        "chain",
        "definition",
        "engine",
        "final_commit",
        "finish_reason",
        "futures",
        "journal",
        "logs",
        "model",
        "open",
        "parked",
        "pending_ops",
        "phase",
        "preloaded_events",
        "provider",
        "rec",
        "result_size",
        "running_steps",
        "steps_in_flight",
        "top_level",
        "usage",
    )

    def __init__(
        self,
        engine: EnginePort,
        rec: RunRecord,
        journal: list[JournalEntry],
        *,
        serve_only: bool = False,
        events: list[Event] | None = None,
    ) -> None:
        super().__init__(rec.id)
        self.engine = engine
        self.rec = rec
        self.phase: Phase = "serving" if serve_only else "live"
        self.top_level = rec.parent_id is None
        # None when the target is not registered in this process: such an actor can
        # still be cancelled or answer for its record, but it cannot run the body.
        self.definition = engine.definition(rec.target)
        self.journal = Journal(rec.id, journal, rec.started_at or rec.created_at)
        self.futures: dict[str, WaitFuture] = {}
        self.open = OpenItems()
        self.body_done = LazyEvent()  # awaited only by a cancel within its grace period
        self.body_scope: trio.CancelScope | None = None
        self.final_commit = LazyEvent()  # awaited only by a second finalize
        self.usage: list[TokenUsage] = []
        self.model: str | None = None
        self.provider: str | None = None
        self.finish_reason: str | None = None
        self.result_size = 0  # JSON bytes of the result, known once the body returned
        self.steps_in_flight = 0
        """Concurrent step attempts executing now (a run is never passivated under one)."""
        self.running_steps: set[tuple[str | None, str]] | None = None
        """(lane, name) of the keyed steps in flight (see ``_steps``); made on first use."""
        self.pending_ops: list[Op] = []
        self.parked: set[TimerRef] | None = None
        """Stored timers that wake the body's parked tasks: re-armed if we stop."""
        self.preloaded_events = events
        self.chain = Chain()
        self.logs: RunLogs | None = None
        """Raw-log state (``ctx.log``), built at the first call (``_logs``)."""

    @property
    def deadline(self) -> float | None:
        """Wall time at which the run times out (its definition's ``timeout``)."""
        timeout = self.definition.timeout if self.definition is not None else None
        if timeout is None or self.rec.started_at is None:
            return None
        return self.rec.started_at + timeout

    @property
    def busy(self) -> bool:
        """Messages queued or in hand, or a step executing: not to be passivated.

        A body may wait in one task while a step runs in another (step-graph
        branches); stopping the actor then would throw that step's work away. Steps of
        other tasks are counted; the body's own task is asked through its context, so
        its steps (the hot path) pay nothing for this.
        """
        if self.steps_in_flight > 0 or super().busy:
            return True
        main = self.main_task
        return main is not None and step_of(self, main.context) is not None

    @property
    def ended(self) -> bool:
        """The terminal commit has started: nothing else may be written."""
        return self.phase == "finalizing" or self.phase == "ended"

    # -- persistence --------------------------------------------------------------------------

    def thread_id(self) -> str:
        return thread_id(self.rec)

    async def persist(
        self,
        new: RunRecord | None = None,
        events: Sequence[Event] = (),
        journal: Sequence[JournalEntry] = (),
        extra_ops: Sequence[Op] = (),
        now: float | None = None,
    ) -> None:
        """Stage ``new`` (or the current record) plus events and journal entries, commit.

        Returns once durable; followers are notified after the acknowledgement. If the
        commit fails, the actor's memory is rolled back to the stored state and the error
        (a :class:`~perdure.StorageError`) is raised.
        """
        if self.phase == "ended":
            # An abandoned body (past its cancel grace) may still try to act: the run
            # is terminal and its log closed, so nothing more is written (R1, R19).
            raise RunNotActive(f"run {self.rec.id} has ended", run_id=self.rec.id)
        engine = self.engine
        old = self.rec
        base = old if new is None else new
        build = engine.ops
        run_id = old.id
        ops = list(extra_ops)
        if self.pending_ops:
            ops.extend(self.pending_ops)
        event_id = old.last_event_id
        now_ms = int((engine.now() if now is None else now) * 1000)
        stamped: list[Event] = []
        if events:
            if old.status == "waiting" and new is None:
                events = self._segment_while_waiting(events)
            for event in events:
                if event.timestamp is None:
                    event = msgspec.structs.replace(event, timestamp=now_ms)
                stamped.append(event)
            event_id += len(stamped)
            ops.append(build.events(run_id, event_id, stamped))
        position = base.journal_len
        for entry in journal:
            ops.append(build.journal(run_id, position, entry))
            position += 1
        if new is None:
            # Only events or journal entries: the stored record is left alone (readers
            # derive its counters from the key ranges), which keeps a step's commit small.
            rec = msgspec.structs.replace(base, last_event_id=event_id, journal_len=position)
        else:
            rec = msgspec.structs.replace(
                base, last_event_id=event_id, journal_len=position, updated_at=now_ms / 1000
            )
            ops.extend(build.save_run(old, rec))
        chain = self.chain
        writer = engine.writer
        pending = writer.submit(ops, chain)
        # Submitted: apply to memory (a failure below rolls it all back).
        self.pending_ops = []
        self.rec = rec
        observe = self.open.observe
        for event in stamped:
            observe(event)
        if journal:
            self.journal.tail = journal[-1]
        try:
            await writer.wait(pending)
        except StorageError:
            if chain is self.chain:
                self.rollback()
            raise
        engine.hub.notify(run_id, rec if rec.terminal else None)

    def _segment_while_waiting(self, events: Sequence[Event]) -> list[Event]:
        """Events committed while the run shows an interrupt: a segment of their own (R19).

        A run is ``waiting`` as soon as one task of its body waits, but another task
        may still be working (a step-graph branch beside an approval). After an
        interrupt AG-UI accepts only ``RUN_STARTED``, so such a commit logs
        ``RUN_STARTED``, its events, closes what they opened, and announces the open
        waits again: the log ends every commit on an interrupt while the run waits.
        """
        rec = self.rec
        assert rec.waiting is not None
        view = self.open.copy()
        for event in events:
            view.observe(event)
        interrupts = [interrupt_for(w) for w in rec.waiting.waits]
        return while_waiting(rec, events, interrupts, view.closing_events())

    def rollback(self) -> None:
        """Back to what is stored, after a failed commit (R32); a new chain starts."""
        rec, entries = self.engine.stored_state(self.rec.id)
        self.chain = Chain()
        self.pending_ops = []
        self.logs = None  # queued log entries were dropped with pending_ops: re-read
        if rec is None:
            return
        journal = Journal(rec.id, entries, self.journal.time)
        journal.carry_over(self.journal)
        self.journal = journal
        self.rec = rec
        self.open = OpenItems()
        for event in self.engine.stored_events(rec.id):
            self.open.observe(event)
        log.warning("run %s: a commit failed; in-memory state rolled back to the store", rec.id)

    def record(
        self,
        kind: str,
        name: str,
        value: bytes = b"",
        error: ErrorInfo | None = None,
        events: Sequence[Event] = (),
        extra_ops: Sequence[Op] = (),
    ) -> Coroutine[Any, Any, None]:
        """Journal a new positional entry with its events in one commit.

        Returns the commit to await: ``persist`` itself, without a wrapper frame on a
        path every step takes.
        """
        now = self.engine.now()
        entry = JournalEntry(kind, name, value, error, now)
        self.journal.append(entry)
        return self.persist(events=events, journal=(entry,), extra_ops=extra_ops, now=now)

    # -- timers -------------------------------------------------------------------------------

    def timer(self, due: float, name: str) -> TimerRef:
        return TimerRef.at(self.rec.id, due, name)

    def arm_timer(self, due: float, name: str) -> tuple[TimerRef, Op]:
        """Arm a durable wake-up for ``due``; returns it and the op that stores it.

        The stored timer is removed with the run's next commit after it fired.
        """
        ref = TimerRef.at(self.rec.id, due, name)
        return ref, self.engine.arm_timer(ref)

    def deadline_timer(self, started_at: float) -> list[Op]:
        """The stored timer that wakes a passive run when its run timeout passes (the
        commit that ends the run deletes it)."""
        timeout = self.definition.timeout if self.definition is not None else None
        if timeout is None:
            return []
        return [self.engine.arm_timer(TimerRef.at(self.rec.id, started_at + timeout, "deadline"))]

    async def sleep_until(self, due: float, ref: TimerRef | None = None) -> None:
        """Sleep on the runtime clock; long sleeps passivate the actor (R14).

        A sleeping body holds no ``max_running`` slot; it takes one again before it
        goes on.
        """
        engine = self.engine
        delay = due - engine.now()
        if delay > 0:
            supervisor = engine.supervisor
            run_id = self.rec.id
            # Only a sleep backed by a stored timer may be passivated: the timer is
            # what wakes the run again.
            if ref is not None:
                supervisor.mark_idle(run_id)
                if delay >= engine.passivate_after:
                    supervisor.passivate(run_id)
            if self.top_level:
                engine.admission.release(run_id)
            # Left set if the sleep is cancelled: on_stop then re-arms the timer.
            if ref is not None:
                self.park(ref)
            try:
                await trio.sleep_until(engine.trio_time(due))
            finally:
                supervisor.mark_busy(run_id)
            if ref is not None:
                self.unpark(ref)
            if self.top_level:
                await engine.admission.acquire(run_id)
        if ref is not None:
            self.pending_ops.append(self.engine.ops.disarm_timer(ref))
        self.journal.advance_time(due)

    def _ending_timers(self) -> list[TimerRef]:
        """The stored timers the run's end leaves pointless: its run timeout's, its
        parked tasks' (a sleep, a retry backoff) and its open waits' deadlines."""
        refs: list[TimerRef] = []
        due = self.deadline
        if due is not None:
            refs.append(TimerRef.at(self.rec.id, due, "deadline"))
        if self.parked:
            refs.extend(self.parked)
        waiting = self.rec.waiting
        if waiting is not None:
            for wait in waiting.waits:
                if wait.deadline is not None:
                    refs.append(self.timer(wait.deadline, wait.slot))
        return list(dict.fromkeys(refs)) if len(refs) > 1 else refs

    def park(self, ref: TimerRef) -> None:
        """A task of the body parks until ``ref`` (re-armed if the actor stops meanwhile)."""
        parked = self.parked
        if parked is None:
            parked = self.parked = set()
        parked.add(ref)

    def unpark(self, ref: TimerRef) -> None:
        if self.parked is not None:
            self.parked.discard(ref)

    # -- lifecycle ----------------------------------------------------------------------------

    async def on_start(self) -> None:
        if self.rec.last_event_id:
            events = self.preloaded_events
            if events is None:
                events = self.engine.stored_events(self.rec.id)
            for event in events:
                self.open.observe(event)
        self.preloaded_events = None

    async def run(self) -> None:
        """Run the body (replaying its journal), or only serve messages if told so."""
        if self.phase == "serving":
            await trio.sleep_forever()  # a cancel or signal stops the actor
        definition = self.definition
        if definition is None or (
            definition.versions is not None and self.rec.version not in definition.versions
        ):
            # Left exactly as stored: a later process that registers the target (or the
            # version the run was started under) runs it.
            log.warning(
                "run %s: %s%s is not registered here; left as is",
                self.rec.id,
                self.rec.target,
                "" if self.rec.version is None else f" version {self.rec.version}",
            )
            self.stop()
            return
        admission = self.engine.admission
        if self.top_level and admission.limit is not None:
            await admission.acquire(self.rec.id)
        rec = self.rec
        if rec.status == "pending":
            now = self.engine.now()
            change = begin(rec, now)
            await self.persist(change.record, change.events, extra_ops=self.deadline_timer(now))
        elif self.open:
            await self._abort_open_attempt()
        await self._body_main()

    async def on_receive(self, message: RunMessage) -> None:
        try:
            if isinstance(message, CancelMsg):
                await self._on_cancel(message)
            elif isinstance(message, SignalMsg):
                message.duplicates = await accept_signals(self, message.signals)
        except PerdureError as exc:
            message.error = exc
        except Exception as exc:
            # Not a refusal but a failure of the actor itself: the caller learns it, and
            # the actor fails (the engine then fails the run, R31).
            message.error = PerdureError(
                safe_text(f"run {self.rec.id}: internal error: {type(exc).__name__}: {exc}"),
                run_id=self.rec.id,
            )
            raise
        finally:
            message.done.set()
            if isinstance(message, SignalMsg) and self.phase == "serving":
                self.stop()  # activated only to answer for a terminal run

    def on_stop(self) -> None:
        # Passivated while parked on a timer: the timer service may already have fired
        # it (a live run wakes itself, so the service ignored it); arm it again so the
        # passive run is woken.
        if self.parked and self.phase == "live":
            for ref in self.parked:
                self.engine.timers.arm(ref)
        # Messages left in the mailbox (the actor failed, or closed) are answered, never
        # left waiting (R31); a live caller retries against the next actor of the run.
        while (message := self.mailbox.get_nowait()) is not None:
            message.error = RunNotActive(
                f"run {self.rec.id} could not take the message: its actor stopped",
                run_id=self.rec.id,
            )
            message.done.set()
        self.engine.actor_stopped(self)

    def on_failure(self, exc: BaseException) -> None:
        log.error("run actor %s failed", self.actor_id, exc_info=exc)

    def run_started_event(self) -> Event:
        return run_started(self.rec)

    async def _abort_open_attempt(self) -> None:
        """R21: close what a crashed attempt left open, mark it, then replay."""
        closing = self.open.closing_cut_step()
        if not closing:
            return  # only journaled emits are open: the replayed body carries on with them
        marker = CustomEvent(
            name="perdure.attempt_aborted",
            value={"attempt": self.rec.attempt, "closed": len(closing)},
        )
        rec = msgspec.structs.replace(self.rec, attempt=self.rec.attempt + 1)
        await self.persist(rec, [*closing, marker])

    # -- the body -----------------------------------------------------------------------------

    async def _body_main(self) -> None:
        if self.phase == "finalizing" or self.phase == "ended":
            self.body_done.set()
            return
        while True:
            status, result, error = await self._run_body_once()
            if self.rec.cancel is not None:
                status, result, error = "cancelled", None, None
            if status != "failed" or error is None or not await self._restart(error):
                break
        await self.finalize(status, result, error)
        self.body_done.set()

    async def _run_body_once(self) -> tuple[Status, Any, ErrorInfo | None]:
        definition = self.definition
        assert definition is not None
        engine = self.engine
        if self.deadline is not None and engine.now() >= self.deadline:
            # Re-activated past its timeout (it was passivated, or the process was down).
            return "failed", None, _timeout_error(definition.timeout)
        ctx = make_context(self)
        try:
            typed = definition.decode_input(self.rec.input)
            with trio.CancelScope() as scope:
                self.body_scope = scope
                if self.rec.cancel is not None:
                    scope.cancel()
                elif self.deadline is not None:
                    scope.deadline = engine.trio_time(self.deadline)
                value = await definition.fn(ctx, typed)
                result, self.result_size = plain_sized(value, f"result of {self.rec.target}")
                definition.check_output(result)
                return "completed", result, None
            if self.rec.cancel is not None:
                return "cancelled", None, None
            return "failed", None, _timeout_error(definition.timeout)
        except Exception as raised:
            return "failed", None, _error_of(raised)
        finally:
            self.body_scope = None

    async def _restart(self, error: ErrorInfo) -> bool:
        """Supervision (R18): restart a failed body if its policy allows, else False.

        At most ``max_restarts`` within ``period`` seconds, waiting ``backoff``
        doubled per recent restart. The restart is logged as a CUSTOM
        ``perdure.restart`` event. If the body failed on a step, that step's
        failure record is dropped so the restarted body runs it again; every
        other recorded step replays from the journal.
        """
        policy = self.definition.restart if self.definition is not None else None
        if policy is None or error.code in _NEVER_RESTART:
            return False
        now = self.engine.now()
        recent = [t for t in self.rec.restarts if t > now - policy.period]
        if len(recent) >= policy.max_restarts:
            return False
        delay = policy.backoff * 2 ** len(recent)
        ops: list[Op] = []
        rec = msgspec.structs.replace(self.rec, restarts=[*recent, now])
        tail = self.journal.tail
        if tail is not None and tail.kind in ("step", "kstep") and tail.error is not None:
            position = rec.journal_len - 1
            ops.append(self.engine.ops.drop_journal(rec.id, position))
            rec = msgspec.structs.replace(rec, journal_len=position)
            self.journal.drop_last(tail)
        marker = CustomEvent(
            name="perdure.restart",
            value={
                "restart": len(recent) + 1,
                "attempt": len(recent) + 2,
                "delay": delay,
                "error": msgspec.to_builtins(error),
            },
        )
        await self.persist(rec, [*self.open.closing_cut_step(), marker], extra_ops=ops)
        await trio.sleep(delay)
        self.journal.rewind()
        if self.logs is not None:
            self.logs.rewind()
        self.usage.clear()  # the re-run body reports its usage again
        return self.rec.cancel is None

    async def finalize(
        self, status: Status, result: Any = None, error: ErrorInfo | None = None
    ) -> None:
        """Write completion, terminal status and terminal event in one batch (R3).

        Exactly once: a second caller (the cancel handler racing the body's own
        end) waits until the first one's commit is durable.
        """
        if self.phase == "finalizing" or self.phase == "ended":
            await self.final_commit.wait()
            return
        self.phase = "finalizing"
        engine = self.engine
        if self.journal.has_children:
            # A parent never ends while a child it owns is still running (R15).
            await engine.cancel_children(self.rec.id, f"parent run {status}")
        change = finish(
            self.rec,
            status,
            result=result,
            error=error,
            usage=self.usage,
            model=self.model,
            provider=self.provider,
            finish_reason=self.finish_reason,
            closing=self.open.closing_events(),
            now=engine.now(),
            result_size=self.result_size,
        )
        # The run's timers go with its end: left until due, every run that ended within
        # its timeout would keep a stored timer and a heap entry that long.
        timers = self._ending_timers()
        if not timers:
            await self.persist(change.record, change.events)
        else:
            disarm = engine.ops.disarm_timer
            await self.persist(
                change.record, change.events, extra_ops=[disarm(ref) for ref in timers]
            )
            for ref in timers:  # once the deletes are stored (R32)
                engine.timers.disarm(ref)
        self.phase = "ended"
        self.final_commit.set()
        engine.run_finished(self)
        if trio.lowlevel.current_task() is self.main_task:
            # The body's own end: run() is returning, so there is nothing to cancel
            # (and cancelling a scope is far from free on this path).
            self.mailbox.close()
        else:
            self.stop()

    # -- cancellation -------------------------------------------------------------------------

    async def _on_cancel(self, message: CancelMsg) -> None:
        if self.ended or self.rec.terminal:
            return
        await self._finish_cancel(message.reason)
        message.cancelled = True

    async def _finish_cancel(self, reason: str) -> None:
        """Persist the request, cancel descendants (deepest first), stop the body (R15, R16).

        The request is durable first, so a body that sees its children end (and
        raises ``ChildCancelled``) still ends ``cancelled``, and a crash mid-cancel
        finishes the cancellation on recovery.
        """
        engine = self.engine
        if self.rec.cancel is None:
            await self.persist(request_cancel(self.rec, reason, engine.now()))
        await engine.cancel_children(self.rec.id, reason)
        scope = self.body_scope
        if scope is None:
            await self.finalize("cancelled")
            return
        scope.cancel()
        with trio.move_on_after(engine.cancel_grace):
            await self.body_done.wait()
        if not self.ended:
            log.warning("run %s: body ignored cancellation past the grace period", self.rec.id)
            await self.finalize("cancelled")


def _error_of(raised: Exception) -> ErrorInfo:
    """The recorded error of a body that raised ``raised``.

    A nursery in the body wraps what its tasks raised in an ``ExceptionGroup``; a group
    of one is reported as the exception inside it, so the run's error says what
    happened instead of "Exceptions from Trio nursery".
    """
    exc: BaseException = raised
    if isinstance(exc, BaseExceptionGroup):
        # Concurrent tasks that diverged each raise: the run's error is the divergence
        # (never restarted), not a group of them.
        diverged, _ = exc.split(NonDeterminismError)
        if diverged is not None:
            exc = diverged
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    if isinstance(exc, BaseExceptionGroup) and all(
        isinstance(leaf, NonDeterminismError) for leaf in leaves(exc)
    ):
        exc = leaves(exc)[0]
    if isinstance(exc, PerdureError):
        return ErrorInfo(exc.code, safe_text(exc.message), _plain_detail(exc.detail))
    if isinstance(exc, BaseExceptionGroup):
        message = "; ".join(f"{type(e).__name__}: {_str(e)}" for e in exc.exceptions[:10])
        message = f"{type(exc).__name__}: {message}"
    else:
        message = f"{type(exc).__name__}: {_str(exc)}"
    trace = "".join(traceback.format_exception(raised, limit=20))[-4000:]
    return ErrorInfo(
        "UNHANDLED_EXCEPTION",
        safe_text(message),
        {"type": type(exc).__name__, "traceback": safe_text(trace)},
    )


def _str(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # a broken __str__ must not cost the run its error record
        return f"<{type(exc).__name__} whose str() failed>"


def _timeout_error(timeout: float | None) -> ErrorInfo:
    return ErrorInfo("RUN_TIMEOUT", f"run exceeded its {timeout} s timeout", {"timeout": timeout})


def _plain_detail(detail: dict[str, Any]) -> dict[str, Any]:
    """An error's detail as plain data; what is not plain data is kept as its repr."""
    try:
        value = plain(detail, "error detail", limit=64 * 1024)
    except PerdureError:
        return {safe_text(str(key), 200): safe_text(repr(v), 2000) for key, v in detail.items()}
    result: dict[str, Any] = value
    return result
