"""The demo workload behind ``perdure demo`` (and ``make demo``), plus a run driver.

The demo registers one definition of each kind on a :class:`perdure.Runtime`:

- ``agent:assistant`` logs a state snapshot and one assistant text message;
- ``workflow:pipeline`` logs three ``CUSTOM`` progress events and returns a summary;
- ``task:resize`` (a job) returns a dict computed from its config;

then starts thousands of short runs of all three kinds with a bounded number in
flight, shows a progress bar, prints throughput and per-status counts, checks that
every run completed, and says where the data lives and how to inspect it.

:func:`drive` (start runs with N in flight and wait for each) is shared with
``bench/throughput.py``.
"""

from __future__ import annotations

import os
import shlex
import shutil
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from perdure._errors import ForeignDirectory, InvalidInput, PerdureError
from perdure.agui import AgentInput
from perdure.runtime import AgentContext, RunContext, Runtime
from perdure.storage import Conversation, DirectoryLock, Durability, Owner, Project, RunRecord

__all__ = [
    "DEFAULT_CONCURRENCY",
    "DEFAULT_DIR",
    "DEFAULT_RUNS",
    "DirectoryNotEmpty",
    "DriveResult",
    "Job",
    "demo_job",
    "drive",
    "register_demo",
    "run_demo",
    "wipe_store_dir",
]

DEFAULT_DIR = "demo-data"
DEFAULT_RUNS = 3000
DEFAULT_CONCURRENCY = 500

Job = tuple[str, Any, Owner]
"""``(target, input, owner)`` of one run to start."""

_OWN_FILES = {"data.mdb", "lock.mdb", "perdure.lock"}


# -- definitions -----------------------------------------------------------------------------


def register_demo(rt: Runtime) -> None:
    """Register the demo's agent, workflow and task on ``rt``."""

    @rt.agent("assistant")
    async def assistant(ctx: AgentContext, inp: AgentInput) -> None:
        question = next(
            (str(m.get("content", "")) for m in reversed(inp.messages) if m.get("role") == "user"),
            "",
        )
        await ctx.state_snapshot({"topic": question[:40], "turn": len(inp.messages)})
        await ctx.say(f"You asked: {question!r}. perdure logged this answer durably.")

    @rt.workflow("pipeline")
    async def pipeline(ctx: RunContext, inp: dict[str, Any]) -> dict[str, Any]:
        stages = ("extract", "transform", "load")
        for number, stage in enumerate(stages, 1):
            await ctx.custom("progress", {"stage": stage, "done": number, "of": len(stages)})
        return {"batch": inp.get("batch"), "stages": len(stages)}

    @rt.task("resize")
    async def resize(ctx: RunContext, config: dict[str, Any]) -> dict[str, Any]:
        width, height = int(config.get("width", 640)), int(config.get("height", 480))
        return {"image": config.get("image"), "width": width // 2, "height": height // 2}


def demo_job(i: int) -> Job:
    """The ``i``-th demo run: agents, workflows and jobs in turn."""
    which = i % 3
    if which == 0:
        message = {"id": f"m{i}", "role": "user", "content": f"status of order {i}?"}
        return "agent:assistant", AgentInput(messages=[message]), Conversation(f"conv-{i // 3}")
    project = Project(f"project-{i % 10}")
    if which == 1:
        return "workflow:pipeline", {"batch": i}, project
    return "task:resize", {"image": f"img-{i}.png", "width": 1920, "height": 1080}, project


# -- driver ----------------------------------------------------------------------------------


@dataclass
class DriveResult:
    """What :func:`drive` measured; ``records``/``txns``/``batches`` are writer deltas."""

    runs: int
    elapsed: float
    events: int
    records: int
    txns: int
    batches: int
    by_kind_status: Counter[tuple[str, str]] = field(default_factory=Counter)
    sample: dict[str, str] = field(default_factory=dict)

    @property
    def runs_per_s(self) -> float:
        return self.runs / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def events_per_s(self) -> float:
        return self.events / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def records_per_s(self) -> float:
        return self.records / self.elapsed if self.elapsed > 0 else 0.0


async def drive(
    rt: Runtime,
    make_job: Callable[[int], Job],
    count: int,
    concurrency: int,
    on_done: Callable[[RunRecord], None] | None = None,
) -> DriveResult:
    """Start ``count`` runs (``make_job(i)``) with at most ``concurrency`` in flight.

    Each run is started and then awaited to its terminal status before its slot is
    reused. Returns wall time, events logged (sum of ``last_event_id``) and the
    writer's committed records, transactions and batches over the whole drive.
    """
    if count < 0 or concurrency < 1:
        raise InvalidInput("count must be >= 0 and concurrency >= 1")
    stats = rt.writer.stats
    records0, txns0, batches0 = stats.records, stats.txns, stats.batches
    result = DriveResult(runs=count, elapsed=0.0, events=0, records=0, txns=0, batches=0)
    slots = trio.Semaphore(concurrency)

    async def one(i: int) -> None:
        try:
            target, inp, owner = make_job(i)
            started = await rt.start(target, inp, owner=owner)
            rec = await rt.wait(started.run.id)
            result.events += rec.last_event_id
            result.by_kind_status[(rec.kind, rec.status)] += 1
            result.sample.setdefault(rec.kind, rec.id)
            if on_done is not None:
                on_done(rec)
        finally:
            slots.release()

    t0 = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for i in range(count):
            await slots.acquire()
            nursery.start_soon(one, i)
    result.elapsed = time.perf_counter() - t0
    result.records = stats.records - records0
    result.txns = stats.txns - txns0
    result.batches = stats.batches - batches0
    return result


# -- the data directory ----------------------------------------------------------------------


class DirectoryNotEmpty(PerdureError):
    """The demo's directory already holds a store and neither --force nor --keep was given."""

    code = "DIRECTORY_NOT_EMPTY"
    http_status = 409


def prepare_directory(path: Path, *, force: bool, keep: bool, retry: Callable[[str], str]) -> None:
    """Make ``path`` ready for the demo without ever destroying data by surprise.

    A missing or empty directory is used as is. A directory holding anything but a
    perdure store is refused, even with ``force``. A perdure store is added to with
    ``keep``, wiped with ``force``, and otherwise refused with
    :class:`DirectoryNotEmpty`, whose message spells out the commands to type
    (``retry(flag)`` renders the demo's own command line with that flag).
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
        raise DirectoryNotEmpty(
            f"{path} already holds a perdure store, and the demo never deletes one unasked.\n"
            f"  to wipe it and run the demo again:  {retry('--force')}\n"
            f"  to add this demo's runs to it:      {retry('--keep')}\n"
            f"  or pick a new directory:            perdure demo --dir "
            f"{shlex.quote(str(path) + '-2')}",
            path=str(path),
        )
    wipe_store_dir(path)


# -- the demo --------------------------------------------------------------------------------


def wipe_store_dir(path: Path) -> None:
    """Delete a perdure data directory, refusing anything else or a directory in use."""
    if not path.exists():
        return
    if not path.is_dir():
        raise ForeignDirectory(f"{path} exists and is not a directory", path=str(path))
    foreign = sorted(set(os.listdir(path)) - _OWN_FILES)
    if foreign:
        raise ForeignDirectory(
            f"refusing to wipe {path}: it is not a perdure data directory "
            f"(it holds {', '.join(foreign[:5])})",
            path=str(path),
        )
    lock = DirectoryLock(path)
    lock.acquire()  # DirectoryLocked if a live process owns it
    lock.release()
    shutil.rmtree(path)


def run_demo(
    directory: str | os.PathLike[str] = DEFAULT_DIR,
    *,
    runs: int = DEFAULT_RUNS,
    concurrency: int = DEFAULT_CONCURRENCY,
    durability: Durability = "sync",
    keep: bool = False,
    force: bool = False,
    console: Console | None = None,
) -> int:
    """Run the demo; returns the process exit code (0 when every run completed).

    An existing store in ``directory`` is wiped only with ``force`` and added to
    with ``keep``; otherwise :class:`DirectoryNotEmpty` says what to type.
    """
    if runs < 1 or concurrency < 1:
        raise InvalidInput("--runs and --concurrency must be at least 1")
    if keep and force:
        raise InvalidInput("--keep and --force exclude each other")
    console = console or Console()
    path = Path(directory)
    again = "perdure demo"
    if str(directory) != DEFAULT_DIR:
        again += f" --dir {shlex.quote(str(path))}"
    prepare_directory(path, force=force, keep=keep, retry=lambda flag: f"{again} {flag}")
    rt = Runtime(path, durability=durability)
    register_demo(rt)
    console.print(
        f"[bold]perdure demo[/]: {runs:,} runs (agents, workflows, jobs), {concurrency} in "
        f"flight, durability [cyan]{durability}[/], data in [cyan]{path.resolve()}[/]",
        soft_wrap=True,
    )
    t_open = time.perf_counter()
    outcome = trio.run(_demo_main, rt, runs, concurrency, console)
    total = time.perf_counter() - t_open
    result, stored, txns_total, map_size = outcome
    _print_summary(console, path, durability, result, stored, txns_total, map_size, total)
    return _validate(console, runs, result, stored, keep)


async def _demo_main(
    rt: Runtime, runs: int, concurrency: int, console: Console
) -> tuple[DriveResult, Counter[tuple[str, str]], int, int]:
    async with rt:
        with Progress(
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TimeElapsedColumn(),
            console=console,
        ) as progress:
            task = progress.add_task("runs", total=runs)
            result = await drive(
                rt,
                demo_job,
                runs,
                concurrency,
                on_done=lambda _rec: progress.advance(task),
            )
        stored: Counter[tuple[str, str]] = Counter()
        after: str | None = None
        while True:
            page = rt.list(after=after, limit=1000)
            for rec in page.runs:
                stored[(rec.kind, rec.status)] += 1
            if page.next_cursor is None:
                break
            after = page.next_cursor
        return result, stored, rt.writer.stats.txns, rt.store.map_size


def _print_summary(
    console: Console,
    path: Path,
    durability: str,
    result: DriveResult,
    stored: Counter[tuple[str, str]],
    txns_total: int,
    map_size: int,
    total: float,
) -> None:
    rate = Table(title="Throughput", show_header=True, header_style="bold")
    rate.add_column("metric")
    rate.add_column("total", justify="right")
    rate.add_column("per second", justify="right")
    rate.add_row("runs (start -> completed)", f"{result.runs:,}", f"{result.runs_per_s:,.0f}")
    rate.add_row("events logged", f"{result.events:,}", f"{result.events_per_s:,.0f}")
    rate.add_row("records committed", f"{result.records:,}", f"{result.records_per_s:,.0f}")
    per_txn = result.records / result.txns if result.txns else 0.0
    rate.add_row(
        "LMDB commits (txns)",
        f"{result.txns:,}",
        f"{result.txns / result.elapsed:,.0f}" if result.elapsed else "-",
    )
    rate.add_row("records per commit", f"{per_txn:,.1f}", "")
    rate.add_row("batches grouped per commit", f"{result.batches / max(result.txns, 1):,.1f}", "")
    rate.add_row("wall time (runs only / total)", f"{result.elapsed:.2f} s / {total:.2f} s", "")
    console.print(rate)

    kinds = sorted({kind for kind, _ in stored})
    statuses = sorted({status for _, status in stored})
    counts = Table(title="Stored runs by kind and status", header_style="bold")
    counts.add_column("kind")
    for status in statuses:
        counts.add_column(status, justify="right")
    counts.add_column("total", justify="right")
    for kind in kinds:
        row = [stored[(kind, status)] for status in statuses]
        counts.add_row(kind, *(f"{n:,}" for n in row), f"{sum(row):,}")
    counts.add_row(
        "[bold]all[/]",
        *(f"{sum(stored[(k, s)] for k in kinds):,}" for s in statuses),
        f"{sum(stored.values()):,}",
    )
    console.print(counts)

    where = shlex.quote(str(path))
    console.print(
        f"Data: [cyan]{path.resolve()}[/] (durability {durability}, LMDB map "
        f"{map_size / 2**20:,.0f} MiB, {txns_total:,} commits in total)",
        soft_wrap=True,
    )
    commands = [
        f"perdure runs list --dir {where}",
        f"perdure runs list --dir {where} --kind agent --status completed --limit 5",
    ]
    agent = result.sample.get("agent")
    if agent:
        commands.append(f"perdure runs show {agent} --dir {where}")
        commands.append(f"perdure runs events {agent} --dir {where}")
    console.print("Inspect it:")
    for command in commands:
        console.print(f"  {command}", markup=False, highlight=False, soft_wrap=True)


def _validate(
    console: Console, runs: int, result: DriveResult, stored: Counter[tuple[str, str]], keep: bool
) -> int:
    problems: list[str] = []
    not_completed = {key: n for key, n in result.by_kind_status.items() if key[1] != "completed"}
    if not_completed:
        problems.append(f"runs that did not complete: {dict(not_completed)}")
    if sum(result.by_kind_status.values()) != runs:
        problems.append(f"{sum(result.by_kind_status.values())} of {runs} runs finished")
    stored_completed = sum(n for (_, status), n in stored.items() if status == "completed")
    # With --keep the store also holds earlier demos' runs.
    if stored_completed < runs or (not keep and sum(stored.values()) != runs):
        problems.append(f"the store holds {dict(stored)}, expected {runs} completed runs")
    if problems:
        for problem in problems:
            console.print(f"[bold red]FAILED[/]: {problem}")
        return 1
    console.print(f"[bold green]OK[/]: all {runs:,} runs completed.")
    return 0
