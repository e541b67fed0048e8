"""The LMDB environment: opening, validation, durability modes and reads.

Opening a directory is careful never to modify something that is not ours (R28):
a directory holding anything besides perdure's own files is refused before the
lock file is created, and an existing ``data.mdb`` is validated read-only (LMDB
format, our schema stamp, a version we can read) before it is opened for writing.

Writes never happen here: the :class:`~perdure.storage.Writer` owns every write
transaction. Reads run in the caller's thread; they hold ``map_lock`` for the
life of their short transaction because LMDB forbids growing the map while any
transaction of this process is open.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal, NamedTuple, TypeVar

import lmdb
import msgspec

from perdure._errors import (
    CorruptStore,
    ForeignDirectory,
    SchemaTooNew,
    StorageError,
    StorageUnavailable,
)
from perdure.agui import Event

from ._faults import DAMAGE, check_data_file, check_own_file, translate
from ._keys import (
    DB_NAMES,
    FINISH_INDEX,
    IDX_BATCH,
    IDX_CANCELLING,
    IDX_KIND,
    IDX_OWNER,
    IDX_PARENT,
    IDX_ROOT,
    IDX_STATUS,
    SEQ_FLOOR,
    batch_idem_owner,
    fires_key,
    fires_prefix,
    idem_key,
    index_prefix,
    log_key,
    run_prefix,
    seq_of_index_key,
)
from ._lock import LOCK_FILE, DirectoryLock
from ._ops import Ops, TimerRef
from ._records import (
    SCHEMA_VERSION,
    STATUSES,
    UPGRADABLE_FROM,
    BatchRecord,
    JournalEntry,
    LogRecord,
    Owner,
    RunRecord,
    ScheduleRecord,
    SchemaInfo,
    owner_key,
)

__all__ = ["DEFAULT_MAP_SIZE", "Durability", "RunState", "Store"]

Durability = Literal["sync", "process", "memory"]
DEFAULT_MAP_SIZE = 256 * 1024 * 1024
_OWN_FILES = {"data.mdb", "lock.mdb", LOCK_FILE}
_FORMAT = "perdure"

_run_decoder = msgspec.msgpack.Decoder(RunRecord)
_journal_decoder = msgspec.msgpack.Decoder(JournalEntry)
_schema_decoder = msgspec.msgpack.Decoder(SchemaInfo)
_chunk_decoder = msgspec.msgpack.Decoder(list[msgspec.Raw])
_events_decoder: msgspec.msgpack.Decoder[list[Event]] = msgspec.msgpack.Decoder(list[Event])
_log_decoder = msgspec.msgpack.Decoder(LogRecord)
_schedule_decoder = msgspec.msgpack.Decoder(ScheduleRecord)
_batch_decoder = msgspec.msgpack.Decoder(BatchRecord)


class RunState(NamedTuple):
    """A run's record with its journal and its events, read in one transaction."""

    rec: RunRecord
    journal: list[JournalEntry]
    events: list[Event]


def _with_counters(rec: RunRecord, last_event_id: int, journal_len: int) -> RunRecord:
    """``rec`` with the counters read from its key ranges (step and emit commits do not
    rewrite a running run's record)."""
    if rec.last_event_id == last_event_id and rec.journal_len == journal_len:
        return rec
    return msgspec.structs.replace(rec, last_event_id=last_event_id, journal_len=journal_len)


def _prefixed(
    cursor: lmdb.Cursor, prefix: bytes, start: bytes = b""
) -> Iterator[tuple[bytes, bytes | memoryview]]:
    """``(key, value)`` of every entry whose key starts with ``prefix``, in order; from
    the first at or after ``prefix + start``."""
    if not cursor.set_range(prefix + start):
        return
    for raw_key, value in cursor:
        key = bytes(raw_key)
        if not key.startswith(prefix):
            return
        yield key, value


def _last_suffix(cursor: lmdb.Cursor, prefix: bytes) -> int | None:
    """The big-endian integer after ``prefix`` in the last key having it, if any."""
    if cursor.set_range(prefix + b"\xff" * 9):
        if not cursor.prev():
            return None
    elif not cursor.last():
        return None
    key = bytes(cursor.key())
    return int.from_bytes(key[len(prefix) :], "big") if key.startswith(prefix) else None


_F = TypeVar("_F", bound=Callable[..., Any])
_T = TypeVar("_T")


def _reads(fn: _F) -> _F:
    """A read whose damaged bytes (or LMDB errors) surface as typed storage errors."""

    @functools.wraps(fn)
    def guarded(self: Store, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(self, *args, **kwargs)
        except (lmdb.Error, *DAMAGE) as exc:
            raise translate(exc, self.path) from None

    return guarded  # type: ignore[return-value]


def _reads_iter(fn: _F) -> _F:
    """:func:`_reads` for generator methods."""

    @functools.wraps(fn)
    def guarded(self: Store, *args: Any, **kwargs: Any) -> Iterator[Any]:
        try:
            yield from fn(self, *args, **kwargs)
        except (lmdb.Error, *DAMAGE) as exc:
            raise translate(exc, self.path) from None

    return guarded  # type: ignore[return-value]


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Store:
    """An open perdure data directory.

    ``durability``: ``sync`` flushes every commit to disk before acknowledging it
    (survives power loss); ``process`` writes through the OS page cache without
    fsync (survives a crash of this process, not of the machine); ``memory``
    keeps the store in a temporary directory on ``/dev/shm`` when ``path`` is
    ``None`` and promises nothing across processes.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None,
        *,
        durability: Durability = "sync",
        map_size: int = DEFAULT_MAP_SIZE,
        readonly: bool = False,
    ) -> None:
        if durability not in ("sync", "process", "memory"):
            raise StorageError(f"unknown durability mode {durability!r}", durability=durability)
        self.durability: Durability = durability
        self.readonly = readonly
        self._tmp: str | None = None
        if path is None:
            if durability != "memory" or readonly:
                raise StorageError("a path is required unless durability='memory'")
            shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
            self._tmp = tempfile.mkdtemp(prefix="perdure-", dir=shm)
            path = self._tmp
        self.path = Path(path)
        self.map_lock = threading.Lock()
        self._lock: DirectoryLock | None = None
        try:
            self._check_directory()
            if not readonly and self._lock is None:
                self._take_lock()
            self.env = self._open_env(map_size)
            if readonly:
                self.dbs = {
                    name: self.env.open_db(name.encode(), create=False) for name in DB_NAMES
                }
            else:
                self._create_databases()
            self.ops = Ops(self.dbs)
        except (OSError, ValueError, lmdb.Error, *DAMAGE) as exc:
            self._release()
            raise translate(exc, self.path) from None
        except BaseException:
            self._release()
            raise

    # -- opening ------------------------------------------------------------------------------

    def _check_directory(self) -> None:
        if self.path.exists() and not self.path.is_dir():
            raise ForeignDirectory(
                f"{self.path} exists and is not a directory", path=str(self.path)
            )
        if not self.path.exists():
            if self.readonly:
                raise StorageError(f"no perdure store at {self.path}", path=str(self.path))
            self.path.mkdir(parents=True)
            return
        entries = set(os.listdir(self.path))
        for name in entries & _OWN_FILES:
            check_own_file(self.path / name)
        foreign = sorted(entries - _OWN_FILES)
        if foreign:
            raise ForeignDirectory(
                f"{self.path} is not a perdure data directory (it holds {', '.join(foreign[:5])})",
                path=str(self.path),
                entries=foreign[:20],
            )
        if LOCK_FILE in entries and not self.readonly:
            # Our own file: lock first, so a second opener (even in this process,
            # where LMDB refuses to open a path twice) learns who holds it.
            self._take_lock()
        if "data.mdb" in entries:
            self._validate_existing(unstamped_ok=LOCK_FILE in entries)
        elif self.readonly:
            raise StorageError(f"no perdure store at {self.path}", path=str(self.path))

    def _take_lock(self) -> None:
        lock = DirectoryLock(self.path)
        lock.acquire()
        self._lock = lock

    def _validate_existing(self, *, unstamped_ok: bool) -> None:
        """Refuse anything but a perdure store we can read (R28); never modify it.

        ``unstamped_ok``: an empty environment next to our own lock file is one whose
        first open crashed before its single initialising commit, so it is ours; so is
        a zero-byte ``data.mdb`` (killed before LMDB wrote its meta pages), which LMDB
        initialises as a new environment.
        """
        if unstamped_ok and (self.path / "data.mdb").stat().st_size == 0:
            return
        check_data_file(self.path / "data.mdb")  # before LMDB maps it: no SIGBUS
        try:
            # A read-only map costs address space, not memory: reserve plenty, so a live
            # writer growing the map meanwhile (MDB_MAP_RESIZED) is no reason to fail.
            env = lmdb.open(
                str(self.path),
                readonly=True,
                lock=False,
                max_dbs=len(DB_NAMES) + 4,
                map_size=1 << 40,
            )
        except lmdb.Error as exc:
            raise CorruptStore(
                f"{self.path / 'data.mdb'} is not a readable LMDB file: {exc}", path=str(self.path)
            ) from None
        try:
            try:
                meta = env.open_db(b"meta", create=False)
            except lmdb.NotFoundError:
                if unstamped_ok and env.stat()["entries"] == 0:
                    return
                raise ForeignDirectory(
                    f"{self.path} holds an LMDB environment that perdure did not create",
                    path=str(self.path),
                ) from None
            with env.begin(db=meta) as txn:
                raw = txn.get(b"schema")
            self._check_schema(raw)
        except lmdb.Error as exc:
            raise CorruptStore(f"{self.path} is damaged: {exc}", path=str(self.path)) from None
        finally:
            env.close()

    def _check_schema(self, raw: bytes | None) -> None:
        if raw is None:
            raise ForeignDirectory(f"{self.path} has no perdure schema stamp", path=str(self.path))
        try:
            info = _schema_decoder.decode(raw)
        except msgspec.DecodeError:
            raise ForeignDirectory(
                f"{self.path} has an unreadable schema stamp", path=str(self.path)
            ) from None
        if info.format != _FORMAT:
            raise ForeignDirectory(f"{self.path} is a {info.format!r} store", path=str(self.path))
        if info.version > SCHEMA_VERSION:
            raise SchemaTooNew(
                f"{self.path} was written by schema version {info.version}; this perdure reads "
                f"up to {SCHEMA_VERSION}. Upgrade perdure to open it.",
                path=str(self.path),
                version=info.version,
                supported=SCHEMA_VERSION,
            )
        if UPGRADABLE_FROM <= info.version < SCHEMA_VERSION:
            if self.readonly:
                raise StorageError(
                    f"{self.path} was written by schema version {info.version}; open it once "
                    f"for writing (any perdure Runtime) to upgrade it in place to "
                    f"{SCHEMA_VERSION}, then inspect it.",
                    path=str(self.path),
                    version=info.version,
                )
            return  # _create_databases adds what is missing and restamps
        if info.version < SCHEMA_VERSION:
            # Version 1 stored one record per event; it only ever existed before the
            # first release, so there is no migration for it.
            raise StorageError(
                f"{self.path} was written by pre-release schema version {info.version}; "
                f"this perdure reads version {SCHEMA_VERSION}. Recreate the store.",
                path=str(self.path),
                version=info.version,
                supported=SCHEMA_VERSION,
            )

    def _open_env(self, map_size: int) -> lmdb.Environment:
        options: dict[str, Any] = {
            "map_size": map_size,
            "max_dbs": len(DB_NAMES) + 4,
            "readonly": self.readonly,
            "sync": self.durability == "sync",
            "metasync": self.durability == "sync",
            "max_readers": 512,
            "readahead": False,
        }
        try:
            return lmdb.open(str(self.path), **options)
        except lmdb.Error as exc:
            fault = translate(exc, self.path)
            if not (self.readonly and isinstance(fault, StorageUnavailable)):
                raise fault from None
        # Inspecting a store we may not write (a read-only mount, another user's files):
        # without LMDB's reader table. Safe here: no writer can work in such a directory.
        try:
            return lmdb.open(str(self.path), lock=False, **options)
        except lmdb.Error as exc:
            raise translate(exc, self.path) from None

    def _create_databases(self) -> None:
        # One transaction: a crash leaves either nothing or a complete, stamped store.
        with self.env.begin(write=True) as txn:
            self.dbs = {name: self.env.open_db(name.encode(), txn=txn) for name in DB_NAMES}
            raw = txn.get(b"schema", db=self.dbs["meta"])
            created = raw is None
            if raw is None:
                info = SchemaInfo(format=_FORMAT, version=SCHEMA_VERSION, created_at=time.time())
                txn.put(b"schema", msgspec.msgpack.encode(info), db=self.dbs["meta"])
                # No run has ended yet: every end will write its f entry (R38), so there
                # is nothing for a first purge to index (it would read every record).
                txn.put(FINISH_INDEX, b"1", db=self.dbs["meta"])
            else:
                info = _schema_decoder.decode(raw)
                if info.version < SCHEMA_VERSION:  # an upgrade: the new databases exist now
                    info = msgspec.structs.replace(info, version=SCHEMA_VERSION)
                    txn.put(b"schema", msgspec.msgpack.encode(info), db=self.dbs["meta"])
        if created and self.durability == "sync":
            # The new files' directory entries must be durable too, or a power cut could
            # take the whole store with it on a file system that does not order them.
            _fsync_directory(self.path)
            _fsync_directory(self.path.parent)

    # -- lifecycle ----------------------------------------------------------------------------

    def grow(self) -> int:
        """Double the map; the caller must have no open transaction. Returns the new size."""
        with self.map_lock:
            size = int(self.env.info()["map_size"]) * 2
            self.env.set_mapsize(size)
            return size

    @property
    def map_size(self) -> int:
        return int(self.env.info()["map_size"])

    def close(self) -> None:
        with contextlib.suppress(lmdb.Error):
            self.env.close()
        self._release()

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    # -- reads --------------------------------------------------------------------------------

    @contextlib.contextmanager
    def read(self) -> Iterator[lmdb.Transaction]:
        """A short read transaction; never hold it across an ``await``.

        Damaged bytes met while reading in it (or LMDB failing) surface as typed storage
        errors, whatever the read: every reader gets that without a decorator of its own.
        """
        with self.map_lock:
            txn = self._begin()
            try:
                yield txn
            except (lmdb.Error, *DAMAGE) as exc:
                raise translate(exc, self.path) from None
            finally:
                txn.abort()

    def _begin(self) -> lmdb.Transaction:
        """A read transaction; call with ``map_lock`` held."""
        try:
            return self.env.begin()
        except lmdb.MapResizedError:
            # Another process grew the map (we are a read-only inspector).
            self.env.set_mapsize(0)
            return self.env.begin()

    def get_run(self, run_id: str) -> RunRecord | None:
        """The run's record with exact committed counters.

        Step and emit commits do not rewrite the record (it only changes with the
        lifecycle), so for a run that has not ended ``last_event_id`` and
        ``journal_len`` are read from the last keys of its event and journal ranges
        in the same read transaction.
        """
        key = run_id.encode()
        # The hottest read: spelled out instead of going through read() and _reads.
        with self.map_lock:
            try:
                txn = self._begin()
                try:
                    raw = txn.get(key, db=self.dbs["runs"])
                    if raw is None:
                        return None
                    rec = _run_decoder.decode(raw)
                    if rec.terminal:
                        return rec
                    prefix = key + b"\0"
                    last_event = _last_suffix(txn.cursor(db=self.dbs["events"]), prefix)
                    last_entry = _last_suffix(txn.cursor(db=self.dbs["journal"]), prefix)
                finally:
                    txn.abort()
            except (lmdb.Error, *DAMAGE) as exc:
                raise translate(exc, self.path) from None
        return _with_counters(rec, last_event or 0, 0 if last_entry is None else last_entry + 1)

    @_reads
    def get_idem(self, owner: str, key: str) -> str | None:
        with self.read() as txn:
            raw = txn.get(idem_key(owner, key), db=self.dbs["idem"])
        return None if raw is None else bytes(raw).decode()

    @_reads
    def events(
        self, run_id: str, after: int = 0, limit: int = 1_000_000
    ) -> list[tuple[int, bytes]]:
        """Committed events of a run with ``event_id > after``, in order (encoded)."""
        raws = self._log_slice(run_id, after, limit, _chunk_decoder.decode)
        return [(event_id, bytes(raw)) for event_id, raw in raws]

    @_reads
    def read_events(
        self, run_id: str, after: int = 0, limit: int = 1_000_000
    ) -> list[tuple[int, Event]]:
        """:meth:`events`, decoded (a chunk at a time): a damaged event is
        :class:`~perdure.CorruptStore`."""
        return self._log_slice(run_id, after, limit, _events_decoder.decode)

    def _log_slice(
        self, run_id: str, after: int, limit: int, decode: Callable[[bytes], list[_T]]
    ) -> list[tuple[int, _T]]:
        """The events of a run past ``after`` (at most ``limit``), each chunk decoded by
        ``decode``, with their ids."""
        prefix = run_prefix(run_id)
        out: list[tuple[int, _T]] = []
        with self.read() as txn:
            cur = txn.cursor(db=self.dbs["events"])
            # The first chunk whose last id is past ``after`` holds event ``after + 1``.
            for key, value in _prefixed(cur, prefix, (after + 1).to_bytes(8, "big")):
                if len(out) >= limit:
                    break
                chunk = decode(bytes(value))
                first = int.from_bytes(key[len(prefix) :], "big") - len(chunk) + 1
                skip = max(0, after + 1 - first)
                out.extend(zip(range(first + skip, first + len(chunk)), chunk[skip:], strict=True))
        return out[:limit]

    @_reads
    def journal(self, run_id: str) -> list[JournalEntry]:
        """Every recorded journal entry of a run, in position order."""
        prefix = run_prefix(run_id)
        with self.read() as txn:
            return [
                _journal_decoder.decode(value)
                for _, value in _prefixed(txn.cursor(db=self.dbs["journal"]), prefix)
            ]

    def children(self, run_id: str) -> list[str]:
        """Ids of every child run of ``run_id`` (its direct children), oldest first."""
        out: list[str] = []
        after = 0
        while page := self._scan_index(IDX_PARENT, run_id, after, 10_000):
            out.extend(child for _, child in page)
            after = page[-1][0]
        return out

    def owner_runs(
        self, owner: Owner, after_seq: int = 0, limit: int = 1000
    ) -> list[tuple[int, str]]:
        """``(seq, run_id)`` of runs owned by ``owner`` created after ``after_seq``, ascending."""
        return self._scan_index(IDX_OWNER, owner_key(owner), after_seq, limit)

    @_reads
    def _scan_index(
        self, family: bytes, value: str = "", after_seq: int = 0, limit: int = 100
    ) -> list[tuple[int, str]]:
        """``(seq, run_id)`` pairs of one index value, ascending, ``seq > after_seq``."""
        prefix = index_prefix(family, value)
        out: list[tuple[int, str]] = []
        with self.read() as txn:
            cur = txn.cursor(db=self.dbs["index"])
            if not cur.set_range(prefix + (after_seq + 1).to_bytes(8, "big")):
                return out
            for raw_key, run_id in cur:
                key = bytes(raw_key)
                if not key.startswith(prefix) or len(out) >= limit:
                    break
                out.append((seq_of_index_key(key), bytes(run_id).decode()))
        return out

    @_reads
    def timers(self) -> list[TimerRef]:
        """Every stored timer, earliest first."""
        with self.read() as txn:
            return [TimerRef.parse(bytes(key)) for key, _ in txn.cursor(db=self.dbs["timers"])]

    @_reads
    def query_runs(
        self,
        *,
        owner: Owner | None = None,
        statuses: set[str] | None = None,
        kind: str | None = None,
        parent_id: str | None = None,
        root_id: str | None = None,
        batch_id: str | None = None,
        after: int = 0,
        limit: int = 100,
    ) -> tuple[list[RunRecord], int | None]:
        """One page of runs matching every filter, oldest first.

        Scans the most selective index and checks the other filters on each record.
        Returns the runs and the creation seq to pass as ``after`` for the next page
        (``None`` on the last page).
        """
        if batch_id is not None:
            sources = [(IDX_BATCH, batch_id)]
        elif parent_id is not None:
            sources = [(IDX_PARENT, parent_id)]
        elif root_id is not None:
            sources = [(IDX_ROOT, root_id)]
        elif owner is not None:
            sources = [(IDX_OWNER, owner_key(owner))]
        elif statuses is not None:
            sources = [(IDX_STATUS, status) for status in sorted(statuses)]
        elif kind is not None:
            sources = [(IDX_KIND, kind)]
        else:
            sources = self._sources(None, None)
        runs: list[RunRecord] = []
        last = after
        if root_id is not None and parent_id is None:
            # The root has no root-index entry; it precedes every descendant (lower seq).
            root = self.get_run(root_id)
            if root is not None and root.root_id == root_id:
                sources.append((b"", root_id))
        while len(runs) <= limit:
            batch = self._scan_merged(sources, last, max(limit * 2, 64))
            if not batch:
                break
            for seq, run_id in batch:
                last = seq
                rec = self.get_run(run_id)
                if rec is None or not (
                    (owner is None or rec.owner == owner)
                    and (statuses is None or rec.status in statuses)
                    and (kind is None or rec.kind == kind)
                    and (parent_id is None or rec.parent_id == parent_id)
                    and (root_id is None or rec.root_id == root_id)
                    and (batch_id is None or rec.batch_id == batch_id)
                ):
                    continue
                runs.append(rec)
                if len(runs) > limit:
                    break
        if len(runs) > limit:
            runs = runs[:limit]
            return runs, runs[-1].seq
        return runs, None

    def _scan_merged(
        self, sources: list[tuple[bytes, str]], after_seq: int, limit: int
    ) -> list[tuple[int, str]]:
        """The first ``limit`` entries after ``after_seq`` over several index values.

        ``(b"", run_id)`` stands for that one run itself (a root in a root query).
        """
        merged: list[tuple[int, str]] = []
        for family, value in sources:
            if family:
                merged.extend(self._scan_index(family, value, after_seq, limit))
                continue
            rec = self.get_run(value)
            if rec is not None and rec.seq > after_seq:
                merged.append((rec.seq, value))
        if len(sources) > 1:
            merged.sort()
        return merged[:limit]

    @_reads
    def last_seq(self) -> int:
        """Highest creation sequence number ever assigned (0 for a new store).

        Every run has exactly one status entry, so the highest is the last entry of
        one of the status families, unless a purge removed the newest runs: the purge
        leaves its floor in ``meta`` so that a seq is never handed out twice (R38).
        """
        with self.read() as txn:
            cur = txn.cursor(db=self.dbs["index"])
            floor = txn.get(SEQ_FLOOR, db=self.dbs["meta"])
            return max(
                int.from_bytes(floor, "big") if floor else 0,
                *(_last_suffix(cur, index_prefix(IDX_STATUS, status)) or 0 for status in STATUSES),
            )

    @_reads
    def count_waiting(self) -> int:
        """How many runs are waiting: O(1), from the ``waiting`` database's entry count."""
        with self.read() as txn:
            return int(txn.stat(self.dbs["waiting"])["entries"])

    @_reads_iter
    def iter_run_states(
        self, status: str | None = None, *, cancelling: bool = False, per_txn: int = 512
    ) -> Iterator[RunState]:
        """Like :meth:`iter_runs`, with each run's journal and raw events (for recovery).

        ``cancelling=True`` reads the runs with a cancellation in flight instead.

        One read transaction per ``per_txn`` runs instead of three per run: recovery
        loads all of this for every in-flight run anyway.
        """
        sources = self._sources(status, IDX_CANCELLING if cancelling else None)
        runs_db, journal_db, events_db = (self.dbs[n] for n in ("runs", "journal", "events"))
        after = 0
        while True:
            page = self._scan_merged(sources, after, per_txn)
            if not page:
                return
            states: list[RunState] = []
            with self.read() as txn:
                for seq, run_id in page:
                    after = seq
                    raw = txn.get(run_id.encode(), db=runs_db)
                    if raw is None:
                        continue
                    rec = _run_decoder.decode(raw)
                    prefix = run_prefix(run_id)
                    journal: list[JournalEntry] = []
                    journal_len = 0
                    for key, value in _prefixed(txn.cursor(db=journal_db), prefix):
                        journal.append(_journal_decoder.decode(value))
                        journal_len = int.from_bytes(key[len(prefix) :], "big") + 1
                    events: list[Event] = []
                    last_event = 0
                    for key, value in _prefixed(txn.cursor(db=events_db), prefix):
                        events.extend(_events_decoder.decode(value))
                        last_event = int.from_bytes(key[len(prefix) :], "big")
                    if not rec.terminal:
                        rec = _with_counters(rec, last_event, journal_len)
                    states.append(RunState(rec, journal, events))
            yield from states

    # -- jobs: logs and batches; schedules (R24, R25) ----------------------------------------

    def logs(
        self, run_id: str, after: int | None = None, limit: int = 100, *, backward: bool = False
    ) -> list[LogRecord]:
        """Up to ``limit`` log entries of a run: ``seq > after`` ascending, or with
        ``backward`` ``seq < after`` descending (``after=None``: from the first or the last)."""
        prefix = run_prefix(run_id)
        out: list[LogRecord] = []
        with self.read() as txn:
            cur = txn.cursor(db=self.dbs["logs"])
            if not backward:
                start = log_key(run_id, (after or 0) + 1)
                if not cur.set_range(start):
                    return out
                for raw_key, value in cur:
                    if not bytes(raw_key).startswith(prefix) or len(out) >= limit:
                        break
                    out.append(_log_decoder.decode(value))
                return out
            bound = log_key(run_id, after) if after is not None else prefix + b"\xff" * 9
            found = cur.prev() if cur.set_range(bound) else cur.last()
            while found and len(out) < limit:
                if not bytes(cur.key()).startswith(prefix):
                    break
                out.append(_log_decoder.decode(cur.value()))
                found = cur.prev()
        return out

    def last_log(self, run_id: str) -> LogRecord | None:
        """The run's newest log entry, if it has one."""
        page = self.logs(run_id, None, 1, backward=True)
        return page[0] if page else None

    def get_schedule(self, name: str) -> ScheduleRecord | None:
        with self.read() as txn:
            raw = txn.get(name.encode(), db=self.dbs["schedules"])
            return None if raw is None else _schedule_decoder.decode(raw)

    def schedules(self) -> list[ScheduleRecord]:
        """Every stored schedule, by name."""
        with self.read() as txn:
            return [
                _schedule_decoder.decode(value) for _, value in txn.cursor(db=self.dbs["schedules"])
            ]

    def get_fire(self, schedule: str, at_ms: int) -> str | None:
        """The run started by ``schedule``'s tick at ``at_ms``, if that tick fired."""
        with self.read() as txn:
            raw = txn.get(fires_key(schedule, at_ms), db=self.dbs["fires"])
        return None if raw is None else bytes(raw).decode()

    def tick_taken(self, schedule: str, at_ms: int, run_id: str) -> bool:
        """Whether the tick has a fire key, or its run id is taken (one transaction)."""
        with self.read() as txn:
            return (
                txn.get(fires_key(schedule, at_ms), db=self.dbs["fires"]) is not None
                or txn.get(run_id.encode(), db=self.dbs["runs"]) is not None
            )

    def recent_fires(self, schedule: str, limit: int = 10) -> list[tuple[int, str]]:
        """``(tick in ms, run id)`` of the schedule's newest fires, newest first."""
        prefix = fires_prefix(schedule)
        out: list[tuple[int, str]] = []
        with self.read() as txn:
            cur = txn.cursor(db=self.dbs["fires"])
            found = cur.prev() if cur.set_range(prefix + b"\xff" * 9) else cur.last()
            while found and len(out) < limit:
                key = bytes(cur.key())
                if not key.startswith(prefix):
                    break
                out.append((int.from_bytes(key[len(prefix) :], "big"), bytes(cur.value()).decode()))
                found = cur.prev()
        return out

    def iter_fires(self) -> Iterator[tuple[str, int, str]]:
        """``(schedule, tick in ms, run id)`` of every stored fire, in key order."""
        after = b""
        while True:
            page: list[tuple[bytes, str]] = []
            with self.read() as txn:
                cur = txn.cursor(db=self.dbs["fires"])
                if not cur.set_range(after):
                    return
                for raw_key, value in cur:
                    key = bytes(raw_key)
                    if key == after:
                        continue
                    page.append((key, bytes(value).decode()))
                    if len(page) >= 1000:
                        break
            if not page:
                return
            for key, run_id in page:
                # name, NUL, u64: the integer may itself hold NUL bytes
                yield key[:-9].decode(), int.from_bytes(key[-8:], "big"), run_id
            after = page[-1][0]

    def get_batch(self, batch_id: str) -> BatchRecord | None:
        with self.read() as txn:
            raw = txn.get(batch_id.encode(), db=self.dbs["batches"])
            return None if raw is None else _batch_decoder.decode(raw)

    def get_batch_idem(self, owner: Owner, key: str) -> str | None:
        """The batch started by ``owner`` with idempotency key ``key``, if any."""
        return self.get_idem(batch_idem_owner(owner_key(owner)), key)

    def batch_members(self, batch_id: str) -> list[str]:
        """Run ids of a batch's jobs, in creation order."""
        out: list[str] = []
        after = 0
        while page := self._scan_index(IDX_BATCH, batch_id, after, 10_000):
            out.extend(run_id for _, run_id in page)
            after = page[-1][0]
        return out

    def batch_counts(self, batch_id: str) -> dict[str, int]:
        """How many of a batch's jobs are in each status (statuses with none are left out)."""
        counts: dict[str, int] = {}
        members = self.batch_members(batch_id)
        runs_db = self.dbs["runs"]
        for start in range(0, len(members), 512):
            with self.read() as txn:
                for run_id in members[start : start + 512]:
                    raw = txn.get(run_id.encode(), db=runs_db)
                    if raw is not None:
                        status = _run_decoder.decode(raw).status
                        counts[status] = counts.get(status, 0) + 1
        return counts

    def _sources(self, status: str | None, family: bytes | None) -> list[tuple[bytes, str]]:
        if family is not None:
            return [(family, "")]
        if status is not None:
            return [(IDX_STATUS, status)]
        return [(IDX_STATUS, s) for s in STATUSES]

    @_reads_iter
    def iter_runs(self, status: str | None = None) -> Iterator[RunRecord]:
        """Run records of one status, or all, in creation order."""
        sources = self._sources(status, None)
        after = 0
        while True:
            page = self._scan_merged(sources, after, 1000)
            if not page:
                return
            for seq, run_id in page:
                after = seq
                rec = self.get_run(run_id)
                if rec is not None:
                    yield rec
