"""Power-loss tests: the volatile mount fixture, soak gating and the power-cut tally.

Every test here needs FUSE (``/dev/fuse``, ``fusermount3`` from Debian's ``fuse3``,
root, ``mfusepy``); without it they are skipped with the reason. ``soak``-marked tests
run only with ``PERDURE_SOAK=1`` (``make soak``). Tests record their tally with
``record_property("powercut_tally", {...})``; the terminal summary adds them up.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from volatile_fs import VolatileMount, fuse_unavailable

HERE = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    mine = [item for item in items if HERE in Path(str(item.path)).parents]
    reason = fuse_unavailable()
    if reason is not None:
        skip = pytest.mark.skip(reason=f"FUSE unavailable ({reason}): power-loss tests skipped")
        for item in mine:
            item.add_marker(skip)
    if os.environ.get("PERDURE_SOAK") != "1":
        skip = pytest.mark.skip(reason="soak sweep: set PERDURE_SOAK=1 (make soak) to run it")
        for item in mine:
            if item.get_closest_marker("soak") is not None:
                item.add_marker(skip)


@pytest.fixture
def vmount(tmp_path: Path) -> Iterator[VolatileMount]:
    """A volatile mount of ``tmp_path/disk`` at ``tmp_path/mnt``."""
    with VolatileMount(tmp_path / "disk", tmp_path / "mnt") as mount:
        yield mount


def pytest_terminal_summary(terminalreporter: Any) -> None:
    total: Counter[str] = Counter()
    tests = 0
    for reports in terminalreporter.stats.values():
        for report in reports:
            if getattr(report, "when", None) != "call":
                continue
            for name, value in getattr(report, "user_properties", ()):
                if name == "powercut_tally":
                    tests += 1
                    total.update({k: v for k, v in value.items() if isinstance(v, int)})
    if not tests:
        return
    terminalreporter.section("power-cut tally (volatile FUSE mount)")
    terminalreporter.write_line(f"tests: {tests}")
    for key in sorted(total):
        terminalreporter.write_line(f"{key}: {total[key]}")
