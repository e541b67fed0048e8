"""Raw run logs (R24): ``ctx.log`` writes text apart from the AG-UI event log.

Events are the user-visible stream (what an AG-UI client renders); logs are the
operator's debug text, stored in their own ``logs`` database (run id, seq) and read
with ``rt.logs`` / ``perdure runs logs``. Any run kind may log; jobs are the main users.

Exactly once across replays
    A replayed body calls ``ctx.log`` again, so a log call must know whether its entry
    is already stored. Two cases, with one rule each:

    - **Inside a step**, entries are buffered with the step attempt and committed in the
      same transaction as the step's outcome (its result, its final error, or the retry
      record of a failed attempt). A recorded step never runs again, so its logs are
      never written again; an attempt cut by a crash left no entries, and its re-run
      writes its own. ``ctx.flush()`` inside a step commits the entries buffered so far
      with the step's events, for live following of long steps; if a crash then cuts the
      attempt, those entries stay (they did happen) and the re-run's entries carry the
      run's next ``attempt`` number, after the ``perdure.attempt_aborted`` marker.
    - **In the body** (outside steps), each call is numbered in the order the body makes
      them, like journal positions: the n-th body-level log call is entry "n". An entry
      commits with the run's next commit (a step, an emit, a sleep, a wait, the end) or at
      ``ctx.flush()``, and every stored entry carries in ``mark`` how many body-level calls
      were committed with or before it. An activation reads the last entry's mark once
      (lazily, at its first log call) and skips the calls numbered up to it. So a call is
      stored once whether the replay comes from a crash, a passivation or a restart of
      the body (R18, whole-job retries): the re-run of a restarted body does not repeat
      the body-level entries its failed attempt committed. Body-level log calls must
      therefore be deterministic, like the rest of the body; log from inside a step what
      depends on I/O.
    - **In a concurrent task of the body** (a nursery's, outside steps), the order of
      calls across tasks is up to the scheduler, so they are not numbered with the body's
      own: they are counted per lane (``ctx.lane``), from the lane's last recorded keyed
      action, as its actions are keyed (R6). A call made before an action its lane has
      recorded is stored (the action's commit carried it, if nothing earlier did). For
      calls after it, every entry written carries, in the reserved field
      ``perdure.lanes`` (hidden from :class:`LogEntry`), ``{lane: [n, k]}``: k calls of
      that lane after its n-th action are stored; an activation reads it from the last
      entry. Concurrent tasks outside any lane share one count, which is deterministic
      only if one of them logs at a time.

The cap
    A run keeps at most :data:`MAX_LOGS_PER_RUN` entries. The entry that would reach the
    cap is replaced by a ``warning`` marker (``fields["perdure.log_cap"]``) saying that
    later entries are dropped; nothing is written after it. Messages longer than
    :data:`MAX_MESSAGE` characters are cut (and say so); fields must encode to at most
    :data:`MAX_FIELDS_BYTES` bytes of msgpack.

Trust at the boundary (R30): fields are encoded and decoded back as the stored type
before the call returns; what cannot be stored raises at the call
(:class:`~perdure.SerializationError`, :class:`~perdure.InvalidInput`), so a log
entry can never make ``rt.logs`` or the CLI fail.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final, Literal

import msgspec

from perdure._errors import InvalidInput, SerializationError
from perdure.storage import LogRecord, Op, Ops

from ._boundary import FAILURES, reason

if TYPE_CHECKING:
    from ._run_actor import RunActor
    from ._steps import StepBuffer

__all__ = [
    "LEVELS",
    "MAX_FIELDS_BYTES",
    "MAX_LOGS_PER_RUN",
    "MAX_MESSAGE",
    "Draft",
    "LogEntry",
    "LogPage",
    "RunLogs",
    "draft",
    "log_body",
    "log_step",
    "step_log_ops",
]

LEVELS: Final = ("debug", "info", "warning", "error")
Level = Literal["debug", "info", "warning", "error"]
MAX_LOGS_PER_RUN = 10_000
"""Entries kept per run, the cap marker included (module attribute: tests lower it)."""
MAX_MESSAGE: Final = 8192
MAX_FIELDS_BYTES: Final = 8192

_encode = msgspec.msgpack.Encoder().encode
_fields_decoder = msgspec.msgpack.Decoder(dict[str, Any])


class LogEntry(msgspec.Struct, frozen=True):
    """One log entry of a run, as ``rt.logs`` returns it.

    ``seq`` counts the run's entries from 1 (the cursor for paging); ``at`` is the
    runtime clock when the entry was written; ``step`` the step whose attempt wrote it
    (``None``: the body); ``attempt`` the run's attempt (it grows when a crash cut one).
    """

    seq: int
    at: float
    level: str
    message: str
    fields: dict[str, Any] = msgspec.field(default_factory=dict)
    step: str | None = None
    attempt: int = 1


class LogPage(msgspec.Struct, frozen=True):
    """A page of ``rt.logs``; pass ``next_cursor`` as ``after`` for the next one
    (``None``: nothing more in that direction for now)."""

    entries: list[LogEntry]
    next_cursor: int | None = None


_LANES: Final = "perdure.lanes"
"""The reserved field of the per-lane counts of concurrent tasks' calls (module docstring)."""


def log_entry(record: LogRecord) -> LogEntry:
    """The public view of a stored log record."""
    fields = record.fields
    if _LANES in fields:
        fields = {k: v for k, v in fields.items() if k != _LANES}
    return LogEntry(
        seq=record.seq,
        at=record.at,
        level=record.level,
        message=record.message,
        fields=fields,
        step=record.step,
        attempt=record.attempt,
    )


class Draft(msgspec.Struct, gc=False):
    """A checked log call not yet numbered: numbers are given when it is committed."""

    at: float
    level: str
    message: str
    fields: dict[str, Any]


def draft(at: float, message: object, level: object, fields: dict[str, Any]) -> Draft:
    """Check one ``ctx.log`` call (R30); raises instead of storing what cannot be read."""
    if level not in LEVELS:
        raise InvalidInput(f"log level must be one of {', '.join(LEVELS)} (got {level!r})")
    if not isinstance(message, str):
        raise InvalidInput(f"a log message must be a string (got {type(message).__name__})")
    if len(message) > MAX_MESSAGE:
        message = message[:MAX_MESSAGE] + f" [truncated from {len(message)} characters]"
    try:
        message.encode()
    except UnicodeEncodeError:
        message = message.encode(errors="backslashreplace").decode()
    if fields:
        try:
            raw = _encode(fields)
            fields = _fields_decoder.decode(raw)
        except FAILURES as exc:
            raise SerializationError(f"log fields are not serializable: {reason(exc)}") from None
        if len(raw) > MAX_FIELDS_BYTES:
            raise InvalidInput(
                f"log fields take {len(raw)} bytes encoded; at most {MAX_FIELDS_BYTES}",
                size=len(raw),
            )
    return Draft(at, str(level), message, fields)


class RunLogs:
    """The log state of one live run actor: next seq, body-call numbering, the cap.

    Built at the actor's first log call from the run's last stored entry.
    """

    __slots__ = ("build", "calls", "committed", "lane_calls", "lanes", "run_id", "seq")

    def __init__(self, run_id: str, last: LogRecord | None, build: Ops) -> None:
        self.run_id = run_id
        self.build = build
        self.seq = last.seq if last is not None else 0
        """The highest seq handed out (stored, or queued with the next commit)."""
        self.committed = last.mark if last is not None else 0
        """Body-level calls already stored (numbered 1..committed)."""
        self.calls = 0
        """Body-level calls made by this execution of the body."""
        self.lanes: dict[str, list[int]] = {}
        """Concurrent tasks' calls stored, per lane: ``[n, k]``, k calls after the lane's
        n-th keyed action (``""``: tasks outside any lane). Carried by every entry."""
        self.lane_calls: dict[str, list[int]] = {}
        """This execution's calls per lane: ``[n, j]``, j calls after its n-th action."""
        stored = last.fields.get(_LANES) if last is not None else None
        if isinstance(stored, dict):
            self.lanes = {
                lane: [int(count[0]), int(count[1])]
                for lane, count in stored.items()
                if isinstance(count, list) and len(count) == 2
            }

    def rewind(self) -> None:
        """The body restarts from the top (R18): its calls are numbered afresh."""
        self.calls = 0
        self.lane_calls.clear()

    def _op(self, item: Draft, step: str | None, attempt: int, mark: int) -> Op | None:
        cap = MAX_LOGS_PER_RUN
        if self.seq >= cap:
            return None  # past the marker: dropped
        self.seq += 1
        if mark > self.committed:
            self.committed = mark
        lanes = self.lanes
        if self.seq == cap:
            record = LogRecord(
                seq=self.seq,
                at=item.at,
                level="warning",
                message=f"this run reached its cap of {cap} log entries: later entries are dropped",
                fields={"perdure.log_cap": cap, **({_LANES: lanes} if lanes else {})},
                step=step,
                attempt=attempt,
                mark=self.committed,
            )
        else:
            record = LogRecord(
                seq=self.seq,
                at=item.at,
                level=item.level,
                message=item.message,
                fields={**item.fields, _LANES: lanes} if lanes else item.fields,
                step=step,
                attempt=attempt,
                mark=self.committed,
            )
        return self.build.log(self.run_id, record)

    def body(self, item: Draft, attempt: int) -> Op | None:
        """The op of a body-level call, or ``None`` if it is stored already (or dropped)."""
        self.calls += 1
        if self.calls <= self.committed:
            return None
        return self._op(item, None, attempt, self.calls)

    def keyed(
        self, item: Draft, attempt: int, lane: str | None, asked: int, recorded: int
    ) -> Op | None:
        """The op of a concurrent task's body-level call in ``lane``, or ``None`` if it is
        stored already. ``asked``: the keyed actions the lane has asked for in this
        execution; ``recorded``: those it has recorded (:meth:`Journal.lane_progress`)."""
        key = lane or ""
        calls = self.lane_calls.get(key)
        if calls is None or calls[0] != asked:
            calls = self.lane_calls[key] = [asked, 0]
        calls[1] += 1
        if recorded > asked:
            return None  # the lane recorded an action after this call: it is stored
        stored = self.lanes.get(key)
        if stored is not None and stored[0] == asked and calls[1] <= stored[1]:
            return None
        # A stale count (n < asked) is replaced: calls of an earlier stretch of the
        # lane are covered by its recorded actions (kept: a restart may drop one
        # failed step, never more than the lane's last action).
        self.lanes = {**self.lanes, key: [asked, calls[1]]}
        return self._op(item, None, attempt, 0)

    def step(self, items: list[Draft], step: str, attempt: int) -> list[Op]:
        """The ops of a step attempt's buffered entries, numbered now."""
        mark = max(self.calls, self.committed)
        ops: list[Op] = []
        for item in items:
            op = self._op(item, step, attempt, mark)
            if op is not None:
                ops.append(op)
        return ops


def _run_logs(actor: RunActor) -> RunLogs:
    logs = actor.logs
    if logs is None:
        engine = actor.engine
        last = engine.stored_last_log(actor.rec.id)
        logs = actor.logs = RunLogs(actor.rec.id, last, engine.ops)
    return logs


def log_body(actor: RunActor, item: Draft) -> None:
    """A body-level ``ctx.log``: queued with the run's next commit unless stored already."""
    from ._steps import in_body_flow, lane_of  # here: _steps imports this module

    if in_body_flow(actor):
        op = _run_logs(actor).body(item, actor.rec.attempt)
    else:
        lane = lane_of(actor)
        asked, recorded = actor.journal.lane_progress(lane)
        op = _run_logs(actor).keyed(item, actor.rec.attempt, lane, asked, recorded)
    if op is not None:
        actor.pending_ops.append(op)


def log_step(buffer: StepBuffer, item: Draft) -> None:
    """A ``ctx.log`` inside a step: kept with the step attempt until it commits."""
    if buffer.logs is None:
        buffer.logs = [item]
    else:
        buffer.logs.append(item)


def step_log_ops(actor: RunActor, buffer: StepBuffer) -> list[Op]:
    """The ops of what the step attempt logged so far (taken: committed with them)."""
    items = buffer.logs
    if not items:
        return []
    buffer.logs = None
    return _run_logs(actor).step(items, buffer.name, actor.rec.attempt)
