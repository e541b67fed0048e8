"""The per-run pydantic-ai capability that routes an agent's I/O through perdure.

It hooks three places of a pydantic-ai run:

``get_wrapper_model``
    wraps the model that serves each request in :class:`._model.DurableModel`, so
    every model request is a step (``model:<n>``).

``wrap_tool_execute``
    runs each tool call (after its arguments were validated) as the step
    ``tool:<name>:<tool call id>``, recording its outcome (:mod:`._codec`) and logging
    its ``TOOL_CALL_RESULT``. A tool whose metadata says
    ``{"perdure": {"child": "agent:NAME"}}`` (or ``task:``/``workflow:``) is not run
    here at all: the call becomes a child run of that target (``ctx.start_child``,
    journaled) and the child's result is the tool's return.

``handle_deferred_tool_calls``
    pydantic-ai's hook for calls it cannot run on its own, resolved *inside* the same
    agent run instead of ending it. Approval-required calls (``requires_approval=True``
    or a tool raising ``ApprovalRequired``) become approval waits keyed by tool call
    id, one after another; ``CallDeferred(kind="question")`` calls become input
    waits; external calls (``ExternalToolset``, the client's AG-UI tools, a tool
    raising ``CallDeferred``) become one tool-result wait for all of them. Each wait is
    an AG-UI interrupt of the run, answered by ``rt.resume`` or an AG-UI ``resume[]``
    entry; the answers go back to pydantic-ai as ``DeferredToolResults``.

Determinism: pydantic-ai's loop is deterministic given the model responses, tool
outcomes and answers, and all of those are journaled. Tool calls run one at a time
(the runner sets pydantic-ai's ``sequential`` mode) because a run's steps are
awaited one after another; that is also what makes their order the same on replay.
Waits open in the order pydantic-ai lists the calls.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic_ai.capabilities import AbstractCapability
from pydantic_ai.capabilities.abstract import WrapToolExecuteHandler
from pydantic_ai.exceptions import ToolFailed
from pydantic_ai.messages import ToolCallPart
from pydantic_ai.models import Model
from pydantic_ai.tools import (
    DeferredToolRequests,
    DeferredToolResults,
    RunContext,
    ToolApproved,
    ToolDefinition,
    ToolDenied,
)

from perdure import ChildFailed, Project
from perdure.agui import ToolCallResultEvent

from ._bridge import to_asyncio, to_trio
from ._codec import jsonable, outcome_of, replay_outcome, tool_result_text
from ._model import DurableModel
from ._session import Session

__all__ = ["DurableCapability", "wait_key"]

_DENIED = "The tool call was denied."
_MAX_STEP_NAME = 200
_MAX_RESULT_CHARS = 30_000
"""Characters of a tool result shown in ``TOOL_CALL_RESULT`` (events are capped at 240 KiB)."""


class DurableCapability(AbstractCapability[Any]):
    """Model requests and tool calls as steps, deferred calls as waits (one per activation)."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def get_wrapper_model(self, model: Model) -> Model | None:
        if isinstance(model, DurableModel):
            return None
        return DurableModel(model, self._session)

    async def wrap_tool_execute(
        self,
        ctx: RunContext[Any],
        *,
        call: ToolCallPart,
        tool_def: ToolDefinition,
        args: dict[str, Any],
        handler: WrapToolExecuteHandler,
    ) -> Any:
        child = _child_target(tool_def)
        if child is not None:
            return await self._child_run(call, args, child)
        session = self._session
        pctx, options = session.ctx, session.options
        name = f"tool:{call.tool_name}:{call.tool_call_id}"[:_MAX_STEP_NAME]

        async def attempt() -> dict[str, Any]:
            outcome = await to_trio(_outcome)(handler, args)
            text = tool_result_text(outcome)
            if text is not None:
                await pctx.emit(_result_event(call.tool_call_id, text))
            return outcome

        recorded = await to_asyncio(pctx.step)(
            name, attempt, retry=options.tool_retry, timeout=options.tool_timeout
        )
        return replay_outcome(recorded)

    async def _child_run(self, call: ToolCallPart, args: dict[str, Any], target: str) -> Any:
        pctx = self._session.ctx
        payload = jsonable(args)
        if target.startswith("agent:"):
            single = payload.get("prompt") if list(payload) == ["prompt"] else None
            content = single if isinstance(single, str) else json.dumps(payload)
            child_input: Any = {
                "messages": [
                    {"id": f"{call.tool_call_id}-prompt", "role": "user", "content": content}
                ],
                "forwardedProps": {
                    "toolCallId": call.tool_call_id,
                    "toolName": call.tool_name,
                    "args": payload,
                },
            }
            owner = None  # the conversation of this run
        else:
            child_input, owner = payload, Project(pctx.root_id)
        handle = await to_asyncio(pctx.start_child)(target, child_input, owner=owner)
        try:
            result = await to_asyncio(handle.result)()
        except ChildFailed as exc:
            await to_asyncio(pctx.emit)(_result_event(call.tool_call_id, exc.message))
            raise ToolFailed(exc.message) from None
        text = result if isinstance(result, str) else json.dumps(result)
        await to_asyncio(pctx.emit)(_result_event(call.tool_call_id, text))
        return result

    async def handle_deferred_tool_calls(
        self, ctx: RunContext[Any], *, requests: DeferredToolRequests
    ) -> DeferredToolResults | None:
        pctx, options = self._session.ctx, self._session.options
        results = DeferredToolResults()
        for call in requests.approvals:
            meta = requests.metadata.get(call.tool_call_id) or {}
            approvers = meta.get("approvers", options.approvers)
            decision = await to_asyncio(pctx.wait_for_approval)(
                wait_key(call.tool_call_id),
                prompt=meta.get("prompt") or f"Run {_describe(call)}?",
                approvers=approvers,
                schema=meta.get("schema"),
                timeout=options.approval_timeout,
            )
            if decision.approver is not None:
                results.answered_by[call.tool_call_id] = decision.approver
            if decision.approved:
                response = decision.response if isinstance(decision.response, dict) else {}
                override = response.get("override_args")
                results.approvals[call.tool_call_id] = ToolApproved(
                    override_args=override if isinstance(override, dict) else None
                )
            else:
                message = decision.comment or _DENIED
                results.approvals[call.tool_call_id] = ToolDenied(message)
                await to_asyncio(pctx.emit)(_result_event(call.tool_call_id, message))
        external: list[ToolCallPart] = []
        for call in requests.calls:
            if requests.kind(call.tool_call_id) != "question":
                external.append(call)
                continue
            meta = requests.metadata.get(call.tool_call_id) or {}
            results.calls[call.tool_call_id] = await to_asyncio(pctx.wait_for_input)(
                wait_key(call.tool_call_id),
                prompt=meta.get("prompt") or _describe(call),
                schema=meta.get("schema"),
                timeout=options.tool_result_timeout,
            )
        if external:
            keys = {wait_key(call.tool_call_id): call.tool_call_id for call in external}
            answers = await to_asyncio(pctx.wait_for_tool_results)(
                list(keys), timeout=options.tool_result_timeout
            )
            results.calls.update({keys[key]: value for key, value in answers.items()})
        return results


async def _outcome(handler: WrapToolExecuteHandler, args: dict[str, Any]) -> dict[str, Any]:
    return await outcome_of(handler(args))


def wait_key(tool_call_id: str) -> str:
    """The wait key (and so the AG-UI interrupt id suffix) of a tool call.

    The tool call id itself whenever perdure accepts it as a key (1-256 characters,
    no ``#``), so the interrupt's ``toolCallId`` is the one the client saw in
    ``TOOL_CALL_START``; a digest of it otherwise.
    """
    if 1 <= len(tool_call_id) <= 256 and "#" not in tool_call_id:
        return tool_call_id
    return "call_" + hashlib.sha256(tool_call_id.encode()).hexdigest()[:32]


def _child_target(tool_def: ToolDefinition) -> str | None:
    config = (tool_def.metadata or {}).get("perdure")
    target = config.get("child") if isinstance(config, dict) else None
    return target if isinstance(target, str) else None


def _describe(call: ToolCallPart) -> str:
    args = call.args_as_json_str()
    return f"{call.tool_name}({args if len(args) <= 500 else args[:500] + '…'})"


def _result_event(tool_call_id: str, text: str) -> ToolCallResultEvent:
    if len(text) > _MAX_RESULT_CHARS:
        # The log keeps a readable excerpt; the model got the whole result (it is journaled).
        text = text[:_MAX_RESULT_CHARS] + " [truncated]"
    return ToolCallResultEvent(
        message_id=f"toolresult_{tool_call_id}",
        tool_call_id=tool_call_id,
        content=text,
        role="tool",
    )
