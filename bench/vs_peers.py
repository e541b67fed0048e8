"""perdure against its peers, in one invocation, on this machine.

    python bench/vs_peers.py [--quick] [--only perdure,dbos,langgraph] [--json out.json]

The same workflow everywhere: three durable steps, each returning a small dict
(trivial work), every step's result persisted before the next one starts.

  perdure    Runtime(durability="sync"), and "process" for reference
  DBOS 3.4   SQLite system database: its default setup, and WAL + synchronous=NORMAL
  LangGraph  1.2, three nodes, SQLite checkpointer, one thread per invocation

Measured for each: sequential latency (one run at a time: p50/p99), throughput with
1, 10, 100 and 1000 runs in flight, and recovery: a process is SIGKILLed with N runs
parked inside step 2, then a fresh process opens the same data and the time from open
(DBOS: launch) until all N runs have completed gives runs/s. LangGraph has no automatic
recovery, so it has no recovery figure.

Every system runs in its own subprocess (``bench/_peer_*.py``; the crash child is
``bench/_recovery_child.py``) so imports and threads never meet; data lives in a
temporary directory under the repository's ``.scratch/`` (same filesystem as the repo),
removed at the end. Peers must be installed: ``pip install -r bench/peers_requirements.txt``.
Sample sizes are capped for peers so the full run stays under ~10 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
LEVELS = ("1", "10", "100", "1000")

SIZES: dict[str, dict[str, Any]] = {
    "full": {
        "perdure": {
            "seq": 200,
            "warmup": 20,
            "levels": {"1": 2_000, "10": 5_000, "100": 10_000, "1000": 20_000},
        },
        # Peers do 44-200 runs/s here: 300 runs per level (1000 at 1000 in flight).
        "peer": {
            "seq": 200,
            "warmup": 20,
            "levels": {"1": 300, "10": 300, "100": 300, "1000": 1_000},
        },
        "recovery": {"perdure": 10_000, "dbos": 1_000},
        "timeout": 900,
    },
    "quick": {
        "perdure": {"seq": 30, "warmup": 5, "levels": {"1": 100, "10": 300, "100": 500}},
        "peer": {"seq": 20, "warmup": 3, "levels": {"1": 20, "10": 40, "100": 100}},
        "recovery": {"perdure": 300, "dbos": 30},
        "timeout": 120,
    },
}

TARGETS = {
    "throughput_1000": 5_000.0,  # flushed 3-step runs/s at 1000 in flight
    "dbos_ratio": 50.0,  # x DBOS throughput
    "p50_ms": 3.0,  # single-run p50
    "recovery": 5_000.0,  # runs/s
    "inline_ratio": 0.9,  # inline sync steps: at least 90% of async steps' runs/s
}


@dataclass(frozen=True)
class System:
    key: str
    family: str  # perdure | dbos | langgraph
    config: str
    label: str
    durability: str
    recovery: bool

    @property
    def script(self) -> Path:
        return BENCH / f"_peer_{self.family}.py"


SYSTEMS = (
    System("perdure-sync", "perdure", "sync", "perdure\nsync", "power loss (fsync)", True),
    System(
        "perdure-process",
        "perdure",
        "process",
        "perdure\nprocess",
        "process crash (no fsync)",
        False,
    ),
    System(
        "perdure-sync-thread",
        "perdure",
        "sync:thread",
        "perdure sync\nsync steps",
        "power loss (fsync); plain step functions in worker threads",
        False,
    ),
    System(
        "perdure-sync-inline",
        "perdure",
        "sync:inline",
        "perdure sync\ninline steps",
        "power loss (fsync); plain step functions inline (inline=True)",
        False,
    ),
    System(
        "dbos-default",
        "dbos",
        "default",
        "DBOS 3.4\nSQLite default",
        "power loss (journal=DELETE, sync=FULL)",
        True,
    ),
    System(
        "dbos-wal",
        "dbos",
        "wal",
        "DBOS 3.4\nSQLite WAL",
        "process crash (WAL, sync=NORMAL)",
        True,
    ),
    System(
        "langgraph",
        "langgraph",
        "",
        "LangGraph 1.2\nSQLite saver",
        "power loss (WAL, sync=FULL)",
        False,
    ),
)

err = Console(stderr=True, width=None if sys.stderr.isatty() else 120)


def log(msg: str) -> None:
    err.print(f"[dim]{time.strftime('%H:%M:%S')}[/] {msg}")


# -- subprocesses ---------------------------------------------------------------------------------


def run_worker(
    sysm: System, mode: str, data: Path, out: Path, timeout: float, **kw: Any
) -> dict[str, Any]:
    cmd = [sys.executable, str(sysm.script), mode, "--dir", str(data), "--out", str(out)]
    if sysm.config:
        cmd += ["--config", sysm.config]
    if "spec" in kw:
        cmd += ["--spec", json.dumps(kw["spec"])]
    if "n" in kw:
        cmd += ["--n", str(kw["n"])]
    t = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=REPO, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return {"error": f"{mode} timed out after {timeout:.0f} s"}
    wall = time.perf_counter() - t
    if proc.returncode != 0 or not out.exists():
        return {"error": f"{mode} exited with code {proc.returncode} (see stderr above)"}
    result: dict[str, Any] = json.loads(out.read_text())
    result["wall_s"] = wall
    return result


def _reader(stream: Any, lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


def run_recovery(sysm: System, n: int, tmp: Path, timeout: float) -> dict[str, Any]:
    data = tmp / f"{sysm.key}-recovery"
    cmd = [sys.executable, str(BENCH / "_recovery_child.py"), sysm.family, str(data), str(n)]
    if sysm.config:
        cmd.append(sysm.config)
    t = time.perf_counter()
    child = subprocess.Popen(
        cmd, cwd=REPO, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True
    )
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_reader, args=(child.stdout, lines), daemon=True).start()
    info: dict[str, Any] | None = None
    deadline = time.monotonic() + timeout
    try:
        while info is None:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                return {"error": f"crash child not ready after {timeout:.0f} s"}
            if line is None:
                return {"error": f"crash child exited with code {child.wait()} before ready"}
            if line.startswith("ready "):
                info = json.loads(line[6:])
            if time.monotonic() > deadline:
                return {"error": f"crash child not ready after {timeout:.0f} s"}
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
        child.wait()
    log(
        f"  {sysm.key}: {n} runs parked in step 2 after {info['all_in_step2_s']:.1f} s "
        f"(setup {time.perf_counter() - t:.1f} s); SIGKILLed, recovering"
    )
    result = run_worker(sysm, "recover", data, tmp / f"{sysm.key}-recovery.json", timeout, n=n)
    result["child"] = info
    return result


# -- figures ----------------------------------------------------------------------------------


def tput(res: dict[str, Any] | None, level: str) -> float | None:
    if not res or "error" in res:
        return None
    r = res.get("throughput", {}).get(level)
    return None if r is None else float(r["runs_per_s"])


def p50(res: dict[str, Any] | None) -> float | None:
    if not res or "error" in res or "seq" not in res:
        return None
    return float(res["seq"]["p50_ms"])


def rec_rate(rec: dict[str, Any] | None) -> float | None:
    if not rec or "error" in rec:
        return None
    return float(rec["runs_per_s"])


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def fmt_rate(x: float | None) -> str:
    return "—" if x is None else f"{x:,.0f}" if x >= 100 else f"{x:,.1f}"


def fmt_ratio(x: float | None) -> str:
    return "—" if x is None else f"{x:,.1f}x" if x < 100 else f"{x:,.0f}x"


def _short(n: int) -> str:
    return f"{n / 1000:g}k" if n >= 1000 else str(n)


def fmt_ms(x: float | None) -> str:
    return "—" if x is None else f"{x:.2f}"


# -- report -------------------------------------------------------------------------------------


def report(
    console: Console,
    systems: list[System],
    results: dict[str, dict[str, Any]],
    recovery: dict[str, dict[str, Any]],
    quick: bool,
) -> list[dict[str, Any]]:
    def cell(key: str, fn: Any) -> str:
        res = results.get(key)
        if res is not None and "error" in res:
            return "[red]error[/]"
        return str(fn(res))

    main = Table(
        title="3-step durable workflow: perdure vs peers (same machine, one invocation)",
        show_lines=False,
    )
    main.add_column("metric", style="bold")
    main.add_column("target", justify="right", style="cyan")
    for s in systems:
        main.add_column(s.label, justify="right")

    def row(name: str, target: str, fn: Any) -> None:
        main.add_row(name, target, *(cell(s.key, fn) for s in systems))

    main.add_row(
        "acknowledged runs survive",
        "",
        *(s.durability.replace(" (", "\n(") for s in systems),
        style="dim",
    )
    row("sequential p50, ms", "≤ 3", lambda r: fmt_ms(p50(r)))
    row("sequential p99, ms", "", lambda r: fmt_ms(r["seq"]["p99_ms"] if r else None))
    for lv in LEVELS:
        target = f"≥ {TARGETS['throughput_1000']:,.0f}" if lv == "1000" else ""
        row(f"runs/s, {lv} in flight", target, lambda r, lv=lv: fmt_rate(tput(r, lv)))
    row(
        "  runs per level",
        "",
        lambda r: (
            "/".join(
                _short(r["throughput"][lv]["runs"])
                for lv in LEVELS
                if lv in r.get("throughput", {})
            )
            if r
            else "—"
        ),
    )

    rec_cells = []
    for s in systems:
        rec = recovery.get(s.key)
        if not s.recovery:
            rec_cells.append("n/a" if s.family == "langgraph" else "")
        elif rec is None:
            rec_cells.append("—")
        elif "error" in rec:
            rec_cells.append("[red]error[/]")
        else:
            rec_cells.append(
                f"{fmt_rate(rec['runs_per_s'])}\n({rec['n']:,} runs, {rec['seconds']:.1f} s)"
            )
    main.add_row("recovery, runs/s", f"≥ {TARGETS['recovery']:,.0f}", *rec_cells)
    row("peak RSS, MB", "", lambda r: f"{r['max_rss_mb']:.0f}" if r else "—")
    row(
        "disk floor at its start, ms",
        "",
        lambda r: f"{r['fsync_floor']['p50_ms']:.2f}" if r and "fsync_floor" in r else "—",
    )
    console.print(main)

    # Ratios: perdure's advantage (rates: perdure / peer; latency: peer / perdure).
    ps, pp = results.get("perdure-sync"), results.get("perdure-process")
    pairs = [
        ("sync ÷ DBOS default", ps, "dbos-default", "perdure-sync"),
        ("sync ÷ DBOS WAL", ps, "dbos-wal", "perdure-sync"),
        ("sync ÷ LangGraph", ps, "langgraph", "perdure-sync"),
        ("process ÷ DBOS WAL", pp, "dbos-wal", "perdure-process"),
    ]
    pairs = [p for p in pairs if p[1] is not None and p[2] in results]
    if pairs:
        rt = Table(title="perdure's advantage (x ; > 1 means perdure is better)")
        rt.add_column("metric", style="bold")
        rt.add_column("target", justify="right", style="cyan")
        for name, *_ in pairs:
            rt.add_column(name, justify="right")
        rt.add_row(
            "sequential p50 (peer ÷ perdure)",
            "",
            *(fmt_ratio(ratio(p50(results[k]), p50(me))) for _, me, k, _ in pairs),
        )
        for lv in LEVELS:
            rt.add_row(
                f"runs/s, {lv} in flight",
                "≥ 50x DBOS" if lv == "1000" else "",
                *(fmt_ratio(ratio(tput(me, lv), tput(results[k], lv))) for _, me, k, _ in pairs),
            )
        rt.add_row(
            "recovery runs/s",
            "",
            *(
                fmt_ratio(ratio(rec_rate(recovery.get(mk)), rec_rate(recovery.get(k))))
                if k != "langgraph"
                else "n/a"
                for _, _, k, mk in pairs
            ),
        )
        console.print(rt)

    # Targets.
    checks = []
    t1000 = tput(ps, "1000")
    checks.append(
        (
            "≥ 5,000 flushed 3-step runs/s at 1000 in flight",
            fmt_rate(t1000),
            t1000,
            TARGETS["throughput_1000"],
            True,
        )
    )
    d_ratio = ratio(t1000, tput(results.get("dbos-default"), "1000"))
    w_ratio = ratio(t1000, tput(results.get("dbos-wal"), "1000"))
    checks.append(
        (
            "≥ 50x DBOS throughput (1000 in flight, sync vs DBOS default; WAL in brackets)",
            f"{fmt_ratio(d_ratio)} ({fmt_ratio(w_ratio)})",
            d_ratio,
            TARGETS["dbos_ratio"],
            True,
        )
    )
    inline_ratio = ratio(tput(results.get("perdure-sync-inline"), "1000"), t1000)
    checks.append(
        (
            "inline sync steps within 10% of async steps (1000 in flight; threads in brackets)",
            f"{fmt_ratio(inline_ratio)} ("
            f"{fmt_ratio(ratio(tput(results.get('perdure-sync-thread'), '1000'), t1000))})",
            inline_ratio,
            TARGETS["inline_ratio"],
            True,
        )
    )
    pv = p50(ps)
    shown_p50 = "—" if pv is None else f"{fmt_ms(pv)} ms"
    checks.append(("single-run p50 ≤ 3 ms", shown_p50, pv, TARGETS["p50_ms"], False))
    rv = rec_rate(recovery.get("perdure-sync"))
    rn = recovery.get("perdure-sync", {}).get("n")
    checks.append(
        (
            f"recovery ≥ 5,000 runs/s ({rn:,} runs in flight, SIGKILL)"
            if rn
            else "recovery ≥ 5,000 runs/s",
            fmt_rate(rv),
            rv,
            TARGETS["recovery"],
            True,
        )
    )
    tt = Table(
        title="targets (perdure, durability='sync')"
        + ("  [yellow]--quick: sizes too small to judge[/]" if quick else "")
    )
    tt.add_column("target")
    tt.add_column("measured", justify="right")
    tt.add_column("", justify="center")
    out = []
    for name, shown, value, bound, higher in checks:
        if value is None:
            verdict, ok = "[dim]n/a[/]", None
        else:
            ok = value >= bound if higher else value <= bound
            verdict = "[green]met[/]" if ok else "[red]missed[/]"
        tt.add_row(name, shown, verdict)
        out.append({"target": name, "measured": value, "bound": bound, "met": ok})
    console.print(tt)
    console.print(
        "[dim]Reference (anchors.md, 2-core VM): DBOS SQLite default 44-66 workflows/s, WAL+NORMAL "
        "105-112/s, recovery ≈58/s; LangGraph SQLite saver 110-124 invocations/s.[/]"
    )
    return out


def fsync_floor(directory: Path, n: int = 200) -> dict[str, float]:
    """pwrite + fsync of one 4 KiB page, n times: the disk floor right now (anchors: 0.15 ms)."""
    path = directory / "fsync-probe"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    page = b"\x00" * 4096
    lat = []
    try:
        for i in range(n):
            t = time.perf_counter()
            os.pwrite(fd, page, (i % 16) * 4096)
            os.fsync(fd)
            lat.append(time.perf_counter() - t)
    finally:
        os.close(fd)
        path.unlink()
    lat.sort()
    return {"p50_ms": lat[n // 2] * 1e3, "p99_ms": lat[int(n * 0.99) - 1] * 1e3}


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def machine() -> dict[str, Any]:
    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], cwd=REPO, capture_output=True, text=True, check=True
            ).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return "?"

    import sqlite3

    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "sqlite": sqlite3.sqlite_version,
        "git": git("rev-parse", "--short", "HEAD")
        + ("+dirty" if git("status", "--porcelain") else ""),
    }


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="tiny sizes (smoke test, < 60 s)")
    ap.add_argument("--only", default="perdure,dbos,langgraph", help="comma list of systems")
    ap.add_argument("--json", metavar="PATH", help="also write every figure as JSON")
    ap.add_argument("--keep", action="store_true", help="keep the temporary data directory")
    args = ap.parse_args()

    only = {x.strip() for x in args.only.split(",") if x.strip()}
    unknown = only - {"perdure", "dbos", "langgraph"}
    if unknown:
        ap.error(f"unknown systems: {', '.join(sorted(unknown))}")
    systems = [s for s in SYSTEMS if s.family in only]
    sizes = SIZES["quick" if args.quick else "full"]
    timeout = float(sizes["timeout"])

    scratch = REPO / ".scratch"
    scratch.mkdir(exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="vs-peers-", dir=scratch))
    results: dict[str, dict[str, Any]] = {}
    recovery: dict[str, dict[str, Any]] = {}
    t0 = time.perf_counter()
    load_before = os.getloadavg()
    floor_before = fsync_floor(tmp)
    log(
        f"disk floor: pwrite+fsync p50 {floor_before['p50_ms']:.2f} ms, "
        f"p99 {floor_before['p99_ms']:.2f} ms"
    )
    if load_before[0] > 1.0:
        log(
            f"[yellow]load average {load_before[0]:.1f} on {os.cpu_count()} CPUs: "
            "other work on this machine will skew the figures[/]"
        )
    try:
        for s in systems:
            module = {"dbos": "dbos", "langgraph": "langgraph.checkpoint.sqlite"}.get(s.family)
            if module and not _installed(module):
                results[s.key] = {
                    "error": "not installed: pip install -r bench/peers_requirements.txt"
                }
                log(f"[red]{s.key}: {results[s.key]['error']}[/]")
                continue
            spec = sizes["perdure" if s.family == "perdure" else "peer"]
            floor = fsync_floor(tmp)
            log(f"[bold]{s.key}[/]: latency and throughput (disk floor {floor['p50_ms']:.2f} ms)")
            results[s.key] = run_worker(
                s, "bench", tmp / s.key, tmp / f"{s.key}.json", timeout, spec=spec
            )
            results[s.key]["fsync_floor"] = floor
            if "error" in results[s.key]:
                log(f"[red]{s.key}: {results[s.key]['error']}[/]")
            if s.recovery:
                n = sizes["recovery"][s.family]
                log(f"[bold]{s.key}[/]: recovery of {n:,} runs killed in flight")
                recovery[s.key] = run_recovery(s, n, tmp, timeout)
                if "error" in recovery[s.key]:
                    log(f"[red]{s.key}: {recovery[s.key]['error']}[/]")
                else:
                    r = recovery[s.key]
                    got = f"{r['seconds']:.2f} s ({r['runs_per_s']:,.0f} runs/s)"
                    log(f"  {s.key}: recovered {n:,} in {got}")
    finally:
        if args.keep:
            log(f"data kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    load_after = os.getloadavg()
    floor_after = fsync_floor(scratch)
    log(f"done in {time.perf_counter() - t0:.0f} s (load average {load_after[0]:.1f})")

    # Seven columns need ~130 characters: do not squeeze them into 80 when piped.
    console = Console(width=None if sys.stdout.isatty() else 132)
    targets = report(console, systems, results, recovery, args.quick)
    console.print(
        f"[dim]This run: {os.cpu_count()} CPUs, load average {load_before[0]:.1f} before / "
        f"{load_after[0]:.1f} after; disk floor (pwrite+fsync of one page) p50 "
        f"{floor_before['p50_ms']:.2f} ms before / {floor_after['p50_ms']:.2f} ms after "
        f"(anchors: 0.15 ms).[/]"
    )
    if args.json:
        doc = {
            "machine": machine(),
            "quick": args.quick,
            "sizes": sizes,
            "systems": {
                s.key: {"label": s.label.replace("\n", " "), "durability": s.durability}
                for s in systems
            },
            "results": results,
            "recovery": recovery,
            "targets": targets,
            "elapsed_s": time.perf_counter() - t0,
            "loadavg_before": load_before,
            "loadavg_after": load_after,
            "fsync_floor_before": floor_before,
            "fsync_floor_after": floor_after,
        }
        Path(args.json).write_text(json.dumps(doc, indent=1) + "\n")
        log(f"wrote {args.json}")
    failed = [k for k, v in (results | recovery).items() if "error" in v]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
