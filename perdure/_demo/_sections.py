"""The demo's in-process sections: throughput, signals, trees and timers.

Each section drives one feature through the public API only (``rt.start``,
``rt.events``, ``rt.resume``, ``rt.cancel``, ``rt.wait``, ``rt.list``), prints what
happened and records its claims on the :class:`Report`; the claims are checked
against what the store says (``rt.list``/``rt.get``), not against the section's own
bookkeeping.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

import trio
from rich.table import Table
from rich.tree import Tree

from perdure import (
    AgentInput,
    ApprovalDecision,
    Conversation,
    PerdureError,
    PermissionDenied,
    Project,
    RunRecord,
    Runtime,
    ToolResult,
)
from perdure.agui import (
    Interrupt,
    RunFinishedEvent,
    RunFinishedInterruptOutcome,
    ToolCallStartEvent,
)

from ._definitions import (
    APPROVERS,
    ITEMS,
    REMINDER_EVERY,
    REMINDER_TIMES,
    SHIPMENTS,
    TOOLS,
    TREE_SIZE,
    demo_job,
    tool_answer,
)
from ._drive import DriveResult, drive
from ._report import Report

__all__ = [
    "SignalsResult",
    "Sizes",
    "TreesResult",
    "all_runs",
    "next_pause",
    "signals",
    "throughput",
    "timers",
    "trees",
]

DEFAULT_RUNS = 5000
DEFAULT_CONCURRENCY = 1000


@dataclass(frozen=True)
class Sizes:
    """How many runs each section starts."""

    runs: int = DEFAULT_RUNS
    concurrency: int = DEFAULT_CONCURRENCY
    agents: int = 200
    trees: int = 20
    timers: int = 100
    crash_runs: int = 200

    def total_runs(self) -> int:
        """Runs the whole demo leaves in the store (the held tree included)."""
        return (
            self.runs + self.agents + (self.trees + 1) * TREE_SIZE + self.timers + self.crash_runs
        )


def all_runs(rt: Runtime, **filters: Any) -> list[RunRecord]:
    """Every run matching ``filters``, following ``rt.list``'s cursor to the end."""
    runs: list[RunRecord] = []
    after: str | None = None
    while True:
        page = rt.list(after=after, limit=1000, **filters)
        runs.extend(page.runs)
        if page.next_cursor is None:
            return runs
        after = page.next_cursor


async def _until(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Poll ``predicate`` (a few ms apart) until it holds."""
    with trio.move_on_after(timeout):
        while not predicate():
            await trio.sleep(0.005)
        return
    raise PerdureError(f"gave up after {timeout:.0f} s waiting until {what}")


# -- 1. throughput ---------------------------------------------------------------------------


async def throughput(rt: Runtime, sizes: Sizes, report: Report) -> DriveResult:
    """Short runs of all three kinds with ``sizes.concurrency`` in flight."""
    report.section(
        1,
        f"Throughput: {sizes.runs:,} short runs (agents, workflows, jobs), "
        f"{min(sizes.concurrency, sizes.runs):,} in flight",
    )
    with report.progress() as progress:
        task = progress.add_task("runs completed", total=sizes.runs)
        result = await drive(
            rt, demo_job, sizes.runs, sizes.concurrency, on_done=lambda _: progress.advance(task)
        )
    rate = Table(header_style="bold")
    rate.add_column("metric")
    rate.add_column("total", justify="right")
    rate.add_column("per second", justify="right")
    rate.add_row(
        f"runs, start -> completed, {rt.durability}",
        f"{result.runs:,}",
        f"[bold]{result.runs_per_s:,.0f}[/]",
    )
    rate.add_row("events logged", f"{result.events:,}", f"{result.events_per_s:,.0f}")
    rate.add_row("records committed", f"{result.records:,}", f"{result.records_per_s:,.0f}")
    rate.add_row(
        "LMDB commits",
        f"{result.txns:,}",
        f"{result.txns / result.elapsed:,.0f}" if result.elapsed else "-",
    )
    rate.add_row(
        "runs' batches per commit (group commit)",
        f"{result.batches / max(result.txns, 1):,.1f}",
        "",
    )
    rate.add_row("wall time", f"{result.elapsed:.2f} s", "")
    report.console.print(rate)
    completed = sum(n for (_, status), n in result.by_kind_status.items() if status == "completed")
    report.check(
        "1 throughput",
        f"all {sizes.runs:,} runs completed",
        completed == sizes.runs,
        f"{completed:,} completed at {result.runs_per_s:,.0f} runs/s",
    )
    return result


# -- 2. signals ------------------------------------------------------------------------------


@dataclass
class Pause:
    """Where a run paused: the interrupt's event id, its interrupts, the tool calls seen."""

    event_id: int
    interrupts: list[Interrupt]
    tools: dict[str, str] = field(default_factory=dict)


async def next_pause(rt: Runtime, run_id: str, after: int, reason: str | None = None) -> Pause:
    """Follow the run's log past ``after`` to its next interrupt, as an AG-UI client does.

    A wait ends the segment with ``RUN_FINISHED`` (outcome ``interrupt``) listing what
    the client must answer; the tool calls it announced came before it in the log.
    With ``reason``, pauses without an interrupt of that reason are passed over: each
    signal that answers only part of what a run waits on resumes it, and it pauses
    again on the rest, so answering two tool calls one signal at a time may leave an
    intermediate segment in the log.
    """
    tools: dict[str, str] = {}
    async with aclosing(rt.events(run_id, after)) as events:
        async for item in events:
            event = item.event
            if isinstance(event, ToolCallStartEvent):
                tools[event.tool_call_id] = event.tool_call_name
            if (
                isinstance(event, RunFinishedEvent)
                and isinstance(event.outcome, RunFinishedInterruptOutcome)
                and (reason is None or any(i.reason == reason for i in event.outcome.interrupts))
            ):
                return Pause(item.event_id, list(event.outcome.interrupts), tools)
    raise PerdureError(f"run {run_id} ended without pausing", run_id=run_id)


def _approval_key(interrupt: Interrupt) -> str:
    # The interrupt id is "approval:<key>"; ApprovalDecision wants the bare key.
    return interrupt.id.partition(":")[2]


@dataclass
class SignalsResult:
    runs: dict[int, str]
    rejected: set[int]
    sample: str


async def signals(rt: Runtime, sizes: Sizes, report: Report, tag: str) -> SignalsResult:
    """Agents that wait on two client-side tool calls, then on a human approval."""
    n = sizes.agents
    report.section(2, f"Waits and signals: {n:,} agents, client-side tools, approvals")
    orders = list(range(1, n + 1))
    rejected = {order for order in orders if order % 4 == 2}
    runs: dict[int, str] = {}
    pauses: dict[str, Pause] = {}
    timings: dict[str, float] = {}
    section = "2 signals"

    with report.progress() as progress:
        on_tools = progress.add_task("waiting on 2 tool results", total=n)
        on_approval = progress.add_task("waiting on an approval", total=n)
        done = progress.add_task("completed", total=n)

        async def begin(order: int) -> None:
            started = await rt.start(
                "agent:concierge",
                AgentInput(
                    messages=[{"id": "m1", "role": "user", "content": f"Refund order {order}?"}],
                    forwarded_props={"order": order},
                ),
                owner=Conversation(f"support-{tag}-{order}"),
            )
            runs[order] = started.run.id
            pauses[started.run.id] = await next_pause(rt, started.run.id, 0)
            progress.advance(on_tools)

        t0 = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for order in orders:
                nursery.start_soon(begin, order)
        timings["tools"] = time.perf_counter() - t0
        ours = set(runs.values())
        waiting = [r for r in all_runs(rt, status="waiting", kind="agent") if r.id in ours]
        tool_waits = sum(
            1 for r in waiting if r.waiting for w in r.waiting.waits if w.reason == "tool"
        )
        report.check(
            section,
            "every agent waits on both tool calls at once (rt.list)",
            len(waiting) == n and tool_waits == len(TOOLS) * n,
            f"{len(waiting):,} waiting, {tool_waits:,} open tool waits",
        )

        # One run, step by step: a partial answer leaves it waiting on the rest (R2), and
        # sending the same result again is accepted as a duplicate, not applied twice (R12).
        sample = runs[min(rejected)]
        pause = pauses[sample]
        first, second = pause.interrupts
        order = min(rejected)

        def answer(interrupt: Interrupt, order: int, tools: dict[str, str]) -> ToolResult:
            call_id = interrupt.tool_call_id or ""
            return ToolResult(tool_call_id=call_id, content=tool_answer(tools[call_id], order))

        await rt.resume(sample, answer(first, order, pause.tools))
        partial = await next_pause(rt, sample, pause.event_id)
        pauses[sample] = Pause(partial.event_id, partial.interrupts, pause.tools)
        rec = rt.get(sample)
        open_waits = [w.key for w in rec.waiting.waits] if rec.waiting else []
        report.check(
            section,
            "after 1 of 2 tool results the run pauses again, on the other",
            rec.status == "waiting"
            and open_waits == [second.tool_call_id]
            and [i.tool_call_id for i in partial.interrupts] == [second.tool_call_id],
            f"{rec.status}, open: {', '.join(open_waits) or '-'}",
        )
        again = await rt.resume(sample, answer(first, order, pause.tools))
        report.check(
            section,
            "the same tool result again is a duplicate, not a second answer",
            again.duplicate,
            f"accepted, duplicate={again.duplicate}",
        )

        async def answer_tools(order: int) -> None:
            rid = runs[order]
            pause = pauses[rid]
            async with trio.open_nursery() as calls:  # parallel tool calls, answered at once
                for interrupt in pause.interrupts:
                    calls.start_soon(rt.resume, rid, answer(interrupt, order, pause.tools))
            pauses[rid] = await next_pause(rt, rid, pause.event_id, "confirmation")
            progress.advance(on_approval)

        t0 = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for order in orders:
                nursery.start_soon(answer_tools, order)
        timings["approval"] = time.perf_counter() - t0
        waiting = [r for r in all_runs(rt, status="waiting", kind="agent") if r.id in ours]
        approvals = sum(
            1 for r in waiting if r.waiting for w in r.waiting.waits if w.reason == "approval"
        )
        report.check(
            section,
            "then every agent waits on a refund approval (rt.list)",
            len(waiting) == n and approvals == n,
            f"{len(waiting):,} waiting, {approvals:,} open approvals",
        )

        key = _approval_key(pauses[sample].interrupts[0])
        try:
            await rt.resume(sample, ApprovalDecision(key=key, approved=True, approver="mallory"))
            refused = "accepted"
        except PermissionDenied as exc:
            refused = exc.code
        report.check(
            section,
            f"an approver outside {APPROVERS} is refused",
            refused == "PERMISSION_DENIED",
            refused,
        )

        async def decide(order: int) -> None:
            rid = runs[order]
            key = _approval_key(pauses[rid].interrupts[0])
            if order in rejected:
                decision = ApprovalDecision(
                    key=key, approved=False, approver="bob", comment="outside the refund policy"
                )
            else:
                decision = ApprovalDecision(key=key, approved=True, approver="ann")
            await rt.resume(rid, decision)
            await rt.wait(rid)
            progress.advance(done)

        t0 = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for order in orders:
                nursery.start_soon(decide, order)
        timings["done"] = time.perf_counter() - t0

    stored = {rid: rt.get(rid) for rid in runs.values()}
    outcomes = Counter(
        (r.status, (r.completion.result or {}).get("refund") if r.completion else None)
        for r in stored.values()
    )
    issued, declined = outcomes[("completed", "issued")], outcomes[("completed", "declined")]
    report.check(
        section,
        f"all complete: {n - len(rejected):,} refunds issued, {len(rejected):,} declined",
        issued == n - len(rejected) and declined == len(rejected),
        f"{issued:,} issued, {declined:,} declined",
    )
    table = Table(header_style="bold")
    table.add_column("phase")
    table.add_column("runs", justify="right")
    table.add_column("what the client did", overflow="fold")
    table.add_column("time", justify="right")
    table.add_row(
        "waiting on tools",
        f"{n:,}",
        f"followed each log to its interrupt: {len(TOOLS)} tool calls ({', '.join(TOOLS)})",
        f"{timings['tools']:.2f} s",
    )
    table.add_row(
        "waiting on approval",
        f"{n:,}",
        f"sent {len(TOOLS) * n:,} ToolResult signals, both calls of a run at once",
        f"{timings['approval']:.2f} s",
    )
    table.add_row(
        "completed",
        f"{n:,}",
        f"ApprovalDecision: ann approved {issued:,}, bob rejected {declined:,}",
        f"{timings['done']:.2f} s",
    )
    report.console.print(table)
    return SignalsResult(runs=runs, rejected=rejected, sample=sample)


# -- 3. trees --------------------------------------------------------------------------------


@dataclass
class TreesResult:
    roots: list[str]
    held: str


async def trees(rt: Runtime, sizes: Sizes, report: Report, tag: str) -> TreesResult:
    """Order trees of child runs, and one tree cancelled from its root."""
    n = sizes.trees
    report.section(
        3,
        f"Run trees: {n:,} orders -> {SHIPMENTS} shipments -> {ITEMS} packs each, "
        "and one cancelled tree",
    )
    owner = Project(f"warehouse-{tag}")
    section = "3 trees"
    roots: list[str] = []
    with report.progress() as progress:
        task = progress.add_task("order trees completed", total=n)

        async def one(order: int) -> None:
            started = await rt.start("workflow:order", {"order": order}, owner=owner)
            roots.append(started.run.id)
            await rt.wait(started.run.id)
            progress.advance(task)

        t0 = time.perf_counter()
        held = (await rt.start("workflow:order", {"order": 0, "hold": True}, owner=owner)).run.id
        async with trio.open_nursery() as nursery:
            for order in range(1, n + 1):
                nursery.start_soon(one, order)
        elapsed = time.perf_counter() - t0

    leaves = SHIPMENTS * ITEMS
    await _until(
        lambda: len(all_runs(rt, root_id=held, status="waiting")) == leaves,
        f"the held tree's {leaves} packs wait",
    )
    before = Counter(r.status for r in all_runs(rt, root_id=held))
    cancelled = await rt.cancel(held, reason="the customer cancelled the order")
    again = await rt.cancel(held, reason="twice")

    def whole(root: str) -> bool:
        """The tree of ``root`` has all its runs, completed, and the order's count is right."""
        tree = all_runs(rt, root_id=root)
        completion = rt.get(root).completion
        result = completion.result if completion is not None else None
        return (
            len(tree) == TREE_SIZE
            and all(r.status == "completed" for r in tree)
            and isinstance(result, dict)
            and result.get("items") == leaves
        )

    complete = sum(whole(root) for root in roots)
    report.check(
        section,
        f"{n:,} trees of {TREE_SIZE} runs completed; each order counted {leaves} packed items",
        complete == n,
        f"{complete:,} complete trees of {TREE_SIZE} runs, {elapsed:.2f} s",
    )
    tree = all_runs(rt, root_id=held)
    statuses = Counter(r.status for r in tree)
    report.check(
        section,
        f"rt.cancel(root) cancelled all {TREE_SIZE} runs of the held tree",
        cancelled.cancelled and statuses == Counter({"cancelled": TREE_SIZE}),
        ", ".join(f"{s} {c}" for s, c in sorted(statuses.items()))
        + f" (before: {', '.join(f'{s} {c}' for s, c in sorted(before.items()))})",
    )
    by_id = {r.id: r for r in tree}
    late = [
        r.id
        for r in tree
        if r.parent_id in by_id and (r.finished_at or 0) > (by_id[r.parent_id].finished_at or 0)
    ]
    report.check(
        section,
        "deepest first: every run ended before its parent",
        not late and len(tree) == TREE_SIZE,
        f"{len(late)} ended after their parent",
    )
    report.check(
        section,
        "cancelling it again is a no-op",
        not again.cancelled,
        f"cancelled={again.cancelled}",
    )
    report.console.print(_render_tree(held, by_id))
    return TreesResult(roots=roots, held=held)


def _render_tree(root: str, by_id: dict[str, RunRecord]) -> Tree:
    order = {
        r.id: rank
        for rank, r in enumerate(sorted(by_id.values(), key=lambda r: r.finished_at or 0), 1)
    }
    children: dict[str, list[RunRecord]] = {}
    for r in sorted(by_id.values(), key=lambda r: r.seq):
        if r.parent_id is not None:
            children.setdefault(r.parent_id, []).append(r)

    def label(r: RunRecord) -> str:
        style = "yellow" if r.status == "cancelled" else "red"
        return (
            f"{r.target}  [dim]{r.id[:12]}[/]  [{style}]{r.status}[/]  "
            f"[dim](ended #{order.get(r.id, 0)} of {len(by_id)})[/]"
        )

    tree = Tree(label(by_id[root]))

    def add(node: Tree, run_id: str) -> None:
        for child in children.get(run_id, []):
            add(node.add(label(child)), child.id)

    add(tree, root)
    return tree


# -- 4. timers -------------------------------------------------------------------------------


async def timers(rt: Runtime, sizes: Sizes, report: Report, tag: str) -> list[str]:
    """Runs that sleep on durable timers and log an event each time one fires."""
    n = sizes.timers
    report.section(
        4,
        f"Durable timers: {n:,} runs, each sleeping {REMINDER_TIMES} x {REMINDER_EVERY} s "
        "(ctx.sleep)",
    )
    owner = Project(f"reminders-{tag}")
    fired: Counter[str] = Counter()
    ids: list[str] = []
    with report.progress() as progress:
        task = progress.add_task("timers fired", total=n * REMINDER_TIMES)

        async def one() -> None:
            started = await rt.start(
                "workflow:reminder", {"every": REMINDER_EVERY, "times": REMINDER_TIMES}, owner=owner
            )
            ids.append(started.run.id)
            async with aclosing(rt.events(started.run.id)) as events:
                async for item in events:
                    if item.type == "CUSTOM":
                        fired[started.run.id] += 1
                        progress.advance(task)

        t0 = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(n):
                nursery.start_soon(one)
        elapsed = time.perf_counter() - t0
    recs = [rt.get(rid) for rid in ids]
    durations = [
        (r.finished_at or 0) - (r.started_at or r.created_at) for r in recs if r.finished_at
    ]
    slept = REMINDER_EVERY * REMINDER_TIMES
    section = "4 timers"
    report.check(
        section,
        f"all {n:,} runs completed and each timer fired once",
        all(r.status == "completed" for r in recs)
        and len(recs) == n
        and set(fired.values()) == {REMINDER_TIMES},
        f"{sum(fired.values()):,} timers fired, {len(recs):,} runs",
    )
    report.check(
        section,
        f"no run ended before its {slept:.1f} s of sleeps",
        len(durations) == n and min(durations) >= slept,
        f"run time {min(durations, default=0):.2f}-{max(durations, default=0):.2f} s",
    )
    report.say(
        f"  {n:,} runs slept {n * REMINDER_TIMES:,} times on durable timers (each timer is "
        f"stored with the run and re-armed after a restart) in {elapsed:.2f} s of wall time; "
        f"each run took {min(durations, default=0):.2f}-{max(durations, default=0):.2f} s."
    )
    return ids
