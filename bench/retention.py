"""A store under continuous load stays bounded with retention (R38), at the same speed.

    python bench/retention.py                  # 300,000 runs per phase (a few minutes)
    python bench/retention.py --runs 1000000   # the full run of the issue
    python bench/retention.py --quick          # 20,000 runs per phase (the tests)
    python bench/retention.py --repeat 3       # three pairs of phases, ABBA order
    python bench/retention.py --json out.json

Two phases on fresh stores, in one invocation, same load: continuous 3-step runs (async
steps, every commit flushed with ``durability="sync"`` unless ``--durability process``,
``--inflight`` 1000 runs in flight: each slot starts a run, waits for it and starts the
next; ``--timeout S`` gives them a run timeout, whose stored timer each run's end
deletes), first **without** retention, then **with** ``Retention(max_completed=--keep,
interval=--interval)`` (default: keep the latest 10,000; a pass every second).

Measured per phase:

- throughput: runs/s over the whole phase (and over its second half, the steady state);
- the size of ``data.mdb`` over time (sampled every ``--sample`` seconds), the LMDB
  pages in use, and the runs stored: with retention the file must stop growing once
  the first passes have freed pages for LMDB to reuse;
- commit latency: a probe task commits one tiny batch through the runtime's writer
  every 10 ms and times it (the wait for a group commit, what a step's commit waits);
  reported separately for probes that overlapped a purge pass and those that did not;
- run latency (start -> completed) percentiles.

Targets (``anchors.md``): the data file stops growing; throughput with retention within
10% of the same load without. The VM is shared and noisy: ``--repeat N`` runs N pairs
of phases in ABBA order (without, with, with, without, ...: a drift over the invocation
favours neither) and reports the median ratio; every phase syncs the file system once
its store is deleted, so that freeing it does not slow the next phase. The CPU time per
run of each phase is reported beside wall time (steadier when other processes take the
CPU). Prints a table and exits 0 either way (a measurement).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import trio
from rich.console import Console
from rich.table import Table

import perdure
from perdure.testing import internals

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _peer_common import filesystem_of

OWNER = perdure.Project("bench")


@dataclass
class Sample:
    seconds: float
    runs: int
    file_mb: float
    used_mb: float
    stored_runs: int
    purged: int


@dataclass
class Phase:
    name: str
    runs: int = 0
    seconds: float = 0.0
    runs_per_s: float = 0.0
    steady_runs_per_s: float = 0.0
    samples: list[Sample] = field(default_factory=list)
    probe_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    run_ms: dict[str, float] = field(default_factory=dict)
    purged: int = 0
    passes: int = 0
    final_file_mb: float = 0.0
    cpu_us_per_run: float = 0.0
    """Process CPU time (every thread) per run: steadier than wall time on a shared VM."""
    thread_cpu_us_per_run: dict[str, float] = field(default_factory=dict)
    """The same per thread (Linux): the trio thread, the writer, worker threads."""


async def _value(x: int) -> dict[str, int]:
    return {"x": x}


def _runtime(
    path: Path,
    durability: str,
    retention: perdure.Retention | None,
    timeout: float | None = None,
) -> perdure.Runtime:
    rt = perdure.Runtime(path, durability=durability, retention=retention)  # type: ignore[arg-type]

    @rt.workflow("three", timeout=timeout)
    async def three(ctx: perdure.RunContext, inp: dict[str, Any]) -> dict[str, Any]:
        a = await ctx.step("a", _value, 1)
        b = await ctx.step("b", _value, 2)
        c = await ctx.step("c", _value, 3)
        return {"a": a, "b": b, "c": c}

    return rt


def _thread_cpu() -> dict[str, float]:
    """CPU seconds of each thread of this process, by thread name (Linux /proc)."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    out: dict[str, float] = {}
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return out
    for tid in tids:
        try:
            fields = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        name = names.get(int(tid), "")
        if name == "MainThread":
            name = "trio"
        elif "WriterActor" in name:
            name = "writer"
        else:
            name = "other threads"
        ticks = int(fields[11]) + int(fields[12])
        out[name] = out.get(name, 0.0) + ticks / os.sysconf("SC_CLK_TCK")
    return out


def _pct(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {
        "n": float(len(values)),
        "p50": at(0.50),
        "p99": at(0.99),
        "max": ordered[-1],
        "mean": statistics.fmean(values),
    }


async def _phase(path: Path, args: argparse.Namespace, with_retention: bool) -> Phase:
    rules = (
        perdure.Retention(max_completed=args.keep, interval=args.interval)
        if with_retention
        else None
    )
    phase = Phase(name="with retention" if with_retention else "without retention")
    rt = _runtime(path, args.durability, rules, args.timeout)
    done = 0
    run_ms: list[float] = []
    probes: dict[str, list[float]] = {"during purge": [], "no purge": []}
    data = path / "data.mdb"
    async with rt:
        engine = internals(rt)
        retention = engine.retention
        meta = engine.store.dbs["meta"]
        in_pass = [False]
        if with_retention:
            # Know when a pass runs (to split the probes): wrap the service's pass.
            original = retention.apply

            async def apply() -> int:
                in_pass[0] = True
                try:
                    return int(await original())
                finally:
                    in_pass[0] = False

            retention.apply = apply  # type: ignore[method-assign]

        async def probe() -> None:
            while True:
                await trio.sleep(0.01)
                during = in_pass[0]
                t0 = time.perf_counter()
                await engine.writer.commit([(meta, b"bench-probe", b"1")])
                ms = (time.perf_counter() - t0) * 1000
                probes["during purge" if during or in_pass[0] else "no purge"].append(ms)

        def sample(t0: float) -> None:
            with engine.store.read() as txn:
                info = engine.store.env.info()
                stat = engine.store.env.stat()
                stored = int(txn.stat(engine.store.dbs["runs"])["entries"])
            used = (info["last_pgno"] + 1) * stat["psize"]
            phase.samples.append(
                Sample(
                    seconds=round(time.perf_counter() - t0, 2),
                    runs=done,
                    file_mb=round(data.stat().st_size / 1e6, 1),
                    used_mb=round(used / 1e6, 1),
                    stored_runs=stored,
                    purged=retention.purged,
                )
            )

        async def sampler(t0: float) -> None:
            while True:
                await trio.sleep(args.sample)
                sample(t0)

        async def one(slots: trio.Semaphore) -> None:
            nonlocal done
            try:
                t = time.perf_counter()
                started = await rt.start("workflow:three", {}, owner=OWNER)
                try:
                    rec = await rt.wait(started.run.id)
                except perdure.RunNotFound:
                    pass  # completed and already purged
                else:
                    if rec.status != "completed":
                        raise SystemExit(f"run {rec.id} ended {rec.status}: {rec.completion}")
                run_ms.append((time.perf_counter() - t) * 1000)
                done += 1
            finally:
                slots.release()

        t0 = time.perf_counter()
        cpu0 = time.process_time()
        threads0 = _thread_cpu()
        half: tuple[float, int] | None = None
        async with trio.open_nursery() as outer:
            outer.start_soon(probe)
            outer.start_soon(sampler, t0)
            slots = trio.Semaphore(args.inflight)
            async with trio.open_nursery() as nursery:
                for i in range(args.runs):
                    await slots.acquire()
                    if half is None and i >= args.runs // 2:
                        half = (time.perf_counter(), done)
                    nursery.start_soon(one, slots)
            elapsed = time.perf_counter() - t0
            cpu = time.process_time() - cpu0
            threads = _thread_cpu()
            sample(t0)
            outer.cancel_scope.cancel()
        phase.runs = done
        phase.seconds = elapsed
        phase.runs_per_s = done / elapsed
        phase.cpu_us_per_run = cpu * 1e6 / done
        phase.thread_cpu_us_per_run = {
            name: round((seconds - threads0.get(name, 0.0)) * 1e6 / done, 1)
            for name, seconds in threads.items()
            if seconds - threads0.get(name, 0.0) > 0
        }
        if half is not None:
            phase.steady_runs_per_s = (done - half[1]) / (t0 + elapsed - half[0])
        phase.probe_ms = {k: _pct(v) for k, v in probes.items() if v}
        phase.run_ms = _pct(run_ms)
        phase.purged = retention.purged
        phase.passes = retention.passes
    phase.final_file_mb = round(data.stat().st_size / 1e6, 1)
    return phase


def _curve(phases: list[Phase], points: int) -> list[dict[str, Any]]:
    """File size of each phase at the same run counts (``points`` rows)."""
    rows: list[dict[str, Any]] = []
    longest = max(phases[0].runs, phases[-1].runs)
    for k in range(1, points + 1):
        target = longest * k // points
        row: dict[str, Any] = {"runs": target}
        for phase in phases:
            near = min(phase.samples, key=lambda s: abs(s.runs - target), default=None)
            row[phase.name] = near
        rows.append(row)
    return rows


def _report(
    all_phases: list[Phase],
    pairs: list[tuple[Phase, Phase]],
    args: argparse.Namespace,
    tmp: Path,
) -> dict[str, Any]:
    console = Console(highlight=False)
    ratios = sorted(k.runs_per_s / b.runs_per_s for b, k in pairs)
    steadies = sorted(k.steady_runs_per_s / b.steady_runs_per_s for b, k in pairs)
    cpus = sorted(k.cpu_us_per_run / b.cpu_us_per_run for b, k in pairs)
    ratio, steady, cpu = (statistics.median(xs) for xs in (ratios, steadies, cpus))
    phases = list(pairs[len(pairs) // 2])
    kept = phases[1]
    console.print(
        f"[bold]perdure retention benchmark[/]  {args.runs:,} 3-step runs per phase, "
        f"{args.inflight} in flight, durability={args.durability}, keep {args.keep:,}, "
        f"a pass every {args.interval} s; python {platform.python_version()}, "
        f"{os.cpu_count()} cpus; store on {filesystem_of(tmp)}"
    )
    table = Table(title="data file over the run (MB: file / pages in use; runs stored)")
    table.add_column("runs done", justify="right")
    for phase in phases:
        table.add_column(phase.name, justify="right")
    for row in _curve(phases, args.points):
        cells = [f"{row['runs']:,}"]
        for phase in phases:
            s: Sample | None = row[phase.name]
            cells.append("" if s is None else f"{s.file_mb} / {s.used_mb} ({s.stored_runs:,})")
        table.add_row(*cells)
    console.print(table)
    summary = Table(title="throughput and latency (every phase, in the order run)")
    summary.add_column("phase")
    for name in (
        "runs/s",
        "2nd half runs/s",
        "CPU us/run",
        "run p50 ms",
        "run p99 ms",
        "purged",
        "final MB",
    ):
        summary.add_column(name, justify="right")
    for phase in all_phases:
        summary.add_row(
            phase.name,
            f"{phase.runs_per_s:,.0f}",
            f"{phase.steady_runs_per_s:,.0f}",
            f"{phase.cpu_us_per_run:.0f}",
            f"{phase.run_ms.get('p50', 0):.1f}",
            f"{phase.run_ms.get('p99', 0):.1f}",
            f"{phase.purged:,}",
            f"{phase.final_file_mb}",
        )
    console.print(summary)
    for phase in all_phases:
        parts = ", ".join(f"{k} {v:.0f}" for k, v in sorted(phase.thread_cpu_us_per_run.items()))
        console.print(f"CPU us/run by thread, {phase.name}: {parts}", soft_wrap=True)
    probes = Table(title="commit latency (a 1-record probe commit every 10 ms), ms")
    for name in ("phase", "probes", "n", "p50", "p99", "max"):
        probes.add_column(name, justify="right" if name not in ("phase", "probes") else "left")
    for phase in phases:
        for which, pct in phase.probe_ms.items():
            probes.add_row(
                phase.name,
                which,
                f"{pct['n']:.0f}",
                f"{pct['p50']:.2f}",
                f"{pct['p99']:.2f}",
                f"{pct['max']:.2f}",
            )
    console.print(probes)
    plateau = [s.file_mb for s in kept.samples[len(kept.samples) // 2 :]]
    grew = (max(plateau) - min(plateau)) if plateau else 0.0
    console.print(
        f"pairs: {len(pairs)} (medians); CPU per run with/without retention: {cpu:.3f}; "
        f"runs/s with/without retention: {ratio:.3f} overall, {steady:.3f} in the second half "
        f"(target >= 0.90: {'yes' if ratio >= 0.9 else 'NO'}); "
        f"file growth over the second half with retention: {grew:.1f} MB "
        f"(stops growing: {'yes' if grew <= 0.05 * max(plateau or [1]) else 'NO'})"
    )
    return {
        "args": vars(args),
        "phases": [asdict(p) for p in all_phases],
        "ratios": ratios,
        "ratio": ratio,
        "steady_ratio": steady,
        "cpu_ratio": cpu,
        "second_half_growth_mb": grew,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=300_000, help="runs per phase (300,000)")
    parser.add_argument("--keep", type=int, default=10_000, help="max_completed (10,000)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between passes")
    parser.add_argument("--inflight", type=int, default=1000)
    parser.add_argument("--durability", choices=("sync", "process"), default="sync")
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="a run timeout for the 3-step runs (a stored timer each run's end deletes)",
    )
    parser.add_argument("--sample", type=float, default=1.0, help="seconds between samples")
    parser.add_argument("--points", type=int, default=12, help="rows of the size table")
    parser.add_argument("--tmp", default=str(Path(__file__).resolve().parent), help="scratch dir")
    parser.add_argument("--repeat", type=int, default=1, help="pairs of phases (alternating)")
    parser.add_argument("--quick", action="store_true", help="20,000 runs per phase")
    parser.add_argument("--json", default=None, metavar="OUT")
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.keep, args.sample, args.points = 20_000, 2_000, 0.25, 6
    tmp = Path(tempfile.mkdtemp(prefix="perdure-retention-", dir=args.tmp))
    phases: list[Phase] = []
    pairs: list[tuple[Phase, Phase]] = []
    try:
        for i in range(max(1, args.repeat)):
            # ABBA: a drift of the machine over the invocation favours neither phase.
            order = (False, True) if i % 2 == 0 else (True, False)
            pair: dict[bool, Phase] = {}
            for with_retention in order:
                path = tmp / ("kept" if with_retention else "all")
                pair[with_retention] = trio.run(_phase, path, args, with_retention)
                phases.append(pair[with_retention])
                shutil.rmtree(path, ignore_errors=True)
                # Free the deleted store's blocks now: freeing the 0.8 GB of a phase
                # without retention would otherwise go on during the next phase and
                # slow its flushes.
                os.sync()
            pairs.append((pair[False], pair[True]))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result = _report(phases, pairs, args, Path(args.tmp))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
