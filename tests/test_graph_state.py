"""Node state is part of the run (R23): derived from storage, through restarts,
passivation, versions; read by ``rt.graph_state``, ``GET /runs/{id}/graph`` and
``perdure runs graph`` / ``perdure graph show``.

"Crash" here is closing the runtime mid-run, which leaves exactly what a killed process
leaves (the real kill -9 is ``tests/crash/test_kill9_graph.py``).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
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
from perdure.cli import main
from perdure.testing import internals

pytestmark = pytest.mark.usefixtures("official_agui_check")

P = perdure.Project("p1")
CALLS: Counter[str] = Counter()
GATES: dict[str, trio.Event] = {}
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _reset() -> None:
    CALLS.clear()
    GATES.clear()


def gate(name: str) -> trio.Event:
    return GATES.setdefault(name, trio.Event())


def node_fn(value: Any = None, wait: bool = False) -> Any:
    async def fn(c: g.NodeContext) -> Any:
        CALLS[c.node] += 1
        if wait:
            await gate(c.node).wait()
        return value if value is not None else f"{c.node}-out"

    return fn


def define_checkout(rt: perdure.Runtime) -> None:
    rt.graph(
        "checkout",
        g.Graph(
            g.step("fetch", node_fn({"lines": [1, 2, 3, 4]})),
            g.parallel(
                "checks",
                [g.step("fraud", node_fn(wait=True)), g.step("stock", node_fn(wait=True))],
            ),
            g.map(
                "ship",
                items=lambda c: c.outputs["fetch"]["lines"],
                each=g.step("line", node_fn(wait=True)),
                concurrency=2,
            ),
            g.step("done", node_fn("done")),
        ),
    )


# -- replay never re-runs a finished node -----------------------------------------------------


async def test_a_restart_mid_parallel_never_reruns_a_completed_node(data_dir: Path) -> None:
    rt = new_rt(data_dir)
    define_checkout(rt)
    gate("fraud").set()
    async with rt:
        run = (await rt.start("workflow:checkout", {}, owner=P, run_id="co-1")).run
        await wait_until(lambda: rt.graph_state(run.id).nodes["fraud"].status == "completed")
        state, _ = await assert_graph_consistent(rt, run.id)
    assert statuses(state) == {
        "fetch": "completed",
        "checks": "running",
        "fraud": "completed",
        "stock": "running",
        "ship": "pending",
        "done": "pending",
    }
    assert state.current == ["checks", "stock"]
    assert CALLS == {"fetch": 1, "fraud": 1, "stock": 1}

    # The next activation: fraud replays, stock runs again (it never recorded), then the
    # map: two lines at a time.
    rt = new_rt(data_dir)
    define_checkout(rt)
    gate("stock").set()
    gate("line[0]").set()
    async with rt:
        await wait_until(lambda: rt.graph_state(run.id).nodes.get("line[0]") is not None)
        await wait_until(lambda: rt.graph_state(run.id).nodes["line[0]"].status == "completed")
        state = rt.graph_state(run.id)
        assert {k: state.nodes[k].status for k in ("line[0]", "line[1]", "line[2]", "line[3]")} == {
            "line[0]": "completed",
            "line[1]": "running",
            "line[2]": "running",
            "line[3]": "pending",
        }
    assert CALLS == {"fetch": 1, "fraud": 1, "stock": 2, "line[0]": 1, "line[1]": 1, "line[2]": 1}

    rt = new_rt(data_dir)
    define_checkout(rt)
    for i in range(4):
        gate(f"line[{i}]").set()
    async with rt:
        done = await rt.wait(run.id)
        state, _ = await assert_graph_consistent(rt, run.id)
        journal = internals(rt).store.journal(run.id)
    assert done.status == "completed"
    assert set(statuses(state).values()) == {"completed"}
    assert CALLS == {
        "fetch": 1,
        "fraud": 1,
        "stock": 2,
        "line[0]": 1,
        "line[1]": 2,
        "line[2]": 2,
        "line[3]": 1,
        "done": 1,
    }
    names = [e.name for e in journal]
    assert len(names) == len(set(names)) == 8  # one record per step node, none twice


async def test_a_decided_race_never_starts_its_losers_again(data_dir: Path) -> None:
    def define(rt: perdure.Runtime) -> None:
        rt.graph(
            "race",
            g.Graph(
                g.parallel(
                    "r", [g.step("a", node_fn(wait=True)), g.step("b", node_fn())], mode="race"
                ),
                g.step("after", node_fn(wait=True)),
            ),
        )

    rt = new_rt(data_dir)
    define(rt)
    async with rt:
        run = (await rt.start("workflow:race", {}, owner=P)).run
        await wait_until(lambda: CALLS["after"] == 1)
    assert CALLS == {"a": 1, "b": 1, "after": 1}
    rt = new_rt(data_dir)
    define(rt)
    gate("after").set()
    async with rt:
        done = await rt.wait(run.id)
        state, _ = await assert_graph_consistent(rt, run.id)
    assert done.completion is not None
    assert done.completion.result["r"] == {"winner": "b", "output": "b-out"}
    assert CALLS == {"a": 1, "b": 1, "after": 2}  # the loser a was not started again
    assert statuses(state)["a"] == "cancelled"


# -- state from storage ---------------------------------------------------------------------------


async def test_graph_state_through_a_passivation(data_dir: Path) -> None:
    rt = new_rt(data_dir, passivate_after=0.05)
    rt.graph(
        "approve",
        g.Graph(
            g.step("prepare", node_fn({"n": 1})),
            g.approval("ok", approvers=["ann"]),
            g.step("finish", lambda c: c.outputs["prepare"]["n"] + 1),
        ),
    )
    async with rt:
        run = (await rt.start("workflow:approve", {}, owner=P)).run
        await wait_until(lambda: internals(rt).supervisor.get(run.id) is None)  # passivated
        assert rt.get(run.id).status == "waiting"
        state, _ = await assert_graph_consistent(rt, run.id)
        assert statuses(state) == {"prepare": "completed", "ok": "running", "finish": "pending"}
        assert state.nodes["prepare"].output == {"n": 1}
        assert state.nodes["prepare"].finished_at is not None
        assert state.nodes["ok"].started_at == state.nodes["prepare"].finished_at
        assert internals(rt).supervisor.get(run.id) is None  # reading did not activate it
        await rt.resume(run.id, perdure.ApprovalDecision(key="ok", approved=True, approver="ann"))
        done = await rt.wait(run.id)
        state, _ = await assert_graph_consistent(rt, run.id)
    assert done.completion is not None and done.completion.result["finish"] == 2
    assert set(statuses(state).values()) == {"completed"} and state.current == []
    assert CALLS == {"prepare": 1}


async def test_graph_state_refuses_what_is_not_a_graph_run(data_dir: Path) -> None:
    rt = new_rt(data_dir)

    @rt.workflow("code")
    async def code(ctx: perdure.RunContext, inp: dict) -> None:
        return None

    async with rt:
        run = (await rt.start("workflow:code", {}, owner=P)).run
        await rt.wait(run.id)
        with pytest.raises(perdure.InvalidInput, match="not a step-graph run"):
            rt.graph_state(run.id)
        with pytest.raises(perdure.RunNotFound):
            rt.graph_state("nope")


# -- versions -------------------------------------------------------------------------------------


def v1(rt: perdure.Runtime) -> None:
    rt.graph(
        "ver", g.Graph(g.step("old", node_fn(wait=True)), g.step("tail", node_fn()), version=1)
    )


def v2(rt: perdure.Runtime) -> None:
    rt.graph("ver", g.Graph(g.step("new", node_fn()), version=2))


async def test_an_unfinished_run_of_an_unregistered_version_is_left_untouched(
    data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rt = new_rt(data_dir)
    v1(rt)
    async with rt:
        old = (await rt.start("workflow:ver", {}, owner=P)).run
        await wait_until(lambda: CALLS["old"] == 1)
    assert old.version == 1

    rt = new_rt(data_dir)
    v2(rt)  # version 1 is gone
    async with rt:
        assert rt.recovered["unregistered"] == 1
        assert f"{old.id} workflow:ver v1" in caplog.text
        await trio.sleep(0.1)
        assert rt.get(old.id).status == "running" and rt.get(old.id).journal_len == 0
        state = rt.graph_state(old.id)  # only what it recorded: nothing yet
        assert state.complete is False and state.nodes == {}
        new = (await rt.start("workflow:ver", {}, owner=P)).run
        assert new.version == 2 and (await rt.wait(new.id)).status == "completed"
    assert CALLS == {"old": 1, "new": 1}

    gate("old").set()
    rt = new_rt(data_dir)
    v1(rt)
    v2(rt)  # both registered: the old run finishes under version 1
    async with rt:
        done = await rt.wait(old.id)
        state, _ = await assert_graph_consistent(rt, old.id)
    assert done.completion is not None
    assert done.completion.result == {"old": "old-out", "tail": "tail-out"}
    assert state.complete and set(state.nodes) == {"old", "tail"}


# -- HTTP ------------------------------------------------------------------------------------------


async def test_the_http_route_serves_the_graph_state(data_dir: Path) -> None:
    from test_server_support import served

    rt = new_rt(data_dir)
    define_checkout(rt)

    @rt.workflow("code")
    async def code(ctx: perdure.RunContext, inp: dict) -> None:
        return None

    async with served(rt) as s:
        run = (await rt.start("workflow:checkout", {}, owner=P)).run
        await wait_until(lambda: CALLS["fraud"] == 1)
        r = await s.client.get(f"/runs/{run.id}/graph")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["run_id"] == run.id and body["status"] == "running"
        assert body["nodes"]["fetch"]["status"] == "completed"
        assert body["nodes"]["fetch"]["output"] == {"lines": [1, 2, 3, 4]}
        assert body["nodes"]["ship"] == {"status": "pending", "kind": "map", "path": "ship"}
        assert body["current"] == ["checks", "fraud", "stock"]
        code_run = (await rt.start("workflow:code", {}, owner=P)).run
        r = await s.client.get(f"/runs/{code_run.id}/graph")
        assert r.status_code == 400 and r.json()["code"] == "INVALID_INPUT"
        r = await s.client.get("/runs/missing/graph")
        assert r.status_code == 404 and r.json()["code"] == "RUN_NOT_FOUND"
        gate("fraud").set()
        gate("stock").set()
        for i in range(4):
            gate(f"line[{i}]").set()
        await rt.wait(run.id)
        r = await s.client.get(f"/runs/{run.id}/graph")
        assert r.json()["status"] == "completed" and r.json()["current"] == []


# -- command line ---------------------------------------------------------------------------------

APP = """
import trio
import perdure
from perdure import graph as g

rt = perdure.Runtime({path!r}, durability="process")

async def fetch(c):
    return {{"lines": [1, 2]}}

async def hold(c):
    await trio.sleep(3600)

rt.graph("order", g.Graph(
    g.step("fetch", fetch),
    g.branch("big", when=lambda c: len(c.outputs["fetch"]["lines"]) > 5,
             then=[g.step("manual", fetch)], otherwise=[g.step("auto", fetch)]),
    g.map("ship", items=lambda c: c.outputs["fetch"]["lines"], each=g.step("line", hold)),
    g.approval("ok"),
    version=3,
))
"""

HOLDER = """
import sys, trio, perdure
sys.path.insert(0, {app_dir!r})
from graphapp import rt

async def main():
    async with rt:
        run = (await rt.start("workflow:order", {{}}, owner=perdure.Project("p"), run_id="r-1")).run
        while rt.graph_state(run.id).nodes.get("line[1]") is None:
            await trio.sleep(0.01)
        print("ready", flush=True)
        await trio.sleep(3600)

trio.run(main)
"""


def _cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_the_command_line_beside_the_owning_process(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    (tmp_path / "graphapp.py").write_text(APP.format(path=str(data)))
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER.format(app_dir=str(tmp_path))],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert holder.stdout is not None
        deadline = time.monotonic() + 60
        line = ""
        while "ready" not in line:
            line = holder.stdout.readline()
            if not line and holder.poll() is not None:
                pytest.fail(f"holder exited: {holder.stderr.read() if holder.stderr else ''}")
            assert time.monotonic() < deadline
        monkeypatch.chdir(tmp_path)
        sys.modules.pop("graphapp", None)

        # With the app: every node, from the read-only store beside the owner.
        code, out, err = _cli(
            ["runs", "graph", "r-1", "--dir", str(data), "--app", "graphapp:rt", "--json"], capsys
        )
        assert code == 0, err
        state = json.loads(out)
        assert state["version"] == 3 and state["complete"] is True
        assert {k: v["status"] for k, v in state["nodes"].items()} == {
            "fetch": "completed",
            "big": "completed",
            "manual": "skipped",
            "auto": "completed",
            "ship": "running",
            "line[0]": "running",
            "line[1]": "running",
            "ok": "pending",
        }
        code, out, err = _cli(
            ["runs", "graph", "r-1", "--dir", str(data), "--app", "graphapp:rt"], capsys
        )
        assert code == 0, err
        assert "workflow:order v3" in out and "line[1]" in out and "running" in out
        assert "in flight: ship, line[0], line[1]" in out

        # Without it: the nodes the run recorded.
        code, out, err = _cli(["runs", "graph", "r-1", "--dir", str(data), "--json"], capsys)
        assert code == 0, err
        state = json.loads(out)
        assert state["complete"] is False and sorted(state["nodes"]) == ["auto", "fetch"]
        code, out, _ = _cli(["runs", "graph", "r-1", "--dir", str(data)], capsys)
        assert "pass --app" in out

        # graph show: Mermaid text, coloured by the run's states with --run.
        code, out, err = _cli(["graph", "show", "order", "--app", "graphapp:rt"], capsys)
        assert code == 0, err
        assert out.splitlines()[3] == "flowchart TD"
        assert 'n_ok{{"ok · approval"}}' in out and "n_fetch --> n_big" in out
        assert "classDef" not in out
        code, out, err = _cli(
            ["graph", "show", "order", "--app", "graphapp:rt", "--run", "r-1", "--dir", str(data)],
            capsys,
        )
        assert code == 0, err
        assert "class n_fetch,n_big,n_auto completed" in out
        assert "class n_ship,n_line running" in out
        assert "class n_manual skipped" in out and "class n_ok pending" in out

        # Errors: code and message, exit 2.
        code, _, err = _cli(["graph", "show", "nope", "--app", "graphapp:rt"], capsys)
        assert code == 2 and "no step graph 'nope'" in err
        code, _, err = _cli(["graph", "show", "order", "--app", "graphapp"], capsys)
        assert code == 2 and "MODULE:ATTR" in err
        code, _, err = _cli(["runs", "graph", "missing", "--dir", str(data)], capsys)
        assert code == 2 and err.startswith("error: RUN_NOT_FOUND")
    finally:
        holder.kill()
        holder.wait()


def test_mermaid_text_draws_every_kind() -> None:
    graph = g.Graph(
        g.step("a", lambda c: 1),
        g.parallel("p", [g.step("b", lambda c: 1), g.sub_workflow("s", "workflow:x")], mode="race"),
        g.loop("l", [g.sleep("z", 1), g.wait_event("e", event="go")], until=lambda c: True),
        g.map("m", items=lambda c: [], each=g.approval("y"), concurrency=2),
        g.step("d", lambda c: 1, depends_on=["a"], skip_if=lambda c: False),
    )
    graph.validate("demo", ["workflow:x"])
    text = g.to_mermaid(graph)
    for fragment in (
        'subgraph n_p["p · parallel (race)"]',
        'n_s[["s · workflow:x"]]',
        'n_z(["z · sleep"])',
        'n_e>"e · event go"]',
        "n_e -. again .-> n_z",
        'subgraph n_m["m · map (on_error fail, 2 at a time)"]',
        'n_y{{"y · approval"}}',
        "n_a --> n_d",
        'n_d["d ⟂"]',
    ):
        assert fragment in text, fragment
    assert "n_m --> n_d" not in text  # d depends on a only


def test_the_module_is_importable_as_the_contract_spells_it() -> None:
    code = textwrap.dedent(
        """
        import perdure
        from perdure import graph as g
        assert perdure.NodeContext is g.NodeContext
        print(sorted(n for n in ("Graph", "step", "parallel", "branch", "loop", "map",
              "sub_workflow", "approval", "wait_event", "sleep", "NodeContext",
              "GraphState", "NodeState") if hasattr(g, n)))
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(proc.stdout.replace("'", '"'))) == 13


def test_the_hosts_register_graphs_and_read_their_state(data_dir: Path) -> None:
    host = perdure.Host(data_dir, durability="process")
    host.graph("h", g.Graph(g.step("a", lambda c: 1), g.step("b", lambda c: c.outputs["a"] + 1)))
    with host:
        run = host.start("workflow:h", {}, owner=P).run
        assert host.wait(run.id).status == "completed"
        state = host.graph_state(run.id)
    assert {k: n.output for k, n in state.nodes.items()} == {"a": 1, "b": 2}


async def test_the_asyncio_host_forwards_graph_state(data_dir: Path) -> None:
    import asyncio

    async def main() -> dict[str, Any]:
        host = perdure.AsyncioHost(data_dir, durability="process")
        host.graph("h", g.Graph(g.step("a", lambda c: "x")))
        async with host:
            run = (await host.start("workflow:h", {}, owner=P)).run
            await host.wait(run.id)
            state = await host.graph_state(run.id)
        return {k: n.status for k, n in state.nodes.items()}

    result = await trio.to_thread.run_sync(lambda: asyncio.run(main()))
    assert result == {"a": "completed"}


async def test_a_run_still_pending_shows_every_node_pending(data_dir: Path) -> None:
    rt = new_rt(data_dir, max_running=1)
    define_checkout(rt)
    async with rt:
        first = (await rt.start("workflow:checkout", {}, owner=P)).run
        await wait_until(lambda: CALLS["fraud"] == 1)
        queued = (await rt.start("workflow:checkout", {}, owner=P)).run
        assert rt.get(queued.id).status == "pending"
        state = rt.graph_state(queued.id)
        assert set(statuses(state).values()) == {"pending"} and state.current == []
        for name in ("fraud", "stock", *(f"line[{i}]" for i in range(4))):
            gate(name).set()
        for run in (first, queued):
            assert (await rt.wait(run.id)).status == "completed"
