"""AG-UI conversations as pydantic-ai message history, and back.

A run's :class:`~perdure.AgentInput` carries the conversation as AG-UI wire message
dicts (``{"id", "role", "content", "toolCalls", "toolCallId", ...}``). They become
the agent's ``message_history`` through pydantic-ai's own AG-UI adapter. When the
agent is done, the whole conversation goes back into the log as one
``MESSAGES_SNAPSHOT`` in the same wire shape (:func:`snapshot_messages`), so the next
run of the thread starts from the snapshot plus the user's new message.

The snapshot must name every message the way the run's events named it: an AG-UI
client (``@ag-ui/client``, and perdure's own fold) applies a snapshot by keeping the
messages it knows *where they are*, by id, and appending the ones it does not know
at the end. A tool result named differently in the snapshot than in its
``TOOL_CALL_RESULT`` would move behind the answer that follows it, and the client
would send the conversation back in the wrong order on the next turn. So the
messages the run was given stay exactly as sent, and the new ones are named by rule
(pydantic-ai's adapter gives them fresh random ids):

- an assistant message: the id its ``TEXT_MESSAGE_START`` / tool calls'
  ``parentMessageId`` used (:class:`._events.MessageIds`), a reasoning message the id
  of its ``REASONING_MESSAGE_START``;
- a tool result: ``toolresult_<tool call id>``, the ``messageId`` of its
  ``TOOL_CALL_RESULT`` (perdure's own for external tools uses the same);
- anything else (a retry prompt sent as a user message...): ``<run id>-message-<n>``,
  ``n`` its position in the snapshot.

An id already taken earlier in the snapshot gets ``-<n>`` appended, and a tool result
is placed the way the client placed it (:func:`_place`).

The client's frontend tools (``RunAgentInput.tools``) become an external toolset:
the model may call them, and each call is answered by the client through a
``ToolResult`` (an AG-UI ``resume[]`` entry), not run by the agent.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ag_ui.core import Message
from pydantic import TypeAdapter, ValidationError
from pydantic_ai.messages import ModelMessage, ModelRequest, ModelResponse
from pydantic_ai.tools import ToolDefinition
from pydantic_ai.toolsets import ExternalToolset
from pydantic_ai.ui.ag_ui import AGUIAdapter

from perdure import InvalidInput
from perdure.agui import MAX_EVENT_BYTES

from ._events import MessageIds

__all__ = [
    "SNAPSHOT_BUDGET",
    "dump_history",
    "frontend_toolset",
    "load_history",
    "snapshot_messages",
    "tag_message_id",
    "ui_message_id",
]

_MESSAGES: TypeAdapter[list[Message]] = TypeAdapter(list[Message])
SNAPSHOT_BUDGET = MAX_EVENT_BYTES - 1024
"""The largest ``MESSAGES_SNAPSHOT`` logged (JSON bytes), under the event cap."""
_UI_ID = "__pydantic_ai__"
"""pydantic-ai's reserved metadata namespace; ``ui_message_id`` in it is the AG-UI id
its adapter gives the message it dumps (documented in ``AGUIAdapter.dump_messages``)."""


def load_history(messages: Sequence[dict[str, Any]]) -> list[ModelMessage]:
    """AG-UI wire messages as pydantic-ai message history."""
    if not messages:
        return []
    try:
        parsed = _MESSAGES.validate_python(list(messages))
    except ValidationError as exc:
        raise InvalidInput(f"messages are not AG-UI messages: {exc}") from None
    return AGUIAdapter.load_messages(parsed)


def dump_history(messages: Sequence[ModelMessage]) -> list[dict[str, Any]]:
    """pydantic-ai message history as AG-UI wire messages (``MESSAGES_SNAPSHOT``)."""
    return [
        message.model_dump(mode="json", by_alias=True, exclude_none=True)
        for message in AGUIAdapter.dump_messages(messages)
    ]


def snapshot_messages(
    sent: Sequence[dict[str, Any]], new: Sequence[ModelMessage], run_id: str
) -> list[dict[str, Any]]:
    """The conversation after a run: ``sent`` as it was sent, then ``new``, named by rule.

    ``sent`` are the run's input messages (AG-UI wire dicts), ``new`` the messages
    the agent added (pydantic-ai's ``new_messages()``). See the module docstring.
    """
    out = [dict(message) for message in sent]
    taken = {message.get("id") for message in out}
    for message in new:
        for wire, wanted in _named(message, run_id, len(out)):
            name = wanted if wanted not in taken else f"{wanted}-{len(out)}"
            wire["id"] = name
            taken.add(name)
            _place(out, wire)
    return out


def _place(out: list[dict[str, Any]], wire: dict[str, Any]) -> None:
    """Append ``wire``; a tool result goes right after its call's message (and its results).

    That is where a client folding the events put it when its ``TOOL_CALL_RESULT``
    came. pydantic-ai lists a response's results after *all* of its assistant
    messages, which differs when a response has text after a tool call (two
    assistant messages): the results of the first then follow it, as chat APIs
    expect them to.
    """
    call = wire.get("toolCallId")
    if wire.get("role") == "tool" and isinstance(call, str):
        for index, message in enumerate(out):
            calls = message.get("toolCalls") if message.get("role") == "assistant" else None
            if isinstance(calls, list) and any(
                isinstance(c, dict) and c.get("id") == call for c in calls
            ):
                after = index + 1
                while after < len(out) and out[after].get("role") == "tool":
                    after += 1
                out.insert(after, wire)
                return
    out.append(wire)


def _named(message: ModelMessage, run_id: str, position: int) -> list[tuple[dict[str, Any], str]]:
    """The AG-UI messages of one pydantic-ai message, each with the id it should have."""
    dumped = dump_history([message])
    names: list[str | None] = [None] * len(dumped)
    base = ui_message_id(message) if isinstance(message, ModelResponse) else None
    if isinstance(message, ModelResponse) and base is not None:
        ids = MessageIds.of(message, base)
        for role, wanted in (("assistant", ids.groups), ("reasoning", ids.reasoning)):
            slots = [i for i, wire in enumerate(dumped) if wire.get("role") == role]
            if len(slots) == len(wanted):
                for i, wanted_id in zip(slots, wanted, strict=True):
                    names[i] = wanted_id
    elif isinstance(message, ModelRequest) and dumped:
        # The adapter restores the id of the last AG-UI message a request was loaded from.
        restored = ui_message_id(message)
        if restored is not None:
            names[-1] = restored
    out = []
    for i, (wire, name) in enumerate(zip(dumped, names, strict=True)):
        call = wire.get("toolCallId")
        if name is not None:
            out.append((wire, name))
        elif wire.get("role") == "tool" and isinstance(call, str):
            out.append((wire, f"toolresult_{call}"))
        else:
            out.append((wire, f"{run_id}-message-{position + i}"))
    return out


def ui_message_id(message: ModelMessage) -> str | None:
    """The AG-UI id pydantic-ai's adapter keeps for a message (see :func:`tag_message_id`)."""
    reserved = (message.metadata or {}).get(_UI_ID)
    name = reserved.get("ui_message_id") if isinstance(reserved, dict) else None
    return name if isinstance(name, str) else None


def tag_message_id(response: ModelResponse, message_id: str) -> None:
    """Give a response the AG-UI message id its streamed events used.

    The snapshot then names the assistant message the way ``TEXT_MESSAGE_START``
    did, so a client that folds the events and one that reads the snapshot agree.
    """
    metadata = dict(response.metadata or {})
    metadata[_UI_ID] = {**metadata.get(_UI_ID, {}), "ui_message_id": message_id}
    response.metadata = metadata


def frontend_toolset(tools: Sequence[dict[str, Any]]) -> ExternalToolset[Any] | None:
    """The client's AG-UI tools as tools the agent may call but the client runs."""
    if not tools:
        return None
    defs = []
    for tool in tools:
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
            raise InvalidInput(f"an AG-UI tool needs a name (got {tool!r})")
        defs.append(
            ToolDefinition(
                name=tool["name"],
                description=tool.get("description"),
                parameters_json_schema=tool.get("parameters") or {"type": "object"},
            )
        )
    return ExternalToolset(defs, id="agui_frontend_tools")
