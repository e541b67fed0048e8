"""``serve(rt)``: hypercorn's trio worker inside the runtime's own trio run (R33).

There is one event loop: the runtime's. Hypercorn's trio worker
(``hypercorn.trio.serve``) runs as a task of the nursery opened inside
``async with rt:``, so a request handler calls ``rt.start`` or iterates
``rt.events`` directly, with no thread hop and no copy between loops, and the
run actors, the timers and every connection share one scheduler.

Shutdown order: the trigger fires; every open event stream is told to end (its
clients get a complete response and reconnect elsewhere with ``Last-Event-ID``);
hypercorn stops accepting and lets requests in flight finish (``graceful_timeout``);
only then does the runtime close. Runs in flight are recovered at the next open,
by this process or another one.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable

import trio
from hypercorn.config import Config
from hypercorn.trio import serve as hypercorn_serve

from perdure.runtime import Runtime

from ._app import asgi_app
from ._auth import check_bind
from ._body import MAX_BODY_BYTES
from ._sse import SSEOptions

__all__ = ["serve"]


def _bind(host: str, port: int) -> str:
    return f"[{host.strip('[]')}]:{port}" if ":" in host.strip("[]") else f"{host}:{port}"


async def serve(
    rt: Runtime,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    token: str | None = None,
    sse: SSEOptions | None = None,
    max_body: int = MAX_BODY_BYTES,
    open_runtime: bool = True,
    shutdown_trigger: Callable[[], Awaitable[None]] | None = None,
    graceful_timeout: float = 5.0,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``rt``'s HTTP API until ``shutdown_trigger`` returns (forever if None).

    Opens the runtime first (``async with rt:``) unless ``open_runtime=False``, for
    a caller that already did. A non-loopback ``host`` without a ``token`` is
    refused before anything is opened. ``port=0`` picks a free port; the bound
    addresses (``["http://127.0.0.1:8000"]``) are handed to ``task_status``, so
    ``await nursery.start(serve, rt)`` returns them.
    """
    check_bind(host, token)
    app = asgi_app(rt, token=token, sse=sse, max_body=max_body)
    config = Config()
    config.bind = [_bind(host, port)]
    config.accesslog = None
    config.graceful_timeout = graceful_timeout
    config.backlog = 4096  # bursts of connections (a thousand followers at once)
    config.keep_alive_max_requests = 1_000_000

    async def trigger() -> None:
        if shutdown_trigger is None:
            await trio.sleep(math.inf)
        else:
            await shutdown_trigger()
        app.state.perdure_shutdown.set()

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(
                lambda task_status: hypercorn_serve(
                    app,  # type: ignore[arg-type]  # starlette and hypercorn type ASGI apart
                    config,
                    shutdown_trigger=trigger,
                    task_status=task_status,
                )
            )
            task_status.started(binds)

    if open_runtime:
        async with rt:
            await run()
    else:
        await run()
