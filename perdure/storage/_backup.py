"""A consistent, compacted copy of a live store (R38), and nothing else touched.

LMDB copies an environment from inside one read transaction (``mdb_env_copy2``), so
the copy is the store exactly as one commit left it: every run, event chunk and
journal entry of that instant, none of a later one, whatever the owning process is
writing meanwhile. The copy runs in a process of its own beside the writer (the store
is opened read-only, as the CLI's reading commands open it: R27), so the live process
neither stops nor waits: a reader only pins the pages of its snapshot, and LMDB reuses
them once the copy ends. ``compact=True`` writes only pages in use, renumbered, so the
copy is also the smallest file that holds the data (free pages left by purges are
dropped).

The copy is written into a fresh sibling directory, flushed (file and directory), then
renamed to its final name: a crash or a full disk never leaves something that looks
like a finished backup. ``OUT`` must not exist, or be an empty directory. The schema
stamp travels inside ``data.mdb``; the lock files are the opener's and are not copied.
A backup opens like any store: a ``Runtime`` on it recovers what was in flight at the
instant of the copy (R26).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import lmdb
import msgspec

from perdure._errors import InvalidInput, StorageError

from ._store import Store

__all__ = ["BackupInfo", "backup_store"]


class BackupInfo(msgspec.Struct):
    """What a backup wrote."""

    path: str
    runs: int
    """Run records in the copy."""
    bytes: int
    """Size of the copy's ``data.mdb``."""
    source_bytes: int
    """Size of the source's ``data.mdb`` (pages in use and free ones)."""
    seconds: float


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _check_out(out: Path, source: Path) -> None:
    real, store = Path(os.path.realpath(out)), Path(os.path.realpath(source))
    if real == store or store in real.parents:
        # Anything but perdure's own files in a data directory makes it unopenable.
        raise InvalidInput(
            f"{out} is inside the data directory {source}: a backup goes elsewhere",
            path=str(out),
        )
    if out.is_dir():
        if any(out.iterdir()):
            raise InvalidInput(
                f"{out} is not empty: a backup goes to a new directory", path=str(out)
            )
    elif out.exists():
        raise InvalidInput(f"{out} exists and is not a directory", path=str(out))
    if not out.parent.is_dir():
        raise InvalidInput(f"{out.parent} does not exist", path=str(out))


def backup_store(store: Store, out: str | os.PathLike[str]) -> BackupInfo:
    """Copy ``store`` (open, read-only or not) to the new directory ``out``."""
    target = Path(out).absolute()
    _check_out(target, store.path)
    began = time.perf_counter()
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.backup-", dir=target.parent))
    except OSError as exc:
        raise StorageError(f"cannot write a backup beside {target}: {exc}", path=str(out)) from None
    try:
        with store.map_lock:
            try:
                txn = store._begin()
            except lmdb.Error as exc:
                raise StorageError(f"cannot read {store.path}: {exc}") from None
            try:
                runs = int(txn.stat(store.dbs["runs"])["entries"])
                store.env.copy(str(tmp), compact=True, txn=txn)
            except lmdb.Error as exc:
                raise StorageError(f"backup of {store.path} failed: {exc}", path=str(tmp)) from None
            finally:
                txn.abort()
        _fsync(tmp / "data.mdb")
        _fsync(tmp)
        if target.is_dir():
            target.rmdir()  # checked empty above
        os.rename(tmp, target)
        _fsync(target.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return BackupInfo(
        path=str(target),
        runs=runs,
        bytes=(target / "data.mdb").stat().st_size,
        source_bytes=(store.path / "data.mdb").stat().st_size,
        seconds=time.perf_counter() - began,
    )
