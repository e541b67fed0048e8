"""The single LMDB writer with group commit.

One pykka ``ThreadingActor`` owns every write transaction. Trio tasks hand it
batches of operations; the actor takes *every* batch queued so far, applies them
in one transaction, commits with one flush, and then wakes all of their
submitters with a single ``TrioToken.run_sync_soon`` call. The trio thread never
blocks on a flush: it only appends to a queue.

The flush request is posted when the trio thread goes idle (a trio instrument sees
the scheduler about to block in its I/O wait with no task runnable), or at the
latest ``max_hold`` seconds after the first unposted batch. Both threads
need the GIL, and py-lmdb releases and re-takes it around every put: a writer that
starts while trio tasks are still handling the last wake-up crawls, one put per
GIL switch interval, and slows the trio thread down with forced switches. Posting
at idle lets the transaction run while the trio thread sleeps in its I/O wait, and
the batch is larger too: every run of the wave has submitted by then. The 100 ms
bound only delays commits while the trio thread is busy without a break for that
long: a huge wave (ten thousand runs recovering at once) is better off committed
after it than in contention with it (recovering 10k runs, alternating runs on one
machine: ~6.1k runs/s at 25 ms, ~6.5k at 100 ms).

While a flush is under way (0.3 to 10 ms on real disks) new batches pile up and go
out together in the next transaction, so throughput grows with the number of
runs in flight while a lone run still pays one flush.

A batch is atomic: its operations all commit or none do. A batch never shares
fate with an unrelated one: if a grouped transaction fails for a reason other than a
full map, the batches are retried one by one so only the faulty one reports the error.
Batches of one :class:`Chain` (one run) do share fate: each was computed on top of the
ones before it, so once a batch of a chain fails, every later batch of that chain
fails too, without being written, until its owner starts a new chain (R32: event ids
stay gap-free and the run's memory can roll back to what is stored).
"""

from __future__ import annotations

import collections
import contextlib
import time
from collections.abc import Sequence
from typing import Any

import lmdb
import pykka
import trio

from perdure._errors import StorageError

from ._faults import translate
from ._ops import DELETE_PREFIX, Op
from ._store import Store

__all__ = ["Chain", "Writer", "WriterStats"]

_FLUSH = object()


class WriterStats:
    """Counters the benchmarks read: transactions, batches and records committed."""

    __slots__ = ("batches", "grows", "records", "txns")

    def __init__(self) -> None:
        self.txns = 0
        self.batches = 0
        self.records = 0
        self.grows = 0


class Chain:
    """Batches that depend on each other (one run's): a failure fails every later one.

    ``failed`` is set by the writer thread and read by both threads; a plain attribute
    is enough under the GIL, and the owner replaces a failed chain rather than reset it.
    """

    __slots__ = ("failed",)

    def __init__(self) -> None:
        self.failed = False


class _Pending:
    """One submitted batch and the trio task parked until it is durable.

    The task parks with ``wait_task_rescheduled`` and an abort function that
    refuses cancellation: an acknowledged-or-not wait that needs neither an Event
    nor a shielded cancel scope (both showed up in profiles of the hot path).
    """

    __slots__ = ("chain", "done", "error", "ops", "task")

    def __init__(self, ops: Sequence[Op], chain: Chain | None) -> None:
        self.ops = ops
        self.chain = chain
        self.task: trio.lowlevel.Task | None = None
        self.done = False
        self.error: BaseException | None = None

    def wake(self) -> None:
        self.done = True
        if self.task is not None:
            task, self.task = self.task, None
            trio.lowlevel.reschedule(task)


def _refuse_abort(_: Any) -> trio.lowlevel.Abort:
    return trio.lowlevel.Abort.FAILED


class _PostAtIdle(trio.abc.Instrument):
    """Posts the writer's pending flush request when the trio thread goes idle."""

    def __init__(self, writer: Writer) -> None:
        self._writer = writer

    def before_io_wait(self, timeout: float) -> None:
        self._writer._post(timeout)


class _WriterActor(pykka.ThreadingActor):
    use_daemon_thread = True

    def __init__(self, writer: Writer) -> None:
        super().__init__()
        self._writer = writer

    def on_receive(self, message: Any) -> Any:
        if message is _FLUSH:
            self._writer._flush()
        return None


class Writer:
    """Trio-facing handle of the writer thread. Create inside the trio run."""

    def __init__(self, store: Store, *, inline: bool = False, max_hold: float = 0.1) -> None:
        if store.readonly:
            raise StorageError("a read-only store has no writer")
        self._store = store
        self._queue: collections.deque[_Pending] = collections.deque()
        self._kicked = False
        self._token = trio.lowlevel.current_trio_token()
        self.inline = inline
        self.max_hold = max_hold
        self._closed = False
        # Trio side of the idle-gated flush request (see the module docstring).
        self._dirty = False
        self._dirty_since = 0.0
        self._ref: pykka.ActorRef[_WriterActor] | None = None
        self._instrument: _PostAtIdle | None = None
        if not inline:
            self._ref = _WriterActor.start(self)
            self._instrument = _PostAtIdle(self)
            trio.lowlevel.add_instrument(self._instrument)
        self.stats = WriterStats()

    async def commit(self, ops: Sequence[Op], chain: Chain | None = None) -> None:
        """Apply ``ops`` atomically and return once they are durable.

        The wait is shielded: once submitted, a batch commits whether or not the
        caller is cancelled, so callers' in-memory state never runs ahead of or
        behind what is stored.
        """
        await self.wait(self.submit(ops, chain))

    def submit(self, ops: Sequence[Op], chain: Chain | None = None) -> _Pending:
        """Queue ``ops``; they commit after everything queued before them.

        Batches commit in submission order, so a later batch is never durable
        without an earlier one. Pair with :meth:`wait` for the acknowledgement.
        """
        if self._closed:
            raise StorageError("the writer is closed")
        pending = _Pending(ops, chain)
        # Lock-free hand-off (a mutex here convoyed with the writer thread on the
        # GIL): deque.append/popleft are atomic. Every batch appended before
        # ``_post`` clears ``_dirty`` is in the queue when its flush request goes
        # out; one appended after sets ``_dirty`` again and gets a request of its
        # own. At worst a flush finds the queue already drained.
        self._queue.append(pending)
        if not self._dirty and not self.inline:
            self._dirty = True
            self._dirty_since = time.perf_counter()
        return pending

    async def wait(self, pending: _Pending) -> None:
        """Return once ``pending`` is durable (or raise its error)."""
        if self.inline and not self._kicked and not pending.done:
            # Virtual time (trio's MockClock) jumps whenever every task is blocked,
            # and a task waiting on another thread looks blocked: the clock would race
            # past unacknowledged commits. Inline mode commits on the trio thread,
            # still grouping every batch queued before the flusher gets to run.
            self._kicked = True
            await trio.lowlevel.cancel_shielded_checkpoint()
            self._flush()
        if not pending.done:
            # Parked right here rather than in a method of _Pending: one coroutine
            # frame less on the hottest await.
            pending.task = trio.lowlevel.current_task()
            await trio.lowlevel.wait_task_rescheduled(_refuse_abort)
        if pending.error is not None:
            raise pending.error

    def _post(self, io_timeout: float) -> None:
        """Called by the instrument each time the trio scheduler is about to wait for I/O."""
        if not self._dirty:
            return
        # timeout > 0: no task is runnable, the thread is about to sleep.
        if io_timeout <= 0 and time.perf_counter() - self._dirty_since < self.max_hold:
            return
        self._dirty = False
        ref = self._ref
        if ref is not None:
            with contextlib.suppress(pykka.ActorDeadError):
                ref.tell(_FLUSH)

    # -- writer thread ------------------------------------------------------------------------

    def _flush(self) -> None:
        if self.inline:
            self._kicked = False
        queue = self._queue
        batch: list[_Pending] = []
        while queue:
            batch.append(queue.popleft())
        if not batch:
            return
        if any(p.chain is not None and p.chain.failed for p in batch):
            self._write_one_by_one(batch)
        else:
            try:
                self._write(batch)
            except Exception:
                self._write_one_by_one(batch)
        if self.inline:
            _wake(batch)
            return
        with contextlib.suppress(trio.RunFinishedError):
            self._token.run_sync_soon(_wake, batch)

    def _write_one_by_one(self, batch: Sequence[_Pending]) -> None:
        for pending in batch:
            chain = pending.chain
            if chain is not None and chain.failed:
                pending.error = StorageError(
                    "not written: an earlier write of the same run failed", error="ChainFailed"
                )
                continue
            try:
                self._write([pending])
            except Exception as exc:
                if chain is not None:
                    chain.failed = True
                pending.error = translate(exc, self._store.path)

    def _write(self, batch: Sequence[_Pending]) -> None:
        env = self._store.env
        while True:
            try:
                records = 0
                with env.begin(write=True) as txn:
                    # Puts go to LMDB in runs, per database, through putmulti (the loop
                    # runs in C instead of one GIL-holding call per record). A delete
                    # first flushes the puts queued before it, so every sequence of
                    # operations on one key keeps its order (one run's batches can share
                    # a transaction: a signal's, then the body's next commit).
                    puts: dict[Any, list[tuple[bytes, bytes]]] = {}
                    cursors: dict[Any, lmdb.Cursor] = {}
                    for pending in batch:
                        for db, key, value in pending.ops:
                            if value is None:
                                if puts:
                                    _put_runs(txn, puts)
                                # Positional: py-lmdb parses keyword arguments
                                # slower (a tenth of a purge's deletes, R38).
                                txn.delete(key, b"", db)
                            elif value is DELETE_PREFIX:
                                if puts:
                                    _put_runs(txn, puts)
                                cursor = cursors.get(db)
                                if cursor is None:
                                    cursor = cursors[db] = txn.cursor(db=db)
                                _delete_prefix(cursor, key)
                            else:
                                puts.setdefault(db, []).append((key, value))
                        records += len(pending.ops)
                    if puts:
                        _put_runs(txn, puts)
            except lmdb.MapFullError:
                self._store.grow()
                self.stats.grows += 1
                continue
            stats = self.stats
            stats.txns += 1
            stats.batches += len(batch)
            stats.records += records
            return

    async def aclose(self) -> None:
        """Commit what is queued, then stop the writer thread."""
        ref, self._ref = self._ref, None
        if self.inline:
            # A task may sit between submitting and flushing (its shielded checkpoint):
            # commit its batch now, while the store is still open.
            self._flush()
        self._closed = True
        if self._instrument is not None:
            with contextlib.suppress(KeyError):
                trio.lowlevel.remove_instrument(self._instrument)
            self._instrument = None
        if ref is not None:
            ref.tell(_FLUSH)  # whatever was not posted yet
            await trio.to_thread.run_sync(ref.stop)


def _put_runs(txn: lmdb.Transaction, puts: dict[Any, list[tuple[bytes, bytes]]]) -> None:
    for db, items in puts.items():
        txn.cursor(db=db).putmulti(items)
    puts.clear()


def _delete_prefix(cursor: lmdb.Cursor, prefix: bytes) -> None:
    """Delete every key that starts with ``prefix`` (one seek, then a delete per key:
    a cursor's delete moves it to the next key)."""
    if not cursor.set_range(prefix):
        return
    size = len(prefix)
    while cursor.key()[:size] == prefix and cursor.delete():
        pass


def _wake(batch: Sequence[_Pending]) -> None:
    for pending in batch:
        pending.wake()
