"""The deploy check (R37): every unfinished run replayed dry against changed code.

A store is written by "old code" (a runtime with one version of the bodies), then a
runtime with changed bodies checks it: in the same process once the old runtime is
closed, beside a live owner process through ``perdure check`` (exit codes, report
content), and on a backup. The check never runs a step function and writes nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import trio
from helpers.checks import waiting

import perdure
from perdure import ExternalEvent, RunCheck
from perdure.storage import Store

P = perdure.Project("p1")
GO = ExternalEvent(name="go", payload=None)
CALLS: Counter[str] = Counter()
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _clear() -> None:
    CALLS.clear()


async def counted(name: str) -> str:
    CALLS[name] += 1
    return name


def runtime(path: Path, version: str) -> perdure.Runtime:
    """The "order" workflow as each version of the code writes it."""
    rt = perdure.Runtime(path)

    @rt.workflow("order", version=int(version[0]))
    async def order(ctx: perdure.RunContext, inp: dict) -> dict:
        if version == "2-renamed":
            await ctx.step("reserve-v2", counted, "reserve-v2")
        else:
            await ctx.step("reserve", counted, "reserve")
        if version == "2-inserted":
            await ctx.step("fraud", counted, "fraud")  # a new step before the wait
        if version == "2-patched" and ctx.patched("fraud"):
            await ctx.step("fraud", counted, "fraud")
        if version != "2-no-wait":
            await ctx.wait_for_event("go")
        await ctx.step("ship", counted, "ship")
        return {"shipped": True}

    @rt.workflow("parent")
    async def parent(ctx: perdure.RunContext, inp: dict) -> dict:
        child = await ctx.start_child("workflow:order", {})
        return {"child": await child.result()}

    @rt.workflow("fanout")
    async def fanout(ctx: perdure.RunContext, inp: dict) -> dict:
        # Concurrent waits in sibling tasks: their order of replay is trio's choice.
        results: dict[str, Any] = {}

        async def one(name: str) -> None:
            results[name] = await ctx.wait_for_event(name)

        await ctx.step("before", counted, "before")
        async with trio.open_nursery() as nursery:
            for name in ("a", "b", "c"):
                nursery.start_soon(one, name)
        return results

    return rt


async def old_store(path: Path) -> dict[str, str]:
    """Runs in every unfinished state, written by version 1; returns their ids by role."""
    async with runtime(path, "1") as rt:
        await rt.start("workflow:order", {}, owner=P, run_id="waiting")
        await waiting(rt, "waiting")
        await rt.start("workflow:parent", {}, owner=P, run_id="parent")
        await waiting(rt, (await _child(rt, "parent")))
        await rt.start("workflow:fanout", {}, owner=P, run_id="fanout")
        await waiting(rt, "fanout", 3)
        await rt.resume("fanout", ExternalEvent(name="b", payload=2))
        await waiting(rt, "fanout", 2)
        await rt.start("workflow:order", {}, owner=P, run_id="done")
        await waiting(rt, "done")
        await rt.resume("done", GO)
        await rt.wait("done")
    return {"waiting": "waiting", "parent": "parent", "fanout": "fanout"}


async def _child(rt: perdure.Runtime, parent: str) -> str:
    for _ in range(200):
        page = rt.list(parent_id=parent)
        if page.runs:
            return page.runs[0].id
        await trio.sleep(0.01)
    raise AssertionError("no child")


def by_id(runs: list[RunCheck]) -> dict[str, RunCheck]:
    return {run.run_id: run for run in runs}


# -- in process -------------------------------------------------------------------------------


async def test_check_on_the_same_code_is_clean(data_dir: Path) -> None:
    await old_store(data_dir)
    calls_before = dict(CALLS)
    report = await runtime(data_dir, "1").check()  # a closed runtime: read-only view
    assert report.ok, report.failing
    runs = by_id(report.runs)
    # Every unfinished run, and only those (the completed one is not checked).
    assert set(runs) == {"waiting", "parent", "fanout", (await _stored_child(data_dir))}
    assert runs["waiting"].stopped_at == {"kind": "wait", "name": "event:go#1"}
    assert runs["parent"].stopped_at is not None
    assert runs["parent"].stopped_at["kind"] == "child_result"
    assert runs["fanout"].stopped_at is not None
    assert runs["fanout"].stopped_at["kind"] == "wait"
    assert runs["waiting"].version == runs["waiting"].code_version == 1
    assert dict(CALLS) == calls_before, "the check ran a step function"


async def _stored_child(path: Path) -> str:
    store = Store(path, readonly=True)
    try:
        return store.children("parent")[0]
    finally:
        store.close()


async def test_a_renamed_step_is_a_mismatch(data_dir: Path) -> None:
    await old_store(data_dir)
    report = await runtime(data_dir, "2-renamed").check()
    assert not report.ok
    found = by_id(report.runs)["waiting"]
    assert found.outcome == "mismatch"
    assert found.recorded == {"kind": "step", "name": "reserve", "position": 0}
    assert found.new == {"kind": "step", "name": "reserve-v2"}
    assert found.version == 1 and found.code_version == 2
    assert CALLS["reserve-v2"] == 0


async def test_a_step_inserted_before_the_wait_a_run_is_parked_on_is_a_mismatch(
    data_dir: Path,
) -> None:
    """Live replay would not raise here: it would run the new step while the run shows
    an interrupt. The check sees the run parked on a wait the body did not reach."""
    await old_store(data_dir)
    report = await runtime(data_dir, "2-inserted").check()
    found = by_id(report.runs)["waiting"]
    assert found.outcome == "mismatch"
    assert found.recorded == {"kind": "wait", "name": "event:go#1"}
    assert found.new == {"kind": "step", "name": "fraud"}
    assert CALLS["fraud"] == 0


async def test_the_same_change_behind_a_patch_is_clean(data_dir: Path) -> None:
    await old_store(data_dir)
    report = await runtime(data_dir, "2-patched").check()
    assert report.ok, report.failing
    # And the deploy then really works: the old run keeps the old path.
    async with runtime(data_dir, "2-patched") as rt:
        await rt.resume("waiting", GO)
        assert (await rt.wait("waiting")).status == "completed"
    assert CALLS["fraud"] == 0


async def test_a_body_that_no_longer_waits_is_a_mismatch(data_dir: Path) -> None:
    await old_store(data_dir)
    found = by_id((await runtime(data_dir, "2-no-wait").check()).runs)["waiting"]
    assert found.outcome == "mismatch"
    assert found.new == {"kind": "step", "name": "ship"}
    assert found.recorded == {"kind": "wait", "name": "event:go#1"}


async def test_unknown_target_error_and_timeout(data_dir: Path) -> None:
    await old_store(data_dir)
    rt = perdure.Runtime(data_dir)

    @rt.workflow("order")
    async def order(ctx: perdure.RunContext, inp: int) -> None:  # the input type changed
        await ctx.step("reserve", counted, "reserve")

    @rt.workflow("fanout")
    async def fanout(ctx: perdure.RunContext, inp: dict) -> None:
        await trio.sleep(30)  # blocks outside any journaled call

    report = await rt.check(timeout=0.2)
    runs = by_id(report.runs)
    assert runs["parent"].outcome == "unknown_target"
    assert runs["waiting"].outcome == "error"
    assert "ValidationError" in runs["waiting"].message
    assert runs["fanout"].outcome == "timeout"
    assert len(report.failing) == len(report.runs)


async def test_check_inside_an_open_runtime_and_on_a_pending_run(data_dir: Path) -> None:
    rt = runtime(data_dir, "1")
    async with rt:
        await rt.start("workflow:order", {}, owner=P, run_id="w")
        await waiting(rt, "w")
        report = await rt.check()
        assert [r.run_id for r in report.runs] == ["w"] and report.ok
        assert (await rt.check(data_dir)).runs == report.runs  # its own directory
    # A pending run (admitted later) replays from an empty journal.
    rt2 = perdure.Runtime(data_dir, max_running=1)
    rt2.workflow("order")(_blocking)
    async with rt2:
        await rt2.start("workflow:order", {}, owner=P, run_id="busy")
        await rt2.start("workflow:order", {}, owner=P, run_id="queued")
        assert rt2.get("queued").status == "pending"
        runs = by_id((await rt2.check()).runs)
        assert runs["queued"].ok and runs["queued"].stopped_at == {"kind": "step", "name": "x"}
        assert runs["busy"].ok


async def _blocking(ctx: perdure.RunContext, inp: dict) -> None:
    await ctx.step("x", trio.sleep_forever)


# -- beside a live process, through the command line -----------------------------------------

APP = """
import os, trio, perdure

VERSION = os.environ["APP_VERSION"]
rt = perdure.Runtime(os.environ["APP_DIR"])

async def step(name: str) -> str:
    if os.environ.get("APP_ROLE") == "check":
        raise SystemExit("the check ran a step function")
    return name

@rt.workflow("order", version=int(VERSION[0]))
async def order(ctx: perdure.RunContext, inp: dict) -> dict:
    await ctx.step("reserve", step, "reserve")
    if VERSION == "2":
        await ctx.step("fraud", step, "fraud")
    await ctx.wait_for_event("go")
    return {}

async def main() -> None:
    async with rt:
        for i in range(3):
            await rt.start("workflow:order", {}, owner=perdure.Project("p"), run_id=f"r{i}")
        while any(rt.get(f"r{i}").status != "waiting" for i in range(3)):
            await trio.sleep(0.01)
        print("ready", flush=True)
        await trio.sleep_forever()

if __name__ == "__main__":
    trio.run(main)
"""


def _env(tmp_path: Path, version: str, role: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        APP_VERSION=version,
        APP_DIR=str(tmp_path / "data"),
        APP_ROLE=role,
        PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]),
    )
    return env


def _perdure(tmp_path: Path, version: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "perdure.cli", *args],
        cwd=tmp_path,
        env=_env(tmp_path, version, "check"),
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def live_owner(tmp_path: Path) -> Any:
    (tmp_path / "app.py").write_text(textwrap.dedent(APP))
    proc = subprocess.Popen(
        [sys.executable, "app.py"],
        cwd=tmp_path,
        env=_env(tmp_path, "1", "owner"),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        yield proc
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.usefixtures("live_owner")
def test_cli_check_beside_the_live_owner(tmp_path: Path) -> None:
    clean = _perdure(tmp_path, "1", "check", "--app", "app:rt")
    assert clean.returncode == 0, clean.stderr
    assert "checked 3 unfinished runs" in clean.stdout and "3 ok" in clean.stdout

    changed = _perdure(tmp_path, "2", "check", "--app", "app:rt")
    assert changed.returncode == 1, changed.stderr
    for run_id in ("r0", "r1", "r2"):
        assert run_id in changed.stdout
    assert "recorded wait 'event:go#1'; the code now asks for step 'fraud'" in changed.stdout
    assert "1 -> 2" in changed.stdout and "3 would fail" in changed.stdout

    as_json = _perdure(tmp_path, "2", "check", "--app", "app:rt", "--json")
    assert as_json.returncode == 1
    report = json.loads(as_json.stdout)
    assert report["ok"] is False
    assert [r["outcome"] for r in report["runs"]] == ["mismatch"] * 3
    assert report["runs"][0]["new"] == {"kind": "step", "name": "fraud"}


def test_cli_check_usage_errors(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(textwrap.dedent(APP))
    missing = _perdure(tmp_path, "1", "check", "--app", "nope:rt")
    assert missing.returncode == 2 and "cannot import" in missing.stderr
    no_store = _perdure(tmp_path, "1", "check", "--app", "app:rt")
    assert no_store.returncode == 2 and "no perdure store" in no_store.stderr


async def test_bodies_that_log_and_cancel_children_check_clean(data_dir: Path) -> None:
    """``ctx.log`` (in the body and in steps) replays against the run's stored entries,
    and a body that cancels a child stops the check there instead of failing it."""

    def build() -> perdure.Runtime:
        rt = perdure.Runtime(data_dir)

        @rt.workflow("logs")
        async def logs(ctx: perdure.RunContext, inp: dict) -> None:
            ctx.log("before", n=1)
            await ctx.step("s", lambda: ctx.log("inside") or 1)
            ctx.log("after")
            await ctx.wait_for_event("go")
            ctx.log("resumed")

        @rt.workflow("child")
        async def child(ctx: perdure.RunContext, inp: dict) -> None:
            await ctx.wait_for_event("never")

        @rt.workflow("canceller")
        async def canceller(ctx: perdure.RunContext, inp: dict) -> None:
            handle = await ctx.start_child("workflow:child", {})
            await handle.cancel("no longer needed")
            await ctx.wait_for_event("go")

        return rt

    async with build() as rt:
        await rt.start("workflow:logs", {}, owner=P, run_id="logs")
        await rt.start("workflow:canceller", {}, owner=P, run_id="canceller")
        await waiting(rt, "logs")
        await waiting(rt, "canceller")
        assert [e.message for e in rt.logs("logs").entries] == ["before", "inside", "after"]
        [child] = rt.list(parent_id="canceller").runs
        assert rt.get(child.id).status == "cancelled"
    report = await build().check()
    runs = by_id(report.runs)
    for run_id in ("logs", "canceller"):
        assert runs[run_id].outcome == "ok", runs[run_id]
        assert runs[run_id].stopped_at == {"kind": "wait", "name": "event:go#1"}
    assert report.ok, report.failing


def test_the_check_engine_has_every_method_of_the_engine_port() -> None:
    """A replay reaches the engine through EnginePort's methods: one the check engine
    lacks turns every run whose body reaches it into a false ``error``."""
    from perdure.runtime._check import _CheckEngine
    from perdure.runtime._engine_port import EnginePort

    methods = [n for n, v in vars(EnginePort).items() if callable(v) and not n.startswith("_")]
    assert len(methods) >= 10
    assert [n for n in methods if not callable(getattr(_CheckEngine, n, None))] == []
