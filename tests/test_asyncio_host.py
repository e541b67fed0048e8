"""perdure.AsyncioHost: the whole Runtime API awaitable from asyncio (R36).

The tests are plain functions that run their own asyncio loop (the suite's
default loop is trio's); the runtime runs on the host's own trio thread. The
conftest re-verifies every log the hosts wrote.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio
from helpers.defs import register

import perdure
from perdure.runtime._asyncio_host import RUNTIME_SURFACE

P = perdure.Project("p1")


def make_host(path: Path, **options: Any) -> perdure.AsyncioHost:
    options.setdefault("durability", "process")
    host = perdure.AsyncioHost(path, **options)
    register(host.runtime)

    @host.workflow("approve")
    async def approve(ctx: perdure.RunContext, inp: dict) -> dict:
        decision = await ctx.wait_for_approval("ok", prompt="go?")
        return {"approved": decision.approved}

    @host.workflow("paid")
    async def paid(ctx: perdure.RunContext, inp: dict) -> dict:
        return {"payment": await ctx.wait_for_event("payment")}

    @host.workflow("slow")
    async def slow(ctx: perdure.RunContext, inp: dict) -> dict:
        await trio.sleep_forever()
        return {}

    return host


def run(main: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(main())  # type: ignore[arg-type]


def test_the_api_from_asyncio(data_dir: Path) -> None:
    host = make_host(data_dir)

    async def main() -> None:
        async with host:
            started = await host.start("workflow:emit", {"n": 3}, owner=P)
            assert isinstance(started, perdure.Started) and not started.duplicate
            again = await host.start("workflow:echo", {"a": 1}, owner=P, idempotency_key="k")
            dup = await host.start("workflow:echo", {"a": 1}, owner=P, idempotency_key="k")
            assert dup.duplicate and dup.run.id == again.run.id
            live = [ev async for ev in host.events(started.run.id)]
            assert [ev.event_id for ev in live] == list(range(1, len(live) + 1))
            assert live[0].type == "RUN_STARTED" and live[-1].type == "RUN_FINISHED"
            done = await host.wait(started.run.id)
            assert done.status == "completed" and done.completion is not None
            assert await host.get(started.run.id) == done
            page = await host.list(owner=P, limit=1)
            assert len(page.runs) == 1 and page.next_cursor is not None
            assert abs(await host.now() - __import__("time").time()) < 60
            with pytest.raises(perdure.RunNotFound):
                await host.get("missing")
            with pytest.raises(perdure.UnknownTarget):
                await host.start("workflow:nope", owner=P)

            waiting = await host.start("workflow:approve", {}, owner=P)
            await _until(lambda: host.get(waiting.run.id), "waiting")
            decision = perdure.ApprovalDecision(key="ok", approved=True, approver="ann")
            first = await host.resume(waiting.run.id, decision)
            second = await host.resume(waiting.run.id, decision)
            assert not first.duplicate and second.duplicate
            assert (await host.wait(waiting.run.id)).completion.result == {"approved": True}

            paid = await host.start("workflow:paid", {}, owner=perdure.Project("shop"))
            await _until(lambda: host.get(paid.run.id), "waiting")
            taken = await host.publish(
                perdure.ExternalEvent(name="payment", payload=42), owner=perdure.Project("shop")
            )
            assert taken == [paid.run.id]
            assert (await host.wait(paid.run.id)).completion.result == {"payment": 42}

            slow = await host.start("workflow:slow", {}, owner=P)
            cancelled = await host.cancel(slow.run.id, "enough")
            assert cancelled.cancelled and cancelled.run.status == "cancelled"

    run(main)


async def _until(read: Callable[[], Awaitable[perdure.RunRecord]], status: str) -> None:
    for _ in range(500):
        if (await read()).status == status:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never reached {status}")


def test_cancelling_the_asyncio_caller_cancels_the_call_on_trio(data_dir: Path) -> None:
    host = make_host(data_dir)

    async def main() -> None:
        async with host:
            slow = await host.start("workflow:slow", {}, owner=P)
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(host.wait(slow.run.id), 0.05)
            # The host goes on working, and the iteration of a cancelled stream ends.
            stream = host.events(slow.run.id)
            first = await stream.__anext__()
            assert first.type == "RUN_STARTED"
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(stream.__anext__(), 0.05)
            await stream.aclose()
            assert (await host.cancel(slow.run.id)).cancelled

    run(main)


def test_closing_the_host_fails_calls_in_flight_and_reopens(data_dir: Path) -> None:
    host = make_host(data_dir)

    async def main() -> str:
        async with host:
            slow = await host.start("workflow:slow", {}, owner=P)
            waiter = asyncio.ensure_future(host.wait(slow.run.id))
            await asyncio.sleep(0.05)
        with pytest.raises(perdure.PerdureError):
            await waiter
        with pytest.raises(perdure.PerdureError, match="not open"):
            await host.get(slow.run.id)
        async with host:  # the same host opens again and the run is recovered
            assert (await host.get(slow.run.id)).status == "running"
            assert (await host.cancel(slow.run.id)).cancelled
        return slow.run.id

    run(main)


def test_an_open_failure_surfaces_from_aenter(data_dir: Path) -> None:
    first = make_host(data_dir)
    second = perdure.AsyncioHost(data_dir)

    async def main() -> None:
        async with first:
            with pytest.raises(perdure.DirectoryLocked):
                await second.__aenter__()
            with pytest.raises(perdure.PerdureError, match="already open"):
                await first.__aenter__()
        await second.aclose()  # closing a host that never opened is a no-op

    run(main)


# -- surface parity -------------------------------------------------------------------------


def public_callables(cls: type) -> set[str]:
    return {
        name
        for name, value in inspect.getmembers(cls)
        if not name.startswith("_") and callable(value)
    }


def parity_gaps(host_cls: type) -> tuple[set[str], set[str]]:
    """(Runtime methods RUNTIME_SURFACE does not classify, API rows ``host_cls`` lacks)."""
    unclassified = public_callables(perdure.Runtime) - set(RUNTIME_SURFACE)
    api = set(RUNTIME_SURFACE)
    return unclassified, api - public_callables(host_cls)


def test_every_runtime_method_is_classified_and_the_asyncio_host_has_the_api() -> None:
    unclassified, missing = parity_gaps(perdure.AsyncioHost)
    assert unclassified == set(), f"add these Runtime methods to RUNTIME_SURFACE: {unclassified}"
    assert missing == set()
    stale = set(RUNTIME_SURFACE) - public_callables(perdure.Runtime)
    assert stale == set(), f"RUNTIME_SURFACE names methods the Runtime lost: {stale}"
    for name, how in RUNTIME_SURFACE.items():
        forwarded = getattr(perdure.AsyncioHost, name, None)
        if how in ("await", "sync"):
            assert inspect.iscoroutinefunction(forwarded), name
        elif how in ("stream", "define"):
            assert callable(forwarded) and not inspect.iscoroutinefunction(forwarded), name


def test_the_blocking_host_has_the_api() -> None:
    _, missing = parity_gaps(perdure.Host)
    assert missing == set(), f"perdure.Host lacks {missing}"


def test_parity_fails_when_the_runtime_gains_a_method(monkeypatch: pytest.MonkeyPatch) -> None:
    async def frobnicate(self: perdure.Runtime) -> None: ...

    monkeypatch.setattr(perdure.Runtime, "frobnicate", frobnicate, raising=False)
    unclassified, _ = parity_gaps(perdure.AsyncioHost)
    assert unclassified == {"frobnicate"}


# -- the example: an asyncio web app with the perdure API mounted next to its own routes ----


def test_the_asyncio_web_app_example(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    import httpx
    from helpers.checks import check_store_logs

    script = Path(__file__).resolve().parent.parent / "examples" / "starlette_asyncio_host.py"
    data = tmp_path / "data"
    proc = subprocess.Popen(
        [sys.executable, str(script), str(data), "--serve", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("serving "), proc.stderr.read() if proc.stderr else line
        with httpx.Client(base_url=line.split()[1], timeout=20) as client:
            assert client.get("/hello").json() == {"hello": "from the asyncio app"}
            run_id = client.post("/orders", json={"qty": 2}).json()["run_id"]
            assert client.get("/perdure/health").json()["status"] == "ok"
            waiting = client.get(f"/perdure/runs/{run_id}/wait", params={"timeout": 5})
            assert waiting.status_code == 202 and waiting.json()["status"] == "waiting"
            with client.stream(
                "GET", f"/perdure/runs/{run_id}/events", headers={"Accept": "text/event-stream"}
            ) as stream:
                types = [
                    json.loads(text[5:])["type"]
                    for text in stream.iter_lines()
                    if text.startswith("data:")
                ]
            assert types[0] == "RUN_STARTED" and types[-1] == "RUN_FINISHED"
            decision = {"type": "approval", "key": "ship", "approved": False, "approver": "bob"}
            r = client.post(f"/perdure/runs/{run_id}/resume", json=decision)
            assert r.json()["duplicate"] is False
            done = client.get(f"/perdure/runs/{run_id}/wait").json()
            assert done["completion"]["result"] == {"total": 24, "shipped": False}
            page = client.get("/perdure/runs", params={"owner": "project:shop"}).json()
            assert [run["id"] for run in page["runs"]] == [run_id]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert check_store_logs(data) == []
