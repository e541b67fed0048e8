"""The jobs and cron command lines: ``runs logs``, ``schedules``, ``targets`` (R24, R25).

::

    perdure runs logs ID [--dir D] [--after N] [--limit N] [--backward] [--follow] [--json]
    perdure schedules list [--dir D] [--json]
    perdure schedules show NAME [--dir D] [--json]
    perdure schedules pause|resume NAME [--url URL | --dir D]
    perdure schedules trigger NAME [--key K] [--url URL | --dir D] [--json]
    perdure targets MODULE:ATTR [--json]

Reading commands open the data directory read-only, beside its owner (R27).
``pause``, ``resume`` and ``trigger`` change a schedule: through a live server with
``--url`` (token from ``$PERDURE_TOKEN``), or straight in a directory no process owns
(administration mode: nothing fires there; a triggered run is stored ``pending`` and
runs when the owner next opens the directory). ``targets`` imports the program's
runtime (like ``perdure serve``) and lists what it registers, with task schemas.

Stored strings are printed literally, never read as terminal markup.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.parse
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, cast

import msgspec
import trio
from rich.console import Console
from rich.table import Table
from rich.text import Text

from perdure._errors import InvalidInput, RunNotFound, ScheduleNotFound
from perdure._load_app import load_runtime
from perdure.runtime import Runtime, check_schedule_name, log_entry, schedule_info
from perdure.server._cli import check_url, literal, post_json, require_store
from perdure.storage import ScheduleRecord, Store

__all__ = ["add_runs_logs", "add_schedules", "add_targets"]

EXIT_OK = 0
EXIT_ERROR = 2

AddDir = Callable[[argparse.ArgumentParser], None]


def _dir(args: argparse.Namespace) -> str:
    return cast(str, args.dir) if args.dir else os.environ.get("PERDURE_DIR") or "data/"


def _console() -> Console:
    return Console(file=sys.stdout, highlight=False, width=None if sys.stdout.isatty() else 200)


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _write_json(value: Any) -> None:
    sys.stdout.write(msgspec.json.encode(value).decode() + "\n")


# -- runs logs -------------------------------------------------------------------------------


def add_runs_logs(runs_sub: Any, add_dir: AddDir) -> None:
    """Register ``perdure runs logs`` on the ``runs`` subparsers."""
    p = runs_sub.add_parser("logs", help="print a run's raw log entries (ctx.log)")
    p.add_argument("run_id", metavar="ID")
    add_dir(p)
    p.add_argument("--after", type=int, default=None, metavar="N", help="entries after seq N")
    p.add_argument("--limit", type=int, default=1000, metavar="N", help="at most N (1-1000)")
    p.add_argument("--backward", action="store_true", help="newest first")
    p.add_argument(
        "--follow", "-f", action="store_true", help="keep printing until the run has ended"
    )
    p.add_argument("--poll", type=float, default=0.2, metavar="SECONDS")
    p.add_argument("--json", action="store_true", help="JSON lines, one entry each")
    p.set_defaults(func=_cmd_logs)


def _cmd_logs(args: argparse.Namespace) -> int:
    run_id = cast(str, args.run_id)
    limit = cast(int, args.limit)
    if not 1 <= limit <= 1000:
        raise InvalidInput(f"--limit must be from 1 to 1000 (got {limit})")
    if args.follow and args.backward:
        raise InvalidInput("--follow reads forward; leave out --backward")
    if args.poll <= 0:
        raise InvalidInput("--poll must be positive")
    after = cast(int | None, args.after)
    if after is not None and not 0 <= after < 2**63:
        # As the HTTP route: a log seq is a u64 key; out of range is a usage error.
        raise InvalidInput(f"--after must be a log seq from 0 to 2**63-1 (got {after})")
    console = None if args.json else _console()
    store = Store(_dir(args), readonly=True)
    try:
        if store.get_run(run_id) is None:
            raise RunNotFound(f"no run {run_id!r}", run_id=run_id)
        cursor = after
        while True:
            page = store.logs(run_id, cursor, limit, backward=args.backward)
            for record in page:
                _print_log(console, log_entry(record))
                cursor = record.seq
            sys.stdout.flush()
            if not args.follow:
                return EXIT_OK
            if len(page) == limit:
                continue
            rec = store.get_run(run_id)
            if rec is not None and rec.terminal and not store.logs(run_id, cursor, 1):
                return EXIT_OK
            time.sleep(args.poll)
    finally:
        store.close()


def _print_log(console: Console | None, entry: Any) -> None:
    if console is None:
        _write_json(entry)
        return
    line = Text(f"{entry.seq:>6} {_when(entry.at)} ")
    style = {"error": "bold red", "warning": "yellow", "debug": "dim"}.get(entry.level)
    line.append(f"{entry.level:<7}", style=style)
    line.append(" ")
    if entry.step is not None:
        line.append(f"[{literal(entry.step)}] ", style="cyan")
    line.append(literal(entry.message))
    if entry.fields:
        line.append(" " + literal(json.dumps(entry.fields, default=str)), style="dim")
    console.print(line, soft_wrap=True)


# -- schedules -------------------------------------------------------------------------------


def add_schedules(sub: Any, add_dir: AddDir) -> None:
    """Register ``perdure schedules list|show|pause|resume|trigger``."""
    schedules = sub.add_parser("schedules", help="list, show, pause, resume, trigger schedules")
    actions = schedules.add_subparsers(dest="schedules_command", metavar="ACTION")
    actions.required = True

    p = actions.add_parser("list", help="every stored schedule")
    add_dir(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_list)

    p = actions.add_parser("show", help="one schedule: definition, counters, next ticks")
    p.add_argument("name", metavar="NAME")
    add_dir(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_show)

    for action, help_text in (
        ("pause", "stop firing (future ticks only)"),
        ("resume", "fire again, from now on"),
        ("trigger", "start a run now"),
    ):
        p = actions.add_parser(action, help=help_text)
        p.add_argument("name", metavar="NAME")
        p.add_argument("--url", default=None, help="a running server; token from $PERDURE_TOKEN")
        add_dir(p)
        p.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS")
        p.add_argument("--json", action="store_true")
        if action == "trigger":
            p.add_argument("--key", default=None, help="idempotency key: once per key")
        p.set_defaults(func=_cmd_change, action=action)


def _stored(directory: str, name: str | None = None) -> list[ScheduleRecord]:
    """Every stored schedule, or only ``name`` (read by its key)."""
    store = Store(directory, readonly=True)
    try:
        if name is None:
            return store.schedules()
        rec = store.get_schedule(name)
        return [] if rec is None else [rec]
    finally:
        store.close()


def _plain_info(rec: ScheduleRecord) -> dict[str, Any]:
    # Read beside the owner: which schedules its code declares is not known here, so the
    # next ticks are those it would have if declared, and "declared" is left out.
    info = msgspec.to_builtins(schedule_info(rec, True, time.time()))
    info.pop("declared", None)
    return cast(dict[str, Any], info)


def _cmd_list(args: argparse.Namespace) -> int:
    records = _stored(_dir(args))
    if args.json:
        _write_json({"schedules": [_plain_info(rec) for rec in records]})
        return EXIT_OK
    console = _console()
    if not records:
        console.print("no schedules")
        return EXIT_OK
    table = Table(header_style="bold", box=None, pad_edge=False)
    for column in ("NAME", "CRON", "ZONE", "TARGET", "STATE", "RUNS", "SKIPPED", "NEXT"):
        table.add_column(column)
    for rec in records:
        info = _plain_info(rec)
        upcoming = info["next_fire_times"]
        table.add_row(
            Text(literal(rec.name)),
            Text(rec.cron),
            Text(rec.timezone),
            Text(literal(rec.target)),
            Text("paused" if rec.paused else "active"),
            str(info["runs"]),
            str(rec.skipped),
            _when(upcoming[0] if upcoming else None),
        )
    console.print(table)
    return EXIT_OK


def _cmd_show(args: argparse.Namespace) -> int:
    name = check_schedule_name(args.name)
    found = _stored(_dir(args), name)
    if not found:
        raise ScheduleNotFound(f"no schedule {name!r}", name=name)
    info = _plain_info(found[0])
    if args.json:
        _write_json(info)
        return EXIT_OK
    console = _console()
    for key, value in info.items():
        if key in ("next_fire_times",):
            value = ", ".join(_when(t) for t in value) or "-"
        elif key.endswith("_at") and (value is None or isinstance(value, float | int)):
            value = _when(value)
        line = Text(f"{key:>20}  ")
        line.append(
            literal(json.dumps(value, default=str) if isinstance(value, dict | list) else value)
        )
        console.print(line, soft_wrap=True)
    return EXIT_OK


def _cmd_change(args: argparse.Namespace) -> int:
    name = check_schedule_name(args.name)
    action = cast(str, args.action)
    if not args.timeout > 0:
        raise InvalidInput(f"--timeout must be positive (got {args.timeout})")
    key = getattr(args, "key", None)
    if args.url:
        if args.dir:
            raise InvalidInput("give --url or --dir, not both")
        url = check_url(cast(str, args.url))
        answer = _change_remote(url, name, action, key, float(args.timeout))
        if answer is None:
            return EXIT_ERROR
    else:
        directory = _dir(args)
        require_store(directory)  # never create a store to change a schedule in it
        answer = trio.run(_change_local, directory, name, action, key, float(args.timeout))
    if args.json:
        _write_json(answer)
        return EXIT_OK
    console = _console()
    if action == "trigger":
        run = answer["run"]
        line = Text(f"triggered {literal(name)}: run {literal(run['id'])} ({run['status']})")
        if answer.get("duplicate"):
            line.append(" (already triggered with this key: duplicate)", style="dim")
    else:
        line = Text(f"{action}d {literal(name)}")
    console.print(line, soft_wrap=True)
    return EXIT_OK


async def _change_local(
    directory: str, name: str, action: str, key: str | None, timeout: float
) -> dict[str, Any]:
    async with Runtime(directory, durability="sync", recover=False) as rt:
        with trio.fail_after(timeout):
            if action == "pause":
                await rt.pause_schedule(name)
            elif action == "resume":
                await rt.resume_schedule(name)
            else:
                started = await rt.trigger_schedule(name, idempotency_key=key)
                return {
                    "accepted": True,
                    "duplicate": started.duplicate,
                    "run": msgspec.to_builtins(started.run),
                }
            return cast(dict[str, Any], msgspec.to_builtins(rt.get_schedule(name)))


def _change_remote(
    url: str, name: str, action: str, key: str | None, timeout: float
) -> dict[str, Any] | None:
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    token = os.environ.get("PERDURE_TOKEN")
    if token:
        headers["Authorization"] = f"Bearer {token}"
    body = json.dumps({"idempotency_key": key} if key is not None else {}).encode()
    address = f"{url.rstrip('/')}/schedules/{urllib.parse.quote(name, safe='')}/{action}"
    return post_json(url, address, body, headers, timeout)


# -- targets ---------------------------------------------------------------------------------


def add_targets(sub: Any) -> None:
    """Register ``perdure targets MODULE:ATTR``."""
    p = sub.add_parser("targets", help="list what a program's runtime registers (with schemas)")
    p.add_argument("app", metavar="MODULE:ATTR", help="where the Runtime is, e.g. app:rt")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_targets)


def _cmd_targets(args: argparse.Namespace) -> int:
    infos = load_runtime(cast(str, args.app)).targets()
    if args.json:
        _write_json({"targets": infos})
        return EXIT_OK
    console = _console()
    if not infos:
        console.print("no targets")
        return EXIT_OK
    table = Table(header_style="bold", box=None, pad_edge=False)
    for column in ("TARGET", "KIND", "TIMEOUT", "ATTEMPTS", "SCHEMAS", "DESCRIPTION"):
        table.add_column(column)
    for info in infos:
        schemas = "/".join(
            what
            for what, schema in (("in", info.input_schema), ("out", info.output_schema))
            if schema is not None
        )
        table.add_row(
            Text(literal(info.target)),
            info.kind,
            "-" if info.timeout is None else f"{info.timeout:g}s",
            "-" if info.max_attempts is None else str(info.max_attempts),
            schemas or "-",
            Text(literal((info.description or "").split("\n")[0])),
        )
    console.print(table)
    return EXIT_OK
