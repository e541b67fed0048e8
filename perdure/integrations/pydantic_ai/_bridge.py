"""Crossing between trio (perdure) and asyncio (pydantic-ai) inside one run body.

pydantic-ai runs on asyncio only: under plain trio, ``agent.run`` fails in
``asyncio.create_task`` ("no running event loop"). trio-asyncio runs an asyncio event
loop *as trio tasks*, so both libraries share one thread and one scheduler and a
durable step (trio) can be awaited from a pydantic-ai hook (asyncio) and vice versa.

Each run body opens its own loop (:func:`open_loop`). The loop's nursery then lives
inside the body's cancel scope, so cancelling the run (``rt.cancel``, passivation,
closing the runtime) cancels every asyncio task of the agent and every trio task the
agent started through :func:`to_asyncio`, and the loop is closed before the body
returns. One loop shared by the whole runtime is about 15 % faster for pydantic-ai
alone (measured), but would need a runtime-lifetime hook perdure does not offer, and
would put those tasks outside the body's scope, leaving a run's cancellation to
asyncio's propagation alone.

What crossing does, as established by the tests of this package:

- ``to_trio(fn)(*args)`` runs ``fn`` as an asyncio task and waits for it. Cancelling
  the waiting trio task throws one ``asyncio.CancelledError`` into it; the trio side
  then sees ``trio.Cancelled``.
- ``to_asyncio(fn)(*args)`` starts ``fn`` as a new trio task in the loop's nursery
  and returns an asyncio future. Cancelling that future cancels the trio task.
- Exceptions cross unchanged in both directions.

trio-asyncio ships no type information; this module is the only place that touches
it, and gives the rest of the package typed callables.

Import order. trio-asyncio makes ``asyncio.get_running_loop()`` (and
``current_task()``, ``get_event_loop()``) find the trio-asyncio loop of the current
trio task by replacing those functions in :mod:`asyncio` when it is imported. A module
imported *before* that which did ``from asyncio import get_running_loop`` keeps the
original, which finds no loop: anyio's asyncio backend, which pydantic-ai uses for its
task groups, then fails with "no running event loop" inside the agent. pytest's
plugins import it early, and so may any application. :func:`_rebind_early_imports`
points such module-level names at trio-asyncio's versions, which behave exactly like
the originals outside a trio-asyncio loop.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast

if TYPE_CHECKING:
    from perdure.runtime import RunContext

_ORIGINALS = {
    name: getattr(asyncio, name)
    for name in ("get_running_loop", "_get_running_loop", "get_event_loop", "current_task")
}

import trio_asyncio  # type: ignore[import-untyped]  # noqa: E402 - after _ORIGINALS

__all__ = ["asyncio_context", "asyncio_iter", "body_call", "open_loop", "to_asyncio", "to_trio"]

P = ParamSpec("P")
T = TypeVar("T")


def _rebind_early_imports() -> int:
    """Point names bound to asyncio's own loop functions at trio-asyncio's versions.

    The originals are asyncio's C and pure-Python implementations (and whatever
    :mod:`asyncio` held when this module was imported, if trio-asyncio was not
    imported yet). Only module globals that *are* one of those function objects
    change, and never in asyncio or trio-asyncio themselves (they keep the originals
    on purpose). Returns how many names were rebound.
    """
    native = sys.modules.get("_asyncio")
    swaps: dict[int, tuple[object, object]] = {}
    for name, captured in _ORIGINALS.items():
        patched = getattr(asyncio, name)
        for original in (
            captured,
            getattr(native, name, None),
            getattr(asyncio.events, f"_c_{name}", None),
            getattr(asyncio.events, f"_py_{name}", None),
            getattr(asyncio.tasks, f"_c_{name}", None),
            getattr(asyncio.tasks, f"_py_{name}", None),
        ):
            if original is not None and original is not patched:
                swaps[id(original)] = (original, patched)
    count = 0
    for module_name, module in list(sys.modules.items()):
        if module_name.partition(".")[0] in ("asyncio", "trio_asyncio", "_asyncio"):
            continue
        namespace = getattr(module, "__dict__", None)
        if not isinstance(namespace, dict):
            continue
        for key, value in list(namespace.items()):
            swap = swaps.get(id(value))
            if swap is not None and swap[0] is value:
                namespace[key] = swap[1]
                count += 1
    return count


_rebind_early_imports()


def open_loop() -> AbstractAsyncContextManager[Any]:
    """An asyncio event loop running as trio tasks for the duration of the block."""
    return cast(AbstractAsyncContextManager[Any], trio_asyncio.open_loop())


def to_trio(fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Make an asyncio-flavoured async function awaitable from trio (inside :func:`open_loop`)."""
    return cast(Callable[P, Awaitable[T]], trio_asyncio.aio_as_trio(fn))


def to_asyncio(fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Make a trio-flavoured async function awaitable from asyncio (inside :func:`open_loop`)."""
    return cast(Callable[P, Awaitable[T]], trio_asyncio.trio_as_aio(fn))


def body_call(ctx: RunContext, fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """:func:`to_asyncio` for a call of the run body's ``ctx`` (a step, a wait, an emit).

    The call runs in a trio task of its own, but the agent makes its calls one after
    another (tools run sequentially), so it journals as the body's own, positionally
    (``ctx.sequential()``), exactly as it would without the bridge.
    """

    async def call(*args: P.args, **kwargs: P.kwargs) -> T:
        with ctx.sequential():
            return await fn(*args, **kwargs)

    return to_asyncio(call)


@asynccontextmanager
async def asyncio_context(manager: AbstractAsyncContextManager[T]) -> AsyncIterator[T]:
    """Enter an asyncio-flavoured async context manager from trio."""
    async with trio_asyncio.aio_as_trio(manager) as value:
        yield cast(T, value)


def asyncio_iter(iterable: Any) -> AsyncIterator[Any]:
    """Iterate an asyncio-flavoured async iterable from trio."""
    return cast(AsyncIterator[Any], trio_asyncio.aio_as_trio(iterable).__aiter__())
