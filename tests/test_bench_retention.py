"""``bench/retention.py`` runs end to end (a tiny load) and reports what it promises."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_retention_bench_tiny(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    args = ["--runs", "3000", "--keep", "300", "--interval", "0.1", "--sample", "0.1"]
    args += ["--inflight", "100", "--durability", "process", "--tmp", str(tmp_path)]
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "retention.py"), *args, "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "commit latency" in done.stdout and "data file over the run" in done.stdout
    result = json.loads(out.read_text())
    without, kept = result["phases"]
    assert without["runs"] == kept["runs"] == 3000
    assert without["purged"] == 0 and kept["purged"] > 0
    assert kept["samples"][-1]["stored_runs"] < without["samples"][-1]["stored_runs"]
    assert result["ratio"] > 0 and result["cpu_ratio"] > 0
