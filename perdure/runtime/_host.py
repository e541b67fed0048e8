"""A blocking facade for programs that do not run trio.

``Host`` runs a :class:`Runtime` and its trio loop in one background thread and
forwards every call into it with ``trio.from_thread``. Definitions, methods and
results are the same as the Runtime's; only ``async``/``await`` disappear::

    host = perdure.Host("data/")

    @host.task("resize")
    async def resize(ctx: perdure.RunContext, config: dict) -> dict:
        return {"ok": True}

    with host:
        started = host.start("task:resize", {"w": 10}, owner=perdure.Project("p1"))
        done = host.wait(started.run.id)

Run bodies stay ``async def``: they run on the runtime's trio thread.
"""

from __future__ import annotations

import builtins
import contextlib
import functools
import os
import threading
from collections.abc import Awaitable, Callable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import trio

from perdure._errors import PerdureError
from perdure.storage import Owner, RunRecord

from ._batches import BatchInfo
from ._check import CheckReport
from ._definitions import Body
from ._logs import LogPage
from ._results import Cancelled, Page, RunEvent, RuntimeStats, Snapshot, Started, TargetInfo
from ._runtime import Runtime
from ._schedules import ScheduleInfo
from ._signals import ExternalEvent, Resumed, Signal

if TYPE_CHECKING:
    from perdure.graph import Graph, GraphState

__all__ = ["Host"]

T = TypeVar("T")
F = TypeVar("F", bound=Body)


class Host:
    """The Runtime API, blocking, for threads that are not trio's. Use as ``with host:``."""

    def __init__(self, path: str | os.PathLike[str] | None = "data/", **options: Any) -> None:
        self.runtime = Runtime(path, **options)
        self._thread: threading.Thread | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._closing = threading.Lock()  # one close() at a time; the others wait for it

    # -- definitions (same decorators as the Runtime) -----------------------------------------

    def agent(self, name: str, **options: Any) -> Callable[[F], F]:
        return self.runtime.agent(name, **options)

    def workflow(self, name: str, **options: Any) -> Callable[[F], F]:
        return self.runtime.workflow(name, **options)

    def task(self, name: str, **options: Any) -> Callable[[F], F]:
        return self.runtime.task(name, **options)

    def graph(self, name: str, graph: Graph) -> Graph:
        """:meth:`Runtime.graph`: register a step-graph workflow."""
        return self.runtime.graph(name, graph)

    def workflow_graph(self, name: str, graph: Graph) -> Graph:
        """:meth:`Runtime.workflow_graph` (= :meth:`graph`)."""
        return self.runtime.graph(name, graph)

    # -- lifecycle ----------------------------------------------------------------------------

    def __enter__(self) -> Host:
        if self._thread is not None:
            raise PerdureError("this Host is already open")
        self._ready.clear()
        self._error = None
        self._thread = threading.Thread(
            target=trio.run, args=(self._main,), name="perdure-host", daemon=True
        )
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self._thread.join()
            self._thread = None
            raise self._error
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the runtime (runs in flight are recovered at the next open).

        Calls made once closing began raise :class:`~perdure.PerdureError`; a
        concurrent ``close()`` returns once the host is closed.
        """
        with self._closing:
            thread, stop, token = self._thread, self._stop, self._token
            if thread is None or stop is None:
                return
            self._token = None  # no call crosses any more (see _portal)
            if token is not None:
                try:
                    trio.from_thread.run_sync(stop.set, trio_token=token)
                except trio.RunFinishedError:
                    pass  # the runtime's thread ended by itself
                except BaseException:  # e.g. called from the runtime's own thread
                    self._token = token
                    raise
            thread.join()
            self._thread = self._stop = None

    async def _main(self) -> None:
        try:
            async with self.runtime:
                self._stop = trio.Event()
                self._token = trio.lowlevel.current_trio_token()
                self._ready.set()
                await self._stop.wait()
        except BaseException as exc:
            if self._ready.is_set():
                raise
            self._error = exc
            self._ready.set()
        finally:
            self._token = None

    def _portal(self) -> trio.lowlevel.TrioToken:
        token = self._token  # read once: close() clears it from another thread
        if token is None:
            raise PerdureError("the Host is not open: use `with host:`")
        return token

    def _call(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        token = self._portal()
        try:
            return trio.from_thread.run(functools.partial(fn, *args, **kwargs), trio_token=token)
        except (trio.RunFinishedError, trio.Cancelled):  # the runtime's thread is ending
            raise PerdureError("the Host is not open (it closed): use `with host:`") from None

    def _call_sync(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        token = self._portal()
        try:
            return trio.from_thread.run_sync(
                functools.partial(fn, *args, **kwargs), trio_token=token
            )
        except trio.RunFinishedError:  # the runtime's thread has ended
            raise PerdureError("the Host is not open (it closed): use `with host:`") from None

    # -- the API ------------------------------------------------------------------------------

    def start(
        self,
        target: str,
        input: Any = None,
        *,
        owner: Owner,
        idempotency_key: str | None = None,
        run_id: str | None = None,
    ) -> Started:
        """Blocking :meth:`Runtime.start`."""
        return self._call(
            self.runtime.start,
            target,
            input,
            owner=owner,
            idempotency_key=idempotency_key,
            run_id=run_id,
        )

    def get(self, run_id: str) -> RunRecord:
        """Blocking :meth:`Runtime.get`."""
        return self._call_sync(self.runtime.get, run_id)

    def list(self, **filters: Any) -> Page:
        """Blocking :meth:`Runtime.list` (same keyword filters)."""
        return self._call_sync(self.runtime.list, **filters)

    def wait(self, run_id: str) -> RunRecord:
        """Blocking :meth:`Runtime.wait`."""
        return self._call(self.runtime.wait, run_id)

    def cancel(self, run_id: str, reason: str = "cancelled") -> Cancelled:
        """Blocking :meth:`Runtime.cancel`."""
        return self._call(self.runtime.cancel, run_id, reason)

    def resume(self, run_id: str, signal: Signal) -> Resumed:
        """Blocking :meth:`Runtime.resume`."""
        return self._call(self.runtime.resume, run_id, signal)

    def resume_many(self, run_id: str, signals: builtins.list[Signal]) -> builtins.list[Resumed]:
        """Blocking :meth:`Runtime.resume_many`."""
        return self._call(self.runtime.resume_many, run_id, signals)

    def publish(self, event: ExternalEvent, *, owner: Owner) -> builtins.list[str]:
        """Blocking :meth:`Runtime.publish`."""
        return self._call(self.runtime.publish, event, owner=owner)

    def check(
        self, path: str | os.PathLike[str] | None = None, *, timeout: float = 5.0
    ) -> CheckReport:
        """Blocking :meth:`Runtime.check`."""
        return self._call(self.runtime.check, path, timeout=timeout)

    def purge(
        self,
        before: float | None = None,
        statuses: builtins.list[str] | tuple[str, ...] = ("completed", "failed", "cancelled"),
    ) -> int:
        """Blocking :meth:`Runtime.purge`."""
        return self._call(self.runtime.purge, before, statuses)

    def now(self) -> float:
        """Blocking :meth:`Runtime.now`."""
        return self._call_sync(self.runtime.now)

    def stats(self) -> RuntimeStats:
        """Blocking :meth:`Runtime.stats`."""
        return self._call_sync(self.runtime.stats)

    def snapshot(self, run_id: str, upto: int | None = None) -> Snapshot:
        """Blocking :meth:`Runtime.snapshot`."""
        return self._call_sync(self.runtime.snapshot, run_id, upto)

    def graph_state(self, run_id: str) -> GraphState:
        """Blocking :meth:`Runtime.graph_state`."""
        return self._call_sync(self.runtime.graph_state, run_id)

    def targets(self) -> builtins.list[TargetInfo]:
        """:meth:`Runtime.targets` (works before opening too)."""
        return self.runtime.targets()

    # -- jobs: logs and batches; schedules ------------------------------------------------

    def logs(
        self,
        run_id: str,
        after: int | str | None = None,
        limit: int = 100,
        direction: str = "forward",
    ) -> LogPage:
        """Blocking :meth:`Runtime.logs`."""
        return self._call_sync(self.runtime.logs, run_id, after, limit, direction)

    def start_batch(
        self,
        target: str,
        inputs: builtins.list[Any],
        *,
        owner: Owner,
        idempotency_key: str | None = None,
    ) -> BatchInfo:
        """Blocking :meth:`Runtime.start_batch`."""
        return self._call(
            self.runtime.start_batch, target, inputs, owner=owner, idempotency_key=idempotency_key
        )

    def batch(self, batch_id: str) -> BatchInfo:
        """Blocking :meth:`Runtime.batch`."""
        return self._call_sync(self.runtime.batch, batch_id)

    def cancel_batch(self, batch_id: str, reason: str = "batch cancelled") -> int:
        """Blocking :meth:`Runtime.cancel_batch`."""
        return self._call(self.runtime.cancel_batch, batch_id, reason)

    def schedule(self, name: str, cron: str, **options: Any) -> None:
        """:meth:`Runtime.schedule` (before opening)."""
        self.runtime.schedule(name, cron, **options)

    def pause_schedule(self, name: str) -> None:
        """Blocking :meth:`Runtime.pause_schedule`."""
        self._call(self.runtime.pause_schedule, name)

    def resume_schedule(self, name: str) -> None:
        """Blocking :meth:`Runtime.resume_schedule`."""
        self._call(self.runtime.resume_schedule, name)

    def delete_schedule(self, name: str) -> None:
        """Blocking :meth:`Runtime.delete_schedule`."""
        self._call(self.runtime.delete_schedule, name)

    def trigger_schedule(self, name: str, idempotency_key: str | None = None) -> Started:
        """Blocking :meth:`Runtime.trigger_schedule`."""
        return self._call(self.runtime.trigger_schedule, name, idempotency_key)

    def get_schedule(self, name: str) -> ScheduleInfo:
        """Blocking :meth:`Runtime.get_schedule`."""
        return self._call_sync(self.runtime.get_schedule, name)

    def list_schedules(self) -> builtins.list[ScheduleInfo]:
        """Blocking :meth:`Runtime.list_schedules`."""
        return self._call_sync(self.runtime.list_schedules)

    def events(self, run_id: str, after: int = 0, *, follow: bool = True) -> Iterator[RunEvent]:
        """Blocking iterator over :meth:`Runtime.events`."""
        agen = self.runtime.events(run_id, after, follow=follow)
        try:
            while True:
                try:
                    event = self._call(agen.__anext__)
                except StopAsyncIteration:
                    return
                yield event
        finally:
            if self._token is not None:
                with contextlib.suppress(PerdureError):  # a closing host finalizes it itself
                    self._call(agen.aclose)
