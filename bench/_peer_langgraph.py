"""LangGraph side of ``bench/vs_peers.py`` (runs in its own process).

LangGraph 1.2: a ``StateGraph`` START -> a -> b -> c -> END whose nodes each return a
small dict, compiled with the SQLite checkpointer, one ``thread_id`` per invocation,
``durability="sync"`` (each super-step's checkpoint is written before the next step
starts: the closest match to perdure's flushed journal; LangGraph's default
``"async"`` overlaps the write with the next step). The SQLite savers open the file in
WAL mode with sqlite's default synchronous=FULL.

  sequential latency  one invocation at a time, measured twice: ``graph.invoke`` with
                      ``SqliteSaver`` (sync nodes) and ``graph.ainvoke`` with
                      ``AsyncSqliteSaver`` (async nodes); the one with the lower p50 is
                      reported (``seq_saver`` names it; both are in the JSON), so the
                      peer gets the benefit of the doubt.
  throughput          ``graph.ainvoke`` with ``AsyncSqliteSaver`` (async nodes): N
                      coroutines under ``asyncio.gather``, each invoking in a loop.

LangGraph has no automatic recovery of interrupted invocations (a caller must re-invoke
each thread itself), so there is no recovery figure.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import time
from importlib.metadata import version
from typing import Any, Literal, TypedDict

from _peer_common import (
    Clock,
    expected_output,
    latency_summary,
    parse_args,
    rate,
    say,
    step_value,
    timed_seq,
    write_result,
)
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from langgraph.graph import END, START, StateGraph

DURABILITY: Literal["sync"] = "sync"


class State(TypedDict, total=False):
    i: int
    a: dict[str, int]
    b: dict[str, int]
    c: dict[str, int]


def node_a(_s: State) -> State:
    return {"a": step_value(1)}


def node_b(_s: State) -> State:
    return {"b": step_value(2)}


def node_c(_s: State) -> State:
    return {"c": step_value(3)}


async def anode_a(_s: State) -> State:
    return {"a": step_value(1)}


async def anode_b(_s: State) -> State:
    return {"b": step_value(2)}


async def anode_c(_s: State) -> State:
    return {"c": step_value(3)}


def build(a: Any, b: Any, c: Any) -> StateGraph[State]:
    g = StateGraph(State)
    g.add_node("a", a)
    g.add_node("b", b)
    g.add_node("c", c)
    g.add_edge(START, "a")
    g.add_edge("a", "b")
    g.add_edge("b", "c")
    g.add_edge("c", END)
    return g


def _check(out: dict[str, Any]) -> None:
    got = {k: out.get(k) for k in ("a", "b", "c")}
    if got != expected_output():
        raise RuntimeError(f"graph returned {out!r}")


def _cfg(tag: str, i: int) -> RunnableConfig:
    return {"configurable": {"thread_id": f"{tag}-{i}"}}


def seq_sync(db: str, spec: dict[str, Any]) -> dict[str, Any]:
    with SqliteSaver.from_conn_string(db) as saver:
        graph = build(node_a, node_b, node_c).compile(checkpointer=saver)
        _check(graph.invoke({"i": 0}, _cfg("check", 0), durability=DURABILITY))
        return timed_seq(
            lambda i: graph.invoke({"i": i}, _cfg("seq", i), durability=DURABILITY),
            spec["seq"],
            spec["warmup"],
        )


async def async_part(db: str, spec: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"throughput": {}}
    async with AsyncSqliteSaver.from_conn_string(db) as saver:
        graph = build(anode_a, anode_b, anode_c).compile(checkpointer=saver)
        _check(await graph.ainvoke({"i": 0}, _cfg("check", 0), durability=DURABILITY))
        for i in range(spec["warmup"]):
            await graph.ainvoke({"i": i}, _cfg("warm", i), durability=DURABILITY)
        lat = []
        for i in range(spec["seq"]):
            t = time.perf_counter()
            await graph.ainvoke({"i": i}, _cfg("aseq", i), durability=DURABILITY)
            lat.append(time.perf_counter() - t)
        out["seq_async"] = latency_summary(lat)

        for level_s, total in spec["levels"].items():
            level = min(int(level_s), total)
            left = total
            failures = 0

            async def worker(tag: str) -> None:
                nonlocal left, failures
                while left > 0:
                    left -= 1
                    res = await graph.ainvoke({"i": left}, _cfg(tag, left), durability=DURABILITY)
                    failures += res.get("c") != step_value(3)

            clock = Clock()
            await asyncio.gather(*(worker(f"L{level_s}") for _ in range(level)))
            r = rate(total, clock.elapsed(), level)
            r["failed"] = failures
            out["throughput"][level_s] = r
            say(f"langgraph: {level} in flight -> {r['runs_per_s']:.0f} runs/s")
    return out


def bench(path: str, spec: dict[str, Any]) -> dict[str, Any]:
    os.makedirs(path, exist_ok=True)
    sync_db = os.path.join(path, "langgraph-sync.sqlite")
    out: dict[str, Any] = {
        "system": "langgraph",
        "config": f"sqlite saver, durability={DURABILITY}",
        "version": version("langgraph"),
        "checkpoint_sqlite": version("langgraph-checkpoint-sqlite"),
        "sqlite": sqlite3.sqlite_version,
    }
    out["seq_sync"] = seq_sync(sync_db, spec)
    out.update(asyncio.run(async_part(os.path.join(path, "langgraph-async.sqlite"), spec)))
    if out["seq_sync"]["p50_ms"] <= out["seq_async"]["p50_ms"]:
        out["seq"], out["seq_saver"] = out["seq_sync"], "SqliteSaver"
    else:
        out["seq"], out["seq_saver"] = out["seq_async"], "AsyncSqliteSaver"
    say(
        f"langgraph: seq p50 {out['seq_sync']['p50_ms']:.2f} ms (SqliteSaver), "
        f"{out['seq_async']['p50_ms']:.2f} ms (AsyncSqliteSaver)"
    )
    with sqlite3.connect(sync_db) as c:
        out["journal_mode"] = str(c.execute("PRAGMA journal_mode").fetchone()[0])
    return out


def main() -> None:
    args = parse_args()
    if args.mode != "bench":
        raise SystemExit("LangGraph has no automatic recovery to measure")
    write_result(args.out, bench(args.dir, json.loads(args.spec)))


if __name__ == "__main__":
    main()
