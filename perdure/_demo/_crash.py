"""The crash section: SIGKILL a worker process mid-run, reopen, recover, audit.

1. :func:`kill_worker`: the demo process has closed the directory; a worker process
   (``python -m perdure._demo._worker``) opens it, starts the ``workflow:ingest``
   runs and works on them. Once every start is durable and about two fifths of the
   steps are acknowledged, it gets SIGKILL: no cleanup, no flush, no goodbye.
2. :func:`inspect_at_kill`: the directory is opened in administration mode
   (``recover=False``: nothing runs) to read what the kill left: how many runs were
   in flight.
3. :func:`recover`: the demo opens it for real, which recovers (R26): the runs in
   flight are replayed from their journals and finish here. Then the witness file
   is audited. Each step function appends ``EFFECT`` when it runs and the body
   appends ``ACK`` once ``await ctx.step`` returned, i.e. once the result was
   durable. A step may run twice if the kill cut it before its result was committed
   (at-least-once), but never again once acknowledged (R6): no ``EFFECT`` line of a
   step may follow that step's first ``ACK``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import trio
from rich.table import Table

from perdure import RunNotFound, Runtime
from perdure.agui import AGUIProtocolError, CustomEvent, verify_prefixes

from ._definitions import INGEST_SLEEP, INGEST_STEPS
from ._report import Report
from ._worker import ingest_run_id

__all__ = ["Crash", "inspect_at_kill", "kill_worker", "recover"]

Durability = Literal["sync", "process", "memory"]
KILL_AT = 0.4
"""Fraction of all step acknowledgements after which the worker is killed."""
SECTION = "5 crash"


@dataclass
class Crash:
    """One crash scene: the worker's directory, its witness file and what was observed."""

    path: Path
    durability: Durability
    runs: int
    tag: str
    witness: Path
    stderr: Path
    worker_pid: int = 0
    killed: bool = False
    worker_exit: int | None = None
    seconds_to_kill: float = 0.0
    lines_at_kill: int = 0
    status_at_kill: dict[str, str] = field(default_factory=dict)
    recovered_in: float = 0.0

    @property
    def at_kill(self) -> Counter[str]:
        return Counter(self.status_at_kill.values())

    @property
    def ids(self) -> list[str]:
        return [ingest_run_id(self.tag, i) for i in range(self.runs)]

    @property
    def in_flight(self) -> int:
        return sum(n for status, n in self.at_kill.items() if status in _LIVE)

    def lines(self) -> list[list[str]]:
        try:
            text = self.witness.read_text()
        except FileNotFoundError:
            return []
        # A line is complete once its newline is written; the last one may not be yet.
        return [line.split() for line in text.splitlines(keepends=True) if line.endswith("\n")]


_LIVE = ("pending", "running", "waiting")


async def kill_worker(crash: Crash, report: Report) -> None:
    """Launch the worker on the directory and SIGKILL it mid-run."""
    report.section(5, "Crash recovery: a worker process killed with SIGKILL mid-run")
    total = crash.runs * len(INGEST_STEPS)
    kill_after = max(1, int(total * KILL_AT))
    report.say(
        f"  The demo closed the directory; a worker process opens it and starts {crash.runs:,} "
        f"runs of {len(INGEST_STEPS)} steps around a {INGEST_SLEEP} s durable sleep. It is "
        f"killed once {kill_after:,} of the {total:,} steps are acknowledged."
    )
    command = [
        sys.executable,
        "-m",
        "perdure._demo._worker",
        str(crash.path),
        "--effects",
        str(crash.witness),
        "--runs",
        str(crash.runs),
        "--tag",
        crash.tag,
        "--durability",
        crash.durability,
    ]
    t0 = time.perf_counter()
    with crash.stderr.open("wb") as err:
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err)
    crash.worker_pid = proc.pid
    try:
        with report.progress() as progress:
            task = progress.add_task(f"worker pid {proc.pid}: steps acknowledged", total=total)
            with trio.move_on_after(120):
                while proc.poll() is None:
                    lines = crash.lines()
                    acks = sum(1 for line in lines if line[0] == "ACK")
                    progress.update(task, completed=acks)
                    if acks >= kill_after and any(line[0] == "STARTED" for line in lines):
                        proc.send_signal(signal.SIGKILL)
                        crash.killed = True
                        crash.seconds_to_kill = time.perf_counter() - t0
                        break
                    await trio.sleep(0.005)
    finally:
        if proc.poll() is None and not crash.killed:
            proc.kill()
        crash.worker_exit = proc.wait()
    crash.lines_at_kill = len(crash.lines())


async def inspect_at_kill(crash: Crash) -> None:
    """Read the statuses the kill left, without running anything (``recover=False``)."""
    async with Runtime(crash.path, durability=crash.durability, recover=False) as rt:
        for run_id in crash.ids:
            try:
                crash.status_at_kill[run_id] = rt.get(run_id).status
            except RunNotFound:
                crash.status_at_kill[run_id] = "not started"


async def recover(rt: Runtime, crash: Crash, report: Report, opened_at: float) -> str:
    """Wait for the recovered runs, audit the witness file; return a run to inspect.

    ``rt`` was opened (and so recovered) on the directory at ``opened_at``
    (``time.perf_counter()``).
    """
    statuses = ", ".join(f"{n:,} {s}" for s, n in sorted(crash.at_kill.items()))
    how = (
        f"SIGKILL after {crash.seconds_to_kill:.1f} s"
        if crash.killed
        else f"was not killed: it exited with {crash.worker_exit}"
    )
    report.say(
        f"  worker pid {crash.worker_pid}: {how}. The store at the kill: {statuses}. "
        f"Reopened in this process (pid {os.getpid()}): recovering."
    )
    error = crash.stderr.read_text(errors="replace").strip()
    if not crash.killed and error:
        report.say(f"[red]worker stderr:[/]\n{error[-2000:]}")
    report.check(
        SECTION,
        "the kill landed mid-run (runs in flight at the kill)",
        crash.killed and crash.worker_exit == -signal.SIGKILL and crash.in_flight > 0,
        f"{crash.in_flight:,} of {crash.runs:,} in flight, exit {crash.worker_exit}",
    )
    with report.progress() as progress:
        task = progress.add_task("recovered runs completed", total=crash.runs)

        async def one(run_id: str) -> None:
            try:
                await rt.wait(run_id)
            except RunNotFound:
                return
            progress.advance(task)

        async with trio.open_nursery() as nursery:
            for run_id in crash.ids:
                nursery.start_soon(one, run_id)
    crash.recovered_in = time.perf_counter() - opened_at

    recs = [rt.get(rid) for rid, was in crash.status_at_kill.items() if was != "not started"]
    right = [
        r
        for r in recs
        if r.status == "completed"
        and r.completion is not None
        and r.completion.result == {"batch": int(r.id.rsplit("-", 1)[1]), "steps": 3}
    ]
    report.check(
        SECTION,
        f"after reopening, all {crash.runs:,} runs completed with the right results",
        len(right) == crash.runs,
        f"{len(right):,} completed, {crash.recovered_in:.2f} s from reopening",
    )
    audit = _audit(crash)
    steps = crash.runs * len(INGEST_STEPS)
    report.check(
        SECTION,
        f"every one of the {steps:,} steps was acknowledged",
        audit.acked == steps,
        f"{audit.acked:,} acknowledged",
    )
    report.check(
        SECTION,
        "no step ran again after its acknowledgement",
        not audit.after_ack and audit.acked == steps,
        f"{len(audit.after_ack)} ran after it",
    )
    report.check(
        SECTION,
        "steps that ran twice were all cut by the kill before being acknowledged",
        audit.twice <= audit.cut,
        f"{len(audit.twice)} ran twice, {len(audit.cut)} were mid-attempt at the kill",
    )
    aborted: list[str] = []
    refused: list[str] = []
    for rec in recs:
        log = [item async for item in rt.events(rec.id, follow=False)]
        try:
            verify_prefixes([item.to_wire() for item in log])
        except AGUIProtocolError:
            refused.append(rec.id)
        if any(
            isinstance(item.event, CustomEvent) and item.event.name == "perdure.attempt_aborted"
            for item in log
        ):
            aborted.append(rec.id)
    report.check(
        SECTION,
        "every log is valid AG-UI at every prefix; cut steps closed by perdure.attempt_aborted",
        not refused and len(recs) == crash.runs and len(aborted) <= len(audit.twice),
        f"{len(refused)} refused, {len(aborted)} logs mark an aborted attempt",
    )
    worker, here = audit.by_pid[str(crash.worker_pid)], audit.by_pid[str(os.getpid())]
    table = Table(header_style="bold", show_header=False)
    table.add_column("what")
    table.add_column("", overflow="fold")
    table.add_row("in flight at the kill", f"{crash.in_flight:,} runs ({statuses})")
    table.add_row(
        "steps mid-attempt at the kill", f"{len(audit.cut):,} (started, not acknowledged)"
    )
    table.add_row(
        "runs inside the durable sleep",
        f"{audit.sleeping:,} (parse acknowledged, store not begun): their timers re-armed",
    )
    table.add_row(
        "step executions",
        f"{audit.effects:,} for {steps:,} steps: {worker:,} in the worker, {here:,} after recovery",
    )
    table.add_row(
        "ran twice (at-least-once)",
        f"{len(audit.twice):,}: "
        + (
            "every one had been cut by the kill, unacknowledged"
            if audit.twice <= audit.cut
            else "[red]some had been acknowledged before the kill[/]"
        ),
    )
    table.add_row(
        "logs marking a cut attempt",
        f"{len(aborted):,} (the step's open events closed, then perdure.attempt_aborted)",
    )
    table.add_row("ran again after acknowledgement", f"[bold]{len(audit.after_ack)}[/]")
    table.add_row(
        "recovery", f"all {crash.runs:,} runs completed {crash.recovered_in:.2f} s after reopening"
    )
    report.console.print(table)
    shown = sorted(aborted) or sorted(run_id for run_id, _ in audit.twice)
    return shown[0] if shown else crash.ids[0]


@dataclass
class _Audit:
    effects: int = 0
    acked: int = 0
    after_ack: set[tuple[str, str]] = field(default_factory=set)
    twice: set[tuple[str, str]] = field(default_factory=set)
    cut: set[tuple[str, str]] = field(default_factory=set)
    sleeping: int = 0
    by_pid: Counter[str] = field(default_factory=Counter)


def _audit(crash: Crash) -> _Audit:
    """Replay the witness file in order (see the module docstring)."""
    audit = _Audit()
    first_ack: dict[tuple[str, str], int] = {}
    runs: dict[tuple[str, str], list[int]] = {}
    ours = set(crash.ids)
    for index, line in enumerate(crash.lines()):
        if line[0] not in ("EFFECT", "ACK") or line[1] not in ours:
            continue
        key = (line[1], line[2])
        if line[0] == "EFFECT":
            audit.effects += 1
            audit.by_pid[line[3]] += 1
            if key in first_ack:
                audit.after_ack.add(key)
            runs.setdefault(key, []).append(index)
        else:
            first_ack.setdefault(key, index)
    audit.acked = len(first_ack)
    kill = crash.lines_at_kill
    for key, indexes in runs.items():
        if len(indexes) > 1:
            audit.twice.add(key)
        if indexes[0] < kill and first_ack.get(key, kill) >= kill:
            audit.cut.add(key)
    for run_id in ours:
        parsed = first_ack.get((run_id, "parse"), kill) < kill
        storing = runs.get((run_id, "store"), [kill])[0] < kill
        audit.sleeping += parsed and not storing
    return audit
