"""One activation of a durable pydantic-ai run: its options, counters and completion data.

A :class:`Session` is created each time the run body starts (first start, recovery
after a crash, re-activation after passivation) and is shared by the model wrapper
and the capability of that activation. Everything it counts is recomputed on a replay
from recorded results, so it needs no storage of its own: the n-th model request of
a run is always step ``model:n``, and usage is summed again from the recorded
responses.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic_ai.messages import ModelMessage, ModelResponse
from pydantic_ai.models import Model
from pydantic_ai.settings import ModelSettings
from pydantic_ai.usage import UsageLimits

from perdure import AgentContext, AgentInput, RetryPolicy, TokenUsage

from ._codec import bounded_text, wait_key
from ._messages import snapshot_messages

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
    sent: Sequence[dict[str, Any]] = ()
    """The run's input messages (AG-UI wire dicts), as the client sent them."""
    history_length: int = 0
    """How many pydantic-ai messages ``sent`` became (the agent's message history)."""
    requests: int = 0
    run_messages: list[ModelMessage] | None = None
    """pydantic-ai's message list of the run (``RunContext.messages``), once it is known."""
    recovering: bool = False
    """Recovery closed a step this activation runs again (see :meth:`claim_recovery`)."""
    wait_keys: set[tuple[str, str]] = field(default_factory=set)
    """(kind, key) of every wait the run asked for so far (see :meth:`wait_key`)."""
    usage: dict[tuple[str | None, str | None], _Usage] = field(default_factory=dict)
    model_name: str | None = None
    provider: str | None = None
    finish_reason: str | None = None

    def next_request(self) -> tuple[str, str]:
        """Step name and AG-UI message id of the next model request."""
        self.requests += 1
        return f"model:{self.requests}", f"msg_{self.ctx.run_id}_{self.requests}"

    def __post_init__(self) -> None:
        # perdure raises the run's attempt when recovery closes a step a crash cut after
        # it committed part of its events: the first step this activation runs (again)
        # is that one.
        self.recovering = self.ctx.attempt > 1

    def claim_recovery(self) -> bool:
        """Whether the step starting now is the first this activation runs after recovery
        closed a cut step (then it may be that step again). Asked by every step attempt."""
        recovering, self.recovering = self.recovering, False
        return recovering

    def conversation(self) -> list[dict[str, Any]] | None:
        """The conversation so far, named like the run's final ``MESSAGES_SNAPSHOT``.

        ``None`` when pydantic-ai's message list is unknown or does not begin with the
        history the run was given.
        """
        messages = self.run_messages
        if messages is None or len(messages) < self.history_length:
            return None
        return snapshot_messages(self.sent, messages[self.history_length :], self.ctx.run_id)

    def wait_key(self, kind: str, tool_call_id: str) -> str:
        """The key of the run's next ``kind`` wait for a tool call, unique in the run.

        :func:`._codec.wait_key` of the call's id, qualified if the run used it already.

        A provider may reuse tool call ids across responses (``call_0`` in each); waits
        of one key are one wait to perdure (a second identical answer is a duplicate),
        so a key the run already waited on becomes ``<key>@<model request number>``
        (then ``…@<n>.2`` …). Waits are asked in the same order on every replay, so the
        keys are the same too.
        """
        chosen = wait_key(tool_call_id)
        if (kind, chosen) in self.wait_keys:
            qualified = f"{tool_call_id}@{self.requests}"
            chosen, n = wait_key(qualified), 1
            while (kind, chosen) in self.wait_keys:
                n += 1
                chosen = wait_key(f"{qualified}.{n}")
        self.wait_keys.add((kind, chosen))
        return chosen

    def observe(self, response: ModelResponse) -> None:
        """Count a response's usage and remember its model (replayed ones too)."""
        model, provider = _label(response.model_name), _label(response.provider_name)
        self.model_name = model or self.model_name
        self.provider = provider or self.provider
        self.finish_reason = _label(response.finish_reason) or self.finish_reason
        total = self.usage.setdefault((provider, model), _Usage())
        usage = response.usage
        for name, source in _COUNTS:
            setattr(total, name, _count(getattr(total, name) + _count(getattr(usage, source, 0))))

    def report(self) -> None:
        """Hand usage (one entry per provider and model), model and finish reason to the run.

        Everything was made acceptable to perdure on the way in (:meth:`observe`), so
        this cannot fail a run that otherwise worked: it runs in a ``finally``.
        """
        ctx = self.ctx
        entries = list(self.usage.items())
        if len(entries) > _MAX_USAGE_ENTRIES:  # perdure keeps 100 per run: sum the rest
            rest = _Usage()
            for _, total in entries[_MAX_USAGE_ENTRIES - 1 :]:
                for name, _ in _COUNTS:
                    setattr(rest, name, _count(getattr(rest, name) + getattr(total, name)))
            entries = [*entries[: _MAX_USAGE_ENTRIES - 1], ((None, None), rest)]
        for (provider, model), total in entries:
            ctx.report_usage(
                TokenUsage(
                    provider=provider,
                    model=model,
                    input_tokens=total.input_tokens,
                    output_tokens=total.output_tokens,
                    total_tokens=_count(total.input_tokens + total.output_tokens),
                    reasoning_tokens=total.reasoning_tokens or None,
                    cached_input_tokens=total.cache_read_tokens or None,
                    cache_write_input_tokens=total.cache_write_tokens or None,
                )
            )
        if self.model_name is not None:
            ctx.set_model(self.model_name, self.provider)
        if self.finish_reason is not None:
            ctx.set_finish_reason(self.finish_reason)


_MAX_COUNT = 2**53 - 1
"""perdure's bound on a token count (what JSON carries exactly)."""
_MAX_USAGE_ENTRIES = 100
_COUNTS = (
    ("input_tokens", "input_tokens"),
    ("output_tokens", "output_tokens"),
    ("cache_read_tokens", "cache_read_tokens"),
    ("cache_write_tokens", "cache_write_tokens"),
    ("reasoning_tokens", "output_reasoning_tokens"),
)


def _count(value: object) -> int:
    """A token count as perdure takes it: an int from 0 to 2**53-1.

    A model class is free to put anything in its ``RequestUsage`` (``None``, a
    float, a negative or huge number); perdure validates counts strictly, so they
    are made valid here (missing or unusable: 0; out of range: clamped).
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    if isinstance(value, float):
        if not math.isfinite(value):
            return 0
        value = int(value)
    return min(max(value, 0), _MAX_COUNT)


def _label(value: object) -> str | None:
    """A model, provider or finish reason as perdure takes it (1-256 bytes), or None."""
    if not isinstance(value, str):
        return None
    return bounded_text(value, 256) or None
