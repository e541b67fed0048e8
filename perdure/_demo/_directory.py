"""The demo's data directory: used when new or empty, never wiped unless asked to.

The demo used to delete whatever perdure store sat in ``--dir`` before it began.
That is one mistyped path away from losing someone's runs, so now a directory that
already holds a store is wiped only with ``--force`` and added to with ``--keep``;
without either the demo stops before touching anything and prints the command lines
to type. Anything that is not a perdure store is refused even with ``--force``.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import trio

from perdure import ForeignDirectory, PerdureError, Runtime

__all__ = ["DirectoryNotEmpty", "perdure_command", "prepare_directory", "wipe_store_dir"]

_OWN_FILES = {"data.mdb", "lock.mdb", "perdure.lock"}


class DirectoryNotEmpty(PerdureError):
    """The demo's directory already holds a store and neither --force nor --keep was given."""

    code = "DIRECTORY_NOT_EMPTY"
    http_status = 409


def perdure_command() -> str:
    """The ``perdure`` command as the user can type it again from the same directory.

    ``.venv/bin/perdure`` when run that way (``make demo``), ``perdure`` when that
    is what ``PATH`` finds, else ``python -m perdure.cli`` with this interpreter.
    """
    argv0 = sys.argv[0] if sys.argv else ""
    if Path(argv0).name == "perdure" and os.path.isfile(argv0):
        found = shutil.which("perdure")
        if found is not None and os.path.samefile(found, argv0):
            return "perdure"
        return shlex.quote(argv0)
    return f"{shlex.quote(sys.executable)} -m perdure.cli"


def prepare_directory(
    path: Path, *, force: bool, keep: bool, retry: Callable[[str, str], str]
) -> None:
    """Make ``path`` ready for the demo without ever destroying data by surprise.

    A missing or empty directory is used as is. A directory holding anything but a
    perdure store is refused (:class:`~perdure.ForeignDirectory`), even with
    ``force``. A perdure store is added to with ``keep``, wiped with ``force``, and
    otherwise refused with :class:`DirectoryNotEmpty`, whose message spells out
    the commands to type (``retry(flags, directory)`` renders the demo's own command
    line with those flags, on that directory).
    """
    if not path.exists():
        return
    if not path.is_dir():
        raise ForeignDirectory(f"{path} exists and is not a directory", path=str(path))
    entries = set(os.listdir(path))
    if not entries:
        return
    foreign = sorted(entries - _OWN_FILES)
    if foreign:
        raise ForeignDirectory(
            f"refusing to use {path}: it is not a perdure data directory "
            f"(it holds {', '.join(foreign[:5])})",
            path=str(path),
        )
    if keep:
        return
    if not force:
        choices = [
            (retry("--force", str(path)), "wipe it and run the demo again"),
            (retry("--keep", str(path)), "add this demo's runs to it"),
            (retry("", f"{path}-2"), "use a new directory"),
        ]
        width = max(len(command) for command, _ in choices)
        raise DirectoryNotEmpty(
            f"{path} already holds a perdure store ({_count_runs(path)}); the demo never "
            "deletes one unasked. Type one of:\n"
            + "\n".join(f"  {command:<{width}}  # {what}" for command, what in choices),
            path=str(path),
        )
    wipe_store_dir(path)


def wipe_store_dir(path: Path) -> None:
    """Delete a perdure data directory, refusing anything else or a directory in use.

    Opening it first (administration mode: nothing runs) proves it is a perdure
    store this version can read and that no live process owns it
    (:class:`~perdure.DirectoryLocked` names the holder).
    """
    if not path.exists():
        return
    _count_runs(path)
    shutil.rmtree(path)


def _count_runs(path: Path) -> str:
    """``"1,234 runs"`` (``"over 1,000 runs"`` past one page), opening the store to see."""

    async def count() -> str:
        async with Runtime(path, recover=False, durability="process") as rt:
            page = rt.list(limit=1000)
        n = len(page.runs)
        return f"over {n:,} runs" if page.next_cursor is not None else f"{n:,} runs"

    return trio.run(count)
