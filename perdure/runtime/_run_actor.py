"""The run actor: one trio task per live run, owning its state machine.

The actor holds the run's *staged* record: every change is applied to it
synchronously (so concurrent activity inside one run — the body emitting while a
cancel arrives — is ordered) and submitted to the writer in that order. The
writer commits a run's batches in submission order, so the stored record always
equals a prefix of the staged history. Readers outside the actor only read the
store and therefore only see committed state (R20).

The user body runs in the actor's main task inside its own cancel scope. Messages
(cancellation, later signals and timers) arrive in the mailbox and are handled
one at a time while the body runs.

Replay: the body is re-run from the start on every activation; each journaled
action (``emit``, ``step`` …) first consults the journal and returns the
recorded outcome without acting again while the cursor is behind the journal's
end (R6). Asking for a different action than the one recorded raises
:class:`NonDeterminismError` (R7).
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any

import msgspec
import trio

from perdure._errors import NonDeterminismError, PerdureError, RunNotActive, SerializationError
from perdure.actors import Actor, LazyEvent
from perdure.agui import (
    CustomEvent,
    Event,
    OpenItems,
    RunErrorEvent,
    RunFinishedCancelledOutcome,
    RunFinishedEvent,
    RunStartedEvent,
    decode_event,
    encode_events,
)
from perdure.storage import (
    CancelRequest,
    Completion,
    ErrorInfo,
    JournalEntry,
    Op,
    RunRecord,
    TokenUsage,
    event_op,
    journal_op,
    keys,
    record_ops,
)

from ._context import make_context
from ._definitions import to_plain
from ._lifecycle import check_transition
from ._signals import Signal
from ._steps import StepBuffer
from ._timers import timer_key
from ._waits import WaitFuture, accept_signal

if TYPE_CHECKING:
    from ._runtime import Runtime

__all__ = ["CancelMsg", "RunActor", "RunMessage", "SignalMsg"]

log = logging.getLogger("perdure.run")

_encode_journal = msgspec.msgpack.Encoder().encode
_KEYED_KINDS = frozenset({"signal", "buffered", "void"})
"""Journal kinds found by slot, not position: when a signal arrives is not replayable."""
_MAX_ERROR_MESSAGE = 8192
"""Error messages are cut here so a RUN_ERROR stays far below the event cap (R19)."""
_NEVER_RESTART = frozenset({"NON_DETERMINISM", "RUN_TIMEOUT", "SERIALIZATION_ERROR"})


class RunMessage:
    """Base of the messages a run actor handles."""

    __slots__ = ()


class CancelMsg(RunMessage):
    """Cancel the run (R15); ``done`` is set once it is terminal."""

    __slots__ = ("cancelled", "done", "reason")

    def __init__(self, reason: str) -> None:
        self.reason = reason
        self.done = trio.Event()
        self.cancelled = False


class SignalMsg(RunMessage):
    """Deliver a resume signal (R12); ``done`` is set once it is stored or refused."""

    __slots__ = ("done", "duplicate", "error", "key", "signal")

    def __init__(self, signal: Signal, key: str) -> None:
        self.signal = signal
        self.key = key
        self.done = trio.Event()
        self.duplicate = False
        self.error: PerdureError | None = None


class RunActor(Actor[RunMessage]):
    """Owns one run: its record, its body task, its journal cursor, its open items."""

    __slots__ = (
        "body_done",
        "body_scope",
        "counted",
        "definition",
        "final_commit",
        "finalized",
        "finish_reason",
        "fresh",
        "futures",
        "has_children",
        "journal",
        "jpos",
        "model",
        "open",
        "pending_ops",
        "preloaded_events",
        "provider",
        "rec",
        "rt",
        "signal_count",
        "signals",
        "start_body",
        "step",
        "tail_entry",
        "usage",
        "wait_counts",
    )

    def __init__(
        self,
        rt: Runtime,
        rec: RunRecord,
        journal: list[JournalEntry],
        *,
        start_body: bool = True,
        fresh: bool = False,
        events: list[bytes] | None = None,
    ) -> None:
        super().__init__(rec.id)
        self.start_body = start_body
        self.fresh = fresh
        self.counted = False
        self.rt = rt
        self.rec = rec
        # None when the target is not registered in this process: such an actor can
        # still be cancelled or answer for its record, but it cannot run the body.
        self.definition = rt.registry.get(rec.target)
        self.journal = [e for e in journal if e.kind not in _KEYED_KINDS]
        self.jpos = 0
        self.signals: dict[str, JournalEntry] = {}
        self.signal_count: dict[str, int] = {}
        for entry in journal:
            if entry.kind in _KEYED_KINDS:
                self.add_signal(entry)
        self.wait_counts: dict[str, int] = {}
        self.futures: dict[str, WaitFuture] = {}
        self.has_children = any(e.kind == "child" for e in self.journal)
        self.tail_entry: JournalEntry | None = journal[-1] if journal else None
        self.open = OpenItems()
        self.body_done = LazyEvent()  # awaited only by a cancel within its grace period
        self.body_scope: trio.CancelScope | None = None
        self.finalized = False
        self.final_commit = LazyEvent()  # awaited only by a second finalize
        self.usage: list[TokenUsage] = []
        self.model: str | None = None
        self.provider: str | None = None
        self.finish_reason: str | None = None
        self.step: StepBuffer | None = None
        self.pending_ops: list[Op] = []
        self.preloaded_events = events

    @property
    def deadline(self) -> float | None:
        """Wall time at which the run times out (its definition's ``timeout``)."""
        timeout = self.definition.timeout if self.definition is not None else None
        if timeout is None or self.rec.started_at is None:
            return None
        return self.rec.started_at + timeout

    # -- persistence --------------------------------------------------------------------------

    def thread_id(self) -> str:
        owner = self.rec.owner
        return owner.id if self.rec.kind == "agent" else self.rec.root_id

    async def persist(
        self,
        new: RunRecord | None = None,
        events: Sequence[Event] = (),
        journal: Sequence[JournalEntry] = (),
        extra_ops: Sequence[Op] = (),
        queued: Callable[[], None] | None = None,
    ) -> None:
        """Stage ``new`` (or the current record) plus events and journal entries, commit.

        Returns once durable; followers are notified after the acknowledgement.
        ``queued`` runs as soon as the batch is in the writer's queue: whatever the
        run commits after that cannot become durable without this batch.
        """
        if self.final_commit.is_set():
            # An abandoned body (past its cancel grace) may still try to act: the run
            # is terminal and its log closed, so nothing more is written (R1, R19).
            raise RunNotActive(f"run {self.rec.id} has ended", run_id=self.rec.id)
        old = self.rec
        base = old if new is None else new
        dbs = self.rt.store.dbs
        run_id = old.id
        ops = list(extra_ops)
        if self.pending_ops:
            ops.extend(self.pending_ops)
            self.pending_ops = []
        event_id = old.last_event_id
        now_ms = int(self.rt.now() * 1000)
        if events:
            stamped: list[Event] = []
            observe = self.open.observe
            for event in events:
                if event.timestamp is None:
                    event = msgspec.structs.replace(event, timestamp=now_ms)
                observe(event)
                stamped.append(event)
            event_id += len(stamped)
            ops.append(event_op(dbs, run_id, event_id, encode_events(stamped)))
        position = base.journal_len
        for entry in journal:
            ops.append(journal_op(dbs, run_id, position, _encode_journal(entry)))
            position += 1
            self.tail_entry = entry
        if new is None:
            # Only events or journal entries: the stored record is left alone (readers
            # derive its counters from the key ranges), which keeps a step's commit small.
            rec = msgspec.structs.replace(base, last_event_id=event_id, journal_len=position)
        else:
            rec = msgspec.structs.replace(
                base, last_event_id=event_id, journal_len=position, updated_at=now_ms / 1000
            )
            ops.extend(record_ops(dbs, old, rec))
        self.rec = rec
        writer = self.rt.writer
        pending = writer.submit(ops)
        if queued is not None:
            queued()
        await writer.wait(pending)
        self.rt.hub.notify(run_id, rec if rec.terminal else None)

    # -- journal cursor (replay) --------------------------------------------------------------

    @property
    def replaying(self) -> bool:
        return self.jpos < len(self.journal)

    def recorded(self, kind: str, name: str) -> JournalEntry | None:
        """The recorded entry at the cursor (advancing it), or None past the journal's end."""
        if self.jpos >= len(self.journal):
            return None
        entry = self.journal[self.jpos]
        if entry.kind != kind or entry.name != name:
            raise NonDeterminismError(
                f"run {self.rec.id}: replay asked for {kind} {name!r} at position {self.jpos}, "
                f"but the journal recorded {entry.kind} {entry.name!r}",
                run_id=self.rec.id,
                position=self.jpos,
                expected={"kind": entry.kind, "name": entry.name},
                got={"kind": kind, "name": name},
            )
        self.jpos += 1
        return entry

    def add_signal(self, entry: JournalEntry) -> None:
        """Index a keyed entry by its slot (``reason:key#n``); ``void`` removes one."""
        if entry.kind == "void":
            self.signals.pop(entry.name, None)
            return
        self.signals[entry.name] = entry
        ns, _, n = entry.name.rpartition("#")
        self.signal_count[ns] = max(self.signal_count.get(ns, 0), int(n))

    def latest_signal(self, ns: str) -> JournalEntry | None:
        count = self.signal_count.get(ns)
        return None if count is None else self.signals.get(f"{ns}#{count}")

    def peek(self) -> JournalEntry | None:
        """The recorded entry at the cursor without consuming it."""
        return self.journal[self.jpos] if self.jpos < len(self.journal) else None

    def record(
        self, entry: JournalEntry, events: Sequence[Event] = (), extra_ops: Sequence[Op] = ()
    ) -> Coroutine[Any, Any, None]:
        """Journal ``entry`` with its events in one commit; the cursor moves past it.

        Returns the commit to await: ``persist`` itself, without a wrapper frame on a
        path every step takes.
        """
        self.journal.append(entry)
        self.jpos = len(self.journal)
        return self.persist(events=events, journal=[entry], extra_ops=extra_ops)

    # -- timers -------------------------------------------------------------------------------

    def arm_timer(self, due: float, name: str) -> Op:
        """Arm a durable wake-up for ``due``; returns the op that stores it.

        The stored timer is removed with the run's next commit after it fired.
        """
        return self.rt.arm_timer(self.rec.id, due, name)

    def deadline_timer(self, started_at: float) -> list[Op]:
        """The stored timer that wakes a passive run when its run timeout passes."""
        timeout = self.definition.timeout if self.definition is not None else None
        return [] if timeout is None else [self.arm_timer(started_at + timeout, "deadline")]

    def timer_key(self, due: float, name: str) -> bytes:
        return timer_key(self.rec.id, due, name)

    async def sleep_until(self, due: float, timer_key: bytes | None = None) -> None:
        """Sleep on the runtime clock; long sleeps passivate the actor (R14)."""
        delay = due - self.rt.now()
        if delay > 0:
            # Only a sleep backed by a stored timer may be passivated: the timer is
            # what wakes the run again.
            if timer_key is not None:
                self.rt.supervisor.mark_idle(self.rec.id)
                if delay >= self.rt.passivate_after:
                    self.rt.supervisor.passivate(self.rec.id)
            try:
                await trio.sleep_until(self.rt.trio_time(due))
            finally:
                self.rt.supervisor.mark_busy(self.rec.id)
        if timer_key is not None:
            self.pending_ops.append((self.rt.store.dbs["timers"], timer_key, None))

    # -- lifecycle ----------------------------------------------------------------------------

    async def on_start(self) -> None:
        if self.rec.last_event_id and not self.fresh:
            self._rebuild_open_items()

    async def run(self) -> None:
        """Run the body (replaying its journal), or only serve messages if told so."""
        if not self.start_body:
            await trio.sleep_forever()  # a cancel or signal stops the actor
        if self.definition is None:
            # Left exactly as stored: a later process that registers the target runs it.
            log.warning(
                "run %s: target %s is not registered here; left as is", self.rec.id, self.rec.target
            )
            self.stop()
            return
        rec = self.rec
        if rec.status == "pending":
            check_transition(rec.id, "pending", "running")
            now = self.rt.now()
            started = msgspec.structs.replace(rec, status="running", started_at=now)
            await self.persist(
                started, [self.run_started_event()], extra_ops=self.deadline_timer(now)
            )
        elif self.open:
            await self._abort_open_attempt()
        await self._body_main()

    async def on_receive(self, message: RunMessage) -> None:
        if isinstance(message, CancelMsg):
            await self._on_cancel(message)
        elif isinstance(message, SignalMsg):
            try:
                message.duplicate = await accept_signal(self, message.signal, message.key)
            except PerdureError as exc:
                message.error = exc
            message.done.set()
            if not self.start_body and not self.finalized:
                self.stop()  # activated only to answer for a terminal run

    def on_stop(self) -> None:
        self.rt.actor_stopped(self)

    def on_failure(self, exc: BaseException) -> None:
        log.error("run actor %s failed", self.actor_id, exc_info=exc)

    def run_started_event(self) -> RunStartedEvent:
        return RunStartedEvent(
            thread_id=self.thread_id(), run_id=self.rec.id, parent_run_id=self.rec.parent_id
        )

    def _rebuild_open_items(self) -> None:
        raws = self.preloaded_events
        self.preloaded_events = None
        if raws is None:
            raws = [raw for _, raw in self.rt.store.events(self.rec.id)]
        for raw in raws:
            self.open.observe(decode_event(raw))

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
        if self.finalized:
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

    async def _run_body_once(self) -> tuple[str, Any, ErrorInfo | None]:
        definition = self.definition
        assert definition is not None
        if self.deadline is not None and self.rt.now() >= self.deadline:
            # Re-activated past its timeout (it was passivated, or the process was down).
            return "failed", None, _timeout_error(definition.timeout)
        ctx = make_context(self)
        try:
            typed = definition.decode_input(self.rec.input)
            if self.rec.kind == "agent":
                typed = msgspec.structs.replace(
                    typed, thread_id=self.thread_id(), run_id=self.rec.id
                )
            with trio.CancelScope() as scope:
                self.body_scope = scope
                if self.rec.cancel is not None:
                    scope.cancel()
                elif self.deadline is not None:
                    scope.deadline = self.rt.trio_time(self.deadline)
                value = await definition.fn(ctx, typed)
                return "completed", to_plain(value, f"result of {self.rec.target}"), None
            if self.rec.cancel is not None:
                return "cancelled", None, None
            return "failed", None, _timeout_error(definition.timeout)
        except SerializationError as exc:
            return "failed", None, ErrorInfo(exc.code, exc.message, exc.detail)
        except PerdureError as exc:
            return "failed", None, ErrorInfo(exc.code, exc.message, _plain_detail(exc.detail))
        except Exception as exc:
            return (
                "failed",
                None,
                ErrorInfo(
                    "UNHANDLED_EXCEPTION",
                    f"{type(exc).__name__}: {exc}",
                    {
                        "type": type(exc).__name__,
                        "traceback": traceback.format_exc(limit=20)[-4000:],
                    },
                ),
            )
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
        now = self.rt.now()
        recent = [t for t in self.rec.restarts if t > now - policy.period]
        if len(recent) >= policy.max_restarts:
            return False
        delay = policy.backoff * 2 ** len(recent)
        ops: list[Op] = []
        rec = msgspec.structs.replace(self.rec, restarts=[*recent, now])
        tail = self.tail_entry
        if tail is not None and tail.kind == "step" and tail.error is not None:
            position = rec.journal_len - 1
            ops.append((self.rt.store.dbs["journal"], keys.journal_key(rec.id, position), None))
            rec = msgspec.structs.replace(rec, journal_len=position)
            if self.journal and self.journal[-1] is tail:
                self.journal.pop()
            self.tail_entry = None
        marker = CustomEvent(
            name="perdure.restart",
            value={"restart": len(recent) + 1, "delay": delay, "error": msgspec.to_builtins(error)},
        )
        await self.persist(rec, [*self.open.closing_cut_step(), marker], extra_ops=ops)
        await trio.sleep(delay)
        self.jpos = 0
        self.wait_counts.clear()
        self.usage.clear()  # the re-run body reports its usage again
        return self.rec.cancel is None

    async def finalize(
        self, status: str, result: Any = None, error: ErrorInfo | None = None
    ) -> None:
        """Write completion, terminal status and terminal event in one batch (R3).

        Exactly once: a second caller (the cancel handler racing the body's own
        end) waits until the first one's commit is durable.
        """
        if self.finalized:
            await self.final_commit.wait()
            return
        self.finalized = True
        if self.has_children:
            # A parent never ends while a child it owns is still running (R15).
            await self.rt.cancel_children(self.rec.id, f"parent run {status}")
        rec = self.rec
        events: list[Event] = []
        if rec.last_event_id == 0 or rec.status == "waiting":
            events.append(self.run_started_event())
        if rec.status == "waiting" and status != "cancelled":
            check_transition(rec.id, "waiting", "running")
            rec = msgspec.structs.replace(rec, status="running")
        check_transition(rec.id, rec.status, status)
        events.extend(self.open.closing_events())
        usage = list(self.usage)
        if status == "completed":
            events.append(
                RunFinishedEvent(
                    thread_id=self.thread_id(), run_id=rec.id, result=result, usage=usage or None
                )
            )
        elif status == "cancelled":
            events.append(
                RunFinishedEvent(
                    thread_id=self.thread_id(),
                    run_id=rec.id,
                    outcome=RunFinishedCancelledOutcome(),
                    usage=usage or None,
                )
            )
        else:
            assert error is not None
            if len(error.message) > _MAX_ERROR_MESSAGE:
                error = ErrorInfo(
                    error.code, error.message[:_MAX_ERROR_MESSAGE] + " [truncated]", error.detail
                )
            events.append(
                RunErrorEvent(message=error.message, code=error.code, usage=usage or None)
            )
        completion = Completion(
            status=status,  # type: ignore[arg-type]  # checked by check_transition above
            result=result,
            error=error,
            usage=usage,
            model=self.model,
            provider=self.provider,
            finish_reason=self.finish_reason,
        )
        done = msgspec.structs.replace(
            rec,
            status=status,
            completion=completion,
            waiting=None,
            finished_at=self.rt.now(),
        )
        await self.persist(done, events)
        self.final_commit.set()
        self.rt.run_finished(self)
        if trio.lowlevel.current_task() is self.main_task:
            # The body's own end: run() is returning, so there is nothing to cancel
            # (and cancelling a scope is far from free on this path).
            self.mailbox.close()
        else:
            self.stop()

    # -- cancellation -------------------------------------------------------------------------

    async def _on_cancel(self, message: CancelMsg) -> None:
        if self.finalized or self.rec.terminal:
            message.done.set()
            return
        await self._finish_cancel(message.reason)
        message.cancelled = True
        message.done.set()

    async def _finish_cancel(self, reason: str) -> None:
        """Persist the request, cancel descendants (deepest first), stop the body (R15, R16).

        The request is durable first, so a body that sees its children end (and
        raises ``ChildCancelled``) still ends ``cancelled``, and a crash mid-cancel
        finishes the cancellation on recovery.
        """
        if self.rec.cancel is None:
            request = CancelRequest(reason=reason, requested_at=self.rt.now())
            await self.persist(msgspec.structs.replace(self.rec, cancel=request))
        await self.rt.cancel_children(self.rec.id, reason)
        scope = self.body_scope
        if scope is None:
            await self.finalize("cancelled")
            return
        scope.cancel()
        with trio.move_on_after(self.rt.cancel_grace):
            await self.body_done.wait()
        if not self.finalized:
            log.warning("run %s: body ignored cancellation past the grace period", self.rec.id)
            await self.finalize("cancelled")


def _timeout_error(timeout: float | None) -> ErrorInfo:
    return ErrorInfo("RUN_TIMEOUT", f"run exceeded its {timeout} s timeout", {"timeout": timeout})


def _plain_detail(detail: dict[str, Any]) -> dict[str, Any]:
    try:
        plain: dict[str, Any] = msgspec.to_builtins(detail)
    except (TypeError, msgspec.EncodeError):
        return {key: repr(value) for key, value in detail.items()}
    return plain
