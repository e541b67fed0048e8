"""A run's journal: what its body recorded, and the replay cursor over it (R6, R7).

Two kinds of entries live in one stored sequence (``journal`` database, by position):

- **Positional** entries (:data:`POSITIONAL`: steps, retries, emits, sleeps, child
  starts, expects, patch markers) are recorded in the order the body performs them.
  A replayed body asks for them in the same order; the cursor hands back the entry at
  its position, and asking for a different kind or name there is non-determinism
  (:class:`~perdure.NonDeterminismError`, R7).
- **Keyed** entries (:data:`KEYED`: signals, buffered early signals, voided signals)
  are found by *slot*, never by position: when a signal arrives is decided outside the
  body and cannot be replayed, so the cursor skips them. A slot is ``reason:key#n``,
  the n-th wait the body's own task opened on that key; it numbers its waits as it
  opens them (:meth:`Journal.next_slot`), deterministically, so replay finds the same
  slots. Waits of concurrent tasks are numbered per lane instead, ``reason@LANE|key#n``
  (:meth:`Journal.lane_wait_slot`; ``reason@|key#n`` outside any lane), for the reason
  keyed actions are (below): a signal a task took is the one it finds on replay,
  whichever task reaches its wait first.

Concurrent actions journal by key, the same way signals do. Within one body, the order
in which *concurrent* tasks reach their journaled calls is up to trio's scheduler (it
deliberately varies it), so positions cannot identify them. The rule is by task, so
it is the same on every replay: actions of the body's own task (the actor's main
task) are positional, exactly as before, and cost nothing more; actions of any other
task (one the body started in a nursery) are recorded as **keyed actions**
(:data:`ACTIONS`) whose slot is ``KIND:NAME#n``, the n-th such action with that name
(``step:fetch#1``). A step's name is chosen by the code, so the same call finds the
same slot on replay whichever task finished first; steps that may run at the same
time must therefore have distinct names (the runtime refuses a second one while the
first is in flight). Actions that have no name of their own (sleeps, child starts,
emits) are named by their kind, so in concurrent tasks they should run in a **lane**
(``ctx.lane(name)``): a lane names one concurrent strand of the body and prefixes
the slots of what runs in it (``KIND:LANE|NAME#n``), which makes their occurrence
numbers those of one strand, deterministic again. Step graphs run every concurrent
branch in a lane named after its node and name steps after node paths.

Non-determinism stays detectable: the sequential (main-task) part of the body keeps
its positions and is checked entry by entry (R7); a lane that ends normally must have
asked for every slot recorded under it, else the body diverged
(:meth:`Journal.check_lane` raises :class:`~perdure.NonDeterminismError`). Slots of a
lane that a replay never enters (the losers of a decided race) are simply unused.
Recorded keyed actions a replay has not asked for yet are also progress for a patch
decision and the deploy check (:meth:`Journal.unasked_action`, :mod:`._versioning`).

Time is journaled too: every entry carries ``at``, the runtime clock when it was
recorded, and :attr:`Journal.time` is the latest ``at`` the body has consumed (plus
the due times of durable sleeps it slept through). ``ctx.now()`` reads it, so the time
a body sees is the same on every replay, as Temporal's ``workflow.now()`` is.

Patch markers (``patch`` entries, R37, :mod:`._versioning`) are positional, but a
marker the code no longer asks about is skipped instead of being a mismatch: it
records that the run took a patch's new branch, and code without the ``patched()``
call runs that branch unconditionally. That is what lets a patch be retired
(``patched`` -> ``deprecate_patch`` -> nothing) while runs that recorded it are alive.
:attr:`Journal.patches` holds each patch's decision for this execution of the body.
"""

from __future__ import annotations

import bisect
from typing import Final, Literal, get_args

from perdure._errors import NonDeterminismError
from perdure.storage import JournalEntry

__all__ = [
    "ACTIONS",
    "KEYED",
    "POSITIONAL",
    "EntryKind",
    "Journal",
    "KeyedActions",
    "action_slot",
    "wait_ns",
]

EntryKind = Literal[
    "step",
    "retry",
    "emit",
    "sleep",
    "child",
    "expect",
    "patch",
    "signal",
    "buffered",
    "void",
    "kstep",
    "kretry",
    "ksleep",
    "kchild",
    "kemit",
]
"""Every kind of journal entry (the ``kind`` field of a stored :class:`JournalEntry`)."""

KEYED: Final[frozenset[str]] = frozenset({"signal", "buffered", "void"})
"""Kinds found by slot, not position: when a signal arrives is not replayable."""

ACTIONS: Final[frozenset[str]] = frozenset({"kstep", "kretry", "ksleep", "kchild", "kemit"})
"""Keyed actions: a step, retry, sleep, child start or emit of a task other than the
body's own, found by its slot (``step:NAME#n``). A ``kretry`` shares its step's slot."""

POSITIONAL: Final[frozenset[str]] = frozenset(get_args(EntryKind)) - KEYED - ACTIONS
"""Kinds found at the replay cursor, in the order the body recorded them."""


_BY_SLOT: Final[frozenset[str]] = KEYED | ACTIONS


def action_slot(kind: str, lane: str | None, name: str, n: int) -> str:
    """The slot of the ``n``-th keyed ``kind`` action named ``name`` in ``lane``.

    ``kind`` is the action (``step``, ``sleep``, ``child``, ``emit``), not the stored
    entry kind. Lanes never contain ``|``, so the first ``|`` ends the lane (a name
    with a ``|`` outside any lane gets an empty lane, which is never checked).
    """
    return f"{_namespace(kind, lane, name)}#{n}"


def _namespace(kind: str, lane: str | None, name: str) -> str:
    if lane is not None:
        return f"{kind}:{lane}|{name}"
    return f"{kind}:|{name}" if "|" in name else f"{kind}:{name}"


def wait_ns(slot: str) -> str:
    """The namespaced key (``reason:key``) a wait slot belongs to.

    ``reason:key#n`` (a wait of the body's own task, or a buffered signal) or
    ``reason@LANE|key#n`` (a concurrent task's, :meth:`Journal.lane_wait_slot`).
    """
    head = slot.rpartition("#")[0]
    at = head.find("@")
    if at != -1:
        colon = head.find(":")
        if colon == -1 or at < colon:
            return f"{head[:at]}:{head[at + 1 :].partition('|')[2]}"
    return head


def _wait_lane(ns: str) -> str | None:
    """The lane of a concurrent task's wait namespace (``reason@LANE|key``), if any."""
    at = ns.find("@")
    if at == -1 or -1 < ns.find(":") < at:
        return None
    lane = ns[at + 1 :].partition("|")[0]
    return lane or None


def _lane_of(slot: str) -> str | None:
    head = slot.partition(":")[2]
    lane, bar, _ = head.partition("|")
    return lane if bar and lane else None


class Journal:
    """The recorded entries of one run and where its (re)running body has got to.

    ``entries`` are the positional entries in order; ``pos`` is the cursor (entries
    before it have been handed back to the body). ``slots`` maps a slot to its keyed
    entry; ``void`` entries remove one.
    """

    __slots__ = (
        "entries",
        "has_children",
        "keyed",
        "newest",
        "patches",
        "pos",
        "run_id",
        "slot_count",
        "slots",
        "tail",
        "time",
        "wait_counts",
    )

    def __init__(self, run_id: str, stored: list[JournalEntry], start_time: float) -> None:
        self.run_id = run_id
        self.entries: list[JournalEntry] = []
        self.slots: dict[str, JournalEntry] = {}
        self.slot_count: dict[str, int] = {}
        self.wait_counts: dict[str, int] = {}
        self.newest: dict[str, str] | None = None
        """The slot of each key's last signal, once a concurrent task's wait took one
        (made then: before, the highest slot is the last, see :meth:`latest`)."""
        self.keyed: KeyedActions | None = None
        """The keyed actions, made on first use: a body without concurrent tasks never
        pays for them (a hundred thousand parked runs keep their journals in memory)."""
        self.has_children = False
        self.patches: dict[str, bool] = {}
        """Each patch id's decision in this execution of the body (R37): it never flips."""
        self.pos = 0
        self.time = start_time
        self.tail: JournalEntry | None = stored[-1] if stored else None
        """The last entry stored (any kind): a restart drops it if it is a failed step."""
        for entry in stored:
            if entry.kind in _BY_SLOT:
                self.add_keyed(entry)
                if entry.kind in ACTIONS and entry.kind != "kretry":
                    # Where it lies among the positional entries (behind_record).
                    keyed = self._keyed()
                    keyed.loaded.append(entry.name)
                    keyed.loaded_at.append(len(self.entries))
            else:
                self.entries.append(entry)
                if entry.kind == "child":
                    self.has_children = True

    # -- the cursor -------------------------------------------------------------------------

    @property
    def replaying(self) -> bool:
        """Whether the cursor is still behind the last recorded positional entry."""
        return self.pos < len(self.entries)

    def take(self, kind: str, name: str) -> JournalEntry | None:
        """The recorded entry at the cursor (moving past it), or ``None`` past the end.

        Raises :class:`~perdure.NonDeterminismError` if the entry recorded there is
        not a ``kind`` named ``name``.
        """
        if self.pos >= len(self.entries):
            return None
        entry = self.entries[self.pos]
        if entry.kind != kind or entry.name != name:
            if entry.kind == "patch":
                # R37: the marker of a patch whose patched() call is gone: the code
                # now runs the branch the marker says this run took.
                self.skip_patch()
                return self.take(kind, name)
            raise NonDeterminismError(
                f"run {self.run_id}: replay asked for {kind} {name!r} at position {self.pos}, "
                f"but the journal recorded {entry.kind} {entry.name!r}",
                run_id=self.run_id,
                position=self.pos,
                expected={"kind": entry.kind, "name": entry.name},
                got={"kind": kind, "name": name},
            )
        self.pos += 1
        if entry.at is not None and entry.at > self.time:
            self.time = entry.at
        return entry

    def peek(self) -> JournalEntry | None:
        """The recorded entry at the cursor, without consuming it (past patch markers)."""
        while self.pos < len(self.entries):
            entry = self.entries[self.pos]
            if entry.kind != "patch":
                return entry
            self.skip_patch()
        return None

    def skip_patch(self) -> None:
        """Consume the patch marker at the cursor: that patch is on for this run (R37)."""
        self.patches.setdefault(self.entries[self.pos].name, True)
        self.skip()

    def skip(self) -> None:
        """Consume the entry :meth:`peek` returned."""
        entry = self.entries[self.pos]
        self.pos += 1
        if entry.at is not None and entry.at > self.time:
            self.time = entry.at

    def append(self, entry: JournalEntry) -> None:
        """Record a new positional entry; the cursor moves past it."""
        self.entries.append(entry)
        self.pos = len(self.entries)
        if entry.kind == "child":
            self.has_children = True
        if entry.at is not None and entry.at > self.time:
            self.time = entry.at

    def advance_time(self, when: float) -> None:
        """The body has seen time ``when`` pass (a durable sleep or a signal's arrival)."""
        if when > self.time:
            self.time = when

    def rewind(self) -> None:
        """Back to the start, for a restart of the body (R18): everything replays."""
        self.pos = 0
        self.wait_counts.clear()
        self.patches.clear()
        if self.keyed is not None:
            self.keyed.asked.clear()
            self.keyed.asked_in.clear()

    def carry_over(self, old: Journal) -> None:
        """Take over how far ``old`` (the same run's journal before a rollback) had got."""
        self.pos = min(old.pos, len(self.entries))
        self.wait_counts = old.wait_counts
        if old.keyed is not None:
            keyed = self._keyed()
            keyed.asked = old.keyed.asked
            keyed.asked_in = old.keyed.asked_in

    def drop_last(self, entry: JournalEntry) -> None:
        """Forget ``entry`` if it is the last positional one (a restart drops a failed step)."""
        if self.entries and self.entries[-1] is entry:
            self.entries.pop()
            self.pos = min(self.pos, len(self.entries))
        elif self.keyed is not None and self.keyed.actions.get(entry.name) is entry:
            del self.keyed.actions[entry.name]
            # Still counted in recorded_in: the log calls before it were stored, and
            # its re-run records the same slot again (counted once, _add_action).
            self.keyed.dropped.add(entry.name)
        if self.tail is entry:
            self.tail = None

    # -- keyed entries --------------------------------------------------------------------

    def next_slot(self, ns: str) -> str:
        """The slot of the body's next wait on namespaced key ``ns`` (``ns#n``).

        For waits of the body's own task: they alone are counted here, in the order
        that task reaches them. Waits of concurrent tasks take :meth:`lane_wait_slot`.
        """
        n = self.wait_counts.get(ns, 0) + 1
        self.wait_counts[ns] = n
        return f"{ns}#{n}"

    def lane_wait_slot(self, reason: str, key: str, lane: str | None) -> str:
        """The slot of the next wait of a concurrent task in ``lane`` on ``reason:key``.

        ``reason@LANE|key#n``: the n-th wait on that key in that lane (``reason@|key#n``
        for a task outside any lane), so which wait a recorded signal answered does
        not depend on which task reached its wait first (R6). A reason is a plain
        word, so ``@`` right after it tells these slots from the body's own
        (``reason:key#n``), whose names are unchanged.
        """
        return self.next_slot(f"{reason}@{lane or ''}|{key}")

    def unclaimed_buffer(self, ns: str) -> JournalEntry | None:
        """The first early (buffered) signal of ``ns`` the body's own task has not taken.

        A concurrent task's wait claims it (recording it at its own slot and voiding
        the buffered one), so the claim replays whichever task gets there first.
        """
        last = self.slot_count.get(ns, 0)
        for n in range(self.wait_counts.get(ns, 0) + 1, last + 1):
            entry = self.slots.get(f"{ns}#{n}")
            if entry is not None and entry.kind == "buffered":
                return entry
        return None

    def add_keyed(self, entry: JournalEntry) -> None:
        """Index a keyed entry by its slot; a ``void`` entry removes the slot's entry."""
        if entry.kind in ACTIONS:
            self._add_action(entry, loading=True)
            return
        if entry.kind == "void":
            self.slots.pop(entry.name, None)
            return
        self.slots[entry.name] = entry
        head, _, n = entry.name.rpartition("#")
        ns = wait_ns(entry.name)
        if ns == head:  # a slot of the body's own task (or a buffered signal)
            count = int(n)
            if count > self.slot_count.get(ns, 0):
                self.slot_count[ns] = count
            if self.newest is not None:
                self.newest[ns] = entry.name
        else:
            if self.newest is None:
                self.newest = {}
            self.newest[ns] = entry.name

    def slot(self, slot: str) -> JournalEntry | None:
        return self.slots.get(slot)

    def latest(self, ns: str) -> JournalEntry | None:
        """The signal recorded last for namespaced key ``ns`` (``None`` if it was voided).

        Until a concurrent task's wait takes a signal, the body's own waits are the
        only ones and the last signal is that of the highest slot.
        """
        newest = self.newest
        if newest is not None and ns in newest:
            return self.slots.get(newest[ns])
        count = self.slot_count.get(ns)
        return None if count is None else self.slots.get(f"{ns}#{count}")

    def next_buffer_slot(self, ns: str) -> str:
        """The slot an early (buffered) signal for ``ns`` takes: after every recorded one."""
        return f"{ns}#{self.slot_count.get(ns, 0) + 1}"

    # -- keyed actions (concurrent tasks) -------------------------------------------------

    def _keyed(self) -> KeyedActions:
        keyed = self.keyed
        if keyed is None:
            keyed = self.keyed = KeyedActions()
        return keyed

    def action(self, kind: str, lane: str | None, name: str) -> str:
        """Number the next keyed ``kind`` action named ``name`` in ``lane``; its slot.

        The slot counts as asked: a lane that ends without asking for a recorded slot
        diverged from its journal (:meth:`check_lane`).
        """
        ns = _namespace(kind, lane, name)
        n = self.wait_counts.get(ns, 0) + 1
        self.wait_counts[ns] = n
        slot = f"{ns}#{n}"
        keyed = self._keyed()
        keyed.asked.add(slot)
        keyed.asked_in[lane] = keyed.asked_in.get(lane, 0) + 1
        return slot

    def lane_progress(self, lane: str | None) -> tuple[int, int]:
        """How many keyed actions ``lane`` has asked for in this execution of the body,
        and how many it has recorded (ever). ``None``: tasks outside any lane."""
        keyed = self.keyed
        if keyed is None:
            return 0, 0
        return keyed.asked_in.get(lane, 0), keyed.recorded_in.get(lane, 0)

    def next_action(self, kind: str, lane: str | None, name: str) -> str:
        """The slot :meth:`action` will give next, without taking it."""
        ns = _namespace(kind, lane, name)
        return f"{ns}#{self.wait_counts.get(ns, 0) + 1}"

    def recorded(self, slot: str) -> JournalEntry | None:
        """The keyed action recorded at ``slot`` (the body's clock moves to its time)."""
        keyed = self.keyed
        entry = keyed.actions.get(slot) if keyed is not None else None
        if entry is not None and entry.at is not None and entry.at > self.time:
            self.time = entry.at
        return entry

    def peek_action(self, slot: str) -> JournalEntry | None:
        """The keyed action recorded at ``slot``, without moving the body's clock."""
        keyed = self.keyed
        return keyed.actions.get(slot) if keyed is not None else None

    def retried(self, slot: str) -> JournalEntry | None:
        """The latest ``kretry`` recorded for the keyed step at ``slot``."""
        keyed = self.keyed
        return keyed.retries.get(slot) if keyed is not None else None

    def record_action(self, entry: JournalEntry) -> None:
        """Index a keyed action this activation has just recorded."""
        self._add_action(entry, loading=False)
        if entry.at is not None and entry.at > self.time:
            self.time = entry.at

    def _add_action(self, entry: JournalEntry, *, loading: bool) -> None:
        keyed = self._keyed()
        if entry.kind == "kretry":
            keyed.retries[entry.name] = entry
        else:
            if entry.name in keyed.dropped:
                keyed.dropped.discard(entry.name)
            elif entry.name not in keyed.actions:
                lane = _lane_of(entry.name)
                keyed.recorded_in[lane] = keyed.recorded_in.get(lane, 0) + 1
            keyed.actions[entry.name] = entry
            if entry.kind == "kchild":
                self.has_children = True
        if loading:
            lane = _lane_of(entry.name)
            if lane is not None:
                keyed.lanes.setdefault(lane, []).append(entry.name)

    def unasked_action(self, *, entered_only: bool = False) -> str | None:
        """A keyed action recorded before this activation, past the body's point, that
        this execution has not asked for; ``None`` if there is none.

        Past the point: recorded in a lane this execution has entered (that strand
        had got further than it has now), or, unless ``entered_only``, recorded after
        the positional entry the cursor is at (the body's own task had got past its
        last journaled call, and a task it starts later had acted). The latter is what
        a patch decision needs (R37: a run that recorded anything beyond keeps the old
        branch, the safe side); the deploy check takes the former only, because slots
        of lanes a replay never enters (a decided race's losers) are simply unused.
        """
        keyed = self.keyed
        if keyed is None or not keyed.loaded:
            return None
        asked = keyed.asked
        actions = keyed.actions
        start = len(keyed.loaded)
        if not entered_only:
            start = bisect.bisect_left(keyed.loaded_at, self.pos)
            for slot in keyed.loaded[start:]:
                if slot not in asked and slot in actions:
                    return slot
        entered = {_lane_of(slot) for slot in asked}
        entered.update(_wait_lane(ns) for ns in self.wait_counts)
        entered.discard(None)
        if not entered:
            return None
        for slot in keyed.loaded[:start]:
            if slot not in asked and slot in actions and _lane_of(slot) in entered:
                return slot
        return None

    def check_lane(self, lane: str) -> None:
        """Raise :class:`NonDeterminismError` if ``lane`` left a recorded slot unasked."""
        keyed = self.keyed
        if keyed is None:
            return
        for slot in keyed.lanes.get(lane, ()):
            if slot not in keyed.asked:
                raise NonDeterminismError(
                    f"run {self.run_id}: lane {lane!r} ended without asking for {slot!r}, "
                    "which its journal recorded: the body took another path than before",
                    run_id=self.run_id,
                    lane=lane,
                    slot=slot,
                )


class KeyedActions:
    """A journal's keyed actions (:data:`ACTIONS`): by slot, and by lane for the check."""

    __slots__ = (
        "actions",
        "asked",
        "asked_in",
        "dropped",
        "lanes",
        "loaded",
        "loaded_at",
        "recorded_in",
        "retries",
    )

    def __init__(self) -> None:
        self.actions: dict[str, JournalEntry] = {}
        """``kstep``, ``ksleep``, ``kchild``, ``kemit`` entries by slot."""
        self.retries: dict[str, JournalEntry] = {}
        """The latest ``kretry`` of each keyed step slot."""
        self.asked: set[str] = set()
        """Action slots the body asked for in this activation."""
        self.asked_in: dict[str | None, int] = {}
        """How many of :attr:`asked` each lane asked for (``None``: outside any lane)."""
        self.recorded_in: dict[str | None, int] = {}
        """How many of :attr:`actions` each lane recorded (raw logs of concurrent tasks
        count their calls from a lane's last recorded action, :mod:`._logs`)."""
        self.dropped: set[str] = set()
        """Slots of failed steps a restart dropped (:meth:`Journal.drop_last`)."""
        self.lanes: dict[str, list[str]] = {}
        """Slots recorded before this activation, by lane (:meth:`Journal.check_lane`)."""
        self.loaded: list[str] = []
        """Action slots recorded before this activation, in the order they were stored."""
        self.loaded_at: list[int] = []
        """For each of :attr:`loaded`, how many positional entries were stored before it."""
