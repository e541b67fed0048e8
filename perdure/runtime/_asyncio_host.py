"""The Runtime API awaitable from asyncio programs (R36).

``AsyncioHost`` runs a :class:`Runtime` and its trio loop in a thread of its own
and forwards every call to it. From the asyncio side each call is an ordinary
awaitable and ``events`` an async iterator::

    host = perdure.AsyncioHost("data/")

    @host.workflow("greet")
    async def greet(ctx: perdure.RunContext, inp: dict) -> dict:  # runs on trio
        return {"hello": inp["name"]}

    async def main() -> None:
        async with host:
            started = await host.start("workflow:greet", {"name": "ann"},
                                       owner=perdure.Project("p1"))
            async for event in host.events(started.run.id):
                print(event.type)
            print((await host.wait(started.run.id)).completion)

    asyncio.run(main())

Run bodies stay trio code: they run on the runtime's thread, like every actor.

How a call crosses. The asyncio side never blocks a thread: the call is handed to
the trio thread (``TrioToken.run_sync_soon``), runs there as a task of the host's
nursery, and its outcome comes back through ``loop.call_soon_threadsafe`` into an
asyncio future of the caller's own event loop (any loop, in any thread). Cancelling
the awaiting asyncio task cancels that trio task. One crossing costs about what a
thread hop costs (~0.15-0.2 ms, ``anchors.md``). Once the host is closing, a call
that reaches the trio thread is refused there with :class:`~perdure.PerdureError`
(it never waits on a nursery that is gone).

Which calls are forwarded is one table, :data:`RUNTIME_SURFACE`: every public
callable of :class:`Runtime` is forwarded, and the table says how: awaited,
synchronous, streamed, or a definition decorator. A test enumerates ``Runtime``'s public
methods against it, so a method added to the Runtime without a row here fails
the suite instead of silently missing from the hosts.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import functools
import os
import threading
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar

import outcome
import trio

from perdure._errors import PerdureError

from ._definitions import Body
from ._runtime import Runtime

if TYPE_CHECKING:
    from perdure.graph import Graph, GraphState
    from perdure.storage import Owner, RunRecord

    from ._batches import BatchInfo
    from ._check import CheckReport
    from ._logs import LogPage
    from ._results import Cancelled, Page, RunEvent, RuntimeStats, Snapshot, Started, TargetInfo
    from ._schedules import ScheduleInfo
    from ._signals import ExternalEvent, Resumed, Signal

__all__ = ["RUNTIME_SURFACE", "AsyncioHost"]

T = TypeVar("T")
F = TypeVar("F", bound=Body)

Forwarding = Literal["await", "sync", "stream", "define"]

RUNTIME_SURFACE: Final[dict[str, Forwarding]] = {
    # Definitions: decorators applied before opening, on the caller's thread.
    "agent": "define",
    "workflow": "define",
    "task": "define",
    "graph": "define",
    "workflow_graph": "define",
    # The API. "await": a coroutine run on the trio thread; "sync": a plain call run on
    # the trio thread (it reads state the trio thread owns); "stream": an async generator.
    "start": "await",
    "wait": "await",
    "resume": "await",
    "resume_many": "await",
    "publish": "await",
    "cancel": "await",
    "check": "await",
    "purge": "await",
    "get": "sync",
    "list": "sync",
    "now": "sync",
    "stats": "sync",
    "snapshot": "sync",
    "targets": "sync",
    "graph_state": "sync",
    "events": "stream",
    # jobs: logs and batches
    "logs": "sync",
    "start_batch": "await",
    "batch": "sync",
    "cancel_batch": "await",
    # schedules ("schedule" declares before opening, like a definition)
    "schedule": "define",
    "pause_schedule": "await",
    "resume_schedule": "await",
    "delete_schedule": "await",
    "trigger_schedule": "await",
    "get_schedule": "sync",
    "list_schedules": "sync",
}
"""How each public callable of :class:`Runtime` reaches a host (see the module doc)."""

_DEFINITIONS_ONLY: Final = frozenset({"targets"})
""""sync" rows that read only the definitions: called on the caller's thread, open or
not (like ``Runtime.targets`` and ``Host.targets``, they work before opening)."""

_CLOSED = "the AsyncioHost is not open: use `async with host:`"
_CLOSING = "the AsyncioHost is not open (it is closing): use `async with host:`"


def _settle(future: asyncio.Future[Any], result: outcome.Outcome[Any]) -> None:
    if not future.done():
        if isinstance(result, outcome.Error) and isinstance(result.error, trio.Cancelled):
            future.set_exception(PerdureError("the AsyncioHost closed during the call"))
        elif isinstance(result, outcome.Error):
            future.set_exception(result.error)
        else:
            future.set_result(result.unwrap())


def _reply(
    loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], result: outcome.Outcome[Any]
) -> None:
    """Hand ``result`` to ``future`` on its own loop (from the trio thread; never raises)."""
    with contextlib.suppress(RuntimeError):  # that asyncio loop is closed: nobody waits
        loop.call_soon_threadsafe(_settle, future, result)


class AsyncioHost:
    """The Runtime API, awaitable, for asyncio programs. Use as ``async with host:``.

    ``path`` and ``runtime_options`` are :class:`Runtime`'s. ``host.runtime`` is the
    Runtime itself (its methods must only be called from its own trio thread, for
    instance from run bodies). Calls may be awaited from any event loop, in any
    thread. Closing the host closes the runtime: runs in flight are recovered at the
    next open, as always. Calls in flight end as they do when a Runtime closes
    (a ``wait`` raises :class:`~perdure.PerdureError`, an ``events`` iteration
    ends), calls made while it closes raise :class:`~perdure.PerdureError`, and
    any call still in flight once it has closed is cancelled with one.
    """

    def __init__(
        self, path: str | os.PathLike[str] | None = "data/", **runtime_options: Any
    ) -> None:
        self.runtime = Runtime(path, **runtime_options)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._nursery: trio.Nursery | None = None
        self._stop: trio.Event | None = None
        self._finished: asyncio.Future[None] | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    async def __aenter__(self) -> AsyncioHost:
        if self._thread is not None:
            raise PerdureError("this AsyncioHost is already open")
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()
        finished: asyncio.Future[None] = loop.create_future()
        self._loop, self._finished = loop, finished

        def thread_main() -> None:
            result = outcome.capture(trio.run, self._main, loop, ready)
            for future in (ready, finished):
                try:
                    loop.call_soon_threadsafe(_settle, future, result)
                except RuntimeError:  # the asyncio loop is already closed
                    return

        self._thread = threading.Thread(target=thread_main, name="perdure-asyncio-host")
        self._thread.daemon = True
        self._thread.start()
        try:
            await ready
        except BaseException:
            await self._join()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the runtime; a no-op when the host is not open.

        Calls in flight raise :class:`~perdure.PerdureError`, and so do calls made
        while it closes."""
        token, stop = self._token, self._stop
        if self._thread is None:
            return
        if asyncio.get_running_loop() is not self._loop:
            raise PerdureError("close the AsyncioHost from the event loop that opened it")
        if token is not None and stop is not None:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(stop.set)
        await self._join()

    async def _join(self) -> None:
        thread, finished = self._thread, self._finished
        try:
            if finished is not None:
                await asyncio.shield(finished)
        finally:
            if thread is not None:
                thread.join()
            self._thread = self._token = self._nursery = self._stop = None
            self._finished = None

    async def _main(self, loop: asyncio.AbstractEventLoop, ready: asyncio.Future[None]) -> None:
        # The calls' nursery outlives the runtime: while the runtime closes, calls still
        # reach it and get its own answers (a wait in flight, a call made meanwhile: a
        # PerdureError, R31). Once it has closed, what is still in flight is cancelled
        # and calls are refused on arrival (see _await): a closed nursery takes no task.
        async with trio.open_nursery() as nursery:
            served = await outcome.acapture(self._serve, nursery, loop, ready)
            self._nursery = None
            nursery.cancel_scope.cancel()
        served.unwrap()  # outside the nursery: an open failure surfaces as itself

    async def _serve(
        self, nursery: trio.Nursery, loop: asyncio.AbstractEventLoop, ready: asyncio.Future[None]
    ) -> None:
        async with self.runtime:
            self._stop = trio.Event()
            self._token = trio.lowlevel.current_trio_token()
            self._nursery = nursery
            loop.call_soon_threadsafe(_settle, ready, outcome.Value(None))
            await self._stop.wait()

    # -- crossing into trio -------------------------------------------------------------------

    def _portal(self) -> trio.lowlevel.TrioToken:
        """The trio thread's token; PerdureError if the host is not open."""
        token = self._token
        if token is None:
            raise PerdureError(_CLOSED)
        return token

    async def _await(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run coroutine function ``fn`` on the trio thread; its result or exception here."""
        token = self._portal()
        loop = asyncio.get_running_loop()  # the caller's, whichever thread it runs in
        future: asyncio.Future[Any] = loop.create_future()
        # Made here, so that a cancellation that reaches the trio thread before the task
        # has started still finds it: the task then does not run ``fn`` at all.
        scope = trio.CancelScope()

        async def task() -> None:
            if scope.cancel_called:
                return  # the caller is gone; its future is cancelled already
            with scope:
                result = await outcome.acapture(fn, *args, **kwargs)
            _reply(loop, future, result)

        def submit() -> None:  # on the trio thread; must never raise
            nursery = self._nursery
            if nursery is not None:
                try:
                    nursery.start_soon(task)
                except RuntimeError:  # closed to new arrivals
                    pass
                else:
                    return
            _reply(loop, future, outcome.Error(PerdureError(_CLOSING)))

        self._send(token, submit)
        try:
            return await future
        except asyncio.CancelledError:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(scope.cancel)
            raise

    async def _sync(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run plain function ``fn`` on the trio thread (it reads trio-owned state)."""
        token = self._portal()
        loop = asyncio.get_running_loop()  # the caller's, whichever thread it runs in
        future: asyncio.Future[T] = loop.create_future()

        def call() -> None:  # on the trio thread; must never raise
            if self._nursery is None:
                _reply(loop, future, outcome.Error(PerdureError(_CLOSING)))
            else:
                _reply(loop, future, outcome.capture(fn, *args, **kwargs))

        self._send(token, call)
        return await future

    @staticmethod
    def _send(token: trio.lowlevel.TrioToken, callback: Callable[[], None]) -> None:
        try:
            token.run_sync_soon(callback)
        except trio.RunFinishedError:  # the trio thread has ended: the host closed
            raise PerdureError(_CLOSED) from None

    # -- typed signatures of the forwarded API (the bodies come from RUNTIME_SURFACE) ----------

    if TYPE_CHECKING:

        def agent(self, name: str, **options: Any) -> Callable[[F], F]: ...
        def workflow(self, name: str, **options: Any) -> Callable[[F], F]: ...
        def task(self, name: str, **options: Any) -> Callable[[F], F]: ...
        def graph(self, name: str, graph: Graph) -> Graph: ...
        def workflow_graph(self, name: str, graph: Graph) -> Graph: ...
        async def graph_state(self, run_id: str) -> GraphState: ...
        async def start(
            self,
            target: str,
            input: Any = None,
            *,
            owner: Owner,
            idempotency_key: str | None = None,
            run_id: str | None = None,
        ) -> Started: ...
        async def get(self, run_id: str) -> RunRecord: ...
        async def list(self, **filters: Any) -> Page: ...
        async def now(self) -> float: ...
        async def stats(self) -> RuntimeStats: ...
        async def snapshot(self, run_id: str, upto: int | None = None) -> Snapshot: ...
        async def targets(self) -> builtins.list[TargetInfo]: ...
        def events(
            self, run_id: str, after: int = 0, *, follow: bool = True
        ) -> AsyncIterator[RunEvent]: ...
        async def wait(self, run_id: str) -> RunRecord: ...
        async def resume(self, run_id: str, signal: Signal) -> Resumed: ...
        async def resume_many(
            self, run_id: str, signals: builtins.list[Signal]
        ) -> builtins.list[Resumed]: ...
        async def publish(self, event: ExternalEvent, *, owner: Owner) -> builtins.list[str]: ...
        async def cancel(self, run_id: str, reason: str = "cancelled") -> Cancelled: ...
        async def logs(
            self,
            run_id: str,
            after: int | str | None = None,
            limit: int = 100,
            direction: str = "forward",
        ) -> LogPage: ...
        async def start_batch(
            self,
            target: str,
            inputs: builtins.list[Any],
            *,
            owner: Owner,
            idempotency_key: str | None = None,
        ) -> BatchInfo: ...
        async def batch(self, batch_id: str) -> BatchInfo: ...
        async def cancel_batch(self, batch_id: str, reason: str = "batch cancelled") -> int: ...
        def schedule(self, name: str, cron: str, **options: Any) -> None: ...
        async def pause_schedule(self, name: str) -> None: ...
        async def resume_schedule(self, name: str) -> None: ...
        async def delete_schedule(self, name: str) -> None: ...
        async def trigger_schedule(
            self, name: str, idempotency_key: str | None = None
        ) -> Started: ...
        async def get_schedule(self, name: str) -> ScheduleInfo: ...
        async def list_schedules(self) -> builtins.list[ScheduleInfo]: ...
        async def check(
            self, path: str | os.PathLike[str] | None = None, *, timeout: float = 5.0
        ) -> CheckReport: ...
        async def purge(
            self,
            before: float | None = None,
            statuses: builtins.list[str] | tuple[str, ...] = ("completed", "failed", "cancelled"),
        ) -> int: ...


class _EventStream:
    """``host.events(...)``: the runtime's event generator, stepped on the trio thread."""

    def __init__(self, host: AsyncioHost, agen: Any) -> None:
        self._host = host
        self._agen = agen
        self._closed = False

    def __aiter__(self) -> _EventStream:
        return self

    async def __anext__(self) -> Any:
        if self._closed:
            raise StopAsyncIteration
        try:
            return await self._host._await(self._agen.__anext__)
        except BaseException:
            self._closed = True
            raise

    async def aclose(self) -> None:
        """Close the underlying generator (``async with contextlib.aclosing(...)``)."""
        if not self._closed:
            self._closed = True
            if self._host._token is not None:
                # A host closing or closed finalizes the generator itself, on trio.
                with contextlib.suppress(PerdureError):
                    await self._host._await(self._agen.aclose)


def _forward(name: str, how: Forwarding) -> Callable[..., Any]:
    target = getattr(Runtime, name)

    if how == "define":

        def define(self: AsyncioHost, *args: Any, **kwargs: Any) -> Any:
            return getattr(self.runtime, name)(*args, **kwargs)

        return functools.wraps(target)(define)
    if how == "await":

        async def call(self: AsyncioHost, *args: Any, **kwargs: Any) -> Any:
            return await self._await(getattr(self.runtime, name), *args, **kwargs)

        return functools.wraps(target)(call)
    if how == "sync" and name in _DEFINITIONS_ONLY:

        async def call_here(self: AsyncioHost, *args: Any, **kwargs: Any) -> Any:
            return getattr(self.runtime, name)(*args, **kwargs)

        return functools.wraps(target)(call_here)
    if how == "sync":

        async def call_sync(self: AsyncioHost, *args: Any, **kwargs: Any) -> Any:
            return await self._sync(getattr(self.runtime, name), *args, **kwargs)

        return functools.wraps(target)(call_sync)
    assert how == "stream", how

    def stream(self: AsyncioHost, *args: Any, **kwargs: Any) -> _EventStream:
        self._portal()
        return _EventStream(self, getattr(self.runtime, name)(*args, **kwargs))

    return functools.wraps(target)(stream)


for _name, _how in RUNTIME_SURFACE.items():
    setattr(AsyncioHost, _name, _forward(_name, _how))
