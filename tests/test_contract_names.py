"""The public names of the design contract (DESIGN §5 and §5.1), used as a new user would.

One program per surface, written from the contract's own snippet: only ``import perdure``
and the names it shows (``rt.graph``/``rt.workflow_graph``, ``perdure.server.asgi_app``
after a plain ``import perdure``, the fields of ``GraphState``, ``LogEntry``,
``BatchInfo``, ``ScheduleInfo`` and ``Snapshot``). A rename breaks this file.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import trio

import perdure
import perdure.agui
from perdure import graph as g

P = perdure.Project("p1")


async def fetch(c: perdure.NodeContext) -> dict[str, Any]:
    return {"total": c.input["total"], "lines": [1, 2, 3]}


async def fraud(c: perdure.NodeContext) -> bool:
    return True


async def stock(c: perdure.NodeContext) -> bool:
    return True


async def ship(c: perdure.NodeContext) -> int:
    return int(c.item) * 10


async def check(c: perdure.NodeContext) -> dict[str, bool]:
    return {"done": True}


def order_graph(version: int = 1) -> g.Graph:
    return g.Graph(
        g.step("fetch", fetch),
        g.parallel("checks", [g.step("fraud", fraud), g.step("stock", stock)], mode="all"),
        g.branch(
            "big",
            when=lambda c: c.outputs["fetch"]["total"] > 100,
            then=[g.approval("ok", approvers=["ann"])],
            otherwise=[],
        ),
        g.map("ship", items=lambda c: c.outputs["fetch"]["lines"], each=g.step("line", ship),
              concurrency=4),
        g.loop("poll", [g.step("check", check)], until=lambda c: c.outputs["check"]["done"],
               max_iterations=10),
        g.sub_workflow("invoice", "workflow:invoice", input=lambda c: {"id": c.input["id"]}),
        g.wait_event("paid", event="payment"),
        version=version,
        output=lambda c: {"shipped": c.outputs["ship"]},
    )  # fmt: skip


def build(path: Path) -> perdure.Runtime:
    rt = perdure.Runtime(path, durability="process")

    @rt.task("resize", input_schema={"type": "object", "required": ["w"]}, timeout=300,
             max_attempts=3)  # fmt: skip
    async def resize(ctx: perdure.RunContext, config: dict) -> dict:
        ctx.log("resizing", level="info", width=config["w"])
        return {"w": config["w"]}

    @rt.workflow("invoice")
    async def invoice(ctx: perdure.RunContext, inp: dict) -> dict:
        return {"invoiced": inp["id"]}

    @rt.workflow("onboard")
    async def onboard(ctx: perdure.RunContext, inp: dict) -> dict:
        if ctx.patched("new-pricing"):
            price = await ctx.step("price", lambda: 2)
        else:
            price = 1
        decision = await ctx.wait_for_approval("welcome")
        return {"price": price, "approved": decision.approved}

    @rt.agent("support")
    async def support(ctx: perdure.AgentContext, inp: perdure.AgentInput) -> None:
        await ctx.say("hello")

    rt.graph("order", order_graph())
    rt.workflow_graph("order2", order_graph())
    rt.schedule("nightly", "0 3 * * *", target="task:resize", input={"w": 1},
                timezone="Europe/Berlin", overlap="forbid", catchup="latest", max_runs=None)  # fmt: skip
    return rt


async def settle(rt: perdure.Runtime, run_id: str, status: str) -> perdure.RunRecord:
    with trio.fail_after(30):
        while (rec := rt.get(run_id)).status != status:
            await trio.sleep(0.01)
    return rec


async def test_section_5_and_jobs_and_schedules(tmp_path: Path) -> None:
    rt = build(tmp_path / "data")
    async with rt:
        started = await rt.start(
            "workflow:onboard", {}, owner=perdure.Project("p1"), idempotency_key="signup-42"
        )
        again = await rt.start("workflow:onboard", {}, owner=P, idempotency_key="signup-42")
        assert again.duplicate and again.run.id == started.run.id
        run = rt.get(started.run.id)
        page = rt.list(owner=P, status=None, kind="workflow", limit=10)
        assert [r.id for r in page.runs] == [run.id]
        await settle(rt, run.id, "waiting")
        await rt.resume(
            run.id, perdure.ApprovalDecision(key="welcome", approved=True, approver="ann")
        )
        done = await rt.wait(run.id)
        assert done.completion is not None and done.completion.result == {
            "price": 2,
            "approved": True,
        }
        types = [ev.to_wire()["type"] async for ev in rt.events(run.id, after=0, follow=False)]
        assert types[0] == "RUN_STARTED" and types[-1] == "RUN_FINISHED"
        snap = rt.snapshot(run.id)
        assert snap.run.id == run.id and snap.after_event_id == len(types)
        assert (snap.messages, snap.state, snap.open_tool_calls) == ([], None, [])

        job = (await rt.start("task:resize", {"w": 3}, owner=P)).run
        await rt.wait(job.id)
        [entry] = rt.logs(job.id, after=None, limit=100).entries
        assert (entry.seq, entry.level, entry.message, entry.fields) == (
            1,
            "info",
            "resizing",
            {"width": 3},
        )
        assert entry.at > 0
        try:
            await rt.start("task:resize", {"h": 1}, owner=P)
        except perdure.InvalidInput as exc:
            assert exc.code == "INVALID_INPUT"
        else:
            raise AssertionError("the input schema was not checked")

        batch = await rt.start_batch("task:resize", [{"w": 1}, {"w": 2}], owner=P)
        for member in rt.list(batch_id=batch.id).runs:
            await rt.wait(member.id)
        info = rt.batch(batch.id)
        assert (info.id, info.total, info.counts) == (batch.id, 2, {"completed": 2})

        schedule = rt.get_schedule("nightly")
        assert (schedule.name, schedule.cron, schedule.timezone, schedule.target) == (
            "nightly",
            "0 3 * * *",
            "Europe/Berlin",
            "task:resize",
        )
        assert schedule.overlap == "forbid" and not schedule.paused and schedule.runs == 0
        assert schedule.last_scheduled_at is None and schedule.last_successful_at is None
        assert len(schedule.next_fire_times) == 5
        await rt.pause_schedule("nightly")
        assert rt.get_schedule("nightly").paused
        await rt.resume_schedule("nightly")
        fired = await rt.trigger_schedule("nightly", idempotency_key="manual-1")
        assert (await rt.trigger_schedule("nightly", idempotency_key="manual-1")).duplicate
        assert fired.run.trigger is not None and fired.run.trigger.type == "schedule"
        assert fired.run.trigger.ref == "nightly"
        await rt.wait(fired.run.id)
        assert [s.name for s in rt.list_schedules()] == ["nightly"]
        await rt.delete_schedule("nightly")
        assert rt.list_schedules() == []

        purged = await rt.purge(before=rt.get(job.id).updated_at + 1, statuses=("completed",))
        assert purged >= 1
        try:
            rt.get(job.id)
        except perdure.RunNotFound as exc:
            assert exc.code == "RUN_NOT_FOUND"
        else:
            raise AssertionError("a purged run is still readable")


async def test_section_5_1_graphs_and_serving(tmp_path: Path) -> None:
    rt = build(tmp_path / "data")
    app = perdure.server.asgi_app(rt)  # after a plain `import perdure`
    async with rt:
        for target in ("workflow:order", "workflow:order2"):
            run = (await rt.start(target, {"id": "o1", "total": 500}, owner=P)).run
            await settle(rt, run.id, "waiting")
            state = rt.graph_state(run.id)
            assert "ok" in state.current and "paid" not in state.current
            fetched = state.nodes["fetch"]
            assert (fetched.status, fetched.attempt, fetched.output) == (
                "completed",
                1,
                {"total": 500, "lines": [1, 2, 3]},
            )
            assert fetched.error is None and fetched.started_at and fetched.finished_at
            await rt.resume(
                run.id, perdure.ApprovalDecision(key="ok", approved=True, approver="ann")
            )
            with trio.fail_after(30):
                while "paid" not in rt.graph_state(run.id).current:
                    await trio.sleep(0.01)
            await rt.resume(run.id, perdure.ExternalEvent(name="payment", payload={"ok": 1}))
            done = await rt.wait(run.id)
            assert done.status == "completed", done.completion
            assert done.completion is not None
            assert done.completion.result == {"shipped": [10, 20, 30]}
            state = rt.graph_state(run.id)
            assert state.nodes["invoice"].output == {"invoiced": "o1"}
            assert state.current == []

        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            r = await client.get("/health")
            assert r.status_code == 200
            r = await client.get(f"/runs/{run.id}/graph")
            assert r.status_code == 200 and r.json()["nodes"]["fetch"]["status"] == "completed"

    assert issubclass(perdure.agui.TextMessageStartEvent, perdure.agui.BaseEvent)
    assert perdure.Retention(completed=7 * 86400, failed=30 * 86400).completed == 7 * 86400
    for name in (
        "RunNotFound",
        "RunNotActive",
        "InvalidTransition",
        "NotWaiting",
        "SignalConflict",
        "InvalidSignal",
        "PermissionDenied",
        "UnknownTarget",
        "InvalidInput",
        "SerializationError",
        "NonDeterminismError",
        "WaitExpired",
        "DirectoryLocked",
        "StorageError",
    ):
        error = getattr(perdure, name)
        assert issubclass(error, perdure.PerdureError) and isinstance(error.code, str), name


def test_asyncio_host_and_pydantic_ai_names(tmp_path: Path) -> None:
    from perdure.integrations.pydantic_ai import register_agent

    assert callable(register_agent)

    async def main() -> None:
        host = perdure.AsyncioHost(tmp_path / "data", durability="process")

        @host.workflow("echo")
        async def echo(ctx: perdure.RunContext, inp: dict) -> dict:
            return inp

        async with host:
            started = await host.start("workflow:echo", {"a": 1}, owner=P)
            done = await host.wait(started.run.id)
            assert done.completion is not None and done.completion.result == {"a": 1}

    asyncio.run(main())
