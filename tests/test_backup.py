"""``perdure backup`` and ``perdure export`` (R38).

The backup test copies a store while a real second process writes to it (continuous
3-step load, waiting runs), then checks that the copy is one consistent instant of the
original (every run's log in the copy is a prefix of its log in the original, every
completed run identical), that it is compacted, and that it opens and recovers like
the original: a runtime on the copy finishes every run that was in flight.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from helpers.checks import check_store_logs

import perdure
from perdure.cli import main
from perdure.storage import Store
from perdure.testing import verify_events

REPO = Path(__file__).resolve().parent.parent

APP = """
import os, sys, trio, perdure

rt = perdure.Runtime(os.environ["APP_DIR"], durability="sync")
P = perdure.Project("p")

async def value(v):
    return v

@rt.workflow("three")
async def three(ctx: perdure.RunContext, inp: dict) -> dict:
    for name in ("a", "b", "c"):
        await ctx.custom("progress", {"step": name})
        await ctx.step(name, value, name)
    return {"n": inp["n"]}

@rt.workflow("waiter")
async def waiter(ctx: perdure.RunContext, inp: dict) -> dict:
    await ctx.step("before", value, 1)
    got = await ctx.wait_for_event("go")
    await ctx.step("after", value, 2)
    return {"got": got}

async def load() -> None:
    async with rt:
        for i in range(5):
            await rt.start("workflow:waiter", {}, owner=P, run_id=f"w{i}")
        slots = trio.Semaphore(50)

        async def one(n):
            try:
                await rt.wait((await rt.start("workflow:three", {"n": n}, owner=P)).run.id)
            finally:
                slots.release()

        print("ready", flush=True)
        async with trio.open_nursery() as nursery:
            n = 0
            while True:
                await slots.acquire()
                nursery.start_soon(one, n)
                n += 1

async def finish() -> None:
    async with rt:
        for rec in rt.list(status="waiting").runs:
            await rt.resume(rec.id, perdure.ExternalEvent(name="go", payload="late"))
        for status in ("running", "waiting", "pending"):
            for rec in rt.list(status=status, limit=1000).runs:
                await rt.wait(rec.id)
        print("DONE", len(rt.list(status="completed", limit=1000).runs), flush=True)

if __name__ == "__main__":
    trio.run(load if sys.argv[1] == "load" else finish)
"""


def _env(directory: Path) -> dict[str, str]:
    env = dict(os.environ, APP_DIR=str(directory))
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return env


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "perdure.cli", *args],
        cwd=tmp_path,
        env=_env(tmp_path / "data"),
        capture_output=True,
        text=True,
        timeout=120,
    )


def _logs(path: Path) -> dict[str, tuple[str, list[bytes]]]:
    store = Store(path, readonly=True)
    try:
        return {
            rec.id: (rec.status, [raw for _, raw in store.events(rec.id)])
            for rec in store.iter_runs()
        }
    finally:
        store.close()


def test_backup_under_load_opens_and_recovers(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(textwrap.dedent(APP))
    data, copy = tmp_path / "data", tmp_path / "copy"
    owner = subprocess.Popen(
        [sys.executable, "app.py", "load"],
        cwd=tmp_path,
        env=_env(data),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert owner.stdout is not None
        assert owner.stdout.readline().strip() == "ready"
        time.sleep(1.0)  # well under way: runs at every stage
        done = _cli(tmp_path, "backup", "--dir", "data", "copy", "--json")
        assert done.returncode == 0, done.stderr
        info = json.loads(done.stdout)
        time.sleep(0.3)  # the owner goes on after the copy
    finally:
        owner.kill()
        owner.wait()
    assert sorted(os.listdir(copy)) == ["data.mdb"]
    assert info["runs"] > 50 and info["bytes"] <= info["source_bytes"]

    original, copied = _logs(data), _logs(copy)
    assert len(copied) == info["runs"]
    assert set(copied) <= set(original)
    in_flight = 0
    for run_id, (status, events) in copied.items():
        later_status, later_events = original[run_id]
        # One instant of the original: each log a prefix of what the owner went on to write.
        assert later_events[: len(events)] == events, run_id
        if status == "completed":
            assert later_events == events and later_status == "completed"
        else:
            in_flight += 1
    assert in_flight >= 5  # the waiters, at least
    assert check_store_logs(copy) == []
    # The deploy check works on a backup too (the same code: every run replays cleanly).
    checked = _cli(tmp_path, "check", "--app", "app:rt", "--dir", "copy", "--json")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    report = json.loads(checked.stdout)
    assert report["ok"] and len(report["runs"]) == in_flight

    # The copy opens like the original: a runtime on it recovers and finishes everything.
    finish = subprocess.run(
        [sys.executable, "app.py", "finish"],
        cwd=tmp_path,
        env=_env(copy),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert finish.returncode == 0 and "DONE" in finish.stdout, finish.stderr
    recovered = _logs(copy)
    assert set(recovered) == set(copied)
    assert all(status == "completed" for status, _ in recovered.values())
    assert check_store_logs(copy) == []


def _main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """The command line, in this process (the store is closed: nothing else has it open)."""
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


async def test_backup_and_export_of_a_closed_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = _main(capsys, "backup", "--dir", "data", "out")
    assert code == 2 and "no perdure store" in err
    rt = perdure.Runtime(tmp_path / "data")

    @rt.workflow("w")
    async def w(ctx: perdure.RunContext, inp: dict) -> dict:
        await ctx.custom("hello", inp)
        return inp

    async with rt:
        started = await rt.start("workflow:w", {"x": 1}, owner=perdure.Project("p"))
        await rt.wait(started.run.id)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("mine")
    (tmp_path / "file").write_text("mine")
    (tmp_path / "empty").mkdir()
    for target in ("full", "file", "no/such/parent", "data/bk", "data", "./data/../data"):
        code, _, err = _main(capsys, "backup", "--dir", "data", target)
        assert code == 2 and "INVALID_INPUT" in err, err
    assert (tmp_path / "full" / "x").read_text() == "mine"
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == [
        "data.mdb",
        "lock.mdb",
        "perdure.lock",
    ]
    code, _, err = _main(capsys, "backup", "--dir", "data", "/proc/x")
    assert code == 2 and "error:" in err and "Traceback" not in err, err
    code, out, err = _main(capsys, "backup", "--dir", "data", "empty")
    assert code == 0 and "1 runs" in out, err
    async with perdure.Runtime(tmp_path / "empty") as copy:
        assert copy.get(started.run.id).status == "completed"

    # export: the run, then its events as AG-UI wire JSON, one per line.
    code, exported, err = _main(capsys, "export", started.run.id, "--dir", "data")
    assert code == 0, err
    lines = [json.loads(line) for line in exported.splitlines()]
    assert lines[0]["run"]["id"] == started.run.id and lines[0]["run"]["status"] == "completed"
    assert [line["event_id"] for line in lines[1:]] == list(range(1, len(lines)))
    events = [line["event"] for line in lines[1:]]
    verify_events(events)
    assert [e["type"] for e in events] == ["RUN_STARTED", "CUSTOM", "RUN_FINISHED"]
    assert events[1]["name"] == "hello" and events[1]["value"] == {"x": 1}
    out_file = tmp_path / "run.jsonl"
    assert _main(capsys, "export", started.run.id, "--dir", "data", "--out", str(out_file))[0] == 0
    assert out_file.read_text() == exported
    code, _, err = _main(capsys, "export", "nope", "--dir", "data")
    assert code == 2 and "RUN_NOT_FOUND" in err


async def test_a_backup_drops_the_pages_a_purge_freed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rt = perdure.Runtime(tmp_path / "data", durability="process")

    @rt.workflow("w")
    async def w(ctx: perdure.RunContext, inp: dict) -> dict:
        await ctx.custom("blob", {"pad": "x" * 2000})
        return {}

    async with rt:
        for _ in range(300):
            await rt.wait((await rt.start("workflow:w", {}, owner=perdure.Project("p"))).run.id)
        assert await rt.purge() == 300
    code, out, _ = _main(
        capsys, "backup", "--dir", str(tmp_path / "data"), str(tmp_path / "copy"), "--json"
    )
    info = json.loads(out)
    assert code == 0 and info["runs"] == 0
    assert info["bytes"] * 5 < info["source_bytes"], info
