"""Helpers shared by the peer-benchmark workers (``bench/_peer_*.py``).

Every worker runs in its own process, started by ``bench/vs_peers.py``. It gets its
sizes as a JSON ``--spec`` and writes one JSON result to ``--out``; library logging
goes to stderr. Nothing here imports perdure or a peer.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# The payload every system passes in and every step returns: small dicts, trivial work.
STEP_ARGS = (1, 2, 3)
BLOCK_ENV = "PERDURE_BENCH_BLOCK_STEP2"


def step_value(x: int) -> dict[str, int]:
    return {"v": x}


def expected_output() -> dict[str, dict[str, int]]:
    return {"a": step_value(1), "b": step_value(2), "c": step_value(3)}


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, math.ceil(p / 100 * len(sorted_values)) - 1))
    return sorted_values[k]


def latency_summary(seconds: list[float]) -> dict[str, Any]:
    """n, p50/p99 (nearest rank), mean and max, in milliseconds (NaN when empty)."""
    s = sorted(seconds)
    nan = float("nan")
    return {
        "n": len(s),
        "p50_ms": percentile(s, 50) * 1e3,
        "p99_ms": percentile(s, 99) * 1e3,
        "mean_ms": sum(s) / len(s) * 1e3 if s else nan,
        "max_ms": s[-1] * 1e3 if s else nan,
    }


def filesystem_of(path: Path) -> str:
    """``device on mountpoint (fstype)`` of the mount holding ``path``, from /proc/mounts."""
    best = ("", "", "?")
    try:
        real = str(path.resolve())
        with open("/proc/mounts") as f:
            for line in f:
                device, mount, fstype = line.split()[:3]
                inside = real == mount or real.startswith(mount.rstrip("/") + "/")
                if inside and len(mount) > len(best[1]):
                    best = (device, mount, fstype)
    except OSError:
        return "unknown"
    return f"{best[0]} on {best[1]} ({best[2]})"


def rate(runs: int, seconds: float, in_flight: int) -> dict[str, Any]:
    return {
        "runs": runs,
        "in_flight": in_flight,
        "seconds": seconds,
        "runs_per_s": runs / seconds if seconds > 0 else float("nan"),
    }


def max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["bench", "recover"])
    ap.add_argument("--dir", required=True, help="data directory (created if missing)")
    ap.add_argument("--config", default="", help="system-specific configuration name")
    ap.add_argument("--spec", default="{}", help="JSON sizes for bench mode")
    ap.add_argument("--n", type=int, default=0, help="runs to recover (recover mode)")
    ap.add_argument("--out", required=True, help="where to write the JSON result")
    return ap.parse_args()


def write_result(path: str, result: dict[str, Any]) -> None:
    result.setdefault("python", platform.python_version())
    result.setdefault("max_rss_mb", max_rss_mb())
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(result, f, indent=1)
    os.replace(tmp, path)


def say(what: str) -> None:
    print(f"    {what}", file=sys.stderr, flush=True)


def ready(info: dict[str, Any]) -> None:
    """The crash child's handshake: every run is durably inside step 2."""
    sys.stdout.write("ready " + json.dumps(info) + "\n")
    sys.stdout.flush()


class Clock:
    """Wall-clock stopwatch (perf_counter)."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0


def timed_seq(call: Callable[[int], Any], n: int, warmup: int) -> dict[str, Any]:
    """Sequential latency of a blocking ``call(i)``: ``warmup`` untimed runs first."""
    for i in range(warmup):
        call(-1 - i)
    lat = []
    for i in range(n):
        t = time.perf_counter()
        call(i)
        lat.append(time.perf_counter() - t)
    return latency_summary(lat)
