"""Command lines for long-lived stores (R37, R38): ``check``, ``backup``, ``export``.

::

    perdure check --app MODULE:ATTR [--dir D] [--timeout S] [--all] [--json]
    perdure backup [--dir D] OUT [--json]
    perdure export RUN_ID [--dir D] [--out FILE]

``check`` imports ``MODULE`` (from the current directory first) and takes its
``ATTR``, a :class:`perdure.Runtime` (or a function returning one) carrying the code to
deploy. It does not open that runtime: it replays every unfinished run of the data
directory (``--dir``, else the runtime's own directory) against the runtime's
definitions without acting (:meth:`perdure.Runtime.check`), from a read-only view, so
it works beside the process that owns the directory and on a backup. Exit status 0
when every run would go on, 1 when at least one would fail or diverge (each is listed:
the run, what it recorded, what the code asks for instead), 2 on errors.

``backup`` copies the store of ``--dir`` into the new directory ``OUT`` (which must
not exist, or be empty) while its owner keeps running: one consistent, compacted
snapshot (:func:`perdure.storage.backup_store`). The copy opens like the original.

``export`` writes one run as JSON lines: first ``{"run": <record>}``, then one line
per event, ``{"run_id", "event_id", "event": <AG-UI wire JSON>}`` (the shape of
``perdure runs events --json``), to stdout or ``--out``.

Stored strings are printed literally (no terminal markup).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from collections.abc import Callable
from typing import IO, Any, cast

import msgspec
import trio
from rich.console import Console
from rich.table import Table
from rich.text import Text

from perdure._errors import InvalidInput, RunNotFound, StorageError
from perdure._load_app import load_runtime
from perdure.agui import decode_event, event_to_json
from perdure.runtime import CheckReport, RunCheck
from perdure.server._cli import literal
from perdure.storage import RunRecord, Store, backup_store

__all__ = ["add_store_commands"]

EXIT_OK = 0
EXIT_FAILED = 1


def add_store_commands(sub: Any, add_dir: Callable[[argparse.ArgumentParser], None]) -> None:
    """Register ``check``, ``backup`` and ``export`` on the top-level subparsers."""
    p = sub.add_parser(
        "check",
        help="replay every unfinished run against new code, acting on nothing (deploy check)",
    )
    p.add_argument("--app", required=True, metavar="MODULE:ATTR", help="the Runtime, e.g. app:rt")
    p.add_argument(
        "--dir", default=None, metavar="D", help="data directory (default: the runtime's own)"
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="how long one body may block outside journaled calls (default 5)",
    )
    p.add_argument("--all", action="store_true", help="list every run, not only failing ones")
    p.add_argument("--json", action="store_true", help="print the whole report as JSON")
    p.set_defaults(func=_cmd_check)

    p = sub.add_parser("backup", help="copy a live store, consistent and compacted, into OUT")
    add_dir(p)
    p.add_argument("out", metavar="OUT", help="a new (or empty) directory for the copy")
    p.add_argument("--json", action="store_true", help="print what was written as JSON")
    p.set_defaults(func=_cmd_backup)

    p = sub.add_parser("export", help="write a run and its events as JSON lines")
    p.add_argument("run_id", metavar="RUN_ID")
    add_dir(p)
    p.add_argument("--out", default=None, metavar="FILE", help="write here (default: stdout)")
    p.set_defaults(func=_cmd_export)


def _directory(args: argparse.Namespace) -> str:
    return cast(str, args.dir) if args.dir else os.environ.get("PERDURE_DIR") or "data/"


# -- check -----------------------------------------------------------------------------------


def _cmd_check(args: argparse.Namespace) -> int:
    if not args.timeout > 0:
        raise InvalidInput(f"--timeout must be positive (got {args.timeout})")
    rt = load_runtime(cast(str, args.app))
    directory = cast(str | None, args.dir) or rt.path
    if directory is None:
        raise InvalidInput(f"{args.app} keeps no directory: pass --dir")
    report: CheckReport = trio.run(
        functools.partial(rt.check, directory, timeout=float(args.timeout))
    )
    if args.json:
        sys.stdout.write(
            msgspec.json.encode({"ok": report.ok, "runs": report.runs}).decode() + "\n"
        )
        return EXIT_OK if report.ok else EXIT_FAILED
    console = Console(file=sys.stdout, highlight=False, width=None if sys.stdout.isatty() else 200)
    failing = report.failing
    shown = report.runs if args.all else failing
    if shown:
        table = Table(header_style="bold", box=None, pad_edge=False)
        for name in ("RUN", "TARGET", "STATUS", "VERSION", "OUTCOME", "DETAIL"):
            table.add_column(name, no_wrap=name != "DETAIL", overflow="fold")
        for run in shown:
            table.add_row(
                Text(literal(run.run_id)),
                Text(literal(run.target)),
                run.status,
                _versions(run),
                Text(run.outcome, style="green" if run.ok else "bold red"),
                Text(literal(_detail(run))),
            )
        console.print(table)
    summary = Text(f"checked {len(report.runs)} unfinished runs in {literal(directory)}: ")
    summary.append(f"{len(report.runs) - len(failing)} ok", style="green")
    if failing:
        summary.append(", ")
        summary.append(f"{len(failing)} would fail", style="bold red")
    console.print(summary, soft_wrap=True)
    return EXIT_OK if report.ok else EXIT_FAILED


def _versions(run: RunCheck) -> str:
    if run.version == run.code_version:
        return "" if run.version is None else str(run.version)
    return f"{run.version if run.version is not None else '-'} -> {run.code_version}"


def _call(call: dict[str, Any] | None) -> str:
    if not call:
        return "?"
    if call.get("kind") == "end":
        return "the end of the body"
    where = f" at position {call['position']}" if call.get("position") is not None else ""
    return f"{call.get('kind')} {call.get('name')!r}{where}"


def _detail(run: RunCheck) -> str:
    if run.outcome == "mismatch":
        return f"recorded {_call(run.recorded)}; the code now asks for {_call(run.new)}"
    if run.outcome == "ok":
        return f"next: {_call(run.stopped_at)}" if run.stopped_at else ""
    return run.message


# -- backup ----------------------------------------------------------------------------------


def _cmd_backup(args: argparse.Namespace) -> int:
    source = _directory(args)
    store = Store(source, readonly=True)
    try:
        info = backup_store(store, cast(str, args.out))
    finally:
        store.close()
    if args.json:
        sys.stdout.write(msgspec.json.encode(info).decode() + "\n")
        return EXIT_OK
    sys.stdout.write(
        f"backup of {literal(source)} written to {literal(info.path)}: {info.runs} runs, "
        f"{info.bytes / 1e6:.1f} MB (the live file: {info.source_bytes / 1e6:.1f} MB) "
        f"in {info.seconds:.2f} s\n"
    )
    return EXIT_OK


# -- export ----------------------------------------------------------------------------------


def _cmd_export(args: argparse.Namespace) -> int:
    run_id = cast(str, args.run_id)
    target = cast(str | None, args.out)
    store = Store(_directory(args), readonly=True)
    try:
        rec = store.get_run(run_id)
        if rec is None:
            raise RunNotFound(f"no run {run_id!r} in {store.path}", run_id=run_id)
        out: IO[str]
        if target is None:
            out = sys.stdout
        else:
            try:
                out = open(target, "w", encoding="utf-8")  # noqa: SIM115
            except OSError as exc:
                raise InvalidInput(
                    f"--out: cannot write {literal(target)}: {exc.strerror or exc}", field="out"
                ) from None
        try:
            _write_export(store, rec, run_id, out)
        except OSError as exc:
            if out is sys.stdout:
                raise  # a closed pipe (`| head`) is the entry point's to answer
            raise StorageError(
                f"--out: writing {literal(target)} failed: {exc.strerror or exc}", path=target
            ) from None
        finally:
            if out is not sys.stdout:
                out.close()
    finally:
        store.close()
    return EXIT_OK


def _write_export(store: Store, rec: RunRecord, run_id: str, out: IO[str]) -> None:
    out.write(msgspec.json.encode({"run": rec}).decode() + "\n")
    after = 0
    prefix = '{"run_id":' + json.dumps(run_id) + ',"event_id":'
    while batch := store.events(run_id, after, 1024):
        for event_id, raw in batch:
            wire = event_to_json(decode_event(raw)).decode()
            out.write(f'{prefix}{event_id},"event":{wire}}}\n')
            after = event_id
