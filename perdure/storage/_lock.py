"""One writer process per data directory (R27).

LMDB itself lets many processes open an environment for writing; perdure needs
exactly one (its in-memory run actors are the source of truth for live runs). An
advisory ``flock`` on ``perdure.lock`` enforces that. The kernel drops the lock
when its holder dies, even by SIGKILL, so a crashed owner never leaves the
directory locked. The holder writes who it is into the file so the refusal can
name it.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import stat
import sys
import time
from pathlib import Path

import msgspec

from perdure._errors import DirectoryLocked, StorageUnavailable

from ._faults import translate

__all__ = ["LOCK_FILE", "DirectoryLock", "Holder", "read_holder"]

LOCK_FILE = "perdure.lock"


class Holder(msgspec.Struct):
    """The process that owns a data directory for writing."""

    pid: int
    host: str
    since: float
    argv: list[str]

    def describe(self) -> str:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.since))
        return f"pid {self.pid} on {self.host} (since {started}: {' '.join(self.argv)[:120]})"


def read_holder(directory: Path) -> Holder | None:
    """Who holds the directory, as written by the holder; ``None`` if unknown."""
    try:
        return msgspec.json.decode((directory / LOCK_FILE).read_bytes(), type=Holder)
    except (OSError, msgspec.DecodeError):
        return None


class DirectoryLock:
    """Exclusive, process-wide ownership of a data directory."""

    def __init__(self, directory: Path) -> None:
        self._path = directory / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise :class:`DirectoryLocked` naming the holder."""
        # O_NOFOLLOW: a symlink planted in the directory must not make us truncate (and
        # rewrite) whatever file it points at.
        try:
            fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise StorageUnavailable(
                    f"{self._path} is a symlink; perdure refuses to open it", path=str(self._path)
                ) from None
            raise translate(exc, self._path) from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise StorageUnavailable(
                f"{self._path} is not a regular file; remove it", path=str(self._path)
            )
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = read_holder(self._path.parent)
            who = holder.describe() if holder else "another process"
            raise DirectoryLocked(
                f"data directory {self._path.parent} is owned by {who}",
                path=str(self._path.parent),
                holder=msgspec.to_builtins(holder) if holder else None,
            ) from None
        me = Holder(os.getpid(), socket.gethostname(), time.time(), sys.argv[:8])
        os.ftruncate(fd, 0)
        os.pwrite(fd, msgspec.json.encode(me), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
