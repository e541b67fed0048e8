"""The kill -9 crash harness: the scenario driver, the witness files and the audit.

Shared by ``test_kill9.py`` (process crashes) and ``tests/powerloss`` (power cuts on a
volatile file system): a :class:`Scenario` launches ``workload.py`` on a data
directory, kills it, relaunches it and finally lets it finish; :func:`audit` then
checks (a)-(g) of ``test_kill9``'s docstring against the witness files, which always
live in the scenario's root, outside the data directory.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import trio

import perdure
from perdure.agui import AGUIProtocolError, verify_prefixes
from perdure.storage import Store

WORKLOAD = Path(__file__).with_name("workload.py")
PERDURE_DIR = os.path.dirname(os.path.abspath(perdure.__file__))
MODULUS = 1000003
STEPS = ("s0", "s1", "s2", "s3")
CI_RUNS = 200
LAUNCH_TIMEOUT = 90.0

# True: the random schedules start from an initialised store instead of letting their
# first kill land in the first open (covered exhaustively by
# test_kill9_at_every_write_of_a_first_open).
PREINIT_STORE = False

PHASES = {
    0: "before_status",
    1: "importing",
    2: "opening_recovering",
    3: "running",
    4: "closing",
    5: "done",
}


# -- the scenario driver -----------------------------------------------------------------


class Scenario:
    """One data directory, its witness files and the launches of the workload on it."""

    def __init__(
        self,
        root: Path,
        *,
        n_runs: int,
        seed: int,
        durability: str = "sync",
        mode: str = "kill",
        sleep_seconds: float = 0.5,
        data: Path | None = None,
    ) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.data = data if data is not None else root / "data"
        self.effects = root / "effects.txt"
        self.acks = root / "acks.txt"
        self.status = root / "status.bin"
        self.followed = root / "followed.txt"
        self.n_runs = n_runs
        self.seed = seed
        self.durability = durability
        self.mode = mode
        self.sleep_seconds = sleep_seconds
        self.incarnation = 0
        self.outputs: dict[int, Path] = {}
        self.tally: Counter[str] = Counter()
        if PREINIT_STORE:
            Store(self.data, durability=durability).close()  # type: ignore[arg-type]

    def launch(self) -> subprocess.Popen[bytes]:
        self.incarnation += 1
        self.tally["launches"] += 1
        env = dict(
            os.environ,
            PERDURE_INCARNATION=str(self.incarnation),
            PERDURE_DURABILITY=self.durability,
            PERDURE_WORKLOAD=self.mode,
            PERDURE_STATUS_FILE=str(self.status),
            PERDURE_EVENTS_FILE=str(self.followed),
            PERDURE_SLEEP_SECONDS=str(self.sleep_seconds),
        )
        self.status.write_bytes(bytes(16))  # phase 0 until the new process maps it
        out = self.root / f"out-{self.incarnation}.txt"
        self.outputs[self.incarnation] = out
        with out.open("wb") as sink:
            return subprocess.Popen(
                [
                    sys.executable,
                    str(WORKLOAD),
                    str(self.data),
                    str(self.effects),
                    str(self.acks),
                    str(self.n_runs),
                    str(self.seed),
                ],
                stdout=sink,
                stderr=subprocess.STDOUT,
                env=env,
            )

    def output(self, incarnation: int | None = None) -> str:
        path = self.outputs[incarnation or self.incarnation]
        return path.read_text(errors="replace")

    def kill(self, proc: subprocess.Popen[bytes]) -> bool:
        """SIGKILL ``proc``; True if the kill landed, False if it had finished by itself."""
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)  # it may still exit on its own meanwhile
            proc.wait()
        if proc.returncode != -signal.SIGKILL:
            self._check_finished(proc.returncode)
            self.tally["kills_missed"] += 1
            return False
        self.tally["kills"] += 1
        raw = self.status.read_bytes() if self.status.exists() else bytes(16)
        self.tally[f"kills_in_{PHASES.get(raw[0], 'unknown')}"] += 1
        if raw[1]:
            self.tally["kills_mid_commit"] += 1
        if raw[0] == 3 and int.from_bytes(raw[2:4], "little"):
            self.tally["kills_while_recovered_runs_replay"] += 1
        self._check_clean_output(self.output())
        return True

    def kill_after(self, delay: float) -> bool:
        proc = self.launch()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=delay)
        return self.kill(proc)

    def finish(self, timeout: float = LAUNCH_TIMEOUT) -> float:
        """Launch and let it complete; returns its wall time."""
        began = time.monotonic()
        proc = self.launch()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError(
                f"workload did not finish within {timeout} s (hung after recovery?):\n"
                f"{self.output()[-4000:]}"
            ) from None
        self._check_finished(proc.returncode)
        return time.monotonic() - began

    def _check_finished(self, returncode: int) -> None:
        text = self.output()
        if returncode != 0 or "DONE" not in text:
            raise AssertionError(
                f"workload incarnation {self.incarnation} exited {returncode}:\n{text[-4000:]}"
            )
        self._check_clean_output(text)

    def _check_clean_output(self, text: str) -> None:
        for line in text.splitlines():
            if line.startswith("PERDURE ") and line.split(" ", 1)[1] != PERDURE_DIR:
                raise AssertionError(
                    f"the workload imported {line.split(' ', 1)[1]}, the test {PERDURE_DIR}"
                )
            if line.startswith("RECOVERED"):
                fields = dict(part.split("=") for part in line.split()[1:])
                self.tally["recovered_running_runs"] += int(fields.get("running", 0))
        bad = [marker for marker in ("Traceback", "crashed", "FAILED", "ERROR") if marker in text]
        if bad:
            raise AssertionError(f"incarnation {self.incarnation} logged {bad}:\n{text[-4000:]}")


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


# -- witness files -----------------------------------------------------------------------

Token = tuple[int, int]


def parse_token(text: str) -> Token:
    inc, seq = text.split(".")
    return int(inc), int(seq)


class Witnesses(msgspec.Struct):
    started: dict[str, list[Token]]
    acked: dict[tuple[str, str], list[Token]]
    attempts: dict[tuple[str, str], list[tuple[Token, float]]]


def read_witnesses(sc: Scenario) -> Witnesses:
    started: dict[str, list[Token]] = defaultdict(list)
    acked: dict[tuple[str, str], list[Token]] = defaultdict(list)
    attempts: dict[tuple[str, str], list[tuple[Token, float]]] = defaultdict(list)
    text = sc.acks.read_text() if sc.acks.exists() else ""
    for line in text.splitlines():
        fields = line.split()
        if fields[0] == "STARTED" and len(fields) == 4:
            started[fields[1]].append(parse_token(fields[3]))
        elif fields[0] == "ACK" and len(fields) == 4:
            acked[(fields[1], fields[2])].append(parse_token(fields[3]))
        else:
            raise AssertionError(f"malformed ack line {line!r}")
    if sc.effects.exists():
        for line in sc.effects.read_text().splitlines():
            fields = line.split()
            if len(fields) != 4:
                raise AssertionError(f"malformed side-effect line {line!r}")
            attempts[(fields[0], fields[1])].append((parse_token(fields[2]), float(fields[3])))
    return Witnesses(started, acked, attempts)


# -- expectations ------------------------------------------------------------------------


def expected_values(i: int, seed: int, steps: int) -> list[int]:
    out, value = [], i
    for k in range(steps):
        value = (value * 31 + k + seed) % MODULUS
        out.append(value)
    return out


def expected_journal(mode: str, i: int) -> list[tuple[str, str]]:
    if mode == "sleep":
        return [("step", "before"), ("sleep", "sleep"), ("step", "after")]
    shape = [("step", "s0"), ("step", "s1")]
    if i % 4 == 0:
        shape.append(("sleep", "sleep"))
    shape.append(("step", "s2"))
    if i % 3 == 0:
        shape.append(("emit", "CUSTOM"))
    shape.append(("step", "s3"))
    return shape


def step_names(mode: str) -> tuple[str, ...]:
    return ("before", "after") if mode == "sleep" else STEPS


def event_digest(wire: dict[str, Any]) -> str:
    """Same digest as workload.event_digest."""
    text = json.dumps(wire, sort_keys=True, separators=(",", ":"))
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


# -- audit -------------------------------------------------------------------------------


class Stored(msgspec.Struct):
    journals: dict[str, list[Any]]
    timers: list[tuple[float, str, bytes]]
    statuses: dict[str, str]


def read_store(data: Path) -> Stored:
    store = Store(data, readonly=True)
    try:
        runs = {rec.id: rec.status for rec in store.iter_runs()}
        journals = {rid: store.journal(rid) for rid in runs}
        return Stored(journals, store.timers(), runs)
    finally:
        store.close()


async def read_runtime(
    sc: Scenario, run_ids: list[str]
) -> dict[str, tuple[Any, list[int], list[dict[str, Any]]]]:
    """Open the directory with perdure.Runtime; every run must already be terminal."""
    rt = perdure.Runtime(sc.data, durability=sc.durability)  # type: ignore[arg-type]
    tripped: list[str] = []

    async def tripwire(ctx: perdure.RunContext, inp: Any) -> None:
        tripped.append(ctx.run_id)
        raise RuntimeError("the audit must not run any body")

    rt.workflow("crashy")(tripwire)
    rt.workflow("sleepy")(tripwire)
    out: dict[str, tuple[Any, list[int], list[dict[str, Any]]]] = {}
    async with rt:
        listed: list[Any] = []
        cursor = None
        while True:
            page = rt.list(owner=perdure.Project("p"), after=cursor, limit=1000)
            listed.extend(page.runs)
            cursor = page.next_cursor
            if cursor is None:
                break
        assert sorted(r.id for r in listed) == sorted(run_ids), (
            "rt.list disagrees with the runs started"
        )
        for rid in run_ids:
            rec = rt.get(rid)
            ids: list[int] = []
            wire: list[dict[str, Any]] = []
            async for ev in rt.events(rid, follow=False):
                ids.append(ev.event_id)
                wire.append(ev.to_wire())
            out[rid] = (rec, ids, wire)
    assert not tripped, f"bodies ran during the audit open: {tripped[:5]}"
    return out


def audit(sc: Scenario) -> Counter[str]:
    """Check (a)-(g) on a scenario whose last launch finished; returns the tally."""
    violations, tally = find_violations(sc)
    listing = "\n".join(violations[:30])
    assert not violations, f"{len(violations)} violations (tally {dict(tally)}):\n{listing}"
    return tally


def find_violations(sc: Scenario) -> tuple[list[str], Counter[str]]:
    """(a)-(g) on a scenario whose last launch finished: the violations and the tally."""
    tally = Counter(sc.tally)
    violations: list[str] = []
    w = read_witnesses(sc)
    stored = read_store(sc.data)
    run_ids = [f"r-{i:04d}" for i in range(sc.n_runs)]
    names = step_names(sc.mode)

    # (a) every acknowledged start exists (and nothing else does).
    for rid in w.started:
        if rid not in stored.statuses:
            violations.append(f"(a) {rid}: start acknowledged but the run does not exist")
    if sorted(stored.statuses) != run_ids:
        violations.append(
            f"(a) stored runs {sorted(stored.statuses)[:5]}… != started {run_ids[:5]}…"
        )
    tally["runs"] += len(stored.statuses)
    tally["duplicate_starts"] += sum(len(v) - 1 for v in w.started.values())

    recorded: dict[tuple[str, str], str] = {}
    for i, rid in enumerate(run_ids):
        journal = stored.journals.get(rid, [])
        shape = [(e.kind, e.name) for e in journal]
        # (c) the journal is exactly the expected sequence: no step recorded twice.
        if shape != expected_journal(sc.mode, i):
            violations.append(f"(c) {rid}: journal {shape} != {expected_journal(sc.mode, i)}")
        for entry in journal:
            if entry.kind != "step":
                continue
            if entry.error is not None:
                violations.append(f"{rid}: step {entry.name} recorded an error {entry.error}")
                continue
            value = msgspec.msgpack.decode(entry.value)
            recorded[(rid, entry.name)] = value["token"]
        for name in names:
            key = (rid, name)
            acks = sorted(w.acked.get(key, []))
            attempts = sorted(w.attempts.get(key, []))
            # (b) an acknowledged step has its result in the journal.
            if acks and key not in recorded:
                violations.append(
                    f"(b) {rid} {name}: acknowledged at {acks[0]} but not in the journal"
                )
                continue
            if key not in recorded:
                continue
            tally["steps_recorded"] += 1
            token = parse_token(recorded[key])
            tokens = [t for t, _ in attempts]
            # (d) no attempt after the first acknowledgement …
            if acks:
                later = [t for t in tokens if t > acks[0]]
                if later:
                    violations.append(
                        f"(d) {rid} {name}: ran again at {later} after its ack {acks[0]}"
                    )
            # … and the recorded result is the last attempt that ever ran.
            if token not in tokens:
                violations.append(
                    f"(d) {rid} {name}: recorded token {token} matches no attempt {tokens}"
                )
            elif tokens[-1] != token:
                violations.append(
                    f"(d) {rid} {name}: attempts {tokens[tokens.index(token) + 1 :]} ran after the "
                    f"recorded one {token}"
                )
            tally["step_attempts"] += len(tokens)
            tally["reexecutions_of_unacked_steps"] += max(0, len(tokens) - 1)
            if acks and acks[0][0] > token[0]:
                tally["steps_committed_then_killed_before_ack"] += 1
    stray = set(w.attempts) - {(rid, n) for rid in run_ids for n in names}
    if stray:
        violations.append(f"side effects for unknown steps: {sorted(stray)[:5]}")

    # No timer outlives its sleep.
    if stored.timers:
        violations.append(f"timers left behind: {stored.timers[:5]}")

    views = trio.run(read_runtime, sc, run_ids)
    digests: dict[str, list[str]] = {}
    for i, rid in enumerate(run_ids):
        rec, ids, wire = views[rid]
        # (e) terminal and completed.
        if rec.status != "completed":
            violations.append(f"(e) {rid}: status {rec.status} {rec.completion}")
            continue
        # (g) deterministic results, and the tokens the journal recorded.
        result = rec.completion.result
        n = len(names)
        expect = expected_values(i, sc.seed, n)
        if result.get("values") != expect:
            violations.append(f"(g) {rid}: values {result.get('values')} != {expect}")
        if result.get("tokens") != [recorded.get((rid, name)) for name in names]:
            violations.append(f"(g) {rid}: result tokens {result.get('tokens')} != journal")
        # (f) event ids 1..N, valid AG-UI at every prefix and complete.
        if ids != list(range(1, len(ids) + 1)) or len(ids) != rec.last_event_id:
            violations.append(
                f"(f) {rid}: event ids {ids[:3]}…{ids[-3:]} vs last_event_id {rec.last_event_id}"
            )
        try:
            verify_prefixes(wire)
        except AGUIProtocolError as exc:
            violations.append(f"(f) {rid}: AG-UI verifier: {exc}")
        violations.extend(check_log_shape(sc, i, rid, wire, w, tally))
        digests[rid] = [event_digest(event) for event in wire]
        tally["events"] += len(ids)

    # R20: what a live subscriber was shown is in the final log, at the same id, unchanged.
    if sc.followed.exists():
        for line in sc.followed.read_text().splitlines():
            _, rid, event_id, digest = line.split()
            log = digests.get(rid, [])
            n = int(event_id)
            if not 1 <= n <= len(log) or log[n - 1] != digest:
                violations.append(
                    f"(R20) {rid}: a follower saw event {n} ({digest}), the log differs"
                )
            tally["followed_events_checked"] += 1

    tally["violations"] = len(violations)
    return violations, tally


def check_log_shape(
    sc: Scenario, i: int, rid: str, wire: list[dict[str, Any]], w: Witnesses, tally: Counter[str]
) -> list[str]:
    """R21: a step never starts again in the log unless the cut attempt was aborted first."""
    out: list[str] = []
    started: Counter[str] = Counter()
    aborted_since: dict[str, bool] = {}
    customs: Counter[str] = Counter()
    for event in wire:
        kind = event["type"]
        if kind == "STEP_STARTED":
            name = event["stepName"]
            if started[name] and not aborted_since.get(name):
                out.append(f"(f) {rid}: step {name} started again without perdure.attempt_aborted")
            started[name] += 1
            aborted_since[name] = False
        elif kind == "CUSTOM":
            customs[event["name"]] += 1
            if event["name"] == "perdure.attempt_aborted":
                for name in aborted_since:
                    aborted_since[name] = True
    tally["attempt_aborted_markers"] += customs["perdure.attempt_aborted"]
    for name, count in started.items():
        attempts = len(w.attempts.get((rid, name), []))
        if count > attempts:
            out.append(
                f"(f) {rid}: {count} STEP_STARTED for {name} but only {attempts} attempts ran"
            )
    if sc.mode == "kill":
        want = 1 if i % 3 == 0 else 0
        if customs["progress"] != want:
            out.append(
                f"(f) {rid}: journaled CUSTOM progress logged {customs['progress']} times, "
                f"want {want}"
            )
    return out


# -- calibration and schedules -----------------------------------------------------------

_calibrated: dict[tuple[int, str], float] = {}


def full_run_time(tmp: Path, n_runs: int, durability: str) -> float:
    """Wall time of one uncrashed run of the workload (cached); its result is audited too."""
    key = (n_runs, durability)
    if key not in _calibrated:
        sc = Scenario(
            tmp / f"calibrate-{n_runs}-{durability}", n_runs=n_runs, seed=1, durability=durability
        )
        _calibrated[key] = sc.finish()
        audit(sc)
    return _calibrated[key]


def run_kills(
    root: Path,
    *,
    seed: int,
    kills: int,
    durability: str,
    per_scenario: int = 3,
    n_runs: int = CI_RUNS,
    keep: bool = True,
) -> Counter[str]:
    """Land ``kills`` SIGKILLs over as many scenarios as it takes, auditing each one.

    A scenario is killed after ``uniform(0, T)`` again and again (at most
    ``per_scenario`` landed kills) until a launch outlives its delay and finishes on its
    own, or a last launch is let finish; then it is audited. A fresh scenario (new
    directory, new workload seed) starts while kills remain to be landed.
    """
    full = full_run_time(root.parent, n_runs, durability)
    rng = random.Random(seed)
    total: Counter[str] = Counter()
    number = 0
    while total["kills"] < kills:
        number += 1
        sc = Scenario(
            root / f"scenario-{number}",
            n_runs=n_runs,
            seed=seed * 100 + number,
            durability=durability,
        )
        landed, finished = 0, False
        while landed < per_scenario and total["kills"] + landed < kills:
            if not sc.kill_after(rng.uniform(0.0, full)):
                finished = True  # it outlived the delay: that launch was the clean finish
                break
            landed += 1
        if not finished:
            sc.finish()
        total += audit(sc)
        total["scenarios"] += 1
        if not keep:
            shutil.rmtree(sc.root, ignore_errors=True)
    return total


def report(record_property: Any, tally: Counter[str], label: str) -> None:
    record_property("crash_tally", dict(tally))
    print(f"\n[{label}] " + ", ".join(f"{k}={v}" for k, v in sorted(tally.items())))
