"""Passivation (R14): an idle run needs no memory.

A run that will sleep at least ``passivate_after`` seconds is passivated at once (its
actor stopped, its state only in LMDB) and its durable timer re-activates it; a run
blocked on a signal is passivated after ``passivate_after`` seconds idle; beyond
``max_live_actors`` the least recently idle actors are evicted (LRU). A re-activated
run replays its journal: nothing recorded runs again.

All tests run in virtual time (``autojump_clock``).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import trio
from helpers.checks import assert_valid_log, wait_until
from helpers.defs import new_rt

import perdure
from perdure import ExternalEvent
from perdure.testing import internals

P = perdure.Project("p1")

CALLS: Counter[str] = Counter()


@pytest.fixture(autouse=True)
def _reset() -> None:
    CALLS.clear()


def define_sleeper(rt: perdure.Runtime, wakes: dict[str, float] | None = None) -> None:
    @rt.workflow("sleeper")
    async def body(ctx: perdure.RunContext, inp: dict) -> dict:
        CALLS[f"body:{ctx.run_id}"] += 1

        async def pre() -> float:
            CALLS[f"pre:{ctx.run_id}"] += 1
            return trio.current_time()

        async def post() -> float:
            CALLS[f"post:{ctx.run_id}"] += 1
            if wakes is not None:
                wakes[ctx.run_id] = trio.current_time()
            return trio.current_time()

        began = await ctx.step("pre", pre)
        await ctx.sleep(inp["sleep"])
        woke = await ctx.step("post", post)
        return {"slept": woke - began}


# -- long sleeps ------------------------------------------------------------------------------


async def test_long_sleep_passivates_and_the_timer_wakes_it(
    data_dir: Path, autojump_clock: Any
) -> None:
    rt = new_rt(data_dir, passivate_after=60)
    define_sleeper(rt)
    async with rt:
        t0 = trio.current_time()
        run_id = (await rt.start("workflow:sleeper", {"sleep": 120}, owner=P)).run.id
        await wait_until(
            lambda: (
                internals(rt).supervisor.passivations == 1 and len(internals(rt).supervisor) == 0
            )
        )
        # Passivated at once, not after passivate_after.
        assert trio.current_time() - t0 < 1
        assert internals(rt).supervisor.get(run_id) is None
        rec = rt.get(run_id)
        assert rec.status == "running"
        assert [run for _, run, _ in internals(rt).store.timers()] == [run_id]

        rec = await rt.wait(run_id)
        assert rec.status == "completed"
        assert rec.completion is not None
        assert 120 <= rec.completion.result["slept"] < 120.1
        # Re-activated by replay: the body ran twice, each step once.
        assert CALLS[f"body:{run_id}"] == 2
        assert CALLS[f"pre:{run_id}"] == 1 and CALLS[f"post:{run_id}"] == 1
        assert internals(rt).supervisor.passivations == 1
        await wait_until(lambda: len(internals(rt).supervisor) == 0)
        assert internals(rt).store.timers() == []
        log = await assert_valid_log(rt, run_id)
        assert [e["stepName"] for e in log if e["type"] == "STEP_STARTED"] == ["pre", "post"]


async def test_short_sleep_stays_live(data_dir: Path, autojump_clock: Any) -> None:
    rt = new_rt(data_dir, passivate_after=60)
    define_sleeper(rt)
    async with rt:
        run_id = (await rt.start("workflow:sleeper", {"sleep": 30}, owner=P)).run.id
        await trio.sleep(10)
        assert (
            len(internals(rt).supervisor) == 1 and internals(rt).supervisor.get(run_id) is not None
        )
        rec = await rt.wait(run_id)
        assert rec.status == "completed"
        assert internals(rt).supervisor.passivations == 0
        assert CALLS[f"body:{run_id}"] == 1


async def test_passivated_sleeper_survives_a_restart(data_dir: Path, autojump_clock: Any) -> None:
    rt = new_rt(data_dir, passivate_after=60)
    define_sleeper(rt)
    async with rt:
        run_id = (await rt.start("workflow:sleeper", {"sleep": 300}, owner=P)).run.id
        await wait_until(
            lambda: (
                len(internals(rt).supervisor) == 0 and internals(rt).supervisor.passivations == 1
            )
        )
        await trio.sleep(100)
    rt = new_rt(data_dir, passivate_after=60)
    define_sleeper(rt)
    async with rt:
        assert rt.recovered["running"] == 1
        rec = await rt.wait(run_id)
        assert rec.status == "completed"
        assert CALLS[f"pre:{run_id}"] == 1 and CALLS[f"post:{run_id}"] == 1
        assert internals(rt).store.timers() == []


async def test_passivated_sleeper_can_be_cancelled(data_dir: Path, autojump_clock: Any) -> None:
    rt = new_rt(data_dir, passivate_after=60)
    define_sleeper(rt)
    async with rt:
        run_id = (await rt.start("workflow:sleeper", {"sleep": 3600}, owner=P)).run.id
        await wait_until(
            lambda: (
                len(internals(rt).supervisor) == 0 and internals(rt).supervisor.passivations == 1
            )
        )
        result = await rt.cancel(run_id, reason="user")
        assert result.cancelled
        rec = await rt.wait(run_id)
        assert rec.status == "cancelled"
        await trio.sleep(4000)  # its timer comes due later: it must not wake the run
        assert CALLS[f"post:{run_id}"] == 0
        assert rt.get(run_id).status == "cancelled"
        await assert_valid_log(rt, run_id)


# -- waits on signals -------------------------------------------------------------------------


async def test_signal_wait_passivates_after_idle(data_dir: Path, autojump_clock: Any) -> None:
    rt = new_rt(data_dir, passivate_after=60)

    @rt.workflow("waiter")
    async def body(ctx: perdure.RunContext, inp: dict) -> dict:
        CALLS["body"] += 1

        async def pre() -> int:
            CALLS["pre"] += 1
            return 1

        await ctx.step("pre", pre)
        return {"got": await ctx.wait_for_event("go")}

    async with rt:
        t0 = trio.current_time()
        run_id = (await rt.start("workflow:waiter", {}, owner=P)).run.id
        await wait_until(lambda: rt.get(run_id).status == "waiting")
        await trio.sleep(30)
        assert len(internals(rt).supervisor) == 1 and internals(rt).supervisor.passivations == 0
        await wait_until(lambda: len(internals(rt).supervisor) == 0, timeout=100, step=1)
        assert 60 <= trio.current_time() - t0 <= 62
        assert internals(rt).supervisor.passivations == 1
        assert rt.get(run_id).status == "waiting"
        await rt.resume(run_id, ExternalEvent(name="go", payload={"x": 1}))
        rec = await rt.wait(run_id)
        assert rec.status == "completed"
        assert rec.completion is not None and rec.completion.result == {"got": {"x": 1}}
        assert CALLS["pre"] == 1
        assert CALLS["body"] == 2  # re-activated by replay
        await assert_valid_log(rt, run_id)


# -- LRU eviction beyond max_live_actors -----------------------------------------------------------


async def test_lru_eviction_of_many_sleepers(data_dir: Path, autojump_clock: Any) -> None:
    wakes: dict[str, float] = {}
    rt = new_rt(data_dir, passivate_after=10_000, max_live_actors=3)
    define_sleeper(rt, wakes)
    async with rt:
        t0 = trio.current_time()
        runs = []
        for i in range(12):
            runs.append((await rt.start("workflow:sleeper", {"sleep": 30 + i}, owner=P)).run.id)
            # Asleep before the next one starts: trio shuffles the order of tasks that
            # are runnable together, so only this makes the idle order the start order.
            await trio.sleep(0.01)
        await trio.sleep(5)  # everyone is asleep now
        assert all(CALLS[f"pre:{r}"] == 1 for r in runs)
        assert len(internals(rt).supervisor) <= 3
        assert internals(rt).supervisor.passivations >= 9
        live = {actor.actor_id for actor in internals(rt).supervisor}
        assert live <= set(runs[-3:])  # the least recently idle went first
        for run_id in runs:
            rec = await rt.wait(run_id)
            assert rec.status == "completed", (run_id, rec.completion)
        for i, run_id in enumerate(runs):
            # Each woke on its own due time, once; nothing before the sleep ran again.
            assert CALLS[f"pre:{run_id}"] == 1 and CALLS[f"post:{run_id}"] == 1
            assert 30 + i <= wakes[run_id] - t0 <= 30 + i + 0.5
        assert internals(rt).store.timers() == []
        for run_id in runs:
            await assert_valid_log(rt, run_id)


async def test_lru_eviction_during_a_retry_backoff(data_dir: Path, autojump_clock: Any) -> None:
    rt = new_rt(data_dir, max_live_actors=1)
    policy = perdure.RetryPolicy(max_attempts=3, backoff="fixed", initial=10.0, jitter=0.0)

    @rt.workflow("retrier")
    async def body(ctx: perdure.RunContext, inp: dict) -> dict:
        async def flaky() -> int:
            CALLS[ctx.run_id] += 1
            if CALLS[ctx.run_id] == 1:
                raise ConnectionError("first attempt fails")
            return CALLS[ctx.run_id]

        return {"attempts": await ctx.step("call", flaky, retry=policy)}

    async with rt:
        runs = [(await rt.start("workflow:retrier", {}, owner=P)).run.id for _ in range(3)]
        with trio.move_on_after(1000):
            for run_id in runs:
                await rt.wait(run_id)
        assert [rt.get(r).status for r in runs] == ["completed"] * 3
        assert [CALLS[r] for r in runs] == [2, 2, 2]
