"""Changing the code of running runs (R37): ``ctx.patched`` and ``ctx.deprecate_patch``.

A body is replayed from its journal on every activation, so changing what it does
between journaled calls breaks every run that is already past the change (R7). A patch
lets new code branch while such runs keep the old path, as Temporal's
``workflow.patched`` does::

    if ctx.patched("new-pricing"):
        price = await ctx.step("price-v2", price_v2, order)
    else:
        price = await ctx.step("price", price_v1, order)

How ``patched(id)`` decides, the first time a body execution asks about ``id``:

- a ``patch`` marker for ``id`` at the replay cursor: the run took the new branch when
  it first got here. True; the marker is consumed.
- the run has already recorded something past this point: it got here under code
  without the patch. False, and nothing is recorded. "Past this point" is a positional
  entry still ahead of the cursor (any kind, other patches' markers included), a
  signal answering a wait the replay has not reopened yet, a wait the run is parked
  on that the replay has not reached (a run waiting on a signal has passed every line
  before its wait, though it recorded no positional entry there), or an action of a
  concurrent task the replay has not asked for yet, stored after the body's own last
  journaled call or in a lane the replay has entered (:meth:`Journal.unasked_action`).
  Only the body's own task may ask (its marker is positional).
- otherwise the run reaches this point for the first time, under code that has the
  patch. True, and a ``patch`` marker is journaled so every replay decides the same.

The decision is kept for the rest of the body's execution (:attr:`Journal.patches`),
so every ``patched(id)`` of one run answers the same, in loops too: it never flips for
a run, across replays, passivation and restarts.

The marker rides on the run's next commit (whatever the body does next: a step, an
emit, a wait, the end) instead of costing a commit of its own, which also lets
``patched`` be a plain call. That is safe: nothing the body does after the decision can
be durable without the marker, and if a crash loses both, the replay reaches the same
point with nothing recorded past it and decides True again.

Retiring a patch once no run that can take the old branch is left (``perdure check``
tells): replace ``patched(id)`` and the old branch by ``deprecate_patch(id)``, which
consumes the marker where the journal has one and otherwise records one when live (so
a rollback to the ``patched`` code still puts runs started meanwhile on the new
branch). Later the call can go entirely: a marker the code does not ask about is
skipped on replay (:meth:`Journal.take`).

Versions: a definition may declare ``version=N`` (``@rt.workflow("x", version=2)``);
every run records the version it started under (``run.version``), and ``perdure
check`` reports both, so what a deploy changes can be read per run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from perdure._errors import InvalidInput
from perdure.storage import JournalEntry, RunRecord

from ._journal import Journal
from ._steps import in_body_flow, step_of

if TYPE_CHECKING:
    from ._run_actor import RunActor

__all__ = ["behind_record", "deprecate_patch", "patched"]


def patched(actor: RunActor, patch_id: str) -> bool:
    """Whether this run takes patch ``patch_id``'s new branch (see the module docstring)."""
    journal = actor.journal
    decided = journal.patches.get(patch_id)
    if decided is not None:
        return decided
    _check(actor, patch_id, "patched")
    if _take_marker(journal, patch_id):
        return True
    if behind_record(journal, actor.rec) is not None:
        journal.patches[patch_id] = False
        return False
    _mark(actor, patch_id)
    return True


def deprecate_patch(actor: RunActor, patch_id: str) -> None:
    """The clean-up phase of ``patch_id``: only its new branch is left in the code.

    Consumes the patch's marker where this run recorded one; a run reaching this point
    for the first time records one, so that rolling back to the code with
    ``patched(patch_id)`` still puts it on the new branch.
    """
    journal = actor.journal
    if patch_id in journal.patches:
        return
    _check(actor, patch_id, "deprecate_patch")
    if _take_marker(journal, patch_id):
        return
    if behind_record(journal, actor.rec) is not None:
        journal.patches[patch_id] = False
        return
    _mark(actor, patch_id)


def behind_record(
    journal: Journal, rec: RunRecord, *, markers: bool = True, entered_only: bool = False
) -> dict[str, Any] | None:
    """The first thing the run recorded that the replaying body has not reached yet.

    ``None`` when the body is at the run's frontier: nothing it does from here on has
    been recorded. Otherwise ``{"kind", "name"}`` (and ``position`` for a positional
    entry) of what lies ahead: a journal entry, a signal for a wait not reopened yet,
    or a wait the run is parked on. ``markers=False``: patch markers ahead do not count
    (a replay skips them; they only matter to a patch's own decision).

    Actions of concurrent tasks (keyed, :meth:`Journal.unasked_action`) count too: one
    recorded in a lane the replay has entered but not asked for yet, and, for a patch
    decision, one recorded after the body's own task's last journaled call (a task it
    started past this point acted). ``entered_only`` restricts them to the former: the
    deploy check's view (``perdure check``), where a recorded action of a lane the
    replay runs but never asks for is a divergence.
    """
    entries = journal.entries
    pos = journal.pos
    while not markers and pos < len(entries) and entries[pos].kind == "patch":
        pos += 1
    if pos < len(entries):
        entry = entries[pos]
        return {"kind": entry.kind, "name": entry.name, "position": pos}
    action = journal.unasked_action(entered_only=entered_only)
    if action is not None:
        return {"kind": _ACTION_KINDS.get(action.partition(":")[0], "action"), "name": action}
    for slot, entry in journal.slots.items():
        if entry.kind == "signal" and not _reached(journal, slot):
            return {"kind": "signal", "name": slot}
    if rec.waiting is not None:
        for wait in rec.waiting.waits:
            if wait.slot and not _reached(journal, wait.slot):
                return {"kind": "wait", "name": wait.slot}
    return None


_ACTION_KINDS = {"step": "kstep", "sleep": "ksleep", "child": "kchild", "emit": "kemit"}


def _reached(journal: Journal, slot: str) -> bool:
    ns, _, n = slot.rpartition("#")
    return n.isdigit() and journal.wait_counts.get(ns, 0) >= int(n)


def _check(actor: RunActor, patch_id: object, what: str) -> None:
    if not isinstance(patch_id, str) or not 1 <= len(patch_id) <= 200:
        raise InvalidInput(f"{what}: a patch id is a string of 1-200 characters (got {patch_id!r})")
    if step_of(actor) is not None:
        raise InvalidInput(f"{what} belongs in the body, not inside a step")
    if not in_body_flow(actor):
        # Its marker is positional: from a concurrent task it would land wherever the
        # body's own task happens to be, and a replay could not find it again.
        raise InvalidInput(f"{what} is called from the body's own task, not a nursery's")


def _take_marker(journal: Journal, patch_id: str) -> bool:
    """Consume the markers at the cursor up to ``patch_id``'s, if it is among them."""
    entries = journal.entries
    pos = journal.pos
    while pos < len(entries) and entries[pos].kind == "patch":
        if entries[pos].name == patch_id:
            while journal.pos <= pos:
                journal.skip_patch()
            return True
        pos += 1
    return False


def _mark(actor: RunActor, patch_id: str) -> None:
    """Journal ``patch_id``'s marker; it commits with the run's next batch.

    The marker has no time (``at``): deciding a patch is not an action, and the body's
    clock (``ctx.now()``) must not move because of one.
    """
    rec = actor.rec
    entry = JournalEntry("patch", patch_id)
    actor.pending_ops.append(actor.engine.ops.journal(rec.id, rec.journal_len, entry))
    actor.rec = msgspec.structs.replace(rec, journal_len=rec.journal_len + 1)
    journal = actor.journal
    journal.append(entry)
    journal.tail = entry
    journal.patches[patch_id] = True
