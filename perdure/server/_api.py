"""What the server calls: a Runtime (on trio) or an AsyncioHost (on asyncio), alike.

The HTTP layer only ever awaits :meth:`Api.call` and iterates :meth:`Api.events`;
whether a runtime method is a plain call (``Runtime.get``) or a coroutine
(``Runtime.start``, every ``AsyncioHost`` method) is decided here, once, so each
route is written once for both hosts.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator
from typing import Any, Protocol

from perdure.runtime import AsyncioHost, RunEvent, Runtime

__all__ = ["Api", "EventIterator", "Served"]

Served = Runtime | AsyncioHost


class EventIterator(Protocol):
    """``rt.events(...)``: an async iterator of :class:`RunEvent` that can be closed."""

    def __aiter__(self) -> AsyncIterator[RunEvent]: ...
    async def __anext__(self) -> RunEvent: ...
    async def aclose(self) -> None: ...


class Api:
    """Uniform async access to a :class:`~perdure.Runtime` or :class:`~perdure.AsyncioHost`."""

    def __init__(self, rt: Served) -> None:
        if not isinstance(rt, Runtime | AsyncioHost):
            raise TypeError(
                f"asgi_app serves a perdure.Runtime or perdure.AsyncioHost, not {type(rt).__name__}"
            )
        self.rt = rt

    async def call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """``rt.<name>(*args, **kwargs)``, awaited if it is a coroutine."""
        result = getattr(self.rt, name)(*args, **kwargs)
        if inspect.isawaitable(result):
            result = await result
        return result

    def events(self, run_id: str, after: int = 0, *, follow: bool = True) -> EventIterator:
        """The run's events (close it with ``contextlib.aclosing`` when leaving early)."""
        stream: EventIterator = self.rt.events(run_id, after, follow=follow)  # type: ignore[assignment]
        return stream

    def knows_target(self, target: str) -> bool:
        """Whether a definition is registered for ``target``."""
        runtime = self.rt.runtime if isinstance(self.rt, AsyncioHost) else self.rt
        return any(info.target == target for info in runtime.targets())
