"""``asgi_app(rt)``: the HTTP API over a Runtime (or an AsyncioHost) as a starlette app.

Endpoints (R33-R35; DESIGN §5.1). Every error is JSON ``{"code", "message",
"detail"}`` at the error's HTTP status; bodies are capped (``max_body``, 10 MiB by
default) and bad input is a 400 that changes nothing.

=======  ==================================  =============================================
method   path                                answer
=======  ==================================  =============================================
GET      /health                             ``{"status": "ok", "version"}`` (no token)
POST     /runs                               202 ``{accepted, duplicate, run}``
GET      /runs                               ``{runs, next_cursor}`` (filters, paging)
GET      /runs/{id}                          the run record
GET      /runs/{id}/events                   a page of events, or SSE (``Accept``)
GET      /runs/{id}/snapshot                 messages, state, open tool calls, run (R22)
POST     /runs/{id}/resume                   ``{accepted, duplicate, run_id, key}``
POST     /runs/{id}/cancel                   ``{cancelled, run}`` (the whole tree)
GET      /runs/{id}/wait                     the terminal record; 202 and the current
                                             one after ``?timeout=`` (30 s)
GET      /runs/{id}/logs                     ``{entries, next_cursor}`` (``rt.logs``)
GET      /runs/{id}/graph                    ``rt.graph_state`` (a graph run's state)
GET      /schedules, /schedules/{name}       ``{schedules}`` / one ``ScheduleInfo``
POST     /schedules/{name}/pause|resume      the schedule after the change
POST     /schedules/{name}/trigger           202 ``{accepted, duplicate, run}``
GET      /batches/{id}                       ``rt.batch`` (its total and counts per status)
POST     /agents/{name}                      AG-UI: RunAgentInput in, SSE out (R34)
GET      /agents/{name}/capabilities         AG-UI AgentCapabilities
=======  ==================================  =============================================

The app runs on whichever event loop serves it: trio under ``perdure serve``
(hypercorn's trio worker inside the runtime's own trio run), asyncio when mounted
into an asyncio application through :class:`perdure.AsyncioHost`.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import perdure

from ._agui_endpoint import AgentsAPI
from ._api import Api, Served
from ._auth import BearerAuth
from ._body import MAX_BODY_BYTES
from ._errors_http import error_response, json_response, translate_errors
from ._runs import RunsAPI
from ._sse import Shutdown, SSEOptions
from ._surfaces import SurfacesAPI

__all__ = ["asgi_app"]

_HTTP_CODES = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}


def asgi_app(
    rt: Served,
    *,
    token: str | None = None,
    max_body: int = MAX_BODY_BYTES,
    sse: SSEOptions | None = None,
) -> Starlette:
    """The perdure HTTP API over ``rt`` (an open-able :class:`~perdure.Runtime` or
    :class:`~perdure.AsyncioHost`).

    ``token``: require ``Authorization: Bearer <token>`` on every route but
    ``/health``. ``max_body``: request body cap in bytes. ``sse``: heartbeat
    interval, per-client buffer and slow-client policy of event streams.
    ``app.state.perdure_shutdown.set()`` ends every open stream (``serve`` does it
    when the server shuts down).
    """
    api = Api(rt)
    options = sse or SSEOptions()
    shutdown = Shutdown()
    runs = RunsAPI(api, options, shutdown, max_body)
    agents = AgentsAPI(api, options, shutdown, max_body)
    later = SurfacesAPI(api, max_body)

    async def health(request: Request) -> Response:
        return json_response({"status": "ok", "version": perdure.__version__})

    def route(path: str, endpoint: object, method: str) -> Route:
        return Route(path, translate_errors(endpoint), methods=[method])  # type: ignore[arg-type]

    routes = [
        route("/health", health, "GET"),
        route("/runs", runs.start, "POST"),
        route("/runs", runs.list, "GET"),
        route("/runs/{run_id}", runs.get, "GET"),
        route("/runs/{run_id}/events", runs.events, "GET"),
        route("/runs/{run_id}/snapshot", runs.snapshot, "GET"),
        route("/runs/{run_id}/resume", runs.resume, "POST"),
        route("/runs/{run_id}/cancel", runs.cancel, "POST"),
        route("/runs/{run_id}/wait", runs.wait, "GET"),
        route("/runs/{run_id}/logs", later.logs, "GET"),
        route("/runs/{run_id}/graph", later.graph, "GET"),
        route("/schedules", later.list_schedules, "GET"),
        route("/schedules/{name}", later.get_schedule, "GET"),
        route("/schedules/{name}/pause", later.pause_schedule, "POST"),
        route("/schedules/{name}/resume", later.resume_schedule, "POST"),
        route("/schedules/{name}/trigger", later.trigger_schedule, "POST"),
        route("/batches/{batch_id}", later.batch, "GET"),
        route("/agents/{name}", agents.run, "POST"),
        route("/agents/{name}/capabilities", agents.capabilities, "GET"),
    ]

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = _HTTP_CODES.get(exc.status_code, f"HTTP_{exc.status_code}")
        return error_response(exc.status_code, code, str(exc.detail), headers=exc.headers)

    middleware = [Middleware(BearerAuth, token=token)] if token is not None else []
    app = Starlette(
        routes=routes, middleware=middleware, exception_handlers={HTTPException: http_error}
    )
    app.state.perdure_shutdown = shutdown
    app.state.perdure_runtime = rt
    return app
