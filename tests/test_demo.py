"""``perdure demo``: the directory rule (never wipe without --force)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from perdure.cli import main


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _stored_ids(directory: Path, capsys: pytest.CaptureFixture[str]) -> set[str]:
    code, out, _ = _run(["runs", "list", "--dir", str(directory), "--json", "--limit", "1000"], capsys)
    assert code == 0
    return {r["id"] for r in json.loads(out)["runs"]}


def test_demo_never_wipes_an_existing_store_without_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = tmp_path / "demo"
    argv = ["demo", "--dir", str(directory), "--runs", "9", "--concurrency", "3", "--durability", "memory"]
    code, out, err = _run(argv, capsys)
    assert code == 0, out + err
    before = _stored_ids(directory, capsys)
    assert before
    code, out, err = _run(argv, capsys)
    assert code == 2
    assert err.startswith("error: DIRECTORY_NOT_EMPTY: ")
    assert "--force" in err and "--keep" in err
    assert _stored_ids(directory, capsys) == before  # nothing was wiped
