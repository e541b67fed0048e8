"""``max_running`` bounds the top-level bodies executing at once, on every path.

A body holds a slot while it executes; parked on a durable wait or sleep it holds none,
and it takes one again before it goes on, whatever woke it: a start, a resume, a
timer, a restart or recovery. Each test counts how many bodies are past their
admission point at once (``peak``) and fails if it ever exceeds the cap.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import trio
from helpers.checks import wait_until
from helpers.defs import new_rt

import perdure

P = perdure.Project("p1")


class Bodies:
    """How many bodies execute at once, and the highest that number ever was."""

    def __init__(self) -> None:
        self.now = 0
        self.peak = 0
        self.gates: dict[str, trio.Event] = {}

    def gate(self, name: str) -> trio.Event:
        return self.gates.setdefault(name, trio.Event())

    async def work(self, gate: str) -> None:
        self.now += 1
        self.peak = max(self.peak, self.now)
        try:
            await self.gate(gate).wait()
        finally:
            self.now -= 1


def register(rt: perdure.Runtime, bodies: Bodies) -> None:
    @rt.workflow("gated")
    async def gated(ctx: perdure.RunContext, inp: dict) -> dict:
        await bodies.work(inp["gate"])
        return {}

    @rt.workflow("approve-then-work")
    async def approve_then_work(ctx: perdure.RunContext, inp: dict) -> dict:
        await ctx.wait_for_approval("go")
        await bodies.work(inp["gate"])
        return {}

    @rt.workflow("expire-then-work")
    async def expire_then_work(ctx: perdure.RunContext, inp: dict) -> dict:
        with contextlib.suppress(perdure.WaitExpired):
            await ctx.wait_for_event("go", timeout=30)
        await bodies.work(inp["gate"])
        return {}

    @rt.workflow("sleep-then-work")
    async def sleep_then_work(ctx: perdure.RunContext, inp: dict) -> dict:
        await ctx.sleep(30)
        await bodies.work(inp["gate"])
        return {}


async def test_a_waiting_run_holds_no_slot(data_dir: Path, autojump_clock: Any) -> None:
    """Waiting (not passivated: passivate_after is huge) frees the slot for a pending run."""
    bodies = Bodies()
    rt = new_rt(data_dir, max_running=1, passivate_after=10_000)
    register(rt, bodies)
    async with rt:
        a = (await rt.start("workflow:approve-then-work", {"gate": "a"}, owner=P)).run.id
        await wait_until(lambda: rt.get(a).status == "waiting")
        b = (await rt.start("workflow:gated", {"gate": "b"}, owner=P)).run.id
        assert rt.get(b).status == "running"
        assert rt.stats().running == 1


async def test_a_resumed_run_waits_for_a_slot(data_dir: Path, autojump_clock: Any) -> None:
    bodies = Bodies()
    rt = new_rt(data_dir, max_running=1, passivate_after=10_000)
    register(rt, bodies)
    async with rt:
        a = (await rt.start("workflow:approve-then-work", {"gate": "a"}, owner=P)).run.id
        await wait_until(lambda: rt.get(a).status == "waiting")
        b = (await rt.start("workflow:gated", {"gate": "b"}, owner=P)).run.id
        await wait_until(lambda: bodies.now == 1)
        await rt.resume(a, perdure.ApprovalDecision(key="go", approved=True))
        await trio.sleep(5)
        assert bodies.now == 1  # a's signal is stored, its body waits for b's slot
        bodies.gate("b").set()
        assert (await rt.wait(b)).status == "completed"
        await wait_until(lambda: bodies.now == 1)  # now a runs
        bodies.gate("a").set()
        assert (await rt.wait(a)).status == "completed"
    assert bodies.peak == 1


async def test_a_run_woken_by_its_deadline_waits_for_a_slot(
    data_dir: Path, autojump_clock: Any
) -> None:
    """A passivated waiting run that its wait's deadline re-activates queues for a slot
    behind the pending run that asked first."""
    bodies = Bodies()
    rt = new_rt(data_dir, max_running=1, passivate_after=0)
    register(rt, bodies)
    async with rt:
        a = (await rt.start("workflow:expire-then-work", {"gate": "a"}, owner=P)).run.id
        await wait_until(lambda: rt.get(a).status == "waiting")
        b = (await rt.start("workflow:gated", {"gate": "b"}, owner=P)).run.id
        c = (await rt.start("workflow:gated", {"gate": "c"}, owner=P)).run.id
        assert [rt.get(r).status for r in (b, c)] == ["running", "pending"]
        await trio.sleep(31)  # a's deadline passes: its timer re-activates it
        assert rt.get(a).status == "waiting"  # ... but its body needs a slot to go on
        assert rt.get(c).status == "pending"
        bodies.gate("b").set()
        await wait_until(lambda: rt.get(c).status == "running")  # c asked first
        assert rt.get(a).status == "waiting"
        bodies.gate("c").set()
        await wait_until(lambda: bodies.now == 1 and rt.get(a).status == "running")
        bodies.gate("a").set()
        assert [(await rt.wait(r)).status for r in (a, b, c)] == ["completed"] * 3
    assert bodies.peak == 1


async def test_a_run_woken_by_its_sleep_waits_for_a_slot(
    data_dir: Path, autojump_clock: Any
) -> None:
    bodies = Bodies()
    rt = new_rt(data_dir, max_running=1)
    register(rt, bodies)
    async with rt:
        a = (await rt.start("workflow:sleep-then-work", {"gate": "a"}, owner=P)).run.id
        await trio.sleep(1)
        b = (await rt.start("workflow:gated", {"gate": "b"}, owner=P)).run.id
        assert rt.get(b).status == "running"  # a sleeps without a slot
        await trio.sleep(60)
        assert bodies.now == 1  # a's sleep ended, but b holds the slot
        bodies.gate("b").set()
        await wait_until(lambda: bodies.now == 1 and rt.get(b).status == "completed")
        bodies.gate("a").set()
        assert (await rt.wait(a)).status == "completed"
    assert bodies.peak == 1


async def test_recovery_admits_no_more_than_the_cap(data_dir: Path, autojump_clock: Any) -> None:
    """Runs in flight at a close are recovered running, but replay only under a slot."""
    bodies = Bodies()
    rt = new_rt(data_dir)  # no cap: three bodies run at once
    register(rt, bodies)
    async with rt:
        runs = [
            (await rt.start("workflow:gated", {"gate": f"g{i}"}, owner=P)).run.id for i in range(3)
        ]
        await wait_until(lambda: bodies.now == 3)
    bodies.now = bodies.peak = 0
    rt2 = new_rt(data_dir, max_running=1)
    register(rt2, bodies)
    async with rt2:
        assert rt2.recovered["running"] == 3
        await wait_until(lambda: bodies.now == 1)
        await trio.sleep(5)
        assert bodies.now == 1
        for i in range(3):
            bodies.gate(f"g{i}").set()
        for run_id in runs:
            assert (await rt2.wait(run_id)).status == "completed"
    assert bodies.peak == 1


async def test_restarted_body_keeps_within_the_cap(data_dir: Path, autojump_clock: Any) -> None:
    """A body restarted by its supervision policy goes on only under a slot."""
    bodies = Bodies()
    rt = new_rt(data_dir, max_running=1)
    fails = {"n": 0}

    @rt.workflow("flaky", restart=perdure.RestartPolicy(max_restarts=2, period=60, backoff=1))
    async def flaky(ctx: perdure.RunContext, inp: dict) -> dict:
        await bodies.work("flaky-open") if fails["n"] else None
        fails["n"] += 1
        if fails["n"] == 1:
            raise RuntimeError("first attempt fails")
        return {}

    register(rt, bodies)
    bodies.gate("flaky-open").set()
    async with rt:
        a = (await rt.start("workflow:flaky", {}, owner=P)).run.id
        b = (await rt.start("workflow:gated", {"gate": "b"}, owner=P)).run.id
        assert rt.get(b).status == "pending"
        assert (await rt.wait(a)).status == "completed"
        bodies.gate("b").set()
        assert (await rt.wait(b)).status == "completed"
    assert bodies.peak == 1
