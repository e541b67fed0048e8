"""A FUSE file system that forgets, when the power is cut, everything nothing flushed.

SIGKILL leaves the kernel's page cache alone, so a process-crash test cannot see a
missing ``fsync``. This file system can: it keeps every change volatile until a flush
covers it, and a power cut drops whatever is still volatile.

Layout. The daemon (``python volatile_fs.py DURABLE LIVE MOUNTPOINT``, one process per
mount, controlled through its stdin/stdout by :class:`VolatileMount`) passes every
operation through to ``LIVE``, a scratch copy of the tree (on ``/dev/shm``), so what
processes on the mount see is an ordinary POSIX file system: their own writes, renames,
sizes, locks (the kernel keeps ``flock``/``fcntl`` locks itself, since the daemon
implements neither). ``DURABLE`` is "the disk": it only changes when a flush makes
something durable, and a new mount starts from a fresh copy of it. A power cut is the
daemon dying: ``LIVE`` is thrown away, the mount point is unmounted (so none of its page
cache survives) and a new daemon mounts a new copy of ``DURABLE``.

What counts as synced (the model is ext4 with a journal, data=ordered, taken at its
most forgetful; "durable" means copied into ``DURABLE``):

- File contents. Every written byte range is dirty until ``fsync``/``fdatasync`` of
  the file (any descriptor of it: the flush is per file, as in POSIX) or ``msync``,
  which the kernel turns into an fsync. Both make all of the file's dirty ranges and its
  size durable (fdatasync is not weaker here: a size change is data for fdatasync).
- ``O_DSYNC``/``O_SYNC`` writes (descriptor flags, or ``RWF_DSYNC`` per write) make
  exactly the written range durable, and extend the durable size to cover it; other
  dirty ranges of the file stay dirty, as a range-limited flush leaves them on Linux.
  The FUSE kernel module follows each such write with an FSYNC of the whole file;
  that one is recognised (the next FSYNC on the same handle after an O_DSYNC write) and
  does nothing more, otherwise every O_DSYNC write would flush the whole file.
- Size changes (``ftruncate``, writes past the end) are durable with the file's next
  flush. A shrink-then-grow is replayed as such (no stale bytes come back).
- Namespace changes (create, mkdir, unlink, rmdir, rename) go to an ordered journal.
  A flush of a file (fsync, fdatasync, an O_DSYNC write) or of a directory
  (``fsync`` on the directory) commits the journal up to the last entry that involves
  that path: its own creation or rename, its ancestors' creation, or for a directory
  any entry created, renamed or removed in it. That is what ext4 does (the fsync of a
  new file commits the journal transaction that holds its directory entry, and jbd2
  commits in order), minus ext4's generosity of committing the rest of the running
  transaction too. So a created file that nobody flushed is gone after a cut, a file
  that was fdatasync-ed is there with its directory, and a directory entry is never
  durable before the entries the journal had before it.
- Not modelled: permissions, owners and times (they follow ``LIVE`` only), hard and
  symbolic links (not supported), ``rename`` flags (mfusepy drops them), ``syncfs``
  (FUSE has no such request here: ``sync(1)`` makes nothing durable), torn sectors.

A cut can also let part of the volatile state reach the disk first, as the kernel's
writeback and jbd2's periodic commits do before a real power failure: with
``writeback=p`` each dirty 4 KiB page survives with probability ``p`` and the journal
keeps a random prefix (each next entry with probability ``p``). ``writeback=0`` (the
default) drops everything unsynced.

Page cache and mmap. LMDB reads ``data.mdb`` through a read-only ``MAP_SHARED`` mapping
and writes it with ``pwrite``. Files here are opened without ``direct_io`` (which would
bypass the page cache, so a mapping could keep stale pages, and which FUSE refuses for
shared mappings unless the kernel and libfuse agree on an extra capability) and
without ``keep_cache``. Without the writeback cache (never enabled here), FUSE writes
are write-through: ``write`` copies the data into the kernel's cached pages *and*
sends it to the daemon before returning, so a mapping of the same file sees the new
bytes at once, and a page the kernel does not hold is read from the daemon, which
reads ``LIVE``. Kernel cache and ``LIVE`` therefore never disagree while a mount
lives; a cut unmounts, which drops that cache with the superblock. Attribute, entry
and negative-entry timeouts are 0, so sizes and names always come from ``LIVE``.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import random
import select
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

PAGE = 4096
READY_TIMEOUT = 30.0
COMMAND_TIMEOUT = 60.0

Ranges = list[tuple[int, int]]


# -- availability ------------------------------------------------------------------------


def fuse_unavailable() -> str | None:
    """Why no volatile mount can be made here, or ``None`` if it can."""
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse"
    if shutil.which("fusermount3") is None:
        return "no fusermount3 (Debian package fuse3)"
    if os.geteuid() != 0:
        return "not root (the daemon mounts with mount(2) directly)"
    try:
        import mfusepy  # noqa: F401  (loads libfuse3 through ctypes)
    except ImportError as exc:
        return f"mfusepy or libfuse3 missing: {exc}"
    except OSError as exc:
        return f"libfuse3 not loadable: {exc}"
    return None


# -- the controller ----------------------------------------------------------------------


class VolatileMountError(RuntimeError):
    pass


class VolatileMount:
    """Mounts ``backing`` (the durable disk) volatile at ``mountpoint`` (default: a
    sibling ``<backing>.mnt``).

    ``with VolatileMount(disk, mnt) as m:`` mounts; use files under ``mnt``; kill every
    process that uses the mount, then ``m.cut()`` loses the volatile state and mounts
    what is durable again. Leaving the block cleanly flushes everything (as an orderly
    shutdown would) and unmounts; leaving it by an exception cuts the power.
    """

    def __init__(
        self, backing: Path, mountpoint: Path | None = None, *, log: Path | None = None
    ) -> None:
        self.backing = Path(backing)
        self.mountpoint = (
            Path(mountpoint)
            if mountpoint is not None
            else self.backing.with_name(self.backing.name + ".mnt")
        )
        self.log = (
            log
            if log is not None
            else self.mountpoint.with_name(self.mountpoint.name + ".daemon.log")
        )
        self.backing.mkdir(parents=True, exist_ok=True)
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        self._proc: subprocess.Popen[bytes] | None = None
        self._live: str | None = None
        self.mounts = 0
        self.cuts: list[dict[str, Any]] = []

    def __enter__(self) -> VolatileMount:
        self.mount()
        return self

    def __exit__(self, kind: object, exc: object, tb: object) -> None:
        if self._proc is None:
            return
        if kind is None:
            self.unmount()
        else:
            self.cut(remount=False)

    @property
    def mounted(self) -> bool:
        return self._proc is not None

    def mount(self) -> None:
        """Start a daemon on a fresh copy of ``backing``; returns once the mount serves."""
        if self._proc is not None:
            raise VolatileMountError(f"{self.mountpoint} is already mounted")
        if self._is_mounted():
            raise VolatileMountError(f"something is already mounted on {self.mountpoint}")
        shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
        self._live = tempfile.mkdtemp(prefix="volatile-live-", dir=shm)
        self.mounts += 1
        with self.log.open("ab") as sink:
            sink.write(f"--- mount {self.mounts}\n".encode())
            sink.flush()
            self._proc = subprocess.Popen(
                [
                    sys.executable,
                    os.path.abspath(__file__),
                    str(self.backing),
                    self._live,
                    str(self.mountpoint),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=sink,
            )
        reply = self._read_line(READY_TIMEOUT, "the daemon to mount")
        if reply.get("ready") is not True or not self._is_mounted():
            self._abandon()
            raise VolatileMountError(f"mount failed: {reply}\n{self.daemon_log()}")

    def stats(self) -> dict[str, Any]:
        """The daemon's counters and what is volatile right now."""
        return self._command("stats")

    def sync(self) -> dict[str, Any]:
        """Make everything durable, as ``sync`` would on a real disk."""
        return self._command("sync")

    def cut(self, *, writeback: float = 0.0, seed: int = 0, remount: bool = True) -> dict[str, Any]:
        """Cut the power: the volatile state is lost (all of it with ``writeback=0``),
        the mount point unmounted and, with ``remount``, what is durable mounted again.

        Kill the processes using the mount first: a live process would keep the mount
        busy, and would go on writing into a file system that lost its past.
        Returns what was lost: ``dirty_bytes``/``dirty_files`` (unsynced data),
        ``journal_entries`` (namespace changes), what ``writeback`` saved, the counters.
        """
        report: dict[str, Any] = {}
        if self._proc is not None:
            report = self._command(f"cut {writeback!r} {seed}")
            self._wait_daemon()
        # else the power is already off: an earlier cut could not unmount, try again.
        self._umount()
        self._discard_live()
        if report.get("errors"):
            raise VolatileMountError(f"the daemon hit errors: {report}\n{self.daemon_log()}")
        self.cuts.append(report)
        if remount:
            self.mount()
        return report

    def unmount(self) -> dict[str, Any]:
        """Orderly shutdown: flush everything, unmount, stop the daemon."""
        report = self.sync()
        try:
            self._umount()
        except VolatileMountError:
            self._abandon()
            raise
        self._wait_daemon()
        self._discard_live()
        if report.get("errors"):
            raise VolatileMountError(f"the daemon hit errors: {report}\n{self.daemon_log()}")
        return report

    def daemon_log(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""

    # -- plumbing -------------------------------------------------------------------------

    def _command(self, line: str) -> dict[str, Any]:
        proc = self._proc
        if proc is None or proc.stdin is None:
            raise VolatileMountError(f"{self.mountpoint} is not mounted")
        try:
            proc.stdin.write((line + "\n").encode())
            proc.stdin.flush()
        except BrokenPipeError:
            raise VolatileMountError(f"the daemon died:\n{self.daemon_log()}") from None
        return self._read_line(COMMAND_TIMEOUT, f"the daemon to answer {line!r}")

    def _read_line(self, timeout: float, what: str) -> dict[str, Any]:
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        line = proc.stdout.readline() if ready else b""
        if not line:
            self._abandon()
            raise VolatileMountError(
                f"timed out or EOF waiting for {what} (exit {proc.poll()}):\n{self.daemon_log()}"
            )
        result: dict[str, Any] = json.loads(line)
        return result

    def _wait_daemon(self) -> None:
        proc = self._proc
        if proc is None:
            return
        try:
            proc.wait(timeout=COMMAND_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        self._proc = None

    def _umount(self) -> None:
        """Unmount (also a mount whose daemon is gone); busy means a user is still alive."""
        last = ""
        for _ in range(40):  # a killed user may still be closing its files for a moment
            if not self._is_mounted():
                return
            done = subprocess.run(
                ["fusermount3", "-u", "-q", str(self.mountpoint)],
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode == 0:
                return
            last = done.stderr.strip()
            time.sleep(0.025)
        raise VolatileMountError(f"cannot unmount {self.mountpoint}: {last}")

    def _is_mounted(self) -> bool:
        """From /proc/self/mounts: ``os.path.ismount`` is False on a mount whose daemon died."""
        target = os.path.realpath(self.mountpoint)
        with open("/proc/self/mounts") as mounts:
            for line in mounts:
                fields = line.split()
                if len(fields) > 1 and fields[1].encode().decode("unicode_escape") == target:
                    return True
        return False

    def _discard_live(self) -> None:
        if self._live is not None:
            shutil.rmtree(self._live, ignore_errors=True)
            self._live = None

    def _abandon(self) -> None:
        proc = self._proc
        if proc is not None:
            proc.kill()
            self._wait_daemon()
        with contextlib.suppress(VolatileMountError):
            self._umount()
        if self._is_mounted():  # still busy: detach it, its users keep the old files
            subprocess.run(["fusermount3", "-u", "-z", "-q", str(self.mountpoint)], check=False)
        self._discard_live()


# -- byte ranges -------------------------------------------------------------------------


def add_range(ranges: Ranges, start: int, end: int) -> Ranges:
    """``ranges`` (sorted, disjoint, non-adjacent) with ``[start, end)`` added."""
    if start >= end:
        return ranges
    out: Ranges = []
    for a, b in ranges:
        if b < start or a > end:
            out.append((a, b))
        else:
            start, end = min(a, start), max(b, end)
    out.append((start, end))
    out.sort()
    return out


def sub_range(ranges: Ranges, start: int, end: int) -> Ranges:
    """``ranges`` without ``[start, end)``."""
    out: Ranges = []
    for a, b in ranges:
        if b <= start or a >= end:
            out.append((a, b))
            continue
        if a < start:
            out.append((a, start))
        if b > end:
            out.append((end, b))
    return out


def range_bytes(ranges: Ranges) -> int:
    return sum(b - a for a, b in ranges)


# -- the daemon --------------------------------------------------------------------------

F = TypeVar("F", bound=Callable[..., Any])


def _op(method: F) -> F:
    """Serialise an operation with the control thread; count unexpected failures."""

    @functools.wraps(method)
    def run(self: VolatileFS, *args: Any) -> Any:
        with self.mutex:
            try:
                return method(self, *args)
            except OSError:
                raise
            except Exception:
                self.counters["errors"] += 1
                traceback.print_exc()
                raise

    return run  # type: ignore[return-value]


class Handle:
    __slots__ = ("dsync", "fd", "ino", "kernel_fsync_due")

    def __init__(self, fd: int, ino: int, dsync: bool) -> None:
        self.fd = fd
        self.ino = ino
        self.dsync = dsync
        self.kernel_fsync_due = False


class VolatileFS:
    """The operations (mfusepy, ``raw_fi``); paths are absolute inside the mount."""

    use_ns = True

    def __init__(self, durable: str, live: str) -> None:
        self.durable = durable
        self.live = live
        # Not ``lock``: that name would make mfusepy hand POSIX locks to the daemon.
        self.mutex = threading.Lock()
        self.handles: dict[int, Handle] = {}
        self.next_fh = 1
        self.dirty: dict[int, Ranges] = {}  # live inode -> byte ranges not yet durable
        self.shrunk: dict[int, int] = {}  # live inode -> smallest size since its last flush
        self.journal: list[tuple[Any, ...]] = []  # namespace changes not yet durable
        self.counters: Counter[str] = Counter()

    def _l(self, path: str) -> str:
        return self.live + path

    def _d(self, path: str) -> str:
        return self.durable + path

    # -- volatile state -----------------------------------------------------------------

    def _dirty(self, ino: int, start: int, end: int) -> None:
        self.dirty[ino] = add_range(self.dirty.get(ino, []), start, end)

    def _resized(self, ino: int, old: int, new: int) -> None:
        self.shrunk[ino] = min(self.shrunk.get(ino, old), new)
        if new < old and ino in self.dirty:
            self.dirty[ino] = sub_range(self.dirty[ino], new, max(old, new + 1))

    @staticmethod
    def _involves(entry: tuple[Any, ...], path: str, directory: bool) -> bool:
        for p in entry[1:]:
            if not isinstance(p, str):
                continue
            if p == path or path.startswith(p.rstrip("/") + "/"):
                return True  # the path itself, or an ancestor of it
            if directory and os.path.dirname(p) == path:
                return True  # an entry of the directory
        return False

    def _commit_journal(self, path: str, *, directory: bool = False) -> None:
        """Make the journal durable up to its last entry that involves ``path``."""
        last = -1
        for i, entry in enumerate(self.journal):
            if self._involves(entry, path, directory):
                last = i
        self._replay(last + 1)

    def _replay(self, count: int) -> None:
        for entry in self.journal[:count]:
            kind = entry[0]
            if kind == "mkdir":
                with contextlib.suppress(FileExistsError):
                    os.mkdir(self._d(entry[1]), entry[2])
            elif kind == "create":
                os.close(os.open(self._d(entry[1]), os.O_WRONLY | os.O_CREAT, entry[2]))
            elif kind == "unlink":
                os.unlink(self._d(entry[1]))
            elif kind == "rmdir":
                os.rmdir(self._d(entry[1]))
            elif kind == "rename":
                os.rename(self._d(entry[1]), self._d(entry[2]))
            self.counters["journal_entries_committed"] += 1
        del self.journal[:count]

    def _flush_file(self, path: str | None, fd: int, ino: int) -> None:
        """fsync: the file's name, size and every dirty range become durable."""
        self.counters["fsyncs"] += 1
        ranges = self.dirty.pop(ino, [])
        shrunk = self.shrunk.pop(ino, None)
        if path is None:
            return  # unlinked while open: nothing durable can name it
        self._commit_journal(path)
        size = os.fstat(fd).st_size
        dfd = os.open(self._d(path), os.O_WRONLY)
        try:
            if shrunk is not None:
                os.ftruncate(dfd, min(shrunk, os.fstat(dfd).st_size))
            os.ftruncate(dfd, size)
            for a, b in ranges:
                b = min(b, size)
                if a < b:
                    os.pwrite(dfd, os.pread(fd, b - a, a), a)
                    self.counters["bytes_synced"] += b - a
        finally:
            os.close(dfd)

    def _flush_range(self, path: str | None, fd: int, ino: int, start: int, end: int) -> None:
        """An O_DSYNC write: exactly ``[start, end)`` (and a size covering it) is durable."""
        self.counters["dsync_writes"] += 1
        if ino in self.dirty:
            self.dirty[ino] = sub_range(self.dirty[ino], start, end)
        if path is None:
            return
        self._commit_journal(path)
        dfd = os.open(self._d(path), os.O_WRONLY)
        try:
            os.pwrite(dfd, os.pread(fd, end - start, start), start)
            self.counters["bytes_synced"] += end - start
        finally:
            os.close(dfd)

    def _live_files(self) -> Iterator[tuple[str, os.stat_result]]:
        for top, dirs, files in os.walk(self.live):
            for name in dirs + files:
                full = os.path.join(top, name)
                st = os.lstat(full)
                if stat.S_ISREG(st.st_mode):
                    yield full[len(self.live) :], st

    def sync_all(self) -> None:
        self._replay(len(self.journal))
        for path, st in list(self._live_files()):
            if st.st_ino in self.dirty or st.st_ino in self.shrunk:
                fd = os.open(self._l(path), os.O_RDONLY)
                try:
                    self._flush_file(path, fd, st.st_ino)
                finally:
                    os.close(fd)
        self.dirty.clear()  # what is left belongs to files unlinked while open
        self.shrunk.clear()

    def volatile(self) -> dict[str, int]:
        return {
            "dirty_files": sum(1 for r in self.dirty.values() if r),
            "dirty_bytes": sum(range_bytes(r) for r in self.dirty.values()),
            "resized_files": len(self.shrunk),
            "journal_entries": len(self.journal),
        }

    def writeback(self, fraction: float, seed: int) -> dict[str, int]:
        """Before a cut: a random prefix of the journal and random dirty pages reach the disk."""
        rng = random.Random(seed)
        keep = 0
        while keep < len(self.journal) and rng.random() < fraction:
            keep += 1
        self._replay(keep)
        pages = 0
        for path, st in sorted(self._live_files()):
            ranges = self.dirty.get(st.st_ino)
            if not ranges or any(self._involves(e, path, False) for e in self.journal):
                continue  # its name is not durable (or names another file on the disk)
            fd = os.open(self._l(path), os.O_RDONLY)
            dfd = os.open(self._d(path), os.O_WRONLY)
            try:
                for a, b in ranges:
                    for page in range(a // PAGE, (b + PAGE - 1) // PAGE):
                        lo, hi = max(a, page * PAGE), min(b, (page + 1) * PAGE)
                        if rng.random() < fraction:
                            os.pwrite(dfd, os.pread(fd, hi - lo, lo), lo)
                            pages += 1
            finally:
                os.close(fd)
                os.close(dfd)
        return {"journal_entries_written_back": keep, "pages_written_back": pages}

    # -- operations ---------------------------------------------------------------------

    def init_with_config(self, conn: Any, config: Any) -> None:
        if config is not None:
            config.entry_timeout = 0.0
            config.negative_timeout = 0.0
            config.attr_timeout = 0.0
            config.hard_remove = 1  # no .fuse_hidden renames for files unlinked while open
            config.direct_io = 0
            config.kernel_cache = 0
            config.auto_cache = 0
        reply({"ready": True, "pid": os.getpid()})

    def destroy(self, path: str) -> None:
        pass

    @_op
    def getattr(self, path: str | None, fi: Any = None) -> dict[str, Any]:
        st = os.fstat(self.handles[fi.fh].fd) if path is None else os.lstat(self._l(path))
        keys = ("st_mode", "st_ino", "st_nlink", "st_uid", "st_gid", "st_size", "st_blocks")
        out: dict[str, Any] = {key: getattr(st, key) for key in keys}
        out.update(st_atime=st.st_atime_ns, st_mtime=st.st_mtime_ns, st_ctime=st.st_ctime_ns)
        return out

    @_op
    def access(self, path: str, amode: int) -> int:
        if not os.access(self._l(path), amode):
            raise OSError(errno.EACCES, "access")
        return 0

    @_op
    def readdir(self, path: str, fh: int) -> list[str]:
        return [".", "..", *os.listdir(self._l(path))]

    @_op
    def statfs(self, path: str) -> dict[str, int]:
        sv = os.statvfs(self._l(path))
        keys = ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files", "f_ffree")
        return {key: getattr(sv, key) for key in (*keys, "f_favail", "f_namemax")}

    @_op
    def mkdir(self, path: str, mode: int) -> int:
        os.mkdir(self._l(path), mode)
        self.journal.append(("mkdir", path, mode))
        return 0

    @_op
    def rmdir(self, path: str) -> int:
        os.rmdir(self._l(path))
        self.journal.append(("rmdir", path))
        return 0

    @_op
    def unlink(self, path: str) -> int:
        st = os.lstat(self._l(path))
        os.unlink(self._l(path))
        self.journal.append(("unlink", path))
        if not any(h.ino == st.st_ino for h in self.handles.values()):
            self.dirty.pop(st.st_ino, None)
            self.shrunk.pop(st.st_ino, None)
        return 0

    @_op
    def rename(self, old: str, new: str) -> int:
        replaced = None
        with contextlib.suppress(FileNotFoundError):
            replaced = os.lstat(self._l(new)).st_ino
        os.rename(self._l(old), self._l(new))
        self.journal.append(("rename", old, new))
        if replaced is not None and not any(h.ino == replaced for h in self.handles.values()):
            self.dirty.pop(replaced, None)
            self.shrunk.pop(replaced, None)
        return 0

    @_op
    def chmod(self, path: str, mode: int) -> int:
        os.chmod(self._l(path), mode)
        return 0

    @_op
    def chown(self, path: str, uid: int, gid: int) -> int:
        os.chown(self._l(path), uid, gid)
        return 0

    @_op
    def utimens(self, path: str, times: tuple[int, int] | None = None) -> int:
        os.utime(self._l(path), ns=times) if times else os.utime(self._l(path))
        return 0

    def _open(self, path: str, fi: Any, create_mode: int | None) -> int:
        flags = fi.flags
        live_flags = os.O_RDONLY if flags & os.O_ACCMODE == os.O_RDONLY else os.O_RDWR
        if create_mode is not None:
            existed = os.path.lexists(self._l(path))
            fd = os.open(self._l(path), live_flags | os.O_CREAT | (flags & os.O_EXCL), create_mode)
            if not existed:
                self.journal.append(("create", path, create_mode))
        else:
            fd = os.open(self._l(path), live_flags)
        st = os.fstat(fd)
        if flags & os.O_TRUNC and st.st_size:
            os.ftruncate(fd, 0)
            self._resized(st.st_ino, st.st_size, 0)
        handle = Handle(fd, st.st_ino, bool(flags & os.O_DSYNC))  # O_SYNC includes O_DSYNC
        fh = self.next_fh
        self.next_fh += 1
        self.handles[fh] = handle
        fi.fh = fh
        fi.direct_io = 0
        fi.keep_cache = 0
        self.counters["opens"] += 1
        return 0

    @_op
    def create(self, path: str, mode: int, fi: Any) -> int:
        return self._open(path, fi, stat.S_IMODE(mode))

    @_op
    def open(self, path: str, fi: Any) -> int:
        return self._open(path, fi, None)

    @_op
    def read(self, path: str | None, size: int, offset: int, fi: Any) -> bytes:
        self.counters["reads"] += 1
        return os.pread(self.handles[fi.fh].fd, size, offset)

    @_op
    def write(self, path: str | None, data: bytes, offset: int, fi: Any) -> int:
        handle = self.handles[fi.fh]
        written = os.pwrite(handle.fd, data, offset)
        self.counters["writes"] += 1
        self._dirty(handle.ino, offset, offset + written)
        if handle.dsync or fi.flags & os.O_DSYNC:
            self._flush_range(path, handle.fd, handle.ino, offset, offset + written)
            handle.kernel_fsync_due = True
        return written

    @_op
    def truncate(self, path: str | None, length: int, fi: Any = None) -> int:
        if path is None:
            raise OSError(errno.ENOENT, "truncate of an unlinked file")
        st = os.lstat(self._l(path))
        os.truncate(self._l(path), length)
        self._resized(st.st_ino, st.st_size, length)
        return 0

    @_op
    def flush(self, path: str | None, fi: Any) -> int:
        return 0

    @_op
    def release(self, path: str | None, fi: Any) -> int:
        handle = self.handles.pop(fi.fh)
        os.close(handle.fd)
        return 0

    @_op
    def fsync(self, path: str | None, datasync: int, fi: Any) -> int:
        handle = self.handles[fi.fh]
        if handle.kernel_fsync_due:
            # The FSYNC the kernel sends after an O_DSYNC write it already made durable.
            handle.kernel_fsync_due = False
            self.counters["dsync_followup_fsyncs"] += 1
            return 0
        self._flush_file(path, handle.fd, handle.ino)
        return 0

    @_op
    def fsyncdir(self, path: str | None, datasync: int, fh: int) -> int:
        self.counters["fsyncdirs"] += 1
        if path is not None:
            self._commit_journal(path, directory=True)
        return 0

    # -- control (stdin/stdout, its own thread) -----------------------------------------

    def control(self) -> None:
        for line in sys.stdin:
            words = line.split()
            if not words:
                continue
            with self.mutex:
                if words[0] == "stats":
                    reply({**self.volatile(), **self.counters})
                elif words[0] == "sync":
                    self.sync_all()
                    reply({**self.volatile(), **self.counters})
                elif words[0] == "cut":
                    saved = self.writeback(float(words[1]), int(words[2]))
                    reply({**self.volatile(), **saved, **self.counters})
                    os._exit(0)  # still holding the lock: nothing else reaches the disk
                else:
                    reply({"error": f"unknown command {line!r}"})
        os._exit(0)  # the controller is gone: so is the power


def reply(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def serve(durable: str, live: str, mountpoint: str) -> int:
    import logging

    import mfusepy

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    durable, live = os.path.abspath(durable), os.path.abspath(live)
    shutil.copytree(durable, live, symlinks=True, dirs_exist_ok=True)
    fs = VolatileFS(durable, live)
    threading.Thread(target=fs.control, daemon=True).start()
    mfusepy.FUSE(fs, mountpoint, raw_fi=True, foreground=True, nothreads=True, fsname="volatile")
    return 0


if __name__ == "__main__":
    sys.exit(serve(*sys.argv[1:4]))
