"""What the integration journals, as plain JSON data (never pickle, R10).

A model request's step records the :class:`~pydantic_ai.messages.ModelResponse` in
pydantic-ai's own serialization (``ModelMessagesTypeAdapter``, the format pydantic-ai
documents for storing message history), parsed into plain JSON values: dicts, lists,
strings, numbers. It goes through JSON text rather than ``dump_python(mode="json")``
because only the JSON path round-trips bytes (base64) exactly; a replay decodes the
very response the first attempt received.

A tool call's step records its *outcome*, because pydantic-ai drives its control flow
with exceptions a tool raises and a replay must raise them again:

=====================  ==========================================================
``{"kind": ...}``      what the tool did
=====================  ==========================================================
``return``             returned ``value`` (pydantic-ai's ``ToolReturnContent``:
                       plain data, or files/URLs that stay files on replay)
``tool_return``        returned a :class:`~pydantic_ai.messages.ToolReturn`
``retry``              raised ``ModelRetry(message)``
``failed``             raised ``ToolFailed(message)``
``approval_required``  raised ``ApprovalRequired(metadata)``: ask a human first
``deferred``           raised ``CallDeferred(metadata, kind)``: the result comes
                       from outside
=====================  ==========================================================

Any other exception fails the step (and so the run, unless the step's retry
policy retries it). The first execution returns the *decoded* outcome too, so what
pydantic-ai sees is the same whether a step ran or was replayed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable
from typing import Any

import pydantic_core
from pydantic import TypeAdapter
from pydantic_ai.exceptions import ApprovalRequired, CallDeferred, ModelRetry, ToolFailed
from pydantic_ai.messages import (
    ModelMessagesTypeAdapter,
    ModelResponse,
    ToolReturn,
    ToolReturnContent,
)

__all__ = [
    "bounded_text",
    "dump_response",
    "jsonable",
    "load_response",
    "outcome_of",
    "replay_outcome",
    "tool_result_text",
    "wait_key",
]

_CONTENT: TypeAdapter[Any] = TypeAdapter(ToolReturnContent)
_TOOL_RETURN: TypeAdapter[ToolReturn[Any]] = TypeAdapter(ToolReturn)


def _plain(adapter: TypeAdapter[Any], value: Any) -> Any:
    return pydantic_core.from_json(adapter.dump_json(value))


def dump_response(response: ModelResponse) -> dict[str, Any]:
    """A model response as plain JSON data."""
    data: list[dict[str, Any]] = _plain(ModelMessagesTypeAdapter, [response])
    return data[0]


def load_response(data: dict[str, Any]) -> ModelResponse:
    """The model response :func:`dump_response` stored."""
    (message,) = ModelMessagesTypeAdapter.validate_json(pydantic_core.to_json([data]))
    if not isinstance(message, ModelResponse):
        raise TypeError(f"a recorded model response decoded as {type(message).__name__}")
    return message


def bounded_text(value: str, max_bytes: int) -> str:
    """``value`` as text perdure stores: valid UTF-8 (lone surrogates become ``?``), no NUL,
    at most ``max_bytes`` bytes (cut on a character boundary).

    For strings pydantic-ai or a model hands over that end up where perdure bounds
    them (prompts, model labels, step names): cutting them is better than failing a
    run that otherwise works.
    """
    data = value.replace("\0", "").encode("utf-8", "replace")
    return data[:max_bytes].decode("utf-8", "ignore")


def wait_key(tool_call_id: str) -> str:
    """The wait key (and so the AG-UI interrupt id suffix) of a tool call.

    The tool call id itself whenever perdure accepts it as a key (1-256 bytes of
    UTF-8, no ``#`` or NUL), so the interrupt's ``toolCallId`` is the one the client saw in
    ``TOOL_CALL_START``; a digest of it otherwise.
    """
    if tool_call_id and "#" not in tool_call_id and bounded_text(tool_call_id, 256) == tool_call_id:
        return tool_call_id
    digest = hashlib.sha256(tool_call_id.encode("utf-8", "surrogatepass")).hexdigest()
    return "call_" + digest[:32]


def jsonable(value: Any) -> Any:
    """Any value pydantic can serialize, as plain JSON data (a run's result, tool args)."""
    return pydantic_core.to_jsonable_python(value, bytes_mode="base64")


async def outcome_of(call: Awaitable[Any]) -> dict[str, Any]:
    """Await a tool call and describe what it did (see the module table)."""
    try:
        value = await call
    except ApprovalRequired as exc:
        return {"kind": "approval_required", "metadata": jsonable(exc.metadata)}
    except CallDeferred as exc:
        return {"kind": "deferred", "metadata": jsonable(exc.metadata), "call_kind": exc.kind}
    except ModelRetry as exc:
        return {"kind": "retry", "message": exc.message}
    except ToolFailed as exc:
        return {"kind": "failed", "message": exc.message}
    if isinstance(value, ToolReturn):
        return {"kind": "tool_return", "value": _plain(_TOOL_RETURN, value)}
    return {"kind": "return", "value": _plain(_CONTENT, value)}


def replay_outcome(outcome: dict[str, Any]) -> Any:
    """Return the recorded value, or raise the recorded control-flow exception."""
    kind = outcome.get("kind")
    if kind == "return":
        return _CONTENT.validate_json(pydantic_core.to_json(outcome["value"]))
    if kind == "tool_return":
        return _TOOL_RETURN.validate_json(pydantic_core.to_json(outcome["value"]))
    if kind == "retry":
        raise ModelRetry(outcome["message"])
    if kind == "failed":
        raise ToolFailed(outcome["message"])
    if kind == "approval_required":
        raise ApprovalRequired(metadata=outcome["metadata"])
    if kind == "deferred":
        raise CallDeferred(metadata=outcome["metadata"], kind=outcome["call_kind"])
    raise ValueError(f"unknown recorded tool outcome {kind!r}")


def tool_result_text(outcome: dict[str, Any]) -> str | None:
    """The text of a ``TOOL_CALL_RESULT`` for an outcome, or None if there is no result yet."""
    kind = outcome.get("kind")
    if kind in ("retry", "failed"):
        return str(outcome["message"])
    if kind == "return":
        value = outcome["value"]
    elif kind == "tool_return":
        value = outcome["value"].get("return_value")
    else:
        return None
    return value if isinstance(value, str) else pydantic_core.to_json(value).decode()
