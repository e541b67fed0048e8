"""pydantic-ai model output as AG-UI events: text, tool calls and reasoning.

One :class:`ResponseEvents` per model request turns what the model produces into
the AG-UI events of the run's log, either live from pydantic-ai's stream events
(``PartStartEvent`` / ``PartDeltaEvent`` / ``PartEndEvent``) or at once from a
finished :class:`~pydantic_ai.messages.ModelResponse`:

===============  =============================================================
response part    AG-UI events
===============  =============================================================
``TextPart``     ``TEXT_MESSAGE_START`` / ``_CONTENT``… / ``_END`` (assistant)
``ToolCallPart`` ``TOOL_CALL_START`` / ``_ARGS``… / ``_END``, parented to the
                 response's message id; the id is the model's tool call id, the
                 one interrupts and ``ToolResult`` signals use
``ThinkingPart`` ``REASONING_START``, ``REASONING_MESSAGE_START`` / ``_CONTENT``…
                 / ``_END``, ``REASONING_END``
other parts      nothing (native tool calls, files: they stay in the messages)
===============  =============================================================

Ids are derived from the run id and the request's number, so they are the same
every time a request is made and never collide between requests. Deltas stream as
they come; when a part ends, whatever its final content adds to what was streamed
is sent too (a model may deliver tool arguments as a dict, which cannot be a
string delta), and a part that never ended is closed by :meth:`finish`.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic_ai.messages import (
    ModelResponse,
    ModelResponsePart,
    PartDeltaEvent,
    PartEndEvent,
    PartStartEvent,
    TextPart,
    TextPartDelta,
    ThinkingPart,
    ThinkingPartDelta,
    ToolCallPart,
    ToolCallPartDelta,
)

from perdure.agui import (
    Event,
    ReasoningEndEvent,
    ReasoningMessageContentEvent,
    ReasoningMessageEndEvent,
    ReasoningMessageStartEvent,
    ReasoningStartEvent,
    TextMessageContentEvent,
    TextMessageEndEvent,
    TextMessageStartEvent,
    ToolCallArgsEvent,
    ToolCallEndEvent,
    ToolCallStartEvent,
)

__all__ = ["ResponseEvents"]


@dataclass
class _Open:
    kind: str  # "text" | "tool" | "reasoning"
    item_id: str
    sent: str = ""  # content or arguments streamed so far


class ResponseEvents:
    """AG-UI events for one model request whose assistant message is ``message_id``."""

    def __init__(self, message_id: str) -> None:
        self.message_id = message_id
        self._open: dict[int, _Open] = {}
        self._texts = 0

    def on_event(self, event: object) -> list[Event]:
        """Events for one pydantic-ai stream event (none for the kinds we do not show)."""
        if isinstance(event, PartStartEvent):
            return self._start(event.index, event.part)
        if isinstance(event, PartDeltaEvent):
            return self._delta(event.index, event.delta)
        if isinstance(event, PartEndEvent):
            return self._end(event.index, event.part)
        return []

    def whole(self, response: ModelResponse) -> list[Event]:
        """Every event of a response that was not streamed."""
        out: list[Event] = []
        for index, part in enumerate(response.parts):
            out += self._start(index, part)
            out += self._end(index, part)
        return out

    def finish(self, response: ModelResponse) -> list[Event]:
        """Close what the stream left open, completing it from the final response."""
        out: list[Event] = []
        for index in sorted(self._open):
            part = response.parts[index] if index < len(response.parts) else None
            out += self._end(index, part)
        return out

    # -- parts ---------------------------------------------------------------------------

    def _start(self, index: int, part: ModelResponsePart) -> list[Event]:
        if isinstance(part, TextPart):
            self._texts += 1
            mid = self.message_id if self._texts == 1 else f"{self.message_id}-{index}"
            self._open[index] = _Open("text", mid)
            return [
                TextMessageStartEvent(message_id=mid, role="assistant"),
                *self._more(index, part.content),
            ]
        if isinstance(part, ToolCallPart):
            self._open[index] = _Open("tool", part.tool_call_id)
            return [
                ToolCallStartEvent(
                    tool_call_id=part.tool_call_id,
                    tool_call_name=part.tool_name,
                    parent_message_id=self.message_id,
                ),
                *self._more(index, _args_text(part) if part.args else ""),
            ]
        if isinstance(part, ThinkingPart):
            rid = f"{self.message_id}-reasoning-{index}"
            self._open[index] = _Open("reasoning", rid)
            return [
                ReasoningStartEvent(message_id=rid),
                ReasoningMessageStartEvent(message_id=rid),
                *self._more(index, part.content),
            ]
        return []

    def _delta(self, index: int, delta: object) -> list[Event]:
        if isinstance(delta, TextPartDelta | ThinkingPartDelta):
            return self._more(index, delta.content_delta or "")
        if isinstance(delta, ToolCallPartDelta) and isinstance(delta.args_delta, str):
            return self._more(index, delta.args_delta)
        return []

    def _end(self, index: int, part: ModelResponsePart | None) -> list[Event]:
        item = self._open.get(index)
        if item is None:
            return []
        out: list[Event] = []
        if part is not None:
            final = _final_text(part)
            if final is not None and final.startswith(item.sent):
                out += self._more(index, final[len(item.sent) :])
        del self._open[index]
        if item.kind == "text":
            out.append(TextMessageEndEvent(message_id=item.item_id))
        elif item.kind == "tool":
            out.append(ToolCallEndEvent(tool_call_id=item.item_id))
        else:
            out += [
                ReasoningMessageEndEvent(message_id=item.item_id),
                ReasoningEndEvent(message_id=item.item_id),
            ]
        return out

    def _more(self, index: int, text: str) -> list[Event]:
        item = self._open.get(index)
        if item is None or not text:
            return []
        item.sent += text
        if item.kind == "text":
            return [TextMessageContentEvent(message_id=item.item_id, delta=text)]
        if item.kind == "tool":
            return [ToolCallArgsEvent(tool_call_id=item.item_id, delta=text)]
        return [ReasoningMessageContentEvent(message_id=item.item_id, delta=text)]


def _args_text(part: ToolCallPart) -> str:
    return part.args if isinstance(part.args, str) else part.args_as_json_str()


def _final_text(part: ModelResponsePart) -> str | None:
    if isinstance(part, TextPart | ThinkingPart):
        return part.content
    if isinstance(part, ToolCallPart):
        return _args_text(part) if part.args else ""
    return None
