"""Edges of user input found by trying the API as a new user (R30, R31, R38).

Infinite and NaN durations, "keep for ever" retention, retry policies, a run that fails
before its body ran, and the error of a body whose concurrent tasks all diverged.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

import perdure
from perdure.agui import event_to_json, verify_events

P = perdure.Project("p1")


def _runtime(path: Path, **options: Any) -> perdure.Runtime:
    rt = perdure.Runtime(path, durability="process", **options)

    @rt.workflow("w")
    async def w(ctx: perdure.RunContext, inp: dict) -> int:
        return 1

    return rt


async def _finish(rt: perdure.Runtime, n: int) -> list[str]:
    ids = []
    for _ in range(n):
        run = (await rt.start("workflow:w", {}, owner=P)).run
        await rt.wait(run.id)
        ids.append(run.id)
    return ids


async def test_infinite_retention_keeps_runs_and_odd_cutoffs_purge_nothing(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    rt = _runtime(tmp_path / "d", retention=perdure.Retention(completed=math.inf, interval=5))
    async with rt:
        ids = await _finish(rt, 3)
        await trio.sleep(60)  # a dozen background passes
        assert [r.id for r in rt.list(owner=P).runs] == ids
        for cutoff in (-math.inf, -1, 0):
            assert await rt.purge(before=cutoff, statuses=("completed",)) == 0
        for bad in (math.nan, "soon", True):
            with pytest.raises(perdure.InvalidInput):
                await rt.purge(before=bad, statuses=("completed",))
        assert [r.id for r in rt.list(owner=P).runs] == ids
        assert await rt.purge(before=1e300, statuses=("completed",)) == 3
        assert rt.list(owner=P).runs == []
    with pytest.raises(perdure.InvalidInput):
        perdure.Retention(interval=math.inf)
    assert perdure.Retention(failed=math.inf).failed is None


@pytest.mark.parametrize("timeout", [math.nan, math.inf, -1, 0, "10", 1e30, True])
def test_a_definition_timeout_is_checked_at_registration(tmp_path: Path, timeout: Any) -> None:
    rt = perdure.Runtime(tmp_path / "d")
    with pytest.raises(perdure.InvalidInput):

        @rt.task("bad", timeout=timeout)
        async def bad(ctx: perdure.RunContext, cfg: dict) -> int:
            return 1

    assert [t.target for t in rt.targets()] == []


@pytest.mark.parametrize(
    "options",
    [
        {"max_attempts": 0},
        {"max_attempts": 1.5},
        {"initial": math.inf},
        {"initial": math.nan},
        {"maximum": -1},
        {"jitter": 1},
        {"backoff": "sometimes"},
    ],
)
def test_retry_policies_refuse_unusable_values(options: dict[str, Any]) -> None:
    with pytest.raises(perdure.InvalidInput):
        perdure.RetryPolicy(**options)


async def test_a_pending_run_can_be_finalized_as_failed_with_a_valid_log(
    tmp_path: Path,
) -> None:
    """An engine finalizes a run whose actor crashed as failed, also while it was still
    pending: the change passes through running, so the log opens with RUN_STARTED (it
    used to be refused as pending -> failed, leaving the run pending for good)."""
    from perdure.runtime._lifecycle import finish

    rt = _runtime(tmp_path / "d", max_running=1)
    gate = trio.Event()

    @rt.workflow("hold")
    async def hold(ctx: perdure.RunContext, inp: dict) -> int:
        await ctx.step("block", gate.wait)
        return 1

    async with rt:
        await rt.start("workflow:hold", {}, owner=P)
        queued = rt.get((await rt.start("workflow:w", {}, owner=P)).run.id)
        assert queued.status == "pending" and queued.last_event_id == 0
        error = perdure.storage.ErrorInfo("INTERNAL_ERROR", "the actor broke")
        change = finish(queued, "failed", error=error, now=queued.created_at + 1)
        assert change.record.status == "failed"
        wire = [json.loads(event_to_json(event)) for event in change.events]
        assert [e["type"] for e in wire] == ["RUN_STARTED", "RUN_ERROR"]
        verify_events(wire)
        with pytest.raises(perdure.PerdureError):  # completing it is still refused
            finish(queued, "completed", result=1, now=queued.created_at + 1)
        gate.set()


def test_concurrent_divergence_is_recorded_as_non_determinism() -> None:
    from perdure.runtime._run_actor import _error_of

    group = ExceptionGroup(
        "Exceptions from Trio nursery",
        [perdure.NonDeterminismError("lane a"), perdure.NonDeterminismError("lane b")],
    )
    assert _error_of(group).code == "NON_DETERMINISM"
    mixed = ExceptionGroup("x", [ValueError("v"), ExceptionGroup("y", [group])])
    assert _error_of(mixed).code == "NON_DETERMINISM"
    plain = ExceptionGroup("x", [ValueError("v"), KeyError("k")])
    assert _error_of(plain).code == "UNHANDLED_EXCEPTION"


@pytest.mark.parametrize("key", ["a\ud800", "", "a\0b", "x" * 257, 5])
async def test_every_start_checks_an_idempotency_key_the_same_way(tmp_path: Path, key: Any) -> None:
    """A start, a batch and a schedule's trigger refuse the same bad keys with
    ``InvalidInput`` (a lone surrogate once escaped two of them as a raw
    ``UnicodeEncodeError``), and store nothing."""
    rt = _runtime(tmp_path / "d")

    @rt.task("t")
    async def t(ctx: perdure.JobContext, inp: dict) -> None:
        return None

    rt.schedule("s", "0 0 1 1 *", target="task:t", input={})
    async with rt:
        with pytest.raises(perdure.InvalidInput, match="idempotency_key"):
            await rt.start("workflow:w", {}, owner=P, idempotency_key=key)
        with pytest.raises(perdure.InvalidInput, match="idempotency_key"):
            await rt.start_batch("task:t", [{}], owner=P, idempotency_key=key)
        with pytest.raises(perdure.InvalidInput, match="idempotency_key"):
            await rt.trigger_schedule("s", idempotency_key=key)
        assert rt.list().runs == []
