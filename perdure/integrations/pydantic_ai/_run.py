"""The body of a durable pydantic-ai agent run.

One activation: load the conversation, open an asyncio loop on trio, run the agent
with the durable capability, hand usage and model to the completion, log the final
conversation (``MESSAGES_SNAPSHOT``: the input's messages as sent, then the new ones,
see :mod:`._messages`) and return the agent's output as the run's
result. On a replay the same code runs again; every model request, tool call and
answer comes back from the journal, so pydantic-ai retraces the same path without
calling anything.
"""

from __future__ import annotations

from typing import Any

from pydantic_ai import Agent
from pydantic_ai.agent import AgentRunResult
from pydantic_ai.toolsets import AbstractToolset

from perdure import AgentContext, AgentInput, InvalidInput, PerdureError
from perdure._errors import leaves
from perdure.agui import CustomEvent, MessagesSnapshotEvent, event_to_json

from ._bridge import open_loop, to_trio
from ._capability import DurableCapability
from ._codec import jsonable
from ._messages import SNAPSHOT_BUDGET, frontend_toolset, load_history, snapshot_messages
from ._session import Options, Session

__all__ = ["run_agent"]


async def run_agent(
    agent: Agent[Any, Any], options: Options, ctx: AgentContext, inp: AgentInput
) -> Any:
    """Run ``agent`` durably as the body of the agent run ``ctx``."""
    history = load_history(inp.messages)
    if not history:
        raise InvalidInput("an agent run needs at least one message")
    session = Session(ctx, options, sent=inp.messages, history_length=len(history))
    toolsets: list[AbstractToolset[Any]] = []
    frontend = frontend_toolset(inp.tools)
    if frontend is not None:
        toolsets.append(frontend)
    deps = options.deps(ctx, inp) if options.deps is not None else None
    try:
        async with open_loop():
            result = await to_trio(_run)(
                agent,
                message_history=history,
                model=options.model,
                deps=deps,
                toolsets=toolsets,
                capabilities=[DurableCapability(session)],
                run_id=ctx.run_id,
                conversation_id=inp.thread_id or None,
                usage_limits=options.usage_limits,
                model_settings=options.model_settings,
            )
    except BaseExceptionGroup as group:
        raise _unwrap(group) from None
    finally:
        session.report()
    new = result.new_messages()
    if len(result.all_messages()) == len(history) + len(new):
        wire = snapshot_messages(inp.messages, new, ctx.run_id)
    else:  # not seen: the history was not kept as given; name what the adapter dumps
        wire = snapshot_messages([], result.all_messages(), ctx.run_id)
    await _snapshot(ctx, wire)
    return jsonable(result.output)


async def _run(agent: Agent[Any, Any], **kwargs: Any) -> AgentRunResult[Any]:
    # Runs as an asyncio task. The sequential mode is a context variable: set here,
    # it covers every task pydantic-ai starts for this run and nothing else.
    with agent.parallel_tool_call_execution_mode("sequential"):
        return await agent.run(None, **kwargs)


async def _snapshot(ctx: AgentContext, wire: list[dict[str, Any]]) -> None:
    event = MessagesSnapshotEvent(messages=wire)
    size = len(event_to_json(event))
    if size <= SNAPSHOT_BUDGET:
        await ctx.emit(event)
        return
    # AG-UI has no delta for messages and events are capped: say so instead of failing
    # a run that otherwise completed. The size is the same on a replay (ids and text
    # are), so the replay takes the same branch.
    await ctx.emit(
        CustomEvent(
            name="perdure.messages_snapshot_skipped",
            value={"messages": len(wire), "bytes": size},
        )
    )


def _unwrap(group: BaseExceptionGroup[Any]) -> BaseException:
    """The perdure error inside an exception group pydantic-ai's task groups raised."""
    for exc in leaves(group):
        if isinstance(exc, PerdureError):
            return exc
    return group
