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
from typing import Any

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
    """Refuse (``CorruptStore``) a ``data.mdb`` cut short of pages its trees still use.

    The newest meta page says how many pages were ever allocated (``mm_last_pg``), but a
    healthy file may end before that: LMDB hands out page numbers past the end and may
    free them again before they are ever written. Such pages are on its free list. So
    the file is truncated exactly when a page past its end is *not* free: the roots are
    checked first, then the free list (a small tree, read page by page).
    """
    try:
        with open(path, "rb", buffering=0) as f:
            head = f.read(2 * 65536)
            size = os.fstat(f.fileno()).st_size
            metas = [m for o in _candidate_offsets(head) if (m := _meta(head, o)) is not None]
            if not metas:
                raise CorruptStore(
                    f"{path} is not a readable LMDB file (no valid meta page): restore it "
                    "from a backup",
                    path=str(path),
                )
            _txnid, last_page, page_size, free_root, main_root = max(metas)
            in_file = size // page_size
            if page_size < 512 or last_page < in_file:
                return
            for root in (free_root, main_root):
                if root != _NO_PAGE and root >= in_file:
                    raise _truncated(path, size, (last_page + 1) * page_size)
            free = _FreeList(f, page_size, in_file).read(free_root)
            if free is None:
                return  # not a shape we can read: let LMDB judge it
            if any(page not in free for page in range(in_file, last_page + 1)):
                raise _truncated(path, size, (last_page + 1) * page_size)
    except OSError as exc:
        raise translate(exc, path) from None


_NO_PAGE = 0xFFFFFFFFFFFFFFFF
_FREE_ROOT_AT = 80  # mm_dbs[FREE_DBI].md_root
_MAIN_ROOT_AT = 128  # mm_dbs[MAIN_DBI].md_root


def _meta(head: bytes, offset: int) -> tuple[int, int, int, int, int] | None:
    page = head[offset:]
    if len(page) < _LAST_PAGE_AT + 16:
        return None
    magic, _version = _META.unpack_from(page, 16)
    if magic != _MAGIC:
        return None
    page_size = struct.unpack_from("<I", page, _PAGE_SIZE_AT)[0]
    free_root = struct.unpack_from("<Q", page, _FREE_ROOT_AT)[0]
    main_root = struct.unpack_from("<Q", page, _MAIN_ROOT_AT)[0]
    last_page, txnid = struct.unpack_from("<QQ", page, _LAST_PAGE_AT)
    return txnid, last_page, page_size, free_root, main_root


def _truncated(path: Path, size: int, needed: int) -> CorruptStore:
    return CorruptStore(
        f"{path} is truncated: {size} bytes, but pages it still uses lie beyond its end; "
        "restore it from a backup (perdure backup)",
        path=str(path),
        size=size,
        needed=needed,
    )


class _FreeList:
    """Reads the page numbers on LMDB's free list (its B-tree of page-number lists).

    Page layout (LMDB 0.9, 64-bit): a 16-byte header (page number, pad, flags, lower,
    upper), then ``(lower - 16) / 2`` node offsets; a node is ``lo, hi, flags, ksize``
    (u16 each), the key, then the data. Branch nodes point at a child page
    (``lo | hi << 16 | flags << 32``); a leaf's data is a list ``[n, pgno...]``, stored
    in overflow pages when large (node flag 1). ``read`` answers ``None`` on anything it
    does not expect, and raises (through :func:`_truncated`) only for a page of the
    list itself that lies past the end of the file.
    """

    def __init__(self, f: Any, page_size: int, in_file: int) -> None:
        self._f = f
        self._size = page_size
        self._in_file = in_file

    def _page(self, number: int, count: int = 1) -> bytes:
        if number + count > self._in_file:
            raise _Beyond
        self._f.seek(number * self._size)
        return bytes(self._f.read(count * self._size))

    def read(self, root: int) -> set[int] | None:
        free: set[int] = set()
        if root == _NO_PAGE:
            return free
        try:
            stack, seen = [root], 0
            while stack:
                seen += 1
                if seen > 100_000:
                    return None
                page = self._page(stack.pop())
                flags, lower = struct.unpack_from("<HH", page, 10)
                if lower < 16 or lower > self._size:
                    return None
                for ptr in struct.unpack_from(f"<{(lower - 16) // 2}H", page, 16):
                    lo, hi, node_flags, ksize = struct.unpack_from("<HHHH", page, ptr)
                    if flags & 0x01:  # branch
                        stack.append(lo | hi << 16 | node_flags << 32)
                    elif flags & 0x02:  # leaf
                        free.update(self._ids(page, ptr + 8 + ksize, lo | hi << 16, node_flags))
                    else:
                        return None
        except _Beyond:
            raise _truncated(Path(self._f.name), self._in_file * self._size, 0) from None
        except (struct.error, ValueError, OverflowError):
            return None
        return free

    def _ids(self, page: bytes, start: int, size: int, node_flags: int) -> tuple[int, ...]:
        if node_flags & 0x01:  # the list is in overflow pages
            first = struct.unpack_from("<Q", page, start)[0]
            pages = -(-(16 + size) // self._size)
            data = self._page(first, pages)[16 : 16 + size]
        else:
            data = page[start : start + size]
        count = struct.unpack_from("<Q", data, 0)[0]
        return struct.unpack_from(f"<{count}Q", data, 8)


class _Beyond(Exception):
    """A page of the free list lies past the end of the file."""


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
