"""Process-wide interpreter settings a runtime applies while it is open.

Both are measured choices (docs/decisions.md) and both are restored on close:

- the GIL switch interval is lowered (default to 1 ms): the writer thread needs the
  GIL back after every flush, and at CPython's 5 ms a busy trio thread starves it, so
  group commit degrades;
- the cyclic GC's first threshold is raised (default to 200,000): every run allocates
  a few hundred short-lived objects, and first-generation passes walk every young
  object still alive, which with a thousand runs in flight is most of the working set.
  It then adapts to what the passes find: a pass that frees almost nothing (the young
  objects were the live work of runs in flight, not garbage) doubles the threshold, up
  to :data:`ADAPT_FACTOR` times the configured one; a pass that frees a lot halves it
  back. So a large in-flight working set is not walked again and again, while a
  workload that makes cyclic garbage keeps it collected at the configured pace.
"""

from __future__ import annotations

import gc
import sys

__all__ = ["ADAPT_FACTOR", "ProcessTuning"]

#: How far above the configured first threshold the adaptation may go.
ADAPT_FACTOR = 8
#: A young pass freeing less than 1/WASTED of the threshold did almost nothing useful.
_WASTED = 100
#: A young pass freeing more than 1/USEFUL of the threshold found real garbage.
_USEFUL = 10


class ProcessTuning:
    """Applies the settings on :meth:`apply` and puts back what it changed on :meth:`restore`."""

    def __init__(
        self, switch_interval: float | None, gc_threshold: tuple[int, int, int] | None
    ) -> None:
        self.switch_interval = switch_interval
        self.gc_threshold = gc_threshold
        self._saved_interval: float | None = None
        self._saved_threshold: tuple[int, int, int] | None = None

    def apply(self) -> None:
        current = sys.getswitchinterval()
        if self.switch_interval is not None and self.switch_interval < current:
            self._saved_interval = current
            sys.setswitchinterval(self.switch_interval)
        thresholds = gc.get_threshold()
        if self.gc_threshold is not None and thresholds[0] < self.gc_threshold[0]:
            self._saved_threshold = thresholds
            gc.set_threshold(*self.gc_threshold)
            gc.callbacks.append(self._adapt)

    def restore(self) -> None:
        if self._saved_interval is not None:
            sys.setswitchinterval(self._saved_interval)
            self._saved_interval = None
        if self._saved_threshold is not None:
            if self._adapt in gc.callbacks:
                gc.callbacks.remove(self._adapt)
            gc.set_threshold(*self._saved_threshold)
            self._saved_threshold = None

    def _adapt(self, phase: str, info: dict[str, int]) -> None:
        # Runs inside the collector, in whichever thread allocated: only arithmetic here.
        if phase != "stop" or info["generation"] != 0 or self.gc_threshold is None:
            return
        first, second, third = gc.get_threshold()
        floor = self.gc_threshold[0]
        collected = info["collected"]
        if collected * _WASTED < first and first < floor * ADAPT_FACTOR:
            gc.set_threshold(min(first * 2, floor * ADAPT_FACTOR), second, third)
        elif collected * _USEFUL > first and first > floor:
            gc.set_threshold(max(first // 2, floor), second, third)
