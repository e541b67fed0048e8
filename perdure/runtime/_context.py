"""What a run body sees: :class:`RunContext` and, for agents, :class:`AgentContext`.

Every method that changes the run's log is *journaled*: on replay (after a crash
or a re-activation) it returns without acting again, and the body keeps the
events it logged the first time. Bodies must therefore be deterministic between
journaled calls; anything non-deterministic (I/O, clocks, randomness) belongs in
a step.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec
import trio

from perdure._errors import InvalidInput, PerdureError
from perdure.storage import JournalEntry, Owner, RunRecord, TokenUsage, keys

from ._agui import (
    MAX_EVENT_BYTES,
    CustomEvent,
    Event,
    MessagesSnapshotEvent,
    RunErrorEvent,
    RunFinishedEvent,
    RunStartedEvent,
    StateDeltaEvent,
    StateSnapshotEvent,
    TextMessageContentEvent,
    TextMessageEndEvent,
    TextMessageStartEvent,
    ToolCallArgsEvent,
    ToolCallEndEvent,
    ToolCallStartEvent,
    event_to_json,
    split_text_content,
    split_tool_call_args,
)

from ._retry import RetryPolicy
from ._steps import run_step

if TYPE_CHECKING:
    from ._run_actor import RunActor

__all__ = ["AgentContext", "RunContext", "make_context"]

_RESERVED = (RunStartedEvent, RunFinishedEvent, RunErrorEvent)
_encode = msgspec.msgpack.Encoder().encode


class RunContext:
    """The handle a run body uses to act durably. One per activation of a run."""

    def __init__(self, actor: RunActor) -> None:
        self._actor = actor

    # -- identity -----------------------------------------------------------------

    @property
    def run_id(self) -> str:
        return self._actor.rec.id

    @property
    def run(self) -> RunRecord:
        """The run's current (staged) record."""
        return self._actor.rec

    @property
    def kind(self) -> str:
        return self._actor.rec.kind

    @property
    def target(self) -> str:
        return self._actor.rec.target

    @property
    def owner(self) -> Owner:
        return self._actor.rec.owner

    @property
    def parent_id(self) -> str | None:
        return self._actor.rec.parent_id

    @property
    def root_id(self) -> str:
        return self._actor.rec.root_id

    @property
    def attempt(self) -> int:
        """1 on the first attempt; grows when a crash cut an attempt short (R21)."""
        return self._actor.rec.attempt

    @property
    def replaying(self) -> bool:
        """True while the body re-runs actions the journal already recorded."""
        return self._actor.replaying

    def now(self) -> float:
        """The runtime's clock (seconds since the epoch; virtual under a MockClock)."""
        return self._actor.rt.now()

    # -- events ---------------------------------------------------------------------

    async def emit(self, *events: Event) -> None:
        """Append AG-UI events to the run's log, atomically and durably.

        ``RUN_STARTED``/``RUN_FINISHED``/``RUN_ERROR`` belong to the runtime and are
        refused, as are events that would make the log invalid (content for a
        message that is not open, a second start of an open tool call …). Text
        and tool-argument deltas over the 240 KiB event cap are split (R19).
        Journaled: replay does not log them again.
        """
        if not events:
            return
        checked = self._check_events(events)
        actor = self._actor
        if actor.step is not None:
            actor.step.add(checked)
            return
        name = type(events[0]).__struct_config__.tag
        assert isinstance(name, str)
        if actor.recorded("emit", name) is not None:
            return
        await actor.record(JournalEntry("emit", name), checked)

    async def flush(self) -> None:
        """Inside a step: commit the events emitted so far, so followers see them live.

        Without it a step's events commit together with its result. If a crash then
        cuts the attempt, recovery closes what it left open and marks the log
        with a ``perdure.attempt_aborted`` event before the step re-runs (R21).
        """
        actor = self._actor
        if actor.step is not None:
            events = actor.step.take()
            if events:
                await actor.persist(events=events)

    # -- durable steps and timers ------------------------------------------------------

    async def step(
        self,
        name: str,
        fn: Callable[..., Any],
        *args: Any,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        inactivity_timeout: float | None = None,
        result_type: Any = Any,
    ) -> Any:
        """Run ``fn(*args)`` at least once and record its result exactly once (R6).

        ``fn`` may be ``async`` or a plain function (run in a worker thread). Once a
        result is recorded the step never runs again: replay returns the recorded
        value (decoded as msgpack builtins, or as ``result_type``). Asking for a
        different step name at a recorded position raises
        :class:`~perdure.NonDeterminismError` (R7). ``retry`` retries failed
        attempts with backoff on durable timers; ``timeout`` bounds each attempt;
        ``inactivity_timeout`` fails an attempt that has not called
        :meth:`heartbeat` for that long (R8). A step that fails on its last attempt
        raises :class:`~perdure.StepFailed` (also on replay, without running again).
        Steps of one run must be awaited one after another.
        """
        return await run_step(
            self._actor,
            name,
            fn,
            args,
            retry=retry,
            timeout=timeout,
            inactivity_timeout=inactivity_timeout,
            result_type=result_type,
        )

    def heartbeat(self) -> None:
        """Tell the running step it is alive (feeds ``inactivity_timeout``).

        Callable from the step's async code or from its worker thread.
        """
        step = self._actor.step
        if step is None:
            return
        try:
            trio.lowlevel.current_task()
        except RuntimeError:
            trio.from_thread.run_sync(step.heartbeat, trio_token=self._actor.rt.token)
        else:
            step.heartbeat()

    async def sleep(self, seconds: float) -> None:
        """Durable sleep (R9): survives restarts and passivation, fires once."""
        if not isinstance(seconds, int | float) or seconds < 0:
            raise InvalidInput(f"sleep seconds must be a number >= 0 (got {seconds!r})")
        await self._durable_sleep(lambda: self.now() + seconds)

    async def sleep_until(self, when: float) -> None:
        """Durable sleep until ``when`` (seconds since the epoch, the runtime's clock)."""
        if not isinstance(when, int | float):
            raise InvalidInput(f"sleep_until needs a timestamp (got {when!r})")
        await self._durable_sleep(lambda: float(when))

    async def _durable_sleep(self, due_at: Callable[[], float]) -> None:
        actor = self._actor
        if actor.step is not None:
            raise InvalidInput("durable sleeps belong in the body, not inside a step")
        position = actor.jpos
        timer_name = f"sleep:{position}"
        entry = actor.recorded("sleep", "sleep")
        if entry is not None:
            due = msgspec.msgpack.decode(entry.value, type=float)
            if actor.replaying:
                return  # a later journal entry proves this sleep already fired
            key = keys.timer_key(int(due * 1000), actor.rec.id, timer_name)
        else:
            due = due_at()
            op = actor.arm_timer(due, timer_name)
            key = op[1]
            await actor.record(JournalEntry("sleep", "sleep", value=_encode(due)), extra_ops=[op])
        await actor.sleep_until(due, key)

    async def custom(self, name: str, value: Any = None) -> None:
        """Log a ``CUSTOM`` event (progress, data for the UI …)."""
        await self.emit(CustomEvent(name=name, value=value))

    def _check_events(self, events: tuple[Event, ...]) -> list[Event]:
        opened: set[tuple[str, str]] = set()
        closed: set[tuple[str, str]] = set()
        out: list[Event] = []
        actor = self._actor
        is_open = (actor.step.open if actor.step is not None else actor.open).is_open

        def open_now(kind: str, item: str) -> bool:
            return (kind, item) in opened or (is_open(kind, item) and (kind, item) not in closed)

        for event in events:
            if isinstance(event, _RESERVED):
                raise InvalidInput(f"{type(event).__name__} is written by the runtime, not emitted")
            if isinstance(event, TextMessageStartEvent | ToolCallStartEvent):
                kind, item = _item(event)
                if open_now(kind, item):
                    raise InvalidInput(f"{kind} {item!r} is already open")
                opened.add((kind, item))
                closed.discard((kind, item))
            elif isinstance(
                event,
                TextMessageContentEvent | TextMessageEndEvent | ToolCallArgsEvent | ToolCallEndEvent,
            ):
                kind, item = _item(event)
                if not open_now(kind, item):
                    raise InvalidInput(f"{kind} {item!r} is not open")
                if isinstance(event, TextMessageEndEvent | ToolCallEndEvent):
                    opened.discard((kind, item))
                    closed.add((kind, item))
            if isinstance(event, TextMessageContentEvent):
                out.extend(split_text_content(event.message_id, event.delta))
                continue
            if isinstance(event, ToolCallArgsEvent):
                out.extend(split_tool_call_args(event.tool_call_id, event.delta))
                continue
            try:
                size = len(event_to_json(event))
            except (TypeError, msgspec.EncodeError) as exc:
                raise InvalidInput(f"{type(event).__name__} is not serializable: {exc}") from None
            if size > MAX_EVENT_BYTES:
                raise InvalidInput(
                    f"{type(event).__name__} is {size} bytes; events are capped at "
                    f"{MAX_EVENT_BYTES} bytes",
                    size=size,
                )
            out.append(event)
        return out

    # -- completion metadata ------------------------------------------------------------

    def report_usage(self, usage: TokenUsage | None = None, **counts: Any) -> None:
        """Add token usage (one entry per provider/model); it goes on the terminal event."""
        entry = usage if usage is not None else msgspec.convert(counts, TokenUsage)
        self._actor.usage.append(entry)

    def set_model(self, model: str | None, provider: str | None = None) -> None:
        """Record the model (and provider) the run used, for its completion."""
        self._actor.model = model
        if provider is not None:
            self._actor.provider = provider

    def set_finish_reason(self, reason: str) -> None:
        self._actor.finish_reason = reason


class AgentContext(RunContext):
    """:class:`RunContext` plus AG-UI conveniences for agent runs."""

    async def say(self, text: str, *, role: str = "assistant", message_id: str | None = None) -> str:
        """Log one whole text message (start, content, end); returns its message id."""
        mid = message_id or f"msg_{uuid.uuid5(uuid.NAMESPACE_URL, f'{self.run_id}/{self._actor.jpos}').hex}"
        await self.emit(
            TextMessageStartEvent(message_id=mid, role=role),  # type: ignore[arg-type]
            TextMessageContentEvent(message_id=mid, delta=text),
            TextMessageEndEvent(message_id=mid),
        )
        return mid

    async def state_snapshot(self, state: Any) -> None:
        """Replace the shared state (``STATE_SNAPSHOT``)."""
        await self.emit(StateSnapshotEvent(snapshot=state))

    async def state_delta(self, patch: list[dict[str, Any]]) -> None:
        """Apply an RFC 6902 JSON Patch to the shared state (``STATE_DELTA``)."""
        await self.emit(StateDeltaEvent(delta=patch))

    async def messages_snapshot(self, messages: list[dict[str, Any]]) -> None:
        await self.emit(MessagesSnapshotEvent(messages=messages))


def _item(event: Event) -> tuple[str, str]:
    if isinstance(event, TextMessageStartEvent | TextMessageContentEvent | TextMessageEndEvent):
        return "message", event.message_id
    if isinstance(event, ToolCallStartEvent | ToolCallArgsEvent | ToolCallEndEvent):
        return "tool", event.tool_call_id
    raise PerdureError(f"not an item event: {event!r}")


def make_context(actor: RunActor) -> RunContext:
    return AgentContext(actor) if actor.rec.kind == "agent" else RunContext(actor)
