"""Recovery at open (R26): what a killed or closed process left in flight goes on.

- Every stored timer is re-armed (durable sleeps, retry backoffs, wait deadlines, run
  timeouts).
- Runs with a cancellation in flight finish cancelling (R15): their actors serve the
  cancel without running the body.
- ``running`` runs are re-activated: their bodies replay the journal and carry on
  (after closing what a cut attempt left open, R21).
- ``pending`` runs queue for admission (child runs start at once).
- ``waiting`` runs stay passive (R14): they are counted, never loaded, so opening a
  store with a million waiting runs costs nothing.
- running and pending runs this process cannot run (their target, or the definition
  version they pinned, is not registered here) are left exactly as stored and reported:
  a warning names them and ``rt.recovered["unregistered"]`` counts them. A later
  process that registers them runs them.

Records, journals and events of in-flight runs are read in batched read transactions
(512 runs per transaction), not three per run.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from perdure.storage import RunRecord

from ._run_actor import CancelMsg
from ._spawning import spawn

if TYPE_CHECKING:
    from ._engine import Engine

__all__ = ["recover"]

log = logging.getLogger("perdure")


def recover(engine: Engine) -> dict[str, int]:
    """Re-activate what was in flight; returns counts by what was found."""
    store = engine.store
    engine.next_seq = store.last_seq() + 1
    for ref in store.timers():
        engine.timers.arm(ref)
    counts = {"running": 0, "pending": 0, "cancelling": 0, "waiting": 0}
    cancelling: set[str] = set()
    for rec, journal, events in list(store.iter_run_states(cancelling=True)):
        assert rec.cancel is not None
        cancelling.add(rec.id)
        counts["cancelling"] += 1
        actor = spawn(engine, rec, serve_only=True, journal=journal, events=events)
        actor.tell(CancelMsg(rec.cancel.reason))
    unregistered: list[RunRecord] = []
    for rec, journal, events in store.iter_run_states("running"):
        if rec.id not in cancelling:
            counts["running"] += 1
            if not _runnable(engine, rec):
                unregistered.append(rec)
                continue
            spawn(engine, rec, journal=journal, events=events)
    for rec in list(store.iter_runs("pending")):
        if rec.id in cancelling:
            continue
        counts["pending"] += 1
        if not _runnable(engine, rec):
            unregistered.append(rec)
            continue
        if rec.parent_id is not None:
            spawn(engine, rec)
        else:
            engine.admission.queue(rec.id)
    # Waiting runs stay passive: they are counted, never loaded (R14, R26).
    counts["waiting"] = store.count_waiting()
    if unregistered:
        counts["unregistered"] = len(unregistered)
        log.warning(
            "perdure: %d unfinished runs are left as stored: their target or version is not "
            "registered here (%s)",
            len(unregistered),
            ", ".join(
                f"{r.id} {r.target}" + ("" if r.version is None else f" v{r.version}")
                for r in unregistered[:10]
            ),
        )
    if any(counts.values()):
        log.info(
            "perdure: recovered %(running)d running, %(pending)d pending, "
            "%(cancelling)d cancelling; %(waiting)d waiting runs stay passive",
            counts,
        )
    return counts


def _runnable(engine: Engine, rec: RunRecord) -> bool:
    """Whether this process registers the run's target and the version it pinned."""
    definition = engine.definition(rec.target)
    return definition is not None and (
        definition.versions is None or rec.version in definition.versions
    )
