"""Routes for the surfaces beside runs: logs, graph state, schedules, batches.

Each route calls the runtime method of the same name (``rt.logs``,
``rt.graph_state``, ``rt.list_schedules``, ``rt.get_schedule``,
``rt.pause_schedule``, ``rt.resume_schedule``, ``rt.trigger_schedule``,
``rt.batch``); runtime errors map to their HTTP status like everywhere else.
Results are encoded as they come (msgspec structs or plain data).
"""

from __future__ import annotations

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from ._api import Api
from ._body import decode_json, read_body
from ._errors_http import json_response
from ._runs import idempotency_key, query_int

__all__ = ["SurfacesAPI"]


class TriggerBody(msgspec.Struct, forbid_unknown_fields=True):
    idempotency_key: str | None = None


class NoBody(msgspec.Struct, forbid_unknown_fields=True):
    """Pause and resume take no fields: an empty body or ``{}``."""


class SurfacesAPI:
    def __init__(self, api: Api, max_body: int) -> None:
        self.api = api
        self.max_body = max_body

    async def logs(self, request: Request) -> Response:
        after: int | str | None = request.query_params.get("after")
        if isinstance(after, str) and after.isascii() and after.isdigit():
            after = int(after)  # a sequence number; anything else is the runtime's to refuse
        page = await self.api.call(
            "logs",
            request.path_params["run_id"],
            after=after,
            limit=query_int(request, "limit", 100, 1, 1000),
            direction=request.query_params.get("direction", "forward"),
        )
        return json_response(page)

    async def graph(self, request: Request) -> Response:
        return json_response(await self.api.call("graph_state", request.path_params["run_id"]))

    async def list_schedules(self, request: Request) -> Response:
        return json_response({"schedules": await self.api.call("list_schedules")})

    async def get_schedule(self, request: Request) -> Response:
        return json_response(await self.api.call("get_schedule", request.path_params["name"]))

    async def pause_schedule(self, request: Request) -> Response:
        return await self._schedule_change(request, "pause_schedule")

    async def resume_schedule(self, request: Request) -> Response:
        return await self._schedule_change(request, "resume_schedule")

    async def _schedule_change(self, request: Request, method: str) -> Response:
        name = request.path_params["name"]
        raw = await read_body(request, self.max_body)
        if raw.strip():
            decode_json(raw, NoBody)  # malformed or unexpected: a 400 that changes nothing
        await self.api.call(method, name)
        return json_response(await self.api.call("get_schedule", name))

    async def trigger_schedule(self, request: Request) -> Response:
        raw = await read_body(request, self.max_body)
        body = decode_json(raw, TriggerBody) if raw.strip() else TriggerBody()
        started = await self.api.call(
            "trigger_schedule",
            request.path_params["name"],
            idempotency_key=idempotency_key(body.idempotency_key, request),
        )
        return json_response(
            {"accepted": True, "duplicate": started.duplicate, "run": started.run}, 202
        )

    async def batch(self, request: Request) -> Response:
        return json_response(await self.api.call("batch", request.path_params["batch_id"]))
