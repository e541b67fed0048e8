"""Durable steps (R6, R8, R10): run a function at least once, record its result once.

Journal shapes for a step named ``n``:

- ``("retry", n, {attempt, due, error})`` for each failed attempt that will be
  retried: written before the backoff starts, so a crash during the backoff
  resumes the same attempt count and the same due time;
- then exactly one ``("step", n)`` entry holding the msgpack result, or the
  final error.

The step's AG-UI events (``STEP_STARTED``, whatever the function emits,
``STEP_FINISHED``) commit in the same transaction as the journal entry, so a
step's events and its result are never seen apart. ``ctx.flush()`` may commit
events early for live streaming; if a crash then cuts the attempt, recovery
closes what it left open (R21).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec
import trio

from perdure._errors import PerdureError, SerializationError, StepFailed
from perdure.agui import CustomEvent, Event, OpenItems, StepFinishedEvent, StepStartedEvent
from perdure.storage import ErrorInfo, JournalEntry

from ._boundary import MAX_VALUE_BYTES, check_stored, text
from ._logs import Draft, step_log_ops
from ._retry import RetryPolicy

if TYPE_CHECKING:
    from ._run_actor import RunActor

__all__ = ["StepBuffer", "run_step"]

_encode = msgspec.msgpack.Encoder().encode
_DEFAULT_POLICY = RetryPolicy()


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
        "before",
        "events",
        "inactivity",
        "logs",
        "name",
        "task",
        "watchdog",
    )

    def __init__(self, name: str, inactivity: float | None, run_open: OpenItems) -> None:
        self.name = name
        self.task = trio.lowlevel.current_task()
        self._run_open = run_open
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
        return events

    def closing(self) -> list[Event]:
        """Close what this attempt opened and left open, then the step itself."""
        finished = StepFinishedEvent(step_name=self.name)
        if self._open is None:
            return [finished]
        skip = self.before | {("step", self.name)}
        return [*self._open.closing_events(skip), finished]


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
    if actor.step is not None:
        current = actor.step
        if current.task is trio.lowlevel.current_task():
            raise PerdureError(
                f"step {name!r} was called from inside step {current.name!r}: steps do not nest"
            )
        raise PerdureError(
            f"step {name!r} was called while step {current.name!r} of the same run is still "
            "running (from another task): the steps of one run must be awaited one after "
            "another"
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
        buffer = StepBuffer(name, inactivity_timeout, actor.open)
        actor.step = buffer
        try:
            value = await _attempt(fn, args, timeout, buffer, inline)
            failure: Exception | None = None
        except Exception as exc:
            failure = exc
        finally:
            actor.step = None
        closing = buffer.closing()
        if failure is None:
            try:
                encoded = _encode(value)
                result = msgspec.msgpack.decode(encoded, type=result_type)
                check_stored(result, f"the result of step {name!r}")
                if len(encoded) > MAX_VALUE_BYTES:
                    raise SerializationError(
                        f"the result of step {name!r} is {len(encoded)} bytes encoded; "
                        f"the limit is {MAX_VALUE_BYTES}"
                    )
            except (
                TypeError,
                ValueError,
                OverflowError,
                RecursionError,
                UnicodeError,
                msgspec.EncodeError,
                msgspec.DecodeError,
                SerializationError,
            ) as exc:
                failure = SerializationError(
                    f"step {name!r} returned a value that cannot be stored: {exc}", step=name
                )
            else:
                logged = step_log_ops(actor, buffer) if buffer.logs else ()
                await actor.record("step", name, encoded, None, [*buffer.events, *closing], logged)
                return result
        error = _error_info(failure, name, attempt)
        if policy.should_retry(attempt, failure):
            due = actor.engine.now() + policy.delay(attempt)
            marker = CustomEvent(
                name="perdure.step_retry",
                value={"step": name, "attempt": attempt, "due": due, "error": error.message},
            )
            ref, timer = actor.arm_timer(due, f"retry:{name}:{attempt}")
            await actor.record(
                "retry",
                name,
                _encode(_Retry(attempt, due, error)),
                None,
                [*buffer.events, *closing, marker],
                [timer, *step_log_ops(actor, buffer)],
            )
            await actor.sleep_until(due, ref)
            attempt += 1
            continue
        logged = step_log_ops(actor, buffer) if buffer.logs else ()
        await actor.record("step", name, b"", error, [*buffer.events, *closing], logged)
        raise _as_exception(error)


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
