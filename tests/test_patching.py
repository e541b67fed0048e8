"""Patching running code (R37): ``ctx.patched`` / ``ctx.deprecate_patch`` and versions.

Each test plays a deploy: a store is written by one version of a body ("old code"),
the runtime closes, and a runtime with changed code opens the same directory. Runs
that passed the patched point before the patch existed keep the old branch; runs that
reach it under the patched code take the new one; the decision is journaled and never
flips, across replays, passivation and restarts.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
from helpers.checks import assert_valid_log, waiting

import perdure
from perdure import ExternalEvent, InvalidInput
from perdure.storage import Store
from perdure.testing import internals

P = perdure.Project("p1")
GO = ExternalEvent(name="go", payload=None)

Body = Callable[[perdure.RunContext, dict], Any]


def runtime(path: Path, body: Body, **options: Any) -> perdure.Runtime:
    rt = perdure.Runtime(path, **options)
    rt.workflow("w")(body)
    return rt


async def value(v: Any) -> Any:
    return v


def journal(where: Path | perdure.Runtime, run_id: str) -> list[tuple[str, str]]:
    """The stored journal of a run (kind, name), from a closed directory or an open runtime."""
    if isinstance(where, perdure.Runtime):
        return [(e.kind, e.name) for e in internals(where).store.journal(run_id)]
    store = Store(where, readonly=True)
    try:
        return [(entry.kind, entry.name) for entry in store.journal(run_id)]
    finally:
        store.close()


# -- bodies: one workflow in four deploys -------------------------------------------------------

SEEN: list[tuple[str, bool]] = []


async def v1(ctx: perdure.RunContext, inp: dict) -> dict:
    """Before the patch."""
    await ctx.step("a", value, 1)
    await ctx.wait_for_event("go")
    return {"path": "old"}


async def v2(ctx: perdure.RunContext, inp: dict) -> dict:
    """The patch: a new step before the wait, on the new branch only."""
    await ctx.step("a", value, 1)
    on = ctx.patched("extra")
    SEEN.append((ctx.run_id, on))
    if on:
        await ctx.step("extra", value, 2)
    await ctx.wait_for_event("go")
    assert ctx.patched("extra") is on  # the same answer for the rest of the run
    return {"path": "new" if on else "old"}


async def v3(ctx: perdure.RunContext, inp: dict) -> dict:
    """Clean-up phase: the old branch is gone."""
    await ctx.step("a", value, 1)
    ctx.deprecate_patch("extra")
    await ctx.step("extra", value, 2)
    await ctx.wait_for_event("go")
    return {"path": "new"}


async def v4(ctx: perdure.RunContext, inp: dict) -> dict:
    """The patch call removed entirely."""
    await ctx.step("a", value, 1)
    await ctx.step("extra", value, 2)
    await ctx.wait_for_event("go")
    return {"path": "new"}


@pytest.fixture(autouse=True)
def _clear() -> None:
    SEEN.clear()


async def start_waiting(rt: perdure.Runtime, run_id: str) -> None:
    await rt.start("workflow:w", {}, owner=P, run_id=run_id)
    await waiting(rt, run_id)


async def finish(rt: perdure.Runtime, run_id: str) -> dict:
    await rt.resume(run_id, GO)
    rec = await rt.wait(run_id)
    assert rec.status == "completed", rec.completion
    await assert_valid_log(rt, run_id)
    assert rec.completion is not None
    result: dict = rec.completion.result
    return result


# -- patched ------------------------------------------------------------------------------------


async def test_a_run_past_the_patch_point_keeps_the_old_branch(data_dir: Path) -> None:
    async with runtime(data_dir, v1) as rt:
        await start_waiting(rt, "old")
    async with runtime(data_dir, v2) as rt:
        assert await finish(rt, "old") == {"path": "old"}
    # Waiting on a signal, the run had passed every line before its wait: False, and
    # nothing was recorded for the decision.
    assert SEEN == [("old", False)]
    assert journal(data_dir, "old") == [("step", "a"), ("signal", "event:go#1")]


async def test_a_new_run_takes_the_patch_and_records_it(data_dir: Path) -> None:
    async with runtime(data_dir, v2) as rt:
        await start_waiting(rt, "new")
        assert journal(rt, "new") == [("step", "a"), ("patch", "extra"), ("step", "extra")]
    async with runtime(data_dir, v2) as rt:  # a restart: the replay finds the marker
        assert await finish(rt, "new") == {"path": "new"}
    assert SEEN == [("new", True), ("new", True)]


async def test_a_run_not_yet_at_the_patch_point_takes_it(data_dir: Path) -> None:
    """A run that has not reached the patched point when the code changes takes the new
    branch when it gets there (like a run started under the new code)."""
    gate = trio.Event()

    async def v1_blocking(ctx: perdure.RunContext, inp: dict) -> dict:
        await ctx.step("a", gate.wait)  # the run is inside its first step at the deploy
        await ctx.wait_for_event("go")
        return {"path": "old"}

    async with runtime(data_dir, v1_blocking) as rt:
        await rt.start("workflow:w", {}, owner=P, run_id="early")
        await trio.sleep(0.05)
        assert rt.get("early").status == "running"
    async with runtime(data_dir, v2) as rt:
        await waiting(rt, "early")
        assert journal(rt, "early") == [("step", "a"), ("patch", "extra"), ("step", "extra")]
    async with runtime(data_dir, v2) as rt:
        assert await finish(rt, "early") == {"path": "new"}
    assert SEEN == [("early", True), ("early", True)]


async def test_patched_across_passivation(data_dir: Path, autojump_clock: Any) -> None:
    async with runtime(data_dir, v1) as rt:
        await start_waiting(rt, "old")
    async with runtime(data_dir, v2, passivate_after=5.0) as rt:
        await start_waiting(rt, "new")
        supervisor = internals(rt).supervisor
        await trio.sleep(6.0)
        assert supervisor.get("new") is None, "the waiting run was not passivated"
        assert await finish(rt, "old") == {"path": "old"}
        assert await finish(rt, "new") == {"path": "new"}
    # old: decided False once (at the replay its signal caused); new: True at the first
    # execution and again at the replay after passivation.
    assert SEEN == [("new", True), ("old", False), ("new", True)]


async def test_patched_is_decided_once_per_run_and_journaled_with_the_next_commit(
    data_dir: Path,
) -> None:
    calls: list[bool] = []

    async def body(ctx: perdure.RunContext, inp: dict) -> dict:
        for _ in range(3):
            calls.append(ctx.patched("p"))
        calls.append(ctx.patched("q"))
        await ctx.step("s", value, 1)
        return {}

    async with runtime(data_dir, body) as rt:
        await rt.start("workflow:w", {}, owner=P, run_id="r")
        assert (await rt.wait("r")).status == "completed"
    assert calls == [True, True, True, True]
    # Two markers, one per patch id, committed with the step (no commit of their own).
    assert journal(data_dir, "r") == [("patch", "p"), ("patch", "q"), ("step", "s")]


async def test_a_body_restart_replays_the_decision(data_dir: Path, autojump_clock: Any) -> None:
    """Supervision (R18) re-runs the body from its journal: same decision."""
    decisions: list[bool] = []

    async def flaky(ctx: perdure.RunContext, inp: dict) -> dict:
        decisions.append(ctx.patched("p"))
        await ctx.step("s", value, 1)
        if len(decisions) == 1:
            raise RuntimeError("first attempt fails")
        return {}

    rt = perdure.Runtime(data_dir)
    rt.workflow("w", restart=perdure.RestartPolicy(max_restarts=2, backoff=0.1))(flaky)
    async with rt:
        await rt.start("workflow:w", {}, owner=P, run_id="r")
        assert (await rt.wait("r")).status == "completed"
        await assert_valid_log(rt, "r")
    assert decisions == [True, True]


async def test_patched_refuses_bad_ids_and_calls_inside_a_step(data_dir: Path) -> None:
    errors: list[str] = []

    async def body(ctx: perdure.RunContext, inp: dict) -> dict:
        for bad in ("", "x" * 201, 3):
            try:
                ctx.patched(bad)  # type: ignore[arg-type]
            except InvalidInput as exc:
                errors.append(exc.code)

        async def inside() -> int:
            try:
                ctx.patched("p")
            except InvalidInput:
                errors.append("step")
            return 1

        await ctx.step("s", inside)
        return {}

    async with runtime(data_dir, body) as rt:
        await rt.start("workflow:w", {}, owner=P, run_id="r")
        assert (await rt.wait("r")).status == "completed"
    assert errors == ["INVALID_INPUT"] * 3 + ["step"]


# -- deprecate_patch ----------------------------------------------------------------------------


async def test_deprecate_flow(data_dir: Path) -> None:
    """patched -> deprecate_patch -> nothing, with runs alive across every deploy."""
    async with runtime(data_dir, v2) as rt:  # phase 1: patched
        await start_waiting(rt, "b")  # takes the patch
    async with runtime(data_dir, v3) as rt:  # phase 2: deprecate_patch
        await start_waiting(rt, "c")
        assert journal(rt, "c") == [("step", "a"), ("patch", "extra"), ("step", "extra")]
        await start_waiting(rt, "d")
        assert await finish(rt, "b") == {"path": "new"}  # its marker consumed
    async with runtime(data_dir, v2) as rt:  # a rollback to phase 1 is safe for c
        assert await finish(rt, "c") == {"path": "new"}
    async with runtime(data_dir, v4) as rt:  # phase 3: the call is gone
        assert await finish(rt, "d") == {"path": "new"}  # its marker is skipped
        await start_waiting(rt, "e")
        assert await finish(rt, "e") == {"path": "new"}
    assert journal(data_dir, "e") == [("step", "a"), ("step", "extra"), ("signal", "event:go#1")]


async def test_deprecate_patch_on_a_run_without_the_marker_records_nothing(
    data_dir: Path,
) -> None:
    async def v3_quiet(ctx: perdure.RunContext, inp: dict) -> dict:
        await ctx.step("a", value, 1)
        ctx.deprecate_patch("extra")
        await ctx.wait_for_event("go")
        return {}

    async with runtime(data_dir, v1) as rt:
        await start_waiting(rt, "old")
    async with runtime(data_dir, v3_quiet) as rt:
        await finish(rt, "old")
    assert journal(data_dir, "old") == [("step", "a"), ("signal", "event:go#1")]


# -- versions -----------------------------------------------------------------------------------


async def test_runs_record_their_definition_version(data_dir: Path) -> None:
    rt = perdure.Runtime(data_dir)
    rt.workflow("w", version=3)(v1)
    rt.task("t")(v1)
    assert {t.target: t.version for t in rt.targets()} == {"workflow:w": 3, "task:t": None}
    async with rt:
        started = await rt.start("workflow:w", {}, owner=P)
        assert started.run.version == 3
        assert rt.get(started.run.id).version == 3
        job = await rt.start("task:t", {}, owner=P)
        assert job.run.version is None
    for bad in (-1, "2", True, 1.5):
        with pytest.raises(InvalidInput):
            perdure.Runtime(data_dir).workflow("x", version=bad)(v1)  # type: ignore[arg-type]


async def test_a_running_run_with_entries_past_the_point_keeps_the_old_branch(
    data_dir: Path,
) -> None:
    gate = trio.Event()

    async def old(ctx: perdure.RunContext, inp: dict) -> dict:
        await ctx.step("a", value, 1)
        await ctx.step("b", gate.wait)  # in flight at the deploy
        return {}

    async def new(ctx: perdure.RunContext, inp: dict) -> dict:
        on = ctx.patched("pre")
        SEEN.append((ctx.run_id, on))
        if on:
            await ctx.step("pre", value, 0)
        await ctx.step("a", value, 1)
        await ctx.step("b", value, 2)
        return {"on": on}

    async with runtime(data_dir, old) as rt:
        await rt.start("workflow:w", {}, owner=P, run_id="r")
        await trio.sleep(0.05)
        assert journal(rt, "r") == [("step", "a")]
    async with runtime(data_dir, new) as rt:
        rec = await rt.wait("r")
        assert rec.completion is not None and rec.completion.result == {"on": False}
    assert SEEN == [("r", False)]


async def test_an_unasked_marker_before_a_retried_step_is_skipped(
    data_dir: Path, autojump_clock: Any
) -> None:
    """The retry loop peeks at the journal: a marker in front of a retry entry is skipped."""
    attempts: list[int] = []

    async def flaky() -> int:
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("first attempt")
        return 7

    async def v1(ctx: perdure.RunContext, inp: dict) -> dict:
        ctx.patched("p")
        got = await ctx.step("s", flaky, retry=perdure.RetryPolicy(max_attempts=3, initial=1))
        await ctx.wait_for_event("go")
        return {"got": got}

    async def v2(ctx: perdure.RunContext, inp: dict) -> dict:  # the patched() call is gone
        got = await ctx.step("s", flaky, retry=perdure.RetryPolicy(max_attempts=3, initial=1))
        await ctx.wait_for_event("go")
        return {"got": got}

    async with runtime(data_dir, v1) as rt:
        await start_waiting(rt, "r")
        assert journal(rt, "r") == [("patch", "p"), ("retry", "s"), ("step", "s")]
    async with runtime(data_dir, v2) as rt:
        assert await finish(rt, "r") == {"got": 7}
    assert len(attempts) == 2  # the recorded step did not run again
