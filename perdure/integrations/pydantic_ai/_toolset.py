"""Tool calls as durable steps, or as child runs.

:class:`DurableToolset` wraps the run's assembled toolset (the capability installs it
with ``get_wrapper_toolset``), so it sees every call pydantic-ai makes to a tool
function, MCP server or other toolset, *inside* pydantic-ai's tool machinery: what a
call raises (``ModelRetry``, ``ToolFailed``, ``ApprovalRequired``, ``CallDeferred``) is
turned into retries, failures and deferrals by pydantic-ai the same way whether the
call ran or was replayed, so retry budgets and deferrals come out the same on a
replay. (Hooks that wrap tool execution from outside, such as ``wrap_tool_execute``,
would see those exceptions already converted, and a replay would count retries
differently.)

Each call is the step ``tool:<name>:<tool call id>``: it runs the tool, records its
outcome (:mod:`._codec`) and logs the ``TOOL_CALL_RESULT``. A recorded call never runs
again.

A tool whose metadata says ``{"perdure": {"child": TARGET}}`` is run as a child run
of ``TARGET`` instead (``ctx.start_child``, journaled, so a replay finds the same
child): for an ``agent:`` target the input is a user message with the call's
arguments (the ``prompt`` argument alone if that is the only one) and the call in
``forwardedProps``; a ``task:`` or ``workflow:`` target gets the arguments as its
input and runs owned by ``Project(<root run id>)``. The child's result is the
tool's return; a failed child is a ``ToolFailed`` the model is told about. The tool's
own function is never called.

Output tools (structured output) are not part of this toolset: pydantic-ai
validates them without running user code, except output *functions*, which run
again on a replay (keep them free of side effects).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from pydantic_ai.exceptions import ToolFailed
from pydantic_ai.tools import RunContext
from pydantic_ai.toolsets import ToolsetTool, WrapperToolset

from perdure import ChildFailed, Project
from perdure.agui import ToolCallResultEvent

from ._bridge import body_call, to_trio
from ._codec import bounded_text, jsonable, outcome_of, replay_outcome, tool_result_text
from ._session import Session

__all__ = ["DurableToolset", "result_event", "step_name"]

_MAX_STEP_NAME = 200
_MAX_RESULT_CHARS = 30_000
"""Characters of a tool result shown in ``TOOL_CALL_RESULT`` (events are capped at 240 KiB)."""


@dataclass
class DurableToolset(WrapperToolset[Any]):
    """The run's toolset, with every tool call a step of the perdure run."""

    session: Session

    async def call_tool(
        self, name: str, tool_args: dict[str, Any], ctx: RunContext[Any], tool: ToolsetTool[Any]
    ) -> Any:
        call_id = ctx.tool_call_id or name
        config = (tool.tool_def.metadata or {}).get("perdure")
        child = config.get("child") if isinstance(config, dict) else None
        if isinstance(child, str):
            return await self._child_run(name, call_id, tool_args, child)
        pctx, options = self.session.ctx, self.session.options
        wrapped = self.wrapped

        async def attempt() -> dict[str, Any]:
            self.session.claim_recovery()  # a tool step, not a model request, was cut
            outcome = await to_trio(_outcome)(wrapped, name, tool_args, ctx, tool)
            text = tool_result_text(outcome)
            if text is not None:
                await pctx.emit(result_event(call_id, text))
            return outcome

        recorded = await body_call(pctx, pctx.step)(
            step_name(name, call_id),
            attempt,
            retry=options.tool_retry,
            timeout=options.tool_timeout,
        )
        return replay_outcome(recorded)

    async def _child_run(self, name: str, call_id: str, args: dict[str, Any], target: str) -> Any:
        pctx = self.session.ctx
        payload = jsonable(args)
        if target.startswith("agent:"):
            single = payload.get("prompt") if list(payload) == ["prompt"] else None
            content = single if isinstance(single, str) else json.dumps(payload)
            child_input: Any = {
                "messages": [{"id": f"{call_id}-prompt", "role": "user", "content": content}],
                "forwardedProps": {"toolCallId": call_id, "toolName": name, "args": payload},
            }
            owner = None  # the conversation of this run
        else:
            child_input, owner = payload, Project(pctx.root_id)
        handle = await body_call(pctx, pctx.start_child)(target, child_input, owner=owner)
        try:
            result = await body_call(pctx, handle.result)()
        except ChildFailed as exc:
            await body_call(pctx, pctx.emit)(result_event(call_id, exc.message))
            raise ToolFailed(exc.message) from None
        text = result if isinstance(result, str) else json.dumps(result)
        await body_call(pctx, pctx.emit)(result_event(call_id, text))
        return result


async def _outcome(
    toolset: Any, name: str, args: dict[str, Any], ctx: RunContext[Any], tool: ToolsetTool[Any]
) -> dict[str, Any]:
    return await outcome_of(toolset.call_tool(name, args, ctx, tool))


def step_name(tool: str, call_id: str) -> str:
    """``tool:<name>:<tool call id>``, cut to 200 characters if that is what perdure takes.

    perdure bounds step names at 200 bytes of UTF-8 without NUL. A name that does not
    fit once cut to 200 characters (non-ASCII, NUL, lone surrogates) becomes the
    tool's name, bounded, and a digest of the whole: still one name per call.
    """
    full = f"tool:{tool}:{call_id}"
    cut = full[:_MAX_STEP_NAME]
    if bounded_text(cut, _MAX_STEP_NAME) == cut:
        return cut
    digest = hashlib.sha256(full.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return f"tool:{bounded_text(tool, 120)}:{digest}"


def result_event(tool_call_id: str, text: str) -> ToolCallResultEvent:
    """The ``TOOL_CALL_RESULT`` of a call, its text cut to a readable excerpt if huge."""
    if len(text) > _MAX_RESULT_CHARS:
        # The log keeps an excerpt; the model got the whole result (it is journaled).
        text = text[:_MAX_RESULT_CHARS] + " [truncated]"
    # Lone surrogates (a str decoded with surrogateescape...) cannot go into JSON.
    text = text.encode("utf-8", "replace").decode("utf-8")
    return ToolCallResultEvent(
        message_id=f"toolresult_{tool_call_id}",
        tool_call_id=tool_call_id,
        content=text,
        role="tool",
    )
