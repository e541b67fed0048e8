"""Fixtures of the foundation suite, and the rule that every log in every test is valid.

After each test, every data directory that a ``perdure.Runtime`` (or ``perdure.Host``)
created during the test is reopened read-only and each run's log is checked with
:func:`helpers.checks.check_log`: valid AG-UI (the verifier port and the ``ag_ui.core``
models), event ids without gaps, a terminal event that matches the completion; and
every cron fire key maps to exactly one run of that schedule and tick
(:func:`helpers.fires.fire_problems`), both on one opening of the store
(:func:`helpers.checks.check_store`). Opt out with ``@pytest.mark.no_log_check`` (for tests that deliberately damage a store).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers.checks import check_store
from helpers.defs import BODY_CALLS, register

import perdure


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "no_log_check: skip the after-test validation of every stored run log"
    )


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A fresh (not yet existing) data directory on a real file system."""
    return tmp_path / "data"


@pytest.fixture
def make_rt(data_dir: Path) -> Callable[..., perdure.Runtime]:
    """``make_rt(path=data_dir, **options)``: a Runtime with the standard definitions.

    Its ``gates`` attribute holds the :class:`helpers.defs.Gates` of ``workflow:block``.
    """

    def make(path: Any = data_dir, **options: Any) -> perdure.Runtime:
        rt = perdure.Runtime(path, **options)
        rt.gates = register(rt)  # type: ignore[attr-defined]
        return rt

    return make


@pytest.fixture(autouse=True)
def _every_log_is_valid(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    BODY_CALLS.clear()
    created: list[perdure.Runtime] = []
    original = perdure.Runtime.__init__

    def recording_init(self: perdure.Runtime, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        created.append(self)

    monkeypatch.setattr(perdure.Runtime, "__init__", recording_init)
    yield
    monkeypatch.undo()
    if request.node.get_closest_marker("no_log_check"):
        return
    seen: set[str] = set()
    problems: list[str] = []
    for rt in created:
        if rt.path is None:
            continue  # a temporary memory store is gone
        # A store left open is read beside its writer (LMDB readers never block it).
        path = os.path.abspath(rt.path)
        if path in seen or not os.path.exists(os.path.join(path, "data.mdb")):
            continue
        seen.add(path)
        problems.extend(check_store(path))  # every log; R25: one run per tick and back
    if problems:
        pytest.fail(
            "invalid run logs or fires left in the store:\n" + "\n".join(problems), pytrace=False
        )


# -- the official AG-UI verifier, per module (opt in) ---------------------------------------


@pytest.fixture(scope="module")
def _official_agui_batch() -> Iterator[list[tuple[str, Any]]]:
    from helpers.official_verifier import assert_official_verifier_accepts

    logs: list[tuple[str, Any]] = []
    yield logs
    assert_official_verifier_accepts(logs)


@pytest.fixture
def official_agui_check(
    request: pytest.FixtureRequest, tmp_path: Path, _official_agui_batch: list[tuple[str, Any]]
) -> Iterator[None]:
    """Send every log this test leaves under ``tmp_path`` to the official verifier."""
    from helpers.official_verifier import store_logs

    yield
    _official_agui_batch.extend(
        (f"{request.node.name}:{run_id}", wire) for run_id, wire in store_logs(tmp_path)
    )
