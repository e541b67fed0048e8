"""The runtime layer: Runtime facade, run actors, contexts, definitions, AG-UI events."""

from perdure.agui import AgentInput

from ._asyncio_host import AsyncioHost
from ._context import AgentContext, ChildHandle, RunContext
from ._definitions import Definition, RestartPolicy
from ._host import Host
from ._lifecycle import STATUSES, TERMINAL, TRANSITIONS, check_transition
from ._recorded import RecordedJournal, RecordedStep
from ._results import Cancelled, Page, RunEvent, RuntimeStats, Started, TargetInfo
from ._retry import RetryPolicy
from ._runtime import Runtime
from ._signals import (
    ApprovalDecision,
    ExternalEvent,
    InputResponse,
    Resumed,
    Signal,
    ToolResult,
    signal_from_resume,
)

__all__ = [
    "STATUSES",
    "TERMINAL",
    "TRANSITIONS",
    "AgentContext",
    "AgentInput",
    "ApprovalDecision",
    "AsyncioHost",
    "Cancelled",
    "ChildHandle",
    "Definition",
    "ExternalEvent",
    "Host",
    "InputResponse",
    "Page",
    "RecordedJournal",
    "RecordedStep",
    "RestartPolicy",
    "Resumed",
    "RetryPolicy",
    "RunContext",
    "RunEvent",
    "Runtime",
    "RuntimeStats",
    "Signal",
    "Started",
    "TargetInfo",
    "ToolResult",
    "check_transition",
    "signal_from_resume",
]
