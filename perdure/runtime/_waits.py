"""Waiting checkpoints and resume signals (R2, R11-R14).

A wait is identified by its *slot*, ``reason:key#n``: the n-th time the body's
own task waits on that key. It numbers its waits as it calls them (deterministic,
so replay finds the same slots); a signal goes to the open slot of its key (the
first opened, if several tasks wait on it). A concurrent task's waits are numbered
per lane, ``reason@LANE|key#n`` (:mod:`._journal`), so the signal a task took is the
one it finds again on replay, whichever task reaches its wait first; such a wait
claims an early (buffered) signal by moving it to its own slot in a commit.

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

import math
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import msgspec
import trio

from perdure._errors import (
    InvalidInput,
    InvalidSignal,
    NotWaiting,
    PerdureError,
    RunNotActive,
    SignalConflict,
    WaitExpired,
)
from perdure.agui import MAX_EVENT_BYTES, CustomEvent, Event, ToolCallResultEvent, event_to_json
from perdure.storage import ErrorInfo, JournalEntry, Wait

from ._boundary import EVENT_BUDGET
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
from ._steps import in_body_flow, lane_of

if TYPE_CHECKING:
    from ._run_actor import RunActor

_MAX_RESULT_BYTES = MAX_EVENT_BYTES - 1024
"""Room for a TOOL_CALL_RESULT's envelope (ids, timestamp) around its content."""

__all__ = [
    "WaitFuture",
    "WaitSpec",
    "accept_signals",
    "open_wait",
    "open_waits",
    "signal_outcome",
]


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
    if in_body_flow(actor):
        slots = [journal.next_slot(wait_key(spec.reason, spec.key)) for spec in specs]
        keyed = False
    else:
        # A concurrent task: its waits are numbered per lane (R6), as its steps are.
        lane = lane_of(actor)
        slots = [journal.lane_wait_slot(spec.reason, spec.key, lane) for spec in specs]
        keyed = True
    futures: dict[str, WaitFuture] = {}
    voided: list[JournalEntry] = []
    claimed: list[JournalEntry] = []
    for spec, slot in zip(specs, slots, strict=True):
        entry = journal.slot(slot)
        if entry is None and keyed:
            entry = _claim(actor, spec, slot, claimed)
        elif entry is not None and entry.kind == "buffered" and not _fits(entry, spec, slot):
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
    voided.extend(claimed)
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
        size = len(event_to_json(change.events[-1]))
        if size > EVENT_BUDGET:
            raise InvalidInput(
                f"the interrupt announcing these waits would be {size} bytes; events are "
                f"capped at {MAX_EVENT_BYTES} (shorten prompts and schemas, or wait on fewer "
                "keys at once)",
                size=size,
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
    """Close one wait with ``entry`` (an expiry) and wake the body blocked on it."""
    rec = actor.rec
    assert rec.waiting is not None
    remaining = [interrupt_for(w) for w in rec.waiting.waits if w.slot != wait.slot]
    change = leave_wait(rec, (wait.slot,), result, remaining)
    actor.journal.add_keyed(entry)
    extra = []
    if wait.deadline is not None:
        extra.append(actor.engine.ops.disarm_timer(actor.timer(wait.deadline, wait.slot)))

    await actor.persist(change.record, change.events, journal=[entry], extra_ops=extra)
    future = actor.futures.get(wait.slot)
    if future is not None:
        future.resolve(entry)


def _result_events(signal: Signal) -> list[Event]:
    """What a signal logs when it resumes its wait (the AG-UI log carries the tool result)."""
    if isinstance(signal, ToolResult):
        content = (
            signal.content
            if isinstance(signal.content, str)
            else msgspec.json.encode(signal.content).decode()
        )
        if len(content.encode()) > _MAX_RESULT_BYTES:
            # TOOL_CALL_RESULT cannot be split: refuse rather than log an event over the
            # cap (the caller can store the content elsewhere and send a reference).
            raise InvalidSignal(
                f"the content of tool result {signal.tool_call_id!r} is "
                f"{len(content.encode())} bytes; the AG-UI event carrying it is capped at "
                f"{MAX_EVENT_BYTES} bytes",
                key=signal.tool_call_id,
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


class _Plan(NamedTuple):
    """What one signal will do, decided before anything is written."""

    kind: Literal["duplicate", "close", "buffer", "expired"]
    ns: str
    signal: Signal
    wait: Wait | None = None
    result: tuple[Event, ...] = ()


def _plan(actor: RunActor, signal: Signal, ns: str) -> _Plan:
    """Apply every R12/R13 rule to ``signal`` without writing anything."""
    rec = actor.rec
    latest = actor.journal.latest(ns)
    if rec.terminal or actor.ended:
        if latest is not None and latest.error is None:
            if same_signal(decode_signal(latest.value), signal):
                return _Plan("duplicate", ns, signal)
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
        return _Plan("duplicate", ns, signal)
    waits = rec.waiting.waits if rec.waiting is not None else []
    wait = next((w for w in waits if wait_key(w.reason, w.key) == ns), None)
    if wait is not None:
        if wait.deadline is not None and actor.engine.now() >= wait.deadline:
            return _Plan("expired", ns, signal, wait)
        check_signal(signal, wait)
        return _Plan("close", ns, signal, wait, tuple(_result_events(signal)))
    if latest is not None and latest.error is None and not _expected(rec.expected, ns):
        raise SignalConflict(
            f"run {rec.id} already took a different signal for {ns!r}", run_id=rec.id, key=ns
        )
    if _expected(rec.expected, ns):
        return _Plan("buffer", ns, signal)
    raise NotWaiting(f"run {rec.id} is not waiting for {ns!r}", run_id=rec.id, key=ns)


async def accept_signals(actor: RunActor, signals: list[tuple[Signal, str]]) -> list[bool]:
    """Take several signals all or nothing (R12, R13); each one's ``duplicate`` flag.

    Every signal is checked before any is written; those that answer waits are stored
    in one commit, which logs one segment (``RUN_STARTED``, each result, and a new
    interrupt if waits remain). A refusal of any signal refuses them all.
    """
    if len({ns for _, ns in signals}) != len(signals):
        raise InvalidSignal("one resume may answer each key only once")
    plans = [_plan(actor, signal, ns) for signal, ns in signals]
    expired = [p for p in plans if p.kind == "expired"]
    if expired:
        for plan in expired:
            assert plan.wait is not None
            await expire(actor, plan.wait)
        ns = expired[0].ns
        raise NotWaiting(f"the wait for {ns!r} expired", run_id=actor.rec.id, key=ns)
    await _apply(actor, [p for p in plans if p.kind in ("close", "buffer")])
    return [p.kind == "duplicate" for p in plans]


async def _apply(actor: RunActor, plans: list[_Plan]) -> None:
    if not plans:
        return
    rec = actor.rec
    now = actor.engine.now()
    journal = actor.journal
    entries: list[JournalEntry] = []
    results: list[Event] = []
    closed: dict[str, JournalEntry] = {}
    extra = []
    for plan in plans:
        if plan.kind == "close":
            wait = plan.wait
            assert wait is not None
            entry = JournalEntry("signal", wait.slot, value=encode_signal(plan.signal), at=now)
            closed[wait.slot] = entry
            results.extend(plan.result)
            if wait.deadline is not None:
                extra.append(actor.engine.ops.disarm_timer(actor.timer(wait.deadline, wait.slot)))
        else:
            slot = journal.next_buffer_slot(plan.ns)
            entry = JournalEntry("buffered", slot, value=encode_signal(plan.signal), at=now)
            if rec.status != "waiting" or closed:
                # While the run shows an interrupt, AG-UI allows no event but RUN_STARTED.
                results.append(CustomEvent(name="perdure.signal_buffered", value={"key": plan.ns}))
        entries.append(entry)
        journal.add_keyed(entry)
    if not closed:
        await actor.persist(events=results, journal=entries)
        return
    assert rec.waiting is not None
    remaining = [interrupt_for(w) for w in rec.waiting.waits if w.slot not in closed]
    change = leave_wait(rec, closed.keys(), results, remaining)

    await actor.persist(change.record, change.events, journal=entries, extra_ops=extra)
    # Only now: a body that went on with a signal whose commit then failed would act on
    # something the store never got (R32).
    for slot, entry in closed.items():
        future = actor.futures.get(slot)
        if future is not None:
            future.resolve(entry)


def _claim(
    actor: RunActor, spec: WaitSpec, slot: str, recorded: list[JournalEntry]
) -> JournalEntry | None:
    """A concurrent task's new wait takes an early signal (``ctx.expect``), if one fits.

    The signal moves to the wait's own slot (its buffered slot is voided) in the
    commit that follows, so a replay finds it there whichever task waits first. Early
    signals the body's own task has taken in this execution are not claimed.
    """
    journal = actor.journal
    buffered = journal.unclaimed_buffer(wait_key(spec.reason, spec.key))
    if buffered is None or not _fits(buffered, spec, slot):
        return None
    entry = JournalEntry("signal", slot, value=buffered.value, at=buffered.at)
    void = JournalEntry("void", buffered.name, at=actor.engine.now())
    journal.add_keyed(void)
    journal.add_keyed(entry)
    recorded.append(void)
    recorded.append(entry)
    return entry


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
