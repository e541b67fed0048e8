"""Durable state on LMDB: records, key layout, the group-commit writer.

This layer speaks records and keys, never run behaviour; it imports nothing from
``perdure.runtime`` or ``perdure.actors``.
"""

from ._backup import BackupInfo, backup_store
from ._lock import DirectoryLock, Holder, read_holder
from ._ops import Op, Ops, TimerRef
from ._purge import Plan, Purger, RunHead
from ._records import (
    SCHEMA_VERSION,
    STATUSES,
    TERMINAL,
    BatchRecord,
    CancelRequest,
    Completion,
    Conversation,
    ErrorInfo,
    JournalEntry,
    Kind,
    LogRecord,
    Owner,
    Project,
    RunRecord,
    ScheduleRecord,
    SchemaInfo,
    Status,
    TokenUsage,
    Trigger,
    Wait,
    Waiting,
    owner_key,
)
from ._store import DEFAULT_MAP_SIZE, Durability, RunState, Store
from ._writer import Chain, Writer, WriterStats

__all__ = [
    "DEFAULT_MAP_SIZE",
    "SCHEMA_VERSION",
    "STATUSES",
    "TERMINAL",
    "BackupInfo",
    "BatchRecord",
    "CancelRequest",
    "Chain",
    "Completion",
    "Conversation",
    "DirectoryLock",
    "Durability",
    "ErrorInfo",
    "Holder",
    "JournalEntry",
    "Kind",
    "LogRecord",
    "Op",
    "Ops",
    "Owner",
    "Plan",
    "Project",
    "Purger",
    "RunHead",
    "RunRecord",
    "RunState",
    "ScheduleRecord",
    "SchemaInfo",
    "Status",
    "Store",
    "TimerRef",
    "TokenUsage",
    "Trigger",
    "Wait",
    "Waiting",
    "Writer",
    "WriterStats",
    "backup_store",
    "owner_key",
    "read_holder",
]
