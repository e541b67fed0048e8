"""Throughput of trivial perdure runs against the raw LMDB group-commit limit.

    python bench/throughput.py                 # full run (about a minute on 2 cores)
    python bench/throughput.py --quick         # a few seconds; used by the tests
    python bench/throughput.py --json out.json # also dump every figure

What it measures (see bench/README.md):

1. perdure: trivial workflow runs (start -> completed; the body returns at once)
   with 1, 10, 100 and 1000 runs in flight, durability ``sync`` and ``process``.
   Each run is two group-committed batches (RUN_STARTED + record + indexes, then
   RUN_FINISHED + record + status index move). Records/s and LMDB transactions come
   from the writer's own counters (``internals(rt).writer.stats``).
2. the raw limit on the same filesystem, in the same invocation: one thread doing
   LMDB transactions of 1000 puts (keys spread over 1000 "runs", 128-byte values)
   with ``sync=True`` and with ``sync=False``, plus single-put commits.

The ratio column is perdure's committed records/s over the raw group-commit
records/s of the same durability. Targets: >= 5,000 flushed runs/s at 1000 in
flight, and records/s >= 0.5x raw.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import lmdb
import trio
from rich.console import Console
from rich.table import Table
from rich.text import Text

import perdure
from perdure._demo import DriveResult, drive

# The bench helpers sit beside this file; the CLI (`perdure bench`) imports it by path.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _peer_common import filesystem_of

REPO = Path(__file__).resolve().parent.parent
TARGET_RUNS_PER_S = 5000.0
TARGET_RATIO = 0.5
MAX_RUNS = 20_000


@dataclass
class PerdureFigure:
    durability: str
    inflight: int
    runs: int
    seconds: float
    runs_per_s: float
    events_per_s: float
    records: int
    records_per_s: float
    txns: int
    records_per_txn: float
    batches_per_txn: float
    ratio_to_raw: float | None = None
    repeats: int = 1
    runs_per_s_min: float = 0.0
    runs_per_s_max: float = 0.0


@dataclass
class RawFigure:
    name: str
    sync: bool
    puts_per_txn: int
    txns: int
    records: int
    seconds: float
    records_per_s: float
    txns_per_s: float
    ms_per_txn: float
    repeats: int = 1
    records_per_s_min: float = 0.0
    records_per_s_max: float = 0.0


# -- perdure -----------------------------------------------------------------------------------


async def _noop(ctx: perdure.RunContext, inp: Any) -> None:
    return None


def _job(i: int) -> tuple[str, Any, perdure.Project]:
    return "workflow:noop", None, perdure.Project("bench")


async def _measure_perdure(path: Path, durability: str, inflight: int, runs: int) -> DriveResult:
    rt = perdure.Runtime(path, durability=durability)  # type: ignore[arg-type]
    rt.workflow("noop", input_type=Any)(_noop)
    async with rt:
        await drive(rt, _job, min(runs, 50), min(inflight, 50))  # warm-up, not counted
        gc.collect()
        return await drive(rt, _job, runs, inflight)


def bench_perdure(tmp: Path, durability: str, inflight: int, runs: int) -> PerdureFigure:
    path = Path(tempfile.mkdtemp(prefix=f"perdure-{durability}-{inflight}-", dir=tmp))
    try:
        res = trio.run(_measure_perdure, path, durability, inflight, runs)
    finally:
        shutil.rmtree(path, ignore_errors=True)
    bad = {key: n for key, n in res.by_kind_status.items() if key[1] != "completed"}
    if bad:
        raise SystemExit(f"benchmark runs did not complete: {bad}")
    return PerdureFigure(
        durability=durability,
        inflight=inflight,
        runs=res.runs,
        seconds=res.elapsed,
        runs_per_s=res.runs_per_s,
        events_per_s=res.events_per_s,
        records=res.records,
        records_per_s=res.records_per_s,
        txns=res.txns,
        records_per_txn=res.records / res.txns if res.txns else 0.0,
        batches_per_txn=res.batches / res.txns if res.txns else 0.0,
    )


# -- raw LMDB ----------------------------------------------------------------------------------


def _raw_worker(path: Path, sync: bool, puts: int, txns: int, out: list[float]) -> None:
    env = lmdb.open(
        str(path), map_size=2 * 1024**3, sync=sync, metasync=sync, max_dbs=2, readahead=False
    )
    try:
        db = env.open_db(b"events")
        runs = [uuid.uuid4().hex.encode() + b"\0" for _ in range(1000)]
        value = os.urandom(128)
        seq = [0] * len(runs)
        nruns = len(runs)
        k = 0
        t0 = time.perf_counter()
        for _ in range(txns):
            with env.begin(write=True, db=db) as txn:
                for _ in range(puts):
                    r = k % nruns
                    seq[r] += 1
                    txn.put(runs[r] + seq[r].to_bytes(8, "big"), value)
                    k += 1
        out.append(time.perf_counter() - t0)
    finally:
        env.close()


def bench_raw(tmp: Path, name: str, sync: bool, puts: int, txns: int) -> RawFigure:
    """One thread committing ``txns`` transactions of ``puts`` puts on a fresh env."""
    path = Path(tempfile.mkdtemp(prefix=f"raw-{name}-", dir=tmp))
    out: list[float] = []
    try:
        thread = threading.Thread(target=_raw_worker, args=(path, sync, puts, txns, out))
        thread.start()
        thread.join()
    finally:
        shutil.rmtree(path, ignore_errors=True)
    if not out:
        raise SystemExit(f"raw LMDB benchmark {name} failed")
    seconds = out[0]
    records = puts * txns
    return RawFigure(
        name=name,
        sync=sync,
        puts_per_txn=puts,
        txns=txns,
        records=records,
        seconds=seconds,
        records_per_s=records / seconds,
        txns_per_s=txns / seconds,
        ms_per_txn=seconds * 1000 / txns,
    )


def median_perdure(figs: list[PerdureFigure]) -> PerdureFigure:
    """The median repetition (by runs/s), carrying the spread of all of them."""
    ordered = sorted(figs, key=lambda fig: fig.runs_per_s)
    mid = ordered[len(ordered) // 2]
    mid.repeats = len(figs)
    mid.runs_per_s_min, mid.runs_per_s_max = ordered[0].runs_per_s, ordered[-1].runs_per_s
    return mid


def median_raw(figs: list[RawFigure]) -> RawFigure:
    ordered = sorted(figs, key=lambda fig: fig.records_per_s)
    mid = ordered[len(ordered) // 2]
    mid.repeats = len(figs)
    mid.records_per_s_min = ordered[0].records_per_s
    mid.records_per_s_max = ordered[-1].records_per_s
    return mid


# -- report ------------------------------------------------------------------------------------


def machine_info(tmp: Path) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "nproc": affinity or os.cpu_count(),
        "cpu_count": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "perdure": perdure.__version__,
        "lmdb": lmdb.version(),  # LMDB C library (major, minor, patch)
        "py-lmdb": lmdb.__version__,
        "trio": trio.__version__,
        "tmp_dir": str(tmp),
        "filesystem": filesystem_of(tmp),
    }


def _fmt(value: float) -> str:
    return f"{value:,.0f}"


def _k(value: float) -> str:
    return f"{value / 1000:.1f}k" if value >= 1000 else f"{value:.0f}"


def _mark(ok: bool) -> Text:
    return Text("yes", style="green") if ok else Text("NO", style="bold red")


def report(
    console: Console,
    info: dict[str, Any],
    figures: list[PerdureFigure],
    raw: dict[str, RawFigure],
) -> None:
    console.print(
        f"[bold]machine[/]: {info['nproc']} CPUs ({info['cpu']}), Python {info['python']} "
        f"({info['implementation']}), LMDB {'.'.join(map(str, info['lmdb']))}, "
        f"perdure {info['perdure']}",
        soft_wrap=True,
    )
    console.print(f"[bold]disk[/]: {info['tmp_dir']} on {info['filesystem']}", soft_wrap=True)
    console.print(
        f"[bold]figures[/]: median of {figures[0].repeats if figures else 1} "
        "repetition(s); (min-max) is the spread",
        soft_wrap=True,
    )

    table = Table(
        title="raw LMDB limit (one thread, fresh env, same filesystem)", header_style="bold"
    )
    for name in ("what", "sync", "puts/txn", "txns", "records/s", "(min-max)", "txns/s", "ms/txn"):
        table.add_column(name, justify="right" if name != "what" else "left")
    for limit in raw.values():
        table.add_row(
            limit.name,
            str(limit.sync),
            str(limit.puts_per_txn),
            f"{limit.txns:,}",
            _fmt(limit.records_per_s),
            f"{_k(limit.records_per_s_min)}-{_k(limit.records_per_s_max)}",
            _fmt(limit.txns_per_s),
            f"{limit.ms_per_txn:.3f}",
        )
    console.print(table)

    table = Table(title="perdure: trivial workflow runs (start -> completed)", header_style="bold")
    columns = (
        "durability",
        "in flight",
        "runs",
        "seconds",
        "runs/s",
        "(min-max)",
        "events/s",
        "records/s",
        "LMDB txns",
        "records/txn",
        "vs raw",
    )
    for name in columns:
        table.add_column(name, justify="left" if name == "durability" else "right")
    for fig in figures:
        ratio = f"{fig.ratio_to_raw:.2f}x" if fig.ratio_to_raw is not None else "-"
        table.add_row(
            fig.durability,
            f"{fig.inflight:,}",
            f"{fig.runs:,}",
            f"{fig.seconds:.2f}",
            _fmt(fig.runs_per_s),
            f"{_k(fig.runs_per_s_min)}-{_k(fig.runs_per_s_max)}",
            _fmt(fig.events_per_s),
            _fmt(fig.records_per_s),
            f"{fig.txns:,}",
            f"{fig.records_per_txn:.1f}",
            ratio,
        )
    console.print(table)
    console.print(
        "vs raw = perdure's committed records/s over the raw group-commit records/s of the "
        "same durability (sync: 'group sync', process: 'group nosync'). A trivial run commits "
        "2 batches: 2 events, 9 records.",
        style="dim",
    )
    targets = Table(title="targets", header_style="bold")
    for name in ("target", "measured", "met"):
        targets.add_column(name, justify="left" if name == "target" else "right")
    for check in check_targets(figures):
        targets.add_row(check["target"], check["measured"], _mark(bool(check["met"])))
    console.print(targets)


def check_targets(figures: list[PerdureFigure]) -> list[dict[str, Any]]:
    """The targets, measured on the largest in-flight count of each durability."""
    out: list[dict[str, Any]] = []
    for mode in ("sync", "process"):
        mine = [fig for fig in figures if fig.durability == mode]
        if not mine:
            continue
        top = max(mine, key=lambda fig: fig.inflight)
        if mode == "sync":
            out.append(
                {
                    "target": f">= {TARGET_RUNS_PER_S:,.0f} flushed runs/s at 1000 in flight "
                    f"(measured at {top.inflight:,})",
                    "measured": f"{top.runs_per_s:,.0f} runs/s",
                    "met": top.inflight >= 1000 and top.runs_per_s >= TARGET_RUNS_PER_S,
                }
            )
        ratio = top.ratio_to_raw or 0.0
        out.append(
            {
                "target": f"{mode}: records/s >= {TARGET_RATIO}x raw (at {top.inflight:,} in flight)",
                "measured": f"{ratio:.2f}x",
                "met": ratio >= TARGET_RATIO,
            }
        )
    return out


# -- main --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bench/throughput.py",
        description="perdure throughput of trivial runs vs. the raw LMDB group-commit limit",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny version (a few seconds), for tests and smoke checks",
    )
    parser.add_argument("--json", metavar="OUT", help="also write every figure to this file")
    parser.add_argument(
        "--inflight",
        default=None,
        metavar="N,N,...",
        help="runs in flight to measure (default 1,10,100,1000; quick 1,10,100)",
    )
    parser.add_argument(
        "--durability",
        default="sync,process",
        metavar="D,D",
        help="durability modes to measure (default sync,process)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=None,
        metavar="N",
        help="repetitions of every measurement; the median is reported (default 3; quick 1)",
    )
    parser.add_argument(
        "--tmp",
        metavar="DIR",
        help="where to create scratch stores (default: bench/ in the repo; "
        "keep it on the repo's filesystem, not /dev/shm)",
    )
    args = parser.parse_args(argv)

    quick = bool(args.quick)
    try:
        inflights = [
            int(x) for x in (args.inflight or ("1,10,100" if quick else "1,10,100,1000")).split(",")
        ]
    except ValueError:
        parser.error(f"--inflight takes comma-separated integers (got {args.inflight!r})")
    if any(n < 1 for n in inflights):
        parser.error("--inflight values must be at least 1")
    repeat = args.repeat if args.repeat is not None else (1 if quick else 3)
    if repeat < 1:
        parser.error("--repeat must be at least 1")
    modes = [m.strip() for m in args.durability.split(",") if m.strip()]
    for mode in modes:
        if mode not in ("sync", "process"):
            parser.error(f"--durability takes sync and/or process (got {mode!r})")
    base = Path(args.tmp) if args.tmp else Path(__file__).resolve().parent
    base.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-throughput-", dir=base))
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 140)
    try:
        info = machine_info(tmp)
        raw_txns = (5, 5, 50) if quick else (100, 200, 1000)
        raw_setups = (
            ("group sync", True, 1000, raw_txns[0]),
            ("group nosync", False, 1000, raw_txns[1]),
            ("single put sync", True, 1, raw_txns[2]),
        )
        raw: dict[str, RawFigure] = {}
        with console.status("measuring the raw LMDB limit ..."):
            for name, sync, puts, txns in raw_setups:
                raw[name] = median_raw(
                    [bench_raw(tmp, name, sync, puts, txns) for _ in range(repeat)]
                )
        figures: list[PerdureFigure] = []
        for mode in modes:
            ref = raw["group sync" if mode == "sync" else "group nosync"]
            for inflight in inflights:
                runs = (
                    30 * max(1, min(inflight, 4))
                    if quick
                    else min(MAX_RUNS, max(500, 20 * inflight))
                )
                with console.status(f"perdure {mode}, {inflight} in flight, {runs:,} runs ..."):
                    fig = median_perdure(
                        [bench_perdure(tmp, mode, inflight, runs) for _ in range(repeat)]
                    )
                fig.ratio_to_raw = fig.records_per_s / ref.records_per_s
                figures.append(fig)
        report(console, info, figures, raw)
        if args.json:
            payload = {
                "machine": info,
                "quick": quick,
                "targets": {
                    "sync_runs_per_s_at_1000": TARGET_RUNS_PER_S,
                    "records_ratio_to_raw": TARGET_RATIO,
                },
                "raw": [asdict(fig) for fig in raw.values()],
                "perdure": [asdict(fig) for fig in figures],
                "target_checks": check_targets(figures),
            }
            Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")
            console.print(f"wrote {args.json}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
