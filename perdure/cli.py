"""The ``perdure`` command line.

::

    perdure runs list   [--dir D] [--status S] [--kind K] [--owner project:ID] [--limit N] [--json]
    perdure runs show   ID [--dir D] [--json]
    perdure runs events ID [--dir D] [--after N] [--follow] [--json]
    perdure runs cancel ID [--dir D] [--reason R] [--timeout S] [--json]
    perdure runs resume ID (--tool-result ID JSON | --approve K | --reject K | --event N JSON
                            | --input K JSON) [--url URL | --dir D] [--json]
    perdure runs logs ID [--dir D] [--after N] [--backward] [--follow] [--json]
    perdure schedules list|show NAME|pause NAME|resume NAME|trigger NAME [--key K]
    perdure targets MODULE:ATTR [--json]                           # perdure._cli_jobs
    perdure runs graph ID [--dir D] [--app MODULE:ATTR] [--json]     # perdure.graph
    perdure graph show NAME --app MODULE:ATTR [--run ID] [--dir D]  # Mermaid text
    perdure serve MODULE:ATTR [--host H] [--port P] [--token T]    # perdure.server
    perdure check --app MODULE:ATTR [--dir D] [--all] [--json]   # deploy check (R37)
    perdure backup [--dir D] OUT | perdure export RUN_ID [--dir D] [--out FILE]
    perdure demo  [--dir D] [--force|--keep] [--durability D] [--runs N] [--agents N] ...
    perdure bench [ARGS...]        # bench/throughput.py (``--quick``, ``--json OUT`` ...)

Reading commands (``list``, ``show``, ``events``) open the data directory
read-only, so they work beside the process that owns it (R27) and only ever see
committed state. ``cancel`` writes: it needs the directory to be free, otherwise
it fails with ``DIRECTORY_LOCKED`` naming the owner (cancel through the owning
process instead). It opens the directory in administration mode
(``Runtime(recover=False)``): nothing else is re-run or woken, and the host's
definitions are not needed.

The data directory defaults to ``$PERDURE_DIR``, else ``data/``. Errors of the
:class:`perdure.PerdureError` hierarchy print ``error: CODE: message`` on stderr
and exit with status 2; so do usage errors.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn, cast

import msgspec
import trio
from rich.console import Console, JustifyMethod
from rich.table import Table
from rich.text import Text

from perdure import _cli_jobs, _demo, _store_commands
from perdure._errors import InvalidInput, PerdureError, RunNotFound, StorageError
from perdure._errors import leaves as error_leaves
from perdure.agui import (
    Event,
    event_to_json,
    event_type,
    is_terminal_event,
)
from perdure.graph import _cli as _graph_cli
from perdure.runtime import STATUSES, Runtime, check_statuses, parse_cursor, validate_identifier
from perdure.server import _cli as _server_cli
from perdure.storage import (
    Conversation,
    Owner,
    Project,
    RunRecord,
    Store,
)

__all__ = ["main"]

KINDS = ("agent", "workflow", "job")
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130

_STATUS_STYLE = {
    "pending": "blue",
    "running": "cyan",
    "waiting": "magenta",
    "completed": "green",
    "failed": "bold red",
    "cancelled": "yellow",
}


# -- argument parsing ------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser that raises instead of exiting, so ``main`` returns a code."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        raise _UsageError(f"{self.prog}: {message}")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            sys.stderr.write(message)
        raise _Exit(status)


class _UsageError(Exception):
    pass


class _Exit(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def _default_dir() -> str:
    return os.environ.get("PERDURE_DIR") or "data/"


def _build_parser() -> _Parser:
    parser = _Parser(
        prog="perdure",
        description="perdure: embedded durable execution. Inspect and manage runs, run the "
        "demo or the throughput benchmark.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    dir_help = "data directory (default: $PERDURE_DIR, else data/)"

    def add_dir(p: argparse.ArgumentParser) -> None:
        p.add_argument("--dir", default=None, metavar="D", help=dir_help)

    runs = sub.add_parser("runs", help="list, show, follow and cancel runs")
    runs_sub = runs.add_subparsers(dest="runs_command", metavar="ACTION", parser_class=_Parser)
    runs_sub.required = True

    p = runs_sub.add_parser("list", help="list runs, oldest first")
    add_dir(p)
    p.add_argument(
        "--status",
        action="append",
        metavar="S",
        help=f"only this status (repeatable): {', '.join(STATUSES)}",
    )
    p.add_argument("--kind", metavar="K", help=f"only this kind: {', '.join(KINDS)}")
    p.add_argument(
        "--owner", metavar="OWNER", help="only runs of this owner: project:ID or conversation:ID"
    )
    p.add_argument("--parent", metavar="ID", help="only children of this run")
    p.add_argument("--root", metavar="ID", help="only runs of this run tree")
    p.add_argument("--limit", type=int, default=50, metavar="N", help="page size, 1-1000 (50)")
    p.add_argument("--after", metavar="CURSOR", help="cursor printed by the previous page")
    p.add_argument(
        "--json", action="store_true", help='print {"runs": [...], "next_cursor": ...} as JSON'
    )
    p.set_defaults(func=_cmd_list)

    p = runs_sub.add_parser("show", help="show one run record")
    p.add_argument("run_id", metavar="ID")
    add_dir(p)
    p.add_argument("--json", action="store_true", help="print the record as JSON")
    p.set_defaults(func=_cmd_show)

    p = runs_sub.add_parser("events", help="print a run's event log (AG-UI events)")
    p.add_argument("run_id", metavar="ID")
    add_dir(p)
    p.add_argument(
        "--after",
        type=int,
        default=0,
        metavar="N",
        help="only events with event_id > N (default 0)",
    )
    p.add_argument(
        "--follow",
        "-f",
        action="store_true",
        help="keep printing new events until the run's terminal event",
    )
    p.add_argument(
        "--poll",
        type=float,
        default=0.1,
        metavar="SECONDS",
        help="how often --follow looks for new events (default 0.1)",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help='JSON lines: {"run_id", "event_id", "event": <AG-UI wire event>}',
    )
    p.set_defaults(func=_cmd_events)

    p = runs_sub.add_parser(
        "cancel",
        help="cancel a run and its descendants (needs the directory to be free)",
    )
    p.add_argument("run_id", metavar="ID")
    add_dir(p)
    p.add_argument("--reason", default="cancelled from the command line", metavar="R")
    p.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="give up waiting for the cancellation after this long (default 60)",
    )
    p.add_argument(
        "--json", action="store_true", help='print {"cancelled": bool, "run": ...} as JSON'
    )
    p.set_defaults(func=_cmd_cancel)
    _server_cli.add_runs_resume(runs_sub, add_dir)
    _server_cli.add_serve(sub)
    _cli_jobs.add_runs_logs(runs_sub, add_dir)
    _cli_jobs.add_schedules(sub, add_dir)
    _cli_jobs.add_targets(sub)
    _store_commands.add_store_commands(sub, add_dir)
    _graph_cli.add_commands(sub, runs_sub, add_dir)

    p = sub.add_parser(
        "demo",
        help="show the product: throughput, waits and signals, run trees, timers, crash recovery",
    )
    p.add_argument(
        "--dir",
        default=_demo.DEFAULT_DIR,
        metavar="D",
        help=f"data directory (default {_demo.DEFAULT_DIR}); one that already holds a store "
        "needs --force (wipe it) or --keep (add to it)",
    )
    reuse = p.add_mutually_exclusive_group()
    reuse.add_argument("--force", action="store_true", help="wipe an existing store first")
    reuse.add_argument("--keep", action="store_true", help="add to an existing store")
    p.add_argument(
        "--durability",
        choices=("sync", "process", "memory"),
        default="sync",
        help="sync (default): every commit flushed; process: no fsync; memory: "
        "no fsync either (the data still goes to --dir)",
    )
    sizes = _demo.Sizes()
    for flag, metavar, what in (
        ("runs", "N", "short runs in the throughput section"),
        ("concurrency", "C", "of those in flight at once"),
        ("agents", "N", "agents waiting on tools and approvals"),
        ("trees", "N", f"order trees of {_demo.TREE_SIZE} runs each"),
        ("timers", "N", "runs sleeping on durable timers"),
        ("crash_runs", "N", "runs of the worker process that gets killed"),
    ):
        default = getattr(sizes, flag)
        p.add_argument(
            f"--{flag.replace('_', '-')}",
            dest=flag,
            type=int,
            default=default,
            metavar=metavar,
            help=f"{what} (default {default})",
        )
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser(
        "bench",
        add_help=False,
        help="run the throughput benchmark (bench/throughput.py; try `perdure bench --help`)",
    )
    p.set_defaults(func=_cmd_bench)
    return parser


# -- entry point -----------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``perdure`` command; returns the exit status."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = _build_parser()
    try:
        args, extra = parser.parse_known_args(args_list)
        if args.command != "bench" and extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.extra = extra
        func = cast(Callable[[argparse.Namespace], int], args.func)
        return func(args)
    except _UsageError as exc:
        sys.stderr.write(f"{exc}\n")
        return EXIT_ERROR
    except _Exit as exc:
        return exc.status
    except PerdureError as exc:
        _print_error(exc)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `perdure runs events X | head`: the reader left; not an error of ours.
        _silence_stdout()
        return EXIT_OK
    except BaseExceptionGroup as group:
        # Errors raised inside `async with rt:` arrive wrapped by trio's nursery.
        leaves = error_leaves(group)
        if leaves and all(isinstance(e, KeyboardInterrupt) for e in leaves):
            return EXIT_INTERRUPTED
        if leaves and all(isinstance(e, PerdureError) for e in leaves):
            for leaf in leaves:
                _print_error(cast(PerdureError, leaf))
            return EXIT_ERROR
        raise


def _print_error(exc: PerdureError) -> None:
    sys.stderr.write(f"error: {exc.code}: {exc.message}\n")
    hint = exc.detail.get("hint") if isinstance(exc.detail, dict) else None
    if hint:
        sys.stderr.write(f"hint: {hint}\n")


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def _console() -> Console:
    out = sys.stdout
    wide = None if out.isatty() else 200
    # markup=False: stored strings (inputs, ids, reasons) are printed as they are, never
    # interpreted as rich markup ("[/]" would crash, "[link=...]" would become a live link).
    return Console(file=out, width=wide, highlight=False, markup=False)


def _write_json(value: Any) -> None:
    sys.stdout.write(msgspec.json.encode(value).decode() + "\n")


def _resolve_dir(args: argparse.Namespace) -> str:
    return cast(str, args.dir) if args.dir else _default_dir()


@contextmanager
def _open_readonly(directory: str) -> Iterator[Store]:
    store = Store(directory, readonly=True)
    try:
        yield store
    finally:
        store.close()


# -- runs list -------------------------------------------------------------------------------


def parse_owner(text: str) -> Owner:
    """``project:ID`` / ``conversation:ID`` (or ``p:ID`` / ``c:ID``) as an owner."""
    prefix, sep, ident = text.partition(":")
    if sep and ident:
        if prefix in ("project", "p"):
            return Project(ident)
        if prefix in ("conversation", "c"):
            return Conversation(ident)
    raise InvalidInput(
        f"--owner must be project:ID or conversation:ID (got {text!r})", field="owner"
    )


def _cmd_list(args: argparse.Namespace) -> int:
    statuses = None
    if args.status:
        items = [s for item in cast(list[str], args.status) for s in item.split(",")]
        statuses = check_statuses(items, what="--status")
    kind = cast(str | None, args.kind)
    if kind is not None and kind not in KINDS:
        raise InvalidInput(f"--kind must be one of {', '.join(KINDS)} (got {kind!r})")
    limit = cast(int, args.limit)
    if not 1 <= limit <= 1000:
        raise InvalidInput(f"--limit must be from 1 to 1000 (got {limit})")
    after = parse_cursor(cast(str | None, args.after), what="--after")
    owner = parse_owner(args.owner) if args.owner else None
    with _open_readonly(_resolve_dir(args)) as store:
        runs, cursor = store.query_runs(
            owner=owner,
            statuses=statuses,
            kind=kind,
            parent_id=args.parent,
            root_id=args.root,
            after=after,
            limit=limit,
        )
    next_cursor = None if cursor is None else str(cursor)
    if args.json:
        _write_json({"runs": runs, "next_cursor": next_cursor})
        return EXIT_OK
    console = _console()
    if not runs:
        console.print("no runs")
        return EXIT_OK
    table = Table(header_style="bold", box=None, pad_edge=False)
    columns: list[tuple[str, JustifyMethod]] = [
        ("ID", "left"),
        ("KIND", "left"),
        ("TARGET", "left"),
        ("OWNER", "left"),
        ("STATUS", "left"),
        ("CREATED", "left"),
        ("DURATION", "right"),
        ("EVENTS", "right"),
    ]
    for name, justify in columns:
        table.add_column(name, justify=justify, no_wrap=True)
    for rec in runs:
        table.add_row(
            rec.id,
            rec.kind,
            rec.target,
            _owner_text(rec.owner),
            Text(rec.status, style=_STATUS_STYLE.get(rec.status, "")),
            _time(rec.created_at),
            _duration(rec),
            str(rec.last_event_id),
        )
    console.print(table)
    if next_cursor is not None:
        console.print(f"more runs: add --after {next_cursor}", style="dim")
    return EXIT_OK


# -- runs show -------------------------------------------------------------------------------


def _get(store: Store, run_id: str) -> RunRecord:
    validate_identifier(run_id, "run id")
    rec = store.get_run(run_id)
    if rec is None:
        raise RunNotFound(f"no run {run_id!r} in {store.path}", run_id=run_id)
    return rec


def _cmd_show(args: argparse.Namespace) -> int:
    run_id = cast(str, args.run_id)
    with _open_readonly(_resolve_dir(args)) as store:
        rec = _get(store, run_id)
    if args.json:
        _write_json(rec)
        return EXIT_OK
    console = _console()
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    table.add_row("id", rec.id)
    table.add_row("kind", rec.kind)
    table.add_row("target", rec.target)
    table.add_row("owner", _owner_text(rec.owner))
    table.add_row("status", Text(rec.status, style=_STATUS_STYLE.get(rec.status, "")))
    if rec.parent_id is not None:
        table.add_row("parent", rec.parent_id)
    if rec.root_id != rec.id:
        table.add_row("root", rec.root_id)
    trigger = rec.trigger.type + (f" ({rec.trigger.ref})" if rec.trigger.ref else "")
    table.add_row("trigger", trigger)
    if rec.idempotency_key is not None:
        table.add_row("idempotency key", rec.idempotency_key)
    table.add_row("created", _time(rec.created_at))
    if rec.started_at is not None:
        table.add_row("started", _time(rec.started_at))
    if rec.finished_at is not None:
        table.add_row("finished", _time(rec.finished_at))
    table.add_row("duration", _duration(rec))
    table.add_row("events", str(rec.last_event_id))
    table.add_row("journal entries", str(rec.journal_len))
    if rec.attempt != 1:
        table.add_row("attempt", str(rec.attempt))
    if rec.waiting is not None:
        waits = ", ".join(f"{w.key} ({w.reason})" for w in rec.waiting.waits)
        table.add_row("waiting", f"{rec.waiting.reason}: {waits}")
    if rec.cancel is not None:
        table.add_row("cancel requested", f"{_time(rec.cancel.requested_at)}: {rec.cancel.reason}")
    table.add_row("input", _short_json(rec.input))
    completion = rec.completion
    if completion is not None:
        if completion.error is not None:
            table.add_row(
                "error", Text(f"{completion.error.code}: {completion.error.message}", style="red")
            )
        if completion.result is not None:
            table.add_row("result", _short_json(completion.result))
        for label, value in (
            ("model", completion.model),
            ("provider", completion.provider),
            ("finish reason", completion.finish_reason),
        ):
            if value is not None:
                table.add_row(label, value)
        if completion.usage:
            table.add_row("usage", _short_json(completion.usage))
    console.print(table)
    return EXIT_OK


# -- runs events -----------------------------------------------------------------------------


def _cmd_events(args: argparse.Namespace) -> int:
    run_id = cast(str, args.run_id)
    after = cast(int, args.after)
    if not 0 <= after < 2**63:
        raise InvalidInput(f"--after must be from 0 to 2**63-1 (got {after})")
    poll = cast(float, args.poll)
    if not 0 < poll <= 60:
        raise InvalidInput(f"--poll must be between 0 and 60 seconds (got {poll})")
    as_json = bool(args.json)
    console = None if as_json else _console()
    with _open_readonly(_resolve_dir(args)) as store:
        _get(store, run_id)
        cursor = after
        while True:
            batch = store.read_events(run_id, cursor, 1024)
            for event_id, event in batch:
                cursor = event_id
                _print_event(console, run_id, event_id, event)
                if args.follow and is_terminal_event(event):
                    return EXIT_OK
            if len(batch) == 1024:
                continue
            if not args.follow:
                return EXIT_OK
            rec = _get(store, run_id)
            if rec.terminal and rec.last_event_id <= cursor:
                return EXIT_OK
            sys.stdout.flush()
            time.sleep(poll)


def _print_event(console: Console | None, run_id: str, event_id: int, event: Event) -> None:
    wire = event_to_json(event)
    if console is None:
        sys.stdout.write(
            f'{{"run_id":{json.dumps(run_id)},"event_id":{event_id},"event":{wire.decode()}}}\n'
        )
        sys.stdout.flush()
        return
    kind = event_type(event)
    body: dict[str, Any] = msgspec.json.decode(wire)
    body.pop("type", None)
    style = "bold" if kind.startswith("RUN_") else ""
    if kind == "RUN_ERROR":
        style = "bold red"
    line = Text(f"{event_id:>6}  ")
    line.append(f"{kind:<24}", style=style)
    line.append(" " + _short_json(body, 160) if body else "")
    console.print(line, soft_wrap=True)
    console.file.flush()


# -- runs cancel -----------------------------------------------------------------------------


def _cmd_cancel(args: argparse.Namespace) -> int:
    run_id = cast(str, args.run_id)
    timeout = cast(float, args.timeout)
    if not timeout > 0:
        raise InvalidInput(f"--timeout must be positive (got {timeout})")
    directory = _resolve_dir(args)
    with _open_readonly(directory) as store:
        rec = _get(store, run_id)
    if rec.terminal:
        return _report_cancel(args, False, rec)
    cancelled, final = trio.run(_cancel_async, directory, run_id, cast(str, args.reason), timeout)
    return _report_cancel(args, cancelled, final)


async def _cancel_async(
    directory: str, run_id: str, reason: str, timeout: float
) -> tuple[bool, RunRecord]:
    # Administration mode: opening re-runs nothing, fires no timer, and cancels runs
    # whose targets this process does not define. A directory owned by a live
    # process is refused with DIRECTORY_LOCKED naming it (R27).
    async with Runtime(directory, durability="sync", recover=False) as rt:
        with trio.move_on_after(timeout):
            result = await rt.cancel(run_id, reason)
            return result.cancelled, result.run
    raise StorageError(
        f"run {run_id} did not finish cancelling within {timeout:g} s",
        run_id=run_id,
        hint="a cancellation that was recorded completes when the directory is next opened; "
        "check with `perdure runs show`",
    )


def _report_cancel(args: argparse.Namespace, cancelled: bool, rec: RunRecord) -> int:
    if args.json:
        _write_json({"cancelled": cancelled, "run": rec})
        return EXIT_OK
    console = _console()
    if cancelled:
        console.print(Text.assemble(f"cancelled run {rec.id}: status ", (rec.status, "yellow")))
    else:
        console.print(f"run {rec.id} is already {rec.status}: nothing to cancel")
    return EXIT_OK


# -- demo and bench --------------------------------------------------------------------------


def _cmd_demo(args: argparse.Namespace) -> int:
    sizes = _demo.Sizes(
        **{name: cast(int, getattr(args, name)) for name in _demo.Sizes.__dataclass_fields__}
    )
    return _demo.run_demo(
        cast(str, args.dir),
        sizes=sizes,
        durability=args.durability,
        keep=bool(args.keep),
        force=bool(args.force),
        console=Console(file=sys.stdout, highlight=False),
    )


def _find_bench() -> Path | None:
    """The repository's bench/throughput.py, next to this perdure checkout.

    Never one found from the current directory: running ``perdure bench`` in a
    directory someone else controls must not execute their code.
    """
    path = Path(__file__).resolve().parent.parent / "bench" / "throughput.py"
    return path if path.is_file() else None


def _cmd_bench(args: argparse.Namespace) -> int:
    extra = cast(list[str], args.extra)
    path = _find_bench()
    if path is None:
        return _builtin_bench(extra)
    spec = importlib.util.spec_from_file_location("perdure_bench_throughput", path)
    if spec is None or spec.loader is None:
        raise StorageError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        bench_main = cast(Callable[[list[str]], int], module.main)
        try:
            return int(bench_main(extra) or 0)
        except SystemExit as exc:  # its own argparse (--help, usage errors)
            return exc.code if isinstance(exc.code, int) else EXIT_ERROR
    finally:
        sys.modules.pop(spec.name, None)


def _builtin_bench(extra: list[str]) -> int:
    """A small stand-in when bench/throughput.py is not around (e.g. installed wheel)."""
    import tempfile

    if extra:
        raise InvalidInput(f"the built-in quick bench takes no arguments (got {' '.join(extra)})")
    console = Console(file=sys.stdout, highlight=False)
    table = Table(title="perdure quick bench: trivial workflow runs", header_style="bold")
    for name in ("durability", "in flight", "runs", "runs/s", "records/s", "LMDB txns"):
        table.add_column(name, justify="right")

    async def trivial(ctx: Any, inp: Any) -> None:
        return None

    with tempfile.TemporaryDirectory(prefix="perdure-bench-", dir=Path.cwd()) as tmp:
        for durability in ("sync", "process"):
            for inflight in (1, 100):
                count = max(200, 10 * inflight)
                rt = Runtime(Path(tmp) / f"{durability}-{inflight}", durability=durability)
                rt.workflow("noop", input_type=Any)(trivial)

                async def run(rt: Runtime, count: int, inflight: int) -> _demo.DriveResult:
                    async with rt:
                        return await _demo.drive(
                            rt, lambda i: ("workflow:noop", None, Project("bench")), count, inflight
                        )

                res = trio.run(run, rt, count, inflight)
                table.add_row(
                    durability,
                    str(inflight),
                    str(count),
                    f"{res.runs_per_s:,.0f}",
                    f"{res.records_per_s:,.0f}",
                    str(res.txns),
                )
    console.print(table)
    return EXIT_OK


# -- formatting ------------------------------------------------------------------------------


def _owner_text(owner: Owner) -> str:
    return ("conversation:" if isinstance(owner, Conversation) else "project:") + owner.id


def _time(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def _duration(rec: RunRecord) -> str:
    start = rec.started_at if rec.started_at is not None else rec.created_at
    end = rec.finished_at
    if end is None:
        return "-"
    seconds = max(0.0, end - start)
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min"


def _short_json(value: Any, limit: int = 400) -> str:
    try:
        text = msgspec.json.encode(value).decode()
    except (TypeError, msgspec.EncodeError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


if __name__ == "__main__":
    raise SystemExit(main())
