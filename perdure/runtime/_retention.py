"""Keeping a long-lived store bounded (R38): retention rules and purges of run trees.

A store under continuous load grows by every run it records (~2.5 KB for a 3-step
run). :class:`Retention` says how long terminal runs are kept, per terminal status: by
age (seconds since the run finished) and/or by count (at most N of that status, the
newest kept). ``rt.purge(before=, statuses=)`` removes terminal runs on demand.

What is purged is always a whole **tree** (a top-level run and every descendant), and
only when every run of the tree is terminal: a finished child of a run still going is
kept with its root, and a tree is judged by its root (its status, its end, its place in
the count); its descendants go with it whatever their own status. A purged run is gone
as if it never existed: ``get`` raises :class:`~perdure.RunNotFound`, it leaves every
listing, and its idempotency key is free again (a later start with the same key, or the
same caller-chosen run id, creates a new run). See :mod:`perdure.storage._purge` for
what exactly is deleted and what is left on purpose (cron fire keys, batch records).

How a pass runs beside the runs' own commits:

- Candidates are read on the trio thread in slices of 64 runs (~1 ms each, a
  checkpoint between two), in short read transactions: no long reader pins pages
  (LMDB only reuses a freed page once no reader still sees it, which is what lets a
  store stop growing). Not in a worker thread: py-lmdb hands the GIL back at every
  cursor step, and handing it back and forth with another thread cost a third more
  than the reads themselves. A count rule's boundary (N keys walked back every pass)
  is walked the same way, in slices of 4,096 keys: in a worker thread its 10,000
  GIL hand-offs a pass cost the runs ~10% more CPU (``bench/retention.py``). The
  sweep for timers of purged runs too, a bounded part per pass (see
  :meth:`RetentionService._sweep_timers`). The one-time filling of the end index runs
  in a worker thread.
- Deletes go through the one writer like every commit, a page of 512 runs at a time
  (about 6,700 deletes for 3-step runs, in batches of whole runs), submitted together
  and awaited before the next page is read. Never reading while they commit: py-lmdb
  takes the GIL back after every single delete, and a transaction of deletes that
  competes with a thread running Python crawls. A page is what one group commit
  under load must take for the purge to keep pace with runs that end (with 1,000 runs
  in flight about 200 end per group commit); it lengthens that commit by ~10-25 ms
  (``bench/retention.py`` measures the commit latency it causes).
- Under virtual time (trio's ``MockClock``) the worker-thread walks run on the trio
  thread too, like commits do, so a test's clock cannot jump over them.

Candidates are read from the ``f`` index (top-level runs by end time, per status): an
age rule walks it from the earliest end and stops at the first run that ended after the
cutoff; a count rule walks back ``N`` keys from the latest end to find its boundary
(keys only: a few ms for N = 10,000). Stores written before that index existed are
indexed once, by the first pass or purge. Passes are serialized; an explicit purge
waits for a background pass and the other way round.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import trio

from perdure._errors import InvalidInput, StorageError
from perdure.storage import TERMINAL, Op, Purger
from perdure.storage._purge import CHUNK_OPS

if TYPE_CHECKING:
    from ._engine import Engine

__all__ = ["Retention", "RetentionService"]

log = logging.getLogger("perdure")

T = TypeVar("T")
_PAGE = 512
"""Runs whose deletes are committed together (one group commit under load)."""
_SLICE = 64
"""Runs read between two checkpoints of the trio thread (~1 ms)."""
_WALK = 4096
"""Keys of a count rule's boundary walked between two checkpoints (~1 ms)."""
_TIMER_WALK = 4096
"""Timer keys a slice of a timer sweep walks (between two checkpoints)."""
_TIMER_SLICES = 4
"""Slices of the timer sweep a background pass walks (16,384 keys)."""
_STATUSES = ("completed", "failed", "cancelled")


@dataclass(frozen=True)
class Retention:
    """How long terminal runs are kept (R38); ``None`` (or ``math.inf``) keeps them forever.

    ``completed``, ``failed``, ``cancelled``: seconds after a run tree's root finished
    before the tree is purged. ``max_completed``, ``max_failed``, ``max_cancelled``:
    keep at most this many run trees whose root has that status (the newest). Both
    kinds may be combined: a tree goes when either rule says so. ``interval``: seconds
    between two background passes. Example::

        perdure.Runtime("data/", retention=perdure.Retention(
            completed=7 * 86400, failed=30 * 86400, max_completed=1_000_000))
    """

    completed: float | None = None
    failed: float | None = None
    cancelled: float | None = None
    max_completed: int | None = None
    max_failed: int | None = None
    max_cancelled: int | None = None
    interval: float = 10.0

    def __post_init__(self) -> None:
        for status in _STATUSES:
            age = getattr(self, status)
            if age is not None and (
                isinstance(age, bool) or not isinstance(age, int | float) or not age >= 0
            ):
                raise InvalidInput(f"Retention {status}= must be seconds >= 0 (got {age!r})")
            if age is not None and math.isinf(age):
                # An infinite age keeps runs for ever, as None does (it must never be
                # read as "no bound", which would purge everything).
                object.__setattr__(self, status, None)
            limit = getattr(self, f"max_{status}")
            if limit is not None and (
                isinstance(limit, bool) or not isinstance(limit, int) or limit < 0
            ):
                raise InvalidInput(
                    f"Retention max_{status}= must be an integer >= 0 (got {limit!r})"
                )
        interval = self.interval
        if (
            isinstance(interval, bool)
            or not isinstance(interval, int | float)
            or not 0 < interval < math.inf
        ):
            raise InvalidInput(f"Retention interval= must be seconds > 0 (got {interval!r})")

    def age(self, status: str) -> float | None:
        value: float | None = getattr(self, status)
        return value

    def limit(self, status: str) -> int | None:
        value: int | None = getattr(self, f"max_{status}")
        return value


def check_purge_args(before: object, statuses: object) -> tuple[float, tuple[str, ...]]:
    """``rt.purge``'s arguments, checked; ``before=None`` is no bound."""
    if before is None:
        cutoff = math.inf
    elif isinstance(before, bool) or not isinstance(before, int | float) or before != before:
        raise InvalidInput(f"before must be a timestamp (seconds since the epoch), not {before!r}")
    else:
        cutoff = float(before)
    if isinstance(statuses, str):
        statuses = (statuses,)
    if not isinstance(statuses, list | tuple | set | frozenset) or not statuses:
        raise InvalidInput("statuses must be a non-empty list of terminal statuses")
    for status in statuses:
        if status not in TERMINAL:
            raise InvalidInput(
                f"only terminal runs are purged: statuses must be among "
                f"{', '.join(_STATUSES)} (got {status!r})"
            )
    return cutoff, tuple(s for s in _STATUSES if s in statuses)


class RetentionService:
    """Purges for one open engine: explicit ones, and the background passes of a rule."""

    def __init__(self, engine: Engine, rules: Retention | None) -> None:
        self._engine = engine
        self.rules = rules
        self._purger = Purger(engine.store)
        self._lock = trio.Lock()
        self._floor: int | None = None
        self._indexed = False
        self._timers_dirty = False
        """Runs were purged since the current (or last) timer sweep began."""
        self._timer_pos: bytes | None = None
        """Where the timer sweep under way stands (``None``: none under way)."""
        self.purged = 0
        """Runs purged since the runtime opened (explicit purges and passes)."""
        self.passes = 0

    # -- entry points -------------------------------------------------------------------------

    async def run(self) -> None:
        """The background passes of the rules, every ``interval`` seconds, until closed."""
        rules = self.rules
        assert rules is not None
        while True:
            await trio.sleep(rules.interval)
            try:
                await self.apply()
            except StorageError as exc:
                log.warning("perdure: a retention pass failed (retried next pass): %s", exc)
            except Exception:
                # Whatever goes wrong in a pass must not take the runtime down with it.
                log.exception("perdure: a retention pass failed (retried next pass)")

    async def apply(self) -> int:
        """One pass of the rules; returns how many runs it purged."""
        rules = self.rules
        if rules is None:
            return 0
        async with self._lock:
            await self._index_ends()
            purged = 0
            for status in _STATUSES:
                age = rules.age(status)
                if age is not None:
                    cutoff = self._engine.now() - age
                    purged += await self._sweep(status, before_ms=_ms(cutoff))
                limit = rules.limit(status)
                if limit is not None:
                    below = await self._boundary(status, limit)
                    if below is not None:
                        purged += await self._sweep(status, below=below)
            await self._sweep_timers(_TIMER_SLICES)
            self.passes += 1
            return purged

    async def purge(self, before: float, statuses: Sequence[str]) -> int:
        """Purge every terminal tree whose root has one of ``statuses`` and ended before
        ``before``; returns how many runs were purged."""
        async with self._lock:
            await self._index_ends()
            purged = 0
            for status in statuses:
                purged += await self._sweep(status, before_ms=_ms(before))
            await self._sweep_timers(None)
            return purged

    # -- passes -------------------------------------------------------------------------------

    async def _sweep(
        self, status: str, *, before_ms: int | None = None, below: bytes | None = None
    ) -> int:
        """Purge the trees of ``status`` roots that ended first, up to a bound.

        A page of trees is read on the trio thread in slices of :data:`_SLICE` runs (a
        checkpoint between two), then its deletes are submitted together and awaited
        before the next page is read. Not in a worker thread: handing the GIL back and
        forth with one cost a third more than the reads themselves. And never reading
        while the deletes commit: py-lmdb takes the GIL back after every single
        delete, and a transaction of deletes that competes with a thread running
        Python crawls one delete per GIL switch.
        """
        purger = self._purger
        writer = self._engine.writer
        purged = 0
        after = b""
        done = False
        while not done:
            batches: list[list[Op]] = []
            runs = 0
            while not done and runs < _PAGE:
                await trio.lowlevel.checkpoint()
                ended = purger.ended(status, after, _SLICE, before_ms=before_ms, below=below)
                if ended:
                    after = ended[-1][0]
                    plan = purger.plan(ended)
                    batches += plan.batches
                    runs += plan.runs
                done = len(ended) < _SLICE
            if runs:
                self._floor_first(batches)
                for pending in [writer.submit(batch) for batch in batches]:
                    await writer.wait(pending)
                purged += runs
                self.purged += runs
                self._timers_dirty = True
        return purged

    async def _index_ends(self) -> None:
        """Once per store: ``f`` entries for runs that ended before the family existed."""
        if self._indexed:
            return
        purger = self._purger
        self._floor = await self._read(purger.floor)
        if not await self._read(purger.finish_index_ready):
            for status in _STATUSES:
                after = -1
                last = 0
                while last != after:
                    after = last
                    ops, last = await self._read(purger.backfill, status, after)
                    if ops:
                        await self._engine.writer.commit(ops)
            await self._engine.writer.commit([purger.finish_index_op()])
        self._indexed = True

    # -- committing ---------------------------------------------------------------------------

    def _floor_first(self, batches: list[list[Op]]) -> None:
        """Seqs are never handed out twice, even once the newest runs are purged: before
        the first deletes, record every seq assigned so far (store.last_seq reads it)."""
        floor = self._engine.next_seq - 1
        if self._floor is not None and floor > self._floor:
            batches[0].append(self._purger.floor_op(floor))
            self._floor = floor

    async def _sweep_timers(self, slices: int | None) -> None:
        """Delete the stored timers of purged runs: a sweep of the timers database,
        begun once runs were purged, ``slices`` slices of :data:`_TIMER_WALK` keys at a
        time (``None``: to its end now, for an explicit purge).

        The database holds every timer not yet due (a sleep's or a backoff's of a run
        cancelled while passive stays until then), so it can hold millions: a pass walks
        a bounded part of it, on the trio thread between two checkpoints, and the next
        pass goes on.
        A timer of a purged run is harmless meanwhile (if it falls due first, the
        runtime drops it); sweeping bounds the store.
        """
        if slices is None or self._timer_pos is None:
            if not self._timers_dirty:
                return
            self._timer_pos = b""
            self._timers_dirty = False
        walked = 0
        while self._timer_pos is not None and (slices is None or walked < slices):
            await trio.lowlevel.checkpoint()
            ops, last = self._purger.timer_slice(self._timer_pos, _TIMER_WALK)
            for start in range(0, len(ops), CHUNK_OPS):
                await self._engine.writer.commit(ops[start : start + CHUNK_OPS])
            self._timer_pos = last  # once its deletes are stored (R32)
            walked += 1

    async def _boundary(self, status: str, keep: int) -> bytes | None:
        """The count rule's boundary (:meth:`Purger.boundary`), walked on the trio thread
        in slices of :data:`_WALK` keys with a checkpoint between two."""
        resume = None
        while True:
            await trio.lowlevel.checkpoint()
            key, resume = self._purger.boundary(status, keep, resume, per_txn=_WALK)
            if resume is None:
                return key

    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        if self._engine.virtual_time:
            await trio.lowlevel.checkpoint()
            return fn(*args)
        return await trio.to_thread.run_sync(fn, *args)


def _ms(when: float) -> int | None:
    """A cutoff as the ``f`` index's milliseconds (``None``: no bound, only for +inf and
    instants past what the index can hold; a cutoff before 1970 purges nothing)."""
    if when <= 0:
        return 0
    if when >= _MAX_MS / 1000:
        return None
    return int(when * 1000)


_MAX_MS = 2**64 - 1
"""The largest end time the ``f`` index stores (milliseconds, 8 bytes big-endian)."""
