"""Checks every test applies to what perdure stores.

* :func:`check_log` — one run's log is a valid AG-UI stream (the Python port of
  ``@ag-ui/client``'s ``verifyEvents`` *and* the ``ag_ui.core`` pydantic models), its
  event ids are 1..n without gaps, and its terminal event agrees with the record's
  completion (R3, R19).
* :func:`assert_valid_log` — fetch a run's full log through the public API and check it.
* :func:`check_store_logs` — check every run of a closed data directory (the conftest
  runs it after every test for every Runtime the test created).
* :func:`dump_store` / :func:`snapshot_dir` — byte-exact images used to prove that
  something was (or was not) stored or modified.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import trio
from ag_ui.core import Event as AguiEvent
from pydantic import TypeAdapter

import perdure
from perdure.agui import (
    MAX_EVENT_BYTES,
    decode_event,
    event_to_json,
    verify_events,
    verify_prefixes,
)
from perdure.storage import RunRecord, Store
from perdure.storage._records import Ending

from .fires import fire_problems

__all__ = [
    "AGUI_EVENT",
    "assert_valid_log",
    "check_log",
    "check_store_logs",
    "dump_store",
    "named_run",
    "read_log",
    "snapshot_dir",
    "wait_until",
    "wire_log",
]

AGUI_EVENT: TypeAdapter[Any] = TypeAdapter(AguiEvent)

_TERMINAL = ("completed", "failed", "cancelled")


def _is_terminal_event(wire: dict[str, Any]) -> bool:
    if wire["type"] == "RUN_ERROR":
        return True
    if wire["type"] == "RUN_FINISHED":
        outcome = wire.get("outcome")
        return outcome is None or outcome.get("type") != "interrupt"
    return False


def check_log(rec: RunRecord, ids: list[int], wire: list[dict[str, Any]]) -> None:
    """Assert that ``wire`` (with event ids ``ids``) is a valid log for ``rec``."""
    where = f"run {rec.id} ({rec.target}, {rec.status})"
    assert ids == list(range(1, len(ids) + 1)), f"{where}: event ids have gaps: {ids}"
    assert rec.last_event_id == len(ids), (
        f"{where}: record says last_event_id={rec.last_event_id}, log has {len(ids)} events"
    )
    for i, event in enumerate(wire):
        try:
            AGUI_EVENT.validate_python(event)
        except Exception as exc:  # pydantic.ValidationError
            raise AssertionError(
                f"{where}: event #{i + 1} fails ag_ui.core: {exc}\n{event}"
            ) from None
        size = len(msgspec.json.encode(event))
        assert size <= MAX_EVENT_BYTES, f"{where}: event #{i + 1} is {size} bytes (cap, R19)"
    if rec.status == "pending":
        assert rec.completion is None, f"{where}: pending run has a completion"
        assert wire == [], f"{where}: a pending run has no log yet, got {[e['type'] for e in wire]}"
        return
    assert wire, f"{where}: a started run has at least RUN_STARTED"
    first = wire[0]
    assert first["type"] == "RUN_STARTED", f"{where}: log starts with {first['type']}"
    thread = rec.owner.id if rec.kind == "agent" else rec.root_id
    for event in wire:
        if event["type"] in ("RUN_STARTED", "RUN_FINISHED"):
            assert event["runId"] == rec.id, f"{where}: {event['type']} names run {event['runId']}"
            assert event["threadId"] == thread, f"{where}: threadId {event['threadId']} != {thread}"
    terminal_at = [i for i, event in enumerate(wire) if _is_terminal_event(event)]
    if rec.status in _TERMINAL:
        verify_prefixes(wire)
        assert terminal_at == [len(wire) - 1], (
            f"{where}: exactly one terminal event, last; found at {terminal_at} of {len(wire)}"
        )
        comp = rec.completion
        assert comp is not None, f"{where}: terminal run without completion"
        assert comp.status == rec.status
        assert rec.waiting is None
        last = wire[-1]
        usage = [msgspec.to_builtins(u) for u in comp.usage] or None
        if rec.status == "failed":
            assert last["type"] == "RUN_ERROR", f"{where}: failed run ends with {last['type']}"
            assert comp.error is not None
            assert last.get("code") == comp.error.code
            assert last["message"] == comp.error.message
        else:
            assert last["type"] == "RUN_FINISHED", f"{where}: ends with {last['type']}"
            outcome = last.get("outcome")
            if rec.status == "completed":
                assert outcome is None or outcome["type"] == "success", f"{where}: {outcome}"
                assert last.get("result") == comp.result
                assert comp.error is None
            else:
                assert outcome == {"type": "cancelled"}, f"{where}: {outcome}"
                assert comp.result is None and comp.error is None
        assert last.get("usage") == usage, f"{where}: usage {last.get('usage')} != {usage}"
    else:
        verify_events(wire)
        assert rec.completion is None, f"{where}: non-terminal run has a completion"
        assert not terminal_at, f"{where}: non-terminal run has a terminal event"


async def read_log(rt: perdure.Runtime, run_id: str, after: int = 0) -> list[perdure.RunEvent]:
    """The committed log of a run (``follow=False``)."""
    return [event async for event in rt.events(run_id, after, follow=False)]


def wire_log(events: list[perdure.RunEvent]) -> list[dict[str, Any]]:
    return [event.to_wire() for event in events]


async def wire(rt: perdure.Runtime, run_id: str) -> list[dict[str, Any]]:
    """The committed log of a run in its wire form."""
    return wire_log(await read_log(rt, run_id))


def types(wire: list[dict[str, Any]]) -> list[str]:
    """The ``type`` of every event of a wire log."""
    return [e["type"] for e in wire]


def interrupts(wire: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """The interrupts of every ``RUN_FINISHED`` outcome=interrupt of a wire log."""
    return [
        e["outcome"]["interrupts"]
        for e in wire
        if e["type"] == "RUN_FINISHED" and (e.get("outcome") or {}).get("type") == "interrupt"
    ]


async def assert_valid_log(rt: perdure.Runtime, run_id: str) -> list[dict[str, Any]]:
    """Fetch a run's full log through the public API, check it, return its wire form."""
    events = await read_log(rt, run_id)
    rec = rt.get(run_id)
    for event in events:
        assert event.run_id == run_id
        assert event.type == event.to_wire()["type"]
    wire = wire_log(events)
    check_log(rec, [event.event_id for event in events], wire)
    return wire


async def finish(
    rt: perdure.Runtime, run_id: str
) -> tuple[perdure.RunRecord, list[dict[str, Any]]]:
    """Wait for a run to end, check its whole log (every prefix of it too, as a
    finished run's) and return the record and the log's wire form."""
    rec = await rt.wait(run_id)
    return rec, await assert_valid_log(rt, run_id)


def assert_valid_log_host(host: perdure.Host, run_id: str) -> list[dict[str, Any]]:
    """:func:`assert_valid_log` through the blocking Host facade."""
    events = list(host.events(run_id, follow=False))
    rec = host.get(run_id)
    wire = [event.to_wire() for event in events]
    check_log(rec, [event.event_id for event in events], wire)
    return wire


def check_store_logs(path: str | os.PathLike[str]) -> list[str]:
    """Check the log of every run stored in a closed data directory; return problems."""
    return _with_store(path, log_problems)


def check_store(path: str | os.PathLike[str]) -> list[str]:
    """The after-test checks of a closed data directory, on one opening of it: every
    run's log, and the cron fires (R25: one run per tick, one tick per run)."""
    return _with_store(
        path, lambda store, where: log_problems(store, where) + fire_problems(store, where)
    )


def _with_store(
    path: str | os.PathLike[str], check: Callable[[Store, str | os.PathLike[str]], list[str]]
) -> list[str]:
    try:
        store = Store(path, readonly=True)
    except perdure.StorageError as exc:
        # A test that damages a store on purpose marks itself no_log_check.
        return [f"{path}: the store does not open: {exc}"]
    try:
        return check(store, path)
    finally:
        store.close()


def log_problems(store: Store, path: str | os.PathLike[str]) -> list[str]:
    """Problems with the log of every run of an open store (``path`` names it)."""
    problems: list[str] = []
    for rec in store.iter_runs():
        pairs = store.events(rec.id)
        ids = [event_id for event_id, _ in pairs]
        wire = [json.loads(event_to_json(decode_event(raw))) for _, raw in pairs]
        try:
            check_log(rec, ids, wire)
        except AssertionError as exc:
            problems.append(f"{path}: {exc}")
        except Exception as exc:  # the AG-UI verifier's AGUIProtocolError
            problems.append(f"{path}: run {rec.id}: {type(exc).__name__}: {exc}")
    return problems


def named_run(db: str, key: bytes, value: bytes) -> str:
    """The run id an ``index``, ``idem`` or ``waiting`` entry names: its value, except
    for an ``f`` entry, whose value is an :class:`Ending` (or the run id in a store
    written before endings)."""
    if db == "index" and key[:1] == b"f" and value[:1] and value[0] & 0xC0 == 0x80:
        return msgspec.msgpack.decode(value, type=Ending).id
    return value.decode()


def dump_store(store: Store) -> dict[str, dict[bytes, bytes]]:
    """Every key and value of every named database of an open store."""
    out: dict[str, dict[bytes, bytes]] = {}
    with store.read() as txn:
        for name, db in store.dbs.items():
            out[name] = {bytes(k): bytes(v) for k, v in txn.cursor(db=db)}
    return out


def snapshot_dir(path: str | os.PathLike[str]) -> dict[str, bytes]:
    """Relative path -> bytes of every file under ``path`` (directories as ``b"<dir>"``)."""
    root = Path(path)
    out: dict[str, bytes] = {}
    for item in sorted(root.rglob("*")):
        rel = str(item.relative_to(root))
        out[rel] = b"<dir>" if item.is_dir() else item.read_bytes()
    return out


async def wait_until(
    predicate: Callable[[], bool], timeout: float = 5.0, what: str = "", step: float = 0.002
) -> None:
    """Poll ``predicate`` every ``step`` seconds until true or fail after ``timeout``.

    A coarse ``step`` keeps virtual-time tests (long timeouts) fast.
    """
    with trio.move_on_after(timeout):
        while not predicate():
            await trio.sleep(step)
        return
    raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")


async def waiting(rt: perdure.Runtime, run_id: str, count: int = 1) -> perdure.RunRecord:
    """Wait until the run is ``waiting`` with ``count`` open waits; return its record."""

    def ready() -> bool:
        rec = rt.get(run_id)
        return (
            rec.status == "waiting" and rec.waiting is not None and len(rec.waiting.waits) == count
        )

    await wait_until(ready, what=f"run {run_id} waiting on {count}")
    return rt.get(run_id)
