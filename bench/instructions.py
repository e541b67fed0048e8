"""Instructions per run: the CPU cost of a 3-step workflow, free of the VM's drift.

    valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file=/dev/null \\
        .venv/bin/python bench/instructions.py 500 async
    (the same with 2500) -> (I refs at 2500 - I refs at 500) / 2000 = instructions per run

Runs N trivial 3-step workflows, 100 in flight, on a ``process``-durability store in
/dev/shm (no fsync: the count is the runtime's own work). ``MODE`` picks the steps:
``async`` (async functions), ``sync`` (sync functions in worker threads) or ``inline``
(sync functions on the trio thread); ``purge`` runs ``async`` ones, then removes them
all with ``rt.purge`` (its count minus ``async``'s is what purging a run costs, R38).
Taking the difference of two sizes removes the
start-up cost; compare two trees by running both from their own checkout
(``PYTHONPATH=TREE``). Small changes show here long before a throughput benchmark
can tell them from noise.
"""

from __future__ import annotations

import sys
import tempfile
from typing import Any

import trio

import perdure


async def _value(x: int) -> dict[str, int]:
    return {"v": x}


def _sync_value(x: int) -> dict[str, int]:
    return {"v": x}


async def main(n: int, mode: str) -> None:
    rt = perdure.Runtime(tempfile.mkdtemp(dir="/dev/shm") + "/d", durability="process")
    fn: Any = _value if mode in ("async", "purge") else _sync_value
    options: dict[str, Any] = {"inline": True} if mode == "inline" else {}

    @rt.workflow("three")
    async def three(ctx: perdure.RunContext, inp: dict) -> dict:
        a = await ctx.step("a", fn, 1, **options)
        b = await ctx.step("b", fn, 2, **options)
        c = await ctx.step("c", fn, 3, **options)
        return {"a": a, "b": b, "c": c}

    left = n

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            started = await rt.start("workflow:three", {}, owner=perdure.Project("p"))
            await rt.wait(started.run.id)

    async with rt:
        async with trio.open_nursery() as nursery:
            for _ in range(100):
                nursery.start_soon(worker)
        if mode == "purge":
            purged = await rt.purge(before=None, statuses=["completed"])
            assert purged == n, purged


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    kind = sys.argv[2] if len(sys.argv) > 2 else "async"
    if kind not in ("async", "sync", "inline", "purge"):
        raise SystemExit("MODE is async, sync, inline or purge")
    trio.run(main, count, kind)
