"""Crash workload for step graphs and concurrent steps: a process meant to be SIGKILLed.

Usage::

    python graph_workload.py DATA_DIR WITNESS_FILE N_RUNS

It opens a :class:`perdure.Runtime` (``durability="sync"``) on ``DATA_DIR``, which
recovers whatever a killed incarnation left, starts ``N_RUNS`` runs of
``workflow:order`` (a step graph) and ``N_RUNS // 2`` of ``workflow:fanout`` (a code
workflow awaiting four steps at once from a nursery) for its own incarnation and for
every earlier one (caller run ids ``g-INC-NNN``: idempotent, so earlier incarnations'
runs are not started twice and every launch has fresh runs to be killed in), waits for
all of them, prints ``DONE`` and exits 0.

``workflow:order`` (:func:`define`): ``fetch`` → ``checks``, a parallel of ``fraud``,
``stock`` and ``credit`` → ``ship``, a map over 6 items, 3 at a time → ``done``. Every
node and step function sleeps a few milliseconds (so kills land mid-parallel and
mid-map) and, before it returns, appends ``ATTEMPT RUN NODE TOKEN`` to the witness file
with one ``write`` and an ``fsync``; ``TOKEN`` (``INC.SEQ``: the incarnation from
``PERDURE_INCARNATION`` and a counter) is also part of the node's output, so the
harness knows which attempt's result the journal recorded.
"""

from __future__ import annotations

import itertools
import os
import random
import sys
import threading
from typing import Any

ITEMS = 6


def define(rt: Any, witness: Any = None) -> None:
    """Register ``workflow:order`` and ``workflow:fanout`` (``witness(run, node) -> token``)."""
    import trio

    import perdure
    from perdure import graph as g

    def mark(run_id: str, node: str) -> str:
        return witness(run_id, node) if witness is not None else "audit"

    async def work(c: g.NodeContext) -> dict[str, Any]:
        await trio.sleep(random.uniform(0.002, 0.03))
        return {"node": c.node, "item": c.item, "token": mark(c.run_id, c.node)}

    rt.graph(
        "order",
        g.Graph(
            g.step("fetch", work),
            g.parallel(
                "checks", [g.step("fraud", work), g.step("stock", work), g.step("credit", work)]
            ),
            g.map(
                "ship", items=lambda c: list(range(ITEMS)), each=g.step("line", work), concurrency=3
            ),
            g.step("done", work),
            output=lambda c: {
                "checks": sorted(c.outputs["checks"]),
                "lines": [x["item"] for x in c.outputs["ship"]],
            },
        ),
    )

    @rt.workflow("fanout")
    async def fanout(ctx: perdure.RunContext, inp: dict[str, Any]) -> dict[str, Any]:
        results: dict[str, Any] = {}

        async def call(name: str) -> None:
            async def fn() -> dict[str, Any]:
                await trio.sleep(random.uniform(0.002, 0.03))
                return {"node": name, "token": mark(ctx.run_id, name)}

            results[name] = await ctx.step(name, fn)

        async with trio.open_nursery() as nursery:
            for name in ("t0", "t1", "t2", "t3"):
                nursery.start_soon(call, name)
        return {"calls": sorted(results)}


def main(argv: list[str]) -> int:
    data_dir, witness_path, n_runs = argv[1], argv[2], int(argv[3])
    incarnation = int(os.environ.get("PERDURE_INCARNATION", "0"))

    import trio

    import perdure

    fd = os.open(witness_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    counter = itertools.count(1)
    lock = threading.Lock()

    def witness(run_id: str, node: str) -> str:
        with lock:
            token = f"{incarnation}.{next(counter)}"
            os.write(fd, f"ATTEMPT {run_id} {node} {token}\n".encode())
            os.fsync(fd)
        return token

    rt = perdure.Runtime(data_dir, durability="sync")
    define(rt, witness)
    owner = perdure.Project("crash")

    async def run() -> None:
        async with rt:
            print("OPEN", flush=True)
            ids: list[str] = []
            for inc in range(incarnation + 1):
                for name, prefix, count in (("order", "g", n_runs), ("fanout", "f", n_runs // 2)):
                    for i in range(count):
                        run_id = f"{prefix}-{inc}-{i:03d}"
                        started = await rt.start(f"workflow:{name}", {}, owner=owner, run_id=run_id)
                        ids.append(started.run.id)
            for run_id in ids:
                rec = await rt.wait(run_id)
                if rec.status != "completed":
                    raise RuntimeError(f"{run_id} ended {rec.status}: {rec.completion}")
        print("DONE", flush=True)

    trio.run(run)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
