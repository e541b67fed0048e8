"""Process-wide interpreter settings a runtime applies while it is open.

Both are measured choices (docs/decisions.md) and both are restored on close:

- the GIL switch interval is lowered (default to 1 ms): the writer thread needs the
  GIL back after every flush, and at CPython's 5 ms a busy trio thread starves it, so
  group commit degrades;
- the cyclic GC's first threshold is raised (default to 200,000): every run allocates
  a few hundred short-lived objects, and first-generation passes walk every young
  object still alive, which with a thousand runs in flight is most of the working set.
"""

from __future__ import annotations

import gc
import sys

__all__ = ["ProcessTuning"]


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

    def restore(self) -> None:
        if self._saved_interval is not None:
            sys.setswitchinterval(self._saved_interval)
            self._saved_interval = None
        if self._saved_threshold is not None:
            gc.set_threshold(*self._saved_threshold)
            self._saved_threshold = None
