"""Delivering signals and cancellations to runs, and waiting for their end.

Signals and cancellations are messages to the run's actor (R12, R15); a passive run
is activated to take one (R14). The actor answers each message by setting its
``done`` event, with an error if it refused it, so no caller is ever left waiting on
a message (R31). Waiting for a run's end parks on the change hub's end channel, which
fires once, with the terminal record.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import trio

from perdure._errors import (
    InvalidSignal,
    NotWaiting,
    PerdureError,
    PermissionDenied,
    RunNotActive,
    RunNotFound,
    SignalConflict,
)
from perdure.storage import Owner, RunRecord

from ._results import Cancelled
from ._run_actor import CancelMsg, RunActor, SignalMsg
from ._signals import ExternalEvent, Resumed, Signal, wait_key
from ._spawning import live_actor, spawn

if TYPE_CHECKING:
    from ._engine import Engine

__all__ = ["cancel", "cancel_children", "publish", "resume", "wait_run"]


async def resume(engine: Engine, run_id: str, signals: list[tuple[Signal, str]]) -> list[Resumed]:
    """Deliver checked signals (with their namespaced keys) to ``run_id``'s actor, all or
    none."""
    rec = engine.store.get_run(run_id)
    if rec is None:
        raise RunNotActive(f"no run {run_id!r}", run_id=run_id)
    if rec.status == "pending":
        key = signals[0][1]
        raise NotWaiting(f"run {run_id} has not started yet", run_id=run_id, key=key)
    message = SignalMsg(signals)
    actor = await live_actor(engine, rec)
    actor.tell(message)
    await message.done.wait()
    if message.error is not None:
        raise message.error
    return [
        Resumed(duplicate=duplicate, run_id=run_id, key=key)
        for (_, key), duplicate in zip(signals, message.duplicates, strict=True)
    ]


async def publish(engine: Engine, event: ExternalEvent, key: str, owner: Owner) -> list[str]:
    """Deliver ``event`` to every run of ``owner`` waiting on it; the ids that took it."""
    store = engine.store
    taken: list[str] = []
    after = 0
    while page := store.owner_runs(owner, after, 1000):
        for seq, run_id in page:
            after = seq
            rec = store.get_run(run_id)
            if rec is None or rec.waiting is None:
                continue
            if any(wait_key(w.reason, w.key) == key for w in rec.waiting.waits):
                try:
                    await resume(engine, run_id, [(event, key)])
                except (NotWaiting, RunNotActive, SignalConflict, InvalidSignal, PermissionDenied):
                    continue  # this run refuses it; the others still get it
                taken.append(run_id)
    return taken


async def cancel(engine: Engine, rec: RunRecord, reason: str) -> Cancelled:
    """Cancel a non-terminal run (its descendants first) and return its final record."""
    run_id = rec.id
    supervisor = engine.supervisor
    while True:
        actor = supervisor.get(run_id)
        if actor is not None:
            break
        stale = supervisor.stopping(run_id)
        if stale is None:
            engine.admission.unqueue(run_id)
            actor = spawn(engine, rec, serve_only=True)
            break
        await stale.stopped.wait()
        fresh = engine.store.get_run(run_id)
        if fresh is None or fresh.terminal:
            return Cancelled(cancelled=False, run=fresh or rec)
        rec = fresh
    message = CancelMsg(reason)
    actor.tell(message)
    await message.done.wait()
    if message.error is not None:
        raise message.error
    final = engine.store.get_run(run_id)
    return Cancelled(cancelled=message.cancelled, run=final or rec)


async def cancel_children(engine: Engine, run_id: str, reason: str) -> None:
    """Cancel every non-terminal child of ``run_id`` (each cancels its own first)."""
    children = engine.store.children(run_id)
    if not children:
        return
    async with trio.open_nursery() as nursery:
        for child in children:
            nursery.start_soon(_cancel_quietly, engine, child, reason)


async def _cancel_quietly(engine: Engine, run_id: str, reason: str) -> None:
    rec = engine.store.get_run(run_id)
    if rec is None or rec.terminal:
        return
    with contextlib.suppress(RunNotFound):
        await cancel(engine, rec, reason)


async def wait_run(engine: Engine, run_id: str) -> RunRecord:
    """Park until ``run_id`` is terminal; its terminal record."""
    hub = engine.hub
    store = engine.store
    while True:
        end = hub.watch_end(run_id)
        try:
            actor = engine.supervisor.get(run_id)
            # The staged record runs ahead of the stored one: if it is not terminal,
            # the stored one is not either, and the final commit will notify us.
            if not (isinstance(actor, RunActor) and not actor.rec.terminal):
                rec = store.get_run(run_id)
                if rec is None:
                    raise RunNotFound(f"no run {run_id!r}", run_id=run_id)
                if rec.terminal:
                    return rec
            await end.event.wait()
        finally:
            hub.release_end(run_id, end)
        if end.rec is not None:
            return end.rec
        if end.error is not None:
            raise end.error
        if engine.closing:
            raise PerdureError("the runtime closed while waiting")
