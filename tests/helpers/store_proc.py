"""Subprocess helper: open a perdure store in another process and report as JSON.

Usage::

    python store_proc.py open PATH        # try Store(PATH) for writing, report, exit
    python store_proc.py readonly PATH    # Store(PATH, readonly=True): report the run ids
    python store_proc.py hold PATH        # open for writing, print "ready", hold until killed
    python store_proc.py crash-first-open PATH
                                          # die (os._exit) in the middle of a first open,
                                          # after LMDB created its files, before the init commit

Each prints one JSON line: ``{"ok": true, "pid": ..., ...}`` or
``{"ok": false, "pid": ..., "error": CLASS, "code": ..., "message": ..., "detail": ...}``.
"""

from __future__ import annotations

import json
import os
import sys
import time


def main() -> None:
    mode, path = sys.argv[1], sys.argv[2]
    from perdure import PerdureError
    from perdure.storage import Store

    out: dict[str, object] = {"pid": os.getpid()}
    if mode == "crash-first-open":
        Store._create_databases = lambda self: os._exit(17)  # type: ignore[method-assign]
    try:
        store = Store(path, readonly=(mode == "readonly"))
    except PerdureError as exc:
        out.update(ok=False, error=type(exc).__name__, **exc.to_dict())
        print(json.dumps(out, default=repr), flush=True)
        return
    out["ok"] = True
    if mode == "readonly":
        out["runs"] = [rec.id for rec in store.iter_runs()]
    print(json.dumps(out), flush=True)
    if mode == "hold":
        print("ready", flush=True)
        while True:
            time.sleep(60)
    store.close()


if __name__ == "__main__":
    main()
