"""Power cuts: R29's ``sync`` promise (acknowledged writes survive power loss), tested.

The kill -9 sweep (``tests/crash``) cannot see a missing flush: SIGKILL leaves the
page cache, so an unflushed commit survives it. Here the data directory lives on a
volatile FUSE mount (``volatile_fs.py``) where whatever no fsync, fdatasync or O_DSYNC
write covered is lost when the power is cut. The witness files (acknowledged starts
and steps, step attempts, what a live follower was shown) stay outside the mount, on
the real disk: they are what perdure acknowledged before the power went.

A scenario launches the crash workload (``tests/crash/workload.py``, ~200 runs of four
durable steps, streaming steps with mid-step flushes, durable sleeps, journaled emits)
with ``PERDURE_DURABILITY=sync`` on the mount, SIGKILLs it after a delay drawn from
``[0, T]`` (``T``: one uncut run of the workload on the same kind of mount), cuts the
power, and does that again a few times before a last launch runs to completion. After
every cut, before anything is relaunched, the store that came back is read and every
acknowledged start and step must be in it. At the end the full kill -9 audit runs on
the scenario ((a)-(g) of ``tests/crash/test_kill9.py``: nothing acknowledged lost,
nothing recorded twice, no acknowledged step executed again, valid and complete
AG-UI logs, what a follower saw is in the final log unchanged).

Half of the cuts drop everything unflushed; the other half first let a random share
of it reach the disk (pages of unflushed writes, a prefix of the namespace journal),
as the kernel's writeback does before a real power failure, so recovery must also
cope with the next, uncommitted transaction's pages being partly on the disk.

``durability="process"`` never flushes, so a power cut loses what it acknowledged:
``test_power_cut_after_acknowledgements`` shows it (and that ``sync`` loses nothing
under the same cut); the soak's process lanes measure how much and how often the
store comes back unreadable.

CI runs a bounded sample (8 cuts). ``make soak`` (``PERDURE_SOAK=1``) runs at least
``PERDURE_SOAK_CUTS`` (default 200) cuts on ``sync`` over ``PERDURE_SOAK_CUT_LANES``
(default 8) lanes, plus two measuring lanes on ``process``.
"""

from __future__ import annotations

import math
import os
import random
import re
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from crash._audit import (
    CI_RUNS,
    Scenario,
    find_violations,
    read_store,
    read_witnesses,
    wait_for,
)
from volatile_fs import VolatileMount

SOAK_CUTS = int(os.environ.get("PERDURE_SOAK_CUTS", "200"))
SOAK_LANES = int(os.environ.get("PERDURE_SOAK_CUT_LANES", "8"))
SOAK_CUTS_PER_SCENARIO = 5
# Half the kill sweep's runs in CI: a launch takes ~1 s instead of ~2, and so do audits.
CI_POWER_RUNS = CI_RUNS // 2


class PowerScenario:
    """A crash-workload :class:`Scenario` whose data directory is on a volatile mount."""

    def __init__(self, root: Path, *, n_runs: int, seed: int, durability: str) -> None:
        self.mount = VolatileMount(root / "disk", root / "mnt")
        self.sc = Scenario(
            root, n_runs=n_runs, seed=seed, durability=durability, data=root / "mnt" / "data"
        )
        self.tally: Counter[str] = Counter()
        self.lost: list[str] = []

    def cut(self, writeback: float, seed: int) -> None:
        """Cut the power (the workload is dead by now), then check what came back."""
        report = self.mount.cut(writeback=writeback, seed=seed)
        self.tally["cuts"] += 1
        self.tally["cuts_with_writeback" if writeback else "cuts_dropping_all"] += 1
        self.tally["unflushed_bytes_at_cuts"] += report["dirty_bytes"]
        self.tally["unflushed_journal_entries_at_cuts"] += report["journal_entries"]
        self.tally["pages_written_back"] += report.get("pages_written_back", 0)
        lost, checked, unreadable = acknowledged_but_lost(self.sc)
        if unreadable is not None:
            kind = "no_store" if "no perdure store" in unreadable else "store_unreadable"
            self.tally[
                f"cuts_leaving_{kind}" if checked else f"cuts_before_any_ack_leaving_{kind}"
            ] += 1
        self.tally["acks_checked_after_cuts"] += checked
        self.tally["acks_lost"] += len(lost)
        self.tally["cuts_losing_acks"] += bool(lost)
        self.lost.extend(f"cut {self.tally['cuts']}: {item}" for item in lost)

    def kill_and_cut(self, delay: float, writeback: float, seed: int) -> bool:
        """Launch, SIGKILL after ``delay``, cut; False if the launch finished first."""
        if not self.sc.kill_after(delay):
            return False
        self.cut(writeback, seed)
        return True

    def play(self, rng: random.Random, full: float, cuts: int) -> float | None:
        """Up to ``cuts`` kills and cuts after ``uniform(0, full)``, then a last launch
        that finishes, unless a launch outlived its delay (it was that last launch).
        Returns the wall time of the first launch if it ran the whole workload."""
        for n in range(cuts):
            writeback = 0.0 if rng.random() < 0.5 else rng.random()
            began = time.monotonic()
            if not self.kill_and_cut(rng.uniform(0.0, full), writeback, rng.randrange(2**32)):
                return time.monotonic() - began if n == 0 else None
        self.sc.finish()
        return None

    def audit(self) -> tuple[list[str], Counter[str]]:
        violations, tally = find_violations(self.sc)
        return [*self.lost, *violations], tally + self.tally


def acknowledged_but_lost(sc: Scenario) -> tuple[list[str], int, str | None]:
    """Read the store that came back after a cut: one line per acknowledged start or
    step that it lacks, how many acknowledgements there were, and why the store did
    not open (``None`` if it did)."""
    w = read_witnesses(sc)
    starts = sorted(w.started)
    steps = sorted(key for key, acks in w.acked.items() if acks)
    checked = len(starts) + len(steps)
    try:
        stored = read_store(sc.data)
    except Exception as exc:  # no store at all, or one that does not open
        why = f"{type(exc).__name__}: {exc}"
        lost = [f"start of {rid} acknowledged, no store ({why})" for rid in starts]
        lost += [f"step {rid}/{name} acknowledged, no store ({why})" for rid, name in steps]
        return lost, checked, why
    lost = [
        f"start of {rid} acknowledged, the run is gone"
        for rid in starts
        if rid not in stored.statuses
    ]
    for rid, name in steps:
        journal = stored.journals.get(rid, [])
        if not any(e.kind == "step" and e.name == name for e in journal):
            lost.append(f"step {rid}/{name} acknowledged, not in the journal")
    return lost, checked, None


# -- calibration and schedules -----------------------------------------------------------

_calibrated: dict[tuple[int, str], float] = {}


def full_run_time(tmp: Path, n_runs: int, durability: str) -> float:
    """Wall time of one uncut run of the workload on a volatile mount (cached; audited)."""
    key = (n_runs, durability)
    if key not in _calibrated:
        ps = PowerScenario(
            tmp / f"calibrate-{n_runs}-{durability}", n_runs=n_runs, seed=1, durability=durability
        )
        with ps.mount:
            _calibrated[key] = ps.sc.finish()
            violations, _ = ps.audit()
        assert not violations, violations[:10]
    return _calibrated[key]


def run_cuts(
    root: Path,
    *,
    seed: int,
    cuts: int,
    durability: str = "sync",
    per_scenario: int = 3,
    n_runs: int = CI_RUNS,
    keep: bool = True,
) -> tuple[list[str], Counter[str]]:
    """Land ``cuts`` power cuts over as many scenarios as it takes, auditing each one.

    As ``run_kills`` in the kill -9 sweep: a scenario is killed after ``uniform(0, T)``
    and its power cut again and again (at most ``per_scenario`` cuts) until a launch
    outlives its delay and finishes on its own, or a last launch is let finish; then
    it is audited. Each cut drops everything unflushed or, one time in two, first lets a
    random share ``uniform(0, 1)`` of it reach the disk. Returns the violations (for
    ``process``, the expected losses) and the tally.
    """
    full = full_run_time(root.parent, n_runs, durability)
    rng = random.Random(seed)
    total: Counter[str] = Counter()
    problems: list[str] = []
    number = 0
    while total["cuts"] < cuts:
        number += 1
        ps = PowerScenario(
            root / f"scenario-{number}",
            n_runs=n_runs,
            seed=seed * 100 + number,
            durability=durability,
        )
        with ps.mount:
            try:
                whole = ps.play(rng, full, min(per_scenario, cuts - total["cuts"]))
                if whole is not None and whole < full:
                    # T was measured on a busier machine: most delays would outlive a
                    # launch, so take the faster whole run as T from now on.
                    full = whole
                    total["full_run_time_lowered"] += 1
                violations, tally = ps.audit()
            except AssertionError as exc:  # a launch failed on the store a cut left, ...
                ps.tally["scenarios_failed"] += 1
                ps.tally[f"scenarios_failed_by_{failure_kind(str(exc))}"] += 1
                violations = [*ps.lost, f"the scenario failed: {str(exc)[:3000]}"]
                tally = ps.sc.tally + ps.tally
        problems.extend(f"scenario {number}: {line}" for line in violations)
        total += tally
        total["scenarios"] += 1
        total["scenarios_with_violations"] += bool(violations)
        if not keep:
            shutil.rmtree(ps.sc.root, ignore_errors=True)
    total["violations"] = len(problems)
    return problems, total


def failure_kind(text: str) -> str:
    """The exception a failed launch ended with (``lmdb.CorruptedError``, ...), if any."""
    kinds = re.findall(r"^E?\s*([\w.]+(?:Error|Exception|Store)): ", text, re.MULTILINE)
    return kinds[-1] if kinds else "other"


def report(record_property: Any, tally: Counter[str], durability: str, label: str) -> None:
    """Record the tally, its keys prefixed with the durability mode (``process`` losses
    are expected and must not read as ``sync`` ones in the summary)."""
    record_property("powercut_tally", {f"{durability}_{k}": v for k, v in tally.items()})
    print(f"\n[{label}] " + ", ".join(f"{k}={v}" for k, v in sorted(tally.items())))


def check(problems: list[str], tally: Counter[str]) -> None:
    listing = "\n".join(problems[:30])
    assert not problems, f"{len(problems)} violations (tally {dict(tally)}):\n{listing}"


# -- CI sample ---------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [41, 42])
def test_power_cut_sample(tmp_path: Path, record_property: Any, seed: int) -> None:
    """Four power cuts at random moments under durability="sync", then full audits."""
    problems, tally = run_cuts(
        tmp_path / f"seed-{seed}", seed=seed, cuts=4, per_scenario=4, n_runs=CI_POWER_RUNS
    )
    report(record_property, tally, "sync", f"power cuts, seed {seed}")
    check(problems, tally)
    assert tally["cuts"] == 4


def acked_steps(sc: Scenario) -> int:
    """Complete ``ACK`` lines so far (the workload is still appending)."""
    text = sc.acks.read_text() if sc.acks.exists() else ""
    return sum(line.startswith("ACK ") for line in text.split("\n")[:-1])


@pytest.mark.parametrize("durability", ["sync", "process"])
def test_power_cut_after_acknowledgements(
    tmp_path: Path, record_property: Any, durability: str
) -> None:
    """Cut the power once 50 steps were acknowledged: ``sync`` keeps all of them;
    ``process`` (no fsync, by design: R29) loses them, so after the relaunch those
    acknowledged steps run a second time."""
    ps = PowerScenario(tmp_path, n_runs=CI_POWER_RUNS, seed=51, durability=durability)
    with ps.mount:
        proc = ps.sc.launch()
        try:
            wait_for(lambda: acked_steps(ps.sc) >= 50, 60, "50 acknowledged steps")
        finally:
            landed = ps.sc.kill(proc)
        assert landed, "the workload finished before the cut"
        ps.cut(writeback=0.0, seed=0)
        ps.sc.finish()
        problems, tally = ps.audit()
    report(record_property, tally, durability, f"cut after 50 acknowledged steps, {durability}")
    assert tally["acks_checked_after_cuts"] >= 50
    if durability == "sync":
        check(problems, tally)
        return
    assert tally["acks_lost"] >= 50, tally
    rerun = [p for p in problems if p.startswith("(d)") and "ran again" in p]
    assert rerun, f"expected acknowledged steps to run again: {problems[:10]}"


# -- soak --------------------------------------------------------------------------------

_SYNC_LANES = [(lane, "sync") for lane in range(SOAK_LANES)]
_PROCESS_LANES = [(SOAK_LANES + lane, "process") for lane in range(2)]


@pytest.mark.soak
@pytest.mark.timeout(0)
@pytest.mark.parametrize(("lane", "durability"), _SYNC_LANES + _PROCESS_LANES)
def test_power_cut_soak(tmp_path: Path, record_property: Any, lane: int, durability: str) -> None:
    """``PERDURE_SOAK=1``: scenarios of up to 5 cuts until this lane has landed its share
    of ``PERDURE_SOAK_CUTS`` (default 200 over 8 sync lanes). The two ``process`` lanes
    land as many cuts each and measure the losses; they only assert that some happened.
    """
    target = math.ceil(SOAK_CUTS / SOAK_LANES)
    problems, tally = run_cuts(
        tmp_path / f"lane-{lane}",
        seed=2000 + lane,
        cuts=target,
        durability=durability,
        per_scenario=SOAK_CUTS_PER_SCENARIO,
        keep=False,
    )
    report(record_property, tally, durability, f"power-cut soak lane {lane} ({durability})")
    if durability == "sync":
        check(problems, tally)
    else:
        print("\n".join(problems[:20]))
        assert tally["acks_lost"] > 0, tally
