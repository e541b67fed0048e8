"""Tools for testing code that uses perdure (and perdure's own tests).

- :func:`verify_events` / :func:`verify_prefixes`: the rules of the official AG-UI
  client verifier (``@ag-ui/client`` ``verifyEvents``), for wire-shaped event dicts.
- :func:`run_log`: a run's whole committed log as AG-UI wire dicts.
- :func:`assert_valid_log`: a run's log is a valid, complete AG-UI stream at every prefix.
- :func:`internals`: the engine behind an open runtime (store, supervisor, writer,
  timers), for tests that check what the public API cannot show. Not a stable API.
- :func:`pin_wall_time`: start virtual wall time at a chosen instant (a DST night …).
- :class:`MockClock`: trio's virtual clock. Under
  ``trio.run(main, clock=MockClock(autojump_threshold=0))`` every perdure timer,
  retry backoff and timeout runs in virtual time, and the runtime commits on the
  trio thread so virtual time never outruns a write.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from trio.testing import MockClock

from perdure.agui import AGUIProtocolError, EventVerifier, verify_events, verify_prefixes
from perdure.runtime import pin_wall_time

if TYPE_CHECKING:
    from perdure.runtime import Runtime

__all__ = [
    "AGUIProtocolError",
    "EventVerifier",
    "MockClock",
    "assert_valid_log",
    "internals",
    "pin_wall_time",
    "run_log",
    "verify_events",
    "verify_prefixes",
]


def internals(rt: Runtime) -> Any:
    """The engine of an open runtime: ``.store``, ``.supervisor``, ``.writer``, ``.timers`` …

    For tests of perdure itself and of hosts that must look under the public API;
    its shape follows the implementation and may change in any release.
    """
    engine = rt._engine
    if engine is None:
        raise RuntimeError("the runtime is not open")
    return engine


async def run_log(rt: Runtime, run_id: str, after: int = 0) -> list[dict[str, Any]]:
    """The committed log of ``run_id`` (``event_id > after``) as AG-UI wire dicts."""
    return [event.to_wire() async for event in rt.events(run_id, after, follow=False)]


async def assert_valid_log(rt: Runtime, run_id: str) -> list[dict[str, Any]]:
    """Assert the run's log is valid AG-UI at every prefix and complete; return it."""
    log = await run_log(rt, run_id)
    verify_prefixes(log)
    return log
