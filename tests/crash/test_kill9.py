"""kill -9 crash proof: SIGKILL a perdure process at random moments, then audit the directory.

A scenario launches ``workload.py`` (a real process with ~50 runs in flight, each
run four durable steps, some streaming text with ``ctx.flush()`` mid-step, some
durable sleeps and journaled emits), kills it with SIGKILL after a random delay drawn
uniformly from ``[0, T]`` where ``T`` is the wall time of one complete, uncrashed run
of the same workload — so kills land during interpreter start-up, while the runtime
opens and recovers, while runs start, in the middle of steps and while the writer
thread is inside an LMDB transaction — relaunches and kills it a few times more, then
lets a last launch finish. The workload writes fsync-ed witness lines: one per step
*attempt* (side effects), one per acknowledged start and one per acknowledged step
(``await ctx.step`` returned in the body). Afterwards the test reads the directory and
checks, for every run:

(a) every acknowledged start exists;
(b) every acknowledged step has its recorded result in the journal (nothing
    acknowledged is lost);
(c) the journal is exactly the expected sequence, so no step is recorded twice;
(d) no step runs again once acknowledged: no attempt line of a later incarnation, or
    later in the same one, than its first acknowledgement; stronger, the recorded
    result carries the token of the *last* attempt that ever ran (a recorded step is
    never executed again, R6) and that attempt really ran;
(e) every run ends ``completed``;
(f) every run's log passes ``verify_prefixes`` (valid AG-UI at every prefix and
    complete, R19/R21), event ids are exactly ``1..last_event_id``, an attempt cut
    by a crash is closed with ``perdure.attempt_aborted`` before the step starts
    again, and journaled emits appear once;
(g) the results equal the deterministic expected values;

plus: no timer is left behind, and every event a live subscriber
(``rt.events(follow=True)`` in a killed process) was shown is in the final log at the
same id, unchanged (R20).

CI runs a bounded sample (a few landed kills per test, well under a minute in all);
``soak``-marked tests land at least ``PERDURE_SOAK_KILLS`` (default 1000) kills when
``PERDURE_SOAK=1`` (``make soak``) and are skipped otherwise (see conftest.py). The
terminal summary adds up the tally of every test (kills by phase, kills inside an LMDB
write transaction, re-executed unacknowledged steps, aborted attempts, ...).
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio
from _audit import (
    LAUNCH_TIMEOUT,
    Scenario,
    audit,
    read_store,
    read_witnesses,
    report,
    run_kills,
    wait_for,
)

import perdure

# -- CI sample ---------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [11, 12])
def test_kill9_sample(tmp_path: Path, record_property: Any, seed: int) -> None:
    """Three landed SIGKILLs at random moments, clean finishes, full audits (durability="sync")."""
    tally = run_kills(tmp_path / f"seed-{seed}", seed=seed, kills=3, durability="sync")
    report(record_property, tally, f"sync seed {seed}")


def test_kill9_process_durability(tmp_path: Path, record_property: Any) -> None:
    """durability="process" skips fsync; a process crash must still lose nothing acknowledged."""
    tally = run_kills(tmp_path / "process", seed=21, kills=3, durability="process")
    report(record_property, tally, "process seed 21")


# -- kill during a durable sleep ---------------------------------------------------------


@pytest.mark.parametrize("restart", ["before_due", "after_due", "killed_twice"])
def test_kill9_during_durable_sleep(tmp_path: Path, record_property: Any, restart: str) -> None:
    """A run killed mid-sleep (0.5 s) fires its sleep exactly once after the restart (R9).

    ``before_due``: the restart recovers while the sleep still has time to go, so the
    step after it must wait for the recorded due time; ``after_due``: the due time
    passed while the process was dead, so it fires at once; ``killed_twice``: the
    recovered process is killed again mid-sleep before a last restart (its sleep is
    1.5 s so that two process start-ups fit inside it).
    """
    sleep_seconds = 1.5 if restart == "killed_twice" else 0.5
    sc = Scenario(tmp_path / restart, n_runs=3, seed=5, mode="sleep", sleep_seconds=sleep_seconds)

    def acked(step: str) -> int:
        return sum(
            1 for (_, name), acks in read_witnesses(sc).acked.items() if name == step for _ in acks
        )

    proc = sc.launch()
    wait_for(lambda: acked("before") >= sc.n_runs, 20, "the steps before the sleep")
    time.sleep(0.02)
    assert sc.kill(proc), "the workload ended before the kill"
    stored = read_store(sc.data)
    dues: dict[str, float] = {}
    for rid, journal in stored.journals.items():
        assert [(e.kind, e.name) for e in journal] == [("step", "before"), ("sleep", "sleep")], (
            f"{rid} was not killed mid-sleep: {journal}"
        )
        dues[rid] = msgspec.msgpack.decode(journal[-1].value, type=float)
    assert sorted(rid for _, rid, _ in stored.timers) == sorted(dues), "sleep timers not stored"
    assert acked("after") == 0

    if restart == "after_due":
        time.sleep(max(0.0, max(dues.values()) - time.time()) + 0.2)
    elif restart == "killed_twice":
        proc = sc.launch()
        wait_for(lambda: "RECOVERED" in sc.output(), 20, "the second incarnation to recover")
        time.sleep(0.02)
        if time.time() < min(dues.values()):
            assert sc.kill(proc)
        else:  # too slow a machine to land the second kill inside the sleep
            sc.tally["second_kill_skipped"] += 1
            proc.wait(timeout=LAUNCH_TIMEOUT)
    relaunched_at = time.time()
    sc.finish()
    if restart == "before_due" and relaunched_at >= min(dues.values()):
        sc.tally["restart_too_late_for_before_due"] += 1

    tally = audit(sc)  # (a)-(g) plus: the sleep journaled once, no timer left
    w = read_witnesses(sc)
    for rid, due in dues.items():
        after = w.attempts[(rid, "after")]
        assert len(after) == 1, f"{rid}: step after the sleep ran {len(after)} times"
        ran_at = after[0][1]
        assert ran_at >= due - 0.005, (
            f"{rid}: sleep fired {due - ran_at:.3f} s early after the restart"
        )
        assert ran_at <= max(due, relaunched_at) + 10, (
            f"{rid}: sleep fired {ran_at - due:.1f} s late"
        )
        assert len(w.attempts[(rid, "before")]) == 1
    report(record_property, tally, f"sleep {restart}")


# -- first open of a fresh directory -----------------------------------------------------

_FIRST_OPEN = """
import sys
from perdure.storage import Store
Store(sys.argv[1], durability="sync").close()
"""
# Syscalls by which opening a fresh directory changes the disk (lock file, lock.mdb,
# data.mdb pages, flushes). Injecting an error plus SIGKILL on one of them kills the
# process exactly before that write happens.
_WRITE_SYSCALLS = (
    "ftruncate",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "write",
    "writev",
    "fdatasync",
    "fsync",
    "msync",
    "rename",
    "unlink",
)
_STRACE = shutil.which("strace")


def _first_open_writes(tmp: Path) -> list[tuple[str, int]]:
    """Every (syscall, n) of the first open's writing syscalls, from one traced open."""
    assert _STRACE is not None
    trace = tmp / "trace.txt"
    subprocess.run(
        [
            _STRACE,
            "-qq",
            "-o",
            str(trace),
            "-e",
            "trace=" + ",".join(_WRITE_SYSCALLS),
            sys.executable,
            "-c",
            _FIRST_OPEN,
            str(tmp / "traced"),
        ],
        check=True,
    )
    counts: Counter[str] = Counter()
    for line in trace.read_text().splitlines():
        name = line.split("(", 1)[0].strip()
        if name in _WRITE_SYSCALLS:
            counts[name] += 1
    return [(name, n) for name, count in sorted(counts.items()) for n in range(1, count + 1)]


async def _use_store(data: Path) -> None:
    """Open ``data`` and run one workflow to completion in it."""
    rt = perdure.Runtime(data)

    @rt.workflow("probe")
    async def probe(ctx: perdure.RunContext, inp: dict) -> dict:  # type: ignore[type-arg]
        return {"v": await ctx.step("one", lambda: 1)}

    async with rt:
        started = await rt.start("workflow:probe", {}, owner=perdure.Project("p"))
        done = await rt.wait(started.run.id)
        assert done.status == "completed", done.completion


def _zero_byte_data_file(data: Path) -> bool:
    """The state of a kill between LMDB creating data.mdb and writing its meta pages."""
    return (data / "data.mdb").exists() and (data / "data.mdb").stat().st_size == 0


@pytest.mark.skipif(_STRACE is None, reason="needs strace to kill at an exact syscall")
def test_kill9_at_every_write_of_a_first_open(tmp_path: Path, record_property: Any) -> None:
    """SIGKILL the first open of a fresh directory before each of its writing syscalls
    in turn; every directory left behind must open and run a workflow afterwards.

    That includes the kill before LMDB writes the meta pages of the data.mdb it just
    created (a zero-byte data.mdb, also covered without strace below).
    """
    tally: Counter[str] = Counter()
    failures: list[str] = []
    for name, n in _first_open_writes(tmp_path):
        data = tmp_path / f"{name}-{n}"
        child = subprocess.run(
            [
                _STRACE,
                "-qq",
                "-o",
                os.devnull,
                "-e",
                f"trace={name}",
                "-e",
                f"inject={name}:error=EIO:signal=SIGKILL:when={n}",
                sys.executable,
                "-c",
                _FIRST_OPEN,
                str(data),
            ],
            check=False,
            capture_output=True,
        )
        if child.returncode not in (-signal.SIGKILL, 128 + signal.SIGKILL):
            failures.append(f"{name} #{n}: the child was not killed (exit {child.returncode})")
            continue
        tally["first_open_kills"] += 1
        tally["first_open_zero_byte_data_file"] += _zero_byte_data_file(data)
        try:
            trio.run(_use_store, data)
        except perdure.CorruptStore:
            failures.append(f"{name} #{n}: refused after the kill: {sorted(os.listdir(data))}")
        except Exception as exc:  # report every point at once
            failures.append(f"{name} #{n}: {type(exc).__name__}: {exc}")
    report(record_property, tally, "first open")
    assert tally["first_open_kills"] >= 4, "the traced first open made too few writes"
    assert not failures, "\n".join(failures)


def test_kill9_leaving_zero_byte_data_file_keeps_directory_usable(tmp_path: Path) -> None:
    data = tmp_path / "data"
    if _STRACE is not None:
        # A real kill: the second pwrite64 of a first open is LMDB's meta-page write
        # (the first one writes the holder into perdure.lock).
        subprocess.run(
            [
                _STRACE,
                "-qq",
                "-o",
                os.devnull,
                "-e",
                "trace=pwrite64",
                "-e",
                "inject=pwrite64:error=EIO:signal=SIGKILL:when=2",
                sys.executable,
                "-c",
                _FIRST_OPEN,
                str(data),
            ],
            check=False,
            capture_output=True,
        )
    else:  # the same state, made by hand
        data.mkdir()
        (data / "perdure.lock").write_bytes(b"")
        (data / "data.mdb").write_bytes(b"")
    assert _zero_byte_data_file(data), sorted(os.listdir(data))
    trio.run(_use_store, data)


# -- soak --------------------------------------------------------------------------------

SOAK_KILLS = int(os.environ.get("PERDURE_SOAK_KILLS", "1000"))
SOAK_LANES = int(os.environ.get("PERDURE_SOAK_LANES", "20"))
SOAK_KILLS_PER_SCENARIO = 5


@pytest.mark.soak
@pytest.mark.timeout(0)
@pytest.mark.parametrize("lane", range(SOAK_LANES))
def test_kill9_soak(tmp_path: Path, record_property: Any, lane: int) -> None:
    """``PERDURE_SOAK=1``: scenarios of up to 5 random kills until this lane has landed its
    share of ``PERDURE_SOAK_KILLS`` (default 1000 over 20 lanes); every fourth lane
    uses durability="process"."""
    target = math.ceil(SOAK_KILLS / SOAK_LANES)
    durability = "process" if lane % 4 == 3 else "sync"
    total = run_kills(
        tmp_path / f"lane-{lane}",
        seed=1000 + lane,
        kills=target,
        durability=durability,
        per_scenario=SOAK_KILLS_PER_SCENARIO,
        keep=False,
    )
    report(record_property, total, f"soak lane {lane} ({durability})")
