"""Model requests as durable steps: a recorded response is never requested again.

:class:`DurableModel` wraps whichever model serves a request (the run's capability
installs it with ``get_wrapper_model``, so fallbacks and per-request model choices
are wrapped too). Its ``request`` is the step ``model:<n>`` (the n-th request of the
run): the step calls the real model, logs the response as AG-UI events and records
the response (see :mod:`._codec`); on replay the step returns the recorded response
without calling anything, and its events are already in the log.

Streaming happens *inside* the step: when the model can stream, the step consumes
``request_stream`` and appends text, tool-call and reasoning deltas to the log as
they arrive, committing them (``ctx.flush()``) at most every ``flush_interval``
seconds so followers of the run see them live. pydantic-ai itself sees a plain,
finished response; if it asked for a stream (a capability that watches the event
stream), it gets the recorded response replayed as stream events. Each streamed
event is also a heartbeat, which feeds the step's ``inactivity_timeout``.

If a crash cuts a streaming request after some deltas were committed, recovery
closes the half-sent message in the log and the request runs again as a new
attempt (perdure's R21): the log shows both, the journal only the response that
completed.
"""

from __future__ import annotations

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

from ._bridge import asyncio_context, asyncio_iter, body_call, to_trio
from ._codec import dump_response, load_response
from ._events import ResponseEvents
from ._messages import tag_message_id
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

        async def attempt() -> dict[str, Any]:
            events = ResponseEvents(message_id)
            if stream:
                response = await self._streamed(
                    messages, model_settings, model_request_parameters, events
                )
            else:
                response = await to_trio(wrapped.request)(
                    messages, model_settings, model_request_parameters
                )
                await ctx.emit(*events.whole(response))
            tag_message_id(response, message_id)
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

    async def _streamed(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        parameters: ModelRequestParameters,
        events: ResponseEvents,
    ) -> ModelResponse:
        ctx = self._session.ctx
        interval = self._session.options.flush_interval
        flushed = trio.current_time()
        stream = self.wrapped.request_stream(messages, model_settings, parameters)
        async with asyncio_context(stream) as streamed:
            async for event in asyncio_iter(streamed):
                ctx.heartbeat()
                out = events.on_event(event)
                if not out:
                    continue
                await ctx.emit(*out)
                if trio.current_time() - flushed >= interval:
                    await ctx.flush()
                    flushed = trio.current_time()
            response = streamed.get()
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


def can_stream(model: Model) -> bool:
    """Whether ``model`` implements streamed requests."""
    while isinstance(model, WrapperModel):
        model = model.wrapped
    if isinstance(model, FunctionModel):
        return model.stream_function is not None
    return type(model).request_stream is not Model.request_stream
