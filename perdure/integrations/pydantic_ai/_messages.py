"""AG-UI conversations as pydantic-ai message history, and back.

A run's :class:`~perdure.AgentInput` carries the conversation as AG-UI wire message
dicts (``{"id", "role", "content", "toolCalls", "toolCallId", ...}``). They become
the agent's ``message_history`` through pydantic-ai's own AG-UI adapter, which keeps
each message's AG-UI id; when the agent is done, the whole history goes back into
the log as one ``MESSAGES_SNAPSHOT`` in the same wire shape, so the next run of the
thread starts from the snapshot plus the user's new message.

The client's frontend tools (``RunAgentInput.tools``) become an external toolset:
the model may call them, and each call is answered by the client through a
``ToolResult`` (an AG-UI ``resume[]`` entry), not run by the agent.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ag_ui.core import Message
from pydantic import TypeAdapter, ValidationError
from pydantic_ai.messages import ModelMessage, ModelResponse
from pydantic_ai.tools import ToolDefinition
from pydantic_ai.toolsets import ExternalToolset
from pydantic_ai.ui.ag_ui import AGUIAdapter

from perdure import InvalidInput

__all__ = ["dump_history", "frontend_toolset", "load_history", "tag_message_id"]

_MESSAGES: TypeAdapter[list[Message]] = TypeAdapter(list[Message])
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
