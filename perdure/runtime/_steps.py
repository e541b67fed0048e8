"""Durable steps (R6, R8, R10): run a function at least once, record its result once.

Journal shapes for a step named ``n`` called from the body's own task:

- ``("retry", n, {attempt, due, error})`` for each failed attempt that will be
  retried: written before the backoff starts, so a crash during the backoff
  resumes the same attempt count and the same due time;
- then exactly one ``("step", n)`` entry holding the msgpack result, or the
  final error.

A step called from another task of the body (steps running concurrently in a
nursery: parallel tool calls, step-graph branches) is a *keyed* action
(:mod:`._journal`): the same shapes as ``kretry`` and ``kstep`` entries named by its
slot ``step:[LANE|]n#k``, found by slot on replay whatever order the steps finished
in. Only such steps pay for the slot; the body's own steps stay positional.

The step's AG-UI events (``STEP_STARTED``, whatever the function emits,
``STEP_FINISHED``) commit in the same transaction as the journal entry, so a
step's events and its result are never seen apart. In the log, concurrent steps are
therefore whole blocks in the order their results were recorded. ``ctx.flush()``
may commit the events of a step of the body's own task early for live streaming;
if a crash then cuts the attempt, recovery closes what it left open (R21). Inside a
concurrent step, and while the run shows an interrupt, ``flush`` does nothing: the
events wait for the step's result, so no two steps' items ever interleave and no
open step meets an interrupt (R19).

Which step a task is in is a :class:`~contextvars.ContextVar` (:data:`current_step`),
so ``ctx.emit``, ``ctx.flush`` and ``ctx.heartbeat`` find their own step even when
several run at once (and from a step's worker thread, which trio runs in a copy of
the task's context).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Coroutine
from contextvars import Context, ContextVar
from typing import TYPE_CHECKING, Any

import msgspec
import trio

from perdure._errors import PerdureError, SerializationError, StepFailed
from perdure.agui import CustomEvent, Event, OpenItems, StepFinishedEvent, StepStartedEvent
from perdure.storage import ErrorInfo, JournalEntry, Op

from ._boundary import FAILURES, MAX_VALUE_BYTES, check_stored, reason, text
from ._logs import Draft, step_log_ops
from ._retry import RetryPolicy

if TYPE_CHECKING:
    from ._run_actor import RunActor

__all__ = [
    "StepBuffer",
    "body_flow",
    "current_lane",
    "current_step",
    "in_body_flow",
    "lane_of",
    "run_step",
    "step_of",
]

_encode = msgspec.msgpack.Encoder().encode
_DEFAULT_POLICY = RetryPolicy()

current_step: ContextVar[StepBuffer | None] = ContextVar("perdure_step", default=None)
"""The step the current task (or the worker thread of its sync step) is running."""

current_lane: ContextVar[tuple[RunActor, str] | None] = ContextVar("perdure_lane", default=None)
"""The lane (``ctx.lane``) journaled actions of the current task are keyed in, and whose.

Both variables name their run: a run's body task may have been started from inside
another run's step or lane (a step that starts a run) and inherits its context."""


body_flow: ContextVar[RunActor | None] = ContextVar("perdure_body_flow", default=None)
_current_task = trio.lowlevel.current_task
"""The run whose sequential flow the current task continues (``ctx.sequential()``).

A bridge to another event loop (trio-asyncio for pydantic-ai) makes each call of the
body from that loop a new trio task. Those calls are one after another, not
concurrent, so they take the body's positional journal, not keyed slots."""


def in_body_flow(actor: RunActor) -> bool:
    """Whether the current task's journaled calls are positional (the body's own)."""
    return _current_task() is actor.main_task or body_flow.get() is actor


def step_of(actor: RunActor, context: Context | None = None) -> StepBuffer | None:
    """The step of ``actor``'s run that the current task (or ``context``) is running."""
    step = current_step.get() if context is None else context.get(current_step)
    return step if step is not None and step.actor is actor else None


def lane_of(actor: RunActor) -> str | None:
    """The lane of ``actor``'s run the current task is in, if any."""
    lane = current_lane.get()
    return lane[1] if lane is not None and lane[0] is actor else None


class _Retry(msgspec.Struct):
    attempt: int
    due: float
    error: ErrorInfo


class StepBuffer:
    """Events of the step attempt in progress, and its inactivity watchdog.

    ``open`` is the run's open-item view including the buffered events, so emits
    inside the step are validated against what the step itself opened. It is built
    on the first emit: most steps emit nothing and should not pay for it.
    """

    __slots__ = (
        "_open",
        "_run_open",
        "actor",
        "before",
        "events",
        "flushed",
        "inactivity",
        "keyed",
        "logs",
        "name",
        "watchdog",
    )

    def __init__(
        self, actor: RunActor, name: str, inactivity: float | None, keyed: bool = False
    ) -> None:
        self.actor = actor
        self.name = name
        self.keyed = keyed
        """A concurrent step: its events commit only with its result."""
        self.flushed = False
        self._run_open = actor.open
        self._open: OpenItems | None = None
        self.before: frozenset[tuple[str, str]] = frozenset()
        self.events: list[Event] = [StepStartedEvent(step_name=name)]
        self.inactivity = inactivity
        self.watchdog: trio.CancelScope | None = None
        self.logs: list[Draft] | None = None
        """``ctx.log`` entries of this attempt, committed with its outcome (``_logs``)."""

    @property
    def open(self) -> OpenItems:
        if self._open is None:
            self._open = self._run_open.copy()
            self.before = self._open.keys()
            for event in self.events:
                self._open.observe(event)
        return self._open

    def heartbeat(self) -> None:
        if self.watchdog is not None and self.inactivity is not None:
            self.watchdog.deadline = trio.current_time() + self.inactivity

    def add(self, events: list[Event]) -> None:
        view = self.open
        for event in events:
            view.observe(event)
        self.events.extend(events)

    def take(self) -> list[Event]:
        """Hand the buffered events over for an early commit (``ctx.flush``)."""
        events, self.events = self.events, []
        self.flushed = True
        return events

    def closing(self) -> list[Event]:
        """Close what this attempt opened and left open, then the step itself."""
        finished = StepFinishedEvent(step_name=self.name)
        if self._open is None:
            return [finished]
        skip = self.before | {("step", self.name)}
        return [*self._open.closing_events(skip), finished]

    def reopen(self, events: list[Event]) -> None:
        """Log ``STEP_STARTED`` again if an interrupt closed this flushed step (R19).

        Entering ``waiting`` closes what the log has open, and another task of the
        body may open a wait while this step runs: its final commit then reopens the
        step, so that its ``STEP_FINISHED`` closes an open step.
        """
        if not self.actor.open.is_open("step", self.name):
            events.insert(0, StepStartedEvent(step_name=self.name))


async def run_step(
    actor: RunActor,
    name: str,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    *,
    retry: RetryPolicy | None,
    timeout: float | None,
    inactivity_timeout: float | None,
    result_type: Any,
    inline: bool | None,
) -> Any:
    # The name ends up in timer keys (retries), which LMDB caps at 511 bytes. Most names
    # are short ASCII literals: checked here without a call.
    if not (name.__class__ is str and name.isascii() and 0 < len(name) <= 200) or "\0" in name:
        text(name, "step name", max_bytes=200)
    current = current_step.get()
    if current is not None and current.actor is actor:
        raise PerdureError(
            f"step {name!r} was called from inside step {current.name!r}: steps do not nest"
        )
    if not in_body_flow(actor):
        return await _run_keyed_step(
            actor, name, fn, args, retry, timeout, inactivity_timeout, result_type, inline
        )
    policy = retry or _DEFAULT_POLICY
    attempt, due = 1, None
    journal = actor.journal
    while (entry := journal.peek()) is not None and entry.kind == "retry" and entry.name == name:
        journal.skip()
        info = msgspec.msgpack.decode(entry.value, type=_Retry)
        attempt, due = info.attempt + 1, info.due
    recorded = journal.take("step", name)
    if recorded is not None:
        return _replayed(recorded, name, result_type)
    if due is not None:
        # The backoff's timer was stored with its retry entry; keys are deterministic.
        await actor.sleep_until(due, actor.timer(due, f"retry:{name}:{attempt - 1}"))
    if inline is None:
        definition = actor.definition
        inline = definition is not None and definition.inline_steps
    # Under virtual time a worker thread would let the clock jump while it runs.
    inline = inline or actor.engine.virtual_time
    while True:
        buffer = StepBuffer(actor, name, inactivity_timeout)
        token = current_step.set(buffer)
        try:
            value = await _attempt(fn, args, timeout, buffer, inline)
            failure: Exception | None = None
        except Exception as exc:
            failure = exc
        finally:
            current_step.reset(token)
        events = [*buffer.events, *buffer.closing()]
        if buffer.flushed:
            buffer.reopen(events)
        if failure is None:
            try:
                encoded, result = _stored_result(value, name, result_type)
            except SerializationError as exc:
                failure = exc
            else:
                logged = step_log_ops(actor, buffer) if buffer.logs else ()
                await actor.record("step", name, encoded, None, events, logged)
                return result
        error = _error_info(failure, name, attempt)
        if policy.should_retry(attempt, failure):
            due = actor.engine.now() + policy.delay(attempt)
            ref, timer = actor.arm_timer(due, f"retry:{name}:{attempt}")
            await actor.record(
                "retry",
                name,
                _encode(_Retry(attempt, due, error)),
                None,
                [*events, _retry_marker(name, attempt, due, error)],
                [timer, *step_log_ops(actor, buffer)],
            )
            await actor.sleep_until(due, ref)
            attempt += 1
            continue
        logged = step_log_ops(actor, buffer) if buffer.logs else ()
        await actor.record("step", name, b"", error, events, logged)
        raise _as_exception(error)


async def _run_keyed_step(
    actor: RunActor,
    name: str,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    retry: RetryPolicy | None,
    timeout: float | None,
    inactivity_timeout: float | None,
    result_type: Any,
    inline: bool | None,
) -> Any:
    """A step called from a task other than the body's own: journaled by slot.

    Two steps of one name in flight at once would make their occurrence numbers (and
    their ``STEP_STARTED`` names) depend on scheduling, so the second is refused.
    """
    lane = lane_of(actor)
    running = actor.running_steps
    if running is None:
        running = actor.running_steps = set()
    if (lane, name) in running:
        raise PerdureError(
            f"step {name!r} is already running in another task of run {actor.rec.id}: "
            "steps that run at the same time need distinct names",
            run_id=actor.rec.id,
            step=name,
        )
    journal = actor.journal
    slot = journal.action("step", lane, name)
    recorded = journal.recorded(slot)
    if recorded is not None:
        return _replayed(recorded, name, result_type)
    policy = retry or _DEFAULT_POLICY
    attempt = 1
    retried = journal.retried(slot)
    running.add((lane, name))
    try:
        if retried is not None:
            info = msgspec.msgpack.decode(retried.value, type=_Retry)
            attempt = info.attempt + 1
            await actor.sleep_until(info.due, actor.timer(info.due, f"retry:{slot}:{info.attempt}"))
        if inline is None:
            definition = actor.definition
            inline = definition is not None and definition.inline_steps
        inline = inline or actor.engine.virtual_time
        while True:
            buffer = StepBuffer(actor, name, inactivity_timeout, keyed=True)
            token = current_step.set(buffer)
            actor.steps_in_flight += 1
            try:
                value = await _attempt(fn, args, timeout, buffer, inline)
                failure: Exception | None = None
            except Exception as exc:
                failure = exc
            finally:
                current_step.reset(token)
                actor.steps_in_flight -= 1
            # A concurrent step never flushes: its events are one block with its result.
            events = [*buffer.events, *buffer.closing()]
            if failure is None:
                try:
                    encoded, result = _stored_result(value, name, result_type)
                except SerializationError as exc:
                    failure = exc
                else:
                    logged = step_log_ops(actor, buffer) if buffer.logs else []
                    await record_action(actor, "kstep", slot, encoded, None, events, logged)
                    return result
            error = _error_info(failure, name, attempt)
            if policy.should_retry(attempt, failure):
                due = actor.engine.now() + policy.delay(attempt)
                ref, timer = actor.arm_timer(due, f"retry:{slot}:{attempt}")
                await record_action(
                    actor,
                    "kretry",
                    slot,
                    _encode(_Retry(attempt, due, error)),
                    None,
                    [*events, _retry_marker(name, attempt, due, error)],
                    [timer, *step_log_ops(actor, buffer)],
                )
                await actor.sleep_until(due, ref)
                attempt += 1
                continue
            logged = step_log_ops(actor, buffer) if buffer.logs else []
            await record_action(actor, "kstep", slot, b"", error, events, logged)
            raise _as_exception(error)
    finally:
        running.discard((lane, name))


def _stored_result(value: Any, name: str, result_type: Any) -> tuple[bytes, Any]:
    """A step's result as stored (R10, R30): its msgpack and the value decoded back."""
    what = f"the result of step {name!r}"
    try:
        encoded = _encode(value)
        result = msgspec.msgpack.decode(encoded, type=result_type)
    except FAILURES as exc:
        raise SerializationError(
            f"step {name!r} returned a value that cannot be stored: {reason(exc)}", step=name
        ) from None
    check_stored(result, what, SerializationError, name)
    if len(encoded) > MAX_VALUE_BYTES:
        raise SerializationError(
            f"{what} is {len(encoded)} bytes encoded; the limit is {MAX_VALUE_BYTES}", step=name
        )
    return encoded, result


def record_action(
    actor: RunActor,
    kind: str,
    slot: str,
    value: bytes = b"",
    error: ErrorInfo | None = None,
    events: list[Event] | tuple[()] = (),
    extra_ops: list[Op] | tuple[()] = (),
) -> Coroutine[Any, Any, None]:
    """Journal a keyed action (``kind`` in ``ACTIONS``) with its events, in one commit."""
    now = actor.engine.now()
    entry = JournalEntry(kind, slot, value, error, now)
    actor.journal.record_action(entry)
    return actor.persist(events=events, journal=(entry,), extra_ops=extra_ops, now=now)


def _retry_marker(name: str, attempt: int, due: float, error: ErrorInfo) -> CustomEvent:
    return CustomEvent(
        name="perdure.step_retry",
        value={"step": name, "attempt": attempt, "due": due, "error": error.message},
    )


async def _attempt(
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    timeout: float | None,
    buffer: StepBuffer,
    inline: bool,
) -> Any:
    # Cancel scopes are the dearest thing on this path: open them only when asked for.
    if buffer.inactivity is None:
        if timeout is None:
            return await _call(fn, args, inline)
        with trio.fail_after(timeout):
            return await _call(fn, args, inline)
    with trio.CancelScope() as watchdog:
        buffer.watchdog = watchdog
        buffer.heartbeat()
        if timeout is None:
            return await _call(fn, args, inline)
        with trio.fail_after(timeout):
            return await _call(fn, args, inline)
    raise StepTimeout(f"no heartbeat for {buffer.inactivity} s")


async def _call(fn: Callable[..., Any], args: tuple[Any, ...], inline: bool) -> Any:
    if _is_async(fn):
        return await fn(*args)
    if inline:
        # On the trio thread: no thread hop, but the function must not block.
        return fn(*args)
    return await trio.to_thread.run_sync(functools.partial(fn, *args), abandon_on_cancel=True)


def _is_async(fn: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - async callables
    )


class StepTimeout(Exception):
    """An attempt went silent past its inactivity timeout."""


def _error_info(exc: BaseException, name: str, attempt: int) -> ErrorInfo:
    if isinstance(exc, trio.TooSlowError):
        cause = "STEP_TIMEOUT"
        message = f"step {name!r} attempt {attempt} timed out"
    elif isinstance(exc, StepTimeout):
        cause = "STEP_INACTIVE"
        message = f"step {name!r} attempt {attempt}: {exc}"
    elif isinstance(exc, PerdureError):
        cause = exc.code
        message = exc.message
    else:
        cause = "STEP_EXCEPTION"
        message = f"{type(exc).__name__}: {exc}"
    return ErrorInfo(
        "SERIALIZATION_ERROR" if isinstance(exc, SerializationError) else "STEP_FAILED",
        message,
        {"step": name, "attempts": attempt, "cause": cause, "type": type(exc).__name__},
    )


def _as_exception(error: ErrorInfo) -> PerdureError:
    if error.code == "SERIALIZATION_ERROR":
        return SerializationError(error.message, **error.detail)
    return StepFailed(error.message, **error.detail)


def _replayed(entry: JournalEntry, name: str, result_type: Any) -> Any:
    if entry.error is not None:
        raise _as_exception(entry.error)
    return msgspec.msgpack.decode(entry.value, type=result_type)
