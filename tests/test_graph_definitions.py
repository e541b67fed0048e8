"""Step-graph definitions (R23): checked whole at registration, versions, the input schema.

A definition that cannot run is refused by ``rt.graph`` with ``InvalidGraph`` (an
``InvalidInput``, code ``INVALID_GRAPH``) naming the node, before anything is stored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from helpers.defs import new_rt

import perdure
from perdure import graph as g

P = perdure.Project("p1")


async def nop(c: g.NodeContext) -> None:
    return None


def rt_with_targets(data_dir: Path) -> perdure.Runtime:
    rt = new_rt(data_dir)

    @rt.task("t")
    async def t(ctx: perdure.RunContext, inp: Any) -> Any:
        return inp

    @rt.workflow("sub")
    async def sub(ctx: perdure.RunContext, inp: Any) -> Any:
        return inp

    return rt


BAD: list[tuple[str, Any, str]] = [
    ("no nodes", lambda: g.Graph(), "has no nodes"),
    ("duplicate id", lambda: g.Graph(g.step("a", nop), g.step("a", nop)), "'a' is used twice"),
    (
        "duplicate nested id",
        lambda: g.Graph(g.step("a", nop), g.parallel("p", [g.step("a", nop)])),
        "'a' is used twice",
    ),
    ("bad id", lambda: g.Graph(g.step("a b", nop)), "must be 1-64 letters"),
    ("empty parallel", lambda: g.Graph(g.parallel("p", [])), "parallel 'p' has no nodes"),
    (
        "bad mode",
        lambda: g.Graph(g.parallel("p", [g.step("a", nop)], mode="any")),  # type: ignore[arg-type]
        "mode must be one of",
    ),
    (
        "bad concurrency",
        lambda: g.Graph(g.parallel("p", [g.step("a", nop)], concurrency=0)),
        "concurrency must be an integer >= 1",
    ),
    ("unknown task", lambda: g.Graph(g.step("a", "task:nope")), "task:nope is not registered"),
    (
        "unknown sub-workflow",
        lambda: g.Graph(g.sub_workflow("s", "workflow:nope")),
        "workflow:nope is not registered",
    ),
    (
        "sub-workflow of a task",
        lambda: g.Graph(g.sub_workflow("s", "task:t")),
        "target must be 'workflow:NAME'",
    ),
    ("step of a workflow", lambda: g.Graph(g.step("s", "workflow:sub")), "target must be"),
    (
        "loop without condition",
        lambda: g.Graph(g.loop("l", [g.step("a", nop)])),
        "exactly one of until= and while_=",
    ),
    (
        "loop with both",
        lambda: g.Graph(
            g.loop("l", [g.step("a", nop)], until=lambda c: True, while_=lambda c: True)
        ),
        "exactly one of until= and while_=",
    ),
    (
        "loop over the cap",
        lambda: g.Graph(g.loop("l", [g.step("a", nop)], until=lambda c: True, max_iterations=101)),
        "from 1 to 100",
    ),
    ("empty loop", lambda: g.Graph(g.loop("l", [], until=lambda c: True)), "has no nodes"),
    (
        "bad on_error",
        lambda: g.Graph(g.map("m", items=lambda c: [], each=g.step("a", nop), on_error="x")),  # type: ignore[arg-type]
        "on_error must be one of",
    ),
    (
        "retry on a container",
        lambda: g.Graph(
            g.Parallel(id="p", nodes=(g.step("a", nop),), retry=perdure.RetryPolicy(max_attempts=2))
        ),
        "retry= applies to step and sub_workflow nodes",
    ),
    ("timeout on a sleep", lambda: g.Graph(g.Sleep(id="s", seconds=1, timeout=3)), "timeout="),
    ("bad timeout", lambda: g.Graph(g.step("a", nop, timeout=-1)), "positive number"),
    (
        "depends_on a later node",
        lambda: g.Graph(g.step("a", nop, depends_on=["b"]), g.step("b", nop)),
        "not a node listed before it",
    ),
    (
        "depends_on in a parallel",
        lambda: g.Graph(g.parallel("p", [g.step("a", nop), g.step("b", nop, depends_on="a")])),
        "depends_on is for nodes of a sequence",
    ),
    (
        "bad approval schema",
        lambda: g.Graph(g.approval("ok", schema={"type": "nonsense"})),
        "not a valid JSON Schema",
    ),
    (
        "approval key twice",
        lambda: g.Graph(g.approval("ok"), g.approval("ok2", key="ok")),
        "approval key 'ok' is used twice",
    ),
    ("sleep without length", lambda: g.Graph(g.sleep("s")), "exactly one of seconds"),
    ("not a node", lambda: g.Graph("fetch"), "is not a node"),  # type: ignore[arg-type]
    ("version 0", lambda: g.Graph(g.step("a", nop), version=0), "at least 1"),
    (
        "bad input schema",
        lambda: g.Graph(g.step("a", nop), input_schema={"type": 3}),
        "not a valid JSON Schema",
    ),
    ("step without function", lambda: g.Graph(g.step("a", 42)), "must be a function"),  # type: ignore[arg-type]
]


@pytest.mark.parametrize(("case", "make", "message"), BAD, ids=[b[0] for b in BAD])
def test_invalid_definitions_are_refused_at_registration(
    data_dir: Path, case: str, make: Any, message: str
) -> None:
    rt = rt_with_targets(data_dir)
    with pytest.raises(g.InvalidGraph) as info:
        rt.graph("bad", make())
    assert message in str(info.value)
    assert info.value.code == "INVALID_GRAPH"
    assert isinstance(info.value, perdure.InvalidInput)
    assert "workflow:bad" not in {t.target for t in rt.targets()}


def test_a_graph_may_name_itself_and_registered_targets(data_dir: Path) -> None:
    rt = rt_with_targets(data_dir)
    rt.graph(
        "ok",
        g.Graph(
            g.step("t", "task:t"),
            g.sub_workflow("s", "workflow:sub"),
            g.sub_workflow("again", "workflow:ok", skip_if=lambda c: True),
        ),
    )
    assert "workflow:ok" in {t.target for t in rt.targets()}


def test_a_code_workflow_and_a_graph_cannot_share_a_name(data_dir: Path) -> None:
    rt = rt_with_targets(data_dir)
    with pytest.raises(perdure.InvalidInput, match="already registered"):
        rt.graph("sub", g.Graph(g.step("a", nop)))


def test_versions_add_up_and_the_same_version_twice_is_refused(data_dir: Path) -> None:
    rt = new_rt(data_dir)
    v1 = rt.graph("w", g.Graph(g.step("a", nop), version=1))
    rt.graph("w", g.Graph(g.step("b", nop), version=3))
    rt.graph("w", g.Graph(g.step("c", nop), version=2))
    with pytest.raises(perdure.InvalidInput, match="version 2 is already registered"):
        rt.graph("w", g.Graph(g.step("d", nop), version=2))
    versions = rt.graphs["w"]
    assert sorted(versions.graphs) == [1, 2, 3] and versions.latest.version == 3
    assert versions.get(1) is v1


async def test_new_runs_pin_the_newest_version(data_dir: Path) -> None:
    rt = new_rt(data_dir)
    rt.graph("w", g.Graph(g.step("a", nop), version=1))
    rt.graph("w", g.Graph(g.step("b", nop), version=2))
    async with rt:
        run = (await rt.start("workflow:w", {}, owner=P)).run
        assert run.version == 2
        done = await rt.wait(run.id)
    assert done.completion is not None and done.completion.result == {"b": None}


async def test_the_input_schema_is_checked_at_start_and_nothing_is_stored(
    data_dir: Path,
) -> None:
    rt = new_rt(data_dir)
    rt.graph(
        "typed",
        g.Graph(
            g.step("a", nop),
            input_schema={
                "type": "object",
                "properties": {"id": {"type": "integer"}},
                "required": ["id"],
            },
        ),
    )
    async with rt:
        with pytest.raises(perdure.InvalidInput, match="input_schema") as info:
            await rt.start("workflow:typed", {"id": "seven"}, owner=P)
        assert info.value.code == "INVALID_INPUT"
        assert rt.list().runs == []
        run = (await rt.start("workflow:typed", {"id": 7}, owner=P)).run
        assert (await rt.wait(run.id)).status == "completed"


def test_rt_graph_takes_a_graph(data_dir: Path) -> None:
    rt = new_rt(data_dir)
    with pytest.raises(perdure.InvalidInput, match=r"takes a perdure\.graph\.Graph"):
        rt.graph("x", [g.step("a", nop)])  # type: ignore[arg-type]
