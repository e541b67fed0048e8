"""The msgspec records perdure stores.

Records are plain data (msgspec Structs encoded as msgpack): decoding one can never
run code, unlike pickle. New fields are always added with defaults so that a store
written by an older version decodes unchanged; removing or retyping a field needs a
schema version bump (see ``SCHEMA_VERSION``).
"""

from __future__ import annotations

from typing import Any, Literal, get_args

import msgspec

from perdure.agui import TokenUsage

__all__ = [
    "SCHEMA_VERSION",
    "STATUSES",
    "TERMINAL",
    "UPGRADABLE_FROM",
    "BatchRecord",
    "CancelRequest",
    "Completion",
    "Conversation",
    "Ending",
    "ErrorInfo",
    "JournalEntry",
    "Kind",
    "LogRecord",
    "Owner",
    "Project",
    "RunRecord",
    "ScheduleRecord",
    "SchemaInfo",
    "Status",
    "TokenUsage",
    "Trigger",
    "Wait",
    "Waiting",
    "owner_key",
]

SCHEMA_VERSION = 3
"""Version of the key layout and record shapes; a newer one on disk is refused."""
UPGRADABLE_FROM = 2
"""The oldest schema an open for writing upgrades in place (3 only added databases)."""

Status = Literal["pending", "running", "waiting", "completed", "failed", "cancelled"]
STATUSES: tuple[Status, ...] = get_args(Status)
"""Every run status, in lifecycle order."""
TERMINAL: frozenset[str] = frozenset({"completed", "failed", "cancelled"})
"""The statuses a run never leaves (R1): the one definition of "terminal"."""
Kind = Literal["agent", "workflow", "job"]


class Conversation(msgspec.Struct, gc=False, frozen=True, tag="conversation"):
    """Owner of agent runs: a conversation (AG-UI thread)."""

    id: str


class Project(msgspec.Struct, gc=False, frozen=True, tag="project"):
    """Owner of workflow and job runs."""

    id: str


Owner = Conversation | Project


def owner_key(owner: Owner) -> str:
    """The owner as one string, used in index keys and idempotency scopes."""
    return ("c:" if isinstance(owner, Conversation) else "p:") + owner.id


class ErrorInfo(msgspec.Struct, gc=False, omit_defaults=True):
    """Why a run failed: a stable ``code``, a ``message`` and structured ``detail``."""

    code: str
    message: str
    detail: dict[str, Any] = msgspec.field(default_factory=dict)


class Completion(msgspec.Struct, gc=False, omit_defaults=True):
    """A terminal run's outcome, written once with the terminal status (R3)."""

    status: Status
    result: Any = None
    error: ErrorInfo | None = None
    usage: list[TokenUsage] = msgspec.field(default_factory=list)
    model: str | None = None
    provider: str | None = None
    finish_reason: str | None = None


class Wait(msgspec.Struct, gc=False, omit_defaults=True):
    """One open waiting checkpoint of a run."""

    key: str
    reason: Literal["tool", "approval", "event", "input"]
    schema: dict[str, Any] | None = None
    deadline: float | None = None
    prompt: str | None = None
    approvers: list[str] | None = None
    slot: str = ""
    """Which occurrence of this key the body is waiting on (``reason:key#n``)."""


class Waiting(msgspec.Struct, gc=False):
    """Why a run is ``waiting``: the reason of its first wait and every open wait."""

    reason: str
    waits: list[Wait]


class Trigger(msgspec.Struct, gc=False, omit_defaults=True):
    """What created a run: ``api``, ``child`` (of ``ref``), ``schedule`` (named ``ref``),
    ``batch`` (id ``ref``) …

    ``scheduled_at`` is the tick (UTC epoch seconds) a schedule's fire started the run
    for; a manual trigger of a schedule leaves it unset.
    """

    type: str = "api"
    ref: str | None = None
    scheduled_at: float | None = None


class CancelRequest(msgspec.Struct, gc=False):
    """A durable cancellation in flight: survives a crash mid-cancel (R15)."""

    reason: str
    requested_at: float


class RunRecord(msgspec.Struct, gc=False, omit_defaults=True):
    """The canonical durable record of one run."""

    id: str
    seq: int
    kind: Kind
    owner: Owner
    target: str
    root_id: str
    status: Status
    created_at: float
    updated_at: float
    input: Any = None
    parent_id: str | None = None
    trigger: Trigger = msgspec.field(default_factory=Trigger)
    idempotency_key: str | None = None
    waiting: Waiting | None = None
    started_at: float | None = None
    finished_at: float | None = None
    completion: Completion | None = None
    cancel: CancelRequest | None = None
    last_event_id: int = 0
    journal_len: int = 0
    attempt: int = 1
    expected: list[str] = msgspec.field(default_factory=list)
    restarts: list[float] = msgspec.field(default_factory=list)
    batch_id: str | None = None
    """The batch this job was started in (``rt.start_batch``), if any."""
    version: int | None = None
    """The version of the definition the run started under (it replays under it)."""

    @property
    def terminal(self) -> bool:
        """Whether the run has ended; a terminal run never changes again."""
        return self.status in TERMINAL


class Ending(msgspec.Struct, gc=False, array_like=True, omit_defaults=True):
    """The value of a top-level run's ``f`` entry (R38): what purging the run deletes
    besides the keys its status and seq name (both are in the entry's key).

    A purge builds the run's deletes from this alone instead of reading and decoding
    its record (the largest part of choosing a run to purge). An array: it starts with
    a msgpack array byte, which no UTF-8 run id (the value of stores written before
    it) can start with.
    """

    id: str
    kind: str
    owner: str
    """The owner's key (:func:`owner_key`)."""
    idempotency_key: str | None = None
    batch_id: str | None = None
    fire: bytes | None = None
    """The ``fires`` key of the cron tick that started the run, if one did."""


class LogRecord(msgspec.Struct, gc=False, omit_defaults=True):
    """One raw log entry of a run (``ctx.log``), kept apart from its AG-UI events (R24).

    ``step`` and ``attempt`` say which step attempt wrote it (none: the body itself).
    ``mark`` is the number of body-level log calls the run had made when this entry
    was committed: the last entry's mark is how a replayed body knows which of its
    log calls are already stored (see ``perdure.runtime._logs``).
    """

    seq: int
    at: float
    level: str
    message: str
    fields: dict[str, Any] = msgspec.field(default_factory=dict)
    step: str | None = None
    attempt: int = 1
    mark: int = 0


class BatchRecord(msgspec.Struct, gc=False, omit_defaults=True):
    """A group of jobs started together (``rt.start_batch``); members: the ``b`` index."""

    id: str
    target: str
    owner: Owner
    total: int
    created_at: float
    idempotency_key: str | None = None


class ScheduleRecord(msgspec.Struct, gc=False, omit_defaults=True):
    """A cron schedule (R25): what code declared, and where its firing has got to.

    ``cursor`` is the last scheduled instant handled (fired, skipped, buffered or
    dropped): the next fire is the first one after it. ``active`` are the runs it
    started that were not yet seen to end; ``buffered_at`` a tick waiting for the
    active run to end (``buffer_one``, ``replace``). Instants are UTC epoch seconds.
    """

    name: str
    cron: str
    timezone: str
    target: str
    owner: Owner
    created_at: float
    updated_at: float
    input: Any = None
    overlap: str = "forbid"
    catchup: str = "latest"
    catchup_bound: int = 100
    max_runs: int | None = None
    description: str | None = None
    paused: bool = False
    cursor: float = 0.0
    last_scheduled_at: float | None = None
    last_successful_at: float | None = None
    last_run_id: str | None = None
    fired: int = 0
    triggered: int = 0
    skipped: int = 0
    buffered: int = 0
    missed: int = 0
    active: list[str] = msgspec.field(default_factory=list)
    buffered_at: float | None = None


class JournalEntry(msgspec.Struct, gc=False, array_like=True, omit_defaults=True):
    """One recorded body action (a step result, an emit, a timer …), replayed in order.

    ``value`` holds the msgpack encoding of the recorded result so replay decodes it
    lazily, only when the body reaches that position. ``at`` is the runtime clock when
    the entry was recorded: replay hands it back so the body's clock is replay-stable.
    """

    kind: str
    name: str
    value: bytes = b""
    error: ErrorInfo | None = None
    at: float | None = None


class SchemaInfo(msgspec.Struct, gc=False):
    """Stamp identifying a perdure store and the schema it was written with."""

    format: str
    version: int
    created_at: float
