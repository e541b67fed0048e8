"""perdure: embedded, actor-based durable execution for Python.

Durable agent, workflow and job runs on trio and LMDB: they survive crashes, pause
at waiting checkpoints until a resume signal arrives, cancel as whole trees and keep
an ordered, replayable AG-UI event log.
"""


from perdure._errors import (
    ChildCancelled,
    ChildFailed,
    CorruptStore,
    DirectoryLocked,
    ForeignDirectory,
    IdempotencyConflict,
    InvalidInput,
    InvalidSignal,
    InvalidTransition,
    NonDeterminismError,
    NotWaiting,
    PerdureError,
    PermissionDenied,
    RunNotActive,
    RunNotFound,
    SchemaTooNew,
    SerializationError,
    SignalConflict,
    StepFailed,
    StorageError,
    UnknownTarget,
    WaitExpired,
)
from perdure.runtime import (
    AgentContext,
    Cancelled,
    Page,
    RestartPolicy,
    RetryPolicy,
    RunContext,
    RunEvent,
    Runtime,
    Started,
)
from perdure.runtime._agui import AgentInput
from perdure.runtime._host import Host
from perdure.storage import (
    Completion,
    Conversation,
    ErrorInfo,
    Project,
    RunRecord,
    TokenUsage,
    Trigger,
    Wait,
    Waiting,
)

__version__ = "0.1.0"

__all__ = [
    "AgentContext",
    "AgentInput",
    "Cancelled",
    "ChildCancelled",
    "ChildFailed",
    "Completion",
    "Conversation",
    "CorruptStore",
    "DirectoryLocked",
    "ErrorInfo",
    "ForeignDirectory",
    "Host",
    "IdempotencyConflict",
    "InvalidInput",
    "InvalidSignal",
    "InvalidTransition",
    "NonDeterminismError",
    "NotWaiting",
    "Page",
    "PerdureError",
    "PermissionDenied",
    "Project",
    "RestartPolicy",
    "RetryPolicy",
    "RunContext",
    "RunEvent",
    "RunNotActive",
    "RunNotFound",
    "RunRecord",
    "Runtime",
    "SchemaTooNew",
    "SerializationError",
    "SignalConflict",
    "Started",
    "StepFailed",
    "StorageError",
    "TokenUsage",
    "Trigger",
    "UnknownTarget",
    "Wait",
    "WaitExpired",
    "Waiting",
]
