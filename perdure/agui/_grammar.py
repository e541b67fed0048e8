"""What a run's log has opened and not yet closed: messages, tool calls, steps.

AG-UI refuses ``RUN_FINISHED`` while any of these is open (R19), and recovery
after a crash must close what the cut attempt left open (R21). The actor feeds
every event it logs through :meth:`OpenItems.observe`, so the set always matches
the stored log.
"""

from __future__ import annotations

from ._events import (
    Event,
    ReasoningEndEvent,
    ReasoningMessageEndEvent,
    ReasoningMessageStartEvent,
    ReasoningStartEvent,
    StepFinishedEvent,
    StepStartedEvent,
    TextMessageEndEvent,
    TextMessageStartEvent,
    ToolCallEndEvent,
    ToolCallStartEvent,
)

__all__ = ["OpenItems"]

# event type -> (item kind, id field, opens?)
_CHANGES: dict[type, tuple[str, str, bool]] = {
    TextMessageStartEvent: ("message", "message_id", True),
    TextMessageEndEvent: ("message", "message_id", False),
    ToolCallStartEvent: ("tool", "tool_call_id", True),
    ToolCallEndEvent: ("tool", "tool_call_id", False),
    StepStartedEvent: ("step", "step_name", True),
    StepFinishedEvent: ("step", "step_name", False),
    ReasoningStartEvent: ("reasoning", "message_id", True),
    ReasoningEndEvent: ("reasoning", "message_id", False),
    ReasoningMessageStartEvent: ("reasoning_message", "message_id", True),
    ReasoningMessageEndEvent: ("reasoning_message", "message_id", False),
}


class OpenItems:
    """Ordered set of open items, keyed ``(kind, id)``, in opening order."""

    __slots__ = ("_open",)

    def __init__(self) -> None:
        self._open: dict[tuple[str, str], None] = {}

    def observe(self, event: Event) -> None:
        change = _CHANGES.get(type(event))
        if change is None:
            return
        kind, field, opens = change
        key = (kind, getattr(event, field))
        if opens:
            self._open[key] = None
        else:
            self._open.pop(key, None)

    def is_open(self, kind: str, item_id: str) -> bool:
        return (kind, item_id) in self._open

    def keys(self) -> frozenset[tuple[str, str]]:
        return frozenset(self._open)

    def copy(self) -> OpenItems:
        other = OpenItems()
        other._open = dict(self._open)
        return other

    def closing_events(self, skip: frozenset[tuple[str, str]] = frozenset()) -> list[Event]:
        """Events that close every open item not in ``skip``, latest opened first."""
        out: list[Event] = []
        for kind, item_id in reversed(list(self._open)):
            if (kind, item_id) in skip:
                continue
            if kind == "message":
                out.append(TextMessageEndEvent(message_id=item_id))
            elif kind == "tool":
                out.append(ToolCallEndEvent(tool_call_id=item_id))
            elif kind == "step":
                out.append(StepFinishedEvent(step_name=item_id))
            elif kind == "reasoning_message":
                out.append(ReasoningMessageEndEvent(message_id=item_id))
            else:
                out.append(ReasoningEndEvent(message_id=item_id))
        return out

    def closing_cut_step(self) -> list[Event]:
        """Close the open step and what was opened after it (an attempt a crash cut).

        Items opened before the step came from journaled emits: the replayed body
        still owns them and goes on writing to them, so they stay open.
        """
        order = list(self._open)
        steps = [i for i, (kind, _) in enumerate(order) if kind == "step"]
        if not steps:
            return []
        keep = frozenset(order[: steps[0]])
        return self.closing_events(skip=keep)

    def __bool__(self) -> bool:
        return bool(self._open)
