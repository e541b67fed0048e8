"""What a run body sees: :class:`RunContext` and, for agents, :class:`AgentContext`.

Every method that changes the run's log is *journaled*: on replay (after a crash
or a re-activation) it returns without acting again, and the body keeps the
events it logged the first time. Bodies must therefore be deterministic between
journaled calls; anything non-deterministic (I/O, clocks, randomness) belongs in
a step.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import msgspec

from perdure._errors import InvalidInput, PerdureError
from perdure.storage import JournalEntry, Owner, RunRecord, TokenUsage

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

if TYPE_CHECKING:
    from ._run_actor import RunActor

__all__ = ["AgentContext", "RunContext", "make_context"]

_RESERVED = (RunStartedEvent, RunFinishedEvent, RunErrorEvent)


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
        name = type(events[0]).__struct_config__.tag
        assert isinstance(name, str)
        if actor.recorded("emit", name) is not None:
            return
        entry = JournalEntry("emit", name)
        actor.journal_append(entry)
        await actor.persist(events=checked, journal=[entry])

    async def custom(self, name: str, value: Any = None) -> None:
        """Log a ``CUSTOM`` event (progress, data for the UI …)."""
        await self.emit(CustomEvent(name=name, value=value))

    def _check_events(self, events: tuple[Event, ...]) -> list[Event]:
        opened: set[tuple[str, str]] = set()
        closed: set[tuple[str, str]] = set()
        out: list[Event] = []
        is_open = self._actor.open.is_open

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
