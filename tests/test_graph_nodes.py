"""What each node kind does (R23), and how its run's state and log show it.

Every test ends by checking that the derived node state agrees with the log
(:func:`helpers.graph_checks.assert_graph_consistent`); every log also goes to the
official ``@ag-ui/client`` verifier. Tests taking ``autojump_clock`` run in virtual time.
"""

from __future__ import annotations

import threading
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
from perdure.testing import internals

pytestmark = pytest.mark.usefixtures("official_agui_check")

P = perdure.Project("p1")
CALLS: Counter[str] = Counter()
GATES: dict[str, trio.Event] = {}


@pytest.fixture(autouse=True)
def _reset() -> None:
    CALLS.clear()
    GATES.clear()


def gate(name: str) -> trio.Event:
    return GATES.setdefault(name, trio.Event())


def counted(value: Any = None, *, wait: str | None = None, fail: str | None = None) -> Any:
    """An async node function: counts its calls by node key, may wait on a gate or fail."""

    async def fn(c: g.NodeContext) -> Any:
        CALLS[c.node] += 1
        if wait is not None:
            await gate(wait).wait()
        if fail is not None:
            raise RuntimeError(fail)
        return value if value is not None else f"{c.node}-out"

    return fn


async def run_graph(
    rt: perdure.Runtime, name: str, inp: Any = None, **start: Any
) -> perdure.RunRecord:
    run = (await rt.start(f"workflow:{name}", inp or {}, owner=P, **start)).run
    return await rt.wait(run.id)


def error_of(rec: perdure.RunRecord) -> perdure.ErrorInfo:
    assert rec.status == "failed" and rec.completion and rec.completion.error
    return rec.completion.error


# -- steps -----------------------------------------------------------------------------------


async def test_step_functions_see_the_input_and_earlier_outputs(data_dir: Path) -> None:
    rt = new_rt(data_dir)
    where: dict[str, int] = {}

    async def fetch(c: g.NodeContext) -> dict[str, Any]:
        return {"total": c.input["qty"] * 10, "run": c.run_id == run_id}

    def plain(c: g.NodeContext) -> int:
        where["plain"] = threading.get_ident()
        return int(c.outputs["fetch"]["total"]) + 1

    def fast(c: g.NodeContext) -> str:
        where["fast"] = threading.get_ident()
        return f"{c.node} at {c.path}"

    rt.graph(
        "steps",
        g.Graph(g.step("fetch", fetch), g.step("plain", plain), g.step("fast", fast, inline=True)),
    )
    run_id = "steps-1"
    async with rt:
        done = await run_graph(rt, "steps", {"qty": 3}, run_id=run_id)
        state, log = await assert_graph_consistent(rt, run_id)
    assert done.completion is not None
    assert done.completion.result == {
        "fetch": {"total": 30, "run": True},
        "plain": 31,
        "fast": "fast at fast",
    }
    assert where["plain"] != threading.get_ident()  # a worker thread
    assert where["fast"] == threading.get_ident()  # inline: the trio thread
    assert [e["stepName"] for e in log if e["type"] == "STEP_STARTED"] == [
        "fetch",
        "plain",
        "fast",
    ]
    assert statuses(state) == dict.fromkeys(("fetch", "plain", "fast"), "completed")
    assert state.nodes["plain"].output == 31 and state.nodes["plain"].attempt == 1


async def test_the_output_function_shapes_the_result(data_dir: Path) -> None:
    rt = new_rt(data_dir)
    rt.graph(
        "shaped",
        g.Graph(
            g.step("a", counted(2)),
            g.step("b", counted(3)),
            output=lambda c: {"sum": c.outputs["a"] + c.outputs["b"]},
        ),
    )
    rt.graph("broken", g.Graph(g.step("a", counted(2)), output=lambda c: c.outputs["nope"]))
    async with rt:
        done = await run_graph(rt, "shaped")
        broken = await run_graph(rt, "broken")
    assert done.completion is not None and done.completion.result == {"sum": 5}
    assert error_of(broken).code == "GRAPH_CALLBACK_FAILED"
    assert "KeyError" in error_of(broken).message


async def test_task_and_agent_targets_run_as_child_runs(data_dir: Path) -> None:
    rt = new_rt(data_dir)

    @rt.task("double")
    async def double(ctx: perdure.RunContext, inp: dict) -> int:
        return int(inp["x"]) * 2

    @rt.agent("helper")
    async def helper(ctx: perdure.AgentContext, inp: perdure.AgentInput) -> str:
        await ctx.say("on it")
        return f"helped {ctx.owner.id == ctx.parent_id}"

    rt.graph(
        "targets",
        g.Graph(
            g.step("twice", "task:double", input=lambda c: {"x": c.input["x"]}),
            g.step("ask", "agent:helper", input=lambda c: {"messages": []}),
        ),
    )
    async with rt:
        done = await run_graph(rt, "targets", {"x": 21})
        kids = rt.list(parent_id=done.id).runs
        await assert_graph_consistent(rt, done.id)
    assert done.completion is not None
    assert done.completion.result == {"twice": 42, "ask": "helped True"}
    assert sorted(k.target for k in kids) == ["agent:helper", "task:double"]
    assert all(k.root_id == done.id for k in kids)


# -- parallel ---------------------------------------------------------------------------------


async def test_parallel_all_collects_outputs_by_id(data_dir: Path) -> None:
    rt = new_rt(data_dir)
    rt.graph(
        "par",
        g.Graph(
            g.parallel("checks", [g.step("a", counted(1)), g.step("b", counted(2))]),
            g.step("after", lambda c: sorted(c.outputs["checks"])),
        ),
    )
    async with rt:
        done = await run_graph(rt, "par")
        state, _ = await assert_graph_consistent(rt, done.id)
        journal = internals(rt).store.journal(done.id)
    assert done.completion is not None
    assert done.completion.result["checks"] == {"a": 1, "b": 2}
    assert done.completion.result["after"] == ["a", "b"]
    assert state.nodes["a"].path == "checks/a"
    kinds = sorted((e.kind, e.name) for e in journal)
    assert kinds == [
        ("kstep", "step:a|checks/a#1"),
        ("kstep", "step:b|checks/b#1"),
        ("step", "after"),
    ]


async def test_parallel_all_fails_fast_and_cancels_the_others(data_dir: Path) -> None:
    rt = new_rt(data_dir)
    rt.graph(
        "failfast",
        g.Graph(
            g.parallel(
                "p",
                [g.step("slow", counted(wait="never")), g.step("bad", counted(fail="boom"))],
            ),
            g.step("after", counted()),
        ),
    )
    async with rt:
        done = await run_graph(rt, "failfast")
        state, _ = await assert_graph_consistent(rt, done.id)
    error = error_of(done)
    assert error.code == "STEP_FAILED" and error.detail["step"] == "p/bad"
    assert statuses(state) == {
        "p": "failed",
        "slow": "cancelled",
        "bad": "failed",
        "after": "pending",
    }
    assert CALLS == {"slow": 1, "bad": 1}


async def test_a_race_takes_the_first_success_and_cancels_the_losers(data_dir: Path) -> None:
    rt = new_rt(data_dir)
    rt.graph(
        "race",
        g.Graph(
            g.parallel(
                "first",
                [
                    g.step("slow", counted("slow", wait="never")),
                    g.step("broken", counted(fail="nope")),
                    g.step("quick", counted("quick", wait="quick")),
                ],
                mode="race",
            ),
            g.step("after", lambda c: c.outputs["first"]["winner"]),
        ),
    )
    async with rt:
        run = (await rt.start("workflow:race", {}, owner=P)).run
        await wait_until(lambda: CALLS["broken"] == 1 and CALLS["quick"] == 1)
        gate("quick").set()
        done = await rt.wait(run.id)
        state, log = await assert_graph_consistent(rt, run.id)
    assert done.completion is not None
    assert done.completion.result["first"] == {"winner": "quick", "output": "quick"}
    assert done.completion.result["after"] == "quick"
    assert statuses(state) == {
        "first": "completed",
        "slow": "cancelled",
        "broken": "failed",
        "quick": "completed",
        "after": "completed",
    }
    # The decision is a step of its own (named by the race's path), after the winner's.
    names = [e["stepName"] for e in log if e["type"] == "STEP_STARTED"]
    assert names.index("first/quick") < names.index("first") < names.index("after")
    assert "first/slow" not in names


async def test_a_race_where_every_branch_fails_fails(data_dir: Path) -> None:
    rt = new_rt(data_dir)
    rt.graph(
        "lost",
        g.Graph(
            g.parallel(
                "r", [g.step("a", counted(fail="a!")), g.step("b", counted(fail="b!"))], mode="race"
            )
        ),
    )
    async with rt:
        done = await run_graph(rt, "lost")
        state, _ = await assert_graph_consistent(rt, done.id)
    assert error_of(done).code == "NODE_FAILED"
    assert statuses(state) == {"r": "failed", "a": "failed", "b": "failed"}


async def test_all_settled_collects_failures_and_skips(data_dir: Path) -> None:
    rt = new_rt(data_dir)
    rt.graph(
        "settled",
        g.Graph(
            g.parallel(
                "all",
                [
                    g.step("ok", counted(1)),
                    g.step("bad", counted(fail="broken")),
                    g.step("skip", counted(), skip_if=lambda c: True),
                ],
                mode="all_settled",
            ),
            g.step("after", counted("done")),
        ),
    )
    async with rt:
        done = await run_graph(rt, "settled")
        state, _ = await assert_graph_consistent(rt, done.id)
    assert done.completion is not None
    settled = done.completion.result["all"]
    assert settled["ok"] == {"status": "completed", "output": 1}
    assert settled["skip"] == {"status": "skipped"}
    assert settled["bad"]["status"] == "failed"
    assert settled["bad"]["error"]["code"] == "STEP_FAILED"
    assert "broken" in settled["bad"]["error"]["message"]
    assert statuses(state) == {
        "all": "completed",
        "ok": "completed",
        "bad": "failed",
        "skip": "skipped",
        "after": "completed",
    }


async def test_parallel_concurrency_is_bounded(data_dir: Path) -> None:
    rt = new_rt(data_dir)
    in_flight = 0
    peak = 0

    async def work(c: g.NodeContext) -> str:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await trio.sleep(0.01)
        in_flight -= 1
        return c.node

    rt.graph(
        "bounded",
        g.Graph(g.parallel("p", [g.step(f"s{i}", work) for i in range(7)], concurrency=2)),
    )
    async with rt:
        done = await run_graph(rt, "bounded")
        await assert_graph_consistent(rt, done.id)
    assert done.completion is not None and len(done.completion.result["p"]) == 7
    assert peak == 2


# -- branch, loop, map -------------------------------------------------------------------------


async def test_a_branch_runs_one_arm_and_skips_the_other(data_dir: Path) -> None:
    rt = new_rt(data_dir)
    rt.graph(
        "br",
        g.Graph(
            g.step("fetch", lambda c: {"total": c.input["total"]}),
            g.branch(
                "big",
                when=lambda c: c.outputs["fetch"]["total"] > 100,
                then=[g.step("manual", counted("manual")), g.step("note", counted("noted"))],
                otherwise=[g.step("auto", counted("auto"))],
            ),
        ),
    )
    async with rt:
        big = await run_graph(rt, "br", {"total": 500})
        small = await run_graph(rt, "br", {"total": 5})
        big_state, _ = await assert_graph_consistent(rt, big.id)
        small_state, _ = await assert_graph_consistent(rt, small.id)
    assert big.completion is not None and small.completion is not None
    assert big.completion.result["big"] == {"taken": "then", "output": "noted"}
    assert small.completion.result["big"] == {"taken": "otherwise", "output": "auto"}
    assert statuses(big_state)["auto"] == "skipped"
    assert statuses(small_state)["manual"] == statuses(small_state)["note"] == "skipped"
    assert big_state.nodes["manual"].path == "big/manual"


async def test_a_loop_runs_until_its_condition_with_derived_keys(data_dir: Path) -> None:
    rt = new_rt(data_dir)

    def check(c: g.NodeContext) -> dict[str, Any]:
        return {"done": c.iteration == 2, "i": c.iteration}

    rt.graph(
        "poll",
        g.Graph(
            g.loop("poll", [g.step("check", check)], until=lambda c: c.outputs["check"]["done"]),
            g.step("after", lambda c: c.outputs["check"]["i"]),
        ),
    )
    async with rt:
        done = await run_graph(rt, "poll")
        state, log = await assert_graph_consistent(rt, done.id)
    assert done.completion is not None
    assert [it["i"] for it in done.completion.result["poll"]] == [0, 1, 2]
    assert done.completion.result["after"] == 2  # after the loop: its last iteration
    assert statuses(state) == {
        "poll": "completed",
        "check[0]": "completed",
        "check[1]": "completed",
        "check[2]": "completed",
        "after": "completed",
    }
    assert [e["stepName"] for e in log if e["type"] == "STEP_STARTED"][:3] == [
        "poll/check[0]",
        "poll/check[1]",
        "poll/check[2]",
    ]


async def test_a_while_loop_checks_before_each_iteration(data_dir: Path) -> None:
    rt = new_rt(data_dir)
    rt.graph(
        "countdown",
        g.Graph(
            g.loop(
                "down",
                [g.step("tick", lambda c: (c.iteration or 0) + 1)],
                while_=lambda c: c.outputs.get("tick", 0) < c.input["n"],
            )
        ),
    )
    async with rt:
        three = await run_graph(rt, "countdown", {"n": 3})
        none = await run_graph(rt, "countdown", {"n": 0})
        await assert_graph_consistent(rt, none.id)
    assert three.completion is not None and three.completion.result["down"] == [1, 2, 3]
    assert none.completion is not None and none.completion.result["down"] == []


async def test_a_loop_stops_at_max_iterations_with_a_clear_error(data_dir: Path) -> None:
    rt = new_rt(data_dir)
    rt.graph(
        "forever",
        g.Graph(
            g.loop("spin", [g.step("try", counted("no"))], until=lambda c: False, max_iterations=3)
        ),
    )
    async with rt:
        done = await run_graph(rt, "forever")
        state, _ = await assert_graph_consistent(rt, done.id)
    error = error_of(done)
    assert error.code == "LOOP_LIMIT_REACHED"
    assert "max_iterations=3" in error.message and error.detail["node"] == "spin"
    assert statuses(state) == {
        "spin": "failed",
        "try[0]": "completed",
        "try[1]": "completed",
        "try[2]": "completed",
    }


async def test_a_loop_delay_is_a_durable_sleep(data_dir: Path, autojump_clock: Any) -> None:
    rt = new_rt(data_dir)
    rt.graph(
        "slowly",
        g.Graph(
            g.loop(
                "l",
                [g.step("s", lambda c: c.iteration)],
                until=lambda c: c.outputs["s"] == 2,
                delay=30,
            )
        ),
    )
    async with rt:
        t0 = trio.current_time()
        done = await run_graph(rt, "slowly")
        elapsed = trio.current_time() - t0
        await assert_graph_consistent(rt, done.id)
        journal = internals(rt).store.journal(done.id)
    assert done.completion is not None and done.completion.result["l"] == [0, 1, 2]
    assert 60 <= elapsed < 61
    assert [e.kind for e in journal].count("sleep") == 2


async def test_a_map_runs_each_item_with_bounded_concurrency(data_dir: Path) -> None:
    rt = new_rt(data_dir)
    in_flight = 0
    peak = 0

    async def ship(c: g.NodeContext) -> dict[str, Any]:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await trio.sleep(0.005)
        in_flight -= 1
        return {"sku": c.item, "index": c.index}

    rt.graph(
        "ship",
        g.Graph(
            g.map(
                "ship", items=lambda c: c.input["lines"], each=g.step("line", ship), concurrency=3
            )
        ),
    )
    async with rt:
        done = await run_graph(rt, "ship", {"lines": list("abcdefghij")})
        state, _ = await assert_graph_consistent(rt, done.id)
    assert done.completion is not None
    assert done.completion.result["ship"] == [
        {"sku": sku, "index": i} for i, sku in enumerate("abcdefghij")
    ]
    assert peak == 3
    assert state.nodes["line[7]"].path == "ship/line[7]"
    assert state.nodes["line[7]"].output == {"sku": "h", "index": 7}


@pytest.mark.parametrize("on_error", ["fail", "skip", "collect"])
async def test_what_a_failed_map_item_does(data_dir: Path, on_error: str) -> None:
    rt = new_rt(data_dir)

    def each(c: g.NodeContext) -> int:
        if c.item == 2:
            raise ValueError("two")
        return int(c.item) * 10

    rt.graph(
        "m",
        g.Graph(
            g.map(
                "m",
                items=lambda c: [1, 2, 3],
                each=g.step("x", each),
                on_error=on_error,  # type: ignore[arg-type]
            )
        ),
    )
    async with rt:
        done = await run_graph(rt, "m")
        state, _ = await assert_graph_consistent(rt, done.id)
    if on_error == "fail":
        assert error_of(done).detail["step"] == "m/x[1]"
        assert statuses(state)["m"] == "failed"
        return
    assert done.completion is not None
    result = done.completion.result["m"]
    if on_error == "skip":
        assert result == [10, None, 30]
    else:
        assert result[0] == {"status": "completed", "output": 10}
        assert result[1]["status"] == "failed" and "two" in result[1]["error"]["message"]
    assert statuses(state)["x[1]"] == "failed" and statuses(state)["m"] == "completed"


async def test_a_map_inside_a_loop_gets_nested_keys(data_dir: Path) -> None:
    rt = new_rt(data_dir)
    rt.graph(
        "nested",
        g.Graph(
            g.loop(
                "rounds",
                [
                    g.map(
                        "batch",
                        items=lambda c: [c.iteration, c.iteration],
                        each=g.step("job", lambda c: [c.iteration, c.index]),
                    )
                ],
                until=lambda c: len(c.outputs["batch"]) == 2 and c.iteration == 1,
            )
        ),
    )
    async with rt:
        done = await run_graph(rt, "nested")
        state, _ = await assert_graph_consistent(rt, done.id)
    assert done.completion is not None
    assert done.completion.result["rounds"] == [[[0, 0], [0, 1]], [[1, 0], [1, 1]]]
    assert state.nodes["job[1][0]"].path == "rounds/batch[1]/job[1][0]"
    assert {"batch[0]", "batch[1]", "job[0][1]"} <= set(state.nodes)


# -- skip_if, retries, timeouts, depends_on ----------------------------------------------------


async def test_skip_if_skips_a_node_and_anything_inside_it(data_dir: Path) -> None:
    rt = new_rt(data_dir)
    rt.graph(
        "skippy",
        g.Graph(
            g.step("a", counted(1)),
            g.step("b", counted(2), skip_if=lambda c: c.outputs["a"] == 1),
            g.parallel("p", [g.step("c", counted())], skip_if=lambda c: True),
            g.step("d", lambda c: c.outputs["b"]),
        ),
    )
    async with rt:
        done = await run_graph(rt, "skippy")
        state, log = await assert_graph_consistent(rt, done.id)
    assert done.completion is not None and done.completion.result["d"] is None
    assert statuses(state) == {
        "a": "completed",
        "b": "skipped",
        "p": "skipped",
        "c": "pending",
        "d": "completed",
    }
    assert CALLS == {"a": 1}
    assert [e["stepName"] for e in log if e["type"] == "STEP_STARTED"] == ["a", "d"]


async def test_retries_per_node(data_dir: Path, autojump_clock: Any) -> None:
    rt = new_rt(data_dir)

    async def flaky(c: g.NodeContext) -> str:
        CALLS[c.node] += 1
        if CALLS[c.node] < 3:
            raise RuntimeError("not yet")
        return "ok"

    policy = perdure.RetryPolicy(max_attempts=3, initial=5, backoff="fixed", jitter=0)
    rt.graph(
        "retrying",
        g.Graph(
            g.step("top", flaky, retry=policy),
            g.parallel("p", [g.step("inner", flaky, retry=policy)]),
            g.step("never", flaky, retry=perdure.RetryPolicy(max_attempts=2, initial=1)),
        ),
    )
    async with rt:
        done = await run_graph(rt, "retrying")
        state, log = await assert_graph_consistent(rt, done.id)
    assert error_of(done).detail == {
        "step": "never",
        "attempts": 2,
        "cause": "STEP_EXCEPTION",
        "type": "RuntimeError",
    }
    assert (state.nodes["top"].attempt, state.nodes["inner"].attempt) == (3, 3)
    assert state.nodes["never"].status == "failed" and state.nodes["never"].attempt == 2
    retried = [e["value"]["step"] for e in log if e.get("name") == "perdure.step_retry"]
    assert retried == ["top", "top", "p/inner", "p/inner", "never"]


async def test_a_step_timeout_fails_the_attempt(data_dir: Path, autojump_clock: Any) -> None:
    rt = new_rt(data_dir)
    rt.graph("slow", g.Graph(g.step("stuck", counted(wait="never"), timeout=10)))
    async with rt:
        done = await run_graph(rt, "slow")
        state, _ = await assert_graph_consistent(rt, done.id)
    assert error_of(done).detail["cause"] == "STEP_TIMEOUT"
    assert state.nodes["stuck"].error is not None
    assert state.nodes["stuck"].error.detail["cause"] == "STEP_TIMEOUT"


async def test_depends_on_runs_independent_nodes_at_once(data_dir: Path) -> None:
    rt = new_rt(data_dir)
    order: list[str] = []

    async def note(c: g.NodeContext) -> str:
        order.append(c.node)
        if c.node == "a":
            await gate("a").wait()
        return c.node

    rt.graph(
        "dag",
        g.Graph(
            g.step("a", note),
            g.step("b", note, depends_on=[]),
            g.step("c", note, depends_on=["b"]),
            g.step("d", lambda c: [c.outputs["a"], c.outputs["c"]], depends_on=["a", "c"]),
        ),
    )
    async with rt:
        run = (await rt.start("workflow:dag", {}, owner=P)).run
        await wait_until(lambda: order == ["a", "b", "c"] or order == ["b", "a", "c"])
        state = rt.graph_state(run.id)
        assert statuses(state) == {
            "a": "running",
            "b": "completed",
            "c": "completed",
            "d": "pending",
        }
        gate("a").set()
        done = await rt.wait(run.id)
        await assert_graph_consistent(rt, run.id)
    assert done.completion is not None and done.completion.result["d"] == ["a", "c"]


# -- waits and sleeps ---------------------------------------------------------------------------


def define_approval(rt: perdure.Runtime, **options: Any) -> None:
    rt.graph(
        "approve",
        g.Graph(
            g.step("fetch", counted({"total": 120})),
            g.approval(
                "ok",
                approvers=["ann"],
                prompt="ship it?",
                schema={"type": "object", "required": ["note"]},
                **options,
            ),
            g.step("ship", lambda c: c.outputs["ok"]["response"]["note"]),
        ),
    )


async def test_an_approval_approved(data_dir: Path) -> None:
    rt = new_rt(data_dir)
    define_approval(rt)
    async with rt:
        run = (await rt.start("workflow:approve", {}, owner=P)).run
        await wait_until(lambda: rt.get(run.id).status == "waiting")
        state, log = await assert_graph_consistent(rt, run.id)
        assert state.current == ["ok"]
        interrupt = log[-1]["outcome"]["interrupts"][0]
        assert interrupt["id"] == "approval:ok" and interrupt["reason"] == "confirmation"
        assert interrupt["message"] == "ship it?"
        with pytest.raises(perdure.PermissionDenied):
            await rt.resume(
                run.id, perdure.ApprovalDecision(key="ok", approved=True, approver="bob")
            )
        with pytest.raises(perdure.InvalidSignal):
            await rt.resume(
                run.id,
                perdure.ApprovalDecision(key="ok", approved=True, approver="ann", response={}),
            )
        decision = perdure.ApprovalDecision(
            key="ok", approved=True, approver="ann", response={"note": "go"}
        )
        await rt.resume(run.id, decision)
        done = await rt.wait(run.id)
        state, _ = await assert_graph_consistent(rt, run.id)
    assert done.completion is not None and done.completion.result["ship"] == "go"
    assert state.nodes["ok"].output["approver"] == "ann"


async def test_a_rejected_approval_fails_the_run(data_dir: Path) -> None:
    rt = new_rt(data_dir)
    define_approval(rt)
    async with rt:
        run = (await rt.start("workflow:approve", {}, owner=P)).run
        await wait_until(lambda: rt.get(run.id).status == "waiting")
        await rt.resume(
            run.id,
            perdure.ApprovalDecision(key="ok", approved=False, approver="ann", comment="no"),
        )
        done = await rt.wait(run.id)
        state, _ = await assert_graph_consistent(rt, run.id)
    error = error_of(done)
    assert error.code == "APPROVAL_REJECTED" and error.detail["node"] == "ok"
    assert statuses(state) == {"fetch": "completed", "ok": "failed", "ship": "pending"}
    assert state.nodes["ok"].error is not None
    assert state.nodes["ok"].error.code == "APPROVAL_REJECTED"


async def test_an_expired_approval_fails_the_run(data_dir: Path, autojump_clock: Any) -> None:
    rt = new_rt(data_dir)
    define_approval(rt, timeout=3600)
    async with rt:
        run = (await rt.start("workflow:approve", {}, owner=P)).run
        await wait_until(lambda: rt.get(run.id).status == "waiting", timeout=10, step=0.5)
        assert rt.get(run.id).waiting.waits[0].deadline is not None  # type: ignore[union-attr]
        done = await rt.wait(run.id)
        state, _ = await assert_graph_consistent(rt, run.id)
    assert error_of(done).code == "APPROVAL_EXPIRED"
    assert statuses(state)["ok"] == "failed"


async def test_approvals_in_a_map_get_one_key_per_item(data_dir: Path) -> None:
    rt = new_rt(data_dir)
    rt.graph(
        "each",
        g.Graph(g.map("m", items=lambda c: ["x", "y"], each=g.approval("sign"))),
    )
    async with rt:
        run = (await rt.start("workflow:each", {}, owner=P)).run
        await wait_until(
            lambda: len(getattr(rt.get(run.id).waiting, "waits", [])) == 2, what="both waits"
        )
        keys = sorted(w.key for w in rt.get(run.id).waiting.waits)  # type: ignore[union-attr]
        assert keys == ["sign[0]", "sign[1]"]
        for key in keys:
            await rt.resume(run.id, perdure.ApprovalDecision(key=key, approved=True, approver="z"))
        done = await rt.wait(run.id)
        await assert_graph_consistent(rt, run.id)
    assert done.status == "completed"


async def test_wait_event_returns_the_payload_and_can_expire(
    data_dir: Path, autojump_clock: Any
) -> None:
    rt = new_rt(data_dir)
    rt.graph(
        "paid",
        g.Graph(
            g.wait_event("paid", event="payment", timeout=60),
            g.step("x", lambda c: c.outputs["paid"]),
        ),
    )
    async with rt:
        run = (await rt.start("workflow:paid", {}, owner=P)).run
        await wait_until(lambda: rt.get(run.id).status == "waiting", timeout=10, step=0.5)
        await rt.resume(run.id, perdure.ExternalEvent(name="payment", payload={"eur": 5}))
        done = await rt.wait(run.id)
        late = await run_graph(rt, "paid")
        await assert_graph_consistent(rt, run.id)
        await assert_graph_consistent(rt, late.id)
    assert done.completion is not None and done.completion.result["x"] == {"eur": 5}
    assert error_of(late).code == "WAIT_EXPIRED" and error_of(late).detail["node"] == "paid"


async def test_a_sleep_node_is_durable(data_dir: Path, autojump_clock: Any) -> None:
    rt = new_rt(data_dir)
    rt.graph(
        "nap",
        g.Graph(
            g.sleep("rest", lambda c: c.input["s"]),
            g.sleep("until", until=lambda c: c.input["at"]),
            g.step("after", counted()),
        ),
    )
    async with rt:
        t0 = trio.current_time()
        at = rt.now() + 500
        done = await run_graph(rt, "nap", {"s": 100, "at": at})
        elapsed = trio.current_time() - t0
        state, _ = await assert_graph_consistent(rt, done.id)
    assert done.status == "completed" and 500 <= elapsed < 501
    assert statuses(state) == dict.fromkeys(("rest", "until", "after"), "completed")


# -- sub-workflows ------------------------------------------------------------------------------


def define_tree(rt: perdure.Runtime) -> None:
    @rt.task("leaf")
    async def leaf(ctx: perdure.RunContext, inp: dict) -> dict:
        async def work() -> str:
            CALLS["leaf"] += 1
            if inp.get("wait"):
                await gate(inp["wait"]).wait()
            return "leaf"

        return {"leaf": await ctx.step("work", work), "n": inp["n"]}

    rt.graph(
        "middle",
        g.Graph(
            g.step(
                "call",
                "task:leaf",
                input=lambda c: {"n": c.input["n"] + 1, "wait": c.input.get("wait")},
            ),
        ),
    )
    rt.graph(
        "top",
        g.Graph(
            g.sub_workflow(
                "sub",
                "workflow:middle",
                input=lambda c: {"n": c.input["n"], "wait": c.input.get("wait")},
                output=lambda result: result["call"]["n"],
            ),
            g.step("after", lambda c: c.outputs["sub"] * 10),
        ),
    )


async def test_sub_workflows_are_child_runs_with_parent_and_root_links(data_dir: Path) -> None:
    rt = new_rt(data_dir)
    define_tree(rt)
    async with rt:
        done = await run_graph(rt, "top", {"n": 1})
        tree = rt.list(root_id=done.id).runs
        await assert_graph_consistent(rt, done.id)
    assert done.completion is not None and done.completion.result == {"sub": 2, "after": 20}
    by_target = {r.target: r for r in tree}
    assert set(by_target) == {"workflow:top", "workflow:middle", "task:leaf"}
    middle, leaf = by_target["workflow:middle"], by_target["task:leaf"]
    assert middle.parent_id == done.id and leaf.parent_id == middle.id
    assert middle.root_id == leaf.root_id == done.id
    assert middle.version == 1


async def test_cancelling_the_root_cancels_the_whole_tree(data_dir: Path) -> None:
    rt = new_rt(data_dir)
    define_tree(rt)
    async with rt:
        run = (await rt.start("workflow:top", {"n": 1, "wait": "never"}, owner=P)).run
        await wait_until(lambda: len(rt.list(root_id=run.id).runs) == 3)
        await wait_until(lambda: CALLS.total() == 1)
        cancelled = await rt.cancel(run.id, "stop")
        tree = rt.list(root_id=run.id).runs
        state, _ = await assert_graph_consistent(rt, run.id)
    assert cancelled.cancelled
    assert {r.status for r in tree} == {"cancelled"}
    assert statuses(state) == {"sub": "cancelled", "after": "pending"}


async def test_a_failed_child_fails_its_node(data_dir: Path) -> None:
    rt = new_rt(data_dir)

    @rt.task("bad")
    async def bad(ctx: perdure.RunContext, inp: dict) -> None:
        raise ValueError("broken child")

    rt.graph("parent", g.Graph(g.step("call", "task:bad")))
    async with rt:
        done = await run_graph(rt, "parent")
        state, _ = await assert_graph_consistent(rt, done.id)
    error = error_of(done)
    assert error.code == "NODE_FAILED" and error.detail["child_error"] == "CHILD_FAILED"
    assert "broken child" in error.message
    assert state.nodes["call"].error is not None
    assert state.nodes["call"].error.code == "NODE_FAILED"


async def test_a_child_node_retries_with_a_fresh_child(data_dir: Path, autojump_clock: Any) -> None:
    rt = new_rt(data_dir)

    @rt.task("flaky")
    async def flaky(ctx: perdure.RunContext, inp: dict) -> str:
        CALLS["flaky"] += 1
        if CALLS["flaky"] < 2:
            raise RuntimeError("once")
        return "fine"

    rt.graph(
        "again",
        g.Graph(g.step("call", "task:flaky", retry=perdure.RetryPolicy(max_attempts=3))),
    )
    async with rt:
        done = await run_graph(rt, "again")
        kids = rt.list(parent_id=done.id).runs
        state, _ = await assert_graph_consistent(rt, done.id)
    assert done.completion is not None and done.completion.result == {"call": "fine"}
    assert sorted(k.status for k in kids) == ["completed", "failed"]
    assert state.nodes["call"].attempt == 2


async def test_a_child_node_timeout_cancels_the_child(data_dir: Path, autojump_clock: Any) -> None:
    rt = new_rt(data_dir)

    @rt.task("stuck")
    async def stuck(ctx: perdure.RunContext, inp: dict) -> None:
        await ctx.wait_for_event("never")

    rt.graph("impatient", g.Graph(g.step("call", "task:stuck", timeout=30)))
    async with rt:
        done = await run_graph(rt, "impatient")
        kids = rt.list(parent_id=done.id).runs
        await assert_graph_consistent(rt, done.id)
    assert error_of(done).code == "NODE_FAILED" and "timed out" in error_of(done).message
    assert [k.status for k in kids] == ["cancelled"]


# -- concurrency meets waits and children --------------------------------------------------------


async def test_an_approval_beside_a_running_branch(data_dir: Path) -> None:
    """One branch waits for an approval while the other still records steps: the run
    shows the interrupt throughout and its log stays valid."""
    rt = new_rt(data_dir)
    rt.graph(
        "both",
        g.Graph(
            g.parallel(
                "p",
                [
                    g.approval("ok"),
                    g.loop(
                        "work",
                        [g.step("tick", counted(wait="tick"))],
                        until=lambda c: c.iteration == 2,
                    ),
                ],
            )
        ),
    )
    async with rt:
        run = (await rt.start("workflow:both", {}, owner=P)).run
        await wait_until(lambda: rt.get(run.id).status == "waiting")
        gate("tick").set()
        await wait_until(lambda: rt.graph_state(run.id).nodes["work"].status == "completed")
        assert rt.get(run.id).status == "waiting"
        state, log = await assert_graph_consistent(rt, run.id)
        assert state.current == ["p", "ok"]
        assert log[-1]["outcome"]["type"] == "interrupt"
        await rt.resume(run.id, perdure.ApprovalDecision(key="ok", approved=True, approver="x"))
        done = await rt.wait(run.id)
        await assert_graph_consistent(rt, run.id)
    assert done.status == "completed" and CALLS == {"tick[0]": 1, "tick[1]": 1, "tick[2]": 1}


async def test_a_map_of_sub_workflows_survives_a_restart(data_dir: Path) -> None:
    def define(rt: perdure.Runtime) -> None:
        @rt.task("pack")
        async def pack(ctx: perdure.RunContext, inp: dict) -> str:
            async def work() -> str:
                CALLS[f"pack-{inp['n']}"] += 1
                await gate(f"pack-{inp['n']}").wait()
                return f"box-{inp['n']}"

            return str(await ctx.step("work", work))

        rt.graph("packer", g.Graph(g.step("p", "task:pack", input=lambda c: c.input)))
        rt.graph(
            "boxes",
            g.Graph(
                g.map(
                    "all",
                    items=lambda c: [0, 1, 2],
                    each=g.sub_workflow("one", "workflow:packer", input=lambda c: {"n": c.item}),
                )
            ),
        )

    rt = new_rt(data_dir)
    define(rt)
    gate("pack-1").set()
    async with rt:
        run = (await rt.start("workflow:boxes", {}, owner=P)).run
        await wait_until(lambda: rt.graph_state(run.id).nodes.get("one[1]") is not None)
        await wait_until(lambda: rt.graph_state(run.id).nodes["one[1]"].status == "completed")
    GATES.clear()
    gate("pack-0").set()
    gate("pack-2").set()
    rt = new_rt(data_dir)
    define(rt)
    async with rt:
        done = await rt.wait(run.id)
        tree = rt.list(root_id=run.id).runs
        await assert_graph_consistent(rt, run.id)
    assert done.completion is not None and done.completion.result == {
        "all": [{"p": "box-0"}, {"p": "box-1"}, {"p": "box-2"}]
    }
    assert len(tree) == 1 + 3 + 3  # the run, three sub-workflows, three packs: none twice
    assert CALLS == {"pack-0": 2, "pack-1": 1, "pack-2": 2}
