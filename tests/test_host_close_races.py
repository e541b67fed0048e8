"""Calls that race the closing of a Runtime, a Host or an AsyncioHost (R31).

A call made while (or after) a runtime closes either did its work and reports it, or
raises a :class:`~perdure.PerdureError` having done nothing; it never hangs and never
surfaces trio's internals. Each race is forced deterministically: a run body parked in
its shielded cleanup holds the close open, a gated commit holds a start between its
commit and its launch, hooks run a call at the exact point of the race.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio

import perdure

P = perdure.Project("p1")


def _slow_cleanup_workflow(
    host: perdure.AsyncioHost | perdure.Host,
) -> tuple[threading.Event, threading.Event, threading.Event]:
    """``workflow:slowclose``: runs until cancelled, then cleans up until released.

    Returns (started, cleaning, release): cleaning is set once the runtime's close
    has begun stopping actors (the body is cancelled only then).
    """
    started, cleaning, release = threading.Event(), threading.Event(), threading.Event()

    @host.workflow("slowclose")
    async def slowclose(ctx: perdure.RunContext, inp: dict) -> dict:
        started.set()
        try:
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):
                cleaning.set()
                await trio.to_thread.run_sync(release.wait)
        return {}

    @host.workflow("echo")
    async def echo(ctx: perdure.RunContext, inp: dict) -> dict:
        return inp

    return started, cleaning, release


# -- AsyncioHost ------------------------------------------------------------------------------


def test_asyncio_calls_while_the_host_closes_are_refused_and_close_completes(
    data_dir: Path,
) -> None:
    host = perdure.AsyncioHost(data_dir, durability="process", cancel_grace=60)
    started, cleaning, release = _slow_cleanup_workflow(host)

    async def refused(call: Awaitable[Any]) -> None:
        with pytest.raises(perdure.PerdureError):
            await asyncio.wait_for(call, 10)

    async def first_event(stream: Any) -> Any:
        return await stream.__anext__()

    async def main() -> None:
        await host.__aenter__()
        try:
            rid = (await host.start("workflow:slowclose", {}, owner=P)).run.id
            stream = host.events(rid)
            await asyncio.wait_for(asyncio.to_thread(started.wait, 10), 15)
            closing = asyncio.ensure_future(host.aclose())
            # The runtime is stopping its actors: every call now is refused.
            assert await asyncio.wait_for(asyncio.to_thread(cleaning.wait, 10), 15)
            await refused(host.start("workflow:echo", {}, owner=P))
            await refused(host.wait(rid))
            await refused(host.cancel(rid))
            await refused(host.get(rid))
            await refused(host.now())
            await refused(first_event(stream))
            await asyncio.wait_for(stream.aclose(), 10)  # a no-op on a closing host
        finally:
            release.set()
        await asyncio.wait_for(closing, 30)  # completes, without error
        with pytest.raises(perdure.PerdureError, match="not open"):
            await host.get(rid)
        async with host:  # the run is recovered, as after any close
            assert (await host.get(rid)).status == "running"
            assert (await asyncio.wait_for(host.cancel(rid), 30)).cancelled

    asyncio.run(main())


def test_cancelling_an_asyncio_caller_right_after_submitting_leaves_no_trio_task(
    data_dir: Path,
) -> None:
    host = perdure.AsyncioHost(data_dir, durability="process")
    _slow_cleanup_workflow(host)[2].set()  # released: cancelling it ends it at once

    async def calls_on_trio() -> int:
        nursery = host._nursery
        assert nursery is not None
        return await host._sync(lambda: len(nursery.child_tasks))

    async def main() -> None:
        async with host:
            rid = (await host.start("workflow:slowclose", {}, owner=P)).run.id
            for _ in range(50):
                call = asyncio.ensure_future(host.wait(rid))
                await asyncio.sleep(0)  # submitted to trio; its task may not have started
                call.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await call
            # Every cancellation was handed over before this crossing (FIFO); the
            # cancelled tasks only need to be scheduled once to finish.
            left = await calls_on_trio()
            for _ in range(100):
                if left == 0:
                    break
                left = await calls_on_trio()
            assert left == 0
            assert (await asyncio.wait_for(host.cancel(rid), 30)).cancelled

    asyncio.run(main())


def test_the_asyncio_host_serves_an_event_loop_of_another_thread(data_dir: Path) -> None:
    host = perdure.AsyncioHost(data_dir, durability="process")
    _slow_cleanup_workflow(host)
    seen: dict[str, Any] = {}

    def other_thread() -> None:
        async def go() -> None:
            started = await host.start("workflow:echo", {"x": 1}, owner=P)
            seen["wait"] = (await host.wait(started.run.id)).completion.result
            seen["events"] = [e.type async for e in host.events(started.run.id)]
            seen["runs"] = len((await host.list(owner=P)).runs)

        try:
            asyncio.run(go())
        except BaseException as exc:
            seen["error"] = exc

    async def main() -> None:
        async with host:
            thread = threading.Thread(target=other_thread)
            thread.start()
            await asyncio.to_thread(thread.join, 30)
            assert not thread.is_alive()

    asyncio.run(main())
    assert "error" not in seen, seen
    assert seen["wait"] == {"x": 1} and seen["runs"] == 1
    assert seen["events"][0] == "RUN_STARTED" and seen["events"][-1] == "RUN_FINISHED"


def test_asyncio_host_targets_work_before_opening(data_dir: Path) -> None:
    host = perdure.AsyncioHost(data_dir, durability="process")
    _slow_cleanup_workflow(host)
    expected = host.runtime.targets()
    assert [t.target for t in expected] == ["workflow:echo", "workflow:slowclose"]

    async def main() -> None:
        assert await host.targets() == expected
        async with host:
            assert await host.targets() == expected
        assert await host.targets() == expected

    asyncio.run(main())


# -- Runtime ----------------------------------------------------------------------------------


async def test_a_start_that_committed_as_the_runtime_closed_reports_its_run(
    data_dir: Path,
) -> None:
    def make() -> perdure.Runtime:
        rt = perdure.Runtime(data_dir, durability="process")

        @rt.workflow("echo")
        async def echo(ctx: perdure.RunContext, inp: dict) -> dict:
            return inp

        return rt

    rt = make()
    committed, go_on = trio.Event(), trio.Event()
    results: list[perdure.Started] = []
    with trio.fail_after(30):
        async with trio.open_nursery() as outer:
            async with rt:
                engine = rt._engine
                assert engine is not None
                real_commit = engine.writer.commit

                async def gated_commit(ops: Any, chain: Any = None) -> None:
                    await real_commit(ops, chain)
                    committed.set()  # durable: hold the start until the runtime closed
                    with trio.CancelScope(shield=True):
                        await go_on.wait()

                engine.writer.commit = gated_commit  # type: ignore[method-assign]

                async def start() -> None:
                    results.append(
                        await rt.start("workflow:echo", {"a": 1}, owner=P, idempotency_key="k")
                    )

                outer.start_soon(start)
                await committed.wait()
            go_on.set()  # the runtime is closed: its actors' nursery is gone
        assert len(results) == 1 and not results[0].duplicate
        again = make()
        async with again:  # recovered at the next open, and it completes
            done = await again.wait(results[0].run.id)
            assert done.status == "completed" and done.completion is not None
            assert done.completion.result == {"a": 1}


async def test_check_of_a_symlink_to_the_open_directory_checks_the_open_store(
    data_dir: Path, tmp_path: Path
) -> None:
    rt = perdure.Runtime(data_dir, durability="process")

    @rt.workflow("echo")
    async def echo(ctx: perdure.RunContext, inp: dict) -> dict:
        return inp

    link = tmp_path / "link"
    with trio.fail_after(30):
        async with rt:
            os.symlink(data_dir, link)
            report = await rt.check(link)
            assert report.runs == []
            assert (await rt.check(str(link) + os.sep)).runs == []


# -- Host (blocking) --------------------------------------------------------------------------


def _after_join(host: perdure.Host, then: Callable[[], None]) -> None:
    """Run ``then`` inside ``host.close()`` right after its runtime thread has ended."""
    thread = host._thread
    assert thread is not None
    real_join = thread.join

    def join(timeout: float | None = None) -> None:
        real_join(timeout)
        then()

    thread.join = join  # type: ignore[method-assign]


def test_host_calls_once_close_began_raise_perdure_errors(data_dir: Path) -> None:
    host = perdure.Host(data_dir, durability="process", cancel_grace=60)
    started, cleaning, release = _slow_cleanup_workflow(host)
    outcomes: list[str] = []

    def attempt(call: Callable[[], Any]) -> None:
        try:
            call()
        except perdure.PerdureError:
            outcomes.append("refused")
        except BaseException as exc:
            outcomes.append(repr(exc))

    def calls() -> None:
        attempt(lambda: host.start("workflow:echo", {}, owner=P))
        attempt(lambda: host.get("x"))

    host.__enter__()
    try:
        host.start("workflow:slowclose", {}, owner=P)
        assert started.wait(10)
        _after_join(host, calls)  # the trio run has ended; close() has not returned yet
        closer = threading.Thread(target=host.close)
        closer.start()
        assert cleaning.wait(10)  # the runtime is closing
        calls()
    finally:
        release.set()
    closer.join(30)
    assert not closer.is_alive()
    calls()  # closed
    assert outcomes == ["refused"] * 6


class _WatchedLock:
    """A lock that tells when its second acquirer arrives."""

    def __init__(self, second: threading.Event) -> None:
        self._lock = threading.Lock()
        self._entries = 0
        self._second = second

    def __enter__(self) -> bool:
        self._entries += 1
        if self._entries == 2:
            self._second.set()
        return self._lock.__enter__()

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


def test_concurrent_host_close_calls_all_return_cleanly(data_dir: Path) -> None:
    host = perdure.Host(data_dir, durability="process")
    _slow_cleanup_workflow(host)[2].set()
    errors: list[BaseException] = []
    progressed = threading.Event()  # the second close() waits for the first, or ended

    def second_close() -> None:
        try:
            host.close()
        except BaseException as exc:
            errors.append(exc)
        finally:
            progressed.set()

    second = threading.Thread(target=second_close)

    def race() -> None:  # inside the first close(), its runtime thread just ended
        second.start()
        assert progressed.wait(10)

    host.__enter__()
    host._closing = _WatchedLock(progressed)  # type: ignore[assignment]
    _after_join(host, race)
    host.close()
    second.join(30)
    assert not second.is_alive()
    assert errors == []
    host.close()  # closed: a no-op
    with host:  # and it opens again
        assert host.list(owner=P).runs == []
