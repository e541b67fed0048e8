"""Waiting checkpoints and resume signals (R2, R11-R14).

A wait is identified by its *slot*, ``reason:key#n``: the n-th time the body
waits on that key. The body numbers its waits as it calls them (deterministic,
so replay finds the same slots); a signal goes to the open slot of its key.

Opening a wait stores it in the run record (status ``waiting``, R2) with an AG-UI
``RUN_FINISHED`` interrupt listing every open wait; a signal is stored as a
``signal`` journal entry in the same commit that removes the wait and logs
``RUN_STARTED`` plus its result event. Both sides only touch the durable record,
so a signal for a passivated run is accepted and stored without re-running the
body; the body, replayed later, finds the entry and returns its payload (R14).

Signal entries are keyed by slot, not by position: the positional journal
cursor skips them, because when a signal arrives is not something replay can
reproduce.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

import msgspec
import trio

from perdure._errors import (
    NotWaiting,
    PerdureError,
    RunNotActive,
    SignalConflict,
    WaitExpired,
)
from perdure.agui import CustomEvent, Event, ToolCallResultEvent
from perdure.storage import ErrorInfo, JournalEntry, Wait

from ._lifecycle import enter_waiting, leave_wait
from ._signals import (
    ApprovalDecision,
    ExternalEvent,
    InputResponse,
    Signal,
    ToolResult,
    check_signal,
    decode_signal,
    encode_signal,
    interrupt_for,
    same_signal,
    wait_key,
)

if TYPE_CHECKING:
    from ._run_actor import RunActor

__all__ = ["WaitFuture", "WaitSpec", "accept_signal", "open_wait", "open_waits", "signal_outcome"]


class WaitFuture:
    """Where a signal (or the expiry) is handed to the body blocked on a slot."""

    __slots__ = ("done", "entry")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.entry: JournalEntry | None = None

    def resolve(self, entry: JournalEntry) -> None:
        self.entry = entry
        self.done.set()


def signal_outcome(entry: JournalEntry) -> Signal:
    """The stored signal of a slot, or :class:`WaitExpired` if the slot expired."""
    if entry.error is not None:
        raise WaitExpired(entry.error.message, **entry.error.detail)
    return decode_signal(entry.value)


class WaitSpec(msgspec.Struct, frozen=True):
    """What the body asks to wait on."""

    reason: Any
    key: str
    schema: dict[str, Any] | None = None
    prompt: str | None = None
    approvers: list[str] | None = None


async def open_waits(actor: RunActor, specs: list[WaitSpec], timeout: float | None) -> list[Signal]:
    """Open (or, on replay, re-attach to) waits and return their signals, in order.

    All waits of one call open in a single commit with a single interrupt (parallel
    tool calls). If one expires, the others of the call are closed too and
    :class:`WaitExpired` is raised.
    """
    journal = actor.journal
    slots = [journal.next_slot(wait_key(spec.reason, spec.key)) for spec in specs]
    futures: dict[str, WaitFuture] = {}
    voided: list[JournalEntry] = []
    for spec, slot in zip(specs, slots, strict=True):
        entry = journal.slot(slot)
        if entry is not None and entry.kind == "buffered" and not _fits(entry, spec, slot):
            # An early signal is checked when its wait opens, against that wait's
            # schema and approvers (R12, R13); one that fails is void, not applied.
            voided.append(JournalEntry("void", slot, at=actor.engine.now()))
            entry = None
        future = futures[slot] = WaitFuture()
        if entry is not None:
            future.resolve(entry)
        else:
            actor.futures[slot] = future
    for entry in voided:
        journal.add_keyed(entry)
    try:
        mine = await _open_new_waits(actor, specs, slots, futures, voided, timeout)
        if mine:
            await _block(actor, [futures[w.slot] for w in mine], mine)
        outcomes: list[Signal] = []
        expired: WaitExpired | None = None
        for slot in slots:
            entry = futures[slot].entry
            assert entry is not None
            if entry.at is not None:
                journal.advance_time(entry.at)
            try:
                outcomes.append(signal_outcome(entry))
            except WaitExpired as exc:
                expired = expired or exc
        if expired is not None:
            raise expired
        return outcomes
    finally:
        for slot in slots:
            actor.futures.pop(slot, None)


async def _open_new_waits(
    actor: RunActor,
    specs: list[WaitSpec],
    slots: list[str],
    futures: dict[str, WaitFuture],
    voided: list[JournalEntry],
    timeout: float | None,
) -> list[Wait]:
    """Persist the waits not yet open; return this call's unanswered waits.

    A separate frame on purpose: the records it builds are garbage before the
    caller parks, which for a hundred thousand parked runs is most of their memory.
    """
    rec = actor.rec
    waits = list(rec.waiting.waits) if rec.waiting is not None else []
    open_slots = {w.slot for w in waits}
    mine: list[Wait] = []
    added: list[Wait] = []
    deadline = actor.engine.now() + timeout if timeout is not None else None
    for spec, slot in zip(specs, slots, strict=True):
        if futures[slot].done.is_set():
            continue
        wait = next((w for w in waits if w.slot == slot), None)
        if wait is None and slot not in open_slots:
            wait = Wait(
                key=spec.key,
                reason=spec.reason,
                schema=spec.schema,
                deadline=deadline,
                prompt=spec.prompt,
                approvers=spec.approvers,
                slot=slot,
            )
            added.append(wait)
        assert wait is not None
        mine.append(wait)
    if added:
        waits.extend(added)
        change = enter_waiting(
            rec, waits, added, [interrupt_for(w) for w in waits], actor.open.closing_events()
        )
        extra = [actor.arm_timer(w.deadline, w.slot)[1] for w in added if w.deadline is not None]
        await actor.persist(change.record, change.events, journal=voided, extra_ops=extra)
    elif voided:
        await actor.persist(journal=voided)
    return mine


async def open_wait(
    actor: RunActor,
    reason: Any,
    key: str,
    *,
    schema: dict[str, Any] | None,
    prompt: str | None,
    approvers: list[str] | None,
    timeout: float | None,
) -> Signal:
    """Open one wait and return its signal (see :func:`open_waits`)."""
    spec = WaitSpec(reason=reason, key=key, schema=schema, prompt=prompt, approvers=approvers)
    return (await open_waits(actor, [spec], timeout))[0]


async def _block(actor: RunActor, futures: list[WaitFuture], waits: list[Wait]) -> None:
    """Park the body until every future is resolved, its wait expires, or it is cancelled.

    A parked body holds no ``max_running`` slot; it takes one again before it goes on
    (before it records an expiry, too).
    """
    rt = actor.engine
    run_id = actor.rec.id
    rt.supervisor.mark_idle(run_id)
    if actor.top_level:
        rt.admission.release(run_id)
    try:
        expired = await _park(actor, futures, waits)
    finally:
        rt.supervisor.mark_busy(run_id)
    if actor.top_level:
        await rt.admission.acquire(run_id)
    # One expiry ends the whole call: close its other waits as expired too.
    for wait in expired:
        await expire(actor, wait)


async def _park(actor: RunActor, futures: list[WaitFuture], waits: list[Wait]) -> list[Wait]:
    """Wait for the futures; the waits left unanswered if a deadline passed first."""
    rt = actor.engine
    run_id = actor.rec.id
    idle_since = rt.now()
    while not all(f.done.is_set() for f in futures):
        pending = [w for w, f in zip(waits, futures, strict=True) if not f.done.is_set()]
        timed = [w for w in pending if w.deadline is not None]
        nearest = min(timed, key=lambda w: w.deadline or 0.0, default=None)
        deadline = math.inf if nearest is None or nearest.deadline is None else nearest.deadline
        parked = None
        if nearest is not None:
            # Left set if the wait is cancelled (the LRU passivated the actor): on_stop
            # then re-arms the deadline's timer, which the timer service may have fired.
            parked = actor.timer(deadline, nearest.slot)
            actor.park(parked)
        with trio.move_on_at(rt.trio_time(min(deadline, idle_since + rt.passivate_after))):
            for future in futures:
                await future.done.wait()
        if parked is not None:
            actor.unpark(parked)
        if all(f.done.is_set() for f in futures):
            return []
        if rt.now() >= deadline:
            return pending
        # Idle past the threshold: free the actor; the signal, the deadline timer or a
        # cancellation re-activates the run by replay (R14).
        if rt.supervisor.passivate(run_id):
            await trio.sleep_forever()  # cancelled by the stop
        idle_since = rt.now()  # refused (a message is in flight): stay live, retry later
        rt.supervisor.mark_idle(run_id)
    return []


async def expire(actor: RunActor, wait: Wait) -> None:
    """Close a wait whose deadline passed; the body then raises :class:`WaitExpired`."""
    recorded = actor.journal.slot(wait.slot)
    if recorded is not None:
        future = actor.futures.get(wait.slot)
        if future is not None and not future.done.is_set():
            future.resolve(recorded)
        return
    error = ErrorInfo(
        "WAIT_EXPIRED",
        f"{wait.reason} wait {wait.key!r} expired before its signal arrived",
        {"key": wait.key, "reason": wait.reason, "deadline": wait.deadline},
    )
    entry = JournalEntry("signal", wait.slot, error=error, at=actor.engine.now())
    marker = CustomEvent(
        name="perdure.wait_expired", value={"key": wait.key, "reason": wait.reason}
    )
    await _close_wait(actor, wait, entry, [marker])


async def _close_wait(
    actor: RunActor, wait: Wait, entry: JournalEntry, result: list[Event]
) -> None:
    rec = actor.rec
    assert rec.waiting is not None
    remaining = [interrupt_for(w) for w in rec.waiting.waits if w.slot != wait.slot]
    change = leave_wait(rec, wait.slot, result, remaining)
    actor.journal.add_keyed(entry)
    extra = []
    if wait.deadline is not None:
        extra.append(actor.engine.ops.disarm_timer(actor.timer(wait.deadline, wait.slot)))

    def wake_body() -> None:
        # The body may go on as soon as the signal is queued: its next commit is
        # ordered after it, so the two can share one flush. resume() itself still
        # returns only once the signal is durable (R12).
        future = actor.futures.get(wait.slot)
        if future is not None:
            future.resolve(entry)

    await actor.persist(
        change.record, change.events, journal=[entry], extra_ops=extra, queued=wake_body
    )


def _result_events(signal: Signal) -> list[Event]:
    if isinstance(signal, ToolResult):
        content = (
            signal.content
            if isinstance(signal.content, str)
            else json.dumps(msgspec.to_builtins(signal.content))
        )
        return [
            ToolCallResultEvent(
                message_id=f"toolresult_{signal.tool_call_id}",
                tool_call_id=signal.tool_call_id,
                content=content,
                role="tool",
            )
        ]
    if isinstance(signal, ApprovalDecision):
        value: Any = {"key": signal.key, "approved": signal.approved, "approver": signal.approver}
        return [CustomEvent(name="perdure.approval", value=value)]
    if isinstance(signal, ExternalEvent):
        return [CustomEvent(name="perdure.event", value={"name": signal.name})]
    assert isinstance(signal, InputResponse)
    return [CustomEvent(name="perdure.input", value={"key": signal.key})]


async def accept_signal(actor: RunActor, signal: Signal, ns: str) -> bool:
    """Apply every R12/R13 rule; store the signal. Returns ``duplicate``."""
    rec = actor.rec
    latest = actor.journal.latest(ns)
    if rec.terminal or actor.ended:
        if latest is not None and latest.error is None:
            if same_signal(decode_signal(latest.value), signal):
                return True
            if isinstance(signal, ExternalEvent):
                # Events recur: a new one for an ended run is simply too late.
                raise RunNotActive(
                    f"run {rec.id} is {rec.status}", run_id=rec.id, status=rec.status
                )
            # A one-shot key (tool call, approval, input) already answered differently:
            # the loser of a race whose winner ended the run is still told it lost.
            raise SignalConflict(
                f"run {rec.id} already took a different signal for {ns!r}", run_id=rec.id, key=ns
            )
        raise RunNotActive(f"run {rec.id} is {rec.status}", run_id=rec.id, status=rec.status)
    if (
        latest is not None
        and latest.error is None
        and same_signal(decode_signal(latest.value), signal)
    ):
        # R12 taken literally: an equal payload for the key is the same signal again,
        # even if the body has since opened another wait on that key (a retried
        # resume must never feed the next slot). Repeated events need distinct payloads.
        return True
    waits = rec.waiting.waits if rec.waiting is not None else []
    wait = next((w for w in waits if wait_key(w.reason, w.key) == ns), None)
    if wait is not None:
        if wait.deadline is not None and actor.engine.now() >= wait.deadline:
            await expire(actor, wait)
            raise NotWaiting(f"the wait for {ns!r} expired", run_id=rec.id, key=ns)
        check_signal(signal, wait)
        entry = JournalEntry(
            "signal", wait.slot, value=encode_signal(signal), at=actor.engine.now()
        )
        await _close_wait(actor, wait, entry, _result_events(signal))
        return False
    if latest is not None and latest.error is None:
        if same_signal(decode_signal(latest.value), signal):
            return True
        if not _expected(rec.expected, ns):
            raise SignalConflict(
                f"run {rec.id} already took a different signal for {ns!r}", run_id=rec.id, key=ns
            )
    if _expected(rec.expected, ns):
        slot = actor.journal.next_buffer_slot(ns)
        entry = JournalEntry("buffered", slot, value=encode_signal(signal), at=actor.engine.now())
        actor.journal.add_keyed(entry)
        # While the run shows an interrupt, AG-UI allows no event but RUN_STARTED.
        marker = (
            []
            if rec.status == "waiting"
            else [CustomEvent(name="perdure.signal_buffered", value={"key": ns})]
        )
        await actor.persist(events=marker, journal=[entry])
        return False
    raise NotWaiting(f"run {rec.id} is not waiting for {ns!r}", run_id=rec.id, key=ns)


def _fits(entry: JournalEntry, spec: WaitSpec, slot: str) -> bool:
    wait = Wait(
        key=spec.key, reason=spec.reason, schema=spec.schema, approvers=spec.approvers, slot=slot
    )
    try:
        check_signal(decode_signal(entry.value), wait)
    except PerdureError:
        return False
    return True


def _expected(expected: list[str], ns: str) -> bool:
    return ns in expected or f"*:{ns.partition(':')[2]}" in expected
