"""The demo's crash worker: a separate process the demo kills with SIGKILL mid-run.

    python -m perdure._demo._worker DIR --effects FILE --runs N --tag TAG [--durability D]

It opens ``DIR`` (the demo process has closed it: one process owns a directory),
starts ``N`` runs of ``workflow:ingest`` with ids ``ingest-TAG-0000`` …, appends
``STARTED N PID`` to the witness file ``FILE`` once every start is durable, waits
for all of them and appends ``DONE PID``. The demo kills it long before that; the
step functions append ``EFFECT``/``ACK`` lines to the same file (see
:func:`perdure._demo._definitions.register_demo`).
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Sequence

import trio

from perdure import Project, Runtime

from ._definitions import Witness, register_demo

__all__ = ["INGEST_OWNER", "ingest_run_id", "main"]

INGEST_OWNER = "ingest"


def ingest_run_id(tag: str, i: int) -> str:
    return f"ingest-{tag}-{i:04d}"


async def _work(rt: Runtime, runs: int, tag: str, witness: Witness) -> None:
    async with rt:
        ids = [ingest_run_id(tag, i) for i in range(runs)]
        async with trio.open_nursery() as nursery:
            for i, run_id in enumerate(ids):
                nursery.start_soon(
                    functools.partial(
                        rt.start,
                        "workflow:ingest",
                        {"batch": i},
                        owner=Project(INGEST_OWNER),
                        run_id=run_id,
                    )
                )
        witness.write("STARTED", str(runs), str(os.getpid()))
        for run_id in ids:
            await rt.wait(run_id)
        witness.write("DONE", str(os.getpid()))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m perdure._demo._worker")
    parser.add_argument("directory")
    parser.add_argument("--effects", required=True)
    parser.add_argument("--runs", type=int, required=True)
    parser.add_argument("--tag", required=True)
    parser.add_argument("--durability", choices=("sync", "process", "memory"), default="sync")
    args = parser.parse_args(argv)
    rt = Runtime(args.directory, durability=args.durability)
    register_demo(rt, effects=args.effects)
    trio.run(_work, rt, args.runs, args.tag, Witness(args.effects))
    return 0


if __name__ == "__main__":
    sys.exit(main())
