"""A run's log as streams: where a stream starts, what it is preceded by, where it ends.

A run's log is a sequence of *segments*, each ``RUN_STARTED`` .. ``RUN_FINISHED``
or ``RUN_ERROR``; an interrupt ``RUN_FINISHED`` ends a segment (the run waits) and
the resume opens the next one. An AG-UI client expects one segment per request,
so a stream ends after the first segment end it sends (:data:`SEGMENT`);
``?until=end`` follows the run across its interrupts to its terminal event
(:data:`RUN_END`).

A client that joins after event ``N`` in the middle of a segment (a reconnect
with ``Last-Event-ID``, or ``?after=N``) first receives a *prelude*: the
segment's ``RUN_STARTED``, a ``MESSAGES_SNAPSHOT`` and ``STATE_SNAPSHOT`` folded
from events ``1..N`` (:func:`perdure.agui.fold_events`), and the opening events
of what is still open. Prelude frames carry no ``id:``, so the client's
``Last-Event-ID`` stays ``N`` until the log's own events arrive. What it then
receives passes the AG-UI verifier and ends in the same messages and state as a
client that saw the whole log.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import aclosing

from perdure.agui import (
    Event,
    RunErrorEvent,
    RunFinishedEvent,
    RunFinishedInterruptOutcome,
    fold_events,
    is_terminal_event,
    prelude_events,
)
from perdure.runtime import RunEvent, seed_of
from perdure.storage import RunRecord

from ._api import Api
from ._sse import frame

__all__ = [
    "RUN_END",
    "SEGMENT",
    "EndRule",
    "error_frames",
    "interrupt_ids",
    "read_log",
    "run_frames",
]

EndRule = Callable[[Event], bool]


def SEGMENT(event: Event) -> bool:
    """End of a segment: any ``RUN_FINISHED`` (interrupts included) or ``RUN_ERROR``."""
    return isinstance(event, RunFinishedEvent | RunErrorEvent)


RUN_END: EndRule = is_terminal_event
"""End of the run: its terminal event (an interrupt does not end it)."""


def interrupt_ids(event: Event) -> frozenset[str] | None:
    """The interrupt ids an interrupt ``RUN_FINISHED`` announces (``None`` otherwise)."""
    if isinstance(event, RunFinishedEvent) and isinstance(
        event.outcome, RunFinishedInterruptOutcome
    ):
        return frozenset(i.id for i in event.outcome.interrupts)
    return None


async def read_log(api: Api, run_id: str, upto: int | None = None) -> list[RunEvent]:
    """The committed events of a run, ``1..upto`` (all when ``upto`` is None)."""
    out: list[RunEvent] = []
    if upto is not None and upto <= 0:
        return out
    async with aclosing(api.events(run_id, 0, follow=False)) as events:
        async for event in events:
            out.append(event)
            if upto is not None and event.event_id >= upto:
                break
    return out


async def run_frames(api: Api, rec: RunRecord, after: int, ends: EndRule) -> AsyncIterator[bytes]:
    """SSE frames of ``rec``'s log after event ``after``, prelude first, until ``ends``."""
    if after > 0:
        log = await read_log(api, rec.id, after)
        joined = fold_events((e.event for e in log), start=seed_of(rec))
        for event in prelude_events(joined):
            yield frame(None, event)
    async with aclosing(api.events(rec.id, after, follow=True)) as events:
        async for item in events:
            yield frame(item.event_id, item.event)
            if ends(item.event):
                return


async def error_frames(code: str, message: str) -> AsyncIterator[bytes]:
    """A stream that is only a ``RUN_ERROR`` (AG-UI's answer to a refused request).

    Nothing is stored: the error belongs to the request, not to any run's log.
    """
    yield frame(None, RunErrorEvent(message=message, code=code))
