"""Durable pydantic-ai agents: a pydantic-ai ``Agent`` as perdure agent runs.

::

    from pydantic_ai import Agent
    from perdure.integrations.pydantic_ai import register_agent

    agent = Agent("openai:gpt-4o", instructions="Be brief.")

    @agent.tool_plain(requires_approval=True)
    def refund(order: str) -> str: ...

    rt = perdure.Runtime("data/")
    register_agent(rt, "support", agent)          # target "agent:support"

Every model request and tool call of a run is a durable step, so a crash or a
passivated wait never repeats a recorded model call or tool call; approvals and
external tools are AG-UI interrupts answered with ``rt.resume``; streamed text,
tool calls and reasoning go into the run's AG-UI log. pydantic-ai runs on asyncio,
perdure on trio: the run body opens a trio-asyncio loop. Install with the
``pydantic-ai`` extra. See docs/pydantic_ai.md.
"""

from ._register import register_agent

__all__ = ["register_agent"]
