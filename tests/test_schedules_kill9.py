"""Exactly once per tick across ``kill -9`` (R25, R26): a real process, killed at fire time.

A child process opens a store with a minutely schedule and fires ticks as fast as
virtual time lets it (trio's MockClock: every tick is a real commit of a run, its
fire key and the schedule's cursor). It is killed with SIGKILL at a random moment,
which almost always lands in the middle of firing: between a tick's decision and its
commit, inside a group commit, while runs execute. Each relaunch starts a day later
on the virtual clock, so every open also catches up (``catchup="all"``, bounded) and
the kill can land in the catch-up wave too.

After every launch the store must hold, for each fire key, exactly one run of that
schedule and tick and no run created twice (``helpers.fires``); at the end a
recovering open finishes every run, each body's step is recorded once, and the
fired ticks have no duplicates.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trio
from helpers.fires import check_store_fires

import perdure
from perdure.storage import Store

CHILD = """
import sys
import trio
import perdure
from perdure.testing import MockClock, pin_wall_time

path, start = sys.argv[1], float(sys.argv[2])


async def main() -> None:
    pin_wall_time(start)
    rt = perdure.Runtime(path, durability="process")

    @rt.task("tick")
    async def tick(ctx: perdure.RunContext, inp: object) -> dict:
        value = await ctx.step("work", lambda: ctx.run.trigger.scheduled_at)
        return {"tick": value}

    rt.schedule("m", "* * * * *", target="task:tick", overlap="allow", catchup="all",
                catchup_bound=40)
    async with rt:
        print("open", flush=True)
        await trio.sleep(20 * 86400)
        print("done", flush=True)


trio.run(main, clock=MockClock(autojump_threshold=0))
"""

BASE = 1_790_000_000.0  # 2026-09-21T13:46:40Z: any instant works
DAY = 86_400.0


def _fired(path: Path) -> list[float]:
    store = Store(path, readonly=True)
    try:
        return sorted(at / 1000 for name, at, _ in store.iter_fires() if name == "m")
    finally:
        store.close()


async def test_kill9_at_fire_time_never_fires_a_tick_twice(tmp_path: Path) -> None:
    await _sweep(tmp_path, seed=1, launches=5)


@pytest.mark.soak
@pytest.mark.skipif(
    os.environ.get("PERDURE_SOAK") != "1", reason="soak: PERDURE_SOAK=1 (make soak)"
)
@pytest.mark.parametrize("seed", range(2, 7))
async def test_kill9_sweep(tmp_path: Path, seed: int) -> None:
    await _sweep(tmp_path, seed=seed, launches=20)


async def _sweep(tmp_path: Path, seed: int, launches: int) -> None:
    rng = random.Random(seed)
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    path = tmp_path / "data"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    fired_before = 0
    kills_while_firing = 0
    for launch in range(launches):
        start = BASE + launch * DAY
        proc = subprocess.Popen(
            [sys.executable, str(script), str(path), repr(start)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        time.sleep(rng.uniform(0.8, 2.5))
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]
        assert check_store_fires(path) == []
        fired = _fired(path)
        assert len(fired) == len(set(fired))
        if len(fired) > fired_before:
            kills_while_firing += 1
        fired_before = len(fired)
    assert kills_while_firing >= launches // 2 + 1, "the kills should land while ticks fire"
    # A last open recovers whatever the kills interrupted and lets every run finish.
    rt = perdure.Runtime(path, durability="process")

    @rt.task("tick")
    async def tick(ctx: perdure.RunContext, inp: object) -> dict:
        value = await ctx.step("work", lambda: ctx.run.trigger.scheduled_at)
        return {"tick": value}

    async with rt:  # not declared here: the schedule is inert, its runs are recovered
        for run in rt.list(status=["pending", "running"], limit=1000).runs:
            await rt.wait(run.id)
        info = rt.get_schedule("m")
        runs = []
        after = None
        while True:
            page = rt.list(owner=perdure.Project("schedule:m"), after=after, limit=1000)
            runs.extend(page.runs)
            if page.next_cursor is None:
                break
            after = page.next_cursor
    ticks = [run.trigger.scheduled_at for run in runs]
    assert len(ticks) == len(set(ticks)) == info.fired == len(_fired(path))
    assert all(run.status == "completed" for run in runs)
    assert all(
        run.completion and run.completion.result == {"tick": run.trigger.scheduled_at}
        for run in runs
    )
    await trio.lowlevel.checkpoint()
