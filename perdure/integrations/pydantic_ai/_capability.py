"""The per-run pydantic-ai capability that routes an agent's I/O through perdure.

It hooks three places of a pydantic-ai run:

``get_wrapper_model``
    wraps the model that serves each request in :class:`._model.DurableModel`, so
    every model request is a step (``model:<n>``).

``get_wrapper_toolset``
    wraps the run's toolset in :class:`._toolset.DurableToolset`, so every tool call
    is a step (``tool:<name>:<tool call id>``) or, where the tool says so, a child run.

``handle_deferred_tool_calls``
    pydantic-ai's hook for calls it cannot run on its own, resolved *inside* the same
    agent run instead of ending it. Approval-required calls (``requires_approval=True``
    or a tool raising ``ApprovalRequired``) become approval waits keyed by tool call
    id (``<id>@<model request number>`` if the run waited on that id already: a
    provider may reuse ids across responses, see :meth:`._session.Session.wait_key`),
    one after another; ``CallDeferred(kind="question")`` calls become input
    waits (the answer is logged as the call's ``TOOL_CALL_RESULT``); external calls
    (``ExternalToolset``, the client's AG-UI tools, a tool raising ``CallDeferred``)
    become one tool-result wait for all of them. Each wait is
    an AG-UI interrupt of the run, answered by ``rt.resume`` or an AG-UI ``resume[]``
    entry; the answers go back to pydantic-ai as ``DeferredToolResults``. A denied
    call's message (the decision's ``comment``, else a ``"comment"`` string in its
    ``response``, which is where an AG-UI resume entry's ``payload`` puts it) is told
    to the model and logged as the call's ``TOOL_CALL_RESULT`` (perdure logs the
    results of tool waits itself).

Determinism: pydantic-ai's loop is deterministic given the model responses, tool
outcomes and answers, and all of those are journaled. Tool calls run one at a time
(the runner sets pydantic-ai's ``sequential`` mode) because a run's steps are
awaited one after another; that is also what makes their order the same on replay.
Waits open in the order pydantic-ai lists the calls.
"""

from __future__ import annotations

from typing import Any

import pydantic_core
from pydantic_ai.capabilities import AbstractCapability
from pydantic_ai.messages import ToolCallPart
from pydantic_ai.models import Model, ModelRequestContext
from pydantic_ai.tools import (
    DeferredToolRequests,
    DeferredToolResults,
    RunContext,
    ToolApproved,
    ToolDenied,
)
from pydantic_ai.toolsets import AbstractToolset

from ._bridge import body_call
from ._codec import bounded_text, wait_key
from ._model import DurableModel
from ._session import Session
from ._toolset import DurableToolset, result_event

__all__ = ["DurableCapability", "wait_key"]

_DENIED = "The tool call was denied."
_MAX_PROMPT_BYTES = 16 * 1024
"""perdure's bound on a wait's prompt (a longer one is cut, not refused)."""


class DurableCapability(AbstractCapability[Any]):
    """Model requests and tool calls as steps, deferred calls as waits (one per activation)."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def get_wrapper_model(self, model: Model) -> Model | None:
        if isinstance(model, DurableModel):
            return None
        return DurableModel(model, self._session)

    def get_wrapper_toolset(self, toolset: AbstractToolset[Any]) -> AbstractToolset[Any] | None:
        if isinstance(toolset, DurableToolset):
            return None
        return DurableToolset(toolset, self._session)

    async def before_model_request(
        self, ctx: RunContext[Any], request_context: ModelRequestContext
    ) -> ModelRequestContext:
        # The run's message list, for the conversation a retried model attempt logs.
        self._session.run_messages = ctx.messages
        return request_context

    async def handle_deferred_tool_calls(
        self, ctx: RunContext[Any], *, requests: DeferredToolRequests
    ) -> DeferredToolResults | None:
        pctx, options = self._session.ctx, self._session.options
        results = DeferredToolResults()
        for call in requests.approvals:
            meta = requests.metadata.get(call.tool_call_id) or {}
            approvers = meta.get("approvers")
            decision = await body_call(pctx, pctx.wait_for_approval)(
                self._session.wait_key("approval", call.tool_call_id),
                prompt=_prompt(_text(meta.get("prompt")) or f"Run {_describe(call)}?"),
                approvers=approvers if isinstance(approvers, list) else options.approvers,
                schema=_schema(meta.get("schema")),
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
                message = decision.comment or _comment(decision.response) or _DENIED
                results.approvals[call.tool_call_id] = ToolDenied(message)
                await body_call(pctx, pctx.emit)(result_event(call.tool_call_id, message))
        external: list[ToolCallPart] = []
        for call in requests.calls:
            if requests.kind(call.tool_call_id) != "question":
                external.append(call)
                continue
            meta = requests.metadata.get(call.tool_call_id) or {}
            answer = await body_call(pctx, pctx.wait_for_input)(
                self._session.wait_key("input", call.tool_call_id),
                prompt=_prompt(_text(meta.get("prompt")) or _describe(call)),
                schema=_schema(meta.get("schema")),
                timeout=options.tool_result_timeout,
            )
            results.calls[call.tool_call_id] = answer
            # The answer is the call's result: log it like one (perdure logs none for input).
            text = answer if isinstance(answer, str) else pydantic_core.to_json(answer).decode()
            await body_call(pctx, pctx.emit)(result_event(call.tool_call_id, text))
        if external:
            keys = {wait_key(call.tool_call_id): call.tool_call_id for call in external}
            answers = await body_call(pctx, pctx.wait_for_tool_results)(
                list(keys), timeout=options.tool_result_timeout
            )
            results.calls.update({keys[key]: value for key, value in answers.items()})
        return results


def _text(value: object) -> str | None:
    """A deferral's metadata entry, if it is the text perdure expects (else ignored)."""
    return value if isinstance(value, str) else None


def _prompt(text: str) -> str:
    return bounded_text(text, _MAX_PROMPT_BYTES)


def _comment(response: object) -> str | None:
    """A denial's reason sent in its response (an AG-UI resume entry's ``payload``)."""
    comment = response.get("comment") if isinstance(response, dict) else None
    return comment if isinstance(comment, str) and comment else None


def _schema(value: object) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None


def _describe(call: ToolCallPart) -> str:
    args = call.args_as_json_str()
    return f"{call.tool_name}({args if len(args) <= 500 else args[:500] + '…'})"
