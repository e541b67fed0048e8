"""An order workflow declared as a step graph: parallel checks, a branch with a human
approval, a map over the order lines and a sub-workflow, with the run's node states.

    python examples/graph_order.py [DATA_DIR]
"""

from __future__ import annotations

import sys
import tempfile
from typing import Any

import trio

import perdure
from perdure import graph as g

rt = perdure.Runtime(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp() + "/data")


@rt.workflow("invoice")
async def invoice(ctx: perdure.RunContext, inp: dict[str, Any]) -> dict[str, Any]:
    return await ctx.step(
        "issue", lambda: {"invoice": f"INV-{inp['order']}", "total": inp["total"]}
    )


async def fetch(c: g.NodeContext) -> dict[str, Any]:
    lines = [{"sku": f"sku-{k}", "qty": k + 1, "price": 40} for k in range(c.input["lines"])]
    return {"id": c.input["order"], "lines": lines, "total": sum(x["qty"] * 40 for x in lines)}


async def fraud(c: g.NodeContext) -> dict[str, Any]:
    return {"ok": True, "score": 0.02}


def stock(c: g.NodeContext) -> dict[str, Any]:  # a plain function: runs in a worker thread
    return {"ok": all(line["qty"] < 10 for line in c.outputs["fetch"]["lines"])}


async def ship(c: g.NodeContext) -> dict[str, Any]:
    await c.custom("shipping", {"sku": c.item["sku"]})  # an event inside this node's step
    return {"sku": c.item["sku"], "parcel": f"P{c.index}"}


rt.graph(
    "order",
    g.Graph(
        g.step("fetch", fetch),
        g.parallel("checks", [g.step("fraud", fraud), g.step("stock", stock)]),
        g.branch(
            "big",
            when=lambda c: c.outputs["fetch"]["total"] > 100,
            then=[g.approval("ok", approvers=["ann"], prompt="Ship a big order?")],
        ),
        g.map(
            "ship",
            items=lambda c: c.outputs["fetch"]["lines"],
            each=g.step("parcel", ship),
            concurrency=2,
        ),
        g.sub_workflow(
            "bill",
            "workflow:invoice",
            input=lambda c: {"order": c.input["order"], "total": c.outputs["fetch"]["total"]},
        ),
        version=1,
        input_schema={"type": "object", "required": ["order", "lines"]},
        output=lambda c: {"parcels": [p["parcel"] for p in c.outputs["ship"]], **c.outputs["bill"]},
    ),
)


async def main() -> dict[str, Any]:
    async with rt:
        started = await rt.start(
            "workflow:order", {"order": 7, "lines": 3}, owner=perdure.Project("shop")
        )
        run_id = started.run.id
        while rt.get(run_id).status != "waiting":
            await trio.sleep(0.01)
        state = rt.graph_state(run_id)
        print("waiting at:", state.current)  # ['big', 'ok']
        await rt.resume(run_id, perdure.ApprovalDecision(key="ok", approved=True, approver="ann"))
        done = await rt.wait(run_id)
        for key, node in rt.graph_state(run_id).nodes.items():
            print(f"  {key:10} {node.status:10} {node.path}")
        print(done.status, done.completion.result if done.completion else None)
        print(g.to_mermaid(rt.graphs["order"].latest, rt.graph_state(run_id)))
        assert done.completion is not None
        result: dict[str, Any] = done.completion.result
        return result


if __name__ == "__main__":
    assert trio.run(main)["parcels"] == ["P0", "P1", "P2"]
