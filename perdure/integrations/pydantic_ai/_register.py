"""``register_agent``: a pydantic-ai agent as the perdure target ``agent:NAME``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic_ai import Agent
from pydantic_ai.models import Model
from pydantic_ai.settings import ModelSettings
from pydantic_ai.usage import UsageLimits

from perdure import AgentContext, AgentInput, Host, RestartPolicy, RetryPolicy, Runtime

from ._run import run_agent
from ._session import Options

__all__ = ["register_agent"]


def register_agent(
    rt: Runtime | Host,
    name: str,
    agent: Agent[Any, Any],
    *,
    model: Model | str | None = None,
    deps: Callable[[AgentContext, AgentInput], Any] | None = None,
    stream: bool | None = None,
    flush_interval: float = 0.05,
    model_retry: RetryPolicy | None = None,
    model_timeout: float | None = None,
    model_inactivity_timeout: float | None = None,
    tool_retry: RetryPolicy | None = None,
    tool_timeout: float | None = None,
    approvers: list[str] | None = None,
    approval_timeout: float | None = None,
    tool_result_timeout: float | None = None,
    usage_limits: UsageLimits | None = None,
    model_settings: ModelSettings | None = None,
    timeout: float | None = None,
    restart: RestartPolicy | None = None,
) -> None:
    """Register ``agent`` so that ``rt.start("agent:NAME", ...)`` runs it durably.

    ``rt`` is a :class:`~perdure.Runtime` or a :class:`~perdure.Host` (the blocking
    facade for programs that are not trio's: the agent then runs in the host's thread).

    The run's input is AG-UI ``RunAgentInput``-shaped (:class:`~perdure.AgentInput`):
    its ``messages`` are the conversation (the last one is usually the user's new
    message), its ``tools`` the client's frontend tools. The run's result is the
    agent's output as JSON data; its completion carries token usage per provider and
    model, the model, the provider and the finish reason; its log ends with a
    ``MESSAGES_SNAPSHOT`` of the whole conversation for the thread's next run.

    Durability: each model request is a step (``model:<n>``) and each tool call a step
    (``tool:<name>:<id>``); a replay (after a crash, or when a passivated waiting run
    wakes) never calls the model or a tool again for a recorded result. Tools needing
    approval wait for an :class:`~perdure.ApprovalDecision` keyed by tool call id
    (``approved=False`` denies, ``comment`` is the message the model gets,
    ``response={"override_args": {...}}`` changes the arguments; an id the run already
    waited on, which a provider reusing ids across responses produces, is keyed
    ``<id>@<n>``, ``n`` the model request that made the call); external and
    frontend tools wait for a :class:`~perdure.ToolResult`. Both are AG-UI interrupts.

    Parameters:
        model: the model to run with instead of the agent's own.
        deps: ``deps(ctx, inp)`` builds the agent's dependencies for one activation.
            It runs again on every replay: build clients and handles here, keep
            anything that must not repeat inside tools.
        stream: stream model requests into the log (``None``: whenever the model can).
        flush_interval: the longest a streamed delta waits before it is committed for
            followers, and the shortest time between two commits (0: every delta).
        model_retry, model_timeout, model_inactivity_timeout: the model step's retry
            policy, per-attempt timeout and heartbeat timeout (each streamed delta is
            a heartbeat).
        tool_retry, tool_timeout: the same for tool steps.
        approvers: who may decide approvals (a tool's ``ApprovalRequired(metadata=
            {"approvers": [...]})`` overrides it per call).
        approval_timeout, tool_result_timeout: bound the waits; expiry fails the run
            with ``WAIT_EXPIRED``.
        usage_limits, model_settings: passed to ``agent.run``.
        timeout, restart: the run's own timeout and restart policy (``rt.agent``).
    """
    options = Options(
        model=model,
        deps=deps,
        stream=stream,
        flush_interval=flush_interval,
        model_retry=model_retry,
        model_timeout=model_timeout,
        model_inactivity_timeout=model_inactivity_timeout,
        tool_retry=tool_retry,
        tool_timeout=tool_timeout,
        approvers=approvers,
        approval_timeout=approval_timeout,
        tool_result_timeout=tool_result_timeout,
        usage_limits=usage_limits,
        model_settings=model_settings,
    )

    async def body(ctx: AgentContext, inp: AgentInput) -> Any:
        return await run_agent(agent, options, ctx, inp)

    body.__name__ = body.__qualname__ = f"pydantic_ai_{name}"
    rt.agent(name, timeout=timeout, restart=restart)(body)
