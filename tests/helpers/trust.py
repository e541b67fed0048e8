"""Helpers of the trust-at-the-boundary tests (R30-R32): "every reader still works".

After a hostile value was refused (or accepted), these prove that nothing stored can
break a later read:

* :func:`assert_readers_work`: through the open runtime: ``get`` of every run, every
  ``list`` page, each run's whole log (decoded and rendered to its JSON wire form),
  ``wait`` and ``events(follow=True)`` on the ended ones (both must answer at once);
* :func:`cli_reads`: ``perdure runs list/show/events`` (text and ``--json``) against the
  closed store, in one subprocess: every command exits 0 without a traceback;
* :func:`check_store_as_wire`: the suite's log check (:func:`helpers.checks.check_log`)
  for stores whose completions hold values that the JSON wire writes differently, as
  documented in ``perdure/runtime/_boundary.py`` (NaN and infinities read as ``null``,
  dict keys become strings) or leaves out (a result too large for ``RUN_FINISHED``).
* :func:`wire_equal` / :func:`same`: comparisons for those documented conversions.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import trio

import perdure
from helpers.checks import check_log
from perdure.agui import decode_event, event_to_json
from perdure.storage import Store

__all__ = [
    "assert_readers_work",
    "check_store_as_wire",
    "cli",
    "cli_batch",
    "cli_reads",
    "same",
    "wire_form",
]


def same(a: Any, b: Any) -> bool:
    """Deep equality where NaN equals NaN (a stored NaN must read back as NaN)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


def wire_form(value: Any) -> Any:
    """What the JSON wire (events, HTTP, ``--json``) says for a stored plain value."""
    return json.loads(msgspec.json.encode(value))


async def assert_readers_work(rt: perdure.Runtime, run_ids: list[str] | None = None) -> None:
    """Every public reader answers for every run (or for ``run_ids``), quickly."""
    with trio.fail_after(30):
        listed: list[str] = []
        cursor: str | None = None
        while True:
            page = rt.list(after=cursor, limit=1000)
            listed.extend(rec.id for rec in page.runs)
            cursor = page.next_cursor
            if cursor is None:
                break
        ids = listed if run_ids is None else run_ids
        assert set(ids) <= set(listed), "a run is missing from rt.list"
        for run_id in ids:
            rec = rt.get(run_id)
            json.dumps(wire_form(rec))  # the HTTP API's rendering of a record
            log = [event async for event in rt.events(run_id, follow=False)]
            assert [e.event_id for e in log] == list(range(1, len(log) + 1)), run_id
            for event in log:
                json.dumps(event.to_wire())
            if rec.terminal:
                with trio.fail_after(5):
                    assert (await rt.wait(run_id)).status == rec.status
                    followed = [event async for event in rt.events(run_id, follow=True)]
                assert len(followed) == len(log)


_CLI_DRIVER = r"""
import contextlib, io, json, sys, traceback
from perdure.cli import main
results = []
for argv in json.loads(sys.argv[1]):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except BaseException:
            code = "raised"
            err.write(traceback.format_exc())
    results.append([argv, code, out.getvalue(), err.getvalue()])
sys.stdout.write(json.dumps(results))
"""


def cli(*args: str, cwd: str | os.PathLike[str] | None = None, **env: str) -> Any:
    """Run the real ``perdure`` command (``python -m perdure.cli``) in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "perdure.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env={**os.environ, **env},
    )


def cli_batch(
    commands: list[list[str]], *, user: str | None = None, env: dict[str, str] | None = None
) -> list[list[Any]]:
    """Run ``perdure.cli.main(argv)`` for each command, in ONE fresh interpreter (as user
    ``nobody`` if asked, with ``env`` added to the environment); returns ``[argv, exit
    code or "raised", stdout, stderr]`` for each."""
    command = [sys.executable, "-c", _CLI_DRIVER, json.dumps(commands)]
    if user is not None:
        command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command]
    proc = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=120,
        cwd="/",
        env={**os.environ, **(env or {})},
    )
    assert proc.returncode == 0, proc.stderr
    results: list[list[Any]] = json.loads(proc.stdout)
    return results


def cli_reads(
    path: str | os.PathLike[str], run_ids: list[str], *, user: str | None = None
) -> list[list[Any]]:
    """``perdure runs list/show/events`` (text and JSON) on a store, in one subprocess;
    asserts each exits 0 without a traceback; returns ``[argv, code, out, err]`` each."""
    d = str(path)
    commands = [
        ["runs", "list", "--dir", d, "--limit", "1000"],
        ["runs", "list", "--dir", d, "--json"],
    ]
    for run_id in run_ids:
        commands += [
            ["runs", "show", run_id, "--dir", d],
            ["runs", "show", run_id, "--dir", d, "--json"],
            ["runs", "events", run_id, "--dir", d],
            ["runs", "events", run_id, "--dir", d, "--json"],
        ]
    results = cli_batch(commands, user=user)
    for argv, code, out, err in results:
        assert code == 0 and "Traceback" not in err, f"perdure {' '.join(argv)}: {code}\n{err}"
        if "--json" in argv:
            for line in out.splitlines():
                json.loads(line)
    return results


def check_store_as_wire(path: str | os.PathLike[str]) -> None:
    """:func:`helpers.checks.check_log` for every run of a closed store, comparing a
    completion with its terminal event as the wire carries it (see the module doc)."""
    store = Store(path, readonly=True)
    try:
        for rec in store.iter_runs():
            pairs = store.events(rec.id)
            wire = [json.loads(event_to_json(decode_event(raw))) for _, raw in pairs]
            completion = rec.completion
            if completion is not None and completion.result is not None:
                last = wire[-1] if wire else {}
                omitted = (last.get("metadata") or {}).get("perdure", {}).get("resultOmitted")
                result = None if omitted else wire_form(completion.result)
                rec = msgspec.structs.replace(
                    rec, completion=msgspec.structs.replace(completion, result=result)
                )
            check_log(rec, [event_id for event_id, _ in pairs], wire)
    finally:
        store.close()


def store_files(path: str | os.PathLike[str]) -> dict[str, bytes]:
    """Bytes of each file directly in ``path`` (a store directory), except ``lock.mdb``:
    LMDB's reader table, which every reader may write."""
    return {
        p.name: p.read_bytes()
        for p in sorted(Path(path).iterdir())
        if p.is_file() and p.name != "lock.mdb"
    }


async def http_reads(rt: perdure.Runtime, run_ids: list[str]) -> None:
    """Serve ``rt`` (not open yet: the server opens it, so its waiting runs replay) and
    check that ``GET /runs``, ``/runs/{id}``, ``/runs/{id}/events`` and
    ``/runs/{id}/snapshot`` over loopback all answer 200 with JSON."""
    from test_server_support import served

    with trio.fail_after(30):
        async with served(rt) as s:
            r = await s.client.get("/runs", params={"limit": 1000})
            assert r.status_code == 200, r.text
            for run_id in run_ids:
                for url in (
                    f"/runs/{run_id}",
                    f"/runs/{run_id}/events",
                    f"/runs/{run_id}/snapshot",
                ):
                    r = await s.client.get(url)
                    assert r.status_code == 200, f"{url}: {r.status_code} {r.text[:300]}"
                    r.json()
