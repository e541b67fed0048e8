"""Live actors: spawning them, and activating passive runs when something arrives.

A run has a live actor while its body runs, or while it serves a message; otherwise it
is *passive*: its state is only in LMDB (R14). Whatever must reach a passive run
activates it here: a signal or a cancellation (:func:`live_actor`), its timer
(:func:`timer_due`), a child's end (:func:`wake_parent`), or a free ``max_running``
slot for a queued pending run (:func:`start_queued`). Activation rebuilds the actor
from storage and replays the body's journal.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from perdure._errors import PerdureError
from perdure.agui import Event
from perdure.storage import JournalEntry, RunRecord, TimerRef

from ._run_actor import RunActor

if TYPE_CHECKING:
    from ._engine import Engine

__all__ = ["live_actor", "spawn", "start_queued", "timer_due", "wake_parent"]


def spawn(
    engine: Engine,
    rec: RunRecord,
    *,
    serve_only: bool = False,
    fresh: bool = False,
    journal: list[JournalEntry] | None = None,
    events: list[Event] | None = None,
) -> RunActor:
    """Start the actor of ``rec`` (``fresh``: just created, nothing to read back).

    ``journal`` and ``events`` are the run's, when already read (recovery reads them in
    batches). ``serve_only`` actors answer messages without running the body.
    Refused (:class:`~perdure.PerdureError`, nothing started) once the runtime is
    closing: its actors are being stopped, and the run is recovered at the next open.
    """
    if engine.closing:
        raise PerdureError("the runtime is closing: use `async with rt:`", run_id=rec.id)
    if fresh:
        journal, events = [], []
    elif journal is None:
        journal = engine.store.journal(rec.id)
    actor = RunActor(engine, rec, journal, serve_only=serve_only, events=events)
    engine.supervisor.spawn(actor, parent_id=rec.parent_id)
    return actor


async def live_actor(engine: Engine, rec: RunRecord) -> RunActor:
    """The run's live actor, activating it (by replay) if it is passive."""
    supervisor = engine.supervisor
    while True:
        actor = supervisor.get(rec.id)
        if isinstance(actor, RunActor):
            return actor
        stale = supervisor.stopping(rec.id)
        if stale is None:
            break
        await stale.stopped.wait()
    fresh = engine.store.get_run(rec.id) or rec
    return spawn(engine, fresh, serve_only=not engine.recover or fresh.terminal)


def start_queued(engine: Engine, run_id: str) -> bool:
    """Admission granted a slot to a queued pending run: start it (False if it cannot)."""
    if engine.closing or engine.supervisor.get(run_id) is not None:
        return False
    rec = engine.store.get_run(run_id)
    if rec is None or rec.status != "pending":
        return False
    spawn(engine, rec)
    return True


def timer_due(engine: Engine, ref: TimerRef) -> None:
    """A stored timer fell due: activate its run if it is passive (a live one wakes itself)."""
    supervisor = engine.supervisor
    run_id = ref.run_id
    if engine.closing or not engine.recover or supervisor.get(run_id) is not None:
        return
    if supervisor.stopping(run_id) is not None:
        engine.timers.arm(ref, int(engine.now() * 1000) + 10)  # once it has stopped
        return
    rec = engine.store.get_run(run_id)
    if rec is None or rec.terminal:
        engine.nursery.start_soon(engine.drop_timer, ref)
        return
    if rec.status == "pending":
        return
    spawn(engine, rec)


def wake_parent(engine: Engine, actor: RunActor) -> None:
    """A child reached a terminal status: wake its passivated parent awaiting it.

    A ``waiting`` parent is woken too: one task of its body may wait on a signal while
    another awaits this child (a step-graph branch beside an approval). Its replay
    re-attaches to the open waits and the awaiting task goes on.
    """
    parent_id = actor.rec.parent_id
    if parent_id is None or engine.closing or not engine.recover:
        return
    supervisor = engine.supervisor
    if supervisor.get(parent_id) is not None or supervisor.stopping(parent_id) is not None:
        return
    parent = engine.store.get_run(parent_id)
    if parent is not None and parent.status in ("running", "waiting") and parent.cancel is None:
        spawn(engine, parent)
