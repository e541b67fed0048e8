"""The runtime layer: Runtime facade, run actors, contexts, definitions, AG-UI events."""

from ._context import AgentContext, RunContext
from ._definitions import Definition, RestartPolicy
from ._lifecycle import STATUSES, TERMINAL, TRANSITIONS, check_transition
from ._retry import RetryPolicy
from ._results import Cancelled, Page, RunEvent, Started
from ._runtime import Runtime

__all__ = [
    "STATUSES",
    "TERMINAL",
    "TRANSITIONS",
    "AgentContext",
    "Cancelled",
    "Definition",
    "Page",
    "RestartPolicy",
    "RetryPolicy",
    "RunContext",
    "RunEvent",
    "Runtime",
    "Started",
    "check_transition",
]
