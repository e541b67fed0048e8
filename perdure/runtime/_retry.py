"""Step retry policy (R8): attempts, backoff shape, jitter and what is retryable."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from perdure._errors import InvalidInput, NonDeterminismError, SerializationError

from ._boundary import seconds

__all__ = ["RetryPolicy"]

_NEVER_RETRY = (NonDeterminismError, SerializationError)


def _retry_everything(exc: BaseException) -> bool:
    return True


@dataclass(frozen=True)
class RetryPolicy:
    """How a failed step attempt is retried.

    The delay before attempt ``n + 1`` is ``initial`` (``fixed``), ``initial * n``
    (``linear``) or ``initial * 2 ** (n - 1)`` (``exponential``), capped at
    ``maximum``, then spread by ``±jitter``. Retries wait on durable timers: the
    due time is journaled, so a crash during the backoff neither forgets the
    attempt count nor restarts the wait. ``retry_if(exc)`` decides whether an
    exception is worth another attempt; serialization and non-determinism errors
    never are.

    The default is one attempt: a step runs again only when a crash cut it short.
    """

    max_attempts: int = 1
    backoff: Literal["fixed", "linear", "exponential"] = "exponential"
    initial: float = 1.0
    maximum: float = 30.0
    jitter: float = 0.1
    retry_if: Callable[[BaseException], bool] = field(default=_retry_everything)

    def __post_init__(self) -> None:
        # InvalidInput, like every other refusal: a policy is user input.
        attempts = self.max_attempts
        if isinstance(attempts, bool) or not isinstance(attempts, int) or not 1 <= attempts < 2**31:
            raise InvalidInput(f"max_attempts must be an integer >= 1 (got {attempts!r})")
        if self.backoff not in ("fixed", "linear", "exponential"):
            raise InvalidInput(f"unknown backoff {self.backoff!r}")
        seconds(self.initial, "RetryPolicy initial")
        seconds(self.maximum, "RetryPolicy maximum")
        jitter = self.jitter
        if isinstance(jitter, bool) or not isinstance(jitter, int | float) or not 0 <= jitter < 1:
            raise InvalidInput(f"jitter must be in [0, 1) (got {jitter!r})")

    def should_retry(self, attempt: int, exc: BaseException) -> bool:
        """Whether to try again after ``attempt`` (1-based) failed with ``exc``."""
        if attempt >= self.max_attempts or isinstance(exc, _NEVER_RETRY):
            return False
        return bool(self.retry_if(exc))

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed attempt ``attempt`` (1-based)."""
        if self.backoff == "fixed":
            base = self.initial
        elif self.backoff == "linear":
            base = self.initial * attempt
        else:
            base = self.initial * 2 ** (attempt - 1)
        base = min(base, self.maximum)
        spread = (rng or random).uniform(-self.jitter, self.jitter)
        return max(0.0, base * (1 + spread))
