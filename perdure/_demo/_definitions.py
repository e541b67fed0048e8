"""The demo's definitions: what each section of ``perdure demo`` runs.

=========================  ==========================================================
target                     section, and what its body shows
=========================  ==========================================================
``agent:assistant``        throughput: a state snapshot and one assistant message
``workflow:pipeline``      throughput: three ``CUSTOM`` progress events
``task:resize``            throughput: a job computing a dict from its config
``agent:concierge``        signals: two client-side tool calls answered in parallel
                           (``wait_for_tool_results``), then a refund approval that a
                           human grants or rejects (``wait_for_approval``)
``workflow:order``         trees: starts 3 ``workflow:shipment`` children, each
``workflow:shipment``      starting 2 ``task:pack`` children, and awaits their results;
``task:pack``              with ``hold`` the packs wait for a truck that never comes,
                           so the demo cancels the tree
``workflow:reminder``      timers: durable sleeps (``ctx.sleep``), one event each
``workflow:ingest``        crash: three durable steps around a durable sleep; every step
                           attempt and every acknowledgement is appended to a witness
                           file, so the demo can prove which steps ran when
=========================  ==========================================================

The same :func:`register_demo` serves the demo process and its crash worker
(``python -m perdure._demo._worker``): recovery replays a run with the code that
registered it, so both must register the same definitions.
"""

from __future__ import annotations

import json
import os
import zlib
from pathlib import Path
from typing import Any

import trio

from perdure import AgentContext, AgentInput, Conversation, Project, RunContext, Runtime
from perdure.agui import (
    ToolCallArgsEvent,
    ToolCallEndEvent,
    ToolCallStartEvent,
)

from ._drive import Job

__all__ = [
    "APPROVERS",
    "INGEST_SLEEP",
    "INGEST_STEPS",
    "ITEMS",
    "REMINDER_EVERY",
    "REMINDER_TIMES",
    "SHIPMENTS",
    "TOOLS",
    "TREE_SIZE",
    "Witness",
    "demo_job",
    "register_demo",
    "tool_answer",
]

TOOLS = ("lookup_order", "check_stock")
"""The concierge's client-side tools; it calls both at once."""
APPROVERS = ["ann", "bob"]
"""Who may decide on a refund (the approval's allow-list)."""
SHIPMENTS = 3
ITEMS = 2
TREE_SIZE = 1 + SHIPMENTS + SHIPMENTS * ITEMS
"""Runs in one order tree: the order, its shipments, their packs."""
REMINDER_EVERY = 0.3
REMINDER_TIMES = 3
INGEST_STEPS = ("fetch", "parse", "store")
INGEST_SLEEP = 0.3
"""The durable sleep between ``parse`` and ``store``; a kill may land inside it."""


class Witness:
    """Appends lines to a file shared by the demo process and its crash worker.

    One ``write`` per line on an ``O_APPEND`` descriptor: lines from both processes
    never interleave, and a line that is in the file was written before any later
    one. No fsync is needed: SIGKILL ends the process, not the page cache.
    """

    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        self.path = None if path is None else Path(path)

    def write(self, *fields: str) -> None:
        if self.path is None:
            return
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (" ".join(fields) + "\n").encode())
        finally:
            os.close(fd)


def tool_answer(tool: str, order: int) -> dict[str, Any]:
    """What the demo's "client" answers to one of the concierge's tool calls."""
    if tool == "lookup_order":
        return {"order": order, "status": "delivered", "total_eur": 20 + order % 50}
    return {"order": order, "in_stock": order % 5}


def _work_seconds(run_id: str, step: str) -> float:
    """0.05-0.25 s of simulated work, fixed per (run, step) so reruns take as long."""
    return 0.05 + (zlib.crc32(f"{run_id}/{step}".encode()) % 200) / 1000


def register_demo(rt: Runtime, *, effects: str | os.PathLike[str] | None = None) -> None:
    """Register every demo definition on ``rt``.

    ``effects``: the witness file ``workflow:ingest`` appends to (``EFFECT RUN STEP
    PID`` when a step function runs, ``ACK RUN STEP PID`` when ``await ctx.step``
    returned in the body); ``None`` records nothing.
    """
    witness = Witness(effects)

    # -- throughput -----------------------------------------------------------------------

    @rt.agent("assistant")
    async def assistant(ctx: AgentContext, inp: AgentInput) -> None:
        question = next(
            (str(m.get("content", "")) for m in reversed(inp.messages) if m.get("role") == "user"),
            "",
        )
        await ctx.state_snapshot({"topic": question[:40], "turn": len(inp.messages)})
        await ctx.say(f"You asked: {question!r}. perdure logged this answer durably.")

    @rt.workflow("pipeline")
    async def pipeline(ctx: RunContext, inp: dict[str, Any]) -> dict[str, Any]:
        stages = ("extract", "transform", "load")
        for number, stage in enumerate(stages, 1):
            await ctx.custom("progress", {"stage": stage, "done": number, "of": len(stages)})
        return {"batch": inp.get("batch"), "stages": len(stages)}

    @rt.task("resize")
    async def resize(ctx: RunContext, config: dict[str, Any]) -> dict[str, Any]:
        width, height = int(config.get("width", 640)), int(config.get("height", 480))
        return {"image": config.get("image"), "width": width // 2, "height": height // 2}

    # -- signals: client-side tools and approvals -----------------------------------------

    @rt.agent("concierge")
    async def concierge(ctx: AgentContext, inp: AgentInput) -> dict[str, Any]:
        order = int(inp.forwarded_props["order"])
        calls = {f"call_{tool}": tool for tool in TOOLS}
        await ctx.emit(
            *(
                event
                for call_id, tool in calls.items()
                for event in (
                    ToolCallStartEvent(tool_call_id=call_id, tool_call_name=tool),
                    ToolCallArgsEvent(tool_call_id=call_id, delta=json.dumps({"order": order})),
                    ToolCallEndEvent(tool_call_id=call_id),
                )
            )
        )
        # Both calls are open at once; the run waits until the client answered both.
        # (Each ToolResult signal is logged as TOOL_CALL_RESULT by the runtime.)
        results = await ctx.wait_for_tool_results(list(calls))
        total = results["call_lookup_order"]["total_eur"]
        await ctx.say(f"Order {order} was delivered ({total} EUR). I will ask for a refund.")
        decision = await ctx.wait_for_approval(
            "refund", prompt=f"Refund {total} EUR for order {order}?", approvers=APPROVERS
        )
        if not decision.approved:
            await ctx.say(f"{decision.approver} declined the refund: {decision.comment}.")
            return {"order": order, "refund": "declined", "by": decision.approver}
        receipt = await ctx.step("issue-refund", _issue_refund, order, total)
        await ctx.say(f"Refund {receipt['id']} of {total} EUR issued.")
        return {"order": order, "refund": "issued", "by": decision.approver}

    # -- trees ----------------------------------------------------------------------------

    @rt.workflow("order")
    async def order_tree(ctx: RunContext, inp: dict[str, Any]) -> dict[str, Any]:
        shipments = [
            await ctx.start_child("workflow:shipment", {**inp, "shipment": number})
            for number in range(SHIPMENTS)
        ]
        packed = [await handle.result() for handle in shipments]
        return {"order": inp["order"], "items": sum(p["items"] for p in packed)}

    @rt.workflow("shipment")
    async def shipment(ctx: RunContext, inp: dict[str, Any]) -> dict[str, Any]:
        packs = [await ctx.start_child("task:pack", {**inp, "item": item}) for item in range(ITEMS)]
        return {"shipment": inp["shipment"], "items": len([await p.result() for p in packs])}

    @rt.task("pack")
    async def pack(ctx: RunContext, config: dict[str, Any]) -> dict[str, Any]:
        if config.get("hold"):
            await ctx.wait_for_event("truck-arrived")  # never sent: the tree gets cancelled
        return {"order": config["order"], "shipment": config["shipment"], "item": config["item"]}

    # -- timers ---------------------------------------------------------------------------

    @rt.workflow("reminder")
    async def reminder(ctx: RunContext, inp: dict[str, Any]) -> dict[str, Any]:
        for number in range(1, int(inp["times"]) + 1):
            await ctx.sleep(float(inp["every"]))
            await ctx.custom("reminder", {"n": number})
        return {"reminders": int(inp["times"])}

    # -- crash ----------------------------------------------------------------------------

    async def work(ctx: RunContext, step: str) -> dict[str, Any]:
        witness.write("EFFECT", ctx.run_id, step, str(os.getpid()))
        # Stream progress before the work is done: a kill from here on leaves the
        # step open in the log, and recovery closes it with perdure.attempt_aborted.
        await ctx.custom("progress", {"step": step, "pid": os.getpid()})
        await ctx.flush()
        await trio.sleep(_work_seconds(ctx.run_id, step))
        return {"step": step, "pid": os.getpid()}

    @rt.workflow("ingest")
    async def ingest(ctx: RunContext, inp: dict[str, Any]) -> dict[str, Any]:
        for step in INGEST_STEPS:
            await ctx.step(step, work, ctx, step)
            witness.write("ACK", ctx.run_id, step, str(os.getpid()))
            if step == "parse":
                await ctx.sleep(INGEST_SLEEP)
        return {"batch": inp["batch"], "steps": len(INGEST_STEPS)}


async def _issue_refund(order: int, total: int) -> dict[str, Any]:
    return {"id": f"rf-{order}", "eur": total}


def demo_job(i: int) -> Job:
    """The ``i``-th run of the throughput mix: agents, workflows and jobs in turn."""
    which = i % 3
    if which == 0:
        message = {"id": f"m{i}", "role": "user", "content": f"status of order {i}?"}
        return "agent:assistant", AgentInput(messages=[message]), Conversation(f"conv-{i // 3}")
    project = Project(f"project-{i % 10}")
    if which == 1:
        return "workflow:pipeline", {"batch": i}, project
    return "task:resize", {"image": f"img-{i}.png", "width": 1920, "height": 1080}, project
