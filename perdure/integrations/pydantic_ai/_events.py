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

Ids are derived from the response's message id (itself derived from the run id and
the request's number), so they are the same every time a request is made and never
collide between requests. :class:`MessageIds` names the assistant messages the way
pydantic-ai's AG-UI adapter will group the parts in the run's final
``MESSAGES_SNAPSHOT`` (text and the tool calls after it form one assistant message; a
text after tool calls, a thinking or a compaction part starts the next), so a client
that folds the events and then applies the snapshot keeps every message where the
events put it (an AG-UI client appends snapshot messages it does not know at the end).

Deltas stream as they come; when a part ends, whatever its final content adds to what
was streamed is sent too (a model may deliver tool arguments as a dict, which cannot
be a string delta), and a part that never ended is closed by :meth:`finish`.
pydantic-ai ends a part when the *next* one starts (``PartEndEvent``), but a provider
may go on streaming into an earlier part: two tool calls whose arguments arrive
interleaved, a text continued after a tool call. Such a late delta reopens the ended
item under the same id (its opening events again: ``TEXT_MESSAGE_START``,
``TOOL_CALL_START`` or ``REASONING_START`` / ``REASONING_MESSAGE_START``), which the
AG-UI verifier accepts and a client folds into the same message or tool call (it
finds them by id); :meth:`finish` closes it, and completes any ended part whose final
content is longer than what was streamed the same way.
Reasoning deltas are cut into pieces under the event cap (perdure splits text and
tool-argument deltas itself, R19; a reasoning event over the cap would be refused).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic_ai.messages import (
    CompactionPart,
    ModelResponse,
    ModelResponsePart,
    NativeToolCallPart,
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

__all__ = ["MessageIds", "ResponseEvents"]

_REASONING_CHUNK = 30_000
"""Characters per ``REASONING_MESSAGE_CONTENT`` (at most 6 bytes each in JSON: under the cap)."""


class MessageIds:
    """AG-UI message ids of one response's parts, grouped like pydantic-ai's AG-UI adapter.

    Feed the parts in order (:meth:`part`); it answers the id each part's events use:
    a text part its text message's id, a tool call its parent message's id, a
    thinking part its reasoning message's id. The assistant messages (``groups``) are
    named ``M`` (the first) and ``M-<index of its first part>``; a text part that
    joins a group with text already (pydantic-ai merges them into one message) is
    streamed as its own message ``M-<index>``, which the snapshot then folds into the
    group's. Reasoning messages are ``M-reasoning-<index>``.
    """

    def __init__(self, message_id: str) -> None:
        self.base = message_id
        self.groups: list[str] = []
        self.reasoning: list[str] = []
        self._group: str | None = None
        self._calls = False  # the open group holds tool calls
        self._named: dict[int, str | None] = {}

    def part(self, index: int, part: ModelResponsePart) -> str | None:
        """The id the events of part ``index`` use (``None`` for parts without events)."""
        if index in self._named:
            return self._named[index]
        name: str | None = None
        if isinstance(part, TextPart):
            if self._group is None or self._calls:
                name = self._open_group(index)
            else:
                name = f"{self.base}-{index}"
        elif isinstance(part, ToolCallPart | NativeToolCallPart):
            name = self._group if self._group is not None else self._open_group(index)
            self._calls = True
        elif isinstance(part, ThinkingPart | CompactionPart):
            self._group = None  # the adapter flushes the open assistant message here
            if isinstance(part, ThinkingPart):
                name = f"{self.base}-reasoning-{index}"
                self.reasoning.append(name)
        self._named[index] = name
        return name

    def _open_group(self, index: int) -> str:
        name = self.base if not self.groups else f"{self.base}-{index}"
        self.groups.append(name)
        self._group, self._calls = name, False
        return name

    @classmethod
    def of(cls, response: ModelResponse, message_id: str) -> MessageIds:
        """The ids of a whole response."""
        ids = cls(message_id)
        for index, part in enumerate(response.parts):
            ids.part(index, part)
        return ids


@dataclass
class _Open:
    kind: str  # "text" | "tool" | "reasoning"
    item_id: str
    opening: list[Event]  # the events that open it (sent again to reopen it)
    chunks: list[str] = field(default_factory=list)
    """Content or arguments streamed so far, a delta each: ``str +=`` on an attribute
    copies the whole text at every delta (quadratic in a long response)."""

    def sent(self) -> str:
        """What was streamed so far, as one string."""
        if len(self.chunks) > 1:
            self.chunks = ["".join(self.chunks)]
        return self.chunks[0] if self.chunks else ""


class ResponseEvents:
    """AG-UI events for one model request whose assistant message is ``message_id``."""

    def __init__(self, message_id: str) -> None:
        self.ids = MessageIds(message_id)
        self._open: dict[int, _Open] = {}
        self._ended: dict[int, _Open] = {}  # closed; a late delta or :meth:`finish` reopens
        self.produced = False
        """Whether :meth:`on_event` returned any event."""

    def on_event(self, event: object) -> list[Event]:
        """Events for one pydantic-ai stream event (none for the kinds we do not show)."""
        out: list[Event] = []
        if isinstance(event, PartStartEvent):
            out = self._start(event.index, event.part)
        elif isinstance(event, PartDeltaEvent):
            out = self._delta(event.index, event.delta)
        elif isinstance(event, PartEndEvent):
            out = self._end(event.index, event.part)
        self.produced = self.produced or bool(out)
        return out

    def whole(self, response: ModelResponse) -> list[Event]:
        """Every event of a response that was not streamed."""
        out: list[Event] = []
        for index, part in enumerate(response.parts):
            out += self._start(index, part)
            out += self._end(index, part)
        return out

    def finish(self, response: ModelResponse) -> list[Event]:
        """Close what the stream left open, completing every part from the final response.

        A part that ended with less than its final content (its last deltas came after
        ``PartEndEvent`` in some other form, or not at all) is reopened for the rest.
        """
        out: list[Event] = []
        for index in sorted({*self._open, *self._ended}):
            part = response.parts[index] if index < len(response.parts) else None
            if index not in self._open:
                item = self._ended[index]
                final = _final_text(part) if part is not None else None
                sent = item.sent()
                if final is None or len(final) <= len(sent) or not final.startswith(sent):
                    continue
                out += self._reopen(index)
            out += self._end(index, part)
        self._ended.clear()
        return out

    # -- parts ---------------------------------------------------------------------------

    def _start(self, index: int, part: ModelResponsePart) -> list[Event]:
        # A part that starts again at the same index replaced the one there: close it.
        closed = self._end(index, None) if index in self._open else []
        self._ended.pop(index, None)
        return closed + self._begin(index, part)

    def _reopen(self, index: int) -> list[Event]:
        """Open an ended item again under its id, so content that came late can follow."""
        item = self._ended.pop(index)
        self._open[index] = item
        return list(item.opening)

    def _begin(self, index: int, part: ModelResponsePart) -> list[Event]:
        name = self.ids.part(index, part)
        if name is None:
            return []
        opening: list[Event]
        if isinstance(part, TextPart):
            opening = [TextMessageStartEvent(message_id=name, role="assistant")]
            item, text = _Open("text", name, opening), part.content
        elif isinstance(part, ToolCallPart):
            start = ToolCallStartEvent(
                tool_call_id=part.tool_call_id,
                tool_call_name=part.tool_name,
                parent_message_id=name,
            )
            item, text = _Open("tool", part.tool_call_id, [start]), _final_text(part) or ""
        elif isinstance(part, ThinkingPart):
            opening = [
                ReasoningStartEvent(message_id=name),
                ReasoningMessageStartEvent(message_id=name),
            ]
            item, text = _Open("reasoning", name, opening), part.content
        else:
            return []
        self._open[index] = item
        return [*item.opening, *self._more(index, text)]

    def _delta(self, index: int, delta: object) -> list[Event]:
        if isinstance(delta, TextPartDelta | ThinkingPartDelta):
            text = delta.content_delta or ""
        elif isinstance(delta, ToolCallPartDelta) and isinstance(delta.args_delta, str):
            text = delta.args_delta
        else:
            return []
        if not text:
            return []
        # A delta for a part pydantic-ai already ended (another part started since).
        reopened = self._reopen(index) if index in self._ended else []
        return reopened + self._more(index, text)

    def _end(self, index: int, part: ModelResponsePart | None) -> list[Event]:
        item = self._open.get(index)
        if item is None:
            return []
        out: list[Event] = []
        if part is not None:
            final = _final_text(part)
            sent = item.sent()
            if final is not None and final.startswith(sent):
                out += self._more(index, final[len(sent) :])
        del self._open[index]
        self._ended[index] = item
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
        item.chunks.append(text)
        if item.kind == "text":
            return [TextMessageContentEvent(message_id=item.item_id, delta=text)]
        if item.kind == "tool":
            return [ToolCallArgsEvent(tool_call_id=item.item_id, delta=text)]
        return [
            ReasoningMessageContentEvent(
                message_id=item.item_id, delta=text[start : start + _REASONING_CHUNK]
            )
            for start in range(0, len(text), _REASONING_CHUNK)
        ]


def _args_text(part: ToolCallPart) -> str:
    return part.args if isinstance(part.args, str) else part.args_as_json_str()


def _final_text(part: ModelResponsePart) -> str | None:
    if isinstance(part, TextPart | ThinkingPart):
        return part.content
    if isinstance(part, ToolCallPart):
        return _args_text(part) if part.args else ""
    return None
