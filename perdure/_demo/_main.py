"""``perdure demo``: the sections in order, the summary, and the commands to inspect.

The demo process owns the data directory for sections 1-4, closes it so the crash
worker can own it (only one process may, R27), reads it in administration mode
after the kill, then reopens it for good: recovery, the AG-UI log excerpt and the
summary all read the store the user is left with.
"""

from __future__ import annotations

import os
import secrets
import shlex
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path

import msgspec
import trio
from rich.console import Console
from rich.table import Table

from perdure import InvalidInput, Runtime
from perdure.agui import (
    AGUIProtocolError,
    CustomEvent,
    RunFinishedEvent,
    RunFinishedInterruptOutcome,
    StepFinishedEvent,
    StepStartedEvent,
    TextMessageContentEvent,
    ToolCallResultEvent,
    ToolCallStartEvent,
    verify_prefixes,
)

from ._crash import Crash, Durability, inspect_at_kill, kill_worker, recover
from ._definitions import TREE_SIZE, register_demo
from ._directory import perdure_command, prepare_directory
from ._report import Report, status_table
from ._sections import Sizes, all_runs, signals, throughput, timers, trees

__all__ = ["DEFAULT_DIR", "run_demo"]

DEFAULT_DIR = "demo-data"


def run_demo(
    directory: str | os.PathLike[str] = DEFAULT_DIR,
    *,
    sizes: Sizes | None = None,
    durability: Durability = "sync",
    keep: bool = False,
    force: bool = False,
    console: Console | None = None,
    witness: str | os.PathLike[str] | None = None,
) -> int:
    """Run the demo; returns the process exit code (0 when every check held).

    An existing store in ``directory`` is wiped only with ``force`` and added to
    with ``keep``; otherwise :class:`DirectoryNotEmpty` says what to type.
    ``witness``: keep the crash section's witness file there (tests audit it);
    by default it lives in a temporary directory removed at the end.
    """
    sizes = sizes or Sizes()
    if min(sizes.runs, sizes.concurrency, sizes.trees, sizes.timers, sizes.crash_runs) < 1:
        raise InvalidInput("every demo size must be at least 1")
    if sizes.agents < 2:
        raise InvalidInput("--agents must be at least 2 (one of them gets a rejection)")
    if keep and force:
        raise InvalidInput("--keep and --force exclude each other")
    console = console or Console()
    path = Path(directory)
    prog = perdure_command()
    prepare_directory(
        path,
        force=force,
        keep=keep,
        retry=lambda flag, where: _demo_command(prog, where, sizes, durability, flag),
    )
    report = Report(console)
    console.print(
        f"[bold]perdure demo[/]: durable agent, workflow and job runs in "
        f"[cyan]{path.resolve()}[/] (durability {durability})",
        soft_wrap=True,
    )
    t0 = time.perf_counter()
    scratch = Path(tempfile.mkdtemp(prefix="perdure-demo-"))
    try:
        crash = Crash(
            path=path,
            durability=durability,
            runs=sizes.crash_runs,
            tag=secrets.token_hex(3),
            witness=Path(witness) if witness is not None else scratch / "witness.txt",
            stderr=scratch / "worker-stderr.txt",
        )
        counts, ids = trio.run(_demo_main, path, sizes, durability, report, crash)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    total = time.perf_counter() - t0

    console.print()
    console.rule("[bold]Summary[/]", align="left")
    console.print(status_table("Runs in the store (rt.list)", counts))
    expected = sizes.total_runs()
    want = Counter({"completed": expected - TREE_SIZE, "cancelled": TREE_SIZE})
    got: Counter[str] = Counter()
    for (_, status), n in counts.items():
        got[status] += n
    ok = all(got[s] >= want[s] for s in want) if keep else +got == want
    report.check(
        "summary",
        f"the store holds this demo's {expected:,} runs ({TREE_SIZE} cancelled, the rest completed)"
        + (", plus earlier ones (--keep)" if keep else ""),
        ok,
        ", ".join(f"{n:,} {s}" for s, n in sorted(got.items()) if n) or "nothing",
    )
    report.print_checks()
    where = shlex.quote(str(path))
    report.commands = [
        f"{prog} runs list --dir {where}",
        f"{prog} runs list --dir {where} --status cancelled",
        f"{prog} runs list --dir {where} --root {ids['held']}",
        f"{prog} runs show {ids['agent']} --dir {where}",
        f"{prog} runs events {ids['agent']} --dir {where}",
        f"{prog} runs events {ids['crashed']} --dir {where}",
    ]
    if report.failed:
        console.print(
            f"[bold red]FAILED[/]: {len(report.failed)} of {len(report.checks)} checks "
            f"({total:.1f} s)."
        )
    else:
        console.print(
            f"[bold green]OK[/]: all {len(report.checks)} checks held; "
            f"{expected:,} runs in {total:.1f} s."
        )
    cwd = "" if path.is_absolute() else f" (from {Path.cwd()})"
    console.print(f"Inspect the data it left behind{cwd}:", soft_wrap=True)
    for command in report.commands:
        console.print(f"  {command}", markup=False, highlight=False, soft_wrap=True)
    return 1 if report.failed else 0


async def _demo_main(
    path: Path, sizes: Sizes, durability: Durability, report: Report, crash: Crash
) -> tuple[Counter[tuple[str, str]], dict[str, str]]:
    rt = Runtime(path, durability=durability)
    register_demo(rt)
    async with rt:
        await throughput(rt, sizes, report)
        agents = await signals(rt, sizes, report, crash.tag)
        tree = await trees(rt, sizes, report, crash.tag)
        await timers(rt, sizes, report, crash.tag)
    # Closed: the worker may own the directory now.
    await kill_worker(crash, report)
    await inspect_at_kill(crash)
    opened_at = time.perf_counter()
    rt = Runtime(path, durability=durability)
    register_demo(rt, effects=crash.witness)
    async with rt:
        crashed = await recover(rt, crash, report, opened_at)
        await _agui_excerpt(rt, agents.sample, report)
        counts: Counter[tuple[str, str]] = Counter((r.kind, r.status) for r in all_runs(rt))
    return counts, {"agent": agents.sample, "held": tree.held, "crashed": crashed}


async def _agui_excerpt(rt: Runtime, run_id: str, report: Report) -> None:
    """Print one agent run's log (event types in order) and verify it as AG-UI."""
    report.section(6, f"AG-UI log of agent run {run_id} (a declined refund)")
    log = [item async for item in rt.events(run_id, follow=False)]
    table = Table(header_style="bold", show_edge=False, box=None, padding=(0, 1))
    table.add_column("#", justify="right")
    table.add_column("event")
    table.add_column("", overflow="fold")
    for item in log:
        table.add_row(str(item.event_id), item.type, _detail(item.event))
    report.console.print(table)
    section = "6 AG-UI"
    try:
        verify_prefixes([item.to_wire() for item in log])
        verdict = f"valid at all {len(log)} prefixes"
    except AGUIProtocolError as exc:
        verdict = f"refused: {exc}"
    report.check(
        section,
        "the log is a valid AG-UI 1.0 stream at every prefix (verify_prefixes)",
        verdict.startswith("valid"),
        verdict,
    )
    pauses = [
        [i.reason for i in item.event.outcome.interrupts]
        for item in log
        if isinstance(item.event, RunFinishedEvent)
        and isinstance(item.event.outcome, RunFinishedInterruptOutcome)
    ]
    report.check(
        section,
        "it paused on 2 tool calls at once, on the one left after a partial answer, "
        "then on an approval",
        pauses == [["tool_call", "tool_call"], ["tool_call"], ["confirmation"]],
        "; ".join(", ".join(p) for p in pauses) or "no interrupts",
    )


def _detail(event: object) -> str:
    if isinstance(event, ToolCallStartEvent):
        return f"{event.tool_call_name} ({event.tool_call_id})"
    if isinstance(event, ToolCallResultEvent):
        return _short(str(event.content))
    if isinstance(event, TextMessageContentEvent):
        return _short(repr(event.delta))
    if isinstance(event, CustomEvent):
        return _short(f"{event.name} {msgspec.json.encode(event.value).decode()}")
    if isinstance(event, StepStartedEvent | StepFinishedEvent):
        return event.step_name
    if isinstance(event, RunFinishedEvent):
        if isinstance(event.outcome, RunFinishedInterruptOutcome):
            reasons = ", ".join(i.reason for i in event.outcome.interrupts)
            return f"interrupt: {reasons}"
        return _short(f"result {msgspec.json.encode(event.result).decode()}")
    return ""


def _short(text: str, limit: int = 70) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _demo_command(
    prog: str, directory: str | os.PathLike[str], sizes: Sizes, durability: str, flag: str
) -> str:
    """The demo's command line with ``flag``, for messages that tell the user what to type."""
    parts = [prog, "demo"]
    if str(directory) != DEFAULT_DIR:
        parts += ["--dir", shlex.quote(str(directory))]
    if durability != "sync":
        parts += ["--durability", durability]
    default = Sizes()
    for name in ("runs", "concurrency", "agents", "trees", "timers", "crash_runs"):
        value = getattr(sizes, name)
        if value != getattr(default, name):
            parts += [f"--{name.replace('_', '-')}", str(value)]
    return " ".join([*parts, flag] if flag else parts)
