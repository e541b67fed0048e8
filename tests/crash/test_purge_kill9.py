"""kill -9 during purges (R38): no acknowledgement is lost, no tree is left half deleted.

``purge_workload.py`` runs continuous load in a real process while a retention rule and
an explicit ``rt.purge()`` loop remove completed trees; the harness SIGKILLs it right
after it entered a purge (a random delay, then the next ``begin`` mark, then 0-3 ms),
relaunches it, and after the last kill lets a final launch finish what was in flight.
Then, reading the directory:

(a) every acknowledged start is either still stored or provably completed (its body
    wrote ``LAST``, which only happens past its last step): a purge never removed a run
    that had not ended;
(b) the keepers (never terminal) are all there, waiting, with their acknowledged step;
(c) every acknowledged step of a stored run is in its journal;
(d) no run is half purged and no tree is split: every key of ``events``, ``journal``,
    ``logs`` and every index, ``idem`` and ``waiting`` value names a stored run; a
    stored child has its parent; a stored parent has both its children; every ``f``
    entry names a stored, ended, top-level run;
(e) every stored log is valid AG-UI (the suite's after-test check, done here explicitly).

CI runs a bounded sample; ``make soak`` (``PERDURE_SOAK=1``) runs 60 kills.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from helpers.checks import check_store_logs, named_run

from perdure.storage import Store

HERE = Path(__file__).resolve().parent
WORKLOAD = HERE / "purge_workload.py"
REPO = HERE.parent.parent


def _launch(tmp: Path, incarnation: int, final: bool = False) -> subprocess.Popen[str]:
    env = dict(os.environ, PERDURE_INCARNATION=str(incarnation))
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    args = [sys.executable, str(WORKLOAD), str(tmp / "data"), str(tmp / "acks"), str(tmp / "marks")]
    return subprocess.Popen(
        [*args, "final"] if final else args, env=env, stdout=subprocess.PIPE, text=True
    )


def _last_mark(tmp: Path) -> str:
    try:
        with open(tmp / "marks", "rb") as f:
            f.seek(max(0, os.path.getsize(tmp / "marks") - 16))
            lines = f.read().decode(errors="replace").split()
    except OSError:
        return ""
    return lines[-1] if lines else ""


def run_kills(tmp: Path, kills: int, seed: int) -> Counter[str]:
    rng = random.Random(seed)
    tally: Counter[str] = Counter()
    for incarnation in range(kills):
        proc = _launch(tmp, incarnation)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready", "the workload did not start"
        time.sleep(rng.uniform(0.2, 1.2))
        deadline = time.monotonic() + 5
        while _last_mark(tmp) != "begin" and time.monotonic() < deadline:
            time.sleep(0.0005)
        time.sleep(rng.uniform(0, 0.003))
        in_purge = _last_mark(tmp) == "begin"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        tally["kills"] += 1
        tally["kills_inside_a_purge"] += in_purge
    final = _launch(tmp, kills, final=True)
    out, _ = final.communicate(timeout=120)
    assert final.returncode == 0 and "DONE" in out, out
    return tally


def audit(tmp: Path, tally: Counter[str]) -> None:
    started: list[str] = []
    acked: dict[str, set[str]] = {}
    last: set[str] = set()
    for line in (tmp / "acks").read_text().splitlines():
        parts = line.split()
        if parts[0] == "STARTED":
            started.append(parts[1])
        elif parts[0] == "ACK":
            acked.setdefault(parts[1], set()).add(parts[2])
        elif parts[0] == "LAST":
            last.add(parts[1])
    store = Store(tmp / "data", readonly=True)
    try:
        runs = {rec.id: rec for rec in store.iter_runs()}
        journals = {run_id: {e.name for e in store.journal(run_id)} for run_id in runs}
        with store.read() as txn:
            keys = {
                name: [(bytes(k), bytes(v)) for k, v in txn.cursor(db=db)]
                for name, db in store.dbs.items()
            }
    finally:
        store.close()
    problems: list[str] = []
    # (a) and (b)
    for run_id in started:
        if run_id.startswith("k-"):
            rec = runs.get(run_id)
            if rec is None or rec.status != "waiting" or "a" not in journals[run_id]:
                problems.append(f"keeper {run_id} lost or changed: {rec and rec.status}")
        elif run_id not in runs and run_id not in last:
            problems.append(f"acknowledged run {run_id} is gone but never completed")
    # (c)
    for run_id, names in acked.items():
        if run_id in runs and not names <= journals[run_id]:
            problems.append(
                f"{run_id}: acknowledged steps {names - journals[run_id]} not journaled"
            )
    # (d)
    for db in ("events", "journal", "logs"):
        for key, _ in keys[db]:
            owner = key.partition(b"\0")[0].decode()
            if owner not in runs:
                problems.append(f"{db} key of a missing run {owner}")
    for db in ("index", "idem", "waiting"):
        for key, value in keys[db]:
            named = named_run(db, key, value)
            if named not in runs:
                problems.append(f"{db} entry {key!r} names a missing run {named}")
    for key, value in keys["index"]:
        if key[:1] == b"f":
            named = named_run("index", key, value)
            rec = runs.get(named)
            if rec is None or not rec.terminal or rec.parent_id is not None:
                problems.append(f"f entry {key!r} names {named}: {rec and rec.status}")
    for key, _ in keys["timers"]:
        owner = key[8:].partition(b"\0")[0].decode()
        if owner not in runs:
            problems.append(f"a timer of a missing run {owner}")
    for rec in runs.values():
        if rec.parent_id is not None and rec.parent_id not in runs:
            problems.append(f"child {rec.id} outlived its purged parent {rec.parent_id}")
        if rec.target == "workflow:tree" and rec.terminal:
            kids = [r for r in runs.values() if r.parent_id == rec.id]
            if len(kids) != 2:
                problems.append(f"tree {rec.id} kept {len(kids)} of its 2 children")
    # (e)
    problems.extend(check_store_logs(tmp / "data"))
    tally["runs_started"] += len(started)
    tally["runs_stored_at_the_end"] += len(runs)
    tally["runs_purged"] += sum(1 for r in started if r not in runs)
    assert not problems, "\n".join(problems[:30])
    assert tally["runs_purged"] > 0, "nothing was purged: the test proves nothing"


@pytest.mark.parametrize("seed", [21])
def test_kill9_during_purges_sample(tmp_path: Path, record_property: Any, seed: int) -> None:
    tally = run_kills(tmp_path, kills=4, seed=seed)
    audit(tmp_path, tally)
    record_property("crash_tally", dict(tally))
    assert tally["kills_inside_a_purge"] >= 1, tally


@pytest.mark.soak
def test_kill9_during_purges_soak(tmp_path: Path, record_property: Any) -> None:
    tally = run_kills(tmp_path, kills=60, seed=22)
    audit(tmp_path, tally)
    record_property("crash_tally", dict(tally))
    assert tally["kills_inside_a_purge"] >= 40, tally
