"""The volatile file system itself: what a power cut keeps and what it loses.

Each test writes through the mount, cuts the power (``VolatileMount.cut``, which also
remounts what is durable) and reads back. See ``volatile_fs.py`` for the model.
"""

from __future__ import annotations

import mmap
import os
import signal
import subprocess
import sys
from pathlib import Path

import lmdb
import pytest
from volatile_fs import VolatileMount, VolatileMountError


def mnt(m: VolatileMount) -> Path:
    return m.mountpoint


def make_synced(path: Path, data: bytes) -> None:
    """A file whose name and contents are durable."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


# -- file contents -----------------------------------------------------------------------


def test_a_write_nobody_flushed_is_lost(vmount: VolatileMount) -> None:
    f = mnt(vmount) / "f"
    make_synced(f, b"durable!")
    fd = os.open(f, os.O_RDWR)
    os.pwrite(fd, b"VOLATILE and longer", 0)
    os.close(fd)
    assert f.read_bytes() == b"VOLATILE and longer"  # the writer sees its own write
    report = vmount.cut()
    assert report["dirty_bytes"] == len(b"VOLATILE and longer")
    assert f.read_bytes() == b"durable!"


@pytest.mark.parametrize("flush", [os.fsync, os.fdatasync])
def test_fsync_and_fdatasync_make_every_write_of_the_file_durable(
    vmount: VolatileMount, flush: object
) -> None:
    f = mnt(vmount) / "f"
    make_synced(f, b"")
    a = os.open(f, os.O_WRONLY)
    b = os.open(f, os.O_RDONLY)
    os.pwrite(a, b"one", 0)
    os.pwrite(a, b"three", 8)
    assert callable(flush)
    flush(b)  # any descriptor of the file: the flush is per file
    os.pwrite(a, b"lost", 20)
    os.close(a)
    os.close(b)
    vmount.cut()
    assert f.read_bytes() == b"one" + bytes(5) + b"three"


@pytest.mark.parametrize("how", ["O_DSYNC", "O_SYNC", "RWF_DSYNC"])
def test_synchronous_writes_are_durable_but_only_their_own_range(
    vmount: VolatileMount, how: str
) -> None:
    f = mnt(vmount) / "f"
    make_synced(f, b"." * 16)
    plain = os.open(f, os.O_WRONLY)
    os.pwrite(plain, b"unsynced", 0)  # another range of the same file, never flushed
    if how == "RWF_DSYNC":
        fd = os.open(f, os.O_WRONLY)
        os.pwritev(fd, [b"SYNC"], 12, os.RWF_DSYNC)
    else:
        fd = os.open(f, os.O_WRONLY | getattr(os, how))
        os.pwrite(fd, b"SYNC", 12)
    os.pwrite(fd, b"+tail", 16)  # extends the file, synchronously only for the flags
    os.close(fd)
    os.close(plain)
    stats = vmount.stats()
    # The kernel follows each synchronous write with an FSYNC of the whole file; the
    # file system recognises it instead of flushing the unsynced range with it.
    assert stats["dsync_followup_fsyncs"] == stats["dsync_writes"] >= 1
    vmount.cut()
    tail = b"+tail" if how != "RWF_DSYNC" else b""
    assert f.read_bytes() == b"." * 12 + b"SYNC" + tail


def test_a_large_o_dsync_write_split_by_fuse_is_durable_whole(vmount: VolatileMount) -> None:
    f = mnt(vmount) / "f"
    make_synced(f, b"")
    data = os.urandom(3 * 1024 * 1024 + 123)  # several FUSE WRITE requests, one FSYNC
    fd = os.open(f, os.O_WRONLY | os.O_DSYNC)
    os.write(fd, data)
    os.close(fd)
    assert vmount.stats()["dsync_followup_fsyncs"] == 1
    vmount.cut()
    assert f.read_bytes() == data


def test_size_changes_need_a_flush_and_a_regrown_file_has_no_stale_bytes(
    vmount: VolatileMount,
) -> None:
    f, g = mnt(vmount) / "f", mnt(vmount) / "g"
    make_synced(f, b"0123456789")
    make_synced(g, b"0123456789")
    os.truncate(f, 3)  # never flushed
    fd = os.open(g, os.O_RDWR)
    os.ftruncate(fd, 2)
    os.ftruncate(fd, 6)
    os.fsync(fd)
    os.close(fd)
    vmount.cut()
    assert f.read_bytes() == b"0123456789"
    assert g.read_bytes() == b"01" + bytes(4)


def test_msync_of_a_shared_mapping_is_a_flush(vmount: VolatileMount) -> None:
    f = mnt(vmount) / "f"
    make_synced(f, bytes(8192))
    fd = os.open(f, os.O_RDWR)
    with mmap.mmap(fd, 8192) as mapped:
        mapped[0:5] = b"first"
        mapped.flush()  # msync(MS_SYNC): the kernel writes the page back, then FSYNC
        mapped[4096:4102] = b"second"
    os.close(fd)
    vmount.cut()
    data = f.read_bytes()
    assert data[0:5] == b"first"
    assert data[4096:4102] == bytes(6)


# -- the page cache and mmap -------------------------------------------------------------


def test_a_read_only_shared_mapping_sees_every_write_at_once(vmount: VolatileMount) -> None:
    """LMDB's pattern: MAP_SHARED read-only, writes through pwrite on other descriptors,
    here also from another process; the mapping exists before the writes."""
    f = mnt(vmount) / "f"
    make_synced(f, bytes(3 * 4096))
    rfd = os.open(f, os.O_RDONLY)
    view = mmap.mmap(rfd, 3 * 4096, prot=mmap.PROT_READ)
    assert view[4096:4100] == bytes(4)  # the page is cached now
    wfd = os.open(f, os.O_WRONLY)
    os.pwrite(wfd, b"mine", 4096)
    assert view[4096:4100] == b"mine"
    script = f"import os; fd = os.open({str(f)!r}, os.O_WRONLY); os.pwrite(fd, b'theirs', 8192)"
    subprocess.run([sys.executable, "-c", script], check=True)
    assert view[8192:8198] == b"theirs"
    sfd = os.open(f, os.O_WRONLY | os.O_DSYNC)
    os.pwrite(sfd, b"synced", 0)  # durable, and only this range
    assert view[0:6] == b"synced"
    view.close()
    for fd in (rfd, wfd, sfd):
        os.close(fd)
    vmount.cut()
    # A new mount, a new page cache: only what was flushed.
    rfd = os.open(f, os.O_RDONLY)
    with mmap.mmap(rfd, 3 * 4096, prot=mmap.PROT_READ) as view:
        assert view[0:6] == b"synced"
        assert view[4096:4100] == bytes(4)
        assert view[8192:8198] == bytes(6)
    os.close(rfd)


def test_lmdb_keeps_a_synced_commit_and_loses_a_nosync_one(vmount: VolatileMount) -> None:
    """End to end through LMDB: data pages fdatasync-ed, meta page written O_DSYNC."""
    root = mnt(vmount)
    for name, sync in (("sync", True), ("nosync", False)):
        env = lmdb.open(str(root / name), sync=sync, metasync=sync, map_size=1 << 24)
        with env.begin(write=True) as txn:
            txn.put(b"k", b"v" * 5000)
        with env.begin() as txn:
            assert txn.get(b"k") == b"v" * 5000  # through the mapping
        env.close()
    vmount.cut()
    env = lmdb.open(str(root / "sync"), readonly=True, lock=False)
    with env.begin() as txn:
        assert txn.get(b"k") == b"v" * 5000
    env.close()
    assert not (root / "nosync").exists()  # never flushed: not even its directory


# -- names ---------------------------------------------------------------------------------


def test_a_created_file_nobody_flushed_is_gone(vmount: VolatileMount) -> None:
    root = mnt(vmount)
    (root / "new").write_bytes(b"never flushed")
    os.mkdir(root / "dir")
    vmount.cut()
    assert sorted(os.listdir(root)) == []


def test_flushing_a_new_file_makes_its_name_and_directories_durable(
    vmount: VolatileMount,
) -> None:
    """ext4's journal: the fsync commits the journal up to the file's own entries."""
    root = mnt(vmount)
    (root / "before").write_bytes(b"created first, never flushed")
    os.makedirs(root / "a" / "b")
    make_synced(root / "a" / "b" / "f", b"data")
    (root / "after").write_bytes(b"created after the flush")
    vmount.cut()
    assert (root / "a" / "b" / "f").read_bytes() == b"data"
    # Entries journaled before the flushed one are durable (jbd2 commits in order),
    # with the size their own flush would have made durable: none.
    assert (root / "before").read_bytes() == b""
    assert not (root / "after").exists()


def test_fsync_of_a_directory_makes_its_entries_durable(vmount: VolatileMount) -> None:
    root = mnt(vmount)
    make_synced(root / "old", b"content")
    os.rename(root / "old", root / "renamed")
    os.mkdir(root / "d")
    (root / "d" / "inner").write_bytes(b"x")
    dfd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    os.fsync(dfd)
    os.close(dfd)
    assert vmount.stats()["fsyncdirs"] == 1
    os.unlink(root / "renamed")  # after the flush: lost
    vmount.cut()
    assert sorted(os.listdir(root)) == ["d", "renamed"]
    assert (root / "renamed").read_bytes() == b"content"
    assert os.listdir(root / "d") == []  # d's own entries were not flushed


def test_unlink_and_rename_are_undone_unless_flushed(vmount: VolatileMount) -> None:
    root = mnt(vmount)
    make_synced(root / "a", b"A")
    make_synced(root / "b", b"B")
    os.unlink(root / "a")
    os.rename(root / "b", root / "c")
    vmount.cut()
    assert sorted(os.listdir(root)) == ["a", "b"]
    os.rename(root / "b", root / "c")
    make_synced(root / "c", b"C")  # fsync of c commits the rename that named it
    vmount.cut()
    assert sorted(os.listdir(root)) == ["a", "c"]
    assert (root / "c").read_bytes() == b"C"


# -- the cut itself ------------------------------------------------------------------------


@pytest.mark.parametrize("writeback", [0.0, 0.5, 1.0])
def test_writeback_lets_part_of_the_volatile_state_reach_the_disk(
    vmount: VolatileMount, writeback: float
) -> None:
    root = mnt(vmount)
    pages = 64
    make_synced(root / "f", bytes(pages * 4096))
    fd = os.open(root / "f", os.O_WRONLY)
    os.pwrite(fd, b"x" * (pages * 4096), 0)
    os.close(fd)
    for name in "ghijklmnop":
        (root / name).write_bytes(b"new")
    report = vmount.cut(writeback=writeback, seed=7)
    data = (root / "f").read_bytes()
    kept = sum(data[i * 4096 : (i + 1) * 4096] == b"x" * 4096 for i in range(pages))
    assert sum(data[i * 4096 : (i + 1) * 4096] == bytes(4096) for i in range(pages)) == pages - kept
    names = sorted(os.listdir(root))
    journal = report["journal_entries_written_back"]
    assert names == sorted(["f", *"ghijklmnop"[:journal]])  # a prefix of the journal
    # A new file's page can reach the disk only once its name has.
    contents = [(root / name).read_bytes() for name in names if name != "f"]
    assert set(contents) <= {b"", b"new"}
    assert kept + contents.count(b"new") == report["pages_written_back"]
    if writeback == 0.0:
        assert kept == journal == 0
    elif writeback == 1.0:
        assert kept == pages and journal == 10
    else:
        assert 0 < kept < pages


def test_a_cut_refuses_while_a_process_still_uses_the_mount(tmp_path: Path) -> None:
    """A cut must not leave a page cache alive: a user that was not killed is an error."""
    m = VolatileMount(tmp_path / "disk", tmp_path / "mnt")
    m.mount()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; f = open(sys.argv[1], 'w'); time.sleep(60)",
            str(m.mountpoint / "held"),
        ],
    )
    try:
        deadline = 100
        while not (m.mountpoint / "held").exists() and deadline:
            deadline -= 1
            subprocess.run(["sleep", "0.05"], check=True)
        with pytest.raises(VolatileMountError, match="cannot unmount"):
            m.cut(remount=False)
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    m.cut(remount=False)  # a dead mount: the unmount now goes through
    assert not m.mounted and not m._is_mounted()
