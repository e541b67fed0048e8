"""LangGraph side of ``bench/waits.py``: interrupt + resume round trip (own process).

    python bench/_waits_langgraph.py --dir DIR --spec '{"n": 300, "warmup": 20}' --out F

The graph mirrors the perdure workflow of the resume-latency scenario: node ``ask``
calls ``interrupt()`` (perdure: ``ctx.wait_for_event("go")``), node ``after`` returns a
small dict built from the resume value (perdure: one ``ctx.step``), then END.
LangGraph 1.2 with the synchronous ``SqliteSaver`` (the faster SQLite saver for one
caller; WAL mode, sqlite's default synchronous=FULL) and ``durability="sync"`` (every
checkpoint written before the graph goes on: the closest match to perdure's flushed
commits).

Per sample, on a fresh ``thread_id``: ``invoke({}, cfg)`` runs until the interrupt
(timed as ``interrupt``), then ``invoke(Command(resume=i), cfg)`` re-enters ``ask``
(which now returns the value), runs ``after`` and finishes (timed as ``resume``, the
round trip compared with perdure). Samples are sequential.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import time
from importlib.metadata import version
from typing import Any, TypedDict

from _peer_common import latency_summary
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, interrupt

DURABILITY = "sync"


class State(TypedDict, total=False):
    v: Any
    after: Any


def ask(_s: State) -> State:
    value = interrupt({"wait": "event", "name": "go"})
    return {"v": value}


def after(s: State) -> State:
    return {"after": {"v": s["v"]}}


def build() -> StateGraph:
    g = StateGraph(State)
    g.add_node("ask", ask)
    g.add_node("after", after)
    g.add_edge(START, "ask")
    g.add_edge("ask", "after")
    g.add_edge("after", END)
    return g


def bench(path: str, n: int, warmup: int) -> dict[str, Any]:
    os.makedirs(path, exist_ok=True)
    db = os.path.join(path, "langgraph-waits.sqlite")
    first: list[float] = []
    resume: list[float] = []
    with SqliteSaver.from_conn_string(db) as saver:
        graph = build().compile(checkpointer=saver)
        for i in range(-warmup, n):
            cfg = {"configurable": {"thread_id": f"t{i}"}}
            t0 = time.perf_counter()
            out = graph.invoke({}, cfg, durability=DURABILITY)
            t1 = time.perf_counter()
            if "__interrupt__" not in out:
                raise RuntimeError(f"graph did not stop at the interrupt: {out!r}")
            done = graph.invoke(Command(resume=i), cfg, durability=DURABILITY)
            t2 = time.perf_counter()
            if done.get("after") != {"v": i}:
                raise RuntimeError(f"resumed graph returned {done!r}")
            if i >= 0:
                first.append(t1 - t0)
                resume.append(t2 - t1)
    with sqlite3.connect(db) as c:
        journal_mode = str(c.execute("PRAGMA journal_mode").fetchone()[0])
    return {
        "system": "langgraph",
        "config": f"SqliteSaver, durability={DURABILITY}, journal_mode={journal_mode}",
        "version": version("langgraph"),
        "checkpoint_sqlite": version("langgraph-checkpoint-sqlite"),
        "sqlite": sqlite3.sqlite_version,
        "interrupt": latency_summary(first),
        "resume": latency_summary(resume),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--spec", default="{}")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    spec = json.loads(args.spec)
    result = bench(args.dir, int(spec.get("n", 200)), int(spec.get("warmup", 20)))
    print(
        f"    langgraph: resume round trip p50 {result['resume']['p50_ms']:.2f} ms "
        f"(n={result['resume']['n']})",
        file=sys.stderr,
        flush=True,
    )
    tmp = f"{args.out}.tmp"
    with open(tmp, "w") as f:
        json.dump(result, f, indent=1)
    os.replace(tmp, args.out)


if __name__ == "__main__":
    main()
