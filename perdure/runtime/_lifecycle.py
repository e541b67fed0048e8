"""The run lifecycle (R1, R3, R19): which status changes exist and what each one writes.

::

    pending ──> running ──> waiting ──> running ... ──> completed | failed | cancelled
       └──────────────────────└──────────────────────> cancelled

:data:`TRANSITIONS` is the table every status change is checked against. The functions
below compute, from values only, what a transition writes: the new record and the
AG-UI events that go with it, as a :class:`Change`. They never touch storage or the
actor: the actor prepares a commit from a ``Change`` and applies it to its memory only
once the commit is on its way (and rolls back if it fails, R32). Keeping the AG-UI
consequences here is what keeps the log valid on every path: "leaving ``waiting`` logs
``RUN_STARTED``" is written once, in :func:`leave_wait` and :func:`finish`.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any, NamedTuple

import msgspec

from perdure._errors import InvalidTransition
from perdure.agui import (
    MAX_EVENT_BYTES,
    Event,
    Interrupt,
    RunErrorEvent,
    RunFinishedCancelledOutcome,
    RunFinishedEvent,
    RunFinishedInterruptOutcome,
    RunStartedEvent,
    TokenUsage,
    event_to_json,
)
from perdure.storage import (
    STATUSES,
    TERMINAL,
    CancelRequest,
    Completion,
    ErrorInfo,
    RunRecord,
    Status,
    Wait,
    Waiting,
)

from ._boundary import EVENT_BUDGET

__all__ = [
    "STATUSES",
    "TERMINAL",
    "TRANSITIONS",
    "Change",
    "begin",
    "check_transition",
    "enter_waiting",
    "finish",
    "is_terminal",
    "leave_wait",
    "request_cancel",
    "run_started",
    "thread_id",
    "while_waiting",
]

TRANSITIONS: dict[str, frozenset[str]] = {
    "pending": frozenset({"running", "cancelled"}),
    "running": frozenset({"waiting", "completed", "failed", "cancelled"}),
    "waiting": frozenset({"running", "cancelled"}),
    "completed": frozenset(),
    "failed": frozenset(),
    "cancelled": frozenset(),
}

MAX_ERROR_MESSAGE = 8192
"""Error messages are cut here so a RUN_ERROR stays far below the event cap (R19)."""


class Change(NamedTuple):
    """What a transition writes: the run's new record and the events it logs."""

    record: RunRecord
    events: list[Event]


def is_terminal(status: str) -> bool:
    return status in TERMINAL


def check_transition(run_id: str, old: str, new: str) -> None:
    """Raise :class:`InvalidTransition` unless ``old -> new`` is in the lifecycle."""
    allowed = TRANSITIONS.get(old)
    if allowed is None or new not in allowed:
        raise InvalidTransition(
            f"run {run_id}: {old} -> {new} is not a valid transition",
            run_id=run_id,
            old=old,
            new=new,
        )


def thread_id(rec: RunRecord) -> str:
    """The AG-UI ``threadId`` of a run: its conversation, or for project runs its root."""
    return rec.owner.id if rec.kind == "agent" else rec.root_id


def run_started(rec: RunRecord) -> RunStartedEvent:
    """The ``RUN_STARTED`` that opens each segment of a run's log."""
    return RunStartedEvent(thread_id=thread_id(rec), run_id=rec.id, parent_run_id=rec.parent_id)


def _interrupt(rec: RunRecord, interrupts: list[Interrupt]) -> RunFinishedEvent:
    return RunFinishedEvent(
        thread_id=thread_id(rec),
        run_id=rec.id,
        outcome=RunFinishedInterruptOutcome(interrupts=interrupts),
    )


def begin(rec: RunRecord, now: float) -> Change:
    """``pending -> running``: the body may start; the log opens with ``RUN_STARTED``.

    The event carries its timestamp already, so a start can be committed as it is.
    """
    check_transition(rec.id, rec.status, "running")
    started = msgspec.structs.replace(rec, status="running", started_at=now)
    event = RunStartedEvent(
        thread_id=thread_id(rec),
        run_id=rec.id,
        parent_run_id=rec.parent_id,
        timestamp=int(now * 1000),
    )
    return Change(started, [event])


def enter_waiting(
    rec: RunRecord,
    waits: list[Wait],
    added: Sequence[Wait],
    interrupts: list[Interrupt],
    closing: Sequence[Event],
) -> Change:
    """``running -> waiting``, or more waits on a waiting run (R2, R11).

    ``waits`` is every open wait afterwards (``added`` are the new ones) and
    ``interrupts`` their AG-UI form. The segment ends with an interrupt
    ``RUN_FINISHED``; what the log left open is closed first (``closing``), since AG-UI
    refuses ``RUN_FINISHED`` while anything is open. A run already waiting logs a new
    segment: ``RUN_STARTED``, then the interrupt listing every open wait.
    """
    events: list[Event] = []
    if rec.status == "waiting":
        events.append(run_started(rec))
    else:
        check_transition(rec.id, rec.status, "waiting")
    events.extend(closing)
    events.append(_interrupt(rec, interrupts))
    taken = {f"{w.reason}:{w.key}" for w in added} | {f"*:{w.key}" for w in added}
    new = msgspec.structs.replace(
        rec,
        status="waiting",
        waiting=Waiting(reason=waits[0].reason, waits=waits),
        expected=[e for e in rec.expected if e not in taken],
    )
    return Change(new, events)


def leave_wait(
    rec: RunRecord,
    slots: Collection[str],
    result: Sequence[Event],
    interrupts: list[Interrupt],
) -> Change:
    """Waits of a waiting run are answered (or expire): ``waiting -> running`` once none is left.

    The answers open a new segment (``RUN_STARTED``, then ``result``, the signals' own
    events). If other waits stay open (``interrupts`` announces them) the segment
    ends at once with a new interrupt and the run stays ``waiting``.
    """
    assert rec.waiting is not None
    remaining = [w for w in rec.waiting.waits if w.slot not in slots]
    events: list[Event] = [run_started(rec), *result]
    if remaining:
        events.append(_interrupt(rec, interrupts))
        new = msgspec.structs.replace(
            rec, waiting=Waiting(reason=remaining[0].reason, waits=remaining)
        )
    else:
        check_transition(rec.id, rec.status, "running")
        new = msgspec.structs.replace(rec, status="running", waiting=None)
    return Change(new, events)


def _finished(
    rec: RunRecord, result: Any, usage: list[TokenUsage], result_size: int | None
) -> RunFinishedEvent:
    """The success ``RUN_FINISHED``; a result too large for one event stays in the
    completion only (``rt.get``, ``GET /runs/{id}``) and the event says so (R19).

    ``result_size`` (the result's JSON bytes, when the caller knows it) saves encoding
    the event just to measure it: the envelope around the result is small.
    """
    event = RunFinishedEvent(
        thread_id=thread_id(rec), run_id=rec.id, result=result, usage=usage or None
    )
    if result is None or (result_size is not None and result_size < MAX_EVENT_BYTES // 2):
        return event
    size = len(event_to_json(event))
    if size <= EVENT_BUDGET:
        return event
    return RunFinishedEvent(
        thread_id=thread_id(rec),
        run_id=rec.id,
        usage=usage or None,
        metadata={"perdure": {"resultOmitted": True, "resultBytes": size}},
    )


def while_waiting(
    rec: RunRecord,
    events: Sequence[Event],
    interrupts: list[Interrupt],
    closing: Sequence[Event],
) -> list[Event]:
    """What a commit of a ``waiting`` run logs when another task of its body is working.

    The run stays ``waiting`` (its waits are open), but after an interrupt AG-UI
    accepts only ``RUN_STARTED``: the commit is a segment of its own, ``RUN_STARTED``,
    its ``events``, whatever they left open closed (``closing``), and the interrupt
    announcing every open wait again.
    """
    return [run_started(rec), *events, *closing, _interrupt(rec, interrupts)]


def request_cancel(rec: RunRecord, reason: str, now: float) -> RunRecord:
    """The durable cancellation request (R15): written before anything is cancelled."""
    return msgspec.structs.replace(rec, cancel=CancelRequest(reason=reason, requested_at=now))


def finish(
    rec: RunRecord,
    status: Status,
    *,
    result: Any = None,
    error: ErrorInfo | None = None,
    usage: list[TokenUsage] | None = None,
    model: str | None = None,
    provider: str | None = None,
    finish_reason: str | None = None,
    closing: Sequence[Event] = (),
    now: float,
    result_size: int | None = None,
) -> Change:
    """Any status ``-> completed | failed | cancelled``, with its completion (R3).

    The terminal record, the completion and the terminal event are one change, so they
    commit together or not at all. A run that never logged, or that ends from
    ``waiting``, first opens a segment (``RUN_STARTED``); what is still open is closed
    before the terminal event (R19). Token usage goes on the terminal event.
    """
    events: list[Event] = []
    if rec.last_event_id == 0 or rec.status == "waiting":
        events.append(run_started(rec))
    current = rec.status
    if current == "waiting" and status != "cancelled":
        check_transition(rec.id, "waiting", "running")
        current = "running"
    elif current == "pending" and status == "failed":
        # A run that fails before its body ran (its actor crashed while it was pending)
        # passes through running: its log is RUN_STARTED, then RUN_ERROR.
        check_transition(rec.id, "pending", "running")
        current = "running"
    check_transition(rec.id, current, status)
    events.extend(closing)
    usage = list(usage or ())
    if status == "completed":
        events.append(_finished(rec, result, usage, result_size))
    elif status == "cancelled":
        events.append(
            RunFinishedEvent(
                thread_id=thread_id(rec),
                run_id=rec.id,
                outcome=RunFinishedCancelledOutcome(),
                usage=usage or None,
            )
        )
    else:
        assert error is not None, "a failed run needs an error"
        if len(error.message) > MAX_ERROR_MESSAGE:
            error = ErrorInfo(
                error.code, error.message[:MAX_ERROR_MESSAGE] + " [truncated]", error.detail
            )
        events.append(RunErrorEvent(message=error.message, code=error.code, usage=usage or None))
    completion = Completion(
        status=status,
        result=result,
        error=error,
        usage=usage,
        model=model,
        provider=provider,
        finish_reason=finish_reason,
    )
    done = msgspec.structs.replace(
        rec, status=status, completion=completion, waiting=None, finished_at=now
    )
    return Change(done, events)
