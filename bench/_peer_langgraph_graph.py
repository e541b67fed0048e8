"""LangGraph side of the step-graph benchmark (``bench/graphs.py``; runs in its own process).

    python bench/_peer_langgraph_graph.py [--dir DIR] [--spec JSON | --quick] [--out PATH]

``--spec`` gives the sizes, e.g. ``{"warmup": 10, "levels": {"1": 200, "100": 500,
"1000": 1000}, "seq_sync": 150}`` (the default; about 60 s on a 2-core VM; ``--quick`` is
a ~7 s smoke run without the 1000 level). ``--dir`` is where the SQLite files go (kept;
default: a temporary directory under the repository's ``.scratch/``, removed at the end).
The JSON result goes to ``--out`` (alias ``--json``; stdout without it), progress to
stderr.

The graph: 10 nodes (perdure's side runs the same shape). Every node does trivial CPU
work and returns a small dict; nothing sleeps, so the figures are the cost of durable
execution. Invocation ``i`` (one ``thread_id`` each) takes the input ``{"i": i}``:

   1. ``fetch``          the order: ``{"id": i, "items": [...20...], "total": T}``; item
                         ``k`` (0..19) is ``{"sku": k, "qty": 1 + k % 3, "price": P}`` with
                         ``P = 5`` for even ``i`` and ``1`` for odd ``i``; ``T`` is the sum of
                         ``qty * price``: 195 (even ``i``) or 39 (odd ``i``).
   2-4. ``fraud``, ``stock``, ``credit``: a 3-way parallel fan-out from ``fetch``
                         (``{"ok": True, "score": T % 7}``, ``{"ok": True, "lines": 20}``,
                         ``{"ok": True, "limit": 1000}``); all three join before
                         ``branch`` (``add_edge(["fraud", "stock", "credit"], "branch")``).
   5. ``branch``         fails unless the three are ok, returns ``{"big": T > 100}``; a
                         conditional edge out of it goes to ``approve_big`` when ``big``,
                         else to ``approve_small``: even ``i`` take the big branch, odd
                         ``i`` the small one, so both run across a level, one per invocation.
   6/7. ``approve_big`` / ``approve_small``: trivial, no human wait;
                         ``{"approval": {"by": "big" | "small", "total": T}}``.
   8. ``ship``           the map over the 20 line items: a conditional edge out of both
                         approve nodes returns ``[Send("ship", {"item": item}) for item in
                         items]``; each ``ship`` task gets ``{"item": item}`` and returns
                         ``{"shipped": [{"sku": k, "qty": q}]}``; the ``shipped`` channel
                         reduces them by list concatenation (``operator.add``) into one
                         20-entry list, in item order (checked).
   9. ``invoice``        once, after all 20 ``ship`` tasks: ``{"invoice": {"lines": 20,
                         "units": 39, "total": T}}`` (units = sum of qty).
  10. ``done``           shapes the output: ``{"result": {"order": i, "approved": "big" |
                         "small", "shipped": 20, "total": T, "invoice_lines": 20}}``.

Node executions per invocation: fetch 1 + fraud/stock/credit 3 + branch 1 + one approve
1 + ship 20 + invoice 1 + done 1 = 28, in 7 super-steps (fetch | the three checks |
branch | approve | 20 x ship | invoice | done). Every node call is counted and a level
fails unless it made exactly 28 per invocation; every invocation's ``result`` and
``shipped`` list is checked (``failed`` counts mismatches).

Durability (LangGraph 1.2, langgraph-checkpoint-sqlite 3.1): the graph is compiled with
``AsyncSqliteSaver`` (one aiosqlite connection; an asyncio lock around every statement;
coroutine nodes, as ``ainvoke`` would run plain functions in a thread) and invoked with
``durability="sync"``: each super-step's checkpoint is written before the next one
starts, the closest match to perdure's flushed ``sync`` mode (``"async"`` overlaps the
write with the next step; ``"exit"`` writes only when the graph returns, so a crash
loses the whole invocation). Each task's writes are stored too (``aput_writes``), and
every ``aput`` and ``aput_writes`` is its own SQLite commit. The saver puts the file in
WAL mode and leaves sqlite's default ``synchronous=FULL`` (both read back and
reported): every commit syncs the WAL, so an acknowledged invocation survives power
loss. Same configuration as ``bench/_peer_langgraph.py``.

What one invocation writes (read back from the database after each level): 9
checkpoints (the input, step -1; the ``__start__`` step 0; the 7 super-steps) and 78
write rows from 29 ``aput_writes`` calls (28 node tasks + ``__start__``): 38 commits.

Levels: for 1, 100 and 1000 invocations in flight, a fresh database file and saver, a
few untimed warm-up invocations, then a fixed total of invocations driven by ``level``
coroutines under ``asyncio.gather``, each invoking in a loop until the total is used up
(the driver of ``bench/_peer_langgraph.py``). Reported per level: invocations/s (wall
time; ``runs_per_s``), latency p50/p99 of single invocations (``ainvoke`` call to
return, so under load it includes the wait for the saver's lock), node executions per
invocation, checkpoints, write rows and commits per invocation, and the process CPU time
per invocation (all threads; steadier than wall time on a shared machine). With 1000 in flight and
a total of 1000 every invocation starts at once and they advance in near lock-step;
a total of 2000 measured 20-25/s against 29-33/s for 1000 (2-core VM).

``seq_sync`` (a reference, as ``bench/_peer_langgraph.py`` gives the peer the benefit of
the doubt for one caller): one invocation at a time with the synchronous ``SqliteSaver``,
plain nodes and ``graph.invoke`` (LangGraph runs the parallel tasks in its thread pool);
it is faster than ``AsyncSqliteSaver`` at 1 in flight on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import operator
import os
import platform
import shutil
import sqlite3
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from importlib.metadata import version
from pathlib import Path
from typing import Annotated, Any, Literal, TypedDict

from _peer_common import (
    Clock,
    filesystem_of,
    latency_summary,
    max_rss_mb,
    rate,
    say,
)
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from langgraph.graph import END, START, StateGraph
from langgraph.types import Send

REPO = Path(__file__).resolve().parent.parent
DURABILITY: Literal["sync"] = "sync"
ITEMS = 20
NODES_PER_INVOCATION = 1 + 3 + 1 + 1 + ITEMS + 1 + 1  # = 28
SUPERSTEPS = 7

# LangGraph does 25-40 invocations/s of this graph on a 2-core VM: about 60 s in all.
DEFAULT_SPEC: dict[str, Any] = {
    "warmup": 10,
    "levels": {"1": 200, "100": 500, "1000": 1_000},
    "seq_sync": 150,
}
# A smoke run (~7 s): 1000 in flight needs 1000 invocations (~30 s), so it is left out.
QUICK_SPEC: dict[str, Any] = {"warmup": 3, "levels": {"1": 20, "100": 100}, "seq_sync": 20}

# Node calls, by node name: how the script verifies the 28 executions per invocation.
CALLS: Counter[str] = Counter()


class Item(TypedDict):
    sku: int
    qty: int
    price: int


class Order(TypedDict):
    id: int
    items: list[Item]
    total: int


class State(TypedDict, total=False):
    i: int
    order: Order
    fraud: dict[str, Any]
    stock: dict[str, Any]
    credit: dict[str, Any]
    big: bool
    approval: dict[str, Any]
    shipped: Annotated[list[dict[str, int]], operator.add]
    invoice: dict[str, int]
    result: dict[str, Any]


class ShipArg(TypedDict):
    item: Item


def make_order(i: int) -> Order:
    price = 5 if i % 2 == 0 else 1
    items: list[Item] = [{"sku": k, "qty": 1 + k % 3, "price": price} for k in range(ITEMS)]
    return {"id": i, "items": items, "total": sum(it["qty"] * it["price"] for it in items)}


def expected_result(i: int) -> dict[str, Any]:
    total = make_order(i)["total"]
    return {
        "order": i,
        "approved": "big" if total > 100 else "small",
        "shipped": ITEMS,
        "total": total,
        "invoice_lines": ITEMS,
    }


def fetch(s: State) -> State:
    CALLS["fetch"] += 1
    return {"order": make_order(s["i"])}


def fraud(s: State) -> State:
    CALLS["fraud"] += 1
    return {"fraud": {"ok": True, "score": s["order"]["total"] % 7}}


def stock(s: State) -> State:
    CALLS["stock"] += 1
    return {"stock": {"ok": True, "lines": len(s["order"]["items"])}}


def credit(s: State) -> State:
    CALLS["credit"] += 1
    return {"credit": {"ok": True, "limit": 1_000}}


def branch(s: State) -> State:
    CALLS["branch"] += 1
    if not (s["fraud"]["ok"] and s["stock"]["ok"] and s["credit"]["ok"]):
        raise RuntimeError(f"a check failed: {s!r}")
    return {"big": s["order"]["total"] > 100}


def route(s: State) -> Literal["approve_big", "approve_small"]:
    return "approve_big" if s["big"] else "approve_small"


def approve_big(s: State) -> State:
    CALLS["approve_big"] += 1
    return {"approval": {"by": "big", "total": s["order"]["total"]}}


def approve_small(s: State) -> State:
    CALLS["approve_small"] += 1
    return {"approval": {"by": "small", "total": s["order"]["total"]}}


def fan_out(s: State) -> list[Send]:
    return [Send("ship", {"item": item}) for item in s["order"]["items"]]


def ship(a: ShipArg) -> State:
    CALLS["ship"] += 1
    return {"shipped": [{"sku": a["item"]["sku"], "qty": a["item"]["qty"]}]}


def invoice(s: State) -> State:
    CALLS["invoice"] += 1
    shipped = s["shipped"]
    return {
        "invoice": {
            "lines": len(shipped),
            "units": sum(x["qty"] for x in shipped),
            "total": s["order"]["total"],
        }
    }


def done(s: State) -> State:
    CALLS["done"] += 1
    return {
        "result": {
            "order": s["order"]["id"],
            "approved": s["approval"]["by"],
            "shipped": len(s["shipped"]),
            "total": s["invoice"]["total"],
            "invoice_lines": s["invoice"]["lines"],
        }
    }


NODES: tuple[tuple[str, Callable[[Any], State]], ...] = (
    ("fetch", fetch),
    ("fraud", fraud),
    ("stock", stock),
    ("credit", credit),
    ("branch", branch),
    ("approve_big", approve_big),
    ("approve_small", approve_small),
    ("ship", ship),
    ("invoice", invoice),
    ("done", done),
)


def _as_async(fn: Callable[[Any], State]) -> Callable[[Any], Awaitable[State]]:
    """The same node as a coroutine: ``ainvoke`` would run a plain function in a thread."""

    @functools.wraps(fn)  # same name and annotations: the same input schema as ``fn``
    async def node(arg: Any) -> State:
        return fn(arg)

    return node


def build(use_async: bool) -> StateGraph[State]:
    """The 10-node graph of the module docstring, with coroutine or plain nodes."""
    g = StateGraph(State)
    for name, fn in NODES:
        g.add_node(name, _as_async(fn) if use_async else fn)
    g.add_edge(START, "fetch")
    for check in ("fraud", "stock", "credit"):
        g.add_edge("fetch", check)
    g.add_edge(["fraud", "stock", "credit"], "branch")
    g.add_conditional_edges("branch", route, ["approve_big", "approve_small"])
    g.add_conditional_edges("approve_big", fan_out, ["ship"])
    g.add_conditional_edges("approve_small", fan_out, ["ship"])
    g.add_edge("ship", "invoice")
    g.add_edge("invoice", "done")
    g.add_edge("done", END)
    return g


def _cfg(tag: str, i: int) -> RunnableConfig:
    return {"configurable": {"thread_id": f"{tag}-{i}"}}


def _check(i: int, out: dict[str, Any]) -> bool:
    return bool(
        out.get("result") == expected_result(i)
        and [x["sku"] for x in out.get("shipped", [])] == list(range(ITEMS))
    )


SYNCHRONOUS = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}


def _stored(db: str, tag: str) -> dict[str, Any]:
    """What the saver left in ``db`` for the threads ``tag-*``, and the file's settings.

    Every checkpoint row is one ``aput`` and every (checkpoint, task) group of write rows
    one ``aput_writes``: each of those is one SQLite commit, so their sum is the commits
    (WAL syncs, under synchronous=FULL) an invocation cost.
    """
    like = (f"{tag}-%",)
    with sqlite3.connect(db) as c:
        checkpoints = c.execute(
            "SELECT COUNT(*) FROM checkpoints WHERE thread_id LIKE ?", like
        ).fetchone()[0]
        writes = c.execute("SELECT COUNT(*) FROM writes WHERE thread_id LIKE ?", like).fetchone()[0]
        write_calls = c.execute(
            "SELECT COUNT(*) FROM (SELECT 1 FROM writes WHERE thread_id LIKE ? "
            "GROUP BY thread_id, checkpoint_ns, checkpoint_id, task_id)",
            like,
        ).fetchone()[0]
        journal_mode = c.execute("PRAGMA journal_mode").fetchone()[0]
    return {
        "checkpoints": checkpoints,
        "writes": writes,
        "write_calls": write_calls,
        "journal_mode": journal_mode,
    }


class Level:
    """One measured level: a fixed total of invocations, ``level`` of them in flight."""

    def __init__(self, db: str, level_s: str, total: int) -> None:
        self.db, self.level_s, self.total = db, level_s, total
        self.in_flight = min(int(level_s), total)
        self.tag = f"L{level_s}"
        self.lat: list[float] = []
        self.failed = 0

    def warmed_up(self) -> None:
        CALLS.clear()
        self.clock = Clock()
        self.cpu0 = time.process_time()

    def record(self, i: int, t: Clock, out: dict[str, Any]) -> None:
        self.lat.append(t.elapsed())
        self.failed += not _check(i, out)

    def result(self, synchronous: int, saver: str) -> dict[str, Any]:
        seconds = self.clock.elapsed()
        cpu = time.process_time() - self.cpu0
        calls = dict(CALLS)
        nodes = sum(calls.values())
        if nodes != NODES_PER_INVOCATION * self.total:
            raise RuntimeError(f"{nodes} node calls for {self.total} invocations: {calls!r}")
        stored = _stored(self.db, self.tag)
        r = rate(self.total, seconds, self.in_flight)
        r["saver"] = saver
        # Process CPU time (every thread, the aiosqlite one included): unlike wall time it
        # barely moves when other work shares the machine.
        r["cpu_s"] = cpu
        r["cpu_ms_per_invocation"] = cpu / self.total * 1e3
        r["failed"] = self.failed
        r["latency"] = latency_summary(self.lat)
        r["nodes_per_invocation"] = nodes / self.total
        r["node_calls"] = calls
        r["checkpoints_per_invocation"] = stored["checkpoints"] / self.total
        r["write_rows_per_invocation"] = stored["writes"] / self.total
        r["commits_per_invocation"] = (stored["checkpoints"] + stored["write_calls"]) / self.total
        r["journal_mode"] = stored["journal_mode"]
        r["synchronous"] = SYNCHRONOUS.get(synchronous, str(synchronous))
        r["db_bytes"] = sum(
            os.path.getsize(p) for p in (self.db, f"{self.db}-wal") if os.path.exists(p)
        )
        say(
            f"langgraph graph ({saver}): {self.in_flight} in flight -> "
            f"{r['runs_per_s']:.1f} invocations/s, p50 {r['latency']['p50_ms']:.1f} ms, "
            f"p99 {r['latency']['p99_ms']:.1f} ms, "
            f"{r['checkpoints_per_invocation']:g} checkpoints and "
            f"{r['commits_per_invocation']:g} commits per invocation"
        )
        return r


async def run_level(db: str, level_s: str, total: int, warmup: int) -> dict[str, Any]:
    """``AsyncSqliteSaver``, coroutine nodes, ``level`` coroutines invoking in a loop."""
    lv = Level(db, level_s, total)
    async with AsyncSqliteSaver.from_conn_string(db) as saver:
        graph = build(use_async=True).compile(checkpointer=saver)
        for i in range(warmup):
            out = await graph.ainvoke({"i": i}, _cfg("warm", i), durability=DURABILITY)
            if not _check(i, out):
                raise RuntimeError(f"graph returned {out!r} for i={i}")
        async with saver.conn.execute("PRAGMA synchronous") as cur:
            synchronous = (await cur.fetchone() or (-1,))[0]
        nxt = 0

        async def worker() -> None:
            nonlocal nxt
            while nxt < total:
                i = nxt
                nxt += 1
                t = Clock()
                out = await graph.ainvoke({"i": i}, _cfg(lv.tag, i), durability=DURABILITY)
                lv.record(i, t, out)

        lv.warmed_up()
        await asyncio.gather(*(worker() for _ in range(lv.in_flight)))
        return lv.result(synchronous, "AsyncSqliteSaver")


def run_seq_sync(db: str, total: int, warmup: int) -> dict[str, Any]:
    """One at a time with ``SqliteSaver``, plain nodes and ``graph.invoke`` (a reference)."""
    lv = Level(db, "1", total)
    with SqliteSaver.from_conn_string(db) as saver:
        graph = build(use_async=False).compile(checkpointer=saver)
        for i in range(warmup):
            out = graph.invoke({"i": i}, _cfg("warm", i), durability=DURABILITY)
            if not _check(i, out):
                raise RuntimeError(f"graph returned {out!r} for i={i}")
        synchronous = saver.conn.execute("PRAGMA synchronous").fetchone()[0]
        lv.warmed_up()
        for i in range(total):
            t = Clock()
            lv.record(i, t, graph.invoke({"i": i}, _cfg(lv.tag, i), durability=DURABILITY))
        return lv.result(synchronous, "SqliteSaver")


async def bench_async(path: str, spec: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for level_s, total in spec["levels"].items():
        db = os.path.join(path, f"langgraph-graph-{level_s}.sqlite")
        out[level_s] = await run_level(db, level_s, int(total), int(spec.get("warmup", 10)))
    return out


def bench(path: str, spec: dict[str, Any]) -> dict[str, Any]:
    os.makedirs(path, exist_ok=True)
    clock = Clock()
    throughput = asyncio.run(bench_async(path, spec))
    out: dict[str, Any] = {
        "system": "langgraph",
        "workload": "step graph: 10 nodes, 3-way parallel, branch, map of 20 (Send)",
        "version": version("langgraph"),
        "checkpoint_sqlite": version("langgraph-checkpoint-sqlite"),
        "sqlite": sqlite3.sqlite_version,
        "python": platform.python_version(),
        "filesystem": filesystem_of(Path(path)),
        "durability": DURABILITY,
        "nodes_per_invocation": NODES_PER_INVOCATION,
        "supersteps_per_invocation": SUPERSTEPS,
        "spec": spec,
        "throughput": throughput,
    }
    first = next(iter(throughput.values()))
    out["config"] = (
        f"StateGraph + AsyncSqliteSaver, durability={DURABILITY}, "
        f"journal_mode={first['journal_mode']}, synchronous={first['synchronous']}"
    )
    seq = int(spec.get("seq_sync", 0))
    if seq:
        db = os.path.join(path, "langgraph-graph-seq-sync.sqlite")
        out["seq_sync"] = run_seq_sync(db, seq, int(spec.get("warmup", 10)))
    out["elapsed_s"] = clock.elapsed()
    out["max_rss_mb"] = max_rss_mb()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--dir", help="data directory (default: a temporary one under .scratch/)")
    ap.add_argument("--spec", help="JSON sizes (see above; default: DEFAULT_SPEC)")
    ap.add_argument("--quick", action="store_true", help="small totals (smoke run)")
    ap.add_argument("--out", "--json", help="write the JSON result here (default: stdout)")
    args = ap.parse_args()
    spec = json.loads(args.spec) if args.spec else QUICK_SPEC if args.quick else DEFAULT_SPEC

    tmp = None
    if args.dir is None:
        (REPO / ".scratch").mkdir(exist_ok=True)
        tmp = tempfile.mkdtemp(prefix="lg-graph-", dir=REPO / ".scratch")
    try:
        result = bench(args.dir or tmp, spec)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)

    text = json.dumps(result, indent=1)
    if args.out:
        with open(f"{args.out}.tmp", "w") as f:
            f.write(text)
        os.replace(f"{args.out}.tmp", args.out)
    else:
        print(text)


if __name__ == "__main__":
    main()
