"""Cron schedules at scale: fires per second in virtual time, and the cost of idle ones.

    python bench/schedules.py                    # 10,000 minutely schedules, 1 simulated hour
    python bench/schedules.py --hours 24         # ... over a simulated day (long: ~14M runs)
    python bench/schedules.py --quick            # 1,000 schedules, 10 minutes (seconds)
    python bench/schedules.py --json out.json

1. **Firing** (virtual time, trio's MockClock): ``--schedules`` schedules, each ``* * * *
   *`` on a task whose body returns at once, run for ``--hours`` simulated hours. Every
   tick is a real commit (the run, its fire key, the schedule's cursor), the run
   executes and the schedule records its end. Reported: fires/s of wall time, the
   process's peak RSS, the store size. The simulated day is an option because it
   starts 14.4 million runs (tens of GB of store); the default hour starts 600,000.
2. **Idle** (real clock): a live runtime holding ``--schedules`` schedules whose next
   tick is months away, left alone for ``--idle-seconds``: the trio thread's CPU per
   second (``time.thread_time`` read on the trio thread) against the same runtime with
   no schedules, and the memory the schedules take (tracemalloc, after open).
3. **iter_fires** (no runtime): fires per second of wall time that
   ``perdure.runtime._cron.iter_fires`` yields for a minutely schedule in UTC and in a
   DST zone (Europe/Berlin), over ``--iter-days`` days from 2026-01-01.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import trio

import perdure
from perdure.testing import MockClock, internals, pin_wall_time

START = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def _runtime(path: Path, schedules: int, cron: Any) -> perdure.Runtime:
    rt = perdure.Runtime(path, durability="process", map_size=1 << 30)

    @rt.task("noop")
    async def noop(ctx: perdure.RunContext, inp: Any) -> None:
        return None

    for i in range(schedules):
        rt.schedule(f"s{i}", cron(i), target="task:noop", overlap="allow")
    return rt


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def firing(tmp: Path, schedules: int, hours: float) -> dict[str, Any]:
    path = tmp / "firing"
    result: dict[str, Any] = {}

    async def main() -> None:
        pin_wall_time(START)
        rt = _runtime(path, schedules, lambda i: "* * * * *")
        opened = time.perf_counter()
        async with rt:
            result["open_s"] = time.perf_counter() - opened
            started = time.perf_counter()
            await trio.sleep(hours * 3600 + 30)
            result["wall_s"] = time.perf_counter() - started
            service = internals(rt).schedules
            result["fires"] = sum(live.rec.fired for live in service._live.values())
            result["records_committed"] = rt.stats().records

    trio.run(main, clock=MockClock(autojump_threshold=0))
    result["schedules"] = schedules
    result["simulated_hours"] = hours
    result["fires_per_s"] = result["fires"] / result["wall_s"]
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["store_mb"] = _dir_size(path) / 2**20
    return result


def idle(tmp: Path, schedules: int, seconds: float) -> dict[str, Any]:
    def measure(count: int) -> tuple[float, int]:
        path = tmp / f"idle-{count}"
        out: dict[str, float] = {}

        async def main() -> None:
            # Yearly ticks spread over minutes and hours: none is due while we watch.
            rt = _runtime(path, count, lambda i: f"{i % 60} {i // 60 % 24} 1 7 *")
            tracemalloc.start()
            base = tracemalloc.get_traced_memory()[0]
            async with rt:
                out["memory"] = tracemalloc.get_traced_memory()[0] - base
                tracemalloc.stop()
                await trio.sleep(0.5)  # let opening settle
                cpu, wall = time.thread_time(), time.perf_counter()
                await trio.sleep(seconds)
                out["cpu_per_s"] = (time.thread_time() - cpu) / (time.perf_counter() - wall)

        trio.run(main)
        return out["cpu_per_s"], int(out["memory"])

    none_cpu, none_mem = measure(0)
    some_cpu, some_mem = measure(schedules)
    return {
        "schedules": schedules,
        "seconds": seconds,
        "trio_cpu_ms_per_s_without": none_cpu * 1000,
        "trio_cpu_ms_per_s_with": some_cpu * 1000,
        "memory_mb_for_schedules": (some_mem - none_mem) / 2**20,
        "memory_bytes_per_schedule": (some_mem - none_mem) / max(schedules, 1),
    }


def iter_fires_rate(days: int) -> dict[str, Any]:
    from perdure.runtime._cron import CronSpec, iter_fires

    out: dict[str, Any] = {"days": days}
    for zone in ("UTC", "Europe/Berlin"):
        end = START + days * 86400
        count = 0
        started = time.perf_counter()
        for at in iter_fires(CronSpec("* * * * *", zone), START):
            if at > end:
                break
            count += 1
        out[f"fires_per_s_{zone}"] = count / (time.perf_counter() - started)
        out[f"fires_{zone}"] = count
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--schedules", type=int, default=10_000)
    parser.add_argument("--hours", type=float, default=1.0)
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    parser.add_argument("--quick", action="store_true", help="1,000 schedules, 10 minutes")
    parser.add_argument("--iter-days", type=int, default=365)
    parser.add_argument("--skip-firing", action="store_true")
    parser.add_argument("--json", metavar="OUT")
    args = parser.parse_args()
    if args.quick:
        args.schedules, args.hours, args.idle_seconds = 1000, 10 / 60, 2.0
        args.iter_days = 7
    report: dict[str, Any] = {"iter_fires": iter_fires_rate(args.iter_days)}
    print(json.dumps({"iter_fires": report["iter_fires"]}, indent=2), flush=True)
    with tempfile.TemporaryDirectory(prefix="perdure-bench-schedules-") as tmp:
        report["idle"] = idle(Path(tmp), args.schedules, args.idle_seconds)
        print(json.dumps({"idle": report["idle"]}, indent=2), flush=True)
        if not args.skip_firing:
            report["firing"] = firing(Path(tmp), args.schedules, args.hours)
            print(json.dumps({"firing": report["firing"]}, indent=2), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    sys.exit(main())
