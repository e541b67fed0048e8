"""Key layout of the LMDB store.

Keys are bytes ordered the way we scan them: identifiers followed by a NUL
separator, then big-endian integers so that LMDB's lexicographic order is numeric
order. Identifiers never contain NUL (the runtime validates them), which makes
``prefix + b"\\0"`` an exact range for one run or one index value.

Databases:

- ``meta``: ``schema`` -> SchemaInfo; ``seq_floor`` -> u64, the highest creation seq a
  purge may have removed (so seqs stay unique after the newest runs are purged, R38);
  ``finish_index`` -> b"1" once every ended top-level run has its ``f`` entry (stores
  written before that family existed are filled in by the first purge, R38)
- ``runs``: run id -> RunRecord
- ``events``: run id, NUL, u64 id of the chunk's last event -> one commit's events,
  a msgpack array of AG-UI events with consecutive ids (one record per commit, not
  per event: a 3-step run writes 5 event records instead of 8)
- ``journal``: run id, NUL, u32 position -> JournalEntry
- ``index``: one-letter family, value, NUL, u64 creation seq -> run id (status, owner
  and kind for every run; parent and root for child runs only; batch for the jobs of a
  batch; ``x`` for runs with a cancellation in flight). One family is ordered by end
  time instead: ``f``, terminal status, NUL, u64 finished (ms), u64 seq -> Ending (what
  purging the run deletes; the run id in stores written before endings), for top-level
  runs once they ended: retention (R38) walks it oldest-ended first, counts it from the
  newest end and purges from it without reading a record
- ``idem``: owner key, NUL, idempotency key -> run id
- ``timers``: u64 due time (ms), run id, NUL, name -> b""
- ``waiting``: u64 creation seq -> run id, for every run in ``waiting`` (its entry count
  is O(1) to read, so opening a store never walks a million passive runs)
- ``logs``: run id, NUL, u64 seq -> LogEntry (a job's raw logs, kept apart from its
  AG-UI events; the run prefix makes a run's logs one range, forwards or backwards)
- ``schedules``: schedule name -> ScheduleRecord (cron schedules and their counters)
- ``fires``: schedule name, NUL, u64 scheduled instant (UTC ms) -> run id. The
  exactly-once key of a cron tick: written in the same transaction as the run it
  starts, so a tick that has a key has its run, and a crash or a racing fire finds it
- ``batches``: batch id -> BatchRecord (its members are the ``b`` index family); a
  batch's idempotency key lives in ``idem`` under the owner key prefixed ``batch@``

Schema 3 added ``logs``, ``fires`` and ``batches``: opening a schema-2 store for writing
creates them and restamps it; nothing else changed.
"""

from __future__ import annotations

import struct

__all__ = [
    "DB_NAMES",
    "FINISH_INDEX",
    "IDX_BATCH",
    "IDX_CANCELLING",
    "IDX_FINISHED",
    "IDX_KIND",
    "IDX_OWNER",
    "IDX_PARENT",
    "IDX_ROOT",
    "IDX_STATUS",
    "SEQ_FLOOR",
    "batch_idem_owner",
    "event_key",
    "finished_key",
    "fires_key",
    "fires_prefix",
    "idem_key",
    "index_key",
    "index_prefix",
    "journal_key",
    "log_key",
    "run_prefix",
    "seq_of_index_key",
    "timer_key",
]

DB_NAMES = (
    "meta",
    "runs",
    "events",
    "journal",
    "index",
    "idem",
    "timers",
    "waiting",
    "schedules",
    "logs",
    "fires",
    "batches",
)

IDX_STATUS = b"s"
IDX_OWNER = b"o"
IDX_KIND = b"k"
IDX_PARENT = b"p"
IDX_ROOT = b"r"
"""Descendants of a root run (the root itself has no entry: its id is the value)."""
IDX_CANCELLING = b"x"
"""Runs with a cancellation requested but not yet terminal (recovery finishes them)."""
IDX_BATCH = b"b"
"""The jobs of a batch: batch id, NUL, seq -> run id."""

IDX_FINISHED = b"f"
"""Ended top-level runs by end time: status, NUL, u64 finished (ms), u64 seq -> an Ending
(what purging the run deletes; the run id in stores written before endings)."""

SEQ_FLOOR = b"seq_floor"
"""``meta`` key: no run created from now on may reuse a seq at or below this (R38)."""
FINISH_INDEX = b"finish_index"
"""``meta`` key: present once every ended top-level run has its ``f`` entry."""

_U64 = struct.Struct(">Q")
_U32 = struct.Struct(">I")


def run_prefix(run_id: str) -> bytes:
    """Prefix shared by every key of one run in ``events`` and ``journal``."""
    return run_id.encode() + b"\0"


def event_key(run_id: str, event_id: int) -> bytes:
    return run_id.encode() + b"\0" + _U64.pack(event_id)


def journal_key(run_id: str, position: int) -> bytes:
    return run_id.encode() + b"\0" + _U32.pack(position)


def index_prefix(family: bytes, value: str = "") -> bytes:
    """Prefix of one index family narrowed to one value (``""`` for valueless families)."""
    return family + value.encode() + b"\0"


def index_key(family: bytes, value: str, seq: int) -> bytes:
    return index_prefix(family, value) + _U64.pack(seq)


def seq_of_index_key(key: bytes) -> int:
    return int(_U64.unpack_from(key, len(key) - 8)[0])


def finished_key(status: str, finished_at: float, seq: int) -> bytes:
    """The ``f`` entry of a top-level run that ended with ``status`` at ``finished_at``."""
    return index_prefix(IDX_FINISHED, status) + _U64.pack(int(finished_at * 1000)) + _U64.pack(seq)


def idem_key(owner: str, key: str) -> bytes:
    return owner.encode() + b"\0" + key.encode()


def timer_key(due_ms: int, run_id: str, name: str) -> bytes:
    return _U64.pack(due_ms) + run_id.encode() + b"\0" + name.encode()


def log_key(run_id: str, seq: int) -> bytes:
    return run_id.encode() + b"\0" + _U64.pack(seq)


def fires_prefix(schedule: str) -> bytes:
    return schedule.encode() + b"\0"


def fires_key(schedule: str, at_ms: int) -> bytes:
    return schedule.encode() + b"\0" + _U64.pack(at_ms)


def batch_idem_owner(owner: str) -> str:
    """The ``idem`` scope of batch idempotency keys: apart from the owner's run keys."""
    return "batch@" + owner
