"""perdure's HTTP API inside an asyncio web application, through perdure.AsyncioHost.

The application is a plain starlette app on asyncio (FastAPI is the same: it *is* a
starlette app) served by hypercorn's asyncio worker. Its own routes call the runtime
through the host (``await host.start(...)``), and the whole perdure API is mounted
next to them under ``/perdure``. The runtime runs on its own trio thread.

    python examples/starlette_asyncio_host.py [DATA_DIR]           # a scripted tour
    python examples/starlette_asyncio_host.py [DATA_DIR] --serve 8000

Needs the server extra: ``pip install 'perdure[server]'``.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sys
import tempfile
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from hypercorn.asyncio import serve
from hypercorn.config import Config
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

import perdure
from perdure.server import asgi_app

args = [a for a in sys.argv[1:] if not a.startswith("--")]
host = perdure.AsyncioHost(args[0] if args else tempfile.mkdtemp() + "/data")


@host.workflow("order")
async def order(ctx: perdure.RunContext, inp: dict[str, Any]) -> dict[str, Any]:
    """An order that a person approves (over the mounted perdure API) before it ships."""
    total = await ctx.step("price", lambda: inp["qty"] * 12)
    decision = await ctx.wait_for_approval("ship", prompt=f"Ship {inp['qty']} for {total}?")
    return {"total": total, "shipped": decision.approved}


# -- the application's own routes -----------------------------------------------------------


async def hello(request: Request) -> JSONResponse:
    return JSONResponse({"hello": "from the asyncio app"})


async def place_order(request: Request) -> JSONResponse:
    body = await request.json()
    started = await host.start(
        "workflow:order", {"qty": int(body["qty"])}, owner=perdure.Project("shop")
    )
    return JSONResponse({"run_id": started.run.id}, status_code=202)


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    async with host:  # opens the runtime (its trio thread) for the app's lifetime
        yield


app = Starlette(
    routes=[
        Route("/hello", hello),
        Route("/orders", place_order, methods=["POST"]),
        Mount("/perdure", app=asgi_app(host)),  # the whole perdure API, same runtime
    ],
    lifespan=lifespan,
)


# -- serving it, and a scripted tour -------------------------------------------------------


def call(url: str, method: str = "GET", body: Any = None, accept: str = "application/json") -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Accept": accept})
    if data is not None:
        request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=30) as response:
        text = response.read().decode()
    return text if accept == "text/event-stream" else json.loads(text)


def tour(base: str) -> None:
    print(call(f"{base}/hello"))
    run_id = call(f"{base}/orders", "POST", {"qty": 3})["run_id"]
    waiting = call(f"{base}/perdure/runs/{run_id}/wait?timeout=0.5")
    print("order", run_id, "is", waiting["status"], "on", waiting["waiting"]["reason"])
    answer = call(
        f"{base}/perdure/runs/{run_id}/resume",
        "POST",
        {"type": "approval", "key": "ship", "approved": True, "approver": "ann"},
    )
    print("approved:", answer)
    done = call(f"{base}/perdure/runs/{run_id}/wait")
    print(done["status"], done["completion"]["result"])
    stream = call(f"{base}/perdure/runs/{run_id}/events?until=end", accept="text/event-stream")
    print(
        [json.loads(line[5:])["type"] for line in stream.splitlines() if line.startswith("data:")]
    )


async def main() -> None:
    serving = "--serve" in sys.argv
    port = int(sys.argv[sys.argv.index("--serve") + 1]) if serving else 0
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(128)
    base = f"http://127.0.0.1:{listener.getsockname()[1]}"
    config = Config()
    config.bind = [f"fd://{listener.fileno()}"]
    config.accesslog = None
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    server = asyncio.ensure_future(serve(app, config, shutdown_trigger=stop.wait))  # type: ignore[arg-type]
    try:
        if serving:
            print("serving", base, flush=True)
            await server
        else:
            await asyncio.sleep(0.2)
            await asyncio.to_thread(tour, base)
    finally:
        stop.set()
        await server  # hypercorn closes the listening socket it was handed


if __name__ == "__main__":
    asyncio.run(main())
