"""Runtime options: the GIL switch interval, administration mode, unregistered targets."""

from __future__ import annotations

import gc
import sys
from pathlib import Path

import trio

import perdure
from perdure.testing import internals

P = perdure.Project("p1")


async def test_switch_interval_is_lowered_while_open_and_restored(tmp_path: Path) -> None:
    before = sys.getswitchinterval()
    rt = perdure.Runtime(tmp_path / "d", switch_interval=0.0005)
    async with rt:
        assert sys.getswitchinterval() == 0.0005
    assert sys.getswitchinterval() == before
    untouched = perdure.Runtime(tmp_path / "e", switch_interval=None)
    async with untouched:
        assert sys.getswitchinterval() == before


async def test_gc_threshold_is_raised_while_open_and_restored(tmp_path: Path) -> None:
    before = gc.get_threshold()
    rt = perdure.Runtime(tmp_path / "d", gc_threshold=(40_000, 15, 90))
    async with rt:
        assert gc.get_threshold() == (40_000, 15, 90)
    assert gc.get_threshold() == before
    async with perdure.Runtime(tmp_path / "e", gc_threshold=None):
        assert gc.get_threshold() == before


async def test_gc_threshold_adapts_to_what_young_passes_free(tmp_path: Path) -> None:
    """A young pass that frees almost nothing doubles the first threshold (up to 8x the
    configured one); one that frees a lot halves it back; close restores the user's."""
    before, callbacks = gc.get_threshold(), list(gc.callbacks)
    rt = perdure.Runtime(tmp_path / "d", gc_threshold=(40_000, 15, 90))
    async with rt:
        live = [[i] for i in range(50_000)]  # like runs in flight: young, but not garbage
        gc.collect(0)
        assert gc.get_threshold()[0] >= 80_000 and gc.get_threshold()[1:] == (15, 90)
        for _ in range(5):
            gc.collect(0)
        assert gc.get_threshold() == (320_000, 15, 90)  # the cap: 8x
        del live
        for _ in range(100_000):  # cyclic garbage: what the collector is for
            cycle: list[object] = []
            cycle.append(cycle)
        del cycle
        gc.collect(0)
        assert gc.get_threshold() == (160_000, 15, 90)
        for _ in range(3):
            for _ in range(100_000):
                cycle = []
                cycle.append(cycle)
            del cycle
            gc.collect(0)
        assert gc.get_threshold() == (40_000, 15, 90)  # never below the configured one
    assert gc.get_threshold() == before and gc.callbacks == callbacks


async def _interrupted_runs(path: Path) -> tuple[str, str]:
    """A running run (blocked in a step) and a waiting run, left by a closed runtime."""
    rt = perdure.Runtime(path)

    @rt.workflow("blocked")
    async def blocked(ctx: perdure.RunContext, inp: dict) -> None:
        await ctx.step("forever", trio.sleep_forever)

    @rt.workflow("waits")
    async def waits(ctx: perdure.RunContext, inp: dict) -> str:
        return str(await ctx.wait_for_event("go"))

    async with rt:
        a = (await rt.start("workflow:blocked", {}, owner=P)).run.id
        b = (await rt.start("workflow:waits", {}, owner=P)).run.id
        while rt.get(b).status != "waiting":
            await trio.sleep(0.01)
        await trio.sleep(0.05)  # the blocked run is inside its step
        assert rt.get(a).status == "running"
        return a, b


async def test_administration_mode_runs_nothing_and_cancels_without_definitions(
    tmp_path: Path,
) -> None:
    running, waiting = await _interrupted_runs(tmp_path / "d")
    # No definitions registered at all: nothing may run, yet cancel works.
    async with perdure.Runtime(tmp_path / "d", recover=False) as rt:
        assert len(internals(rt).supervisor) == 0
        before = rt.get(running)
        await trio.sleep(0.05)
        assert rt.get(running) == before  # not replayed, not woken
        result = await rt.cancel(waiting, "admin")
        assert result.cancelled and result.run.status == "cancelled"
        assert rt.get(running).status == "running"


async def test_unregistered_target_is_left_as_stored_at_recovery(tmp_path: Path) -> None:
    running, _ = await _interrupted_runs(tmp_path / "d")
    async with perdure.Runtime(tmp_path / "d") as rt:
        before = rt.get(running)
        await trio.sleep(0.05)
        after = rt.get(running)
        assert after.status == "running" and after.last_event_id == before.last_event_id
        assert internals(rt).supervisor.get(running) is None
