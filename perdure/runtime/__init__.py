"""The runtime layer: Runtime facade, run actors, contexts, definitions, run events."""

from perdure.agui import AgentInput

from ._asyncio_host import AsyncioHost
from ._batches import BatchInfo
from ._check import CheckReport, RunCheck
from ._clock import pin_wall_time
from ._context import AgentContext, ChildHandle, RunContext
from ._definitions import Definition, RestartPolicy, validate_identifier
from ._host import Host
from ._lifecycle import STATUSES, TERMINAL, TRANSITIONS, check_transition
from ._logs import LogEntry, LogPage, log_entry
from ._recorded import RecordedJournal, RecordedStep
from ._results import (
    Cancelled,
    Page,
    RunEvent,
    RuntimeStats,
    Snapshot,
    Started,
    TargetInfo,
    check_statuses,
    parse_cursor,
)
from ._retention import Retention
from ._retry import RetryPolicy
from ._runtime import Runtime
from ._schedules import ScheduleInfo
from ._schedules import check_name as check_schedule_name
from ._schedules import info_of as schedule_info
from ._signals import (
    ApprovalDecision,
    ExternalEvent,
    InputResponse,
    Resumed,
    Signal,
    ToolResult,
    signal_from_resume,
)
from ._snapshots import seed_of

__all__ = [
    "STATUSES",
    "TERMINAL",
    "TRANSITIONS",
    "AgentContext",
    "AgentInput",
    "ApprovalDecision",
    "AsyncioHost",
    "BatchInfo",
    "Cancelled",
    "CheckReport",
    "ChildHandle",
    "Definition",
    "ExternalEvent",
    "Host",
    "InputResponse",
    "LogEntry",
    "LogPage",
    "Page",
    "RecordedJournal",
    "RecordedStep",
    "RestartPolicy",
    "Resumed",
    "Retention",
    "RetryPolicy",
    "RunCheck",
    "RunContext",
    "RunEvent",
    "Runtime",
    "RuntimeStats",
    "ScheduleInfo",
    "Signal",
    "Snapshot",
    "Started",
    "TargetInfo",
    "ToolResult",
    "check_schedule_name",
    "check_statuses",
    "check_transition",
    "log_entry",
    "parse_cursor",
    "pin_wall_time",
    "schedule_info",
    "seed_of",
    "signal_from_resume",
    "validate_identifier",
]
