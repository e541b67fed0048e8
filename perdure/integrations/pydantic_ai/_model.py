"""Model requests as durable steps: a recorded response is never requested again.

:class:`DurableModel` wraps whichever model serves a request (the run's capability
installs it with ``get_wrapper_model``, so fallbacks and per-request model choices
are wrapped too). Its ``request`` is the step ``model:<n>`` (the n-th request of the
run): the step calls the real model, logs the response as AG-UI events and records
the response (see :mod:`._codec`); on replay the step returns the recorded response
without calling anything, and its events are already in the log.

Streaming happens *inside* the step: when the model can stream, the step reads
``request_stream`` in a task of its own and appends text, tool-call and reasoning deltas
to the log as they arrive. The first deltas are committed (``ctx.flush()``) at once,
later ones at most every ``flush_interval`` seconds, and always within it: a delta
that arrives while the model then goes silent is committed when the interval is up,
not held back until the next one, so followers of the run see it while the request
runs. Commit points only decide when followers see events; the journal records the
step's response either way, so they do not affect replay. pydantic-ai itself sees a
plain, finished response; if it asked for a stream (a capability that watches the
event stream), it gets the recorded response replayed as stream events. Each
streamed event is also a heartbeat, which feeds the step's ``inactivity_timeout``.

Each attempt at a request logs its own assistant message (:class:`_Attempts`): the
first ``msg_<run id>_<n>``, a retried attempt (``model_retry``) or one run again after
a crash cut it (recovery closes the half-sent message, perdure's R21) another id, so a
client never appends the new attempt's text to the aborted one's. A streamed attempt
that may follow one which logged something starts with a ``MESSAGES_SNAPSHOT`` of the
conversation so far, which drops the aborted attempt's message (and a tool call it
had started) from clients. The log shows every attempt, the journal only the response
that completed, tagged with the id its events used.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio
from pydantic_ai.messages import ModelMessage, ModelResponse
from pydantic_ai.models import (
    CompletedStreamedResponse,
    Model,
    ModelRequestParameters,
    StreamedResponse,
)
from pydantic_ai.models.function import FunctionModel
from pydantic_ai.models.wrapper import WrapperModel
from pydantic_ai.settings import ModelSettings
from pydantic_ai.tools import RunContext

from perdure import AgentContext
from perdure.agui import MessagesSnapshotEvent, event_to_json

from ._bridge import asyncio_context, asyncio_iter, body_call, to_trio
from ._codec import dump_response, load_response
from ._events import ResponseEvents
from ._messages import SNAPSHOT_BUDGET, tag_message_id
from ._session import Session

__all__ = ["DurableModel", "can_stream"]


class DurableModel(WrapperModel):
    """A model whose every request is a step of the current perdure run."""

    def __init__(self, wrapped: Model, session: Session) -> None:
        super().__init__(wrapped)
        self._session = session

    async def request(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
    ) -> ModelResponse:
        session = self._session
        ctx, options = session.ctx, session.options
        name, message_id = session.next_request()
        wrapped = self.wrapped
        stream = can_stream(wrapped) if options.stream is None else options.stream
        attempts = _Attempts(session, message_id)

        async def attempt() -> dict[str, Any]:
            attempt_id = attempts.next()
            events = ResponseEvents(attempt_id)
            if stream:
                if attempts.after_logged:
                    await self._drop_aborted()
                try:
                    response = await self._streamed(
                        messages, model_settings, model_request_parameters, events
                    )
                finally:
                    attempts.logged = attempts.logged or events.produced
            else:
                response = await to_trio(wrapped.request)(
                    messages, model_settings, model_request_parameters
                )
                await ctx.emit(*events.whole(response))
            tag_message_id(response, attempt_id)
            return dump_response(response)

        recorded = await body_call(ctx, ctx.step)(
            name,
            attempt,
            retry=options.model_retry,
            timeout=options.model_timeout,
            inactivity_timeout=options.model_inactivity_timeout,
        )
        response = load_response(recorded)
        session.observe(response)
        return response

    async def _drop_aborted(self) -> None:
        """Log the conversation so far, without what an aborted attempt streamed.

        An earlier attempt at this request may have streamed part of an answer (under
        its own message id) before it failed or a crash cut it. A client keeps that
        message, and a tool call it started would swallow the new attempt's call of the
        same id. A ``MESSAGES_SNAPSHOT`` of the conversation (named like the run's
        final one) drops both. Skipped if the conversation cannot be rebuilt or is over
        the event cap: the final snapshot drops them then.
        """
        wire = self._session.conversation()
        if wire is None:
            return
        event = MessagesSnapshotEvent(messages=wire)
        if len(event_to_json(event)) <= SNAPSHOT_BUDGET:
            await self._session.ctx.emit(event)

    async def _streamed(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        parameters: ModelRequestParameters,
        events: ResponseEvents,
    ) -> ModelResponse:
        """Stream the request into the log; the response once it is complete.

        The stream is read in a task of its own and handed over through a channel, so
        the step's task can commit pending deltas when ``flush_interval`` has passed
        even while the model is silent (a leading-edge throttle alone would hold the
        last deltas back until the next one came). Commit points only decide when
        followers see the events: the journal holds the step's result either way.
        """
        ctx = self._session.ctx
        interval = self._session.options.flush_interval
        send, receive = trio.open_memory_channel[object](math.inf)
        completed: list[ModelResponse] = []
        failed: list[Exception] = []
        wrapped = self.wrapped

        async def read() -> None:
            try:
                stream = wrapped.request_stream(messages, model_settings, parameters)
                async with asyncio_context(stream) as streamed:
                    async for event in asyncio_iter(streamed):
                        send.send_nowait(event)
                    completed.append(streamed.get())
            except Exception as exc:  # raised again in the step's task, as it is
                failed.append(exc)
            finally:
                send.close()

        relay_failed: BaseException | None = None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            try:
                await _relay(ctx, receive, events, interval)
            except BaseException as exc:  # raised again below, not as an exception group
                relay_failed = exc
                nursery.cancel_scope.cancel()
        if relay_failed is not None:
            raise relay_failed
        if failed:
            raise failed[0]
        response = completed[0]
        await ctx.emit(*events.finish(response))
        return response

    @asynccontextmanager
    async def request_stream(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
        run_context: RunContext[Any] | None = None,
    ) -> AsyncIterator[StreamedResponse]:
        response = await self.request(messages, model_settings, model_request_parameters)
        yield CompletedStreamedResponse(
            response, model_request_parameters=model_request_parameters, replay_events=True
        )


async def _relay(
    ctx: AgentContext,
    receive: trio.MemoryReceiveChannel[object],
    events: ResponseEvents,
    interval: float,
) -> None:
    """Log the stream's events; commit them at most every ``interval`` seconds.

    The first events commit at once; later ones once ``interval`` has passed since the
    last commit, whether or not another event has come by then (a trailing flush).
    """
    flushed = -math.inf
    pending = False
    while True:
        event: object = _SILENT
        with trio.move_on_at(flushed + interval if pending else math.inf):
            try:
                event = await receive.receive()
            except trio.EndOfChannel:
                return
        if event is not _SILENT:
            ctx.heartbeat()
            out = events.on_event(event)
            if not out:
                continue
            await ctx.emit(*out)
            pending = True
            if trio.current_time() - flushed < interval:
                continue
        await ctx.flush()
        flushed, pending = trio.current_time(), False


_SILENT = object()
"""No stream event came before the flush deadline."""


class _Attempts:
    """The AG-UI message id of each attempt at one model request.

    The first attempt's is the request's (``msg_<run id>_<n>``). An attempt that may
    follow one which already logged events gets an id of its own, so clients never
    merge the two attempts' text: ``msg_<run id>_<n>-<run attempt>.<try>``, plus
    ``.<ms>`` when this activation took over a request whose earlier attempts were
    retried in another one. All three come from replay-stable values: the run's
    attempt (``ctx.attempt``, which grows when recovery closed a cut step), the count
    of tries in this activation, and how far the run's clock (``ctx.now()``, moved by
    each journaled retry) is past where it stood when the request began. The id of
    the attempt that succeeds is recorded with its response, so a replay reads it
    back rather than deriving it.
    """

    def __init__(self, session: Session, message_id: str) -> None:
        self.session = session
        self.base = message_id
        self.began = session.ctx.now()
        self.tries = 0
        self.tag = ""
        self.resumed = False  # earlier attempts ran in another activation
        self.logged = False  # an earlier attempt of this activation logged events

    @property
    def after_logged(self) -> bool:
        """Whether an earlier attempt may have logged part of an answer."""
        return self.resumed or self.logged

    def next(self) -> str:
        """The next attempt's message id."""
        ctx = self.session.ctx
        self.tries += 1
        if self.tries == 1:
            recovering = self.session.claim_recovery()
            waited = ctx.now() - self.began
            if waited > 0:  # earlier attempts were retried (journaled) by another activation
                self.tag = f".{max(1, round(waited * 1000))}"
            self.resumed = recovering or waited > 0
            if not self.resumed:
                return self.base
        return f"{self.base}-{ctx.attempt}.{self.tries}{self.tag}"


def can_stream(model: Model) -> bool:
    """Whether ``model`` implements streamed requests."""
    while isinstance(model, WrapperModel):
        model = model.wrapped
    if isinstance(model, FunctionModel):
        return model.stream_function is not None
    return type(model).request_stream is not Model.request_stream
