"""Step graphs (R23): regressions of confirmed defects.

- a branch the graph stops (a race's loser, the rest of a fail-fast map) cancels the
  child runs it started (R15), while a body torn down by a close leaves them be;
- registration refuses durations, wait keys, event names and prompts the runtime would
  refuse mid-run;
- a branch skipped by ``skip_if`` never wins a race;
- ``rt.check`` says plainly that a run's pinned graph version is not registered;
- branches a finished race never started show ``cancelled``, not ``pending``.

Tests taking ``autojump_clock`` run in virtual time.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import trio
from helpers.checks import wait_until
from helpers.defs import new_rt
from helpers.graph_checks import assert_graph_consistent, statuses

import perdure
from perdure import graph as g

pytestmark = pytest.mark.usefixtures("official_agui_check")

P = perdure.Project("p1")
CALLS: Counter[str] = Counter()
NAN, INF = float("nan"), float("inf")


@pytest.fixture(autouse=True)
def _reset() -> None:
    CALLS.clear()


async def nop(c: g.NodeContext) -> None:
    return None


def define_slow(rt: perdure.Runtime) -> None:
    """``workflow:slow`` and ``task:slow``: ten durable sleeps of 1000 s, then done."""

    @rt.workflow("slow")
    async def slow_workflow(ctx: perdure.RunContext, inp: Any) -> str:
        for i in range(10):
            await ctx.sleep(1000)
            await ctx.step(f"tick{i}", lambda: None)
        return "slow"

    @rt.task("slow")
    async def slow_task(ctx: perdure.RunContext, inp: Any) -> str:
        for _ in range(10):
            await ctx.sleep(1000)
        return "slow"


async def fast(c: g.NodeContext) -> str:
    CALLS[c.node] += 1
    await trio.sleep(1)
    return "fast"


# -- 1. a stopped branch takes its child runs with it -------------------------------------------


def define_race(rt: perdure.Runtime) -> None:
    define_slow(rt)
    rt.graph(
        "race",
        g.Graph(
            g.parallel(
                "r",
                [
                    g.sub_workflow("sw", "workflow:slow"),
                    g.step("tk", "task:slow"),
                    g.step("f", fast),
                ],
                mode="race",
            ),
            g.wait_event("hold", event="go"),
        ),
    )


async def test_a_race_cancels_the_child_runs_of_its_losers(
    data_dir: Path, autojump_clock: Any
) -> None:
    rt = new_rt(data_dir)
    define_race(rt)
    async with rt:
        run = (await rt.start("workflow:race", {}, owner=P)).run
        await wait_until(lambda: rt.get(run.id).status == "waiting", timeout=100, step=1)
        kids = rt.list(parent_id=run.id).runs
        assert sorted(k.target for k in kids) == ["task:slow", "workflow:slow"]
        ended = [await rt.wait(k.id) for k in kids]
        assert [k.status for k in ended] == ["cancelled", "cancelled"]
        state = rt.graph_state(run.id)
        assert statuses(state) == {
            "r": "completed",
            "sw": "cancelled",
            "tk": "cancelled",
            "f": "completed",
            "hold": "running",
        }
        await rt.resume(run.id, perdure.ExternalEvent(name="go"))
        done = await rt.wait(run.id)
        await assert_graph_consistent(rt, run.id)
    assert done.completion is not None
    assert done.completion.result["r"] == {"winner": "f", "output": "fast"}


async def test_the_replay_after_a_restart_agrees_with_the_cancelled_losers(
    data_dir: Path, autojump_clock: Any
) -> None:
    rt = new_rt(data_dir)
    define_race(rt)
    async with rt:
        run = (await rt.start("workflow:race", {}, owner=P)).run
        await wait_until(lambda: rt.get(run.id).status == "waiting", timeout=100, step=1)
        kids = rt.list(parent_id=run.id).runs
        for kid in kids:
            assert (await rt.wait(kid.id)).status == "cancelled"
    rt = new_rt(data_dir)
    define_race(rt)
    async with rt:
        report = await rt.check()
        assert [(r.run_id, r.outcome) for r in report.runs] == [(run.id, "ok")]
        await rt.resume(run.id, perdure.ExternalEvent(name="go"))
        done = await rt.wait(run.id)
        state, _ = await assert_graph_consistent(rt, run.id)
        after = rt.list(parent_id=run.id).runs
    assert done.status == "completed"
    assert CALLS == {"f": 1}  # nothing ran twice, no loser started again
    assert sorted((k.id, k.status) for k in after) == sorted((k.id, "cancelled") for k in kids)
    assert statuses(state)["sw"] == statuses(state)["tk"] == "cancelled"


async def test_a_fail_fast_map_cancels_the_children_of_its_other_items(
    data_dir: Path, autojump_clock: Any
) -> None:
    """The map fails, but the graph goes on (``all_settled``): its items' children must
    not."""
    rt = new_rt(data_dir)
    define_slow(rt)

    @rt.workflow("item")
    async def item(ctx: perdure.RunContext, inp: Any) -> str:
        if inp == 0:
            await ctx.sleep(10)
            raise ValueError("item 0 fails")
        for _ in range(10):
            await ctx.sleep(1000)
        return "done"

    rt.graph(
        "settle",
        g.Graph(
            g.parallel(
                "p",
                [
                    g.map(
                        "m",
                        items=lambda c: [0, 1, 2],
                        each=g.sub_workflow("one", "workflow:item", input=lambda c: c.item),
                    ),
                    g.step("other", fast),
                ],
                mode="all_settled",
            ),
            g.wait_event("hold", event="go"),
        ),
    )
    async with rt:
        run = (await rt.start("workflow:settle", {}, owner=P)).run
        await wait_until(lambda: rt.get(run.id).status == "waiting", timeout=100, step=1)
        kids = {k.input: k for k in rt.list(parent_id=run.id).runs}
        ended = {n: (await rt.wait(k.id)).status for n, k in kids.items()}
        assert ended == {0: "failed", 1: "cancelled", 2: "cancelled"}
        assert statuses(rt.graph_state(run.id))["m"] == "failed"
        await rt.resume(run.id, perdure.ExternalEvent(name="go"))
        done = await rt.wait(run.id)
        await assert_graph_consistent(rt, run.id)
    assert done.status == "completed"


async def test_closing_the_runtime_leaves_the_children_of_a_race_running(
    data_dir: Path, autojump_clock: Any
) -> None:
    """Only the graph's own stops cancel children: a body torn down by a close (its
    branches cancelled by trio too) leaves them to resume at the next open."""

    def define(rt: perdure.Runtime) -> None:
        @rt.workflow("gated")
        async def gated(ctx: perdure.RunContext, inp: Any) -> str:
            await ctx.wait_for_event("open")
            return f"gated-{inp}"

        rt.graph(
            "undecided",
            g.Graph(
                g.parallel(
                    "r",
                    [
                        g.sub_workflow("a", "workflow:gated", input=lambda c: "a"),
                        g.sub_workflow("b", "workflow:gated", input=lambda c: "b"),
                    ],
                    mode="race",
                )
            ),
        )

    rt = new_rt(data_dir)
    define(rt)
    async with rt:
        run = (await rt.start("workflow:undecided", {}, owner=P)).run
        await wait_until(
            lambda: [k.status for k in rt.list(parent_id=run.id).runs] == ["waiting", "waiting"],
            timeout=100,
            step=1,
        )
    rt = new_rt(data_dir)
    define(rt)
    async with rt:
        kids = {k.input: k for k in rt.list(parent_id=run.id).runs}
        assert {n: k.status for n, k in kids.items()} == {"a": "waiting", "b": "waiting"}
        await rt.resume(kids["b"].id, perdure.ExternalEvent(name="open"))
        done = await rt.wait(run.id)
        assert (await rt.wait(kids["a"].id)).status == "cancelled"
        await assert_graph_consistent(rt, run.id)
    assert done.completion is not None
    assert done.completion.result["r"] == {"winner": "b", "output": "gated-b"}


# -- 2. registration refuses what a run would fail on -----------------------------------------------


REFUSED: list[tuple[str, Any, str]] = [
    ("sleep nan", lambda: g.sleep("z", NAN), "sleep 'z': seconds"),
    ("sleep inf", lambda: g.sleep("z", INF), "sleep 'z': seconds"),
    ("sleep too long", lambda: g.sleep("z", 1e12), "sleep 'z': seconds"),
    ("step timeout nan", lambda: g.step("z", nop, timeout=NAN), "step 'z': timeout"),
    ("step timeout inf", lambda: g.step("z", nop, timeout=INF), "step 'z': timeout"),
    (
        "inactivity nan",
        lambda: g.step("z", nop, inactivity_timeout=NAN),
        "step 'z': inactivity_timeout",
    ),
    ("approval timeout nan", lambda: g.approval("z", timeout=NAN), "approval 'z': timeout"),
    ("approval timeout inf", lambda: g.approval("z", timeout=INF), "approval 'z': timeout"),
    (
        "event timeout nan",
        lambda: g.wait_event("z", event="e", timeout=NAN),
        "wait_event 'z': timeout",
    ),
    (
        "loop delay nan",
        lambda: g.loop("z", [g.step("b", nop)], until=lambda c: True, delay=NAN),
        "loop 'z': delay",
    ),
    (
        "loop delay inf",
        lambda: g.loop("z", [g.step("b", nop)], until=lambda c: True, delay=INF),
        "loop 'z': delay",
    ),
    ("approval key NUL", lambda: g.approval("z", key="a\0b"), "approval 'z': key"),
    # 200 characters, 400 bytes: sizes count bytes of UTF-8.
    ("approval key bytes", lambda: g.approval("z", key="é" * 200), "approval 'z': key"),
    ("approval key surrogate", lambda: g.approval("z", key="a\ud800"), "approval 'z': key"),
    ("event NUL", lambda: g.wait_event("z", event="a\0b"), "wait_event 'z': event"),
    ("event bytes", lambda: g.wait_event("z", event="é" * 200), "wait_event 'z': event"),
    ("prompt too big", lambda: g.approval("z", prompt="p" * 20000), "approval 'z': prompt"),
    ("prompt empty", lambda: g.approval("z", prompt=""), "approval 'z': prompt"),
    ("prompt NUL", lambda: g.approval("z", prompt="a\0b"), "approval 'z': prompt"),
    ("approver NUL", lambda: g.approval("z", approvers=["a\0"]), "approval 'z': approver"),
]


@pytest.mark.parametrize(("case", "make", "message"), REFUSED, ids=[r[0] for r in REFUSED])
def test_registration_refuses_what_the_run_would_fail_on(
    data_dir: Path, case: str, make: Any, message: str
) -> None:
    rt = new_rt(data_dir)
    define_slow(rt)
    with pytest.raises(g.InvalidGraph) as caught:
        rt.graph("bad", g.Graph(g.step("a", nop), make()))
    assert message in caught.value.message
    assert "bad" not in rt.graphs


@pytest.mark.parametrize("field", ["initial", "maximum"])
@pytest.mark.parametrize("value", [NAN, INF])
def test_a_retry_policy_a_node_could_not_sleep_is_refused_before_any_run(
    data_dir: Path, field: str, value: float
) -> None:
    """Refused by the policy itself (an InvalidInput, as InvalidGraph is), so no graph
    holding one gets registered."""
    rt = new_rt(data_dir)
    define_slow(rt)
    with pytest.raises(perdure.InvalidInput, match=f"RetryPolicy {field}"):
        rt.graph(
            "bad",
            g.Graph(
                g.sub_workflow(
                    "z",
                    "workflow:slow",
                    retry=perdure.RetryPolicy(max_attempts=2, **{field: value}),
                )
            ),
        )
    assert "bad" not in rt.graphs


@pytest.mark.parametrize("timeout", [NAN, INF, 0])
def test_registration_refuses_a_graph_timeout_that_is_not_a_duration(
    data_dir: Path, timeout: float
) -> None:
    rt = new_rt(data_dir)
    with pytest.raises(g.InvalidGraph, match="timeout"):
        rt.graph("bad", g.Graph(g.step("a", nop), timeout=timeout))


async def test_the_limits_are_the_runtime_s_own(data_dir: Path) -> None:
    """What registration lets through at the limits, the waits take."""
    rt = new_rt(data_dir)
    rt.graph(
        "edge",
        g.Graph(
            g.parallel(
                "p",
                [
                    g.approval("a", key="é" * 100, prompt="p" * 16 * 1024, timeout=1e9),
                    g.wait_event("w", event="e" * 256),
                ],
            )
        ),
    )
    async with rt:
        run = (await rt.start("workflow:edge", {}, owner=P)).run
        await wait_until(
            lambda: rt.get(run.id).status == "waiting" and len(rt.get(run.id).waiting.waits) == 2  # type: ignore[union-attr]
        )
        await rt.cancel(run.id)


# -- 3. a skipped branch never wins a race ---------------------------------------------------------


async def test_a_skipped_branch_does_not_win_a_race(data_dir: Path, autojump_clock: Any) -> None:
    async def slow(c: g.NodeContext) -> str:
        CALLS[c.node] += 1
        await trio.sleep(10)
        return c.node

    rt = new_rt(data_dir)
    rt.graph(
        "race",
        g.Graph(
            g.parallel(
                "r",
                [g.step("a", slow), g.step("b", slow, skip_if=lambda c: True)],
                mode="race",
            )
        ),
    )
    async with rt:
        run = (await rt.start("workflow:race", {}, owner=P)).run
        done = await rt.wait(run.id)
        state, _ = await assert_graph_consistent(rt, run.id)
    assert done.completion is not None
    assert done.completion.result == {"r": {"winner": "a", "output": "a"}}
    assert CALLS == {"a": 1}
    assert statuses(state) == {"r": "completed", "a": "completed", "b": "skipped"}


async def test_a_race_of_skipped_branches_has_no_winner(data_dir: Path) -> None:
    async def boom(c: g.NodeContext) -> None:
        raise ValueError("boom")

    rt = new_rt(data_dir)
    rt.graph(
        "none",
        g.Graph(
            g.parallel(
                "r",
                [
                    g.step("a", nop, skip_if=lambda c: True),
                    g.step("b", nop, skip_if=lambda c: True),
                ],
                mode="race",
            ),
            g.step("after", lambda c: c.outputs["r"]),
        ),
    )
    rt.graph(
        "lost",
        g.Graph(
            g.parallel(
                "r2",
                [g.step("c", nop, skip_if=lambda c: True), g.step("d", boom)],
                mode="race",
            )
        ),
    )
    async with rt:
        none = await rt.wait((await rt.start("workflow:none", {}, owner=P)).run.id)
        lost = await rt.wait((await rt.start("workflow:lost", {}, owner=P)).run.id)
        state, _ = await assert_graph_consistent(rt, none.id)
        await assert_graph_consistent(rt, lost.id)
    assert none.completion is not None
    assert none.completion.result["r"] == {"winner": None, "output": None}
    assert none.completion.result["after"] == {"winner": None, "output": None}
    assert statuses(state) == {
        "r": "completed",
        "a": "skipped",
        "b": "skipped",
        "after": "completed",
    }
    assert lost.status == "failed" and lost.completion is not None
    assert lost.completion.error is not None and lost.completion.error.code == "NODE_FAILED"


# -- 4. rt.check on a run of a version no longer registered -------------------------------------------


async def test_check_names_the_unregistered_version(data_dir: Path) -> None:
    def make(version: int) -> perdure.Runtime:
        rt = new_rt(data_dir)
        rt.graph(
            "g",
            g.Graph(g.step("a", nop), g.wait_event("w", event="go"), version=version),
        )
        return rt

    rt = make(1)
    async with rt:
        run = (await rt.start("workflow:g", {}, owner=P)).run
        await wait_until(lambda: rt.get(run.id).status == "waiting")
    report = await make(2).check(data_dir)
    [found] = report.runs
    assert found.run_id == run.id and found.outcome == "unknown_target"
    assert found.message is not None
    assert "version 1 of workflow:g is not registered" in found.message
    assert "AssertionError" not in found.message


# -- 5. branches a finished parallel never started --------------------------------------------------


async def test_branches_a_finished_race_never_started_are_cancelled(
    data_dir: Path, autojump_clock: Any
) -> None:
    async def sleepy(c: g.NodeContext) -> str:
        await trio.sleep(float(c.node[-1]))
        return c.node

    async def boom(c: g.NodeContext) -> None:
        raise ValueError(c.node)

    rt = new_rt(data_dir)
    rt.graph(
        "one",
        g.Graph(
            g.parallel(
                "r",
                [g.step("x3", sleepy), g.step("y1", boom), g.step("z1", sleepy)],
                mode="race",
                concurrency=1,
            )
        ),
    )
    rt.graph(
        "failfast",
        g.Graph(
            g.map("m", items=lambda c: [0, 1, 2], each=g.step("i", boom), concurrency=1),
        ),
    )
    async with rt:
        won = await rt.wait((await rt.start("workflow:one", {}, owner=P)).run.id)
        failed = await rt.wait((await rt.start("workflow:failfast", {}, owner=P)).run.id)
        race, _ = await assert_graph_consistent(rt, won.id)
        fmap, _ = await assert_graph_consistent(rt, failed.id)
    assert won.completion is not None
    assert won.completion.result == {"r": {"winner": "x3", "output": "x3"}}
    assert statuses(race) == {
        "r": "completed",
        "x3": "completed",
        "y1": "cancelled",
        "z1": "cancelled",
    }
    assert failed.status == "failed"
    assert statuses(fmap) == {
        "m": "failed",
        "i[0]": "failed",
        "i[1]": "cancelled",
        "i[2]": "cancelled",
    }
