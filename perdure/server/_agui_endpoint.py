"""``POST /agents/{name}``: the AG-UI endpoint (R34), usable as-is by ``@ag-ui/client``'s
``HttpAgent``.

The request body is an AG-UI ``RunAgentInput`` (camelCase JSON); the answer is an
SSE stream of the run's events. The mapping:

- ``threadId`` is the run's owner, ``perdure.Conversation(threadId)``;
- ``runId`` is the run's id, so a retried POST (same ``runId``) starts nothing and
  replays the same run's first segment;
- ``resume[]`` entries are resume signals (:func:`perdure.signal_from_resume`;
  an entry's ``metadata.approver`` names the approver of an approval).

The AG-UI interrupt contract (docs.ag-ui.com, "Interrupts") and how it is kept:

1. *Same thread*: the run resumed is one of the thread's runs of this agent.
2. *Resume linkage*: every ``interruptId`` must be one the run announced; one no
   run of the thread announced is answered with ``RUN_ERROR`` ``UNKNOWN_INTERRUPT``.
3. *Cover all open interrupts*: a ``resume`` that leaves one of the waiting run's
   interrupts unanswered is refused whole (``RUN_ERROR`` ``RESUME_INCOMPLETE``),
   before any signal is applied.
4. *Pending interrupts block new input*: a request without ``resume`` on a thread
   whose run of this agent is waiting is answered with ``RUN_ERROR``
   ``INTERRUPT_PENDING`` and starts nothing.
5. *Idempotency*: resuming again with the same entries applies nothing twice (each
   signal is a duplicate) and streams the same segment again.
6. *Payload validation*: a payload failing the wait's schema, an approver not on
   the list, a different payload for an answered interrupt: ``RUN_ERROR`` with the
   runtime's code (``INVALID_SIGNAL``, ``PERMISSION_DENIED``, ``SIGNAL_CONFLICT``).

Such ``RUN_ERROR`` answers belong to the request, not to the run: nothing is
stored and the run keeps waiting. All entries are applied together
(``resume_many``: all or none), so the resumed stream is one segment with every
answer's result; it ends at the run's next segment end.

A request that is not a ``RunAgentInput`` at all is a ``400`` (JSON error),
an unknown agent a ``404``, a ``runId`` already used by another thread or agent a
``409``, as everywhere in the API. A client that disconnects does not cancel its
run (runs are durable; cancel with ``POST /runs/{id}/cancel``).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from perdure._errors import (
    IdempotencyConflict,
    InvalidInput,
    PerdureError,
    RunNotFound,
    UnknownTarget,
)
from perdure.agui import AgentInput, Event, RunErrorEvent, RunFinishedEvent
from perdure.runtime import signal_from_resume
from perdure.storage import Conversation, RunRecord

from ._api import Api
from ._body import decode_json, read_body
from ._errors_http import json_response
from ._sse import Shutdown, SSEOptions, SSEResponse
from ._streams import SEGMENT, EndRule, error_frames, interrupt_ids, read_log, run_frames

__all__ = ["AgentsAPI"]

_MAX_THREAD_RUNS = 10_000


class AgentsAPI:
    """``POST /agents/{name}`` and ``GET /agents/{name}/capabilities``."""

    def __init__(self, api: Api, sse: SSEOptions, shutdown: Shutdown, max_body: int) -> None:
        self.api = api
        self.sse = sse
        self.shutdown = shutdown
        self.max_body = max_body

    def _stream(self, frames: Any) -> SSEResponse:
        return SSEResponse(frames, self.sse, self.shutdown)

    def _refuse(self, code: str, message: str) -> SSEResponse:
        return self._stream(error_frames(code, message))

    async def run(self, request: Request) -> Response:
        target = f"agent:{request.path_params['name']}"
        body = await read_body(request, self.max_body)
        inp = decode_json(body, AgentInput, "RunAgentInput")
        if not inp.thread_id or not inp.run_id:
            raise InvalidInput("RunAgentInput needs a threadId and a runId")
        if not self.api.knows_target(target):
            raise UnknownTarget(f"no agent {request.path_params['name']!r}", target=target)
        owner = Conversation(inp.thread_id)
        if inp.resume:
            return await self._resume(target, owner, inp.resume)
        try:
            existing: RunRecord | None = await self.api.call("get", inp.run_id)
        except RunNotFound:
            existing = None
        if existing is not None:  # a retried POST: replay, never a second run
            if existing.target != target or existing.owner != owner:
                raise IdempotencyConflict(
                    f"run {inp.run_id} belongs to {existing.target} on another thread",
                    run_id=inp.run_id,
                )
            return self._stream(run_frames(self.api, existing, 0, SEGMENT))
        waiting = [r for r in await self._thread_runs(target, owner) if r.status == "waiting"]
        if waiting:
            pending = sorted(
                f"{w.reason}:{w.key}" for r in waiting if r.waiting for w in r.waiting.waits
            )
            return self._refuse(
                "INTERRUPT_PENDING",
                f"thread {inp.thread_id} has open interrupts ({', '.join(pending)}): "
                "a new input must carry a resume addressing them",
            )
        started = await self.api.call("start", target, inp, owner=owner, run_id=inp.run_id)
        return self._stream(run_frames(self.api, started.run, 0, SEGMENT))

    async def _thread_runs(self, target: str, owner: Conversation) -> list[RunRecord]:
        """The thread's runs of this agent, newest first."""
        runs: list[RunRecord] = []
        cursor: str | None = None
        while len(runs) < _MAX_THREAD_RUNS:
            page = await self.api.call("list", owner=owner, kind="agent", after=cursor, limit=1000)
            runs.extend(r for r in page.runs if r.target == target)
            cursor = page.next_cursor
            if cursor is None:
                break
        runs.reverse()
        return runs

    async def _resume(
        self, target: str, owner: Conversation, entries: list[dict[str, Any]]
    ) -> Response:
        try:
            signals = [signal_from_resume(e, _approver(e)) for e in entries]
        except PerdureError as exc:
            return self._refuse(exc.code, exc.message)
        ids = [e["interruptId"] for e in entries]
        if len(set(ids)) != len(ids):
            return self._refuse("INVALID_SIGNAL", "a resume names an interrupt twice")
        wanted = frozenset(ids)
        runs = await self._thread_runs(target, owner)
        found = await self._find_interrupt(runs, wanted)
        if isinstance(found, Response):
            return found
        rec, start = found
        try:
            # All or none: a bad entry leaves every interrupt open (R33: nothing changed).
            await self.api.call("resume_many", rec.id, signals)
        except PerdureError as exc:
            return self._refuse(exc.code, exc.message)
        return self._stream(run_frames(self.api, rec, start, _resume_end(wanted)))

    async def _find_interrupt(
        self, runs: list[RunRecord], wanted: frozenset[str]
    ) -> tuple[RunRecord, int] | Response:
        """The run these entries resume and the event id its resumed stream follows."""
        # A waiting run whose open interrupts the entries touch: they must cover them all.
        for rec in (r for r in runs if r.status == "waiting"):
            log = [e.event for e in await read_log(self.api, rec.id)]
            last = _interrupts(log)
            if not last or not (last[-1][1] & wanted):
                continue
            missing = last[-1][1] - wanted
            if missing:
                return self._refuse(
                    "RESUME_INCOMPLETE",
                    "a resume must address every open interrupt; missing: "
                    + ", ".join(sorted(missing)),
                )
            return rec, _chain_start(last, wanted)
        # Otherwise a retry of a resume already applied: replay it (its signals are duplicates).
        for rec in runs:
            log = [e.event for e in await read_log(self.api, rec.id)]
            announced = _interrupts(log)
            if any(ids <= wanted for _, ids in announced):
                return rec, _chain_start(announced, wanted)
        return self._refuse(
            "UNKNOWN_INTERRUPT",
            "no run of this thread announced the interrupts " + ", ".join(sorted(wanted)),
        )

    async def capabilities(self, request: Request) -> Response:
        """AG-UI ``AgentCapabilities`` of an agent (discovery only; absent means unknown)."""
        name = request.path_params["name"]
        if not self.api.knows_target(f"agent:{name}"):
            raise UnknownTarget(f"no agent {name!r}", target=f"agent:{name}")
        return json_response(
            {
                "identity": {"name": name, "type": "perdure"},
                "transport": {"streaming": True, "resumable": True},
                "tools": {"supported": True, "clientProvided": True, "parallelCalls": True},
                "state": {"snapshots": True, "deltas": True},
                "humanInTheLoop": {"supported": True, "approvals": True, "interrupts": True},
            }
        )


def _approver(entry: Any) -> str | None:
    metadata = entry.get("metadata") if isinstance(entry, dict) else None
    approver = metadata.get("approver") if isinstance(metadata, dict) else None
    return approver if isinstance(approver, str) else None


def _interrupts(log: list[Event]) -> list[tuple[int, frozenset[str]]]:
    """``(event_id, interrupt ids)`` of every interrupt ``RUN_FINISHED``, in order."""
    out = []
    for event_id, event in enumerate(log, start=1):
        ids = interrupt_ids(event)
        if ids:
            out.append((event_id, ids))
    return out


def _chain_start(announced: list[tuple[int, frozenset[str]]], wanted: frozenset[str]) -> int:
    """The event id after which the stream of a resume answering ``wanted`` begins.

    That is the latest interrupt the entries cover, moved back over the interrupts
    that merely re-announced what was left of an earlier one while the entries were
    applied one by one (each strictly larger, all covered).
    """
    index = max(i for i, (_, ids) in enumerate(announced) if ids <= wanted)
    while index > 0:
        earlier = announced[index - 1][1]
        if earlier <= wanted and announced[index][1] < earlier:
            index -= 1
        else:
            break
    return announced[index][0]


def _resume_end(wanted: frozenset[str]) -> EndRule:
    """Segment end, except an interrupt left of the ones this resume answers."""

    def ends(event: Event) -> bool:
        if isinstance(event, RunErrorEvent):
            return True
        if not isinstance(event, RunFinishedEvent):
            return False
        ids = interrupt_ids(event)
        return ids is None or not ids <= wanted

    return ends
