"""The runtime's clock: wall time read from trio's clock, so virtual time works.

Every timer, timeout and timestamp of a runtime reads this clock. Under
``trio.testing.MockClock`` trio's clock is virtual, so a test or simulation sees hours
pass instantly and deterministically; the wall-time epoch is fixed per trio clock, so
a runtime reopened within one trio run does not move time backwards.
"""

from __future__ import annotations

import time
import weakref

import trio
import trio.testing

__all__ = ["Clock", "pin_wall_time"]

_EPOCHS: weakref.WeakKeyDictionary[trio.abc.Clock, float] = weakref.WeakKeyDictionary()


class Clock:
    """Wall time (seconds since the epoch) on the current trio run's clock."""

    __slots__ = ("_epoch", "_now", "virtual")

    def __init__(self) -> None:
        clock = trio.lowlevel.current_clock()
        epoch = _EPOCHS.get(clock)
        if epoch is None:
            # Under a MockClock the trio clock is virtual: an epoch computed afresh at
            # every open would move "now" back by the virtual time already elapsed.
            epoch = _EPOCHS[clock] = time.time() - trio.current_time()
        self._epoch = epoch
        # The clock's own method: trio.current_time() goes through two more calls.
        self._now = clock.current_time
        self.virtual = isinstance(clock, trio.testing.MockClock)
        """Virtual time: commits and sync steps then stay on the trio thread."""

    def now(self) -> float:
        return self._epoch + self._now()

    def trio_time(self, when: float) -> float:
        """The trio clock reading at which wall time ``when`` arrives."""
        return when - self._epoch


def pin_wall_time(when: float) -> None:
    """Make the runtime clock of the current trio run read ``when`` (epoch seconds) now.

    For virtual-time tests and simulations that need a particular date (a daylight
    saving transition, a month end): call it inside ``trio.run(..., clock=MockClock())``
    before opening a runtime. Every runtime opened later in that trio run shares the
    pinned clock. Refused under the real clock, whose wall time is the system's.
    """
    clock = trio.lowlevel.current_clock()
    if not isinstance(clock, trio.testing.MockClock):
        raise RuntimeError("pin_wall_time needs trio's MockClock (virtual time)")
    _EPOCHS[clock] = float(when) - trio.current_time()
