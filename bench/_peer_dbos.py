"""DBOS side of ``bench/vs_peers.py`` (runs in its own process).

DBOS Transact 3.4 with its SQLite system database. The workflow is a
``@DBOS.workflow()`` calling three ``@DBOS.step()`` functions, each returning a small
dict; DBOS records each step's output in the system database before the workflow
continues, like perdure's journal.

Configurations (``--config``):
  default  DBOS's own SQLite setup: rollback journal (journal_mode=DELETE) and
           sqlite's default synchronous=FULL, i.e. an fsync'd commit per write.
  wal      journal_mode=WAL + synchronous=NORMAL, set on every connection by a
           SQLAlchemy ``connect`` listener (DBOS has no option for it). WAL+NORMAL
           survives a process crash but may lose the last commits on power loss, so
           it compares with perdure's ``durability="process"``, not ``"sync"``.

Concurrency: ``DBOS.start_workflow`` (each workflow on a DBOS executor thread) with a
sliding window of N handles in flight; a finished handle's future frees a slot.
Sequential latency calls the workflow function directly (it runs in the caller's thread).

Recovery: ``_recovery_child.py dbos`` starts N workflows that park inside step 2 and is
SIGKILLed; ``recover`` mode then times ``DBOS(config)`` + ``DBOS.launch()`` (which
re-enqueues pending workflows of this executor and application version on its internal
queue) until no workflow is PENDING or ENQUEUED, polling the SQLite file every 20 ms
from a separate read connection.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from concurrent.futures import Future
from importlib.metadata import version
from typing import Any

import sqlalchemy as sa
from _peer_common import (
    BLOCK_ENV,
    Clock,
    expected_output,
    parse_args,
    rate,
    ready,
    say,
    step_value,
    timed_seq,
    write_result,
)
from dbos import DBOS, DBOSConfig
from sqlalchemy import event

DB_FILE = "dbos.sqlite"
# Set in the crash child only: step 2 parks on this event, which never fires.
_PARK = threading.Event()
_entered = 0
_entered_lock = threading.Lock()
_all_in = threading.Event()
_expect_in = 0


@DBOS.step()
def step_a(x: int) -> dict[str, int]:
    return step_value(x)


@DBOS.step()
def step_b(x: int) -> dict[str, int]:
    if os.environ.get(BLOCK_ENV) == "1":
        global _entered
        with _entered_lock:
            _entered += 1
            if _entered == _expect_in:
                _all_in.set()
        _PARK.wait()
    return step_value(x)


@DBOS.step()
def step_c(x: int) -> dict[str, int]:
    return step_value(x)


@DBOS.workflow()
def three(inp: dict[str, Any]) -> dict[str, Any]:
    return {"a": step_a(1), "b": step_b(2), "c": step_c(3)}


def _use_wal() -> None:
    @event.listens_for(sa.engine.Engine, "connect")
    def _wal(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.execute("PRAGMA journal_mode=WAL")
        dbapi_conn.execute("PRAGMA synchronous=NORMAL")


def launch(path: str, config: str) -> str:
    os.makedirs(path, exist_ok=True)
    if config == "wal":
        _use_wal()
    elif config != "default":
        raise SystemExit(f"unknown DBOS config {config!r}")
    db = os.path.join(path, DB_FILE)
    cfg: DBOSConfig = {
        "name": "perdure-vs-peers",
        "system_database_url": f"sqlite:///{db}",
        # Fixed, so the recovering process (same code) recovers the crashed one's runs.
        "application_version": "bench",
        "log_level": "WARNING",
    }
    DBOS(config=cfg)
    DBOS.launch()
    return db


def _journal_mode(db: str) -> str:
    with sqlite3.connect(db, timeout=30) as c:
        return str(c.execute("PRAGMA journal_mode").fetchone()[0])


def _check(result: Any) -> None:
    if result != expected_output():
        raise RuntimeError(f"workflow returned {result!r}")


def window(level: int, total: int) -> tuple[float, int]:
    """Run ``total`` workflows keeping ``level`` in flight; return (seconds, failures)."""
    slots = threading.Semaphore(level)
    done = threading.Event()
    lock = threading.Lock()
    finished = 0
    failures = 0

    def on_done(fut: Future[Any]) -> None:
        nonlocal finished, failures
        try:
            ok = fut.exception() is None and fut.result() == expected_output()
        except BaseException:
            ok = False
        slots.release()
        with lock:
            finished += 1
            failures += not ok
            if finished == total:
                done.set()

    clock = Clock()
    for i in range(total):
        slots.acquire()
        handle = DBOS.start_workflow(three, {"i": i})
        handle.future.add_done_callback(on_done)  # type: ignore[attr-defined]
    done.wait()
    return clock.elapsed(), failures


def bench(path: str, config: str, spec: dict[str, Any]) -> dict[str, Any]:
    db = launch(path, config)
    out: dict[str, Any] = {
        "system": "dbos",
        "config": config,
        "version": version("dbos"),
        "sqlite": sqlite3.sqlite_version,
        "journal_mode": _journal_mode(db),
        "synchronous": "NORMAL" if config == "wal" else "FULL (sqlite default)",
        "throughput": {},
    }
    _check(three({"i": -1}))
    out["seq"] = timed_seq(lambda i: three({"i": i}), spec["seq"], spec["warmup"])
    say(f"dbos {config}: seq p50 {out['seq']['p50_ms']:.2f} ms")
    for level_s, total in spec["levels"].items():
        level = min(int(level_s), total)
        seconds, failures = window(level, total)
        r = rate(total, seconds, level)
        r["failed"] = failures
        out["throughput"][level_s] = r
        say(f"dbos {config}: {level} in flight -> {r['runs_per_s']:.0f} runs/s")
    return out


def crash_child(path: str, config: str, n: int) -> None:
    """Start ``n`` workflows that park inside step 2, say ``ready``, hang until killed."""
    global _expect_in
    if os.environ.get(BLOCK_ENV) != "1":
        raise SystemExit(f"{BLOCK_ENV}=1 must be set for the crash child")
    _expect_in = n
    launch(path, config)
    clock = Clock()
    for i in range(n):
        DBOS.start_workflow(three, {"i": i})
    started_s = clock.elapsed()
    _all_in.wait()
    ready({"n": n, "started_s": started_s, "all_in_step2_s": clock.elapsed()})
    while True:
        time.sleep(3600)


def _count(db: str, *statuses: str) -> int:
    marks = ",".join("?" * len(statuses))
    with sqlite3.connect(db, timeout=30) as c:
        row = c.execute(
            f"SELECT count(*) FROM workflow_status WHERE status IN ({marks})", statuses
        ).fetchone()
    return int(row[0])


def recover(path: str, config: str, n: int) -> dict[str, Any]:
    db = os.path.join(path, DB_FILE)
    pending_before = _count(db, "PENDING")
    clock = Clock()
    launch(path, config)
    launched_s = clock.elapsed()
    # DBOS 3.4 recovers by re-enqueueing each PENDING workflow on its internal queue
    # (status ENQUEUED) for the queue thread to dequeue and run: done when neither is left.
    while _count(db, "PENDING", "ENQUEUED") > 0:
        time.sleep(0.02)
    seconds = clock.elapsed()
    succeeded = _count(db, "SUCCESS")
    if succeeded != n:
        raise RuntimeError(f"{succeeded} of {n} recovered workflows succeeded")
    return {
        "system": "dbos",
        "config": config,
        "n": n,
        "pending_before": pending_before,
        "open_s": launched_s,
        "seconds": seconds,
        "runs_per_s": n / seconds,
    }


def main() -> None:
    logging.getLogger("dbos").setLevel(logging.WARNING)
    args = parse_args()
    config = args.config or "default"
    if args.mode == "bench":
        result = bench(args.dir, config, json.loads(args.spec))
    else:
        result = recover(args.dir, config, args.n)
    write_result(args.out, result)
    # DBOS's executor and background threads are daemons; skip their teardown.
    os._exit(0)


if __name__ == "__main__":
    main()
