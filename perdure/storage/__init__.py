"""Durable state on LMDB: records, key layout, the group-commit writer.

This layer speaks records and keys, never run behaviour; it imports nothing from
``perdure.runtime`` or ``perdure.actors``.
"""

from . import _keys as keys
from ._indexes import event_op, journal_op, record_ops
from ._lock import DirectoryLock, Holder, read_holder
from ._records import (
    SCHEMA_VERSION,
    STATUSES,
    CancelRequest,
    Completion,
    Conversation,
    ErrorInfo,
    JournalEntry,
    Kind,
    Owner,
    Project,
    RunRecord,
    SchemaInfo,
    Status,
    TokenUsage,
    Trigger,
    Wait,
    Waiting,
    owner_key,
)
from ._store import DEFAULT_MAP_SIZE, Durability, RunState, Store
from ._writer import Op, Writer, WriterStats

__all__ = [
    "DEFAULT_MAP_SIZE",
    "SCHEMA_VERSION",
    "STATUSES",
    "CancelRequest",
    "Completion",
    "Conversation",
    "DirectoryLock",
    "Durability",
    "ErrorInfo",
    "Holder",
    "JournalEntry",
    "Kind",
    "Op",
    "Owner",
    "Project",
    "RunRecord",
    "RunState",
    "SchemaInfo",
    "Status",
    "Store",
    "TokenUsage",
    "Trigger",
    "Wait",
    "Waiting",
    "Writer",
    "WriterStats",
    "event_op",
    "journal_op",
    "keys",
    "owner_key",
    "read_holder",
    "record_ops",
]
