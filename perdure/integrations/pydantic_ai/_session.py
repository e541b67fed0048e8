"""One activation of a durable pydantic-ai run: its options, counters and completion data.

A :class:`Session` is created each time the run body starts (first start, recovery
after a crash, re-activation after passivation) and is shared by the model wrapper
and the capability of that activation. Everything it counts is recomputed on a replay
from recorded results, so it needs no storage of its own: the n-th model request of
a run is always step ``model:n``, and usage is summed again from the recorded
responses.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic_ai.messages import ModelResponse
from pydantic_ai.models import Model
from pydantic_ai.settings import ModelSettings
from pydantic_ai.usage import UsageLimits

from perdure import AgentContext, AgentInput, RetryPolicy, TokenUsage

__all__ = ["Options", "Session"]


@dataclass(frozen=True)
class Options:
    """What :func:`~perdure.integrations.pydantic_ai.register_agent` was given."""

    model: Model | str | None = None
    deps: Callable[[AgentContext, AgentInput], Any] | None = None
    stream: bool | None = None
    flush_interval: float = 0.05
    model_retry: RetryPolicy | None = None
    model_timeout: float | None = None
    model_inactivity_timeout: float | None = None
    tool_retry: RetryPolicy | None = None
    tool_timeout: float | None = None
    approvers: list[str] | None = None
    approval_timeout: float | None = None
    tool_result_timeout: float | None = None
    usage_limits: UsageLimits | None = None
    model_settings: ModelSettings | None = None


@dataclass
class _Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0


@dataclass
class Session:
    """Per-activation state of one durable agent run."""

    ctx: AgentContext
    options: Options
    requests: int = 0
    usage: dict[tuple[str | None, str | None], _Usage] = field(default_factory=dict)
    model_name: str | None = None
    provider: str | None = None
    finish_reason: str | None = None

    def next_request(self) -> tuple[str, str]:
        """Step name and AG-UI message id of the next model request."""
        self.requests += 1
        return f"model:{self.requests}", f"msg_{self.ctx.run_id}_{self.requests}"

    def observe(self, response: ModelResponse) -> None:
        """Count a response's usage and remember its model (replayed ones too)."""
        self.model_name = response.model_name or self.model_name
        self.provider = response.provider_name or self.provider
        if response.finish_reason is not None:
            self.finish_reason = response.finish_reason
        total = self.usage.setdefault((response.provider_name, response.model_name), _Usage())
        usage = response.usage
        total.input_tokens += usage.input_tokens
        total.output_tokens += usage.output_tokens
        total.cache_read_tokens += usage.cache_read_tokens
        total.cache_write_tokens += usage.cache_write_tokens
        total.reasoning_tokens += usage.output_reasoning_tokens

    def report(self) -> None:
        """Hand usage (one entry per provider and model), model and finish reason to the run."""
        ctx = self.ctx
        for (provider, model), total in self.usage.items():
            ctx.report_usage(
                TokenUsage(
                    provider=provider,
                    model=model,
                    input_tokens=total.input_tokens,
                    output_tokens=total.output_tokens,
                    total_tokens=total.input_tokens + total.output_tokens,
                    reasoning_tokens=total.reasoning_tokens or None,
                    cached_input_tokens=total.cache_read_tokens or None,
                    cache_write_input_tokens=total.cache_write_tokens or None,
                )
            )
        if self.model_name is not None:
            ctx.set_model(self.model_name, self.provider)
        if self.finish_reason is not None:
            ctx.set_finish_reason(self.finish_reason)
