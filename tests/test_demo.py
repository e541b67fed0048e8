"""``perdure demo``: every section's claims, the commands it prints, the directory rule.

The demo checks its own claims; these tests check them again from the outside: the
store is read back through a second Runtime and the CLI, the crash section's witness
file is audited here, and every command the demo prints is run as printed.
"""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import trio
from rich.console import Console

import perdure
from perdure import _demo
from perdure._demo import _directory
from perdure._demo._definitions import (
    INGEST_STEPS,
    ITEMS,
    REMINDER_EVERY,
    REMINDER_TIMES,
    SHIPMENTS,
    TREE_SIZE,
)
from perdure._demo._sections import all_runs
from perdure.cli import main

REPO = Path(__file__).resolve().parent.parent
SMALL = _demo.Sizes(runs=60, concurrency=20, agents=8, trees=2, timers=4, crash_runs=12)
SMALL_FLAGS = [
    "--runs", "60", "--concurrency", "20", "--agents", "8", "--trees", "2",
    "--timers", "4", "--crash-runs", "12", "--durability", "process",
]  # fmt: skip


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PERDURE_DIR", None)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _demo_run(directory: Path, witness: Path | None = None, **options: Any) -> tuple[int, str]:
    out = io.StringIO()
    code = _demo.run_demo(
        directory,
        sizes=SMALL,
        durability="process",
        console=Console(file=out, width=200, color_system=None),
        witness=witness,
        **options,
    )
    return code, out.getvalue()


def _store(directory: Path) -> dict[str, Any]:
    """Every run and every log of the store, read through a Runtime in admin mode."""

    async def read() -> dict[str, Any]:
        async with perdure.Runtime(directory, recover=False, durability="process") as rt:
            runs = all_runs(rt)
            logs = {
                r.id: [item.to_wire() async for item in rt.events(r.id, follow=False)] for r in runs
            }
            return {"runs": runs, "logs": logs}

    return trio.run(read)


def _table_rows(out: str, title: str) -> list[list[str]]:
    """The body rows of the rich table printed under ``title``."""
    lines = out[out.index(title) :].splitlines()[1:]
    rows = []
    for line in lines:
        if line.startswith("└"):
            break
        if line.startswith("│"):
            rows.append([cell.strip() for cell in line.strip("│").split("│")])
    return rows


def _commands(out: str) -> list[str]:
    tail = out[out.index("Inspect the data it left behind") :].splitlines()[1:]
    return [line.strip() for line in tail if line.startswith("  ")]


# -- the whole demo ----------------------------------------------------------------------------


def test_demo_sections_hold_and_printed_commands_work(tmp_path: Path) -> None:
    directory = tmp_path / "demo"
    witness = tmp_path / "witness.txt"
    code, out = _demo_run(directory, witness)
    assert code == 0, out
    for title in (
        "1. Throughput", "2. Waits and signals", "3. Run trees", "4. Durable timers",
        "5. Crash recovery", "6. AG-UI log", "Summary",
    ):  # fmt: skip
        assert title in out
    assert "FAILED" not in out
    assert re.search(r"OK: all \d+ checks held", out)
    checks = _table_rows(out, "Checks")
    assert len(checks) >= 20 and all(row[-1] == "OK" for row in checks if row[-1]), checks

    store = _store(directory)
    runs: list[perdure.RunRecord] = store["runs"]
    logs: dict[str, list[dict[str, Any]]] = store["logs"]
    by_target: dict[str, list[perdure.RunRecord]] = {}
    for r in runs:
        by_target.setdefault(r.target, []).append(r)

    # Summary: the printed table is what rt.list says, and is this demo's runs.
    counts = Counter((r.kind, r.status) for r in runs)
    rows = {row[0]: row[1:] for row in _table_rows(out, "Runs in the store (rt.list)")}
    header = ["completed", "cancelled"]
    for kind in ("agent", "workflow", "job"):
        assert rows[kind] == [f"{counts[(kind, s)]:,}" for s in header] + [
            f"{sum(n for (k, _), n in counts.items() if k == kind):,}"
        ]
    assert len(runs) == SMALL.total_runs()

    # 1. throughput: the mix completed.
    mix = [r for t in ("agent:assistant", "workflow:pipeline", "task:resize") for r in by_target[t]]
    assert len(mix) == SMALL.runs and {r.status for r in mix} == {"completed"}

    # 2. signals: every agent paused on both tool calls, then on an approval; every
    # order with number % 4 == 2 was declined by bob, the rest approved by ann.
    agents = by_target["agent:concierge"]
    assert len(agents) == SMALL.agents
    for r in agents:
        assert r.status == "completed" and r.completion is not None
        order = r.completion.result["order"]
        want = ("declined", "bob") if order % 4 == 2 else ("issued", "ann")
        assert (r.completion.result["refund"], r.completion.result["by"]) == want
        interrupts = [
            [i["reason"] for i in e["outcome"]["interrupts"]]
            for e in logs[r.id]
            if e["type"] == "RUN_FINISHED" and e.get("outcome", {}).get("type") == "interrupt"
        ]
        assert interrupts[0] == ["tool_call", "tool_call"] and interrupts[-1] == ["confirmation"]
        results = [e["toolCallId"] for e in logs[r.id] if e["type"] == "TOOL_CALL_RESULT"]
        assert sorted(results) == ["call_check_stock", "call_lookup_order"]

    # 3. trees: completed trees of TREE_SIZE runs, and one cancelled whole, leaves first.
    roots = by_target["workflow:order"]
    assert len(roots) == SMALL.trees + 1
    held = [r for r in roots if r.status == "cancelled"]
    assert len(held) == 1
    for root in roots:
        tree = [r for r in runs if r.root_id == root.id]
        assert len(tree) == TREE_SIZE
        assert {r.status for r in tree} == {root.status}
        if root.status == "completed":
            assert root.completion is not None
            packs = [r for r in tree if r.target == "task:pack"]
            assert root.completion.result["items"] == len(packs) == SHIPMENTS * ITEMS
    tree = {r.id: r for r in runs if r.root_id == held[0].id}
    for r in tree.values():
        if r.parent_id is not None:
            assert (r.finished_at or 0) <= (tree[r.parent_id].finished_at or 0)

    # 4. timers: each reminder slept REMINDER_TIMES times and logged each firing once.
    reminders = by_target["workflow:reminder"]
    assert len(reminders) == SMALL.timers
    for r in reminders:
        assert r.status == "completed"
        fired = [e for e in logs[r.id] if e["type"] == "CUSTOM" and e["name"] == "reminder"]
        assert [e["value"]["n"] for e in fired] == list(range(1, REMINDER_TIMES + 1))
        assert (r.finished_at or 0) - (r.started_at or 0) >= REMINDER_EVERY * REMINDER_TIMES

    # 5. crash: audit the witness file here. The worker started every run and was killed
    # before it finished; every step was acknowledged, and none ran after that.
    ingest = by_target["workflow:ingest"]
    assert len(ingest) == SMALL.crash_runs and {r.status for r in ingest} == {"completed"}
    lines = [line.split() for line in witness.read_text().splitlines()]
    started = [line for line in lines if line[0] == "STARTED"]
    assert len(started) == 1 and not any(line[0] == "DONE" for line in lines)
    worker = started[0][2]
    first_ack: dict[tuple[str, str], int] = {}
    pids: Counter[str] = Counter()
    for index, line in enumerate(lines):
        key = (line[1], line[2]) if len(line) == 4 else None
        if line[0] == "ACK" and key is not None:
            first_ack.setdefault(key, index)
        elif line[0] == "EFFECT" and key is not None:
            assert key not in first_ack, f"step {key} ran again after its acknowledgement"
            pids[line[3]] += 1
    assert len(first_ack) == SMALL.crash_runs * len(INGEST_STEPS)
    assert pids[worker] > 0 and pids[str(os.getpid())] > 0  # the kill landed mid-run
    assert set(pids) == {worker, str(os.getpid())}
    in_flight = re.search(r"in flight at the kill\s*│\s*([\d,]+) runs", out)
    assert in_flight is not None and int(in_flight.group(1)) > 0

    # The printed commands work exactly as printed.
    commands = _commands(out)
    assert len(commands) >= 5
    assert any(" runs list " in c for c in commands)
    assert any(" runs show " in c for c in commands)
    assert any(" runs events " in c for c in commands)
    for command in commands:
        done = subprocess.run(
            shlex.split(command), capture_output=True, text=True, env=_env(), timeout=60
        )
        assert done.returncode == 0, (command, done.stderr)
        assert done.stdout.strip(), command

    # --keep adds a second demo's runs; its own checks allow for the earlier ones.
    code, out = _demo_run(directory, keep=True)
    assert code == 0, out
    assert len(_store(directory)["runs"]) == 2 * SMALL.total_runs()


# -- the data directory ------------------------------------------------------------------------


def _make_store(directory: Path) -> set[str]:
    async def fill() -> set[str]:
        rt = perdure.Runtime(directory, durability="process")

        @rt.workflow("precious")
        async def precious(ctx: perdure.RunContext, inp: Any) -> str:
            return "keep me"

        async with rt:
            ids = set()
            for _ in range(3):
                started = await rt.start("workflow:precious", None, owner=perdure.Project("p"))
                ids.add((await rt.wait(started.run.id)).id)
            return ids

    return trio.run(fill)


def _ids(directory: Path, capsys: pytest.CaptureFixture[str]) -> set[str]:
    code, out, err = _run(
        ["runs", "list", "--dir", str(directory), "--json", "--limit", "1000"], capsys
    )
    assert code == 0, err
    return {r["id"] for r in json.loads(out)["runs"]}


def test_demo_never_wipes_an_existing_store_without_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = tmp_path / "store"
    before = _make_store(directory)
    code, _, err = _run(["demo", "--dir", str(directory), *SMALL_FLAGS], capsys)
    assert code == 2
    assert err.startswith("error: DIRECTORY_NOT_EMPTY: ")
    assert "3 runs" in err
    assert _ids(directory, capsys) == before  # nothing was touched

    # The message says what to type; typed as is, the --force line wipes and reruns.
    force = [line.split("#")[0].strip() for line in err.splitlines() if "--force" in line]
    assert len(force) == 1 and "--keep" in err
    assert f"--dir {shlex.quote(str(directory))}" in force[0]
    done = subprocess.run(
        shlex.split(force[0]), capture_output=True, text=True, env=_env(), timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    after = _ids(directory, capsys)
    assert not after & before and len(after) == SMALL.total_runs()


def test_demo_force_refuses_a_store_another_process_owns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = tmp_path / "store"
    before = _make_store(directory)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys, trio, perdure
                async def main():
                    async with perdure.Runtime({str(directory)!r}, durability="process"):
                        print("open", flush=True)
                        await trio.sleep(60)
                trio.run(main)
                """
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        code, _, err = _run(["demo", "--dir", str(directory), "--force", *SMALL_FLAGS], capsys)
        assert code == 2 and err.startswith("error: DIRECTORY_LOCKED: "), err
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert _ids(directory, capsys) == before


def test_demo_never_touches_a_foreign_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    for extra in ([], ["--force"], ["--keep"]):
        code, _, err = _run(["demo", "--dir", str(tmp_path), *extra, *SMALL_FLAGS], capsys)
        assert code == 2 and err.startswith("error: FOREIGN_DIRECTORY: ")
    assert (tmp_path / "precious.txt").read_text() == "keep me"
    code, _, err = _run(["demo", "--dir", str(tmp_path), "--force", "--keep"], capsys)
    assert code == 2 and "not allowed with argument" in err


def test_perdure_command_is_what_the_user_typed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = tmp_path / "venv" / "bin" / "perdure"
    script.parent.mkdir(parents=True)
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(sys, "argv", ["venv/bin/perdure", "demo"])
    assert _directory.perdure_command() == "venv/bin/perdure"  # as in `make demo`
    monkeypatch.setenv("PATH", str(script.parent))
    monkeypatch.setattr(sys, "argv", [str(script), "demo"])
    assert _directory.perdure_command() == "perdure"  # found on PATH (an active venv)
    monkeypatch.setattr(sys, "argv", ["/some/pytest"])
    assert _directory.perdure_command() == f"{shlex.quote(sys.executable)} -m perdure.cli"


# -- the driver (shared with bench/throughput.py) ----------------------------------------------


def test_drive_runs_the_mix_with_bounded_concurrency() -> None:
    rt = perdure.Runtime(None, durability="memory")
    _demo.register_demo(rt)
    peak = 0

    async def go() -> _demo.DriveResult:
        async with rt:

            def seen(_: perdure.RunRecord) -> None:
                nonlocal peak
                peak = max(peak, len(all_runs(rt, status=["pending", "running"])))

            return await _demo.drive(rt, _demo.demo_job, 30, 7, on_done=seen)

    t0 = time.perf_counter()
    result = trio.run(go)
    assert result.elapsed <= time.perf_counter() - t0
    assert result.runs == 30 and sum(result.by_kind_status.values()) == 30
    assert set(result.by_kind_status) == {
        ("agent", "completed"),
        ("workflow", "completed"),
        ("job", "completed"),
    }
    assert result.events == 10 * (6 + 5 + 2)  # agent, workflow, job logs
    assert result.records > 0 and result.txns > 0 and result.runs_per_s > 0
    assert peak <= 7
