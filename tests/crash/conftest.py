"""Crash tests: soak gating and the crash tally summary.

Tests marked ``soak`` (the long kill -9 sweeps) are skipped unless ``PERDURE_SOAK=1``
(``make soak``); CI runs the bounded samples only. Every crash test records its tally
with ``record_property("crash_tally", {...})``; the terminal summary adds them up.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

import pytest


def soak_enabled() -> bool:
    return os.environ.get("PERDURE_SOAK") == "1"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if soak_enabled():
        return
    skip = pytest.mark.skip(reason="soak sweep: set PERDURE_SOAK=1 (make soak) to run it")
    for item in items:
        if item.get_closest_marker("soak") is not None:
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    total: Counter[str] = Counter()
    tests = 0
    for reports in terminalreporter.stats.values():
        for report in reports:
            if getattr(report, "when", None) != "call":
                continue
            for name, value in getattr(report, "user_properties", ()):
                if name == "crash_tally":
                    tests += 1
                    total.update({k: v for k, v in value.items() if isinstance(v, int)})
    if not tests:
        return
    terminalreporter.section("crash tally (kill -9)")
    terminalreporter.write_line(f"tests: {tests}")
    for key in sorted(total):
        terminalreporter.write_line(f"{key}: {total[key]}")
