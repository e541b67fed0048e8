"""kill -9 mid-parallel: a recorded graph node (or concurrent step) is never run again.

``graph_workload.py`` (a real process, ``durability="sync"``) runs step graphs with a
3-way parallel and a map of 6, and code workflows awaiting 4 steps at once; the test
SIGKILLs it at random moments while runs are inside their parallels and maps, a few
times over, then lets a last launch finish. Every node function writes an fsync-ed
``ATTEMPT RUN NODE TOKEN`` line before it returns, and its output carries the token.
Afterwards, for every run:

(a) it completed, with the expected result;
(b) each node (each concurrent step) is recorded exactly once in the journal;
(c) the recorded result carries the token of the *last* attempt of that node that
    ever ran: once a node's result was recorded, no incarnation ran the node again
    (R6), whatever order the concurrent branches finished or replayed in;
(d) the run's log is valid AG-UI (the conftest re-checks every stored log too) and
    its derived graph state agrees with it: every node ``completed``.

CI runs a bounded sample; the soak variant lands ``PERDURE_SOAK_KILLS`` kills.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio
from helpers.graph_checks import assert_graph_consistent

import perdure
from perdure.testing import internals

HERE = Path(__file__).resolve().parent
WORKLOAD = HERE / "graph_workload.py"
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))

from graph_workload import ITEMS, define  # noqa: E402

N_RUNS = 12


def _launch(data: Path, witness: Path, incarnation: int) -> subprocess.Popen[str]:
    env = {**os.environ, "PERDURE_INCARNATION": str(incarnation), "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, str(WORKLOAD), str(data), str(witness), str(N_RUNS)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
    )


def _attempts(witness: Path) -> list[tuple[str, str, str]]:
    if not witness.exists():
        return []
    out = []
    for line in witness.read_text().splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[0] == "ATTEMPT":
            out.append((parts[1], parts[2], parts[3]))
    return out


def _mid_parallel(witness: Path, since: int) -> bool:
    """Some run has recorded a check (or concurrent step) attempt in this incarnation."""
    nodes = {"fraud", "stock", "credit", "t0", "t1", "t2", "t3"}
    return sum(1 for _, node, _ in _attempts(witness)[since:] if node in nodes) >= 3


def run_kills(tmp: Path, seed: int, kills: int) -> dict[str, int]:
    """``kills`` launches killed mid-parallel, then one that finishes every run."""
    rng = random.Random(seed)
    data, witness = tmp / "data", tmp / "witness.txt"
    tally = {"kills": 0, "launches": 0}
    for incarnation in range(kills):
        before = len(_attempts(witness))
        proc = _launch(data, witness, incarnation)
        tally["launches"] += 1
        deadline = time.monotonic() + 60
        while not _mid_parallel(witness, before):
            if proc.poll() is not None:
                break
            assert time.monotonic() < deadline, "the workload made no progress"
            time.sleep(0.005)
        time.sleep(rng.uniform(0, 0.15))
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            tally["kills"] += 1
        proc.communicate(timeout=30)
    proc = _launch(data, witness, kills)
    tally["launches"] += 1
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0 and "DONE" in out, err[-3000:]
    return tally


def audit(tmp: Path, launches: int) -> dict[str, int]:
    data, witness = tmp / "data", tmp / "witness.txt"
    last_attempt: dict[tuple[str, str], str] = {}
    tried: dict[tuple[str, str], int] = defaultdict(int)
    for run_id, node, token in _attempts(witness):
        last_attempt[(run_id, node)] = token  # lines are in (incarnation, seq) order
        tried[(run_id, node)] += 1
    rt = perdure.Runtime(data, durability="sync", recover=False)
    define(rt)

    async def check() -> dict[str, int]:
        reruns = 0
        async with rt:
            store = internals(rt).store
            graph_runs = [f"g-{inc}-{i:03d}" for inc in range(launches) for i in range(N_RUNS)]
            code_runs = [f"f-{inc}-{i:03d}" for inc in range(launches) for i in range(N_RUNS // 2)]
            for run_id in graph_runs:
                rec = rt.get(run_id)
                assert rec.status == "completed", rec
                assert rec.completion is not None
                assert rec.completion.result == {
                    "checks": ["credit", "fraud", "stock"],
                    "lines": list(range(ITEMS)),
                }
                state, _ = await assert_graph_consistent(rt, run_id)
                assert {n.status for n in state.nodes.values()} == {"completed"}
                recorded = _recorded_tokens(store.journal(run_id))
                keys = ["fetch", "fraud", "stock", "credit", "done"]
                keys += [f"line[{k}]" for k in range(ITEMS)]
                assert sorted(recorded) == sorted(keys), recorded
                for key, token in recorded.items():
                    assert token == last_attempt[(run_id, key)], (
                        f"{run_id} {key}: recorded {token}, but the node ran again later "
                        f"({last_attempt[(run_id, key)]})"
                    )
                    reruns += tried[(run_id, key)] - 1
            for run_id in code_runs:
                rec = rt.get(run_id)
                assert rec.status == "completed" and rec.completion is not None
                assert rec.completion.result == {"calls": ["t0", "t1", "t2", "t3"]}
                recorded = _recorded_tokens(store.journal(run_id))
                assert sorted(recorded) == ["t0", "t1", "t2", "t3"]
                for key, token in recorded.items():
                    assert token == last_attempt[(run_id, key)]
                    reruns += tried[(run_id, key)] - 1
        return {"reexecutions_of_unrecorded_nodes": reruns}

    return trio.run(check)


def _recorded_tokens(journal: list[perdure.storage.JournalEntry]) -> dict[str, str]:
    """Node key -> the token of its recorded result; every key recorded once."""
    out: dict[str, str] = {}
    for entry in journal:
        if entry.kind not in ("step", "kstep"):
            continue
        value = msgspec.msgpack.decode(entry.value)
        key = value["node"]
        assert key not in out, f"{key} recorded twice"
        out[key] = value["token"]
    return out


@pytest.mark.parametrize("seed", [31, 32])
def test_kill9_mid_parallel_never_reruns_a_recorded_node(
    tmp_path: Path, record_property: Any, seed: int
) -> None:
    tally = run_kills(tmp_path, seed, kills=3)
    tally.update(audit(tmp_path, tally["launches"]))
    assert tally["kills"] >= 2, tally
    record_property("crash_tally", tally)


@pytest.mark.soak
def test_kill9_graph_soak(tmp_path: Path, record_property: Any) -> None:
    kills = int(os.environ.get("PERDURE_SOAK_KILLS", "1000")) // 10
    tally = run_kills(tmp_path, 99, kills=max(kills, 5))
    tally.update(audit(tmp_path, tally["launches"]))
    assert tally["kills"] >= tally["launches"] // 2, tally
    record_property("crash_tally", tally)
