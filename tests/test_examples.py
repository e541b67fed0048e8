"""The README's runnable examples and every script in examples/ run as a new user would."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))


def _readme_programs() -> list[str]:
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    return [block for block in blocks if "trio.run(" in block]


def test_readme_has_runnable_programs() -> None:
    assert _readme_programs(), "the README should show at least one complete program"


@pytest.mark.parametrize("index", range(len(_readme_programs())))
def test_readme_program_runs(index: int, tmp_path: Path) -> None:
    script = tmp_path / "readme_example.py"
    script.write_text(_readme_programs()[index])
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert "RUN_STARTED" in proc.stdout and "RUN_FINISHED" in proc.stdout


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs(script: Path, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "data")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "completed" in proc.stdout
