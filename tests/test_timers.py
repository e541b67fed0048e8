"""Durable timers (R9) and run timeouts, in virtual time.

``ctx.sleep`` / ``ctx.sleep_until`` journal their due time and store a timer record, so
a sleep survives a restart and fires exactly once; the definition's ``timeout`` bounds
the whole run, sleeps included, and fails it with ``RUN_TIMEOUT``.

Every test here takes ``autojump_clock``: trio's MockClock jumps to the next deadline
whenever all tasks are blocked, so an hour's sleep costs no wall time.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio
from helpers.checks import assert_valid_log, wait_until
from helpers.defs import new_rt

import perdure
from perdure.storage import TimerRef
from perdure.testing import internals

P = perdure.Project("p1")

CALLS: Counter[str] = Counter()


@pytest.fixture(autouse=True)
def _reset() -> None:
    CALLS.clear()


def counted(name: str, value: Any = None) -> Any:
    async def fn() -> Any:
        CALLS[name] += 1
        return value

    return fn


# -- sleeping -------------------------------------------------------------------------------------


async def test_sleep_is_durable_and_journaled(data_dir: Path, autojump_clock: Any) -> None:
    rt = new_rt(data_dir, passivate_after=10_000)
    seen: dict[str, float] = {}

    @rt.workflow("nap")
    async def body(ctx: perdure.RunContext, inp: dict) -> dict:
        seen["before"] = ctx.now()
        seen["trio_before"] = trio.current_time()
        await ctx.sleep(3600)
        seen["after"] = ctx.now()
        seen["trio_after"] = trio.current_time()
        return {}

    async with rt:
        started = await rt.start("workflow:nap", {}, owner=P)
        await wait_until(lambda: len(internals(rt).store.journal(started.run.id)) == 1)
        # While it sleeps, the due time is journaled and a timer record is stored.
        entry = internals(rt).store.journal(started.run.id)[0]
        assert (entry.kind, entry.name) == ("sleep", "sleep")
        due = msgspec.msgpack.decode(entry.value)
        assert due == pytest.approx(seen["before"] + 3600, abs=1e-6)
        timers = internals(rt).store.timers()
        assert [(run_id) for _, run_id, _ in timers] == [started.run.id]
        assert timers[0].due == pytest.approx(due, abs=0.001)
        assert rt.get(started.run.id).status == "running"

        rec = await rt.wait(started.run.id)
        assert rec.status == "completed"
        assert seen["after"] >= due
        assert 3600 <= seen["trio_after"] - seen["trio_before"] < 3600.01
        # The timer record is gone once the sleep fired.
        assert internals(rt).store.timers() == []
        await assert_valid_log(rt, started.run.id)


async def test_sleep_zero_and_sleep_until_the_past_return_at_once(
    data_dir: Path, autojump_clock: Any
) -> None:
    rt = new_rt(data_dir)
    elapsed: list[float] = []

    @rt.workflow("past")
    async def body(ctx: perdure.RunContext, inp: dict) -> dict:
        for call in (
            lambda: ctx.sleep_until(ctx.now() - 100),
            lambda: ctx.sleep_until(0),
            lambda: ctx.sleep(0),
            lambda: ctx.sleep_until(ctx.now()),
        ):
            t0 = trio.current_time()
            await call()
            elapsed.append(trio.current_time() - t0)
        return {}

    async with rt:
        started = await rt.start("workflow:past", {}, owner=P)
        rec = await rt.wait(started.run.id)
        assert rec.status == "completed"
        assert elapsed == [0.0, 0.0, 0.0, 0.0]
        assert [e.kind for e in internals(rt).store.journal(started.run.id)] == ["sleep"] * 4
        assert internals(rt).store.timers() == []
        # Let the timer service see the past-due timers of the finished run before
        # closing (see test_timer_of_a_finished_run_due_at_shutdown for the race).
        await trio.sleep(1)


async def test_sleep_until_a_future_time(data_dir: Path, autojump_clock: Any) -> None:
    rt = new_rt(data_dir)
    seen: dict[str, float] = {}

    @rt.workflow("alarm")
    async def body(ctx: perdure.RunContext, inp: dict) -> dict:
        async def pick() -> float:  # clocks belong in steps: replay sees the same target
            return ctx.now() + 500.25

        target = await ctx.step("pick", pick)
        seen["target"] = target
        await ctx.sleep_until(target)
        seen["woke"] = ctx.now()
        return {}

    async with rt:
        started = await rt.start("workflow:alarm", {}, owner=P)
        assert (await rt.wait(started.run.id)).status == "completed"
        assert seen["target"] <= seen["woke"] < seen["target"] + 0.01


async def test_bad_sleeps_are_refused(data_dir: Path, autojump_clock: Any) -> None:
    rt = new_rt(data_dir)
    errors: list[str] = []

    @rt.workflow("bad")
    async def body(ctx: perdure.RunContext, inp: dict) -> dict:
        for call in (
            lambda: ctx.sleep(-1),
            lambda: ctx.sleep("10"),  # type: ignore[arg-type]
            lambda: ctx.sleep_until("tomorrow"),  # type: ignore[arg-type]
        ):
            try:
                await call()
            except perdure.InvalidInput as exc:
                errors.append(exc.code)
        return {}

    async with rt:
        started = await rt.start("workflow:bad", {}, owner=P)
        assert (await rt.wait(started.run.id)).status == "completed"
        assert errors == ["INVALID_INPUT"] * 3
        assert internals(rt).store.journal(started.run.id) == []


# -- sleeps across a restart ----------------------------------------------------------------------


def define_sleeper(rt: perdure.Runtime, wakes: list[float]) -> None:
    @rt.workflow("sleeper")
    async def body(ctx: perdure.RunContext, inp: dict) -> dict:
        CALLS["body"] += 1
        await ctx.step("before", counted("before", 1))
        await ctx.sleep(1000)

        async def after() -> int:
            CALLS["after"] += 1
            wakes.append(ctx.now())
            return 2

        await ctx.step("after", after)
        return {"ok": True}


async def test_sleep_across_restart_fires_once(data_dir: Path, autojump_clock: Any) -> None:
    wakes: list[float] = []
    t0 = trio.current_time()
    rt = new_rt(data_dir)
    define_sleeper(rt, wakes)
    async with rt:
        run_id = (await rt.start("workflow:sleeper", {}, owner=P)).run.id
        await wait_until(lambda: len(internals(rt).store.journal(run_id)) == 2, timeout=10)
        await trio.sleep(400)  # mid-sleep
        due = msgspec.msgpack.decode(internals(rt).store.journal(run_id)[1].value)
        assert CALLS["after"] == 0
        assert rt.get(run_id).status == "running"

    rt = new_rt(data_dir)
    define_sleeper(rt, wakes)
    async with rt:
        assert rt.recovered["running"] == 1
        rec = await rt.wait(run_id)
        assert rec.status == "completed"
        # Neither the sleep nor anything after it ran twice; nothing before it ran again.
        assert CALLS["before"] == 1 and CALLS["after"] == 1
        assert len(wakes) == 1 and wakes[0] >= due
        assert trio.current_time() - t0 >= 1000
        journal = internals(rt).store.journal(run_id)
        assert [e.kind for e in journal] == ["step", "sleep", "step"]
        assert internals(rt).store.timers() == []
        log = await assert_valid_log(rt, run_id)
        assert [e["stepName"] for e in log if e["type"] == "STEP_STARTED"] == ["before", "after"]


async def test_finished_sleep_is_not_slept_again_on_replay(
    data_dir: Path, autojump_clock: Any
) -> None:
    """A sleep followed by later journal entries already fired: replay skips it."""
    gate_open = False

    def define(rt: perdure.Runtime) -> None:
        @rt.workflow("napper")
        async def body(ctx: perdure.RunContext, inp: dict) -> dict:
            await ctx.sleep(600)
            await ctx.step("mark", counted("mark", 1))

            async def gate() -> str:
                CALLS["gate"] += 1
                if not gate_open:
                    await trio.sleep_forever()
                return "open"

            return {"gate": await ctx.step("gate", gate)}

    rt = new_rt(data_dir, passivate_after=10_000)
    define(rt)
    async with rt:
        run_id = (await rt.start("workflow:napper", {}, owner=P)).run.id
        await wait_until(lambda: CALLS["gate"] == 1, timeout=1000, step=1.0)
        assert [e.kind for e in internals(rt).store.journal(run_id)] == ["sleep", "step"]
    gate_open = True
    rt = new_rt(data_dir, passivate_after=10_000)
    define(rt)
    async with rt:
        t_reopen = trio.current_time()
        rec = await rt.wait(run_id)
        assert rec.status == "completed"
        assert trio.current_time() - t_reopen < 1.0
        assert CALLS["gate"] == 2 and CALLS["mark"] == 1
        assert [e.kind for e in internals(rt).store.journal(run_id)] == ["sleep", "step", "step"]


async def test_sleep_across_restart_waits_only_the_remaining_time(
    data_dir: Path, autojump_clock: Any
) -> None:
    wakes: list[float] = []
    t0 = trio.current_time()
    rt = new_rt(data_dir)
    define_sleeper(rt, wakes)
    async with rt:
        run_id = (await rt.start("workflow:sleeper", {}, owner=P)).run.id
        await wait_until(lambda: len(internals(rt).store.journal(run_id)) == 2, timeout=10)
        await trio.sleep(400)
    rt = new_rt(data_dir)
    define_sleeper(rt, wakes)
    async with rt:
        await rt.wait(run_id)
        # One 1000 s sleep, interrupted once: it ends 1000 virtual seconds after it began.
        assert trio.current_time() - t0 <= 1000 + 1, trio.current_time() - t0


# -- run timeout ----------------------------------------------------------------------------------


async def test_run_timeout_covers_sleeps(data_dir: Path, autojump_clock: Any) -> None:
    rt = new_rt(data_dir, passivate_after=10_000)

    @rt.workflow("slowpoke", timeout=10)
    async def body(ctx: perdure.RunContext, inp: dict) -> dict:
        await ctx.step("quick", counted("quick", 1))
        await ctx.sleep(100)
        await ctx.step("late", counted("late", 2))
        return {}

    async with rt:
        started = await rt.start("workflow:slowpoke", {}, owner=P)
        rec = await rt.wait(started.run.id)
        assert rec.status == "failed"
        assert rec.completion is not None and rec.completion.error is not None
        assert rec.completion.error.code == "RUN_TIMEOUT"
        assert rec.completion.error.detail == {"timeout": 10}
        assert rec.finished_at is not None and rec.started_at is not None
        assert rec.finished_at - rec.started_at == pytest.approx(10, abs=0.01)
        assert (CALLS["quick"], CALLS["late"]) == (1, 0)
        log = await assert_valid_log(rt, started.run.id)
        assert log[-1]["type"] == "RUN_ERROR" and log[-1]["code"] == "RUN_TIMEOUT"


async def test_run_timeout_cuts_a_running_step(data_dir: Path, autojump_clock: Any) -> None:
    rt = new_rt(data_dir)

    async def forever() -> None:
        CALLS["forever"] += 1
        await trio.sleep(1000)

    @rt.workflow("stuck", timeout=30, restart=perdure.RestartPolicy(max_restarts=5, period=60))
    async def body(ctx: perdure.RunContext, inp: dict) -> dict:
        await ctx.step("forever", forever, retry=perdure.RetryPolicy(max_attempts=10, initial=1))
        return {}

    async with rt:
        started = await rt.start("workflow:stuck", {}, owner=P)
        rec = await rt.wait(started.run.id)
        assert rec.completion is not None and rec.completion.error is not None
        assert rec.completion.error.code == "RUN_TIMEOUT"
        assert rec.finished_at is not None and rec.started_at is not None
        assert rec.finished_at - rec.started_at == pytest.approx(30, abs=0.01)
        assert CALLS["forever"] == 1  # the run timeout is not a retryable step failure
        assert rec.restarts == []  # nor restartable
        log = await assert_valid_log(rt, started.run.id)
        # The cut attempt's buffered events were never committed.
        assert [e["type"] for e in log] == ["RUN_STARTED", "RUN_ERROR"]


async def test_run_within_its_timeout_completes(data_dir: Path, autojump_clock: Any) -> None:
    rt = new_rt(data_dir)

    @rt.workflow("ontime", timeout=100)
    async def body(ctx: perdure.RunContext, inp: dict) -> dict:
        await ctx.sleep(99)
        return {"ok": True}

    async with rt:
        started = await rt.start("workflow:ontime", {}, owner=P)
        assert (await rt.wait(started.run.id)).status == "completed"


async def test_a_run_timeout_s_timer_goes_with_the_run_s_end(
    data_dir: Path, autojump_clock: Any
) -> None:
    """The commit that ends a run deletes its run timeout's stored timer, and the timer
    service forgets it: kept until due, every run that ended within its timeout would
    hold a stored timer and a heap entry for as long as the timeout."""
    from perdure.runtime._timers import _COMPACT_AT

    rt = new_rt(data_dir)

    @rt.workflow("quick", timeout=3600)
    async def body(ctx: perdure.RunContext, inp: dict) -> dict:
        await ctx.step("a", counted("a"))
        return {}

    async with rt:
        timers = internals(rt).timers
        for _ in range(2):
            await rt.wait((await rt.start("workflow:quick", {}, owner=P)).run.id)
        assert internals(rt).store.timers() == []
        # Lazily forgotten in memory; the heap is rebuilt once the forgotten are half.
        for _ in range(_COMPACT_AT):
            await rt.wait((await rt.start("workflow:quick", {}, owner=P)).run.id)
        assert len(timers) < _COMPACT_AT // 2
        assert internals(rt).store.timers() == []
        start = trio.current_time()
        await trio.sleep(7200)  # past every timeout: nothing fires for the ended runs
        assert trio.current_time() - start == 7200
        assert len(timers) == 0
    async with new_rt(data_dir) as again:
        assert len(internals(again).timers) == 0  # nothing stored to re-arm


async def test_the_timers_of_a_run_cancelled_mid_sleep_or_mid_wait_go_with_its_end(
    data_dir: Path, autojump_clock: Any
) -> None:
    """A run that ends before its timers fall due (cancelled in a sleep, in a retry
    backoff, in a wait with a deadline) deletes them with its end, and the service
    forgets them. A passivated waiter too: its waits' deadlines are in its record."""
    rt = new_rt(data_dir, passivate_after=60)

    @rt.workflow("nap")
    async def nap(ctx: perdure.RunContext, inp: dict) -> dict:
        await ctx.sleep(30)
        return {}

    @rt.workflow("waiter")
    async def waiter(ctx: perdure.RunContext, inp: dict) -> dict:
        await ctx.wait_for_event("go", timeout=3600)
        return {}

    async def flaky() -> None:
        raise RuntimeError("again")

    @rt.workflow("backoff")
    async def backoff(ctx: perdure.RunContext, inp: dict) -> dict:
        policy = perdure.RetryPolicy(max_attempts=3, initial=50, maximum=50)
        await ctx.step("s", flaky, retry=policy)
        return {}

    async with rt:
        engine = internals(rt)
        waiting = (await rt.start("workflow:waiter", {}, owner=P)).run.id
        await trio.sleep(100)  # past passivate_after: the waiter is passive
        assert len(engine.supervisor) == 0
        # Live ones: a sleep and a retry backoff shorter than passivate_after.
        live = [(await rt.start(f"workflow:{n}", {}, owner=P)).run.id for n in ("nap", "backoff")]
        await trio.sleep(1)
        assert len(engine.store.timers()) == 3
        for run_id in [waiting, *live]:
            assert (await rt.cancel(run_id)).cancelled
        assert engine.store.timers() == []
        assert len(engine.timers) == len(engine.timers._disarmed)  # forgotten, lazily
        start = trio.current_time()
        await trio.sleep(7200)  # nothing fires for the ended runs
        assert trio.current_time() - start == 7200 and len(engine.timers) == 0


async def test_timers_disarmed_are_skipped_and_the_heap_is_rebuilt_without_them() -> None:
    from perdure.runtime._timers import _COMPACT_AT, TimerService

    fired: list[str] = []
    clock = [0.0]
    service = TimerService(lambda: clock[0], lambda ref: fired.append(ref.name))
    refs = [TimerRef(1000 + i, "r", f"t{i}") for i in range(3 * _COMPACT_AT)]
    for ref in refs:
        service.arm(ref)
    for ref in refs[:_COMPACT_AT]:
        service.disarm(ref)
    assert len(service) == 3 * _COMPACT_AT  # not half of the heap yet: lazily
    for ref in refs[_COMPACT_AT : 2 * _COMPACT_AT]:
        service.disarm(ref)
    # Rebuilt without the disarmed once they were half of it (the rest stay lazily).
    assert len(service) < 2 * _COMPACT_AT
    service.disarm(refs[-1])
    clock[0] = 10_000.0
    async with trio.open_nursery() as nursery:
        nursery.start_soon(service.run)
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert fired == [ref.name for ref in refs[2 * _COMPACT_AT : -1]]  # in due order
    assert len(service) == 0


async def test_run_timeout_of_a_passivated_sleeper(data_dir: Path, autojump_clock: Any) -> None:
    rt = new_rt(data_dir, passivate_after=60)

    @rt.workflow("oversleeps", timeout=100)
    async def body(ctx: perdure.RunContext, inp: dict) -> dict:
        await ctx.sleep(3600)
        return {"ok": True}

    async with rt:
        started = await rt.start("workflow:oversleeps", {}, owner=P)
        await wait_until(lambda: internals(rt).supervisor.passivations == 1, timeout=10)
        assert len(internals(rt).supervisor) == 0
        rec = await rt.wait(started.run.id)
        assert rec.status == "failed", rec.completion
        assert rec.completion is not None and rec.completion.error is not None
        assert rec.completion.error.code == "RUN_TIMEOUT"
        assert rec.finished_at is not None and rec.started_at is not None
        assert rec.finished_at - rec.started_at == pytest.approx(100, abs=1)
        # Its deadline fired before its end disarmed it: nothing to remember (a ref
        # kept as disarmed would only wait for the next rebuild of the heap).
        assert not internals(rt).timers._disarmed
        assert [ref.name for ref in internals(rt).store.timers()] == ["sleep:0"]


async def test_run_timeout_of_a_passivated_sleeper_with_work_after(
    data_dir: Path, autojump_clock: Any
) -> None:
    """A step after the oversleep must not run: the run's time was up 3500 s earlier."""
    rt = new_rt(data_dir, passivate_after=60)

    @rt.workflow("oversleeps2", timeout=100)
    async def body(ctx: perdure.RunContext, inp: dict) -> dict:
        await ctx.sleep(3600)
        await ctx.step("after", counted("after"))
        return {"ok": True}

    async with rt:
        started = await rt.start("workflow:oversleeps2", {}, owner=P)
        rec = await rt.wait(started.run.id)
        assert rec.completion is not None and rec.completion.error is not None
        assert rec.completion.error.code == "RUN_TIMEOUT"
        assert CALLS["after"] == 0
        assert rec.finished_at is not None and rec.started_at is not None
        assert rec.finished_at - rec.started_at == pytest.approx(100, abs=1)


# -- a timer of a finished run, due just as the runtime closes ----------------------------------


async def test_timer_of_a_finished_run_due_at_shutdown(autojump_clock: Any) -> None:
    """Closing must never fail because a stale timer fired a moment before.

    Trio runs the woken tasks of one scheduling tick in random order, so the unlucky
    order (the close before the timer's clean-up commit) is hit about every other
    round; 24 rounds make a pass with the bug present a 1 in 16 million event.
    """
    for _ in range(24):
        rt = perdure.Runtime(None, durability="memory", passivate_after=10_000)

        @rt.workflow("nap")
        async def nap(ctx: perdure.RunContext, inp: dict) -> dict:
            await ctx.sleep(100)
            return {}

        fired = trio.Event()
        async with rt:
            on_due = internals(rt).timers._on_due

            def observed(ref: Any, on_due: Any = on_due, fired: trio.Event = fired) -> None:
                on_due(ref)
                fired.set()

            internals(rt).timers._on_due = observed  # type: ignore[method-assign]
            run_id = (await rt.start("workflow:nap", {}, owner=P)).run.id
            await trio.sleep(1)
            assert (await rt.cancel(run_id)).cancelled  # its end disarms its sleep timer
            # A timer its end did not know of (a crash's leftover, an older version's)
            # stays armed ... and comes due at 100 s: close right then.
            stale = TimerRef.at(run_id, rt.now() + 99, "stale")
            engine = internals(rt)
            await engine.writer.commit([engine.arm_timer(stale)])
            await fired.wait()
