"""Step graphs: perdure against LangGraph on the same 10-node graph, in one invocation.

    python bench/graphs.py [--quick] [--rounds N] [--json out.json]   # make bench-graphs

The graph is the one ``bench/_peer_langgraph_graph.py`` documents (read its docstring):
``fetch``; a 3-way parallel ``fraud``/``stock``/``credit``; ``branch`` (fails unless the
checks are ok, computes ``big``); a conditional to ``approve_big`` or ``approve_small``;
``ship``, a map over the order's 20 lines; ``invoice``; ``done``. 28 node executions per
run, every node async and trivial, so the figures are the cost of durable execution.
perdure declares it with ``perdure.graph`` (the containers ``checks``, ``route`` and
``ship`` hold the same 10 work nodes) and runs it ``durability="sync"``: every node's
result is flushed before what depends on it runs, as LangGraph's ``durability="sync"``
with its SQLite checkpointer (WAL, synchronous=FULL) writes each super-step before the
next. Every run's result is checked.

Measured, for 1, 100 and 1000 runs in flight (a fixed total per level, ``level``
workers each starting and awaiting runs in a loop):

- runs/s (wall time), latency p50/p99, and CPU time per run (process time, every
  thread: steadier than wall time on a shared machine);
- the same on LangGraph (its own process, ``bench/_peer_langgraph_graph.py``);
- the graph's overhead over plain steps: the same 28 steps written as a code workflow
  (``ctx.step`` in nurseries), and 10 sequential step nodes against 10 sequential
  ``ctx.step`` calls, at 100 in flight; reported as CPU per node over CPU per step.

Each system runs in its own subprocess; with ``--rounds N`` they alternate (perdure,
LangGraph, perdure, …) and the report gives every round and the median, because the VM
is shared and noisy. Data lives under the repository's ``.scratch/`` (same filesystem
as the repo) and is removed at the end. LangGraph must be installed:
``make .venv/.peers-installed`` (``make bench-graphs`` does it).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))

ITEMS = 20
NODES = 28
LEVELS = ("1", "100", "1000")
SIZES: dict[str, dict[str, Any]] = {
    "full": {
        "perdure": {
            "warmup": 50,
            "levels": {"1": 300, "100": 3_000, "1000": 6_000},
            "overhead": {"in_flight": 100, "runs": 3_000, "seq_runs": 6_000},
        },
        "langgraph": {"warmup": 10, "levels": {"1": 200, "100": 500, "1000": 1_000}, "seq_sync": 0},
        "timeout": 900,
    },
    "quick": {
        "perdure": {
            "warmup": 10,
            "levels": {"1": 30, "100": 300},
            "overhead": {"in_flight": 100, "runs": 300, "seq_runs": 600},
        },
        "langgraph": {"warmup": 3, "levels": {"1": 20, "100": 100}, "seq_sync": 0},
        "timeout": 300,
    },
}
TARGETS = {"vs_langgraph": 20.0, "node_over_step": 2.0}


# -- the perdure side (runs in a child process: ``graphs.py --worker perdure``) -------------


def make_order(i: int) -> dict[str, Any]:
    price = 5 if i % 2 == 0 else 1
    items = [{"sku": k, "qty": 1 + k % 3, "price": price} for k in range(ITEMS)]
    return {"id": i, "items": items, "total": sum(x["qty"] * x["price"] for x in items)}


def expected(i: int) -> dict[str, Any]:
    total = make_order(i)["total"]
    return {
        "order": i,
        "approved": "big" if total > 100 else "small",
        "shipped": ITEMS,
        "total": total,
        "invoice_lines": ITEMS,
    }


def define(rt: Any) -> None:
    """``workflow:order`` (the graph), ``workflow:order_code`` (the same steps as code),
    ``workflow:seq_graph`` / ``workflow:seq_code`` (10 sequential nodes / steps)."""
    import trio

    from perdure import graph as g

    async def fetch(c: Any) -> dict[str, Any]:
        return make_order(c.input["i"])

    async def fraud(c: Any) -> dict[str, Any]:
        return {"ok": True, "score": c.outputs["fetch"]["total"] % 7}

    async def stock(c: Any) -> dict[str, Any]:
        return {"ok": True, "lines": len(c.outputs["fetch"]["items"])}

    async def credit(c: Any) -> dict[str, Any]:
        return {"ok": True, "limit": 1_000}

    async def branch(c: Any) -> dict[str, Any]:
        checks = c.outputs["checks"]
        if not all(checks[k]["ok"] for k in ("fraud", "stock", "credit")):
            raise RuntimeError(f"a check failed: {checks!r}")
        return {"big": c.outputs["fetch"]["total"] > 100}

    async def approve_big(c: Any) -> dict[str, Any]:
        return {"by": "big", "total": c.outputs["fetch"]["total"]}

    async def approve_small(c: Any) -> dict[str, Any]:
        return {"by": "small", "total": c.outputs["fetch"]["total"]}

    async def ship(c: Any) -> dict[str, Any]:
        return {"sku": c.item["sku"], "qty": c.item["qty"]}

    async def invoice(c: Any) -> dict[str, Any]:
        shipped = c.outputs["ship"]
        total = c.outputs["fetch"]["total"]
        return {"lines": len(shipped), "units": sum(x["qty"] for x in shipped), "total": total}

    async def done(c: Any) -> dict[str, Any]:
        approval = c.outputs["route"]["output"]
        return {
            "order": c.outputs["fetch"]["id"],
            "approved": approval["by"],
            "shipped": len(c.outputs["ship"]),
            "total": c.outputs["invoice"]["total"],
            "invoice_lines": c.outputs["invoice"]["lines"],
        }

    rt.graph(
        "order",
        g.Graph(
            g.step("fetch", fetch),
            g.parallel(
                "checks", [g.step("fraud", fraud), g.step("stock", stock), g.step("credit", credit)]
            ),
            g.step("branch", branch),
            g.branch(
                "route",
                when=lambda c: c.outputs["branch"]["big"],
                then=[g.step("approve_big", approve_big)],
                otherwise=[g.step("approve_small", approve_small)],
            ),
            g.map("ship", items=lambda c: c.outputs["fetch"]["items"], each=g.step("line", ship)),
            g.step("invoice", invoice),
            g.step("done", done),
            output=lambda c: c.outputs["done"],
        ),
    )

    # The same 28 steps, written as a code workflow: ctx.step, nurseries for the fan-outs.
    async def value(x: Any) -> Any:
        return x

    @rt.workflow("order_code")
    async def order_code(ctx: Any, inp: dict[str, Any]) -> dict[str, Any]:
        order = await ctx.step("fetch", value, make_order(inp["i"]))
        total = order["total"]
        checks: dict[str, Any] = {}

        async def check(name: str, result: dict[str, Any]) -> None:
            checks[name] = await ctx.step(name, value, result)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(check, "fraud", {"ok": True, "score": total % 7})
            nursery.start_soon(check, "stock", {"ok": True, "lines": len(order["items"])})
            nursery.start_soon(check, "credit", {"ok": True, "limit": 1_000})
        big = (await ctx.step("branch", value, {"big": total > 100}))["big"]
        by = "big" if big else "small"
        approval = await ctx.step(f"approve_{by}", value, {"by": by, "total": total})
        shipped: list[Any] = [None] * ITEMS

        async def line(k: int, item: dict[str, Any]) -> None:
            shipped[k] = await ctx.step(
                f"ship[{k}]", value, {"sku": item["sku"], "qty": item["qty"]}
            )

        async with trio.open_nursery() as nursery:
            for k, item in enumerate(order["items"]):
                nursery.start_soon(line, k, item)
        units = sum(x["qty"] for x in shipped)
        inv = await ctx.step("invoice", value, {"lines": ITEMS, "units": units, "total": total})
        return await ctx.step(  # type: ignore[no-any-return]
            "done",
            value,
            {
                "order": order["id"],
                "approved": approval["by"],
                "shipped": len(shipped),
                "total": inv["total"],
                "invoice_lines": inv["lines"],
            },
        )

    async def seq_node(c: Any) -> int:
        return 1

    rt.graph("seq_graph", g.Graph(*(g.step(f"s{k}", seq_node) for k in range(10))))

    @rt.workflow("seq_code")
    async def seq_code(ctx: Any, inp: dict[str, Any]) -> int:
        for k in range(10):
            await ctx.step(f"s{k}", value, 1)
        return 10


def _check(target: str, rec: Any, i: int) -> bool:
    if rec.status != "completed" or rec.completion is None:
        return False
    result = rec.completion.result
    if target in ("workflow:order", "workflow:order_code"):
        return bool(result == expected(i))
    return True


async def _level(rt: Any, target: str, in_flight: int, total: int) -> dict[str, Any]:
    import trio
    from _peer_common import Clock, latency_summary, rate

    import perdure

    owner = perdure.Project("bench")
    left = total
    failed = 0
    lat: list[float] = []

    async def worker() -> None:
        nonlocal left, failed
        while left > 0:
            left -= 1
            i = left
            t = time.perf_counter()
            started = await rt.start(target, {"i": i}, owner=owner)
            rec = await rt.wait(started.run.id)
            lat.append(time.perf_counter() - t)
            failed += not _check(target, rec, i)

    cpu0 = time.process_time()
    clock = Clock()
    async with trio.open_nursery() as nursery:
        for _ in range(min(in_flight, total)):
            nursery.start_soon(worker)
    seconds = clock.elapsed()
    cpu = time.process_time() - cpu0
    out = rate(total, seconds, min(in_flight, total))
    out.update(
        failed=failed,
        latency=latency_summary(lat),
        cpu_ms_per_run=cpu / total * 1e3,
    )
    return out


async def perdure_bench(path: str, spec: dict[str, Any]) -> dict[str, Any]:
    from _peer_common import say

    import perdure

    rt = perdure.Runtime(path, durability="sync")
    define(rt)
    out: dict[str, Any] = {"version": perdure.__version__, "throughput": {}, "overhead": {}}
    async with rt:
        for target in ("workflow:order", "workflow:order_code", "workflow:seq_graph"):
            await _level(rt, target, 10, spec["warmup"])
        for level_s, total in spec["levels"].items():
            r = await _level(rt, "workflow:order", int(level_s), int(total))
            out["throughput"][level_s] = r
            say(
                f"perdure graph: {level_s} in flight -> {r['runs_per_s']:.0f} runs/s, "
                f"{r['cpu_ms_per_run']:.2f} ms CPU per run, p50 {r['latency']['p50_ms']:.1f} ms"
            )
        o = spec["overhead"]
        for name, target, runs, per in (
            ("graph", "workflow:order", o["runs"], NODES),
            ("code", "workflow:order_code", o["runs"], NODES),
            ("seq_graph", "workflow:seq_graph", o["seq_runs"], 10),
            ("seq_code", "workflow:seq_code", o["seq_runs"], 10),
        ):
            r = await _level(rt, target, o["in_flight"], runs)
            r["cpu_us_per_node"] = r["cpu_ms_per_run"] * 1e3 / per
            out["overhead"][name] = r
            say(
                f"perdure {name}: {r['runs_per_s']:.0f} runs/s at {o['in_flight']} in flight, "
                f"{r['cpu_us_per_node']:.0f} us CPU per node/step"
            )
        out["stats"] = {"records": rt.stats().records, "txns": rt.stats().txns}
    return out


def worker_main(argv: list[str]) -> None:
    import trio
    from _peer_common import write_result

    ap = argparse.ArgumentParser()
    ap.add_argument("--worker", required=True)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--spec", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    result = trio.run(perdure_bench, args.dir, json.loads(args.spec))
    write_result(args.out, result)


# -- the driver --------------------------------------------------------------------------------


def _run(cmd: list[str], out: Path, timeout: float) -> dict[str, Any]:
    t = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=REPO, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if proc.returncode != 0 or not out.exists():
        return {"error": f"exited with code {proc.returncode}"}
    result: dict[str, Any] = json.loads(out.read_text())
    result["wall_s"] = time.perf_counter() - t
    return result


def run_perdure(tmp: Path, spec: dict[str, Any], k: int, timeout: float) -> dict[str, Any]:
    data, out = tmp / f"perdure-{k}", tmp / f"perdure-{k}.json"
    cmd = [sys.executable, str(Path(__file__)), "--worker", "perdure", "--dir", str(data)]
    return _run([*cmd, "--spec", json.dumps(spec), "--out", str(out)], out, timeout)


def run_langgraph(tmp: Path, spec: dict[str, Any], k: int, timeout: float) -> dict[str, Any]:
    data, out = tmp / f"langgraph-{k}", tmp / f"langgraph-{k}.json"
    script = BENCH / "_peer_langgraph_graph.py"
    cmd = [sys.executable, str(script), "--dir", str(data), "--spec", json.dumps(spec)]
    return _run([*cmd, "--out", str(out)], out, timeout)


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def summarize(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Per level: every round's figures and their medians; the overhead ratios."""
    out: dict[str, Any] = {"levels": {}, "overhead": {}}
    for level in LEVELS:
        row: dict[str, list[float]] = {k: [] for k in ("p", "lg", "p_cpu", "lg_cpu", "ratio")}
        for rnd in rounds:
            p = rnd.get("perdure", {}).get("throughput", {}).get(level)
            lg = rnd.get("langgraph", {}).get("throughput", {}).get(level)
            if p:
                row["p"].append(p["runs_per_s"])
                row["p_cpu"].append(p["cpu_ms_per_run"])
            if lg:
                row["lg"].append(lg["runs_per_s"])
                row["lg_cpu"].append(lg["cpu_ms_per_invocation"])
            if p and lg:
                row["ratio"].append(p["runs_per_s"] / lg["runs_per_s"])
        if any(row.values()):
            out["levels"][level] = {k: {"rounds": v, "median": _median(v)} for k, v in row.items()}
    ov: dict[str, list[float]] = {"graph_over_code": [], "seq_node_over_step": []}
    for rnd in rounds:
        o = rnd.get("perdure", {}).get("overhead")
        if o:
            ov["graph_over_code"].append(
                o["graph"]["cpu_us_per_node"] / o["code"]["cpu_us_per_node"]
            )
            ov["seq_node_over_step"].append(
                o["seq_graph"]["cpu_us_per_node"] / o["seq_code"]["cpu_us_per_node"]
            )
    out["overhead"] = {k: {"rounds": v, "median": _median(v)} for k, v in ov.items()}
    return out


def report(rounds: list[dict[str, Any]], summary: dict[str, Any], quick: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(stderr=False, width=None if sys.stdout.isatty() else 140)
    t = Table(title="step graph, 10 nodes (3-way parallel, branch, map of 20), flushed")
    for col in (
        "in flight",
        "perdure runs/s",
        "LangGraph runs/s",
        "ratio (target ≥ 20x)",
        "perdure CPU ms/run",
        "LangGraph CPU ms/run",
    ):
        t.add_column(col, justify="right")

    def fmt(xs: dict[str, Any], spec: str = ",.0f") -> str:
        vals = xs["rounds"]
        if not vals:
            return "—"
        med = format(xs["median"], spec)
        return med if len(vals) == 1 else f"{med} ({' / '.join(format(v, spec) for v in vals)})"

    for level, row in summary["levels"].items():
        ratio = row["ratio"]
        shown = fmt(ratio, ".1f") + "x" if ratio["rounds"] else "—"
        t.add_row(
            level,
            fmt(row["p"]),
            fmt(row["lg"], ",.1f"),
            shown,
            fmt(row["p_cpu"], ".2f"),
            fmt(row["lg_cpu"], ".1f"),
        )
    console.print(t)
    o = Table(title="graph nodes vs plain ctx.step (CPU per node ÷ CPU per step, target ≤ 2x)")
    o.add_column("comparison")
    o.add_column("ratio", justify="right")
    o.add_column("CPU µs per node / per step", justify="right")
    for name, label, a, b in (
        ("graph_over_code", "the 10-node graph vs the same 28 steps as code", "graph", "code"),
        (
            "seq_node_over_step",
            "10 sequential nodes vs 10 sequential steps",
            "seq_graph",
            "seq_code",
        ),
    ):
        xs = summary["overhead"][name]
        per = [
            f"{r['perdure']['overhead'][a]['cpu_us_per_node']:.0f} / "
            f"{r['perdure']['overhead'][b]['cpu_us_per_node']:.0f}"
            for r in rounds
            if "overhead" in r.get("perdure", {})
        ]
        o.add_row(label, fmt(xs, ".2f") + "x" if xs["rounds"] else "—", " ; ".join(per))
    console.print(o)
    if quick:
        console.print("[yellow]--quick: sizes too small to judge the targets[/]")


def main() -> int:
    if "--worker" in sys.argv:
        worker_main(sys.argv[1:])
        return 0
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds (default 2)")
    ap.add_argument("--only", default="perdure,langgraph", help="comma list of systems")
    ap.add_argument("--json", metavar="PATH", help="also write every figure as JSON")
    args = ap.parse_args()
    sizes = SIZES["quick" if args.quick else "full"]
    only = {x.strip() for x in args.only.split(",")}
    (REPO / ".scratch").mkdir(exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="bench-graphs-", dir=REPO / ".scratch"))
    rounds: list[dict[str, Any]] = []
    try:
        for k in range(args.rounds):
            rnd: dict[str, Any] = {}
            if "perdure" in only:
                print(f"round {k + 1}: perdure", file=sys.stderr, flush=True)
                rnd["perdure"] = run_perdure(tmp, sizes["perdure"], k, sizes["timeout"])
            if "langgraph" in only:
                print(f"round {k + 1}: LangGraph", file=sys.stderr, flush=True)
                rnd["langgraph"] = run_langgraph(tmp, sizes["langgraph"], k, sizes["timeout"])
            rounds.append(rnd)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    errors = [
        f"round {i + 1} {s}: {r[s]['error']}"
        for i, r in enumerate(rounds)
        for s in r
        if "error" in r[s]
    ]
    summary = summarize(rounds)
    report(rounds, summary, args.quick)
    if args.json:
        Path(args.json).write_text(json.dumps({"rounds": rounds, "summary": summary}, indent=1))
    for error in errors:
        print(f"error: {error}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
