"""Waiting runs: resume latency, memory of parked runs, and a million passivated runs.

    python bench/waits.py                  # full run (about 10 minutes on 2 cores)
    python bench/waits.py --quick          # smoke version, well under a minute
    python bench/waits.py --json out.json  # also dump every figure

Every scenario runs in its own subprocess (``bench/_waits_child.py``, LangGraph in
``bench/_waits_langgraph.py``) so each RSS figure starts from a clean interpreter.
Scratch data goes under the repository's ``.scratch/`` (same filesystem as the repo,
never /dev/shm) and is removed at the end unless ``--keep``.

1. **Resume latency** (durability ``sync``, sequential, one run at a time). The
   workflow waits on ``ctx.wait_for_event("go")``, then runs one ``ctx.step`` and
   returns. Per sample: start a run, follow its log until the wait's checkpoint is
   committed, park an ``rt.events`` follower, take ``t0`` just before
   ``rt.resume(run, ExternalEvent("go"))`` and time: the ``resume()`` call (the signal
   is durably stored), the follower seeing the step's STEP_FINISHED (signal accepted ->
   body continues -> its next commit is durable), and the terminal event. The same
   again for runs that were passivated at their wait (the signal re-activates them by
   replay). Beside it, in the same invocation: one flushed LMDB put+commit on the same
   filesystem (the floor of one durable step), and LangGraph's interrupt + resume
   round trip with its SQLite saver (``Command(resume=...)`` invoke until done).
2. **RSS of N concurrent waiting runs**: VmRSS after all N are committed ``waiting``,
   minus VmRSS just before starting them; once with every actor kept live
   (``max_live_actors=None``, ``passivate_after`` huge), once with the default settings
   (10,000 live actors, the least recently used passivated).
3. **A million passivated waiting runs**: a child creates them (``passivate_after=0``:
   each actor stops right after its wait's checkpoint commits; durability ``process``
   for creation speed) within a time budget; a fresh child then opens the directory
   (``async with rt``, durability ``sync``; recovery leaves waiting runs passive),
   reports the open time and RSS, and resumes a few random runs to completion. If the
   budget stops creation short of the target, the open figures are extrapolated
   linearly to the target and labelled so.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _peer_common import filesystem_of
from rich.console import Console
from rich.table import Table
from rich.text import Text

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent

TARGET_RESUME_P50_MS = 1.0
TARGET_LIVE_N = 100_000
TARGET_LIVE_MB = 600.0
TARGET_PASSIVE_N = 1_000_000
TARGET_PASSIVE_MB = 1024.0
TARGET_OPEN_S = 2.0

SIZES: dict[str, dict[str, Any]] = {
    "full": {
        "resume": {"n": 1000, "warmup": 100, "passive_n": 300},
        "langgraph": {"n": 300, "warmup": 20},
        "live": {"n": TARGET_LIVE_N, "inflight": 500, "durability": "sync", "timeout": 1500},
        "passive": {
            "n": TARGET_PASSIVE_N,
            "inflight": 500,
            "durability": "process",
            "budget": 480.0,
            "resume": 10,
        },
    },
    "quick": {
        "resume": {"n": 100, "warmup": 10, "passive_n": 20},
        "langgraph": {"n": 30, "warmup": 3},
        "live": {"n": 2_000, "inflight": 200, "durability": "sync", "timeout": 120},
        "passive": {
            "n": 20_000,
            "inflight": 500,
            "durability": "process",
            "budget": 20.0,
            "resume": 3,
        },
    },
}
SCENARIOS = ("resume", "langgraph", "live", "passive")


# -- running children ----------------------------------------------------------------------


def loadavg() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def run_child(script: str, args: list[str], out: Path, timeout: float) -> dict[str, Any]:
    """Run one child; its progress goes to our stderr; returns its JSON (or an error)."""
    cmd = [sys.executable, str(BENCH / script), *args, "--out", str(out)]
    load0 = loadavg()
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=REPO, timeout=timeout, stdout=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    wall = time.perf_counter() - t0
    if proc.returncode != 0 or not out.exists():
        return {"error": f"exit code {proc.returncode}"}
    result: dict[str, Any] = json.loads(out.read_text())
    result["wall_seconds"] = wall
    result["load_before"] = load0
    result["load_after"] = loadavg()
    return result


def scenario_resume(tmp: Path, spec: dict[str, Any]) -> dict[str, Any]:
    return run_child(
        "_waits_child.py",
        ["resume", "--dir", str(tmp / "resume"), "--spec", json.dumps(spec)],
        tmp / "resume.json",
        900,
    )


def scenario_langgraph(tmp: Path, spec: dict[str, Any]) -> dict[str, Any]:
    return run_child(
        "_waits_langgraph.py",
        ["--dir", str(tmp / "langgraph"), "--spec", json.dumps(spec)],
        tmp / "lg.json",
        900,
    )


def scenario_live(tmp: Path, spec: dict[str, Any]) -> dict[str, Any]:
    return run_child(
        "_waits_child.py",
        ["live", "--dir", str(tmp / "live"), "--spec", json.dumps(spec)],
        tmp / "live.json",
        float(spec["timeout"]) + 120,
    )


def scenario_live_with_floor(tmp: Path, spec: dict[str, Any]) -> dict[str, Any]:
    out = scenario_live(tmp, spec)
    # The same population with the default live-actor cap and passivation.
    out["defaults"] = run_child(
        "_waits_child.py",
        [
            "live",
            "--dir",
            str(tmp / "live-defaults"),
            "--spec",
            json.dumps({**spec, "defaults": True}),
        ],
        tmp / "live-defaults.json",
        float(spec["timeout"]) + 120,
    )
    out["bare"] = run_child(
        "_waits_child.py",
        ["bare", "--dir", str(tmp / "bare"), "--spec", json.dumps({"n": spec["n"]})],
        tmp / "bare.json",
        600,
    )
    return out


def scenario_passive(tmp: Path, spec: dict[str, Any]) -> dict[str, Any]:
    path = tmp / "passive"
    create_spec = {k: spec[k] for k in ("n", "inflight", "durability", "budget")}
    created = run_child(
        "_waits_child.py",
        ["create", "--dir", str(path), "--spec", json.dumps(create_spec)],
        tmp / "create.json",
        float(spec["budget"]) + 600,
    )
    if "error" in created:
        return {"create": created, "error": f"create: {created['error']}"}
    sample = created.pop("sample")
    opened = run_child(
        "_waits_child.py",
        [
            "open",
            "--dir",
            str(path),
            "--spec",
            json.dumps({"sample": sample, "resume": spec["resume"]}),
        ],
        tmp / "open.json",
        900,
    )
    out: dict[str, Any] = {"create": created, "open": opened}
    if "error" in opened:
        out["error"] = f"open: {opened['error']}"
        return out
    n, target = created["n"], spec["target"]
    out["n"] = n
    out["target_n"] = target
    out["extrapolated"] = n < target
    scale = target / n if n else float("nan")
    base = opened["rss_before"]
    after = opened["rss_after_open"]
    out["at_target"] = {
        "open_seconds": opened["open_seconds"] * scale,
        "rss_mb": base["VmRSS"] + (after["VmRSS"] - base["VmRSS"]) * scale,
        "rss_anon_mb": base["RssAnon"] + (after["RssAnon"] - base["RssAnon"]) * scale,
        "rss_file_mb": base["RssFile"] + (after["RssFile"] - base["RssFile"]) * scale,
        "peak_mb": base["VmRSS"] + (opened["max_rss_mb"] - base["VmRSS"]) * scale,
        "create_seconds": created["seconds"] * scale,
        "data_mb": created["data_mb"] * scale,
    }
    return out


# -- machine and tree ------------------------------------------------------------------------


def machine_info(tmp: Path) -> dict[str, Any]:
    cpu = platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info: dict[str, Any] = {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "tmp_dir": str(tmp),
        "filesystem": filesystem_of(tmp),
        "load_at_start": loadavg(),
    }
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        diff = subprocess.run(
            ["git", "diff", "HEAD", "--", "perdure"], cwd=REPO, capture_output=True, check=True
        ).stdout
        info["git_head"] = head
        info["perdure_uncommitted_diff"] = hashlib.sha256(diff).hexdigest()[:12] if diff else None
    except (OSError, subprocess.CalledProcessError):
        info["git_head"] = None
    return info


# -- report ------------------------------------------------------------------------------------


def _ms(x: float) -> str:
    return f"{x:.3f}" if x < 10 else f"{x:.1f}"


def _mark(ok: bool | None) -> Text:
    if ok is None:
        return Text("-", style="dim")
    return Text("yes", style="green") if ok else Text("NO", style="bold red")


def _load(r: dict[str, Any]) -> str:
    return f"{r.get('load_before', float('nan')):.1f}/{r.get('load_after', float('nan')):.1f}"


def report(console: Console, info: dict[str, Any], res: dict[str, Any], quick: bool) -> None:
    tree = info.get("git_head") or "?"
    if info.get("perdure_uncommitted_diff"):
        tree += f" + uncommitted perdure/ changes (diff {info['perdure_uncommitted_diff']})"
    console.print(
        f"[bold]machine[/]: {info['nproc']} CPUs ({info['cpu']}), Python "
        f"{info['python']}; disk {info['filesystem']}; load average at start "
        f"{info['load_at_start']:.2f}",
        soft_wrap=True,
    )
    console.print(
        f"[bold]tree[/]: {tree}{'   [bold yellow](--quick sizes)[/]' if quick else ''}",
        soft_wrap=True,
    )

    r = res.get("resume", {})
    lg = res.get("langgraph", {})
    table = Table(title="1. resume latency, sequential, flushed (ms)", header_style="bold")
    for name in ("what", "n", "p50", "p99", "mean", "max"):
        table.add_column(name, justify="left" if name == "what" else "right")

    def row(label: str, s: dict[str, Any] | None, style: str | None = None) -> None:
        if not s:
            return
        table.add_row(
            label,
            f"{s['n']:,}",
            _ms(s["p50_ms"]),
            _ms(s["p99_ms"]),
            _ms(s["mean_ms"]),
            _ms(s["max_ms"]),
            style=style,
        )

    if "error" in r:
        table.add_row(f"perdure: FAILED ({r['error']})", "", "", "", "", "", style="red")
    else:
        live = r.get("live", {})
        row("raw LMDB: one flushed put+commit (floor of one durable step)", r.get("raw_flush"))
        row("perdure: rt.resume() call (signal durably stored)", live.get("resume_call"))
        row(
            "perdure: signal -> body continues -> step committed (follower)",
            live.get("step_committed"),
            "bold",
        )
        row("perdure: signal -> body past the step (in-body clock)", live.get("body_past_step"))
        row("perdure: signal -> run completed (terminal event committed)", live.get("completed"))
        quiet = r.get("live_no_follower")
        if quiet:
            row(
                "perdure, no follower: signal -> body past the step (in-body clock)",
                quiet.get("body_past_step"),
            )
            row(
                "perdure, no follower: signal -> run completed (rt.wait returns)",
                quiet.get("completed"),
            )
        passive = r.get("passive")
        if passive:
            row(
                "perdure, passivated run: rt.resume() call (re-activation + replay)",
                passive.get("resume_call"),
            )
            row("perdure, passivated run: signal -> step committed", passive.get("step_committed"))
            row("perdure, passivated run: signal -> run completed", passive.get("completed"))
    if "error" in lg:
        table.add_row(f"LangGraph: FAILED ({lg['error']})", "", "", "", "", "", style="red")
    else:
        row("LangGraph: invoke until interrupt()", lg.get("interrupt"))
        row(
            "LangGraph: Command(resume=...) invoke until done (round trip)",
            lg.get("resume"),
            "bold",
        )
    if r or lg:
        console.print(table)
    ratio = res.get("ratios", {})
    if ratio:
        console.print(
            f"LangGraph resume round trip p50 / perdure signal -> run completed p50 = "
            f"[bold]{ratio['langgraph_over_perdure_completed']:.1f}x[/]  "
            f"(/ perdure signal -> step committed p50 = "
            f"{ratio['langgraph_over_perdure_step']:.1f}x; perdure step-committed p50 / raw "
            f"flush p50 = {ratio['perdure_step_over_raw_flush']:.1f}; the floor of signal -> "
            "next commit is 2 sequential flushes)",
            soft_wrap=True,
        )
        console.print(
            f"LangGraph: {lg.get('config', '')}, langgraph {lg.get('version', '?')}, "
            f"checkpoint-sqlite {lg.get('checkpoint_sqlite', '?')}, sqlite "
            f"{lg.get('sqlite', '?')}",
            style="dim",
            soft_wrap=True,
        )

    lv = res.get("live", {})
    table = Table(title="2. concurrent waiting runs", header_style="bold")
    cols = (
        "N",
        "durability",
        "start -> all waiting s",
        "runs/s",
        "RSS before MB",
        "RSS after MB",
        "delta MB",
        "KB/run",
        "anon delta MB",
        "live actors",
        "resume->done p50 ms (all parked)",
        "close s",
        "load",
    )
    for name in cols:
        table.add_column(name, justify="right")
    if "error" in lv:
        table.add_row(f"FAILED: {lv['error']}", *[""] * (len(cols) - 1), style="red")
    elif lv:
        for label, fig in (("live", lv), ("cap", lv.get("defaults", {}))):
            if not fig:
                continue
            if "error" in fig:
                table.add_row(f"FAILED ({label}): {fig['error']}", *[""] * (len(cols) - 1))
                continue
            b, a = fig["rss_before"], fig["rss_after"]
            delta = a["VmRSS"] - b["VmRSS"]
            table.add_row(
                f"{fig['n']:,}",
                f"{fig['durability']}, {label}",
                f"{fig['seconds_to_all_waiting']:.1f}",
                f"{fig['runs_per_s']:,.0f}",
                f"{b['VmRSS']:.0f}",
                f"{a['VmRSS']:.0f}",
                f"{delta:.0f}",
                f"{delta * 1024 / fig['n']:.1f}",
                f"{a['RssAnon'] - b['RssAnon']:.0f}",
                f"{fig['live_actors']:,}",
                _ms(fig["resume_to_completed_with_all_parked"]["p50_ms"]),
                f"{fig['close_seconds']:.1f}",
                _load(fig),
            )
        bare = lv.get("bare", {})
        if bare and "error" not in bare:
            b, a = bare["rss_before"], bare["rss_after"]
            delta = a["VmRSS"] - b["VmRSS"]
            table.add_row(
                f"{bare['n']:,}",
                "floor",
                f"{bare['seconds']:.1f}",
                "",
                f"{b['VmRSS']:.0f}",
                f"{a['VmRSS']:.0f}",
                f"{delta:.0f}",
                f"{delta * 1024 / bare['n']:.1f}",
                f"{a['RssAnon'] - b['RssAnon']:.0f}",
                "",
                "",
                "",
                _load(bare),
                style="dim",
            )
    if lv:
        console.print(table)
    if lv and "error" not in lv and "gc_objects" in lv:
        g2 = lv["gc_during_setup"]["gen2"]
        console.print(
            f"gc: {lv['gc_objects']:,} tracked objects with all runs parked; one full collection "
            f"{lv['full_gc_seconds']:.2f} s; during setup {g2['passes']} gen2 passes "
            f"({g2['total_s']:.1f} s, longest {g2['max_ms']:.0f} ms)",
            style="dim",
            soft_wrap=True,
        )
    if lv and "error" not in lv:
        console.print(
            "live: every actor kept live (max_live_actors=None, no passivation); cap: the "
            "default settings (10,000 live actors, least recently used ones passivated); "
            "floor: bare trio tasks, each parked on its own trio.Event, in a fresh process "
            "(what a parked coroutine costs before any runtime state).",
            style="dim",
            soft_wrap=True,
        )

    ps = res.get("passive", {})
    table = Table(
        title="3. passivated waiting runs: create, then open in a fresh process",
        header_style="bold",
    )
    cols = (
        "N",
        "create s",
        "runs/s",
        "data MB",
        "open s",
        "RSS before MB",
        "RSS after open MB",
        "anon / file MB",
        "peak MB",
        "recovered waiting",
        "live actors",
        "resumed ok",
        "resume p50 ms",
        "load",
    )
    for name in cols:
        table.add_column(name, justify="right")
    if "error" in ps:
        table.add_row(f"FAILED: {ps['error']}", *[""] * (len(cols) - 1), style="red")
    elif ps:
        c, o = ps["create"], ps["open"]
        a = o["rss_after_open"]
        table.add_row(
            f"{ps['n']:,}",
            f"{c['seconds']:.1f}",
            f"{c['runs_per_s']:,.0f}",
            f"{c['data_mb']:,.0f}",
            f"{o['open_seconds']:.2f}",
            f"{o['rss_before']['VmRSS']:.0f}",
            f"{a['VmRSS']:.0f}",
            f"{a['RssAnon']:.0f} / {a['RssFile']:.0f}",
            f"{o['max_rss_mb']:.0f}",
            f"{o['recovered'].get('waiting', 0):,}",
            f"{o['live_actors_after_open']:,}",
            f"{o['resumed_ok']}/{o['resumed']}",
            _ms(o["resume_to_completed"]["p50_ms"]),
            _load(o),
        )
        if ps["extrapolated"]:
            t = ps["at_target"]
            table.add_row(
                Text(f"{ps['target_n']:,} (extrap.)", style="yellow"),
                f"~{t['create_seconds']:.0f}",
                "",
                f"~{t['data_mb']:,.0f}",
                f"~{t['open_seconds']:.1f}",
                "",
                f"~{t['rss_mb']:.0f}",
                f"~{t['rss_anon_mb']:.0f} / {t['rss_file_mb']:.0f}",
                f"~{t['peak_mb']:.0f}",
                "",
                "",
                "",
                "",
                "",
                style="yellow",
            )
    if ps:
        console.print(table)
    if ps and "error" not in ps:
        c = ps["create"]
        note = (
            f"created with durability {c['durability']}, passivate_after=0, "
            f"{c['inflight']} starters in flight, budget {c['budget_s']:.0f} s"
            f"{' (hit: creation stopped early)' if c['budget_hit'] else ''}; opened with "
            f"durability sync. RSS after open is after gc.collect(); 'file' is LMDB's "
            f"mmap pages touched (shared, reclaimable page cache)."
        )
        if ps["extrapolated"]:
            note += (
                f" Yellow row: linear extrapolation from N={ps['n']:,} to "
                f"{ps['target_n']:,} (open cost and RSS growth per run held constant)."
            )
        console.print(note, style="dim", soft_wrap=True)

    targets = Table(title="targets", header_style="bold")
    for name in ("target", "measured", "met"):
        targets.add_column(name, justify="left" if name == "target" else "right")
    for check in check_targets(res):
        targets.add_row(check["target"], check["measured"], _mark(check["met"]))
    console.print(targets)


def check_targets(res: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    live = res.get("resume", {}).get("live")
    quiet = res.get("resume", {}).get("live_no_follower")
    if live:
        p50 = live["step_committed"]["p50_ms"]
        out.append(
            {
                "target": f"resume p50 <= {TARGET_RESUME_P50_MS:g} ms flushed "
                "(signal -> body continues -> next commit)",
                "measured": f"{p50:.3f} ms (resume() call alone {live['resume_call']['p50_ms']:.3f}"
                + (
                    f"; no follower, in-body {quiet['body_past_step']['p50_ms']:.3f})"
                    if quiet
                    else ")"
                ),
                "met": p50 <= TARGET_RESUME_P50_MS,
            }
        )
    lv = res.get("live", {})
    for what, fig in (
        ("default settings: 10k live-actor cap, the rest passivated", lv.get("defaults", {})),
        ("every actor kept live", lv),
    ):
        if not fig or "error" in fig:
            continue
        n = fig["n"]
        if fig is not lv and n != TARGET_LIVE_N:
            continue  # below the cap every actor is live: nothing to extrapolate from
        delta = fig["rss_after"]["VmRSS"] - fig["rss_before"]["VmRSS"]
        at = delta * TARGET_LIVE_N / n
        label = (
            f"{delta:.0f} MB" if n == TARGET_LIVE_N else (f"~{at:.0f} MB (extrapolated from {n:,})")
        )
        out.append(
            {
                "target": f"{TARGET_LIVE_N:,} waiting runs ({what}) <= {TARGET_LIVE_MB:.0f} MB RSS",
                "measured": label,
                "met": at <= TARGET_LIVE_MB,
            }
        )
    ps = res.get("passive", {})
    if ps and "error" not in ps:
        t = ps["at_target"]
        tag = f" (extrapolated from {ps['n']:,})" if ps["extrapolated"] else ""
        out.append(
            {
                "target": f"{TARGET_PASSIVE_N:,} passivated waiting runs <= {TARGET_PASSIVE_MB:.0f} MB "
                "RSS after open",
                "measured": f"{'~' if ps['extrapolated'] else ''}{t['rss_mb']:.0f} MB{tag}",
                "met": t["rss_mb"] <= TARGET_PASSIVE_MB,
            }
        )
        out.append(
            {
                "target": f"open with {TARGET_PASSIVE_N:,} passivated waiting runs <= "
                f"{TARGET_OPEN_S:g} s",
                "measured": f"{'~' if ps['extrapolated'] else ''}{t['open_seconds']:.2f} s{tag}",
                "met": t["open_seconds"] <= TARGET_OPEN_S,
            }
        )
        o = ps["open"]
        out.append(
            {
                "target": "sampled passivated runs resume and complete after the open",
                "measured": f"{o['resumed_ok']}/{o['resumed']}",
                "met": o["resumed_ok"] == o["resumed"] and o["resumed"] > 0,
            }
        )
    return out


# -- main ----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bench/waits.py",
        description="perdure waiting runs: resume latency, RSS of parked runs, 1M passivated runs",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke sizes (2k live, 20k passivated; well under a minute)",
    )
    parser.add_argument("--json", metavar="OUT", help="also write every figure to this file")
    parser.add_argument(
        "--only",
        default=",".join(SCENARIOS),
        metavar="S,S",
        help=f"scenarios to run (default all: {','.join(SCENARIOS)})",
    )
    parser.add_argument("--live-n", type=int, metavar="N", help="runs of scenario 2")
    parser.add_argument(
        "--live-durability",
        choices=("sync", "process"),
        help="durability of scenario 2's setup (default sync)",
    )
    parser.add_argument(
        "--passive-n", type=int, metavar="N", help="target runs of scenario 3 (default 1,000,000)"
    )
    parser.add_argument(
        "--create-budget",
        type=float,
        metavar="S",
        help="seconds allowed for creating scenario 3's runs (default 480; "
        "quick 20); creation stops there and figures are extrapolated",
    )
    parser.add_argument(
        "--samples", type=int, metavar="N", help="resume-latency samples (default 1000; quick 100)"
    )
    parser.add_argument(
        "--tmp", metavar="DIR", help="where scratch data goes (default .scratch/ in the repository)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch data")
    args = parser.parse_args(argv)

    quick = bool(args.quick)
    sizes = json.loads(json.dumps(SIZES["quick" if quick else "full"]))
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    for s in only:
        if s not in SCENARIOS:
            parser.error(f"--only takes {','.join(SCENARIOS)} (got {s!r})")
    if args.live_n is not None:
        sizes["live"]["n"] = args.live_n
    if args.live_durability:
        sizes["live"]["durability"] = args.live_durability
    if args.passive_n is not None:
        sizes["passive"]["n"] = args.passive_n
    if args.create_budget is not None:
        sizes["passive"]["budget"] = args.create_budget
    if args.samples is not None:
        sizes["resume"]["n"] = args.samples
    # scenario 3's target stays 1M for the extrapolation unless the caller chose N
    sizes["passive"]["target"] = args.passive_n or TARGET_PASSIVE_N

    base = Path(args.tmp) if args.tmp else REPO / ".scratch"
    base.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="waits-", dir=base))
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
    results: dict[str, Any] = {}
    failed = False
    try:
        info = machine_info(tmp)
        t_all = time.perf_counter()
        steps = {
            "resume": (scenario_resume, "resume latency (perdure)"),
            "langgraph": (scenario_langgraph, "resume latency (LangGraph)"),
            "live": (scenario_live_with_floor, f"{sizes['live']['n']:,} live waiting runs"),
            "passive": (scenario_passive, f"{sizes['passive']['n']:,} passivated waiting runs"),
        }
        for name in SCENARIOS:
            if name not in only:
                continue
            fn, what = steps[name]
            console.print(f"[bold]>>[/] {what} ...", highlight=False)
            results[name] = fn(tmp, sizes[name])
            failed |= "error" in results[name]
        results["seconds"] = time.perf_counter() - t_all
        r, lg = results.get("resume", {}), results.get("langgraph", {})
        if r.get("live") and lg.get("resume"):
            results["ratios"] = {
                "langgraph_over_perdure_completed": lg["resume"]["p50_ms"]
                / r["live"]["completed"]["p50_ms"],
                "langgraph_over_perdure_step": lg["resume"]["p50_ms"]
                / r["live"]["step_committed"]["p50_ms"],
                "perdure_step_over_raw_flush": r["live"]["step_committed"]["p50_ms"]
                / r["raw_flush"]["p50_ms"],
            }
        info["load_at_end"] = loadavg()
        report(console, info, results, quick)
        console.print(
            f"total {results['seconds']:.0f} s; load average at end {info['load_at_end']:.2f}",
            style="dim",
        )
        if args.json:
            payload = {
                "machine": info,
                "quick": quick,
                "sizes": sizes,
                "targets": {
                    "resume_p50_ms": TARGET_RESUME_P50_MS,
                    "live_100k_rss_mb": TARGET_LIVE_MB,
                    "passive_1m_rss_mb": TARGET_PASSIVE_MB,
                    "passive_1m_open_s": TARGET_OPEN_S,
                },
                "results": results,
                "target_checks": check_targets(results),
            }
            Path(args.json).write_text(json.dumps(payload, indent=1) + "\n")
            console.print(f"wrote {args.json}")
    finally:
        if args.keep:
            console.print(f"kept scratch data in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
