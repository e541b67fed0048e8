"""The runs API: start, list, read, follow, snapshot, resume, cancel, wait.

JSON shapes. perdure's own records go out as msgspec encodes them, snake_case,
exactly as ``perdure runs show --json`` prints them; a field at its default is
omitted (absent means null, an empty list or zero). AG-UI objects inside them
(events, messages, interrupts) keep their camelCase wire form:

- a run: ``RunRecord`` (``{"id", "seq", "kind", "owner": {"type": "project",
  "id"}, "target", "root_id", "status", "created_at", ...}``);
- a page of runs: ``{"runs": [run, ...], "next_cursor": str | null}``;
- a page of events: ``{"events": [{"run_id", "event_id", "event": <AG-UI event>}],
  "next_after": int, "more": bool}``;
- a start: ``202 {"accepted": true, "duplicate": bool, "run": run}``;
- a resume: ``{"accepted": true, "duplicate": bool, "run_id", "key"}``;
- a cancel: ``{"cancelled": bool, "run": run}``.
"""

from __future__ import annotations

from contextlib import aclosing
from typing import Any

import anyio
import msgspec
from starlette.requests import Request
from starlette.responses import Response

from perdure._errors import InvalidInput
from perdure.runtime import Signal
from perdure.storage import Conversation, Owner, Project, RunRecord

from ._api import Api
from ._body import decode_json, read_body
from ._errors_http import json_response
from ._sse import Shutdown, SSEOptions, SSEResponse, no_content
from ._streams import RUN_END, SEGMENT, run_frames

__all__ = ["RunsAPI"]


class StartBody(msgspec.Struct, forbid_unknown_fields=True):
    """``POST /runs``: what ``Runtime.start`` takes."""

    target: str
    owner: Owner | str
    input: Any = None
    idempotency_key: str | None = None
    run_id: str | None = None


class CancelBody(msgspec.Struct, forbid_unknown_fields=True):
    reason: str = "cancelled over HTTP"


def parse_owner(value: Owner | str) -> Owner:
    """An owner object, or ``project:ID`` / ``conversation:ID`` as one string."""
    if not isinstance(value, str):
        return value
    prefix, _, ident = value.partition(":")
    if ident and prefix in ("project", "p"):
        return Project(ident)
    if ident and prefix in ("conversation", "c"):
        return Conversation(ident)
    raise InvalidInput(f"owner must be project:ID or conversation:ID (got {value!r})")


def query_int(request: Request, name: str, default: int | None, low: int, high: int) -> int | None:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isascii() or not raw.isdigit() or not low <= int(raw) <= high:
        raise InvalidInput(f"{name} must be an integer from {low} to {high} (got {raw!r})")
    return int(raw)


def query_float(request: Request, name: str, default: float, low: float, high: float) -> float:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not low <= value <= high:
        raise InvalidInput(f"{name} must be a number from {low:g} to {high:g} (got {raw!r})")
    return value


def wants_sse(request: Request) -> bool:
    return "text/event-stream" in request.headers.get("accept", "")


def resume_point(request: Request) -> int:
    """Where a stream resumes: ``Last-Event-ID`` (a reconnect) over ``?after=``."""
    header = request.headers.get("last-event-id")
    if header is not None and header.strip():
        text = header.strip()
        if not text.isascii() or not text.isdigit() or len(text) > 18:
            raise InvalidInput(f"Last-Event-ID must be an event id (got {header!r})")
        return int(text)
    after = query_int(request, "after", 0, 0, 2**62)
    assert after is not None
    return after


_LIST_PARAMS = frozenset(
    ("owner", "status", "kind", "parent_id", "root_id", "batch_id", "after", "limit")
)


def idempotency_key(in_body: str | None, request: Request) -> str | None:
    """The key from the body, else the ``Idempotency-Key`` header; an empty one is
    passed on (and refused), never taken for "no key"."""
    return in_body if in_body is not None else request.headers.get("idempotency-key")


class RunsAPI:
    """The ``/runs`` endpoints over one :class:`Api`."""

    def __init__(self, api: Api, sse: SSEOptions, shutdown: Shutdown, max_body: int) -> None:
        self.api = api
        self.sse = sse
        self.shutdown = shutdown
        self.max_body = max_body

    async def start(self, request: Request) -> Response:
        body = decode_json(await read_body(request, self.max_body), StartBody)
        key = idempotency_key(body.idempotency_key, request)
        started = await self.api.call(
            "start",
            body.target,
            body.input,
            owner=parse_owner(body.owner),
            idempotency_key=key,
            run_id=body.run_id,
        )
        return json_response(
            {"accepted": True, "duplicate": started.duplicate, "run": started.run}, 202
        )

    async def list(self, request: Request) -> Response:
        params = request.query_params
        unknown = sorted(set(params) - _LIST_PARAMS)
        if unknown:
            # A filter misspelt and ignored would answer with every run.
            raise InvalidInput(
                f"unknown query parameter(s) {', '.join(unknown)}; "
                f"the filters are {', '.join(sorted(_LIST_PARAMS))}"
            )
        statuses = [s for value in params.getlist("status") for s in value.split(",") if s]
        owner = params.get("owner")
        page = await self.api.call(
            "list",
            owner=parse_owner(owner) if owner else None,
            status=statuses or None,
            kind=params.get("kind"),
            parent_id=params.get("parent_id"),
            root_id=params.get("root_id"),
            batch_id=params.get("batch_id"),
            after=params.get("after"),
            limit=query_int(request, "limit", 100, 1, 1000),
        )
        return json_response({"runs": page.runs, "next_cursor": page.next_cursor})

    async def get(self, request: Request) -> Response:
        return json_response(await self.api.call("get", request.path_params["run_id"]))

    async def events(self, request: Request) -> Response:
        run_id = request.path_params["run_id"]
        if wants_sse(request):
            return await self.stream(request, run_id)
        after = query_int(request, "after", 0, 0, 2**62)
        limit = query_int(request, "limit", 100, 1, 1000)
        assert after is not None and limit is not None
        await self.api.call("get", run_id)
        out = []
        async with aclosing(self.api.events(run_id, after, follow=False)) as events:
            async for event in events:
                out.append(event)
                if len(out) > limit:  # one past the page: whether there is more
                    break
        more = len(out) > limit
        del out[limit:]
        return json_response(
            {
                "events": out,
                "next_after": out[-1].event_id if out else after,
                "more": more,
            }
        )

    async def stream(self, request: Request, run_id: str) -> Response:
        until = request.query_params.get("until", "segment")
        if until not in ("segment", "end"):
            raise InvalidInput(f"until must be 'segment' or 'end' (got {until!r})")
        after = resume_point(request)
        rec: RunRecord = await self.api.call("get", run_id)
        if rec.terminal and after >= rec.last_event_id:
            return no_content()  # nothing will ever come: EventSource stops reconnecting
        ends = SEGMENT if until == "segment" else RUN_END
        return SSEResponse(run_frames(self.api, rec, after, ends), self.sse, self.shutdown)

    async def snapshot(self, request: Request) -> Response:
        upto = query_int(request, "upto", None, 0, 2**62)
        return json_response(await self.api.call("snapshot", request.path_params["run_id"], upto))

    async def resume(self, request: Request) -> Response:
        run_id = request.path_params["run_id"]
        raw = await read_body(request, self.max_body)
        signal: Signal = decode_json(raw, Signal, "signal")  # type: ignore[arg-type]
        resumed = await self.api.call("resume", run_id, signal)
        return json_response(
            {
                "accepted": True,
                "duplicate": resumed.duplicate,
                "run_id": resumed.run_id,
                "key": resumed.key,
            }
        )

    async def cancel(self, request: Request) -> Response:
        raw = await read_body(request, self.max_body)
        body = decode_json(raw, CancelBody) if raw.strip() else CancelBody()
        cancelled = await self.api.call("cancel", request.path_params["run_id"], body.reason)
        return json_response({"cancelled": cancelled.cancelled, "run": cancelled.run})

    async def wait(self, request: Request) -> Response:
        """The record once terminal (200), or the current one after ``timeout`` (202)."""
        run_id = request.path_params["run_id"]
        timeout = query_float(request, "timeout", 30.0, 0.0, 300.0)
        assert timeout is not None
        ended: list[RunRecord] = []
        failed: list[Exception] = []
        async with anyio.create_task_group() as group:
            group.cancel_scope.deadline = anyio.current_time() + timeout

            async def until_ended() -> None:
                try:
                    ended.append(await self.api.call("wait", run_id))
                except Exception as exc:  # raised as itself below, not in a group
                    failed.append(exc)
                group.cancel_scope.cancel()

            async def until_shutdown() -> None:
                # A server shutting down answers now rather than cutting the request.
                await self.shutdown.wait()
                group.cancel_scope.cancel()

            group.start_soon(until_ended)
            group.start_soon(until_shutdown)
        if failed:
            raise failed[0]
        if ended:
            return json_response(ended[0])
        return json_response(await self.api.call("get", run_id), 202)
