"""Crash workload for purges (R38): continuous load while trees are purged, killed at will.

Usage::

    python purge_workload.py DATA_DIR ACK_FILE MARK_FILE [final]

Opens a :class:`perdure.Runtime` on ``DATA_DIR`` with a retention rule that keeps only
the 10 latest completed trees and a second task that calls ``rt.purge()`` in a loop, and
starts runs continuously (20 in flight, fresh ids per incarnation): 3-step workflows,
trees of a parent and two 3-step children, and "keepers" that take one step and then
wait forever (they are never terminal, so no purge may touch them). With ``final`` it
starts nothing and only lets what a killed incarnation left finish, then prints DONE.

ACK_FILE lines (one ``write`` on an ``O_APPEND`` descriptor, then ``fsync``: a line that
exists survived the kill):

- ``STARTED ID`` once ``rt.start`` returned (the run is durably recorded);
- ``ACK ID STEP`` once ``await ctx.step`` returned in the body (the result is durable);
- ``LAST ID`` once the body is past its last step: written again by every replay, so a
  run that completed (the only kind a purge removes) always has one.

MARK_FILE gets ``begin`` / ``end`` around each ``rt.purge()`` (flushed, not synced: the
page cache survives a SIGKILL), so the harness can kill inside a purge.
"""

from __future__ import annotations

import contextlib
import os
import sys

import trio

import perdure

P = perdure.Project("crash")


def main() -> None:
    directory, ack_path, mark_path = sys.argv[1:4]
    final = len(sys.argv) > 4 and sys.argv[4] == "final"
    incarnation = os.environ.get("PERDURE_INCARNATION", "0")
    ack = os.open(ack_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    marks = open(mark_path, "a")  # noqa: SIM115

    def witness(line: str) -> None:
        os.write(ack, (line + "\n").encode())
        os.fsync(ack)

    rt = perdure.Runtime(
        directory,
        durability="sync",
        retention=perdure.Retention(max_completed=10, interval=0.02),
    )

    async def value(v: str) -> str:
        return v

    async def steps(ctx: perdure.RunContext, names: tuple[str, ...]) -> None:
        for name in names:
            await ctx.step(name, value, name)
            witness(f"ACK {ctx.run_id} {name}")

    @rt.workflow("three")
    async def three(ctx: perdure.RunContext, inp: dict) -> dict:
        await steps(ctx, ("a", "b", "c"))
        witness(f"LAST {ctx.run_id}")
        return {"ok": True}

    @rt.workflow("tree")
    async def tree(ctx: perdure.RunContext, inp: dict) -> dict:
        kids = [await ctx.start_child("workflow:three", {}) for _ in range(2)]
        results = [await kid.result() for kid in kids]
        await steps(ctx, ("z",))
        witness(f"LAST {ctx.run_id}")
        return {"kids": results}

    @rt.workflow("keeper")
    async def keeper(ctx: perdure.RunContext, inp: dict) -> None:
        await steps(ctx, ("a",))
        await ctx.wait_for_event("never")

    async def purging() -> None:
        while True:
            marks.write("begin\n")
            marks.flush()
            await rt.purge()
            marks.write("end\n")
            marks.flush()
            await trio.sleep(0.005)

    async def one(i: int, slots: trio.Semaphore) -> None:
        try:
            target = "workflow:tree" if i % 10 == 3 else "workflow:three"
            run_id = f"r-{incarnation}-{i}"
            await rt.start(target, {}, owner=P, run_id=run_id)
            witness(f"STARTED {run_id}")
            with contextlib.suppress(perdure.RunNotFound):  # ended and purged already
                await rt.wait(run_id)
        finally:
            slots.release()

    async def load() -> None:
        for k in range(2):
            run_id = f"k-{incarnation}-{k}"
            await rt.start("workflow:keeper", {}, owner=P, run_id=run_id)
            witness(f"STARTED {run_id}")
        slots = trio.Semaphore(20)
        async with trio.open_nursery() as nursery:
            i = 0
            while True:
                await slots.acquire()
                nursery.start_soon(one, i, slots)
                i += 1

    async def run() -> None:
        async with rt:
            if final:
                for status in ("running", "pending"):
                    for rec in rt.list(status=status, limit=1000).runs:
                        with contextlib.suppress(perdure.RunNotFound):
                            await rt.wait(rec.id)
                print("DONE", flush=True)
                return
            print("ready", flush=True)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(purging)
                nursery.start_soon(load)

    trio.run(run)


if __name__ == "__main__":
    main()
