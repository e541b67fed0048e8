"""Server-sent events: framing, heartbeats, and slow clients that never slow a run (R35).

A stream is two tasks and a small bounded buffer between them::

    frames (reads the committed log) --[buffer: `buffer` frames]--> writer --> socket

The reader pulls from the log at the pace the buffer drains: when a client reads
slowly the reader simply waits, and since it reads *committed* events from
storage rather than being pushed events by the run, nothing upstream waits with
it: runs, the writer thread and other clients never see a slow client. Memory
per client is bounded by the buffer plus the transport's own buffers.

The writer sends whatever the buffer holds in one write (up to ``chunk_bytes``),
so a client catching up on a long log gets few large writes, not one per event.
While nothing comes it sends a heartbeat comment (``: ping``) every
``heartbeat`` seconds, which keeps proxies from closing an idle stream and lets
the server notice a dead peer. A client whose socket takes no data for
``stall_timeout`` seconds is too far behind: its stream is ended there (the
response completes), so it holds no stream state while it lags, and it loses
nothing, because it reconnects with ``Last-Event-ID`` and reads the rest from the
log at its own pace. (Hypercorn shields its socket writes from cancellation, so a
stalled write cannot be cut short: the stream ends when that write completes or
the connection dies. A stalled client holds at most ``buffer`` frames and one
write, never anything of the run's.)

A third task watches for the client's disconnect, and the stream also ends when
the server shuts down (``closing``): in both cases the reader is closed at once,
so the runtime's event generator is released.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Mapping
from contextlib import aclosing
from dataclasses import dataclass

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from starlette.background import BackgroundTask
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from perdure.agui import Event, event_to_json

__all__ = ["HEARTBEAT", "SSEOptions", "SSEResponse", "Shutdown", "frame", "no_content"]

log = logging.getLogger("perdure.server")

HEARTBEAT = b": ping\n\n"


@dataclass(frozen=True)
class SSEOptions:
    """Tuning of every event stream the server answers."""

    heartbeat: float = 15.0
    """Seconds between heartbeat comments on an idle stream."""
    buffer: int = 256
    """Frames held between the log reader and the socket writer, per client."""
    stall_timeout: float = 30.0
    """A client that takes no data for this long is dropped (it reconnects and loses nothing)."""
    chunk_bytes: int = 64 * 1024
    """Most bytes one socket write gathers from the buffer."""


def frame(event_id: int | None, event: Event) -> bytes:
    """One SSE frame: ``id: <event_id>`` (if any) and ``data: <AG-UI wire JSON>``.

    The wire JSON has no raw newline (msgspec escapes them inside strings), so one
    ``data:`` line always holds the whole event.
    """
    data = event_to_json(event)
    if event_id is None:
        return b"data: " + data + b"\n\n"
    return b"id: %d\ndata: %s\n\n" % (event_id, data)


class Shutdown:
    """Set once when the server shuts down; every open stream then ends.

    The event is created lazily, inside the event loop that serves (trio under
    ``perdure serve``, asyncio when the app is mounted through an AsyncioHost).
    """

    def __init__(self) -> None:
        self._event: anyio.Event | None = None
        self._set = False

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        if self._event is not None:
            self._event.set()

    async def wait(self) -> None:
        if self._event is None:
            self._event = anyio.Event()
            if self._set:
                self._event.set()
        await self._event.wait()


class SSEResponse(Response):
    """An ``text/event-stream`` response fed by ``frames`` (ends when they end)."""

    media_type = "text/event-stream"

    def __init__(
        self,
        frames: AsyncIterator[bytes],
        options: SSEOptions,
        closing: Shutdown | None = None,
        headers: Mapping[str, str] | None = None,
        background: BackgroundTask | None = None,
    ) -> None:
        self.frames = frames
        self.options = options
        self.closing = closing
        self.status_code = 200
        self.background = background
        self.init_headers(
            {
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",  # nginx: do not buffer the stream
                "Content-Type": "text/event-stream; charset=utf-8",
                **(headers or {}),
            }
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        sender, receiver = anyio.create_memory_object_stream[bytes](self.options.buffer)
        ended_cleanly = False
        async with anyio.create_task_group() as tg:

            async def watch_disconnect() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                tg.cancel_scope.cancel()

            async def watch_closing() -> None:
                if self.closing is not None:
                    await self.closing.wait()
                    tg.cancel_scope.cancel()

            async def write() -> None:
                nonlocal ended_cleanly
                ended_cleanly = await self._write(receiver, send)
                tg.cancel_scope.cancel()

            tg.start_soon(watch_disconnect)
            tg.start_soon(watch_closing)
            tg.start_soon(self._read, sender)
            tg.start_soon(write)
        if ended_cleanly or (self.closing is not None and self.closing.is_set()):
            # A finished stream, or a server shutting down: end the body properly so
            # the client knows to reconnect (with Last-Event-ID) rather than retry blind.
            with anyio.CancelScope(shield=True), anyio.move_on_after(1.0):
                await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _read(self, sender: MemoryObjectSendStream[bytes]) -> None:
        async with sender, aclosing(self.frames) as frames:  # type: ignore[type-var]
            try:
                async for chunk in frames:
                    try:
                        await sender.send(chunk)
                    except anyio.BrokenResourceError:
                        return  # the writer has ended the stream
            except Exception:
                # The response has started: the only answer left is to end the stream.
                # What was sent is committed; the client reconnects with Last-Event-ID.
                log.exception("perdure.server: an event stream failed; ending it")

    async def _write(self, receiver: MemoryObjectReceiveStream[bytes], send: Send) -> bool:
        """Send frames until the reader is done or the client falls too far behind."""
        options = self.options
        heartbeat = options.heartbeat if options.heartbeat > 0 else math.inf
        async with receiver:
            while True:
                chunks: list[bytes] = []
                done = False
                with anyio.move_on_after(heartbeat):
                    try:
                        chunks.append(await receiver.receive())
                    except anyio.EndOfStream:
                        return True
                if not chunks:
                    chunks.append(HEARTBEAT)
                else:
                    size = len(chunks[0])
                    while size < options.chunk_bytes:
                        try:
                            chunk = receiver.receive_nowait()
                        except anyio.WouldBlock:
                            break
                        except anyio.EndOfStream:
                            done = True
                            break
                        chunks.append(chunk)
                        size += len(chunk)
                body = b"".join(chunks)
                started = anyio.current_time()
                with anyio.move_on_after(options.stall_timeout):
                    await send({"type": "http.response.body", "body": body, "more_body": True})
                if anyio.current_time() - started >= options.stall_timeout:
                    # Too far behind. A server may shield its socket writes (hypercorn
                    # does), so this is noticed once the write is done or cut: the
                    # stream then ends and the client reconnects with Last-Event-ID.
                    log.info(
                        "perdure.server: ended the stream of an SSE client that took no "
                        "data for %.1f s",
                        options.stall_timeout,
                    )
                    return True
                if done:
                    return True


def no_content() -> Response:
    """``204``: nothing more will ever come (an ``EventSource`` stops reconnecting)."""
    return Response(status_code=204)
