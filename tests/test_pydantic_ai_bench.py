"""bench/agents.py runs: one phase of each kind (plain pydantic-ai, durable runs, passivated
waiting runs with the heap traced), a few runs each, and writes its figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench" / "agents.py"


def test_agents_bench_quick(tmp_path: Path) -> None:
    out = tmp_path / "agents.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            "--quick",
            "--phases",
            "plain,durable,passive-wait",
            "--tmp",
            str(tmp_path),
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["runs"] == 20
    assert figures["plain"]["runs_per_s"] > 0 and figures["durable"]["runs_per_s"] > 0
    assert figures["durable"]["vs_plain"] > 0
    passive = figures["passive-wait"]
    assert passive["heap_per_agent"] > 0 and passive["rss_vs_plain"] is None  # no baseline run
    assert "durability overhead" in proc.stdout
    assert [p.name for p in tmp_path.iterdir()] == ["agents.json"]  # scratch stores removed
