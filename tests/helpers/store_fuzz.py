"""Damage copies of a store and read them the way every reader does (run as a script).

``python store_fuzz.py PRISTINE WORK CASES``: for each ``[mode, i]`` of the JSON list
``CASES``, copy ``PRISTINE`` (a closed store directory) to ``WORK``, damage its
``data.mdb`` (``flip``: XOR one byte chosen by seed ``i``; ``zero``: zero page ``i``), then open it
read-only and for writing and read everything through :class:`perdure.storage.Store`
(``iter_runs``, ``query_runs`` pages, ``get_run``, ``events``, ``journal``), and decode
every event as the CLI and ``rt.events`` do. One JSON line per case, flushed before the
next, so that a case killing the process (SIGBUS) is known by the last line printed:

``{"mode": mode, "case": i, "readonly": OUTCOME, "writable": OUTCOME, "decode": OUTCOME}``
where an outcome is ``"ok"``, the
name of a :class:`perdure.StorageError` subclass, or ``"RAW <type>: <message>"``.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
from typing import Any

import perdure
from perdure.agui import decode_event, event_to_json
from perdure.storage import Store

PAGE = 4096


def damage(path: str, mode: str, case: int) -> None:
    with open(path, "r+b") as f:
        size = os.fstat(f.fileno()).st_size
        if mode == "flip":
            rng = random.Random(case)
            offset = rng.randrange(size)
            f.seek(offset)
            byte = f.read(1)[0]
            f.seek(offset)
            f.write(bytes([byte ^ rng.randrange(1, 256)]))
        else:
            f.seek(case * PAGE)
            f.write(b"\0" * min(PAGE, max(0, size - case * PAGE)))


def read_all(store: Store) -> list[bytes]:
    raws: list[bytes] = []
    ids = {rec.id: None for rec in store.iter_runs()}
    after = 0
    while True:
        runs, cursor = store.query_runs(after=after, limit=7)
        ids.update((rec.id, None) for rec in runs)
        if cursor is None:
            break
        after = cursor
    for run_id in ids:
        store.get_run(run_id)
        store.journal(run_id)
        raws.extend(raw for _, raw in store.events(run_id))
    return raws


def outcome(fn: Any) -> tuple[str, Any]:
    try:
        return "ok", fn()
    except perdure.StorageError as exc:
        return type(exc).__name__, None
    except Exception as exc:
        return f"RAW {type(exc).__module__}.{type(exc).__name__}: {str(exc)[:120]}", None


def one(pristine: str, work: str, mode: str, case: int) -> dict[str, Any]:
    if not os.path.isdir(work):
        shutil.copytree(pristine, work)
    shutil.copyfile(os.path.join(pristine, "data.mdb"), os.path.join(work, "data.mdb"))
    damage(os.path.join(work, "data.mdb"), mode, case)
    result: dict[str, Any] = {"mode": mode, "case": case}
    raws: list[bytes] = []
    for name, readonly in (("readonly", True), ("writable", False)):

        def read(readonly: bool = readonly) -> list[bytes]:
            store = Store(work, readonly=readonly, durability="process")
            try:
                return read_all(store)
            finally:
                store.close()

        result[name], got = outcome(read)
        raws = raws or (got or [])

    def decode() -> None:
        for raw in raws:
            event_to_json(decode_event(raw))

    result["decode"], _ = outcome(decode)
    return result


def main(argv: list[str]) -> None:
    pristine, work = argv[0], argv[1]
    for mode, case in json.loads(argv[2]):
        sys.stdout.write(json.dumps(one(pristine, work, mode, case)) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main(sys.argv[1:])
