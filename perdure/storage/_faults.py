"""Storage faults, typed (R32): what the file system or LMDB says, as a StorageError.

Two things make a store fault dangerous rather than merely an error:

- **A truncated data file is a SIGBUS.** LMDB maps ``data.mdb`` and reads pages through
  the mapping; a page past the end of a truncated file kills the process with SIGBUS,
  which no ``except`` can catch. So before LMDB maps an existing file we read its two
  meta pages ourselves and check that the file holds every page the newest meta page
  says is in use (:func:`check_data_file`).
- **Raw library errors escape typed handling.** A flipped byte shows up as
  ``lmdb.CorruptedError`` or as a record msgspec cannot decode; a permission problem
  as ``OSError``/``lmdb.Error``. :func:`translate` turns each into the
  :class:`~perdure.StorageError` subclass that says what happened and what to do.
"""

from __future__ import annotations

import errno
import os
import stat
import struct
from pathlib import Path

import lmdb
import msgspec

from perdure._errors import CorruptStore, StorageError, StorageFull, StorageUnavailable

__all__ = ["DAMAGE", "check_data_file", "check_own_file", "translate"]

_MAGIC = 0xBEEFC0DE
_META = struct.Struct("<II")  # mm_magic, mm_version, right after the 16-byte page header
_PAGE_SIZE_AT = 40  # mm_dbs[FREE_DBI].md_pad holds the page size
_LAST_PAGE_AT = 136  # mm_last_pg, then mm_txnid

DAMAGE = (
    lmdb.CorruptedError,
    lmdb.PageNotFoundError,
    lmdb.InvalidError,
    lmdb.VersionMismatchError,
    lmdb.BadTxnError,
    lmdb.IncompatibleError,
    msgspec.DecodeError,
    UnicodeDecodeError,
    struct.error,
)
"""What damaged stored bytes look like to a reader."""


def check_data_file(path: Path) -> None:
    """Refuse (``CorruptStore``) a ``data.mdb`` shorter than its meta pages say it is."""
    try:
        with open(path, "rb", buffering=0) as f:
            head = f.read(2 * 65536)
            size = os.fstat(f.fileno()).st_size
    except OSError as exc:
        raise translate(exc, path) from None
    metas = []
    for offset in _candidate_offsets(head):
        page = head[offset:]
        if len(page) < _LAST_PAGE_AT + 16:
            continue
        magic, _version = _META.unpack_from(page, 16)
        if magic != _MAGIC:
            continue
        page_size = struct.unpack_from("<I", page, _PAGE_SIZE_AT)[0]
        last_page, txnid = struct.unpack_from("<QQ", page, _LAST_PAGE_AT)
        metas.append((txnid, last_page, page_size))
    if not metas:
        raise CorruptStore(
            f"{path} is not a readable LMDB file (no valid meta page): restore it from a backup",
            path=str(path),
        )
    _txnid, last_page, page_size = max(metas)
    needed = (last_page + 1) * page_size
    if page_size < 512 or size < needed:
        raise CorruptStore(
            f"{path} is truncated: {size} bytes, but its pages reach {needed} bytes; "
            "restore it from a backup (perdure backup)",
            path=str(path),
            size=size,
            needed=needed,
        )


def _candidate_offsets(head: bytes) -> list[int]:
    """Meta page 0 is at offset 0; meta page 1 at one page size, which page 0 tells."""
    offsets = [0]
    if len(head) >= _PAGE_SIZE_AT + 4:
        page_size = struct.unpack_from("<I", head, _PAGE_SIZE_AT)[0]
        if 512 <= page_size <= 65536:
            offsets.append(page_size)
    offsets.extend(o for o in (4096, 8192, 16384, 65536) if o not in offsets)
    return offsets


def check_own_file(path: Path) -> None:
    """A store file must be a regular file, never a symlink (opening one would follow it:
    an attacker who can write the directory could make us truncate any file)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise translate(exc, path) from None
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISREG(st.st_mode):
        what = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a regular file"
        raise StorageUnavailable(
            f"{path} is {what}; perdure refuses to open it (remove it, or point perdure "
            "at the real directory)",
            path=str(path),
        )


def _nearly_full(path: Path | str) -> bool:
    """Whether the file system holding ``path`` has (almost) no room left."""
    target = Path(path)
    while not target.exists() and target != target.parent:
        target = target.parent
    try:
        st = os.statvfs(target)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < 1024 * 1024


def translate(exc: BaseException, path: Path | str) -> StorageError:
    """The typed error for a fault met while opening, reading or writing ``path``."""
    if isinstance(exc, StorageError):
        return exc
    where = str(path)
    if isinstance(exc, DAMAGE):
        return CorruptStore(
            f"{where}: stored data is damaged ({type(exc).__name__}: {exc}); restore the "
            "store from a backup (perdure backup)",
            path=where,
        )
    code = getattr(exc, "errno", None)
    text = str(exc)
    if isinstance(exc, ValueError) and "null" in text.lower():
        return StorageUnavailable(f"{where!r}: a path may not contain NUL", path=where)
    if (
        code in (errno.ENOSPC, errno.EDQUOT)
        or "No space left" in text
        # LMDB reports a short write at commit as EIO: on a full disk that is ENOSPC.
        or ((code == errno.EIO or "Input/output error" in text) and _nearly_full(path))
    ):
        return StorageFull(
            f"{where}: the disk is full; free space (or raise the quota) and retry", path=where
        )
    if code in (errno.EACCES, errno.EPERM) or "Permission denied" in text:
        return StorageUnavailable(
            f"{where}: permission denied; run as the directory's owner or fix its permissions",
            path=where,
        )
    if code == errno.EROFS or "Read-only file system" in text:
        return StorageUnavailable(
            f"{where} is on a read-only file system: only read-only inspection "
            "(perdure runs ..., Store(readonly=True)) can open it",
            path=where,
        )
    if code == errno.ENAMETOOLONG or "name too long" in text:
        return StorageUnavailable(f"{where}: the path is too long", path=where)
    if code in (errno.EISDIR, errno.ENOTDIR, errno.ELOOP):
        return StorageUnavailable(f"{where}: {text}", path=where)
    return StorageError(f"{where}: {type(exc).__name__}: {text}", path=where)
