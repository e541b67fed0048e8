"""perdure side of ``bench/vs_peers.py`` (runs in its own process).

The workflow: three durable steps, each returning a small dict; every step result is
journaled and flushed (``durability="sync"``) or committed without fsync
(``"process"``) before the body continues. ``--config DURABILITY[:STEPS]`` picks how
the step functions run: ``async`` (default: ``async def``), ``thread`` (plain
functions, each in a worker thread) or ``inline`` (plain functions on the trio thread,
``ctx.step(..., inline=True)``).

Modes:
  bench    sequential latency (start -> wait, one run at a time), then throughput with
           N runs in flight (N trio workers, each start -> wait in a loop).
  recover  open a directory left by ``_recovery_child.py perdure`` (SIGKILLed with N
           runs parked inside step 2) and time open -> all N runs completed.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import trio
from _peer_common import (
    Clock,
    expected_output,
    latency_summary,
    parse_args,
    rate,
    ready,
    say,
    step_value,
    write_result,
)

import perdure

OWNER = perdure.Project("bench")
TARGET = "workflow:three"
# A run that has not finished after this long means perdure lost a wake-up: fail loudly
# instead of hanging until the parent's timeout.
STALL_S = 60.0


async def _step(x: int) -> dict[str, int]:
    return step_value(x)


def _sync_step(x: int) -> dict[str, int]:
    return step_value(x)


def make_runtime(
    path: str,
    durability: str,
    step_b: Callable[[int], Awaitable[dict[str, int]]] | None = None,
    steps: str = "async",
) -> perdure.Runtime:
    rt = perdure.Runtime(path, durability=durability)  # type: ignore[arg-type]
    plain = steps != "async"
    fn: Any = _sync_step if plain else _step
    inline = steps == "inline"

    @rt.workflow("three")
    async def three(ctx: perdure.RunContext, inp: dict[str, Any]) -> dict[str, Any]:
        a = await ctx.step("a", fn, 1, inline=inline)
        b = await ctx.step("b", step_b or fn, 2, inline=inline)
        c = await ctx.step("c", fn, 3, inline=inline)
        return {"a": a, "b": b, "c": c}

    return rt


def _check(rec: perdure.RunRecord) -> None:
    if rec.status != "completed" or rec.completion is None:
        raise RuntimeError(f"run {rec.id} ended {rec.status}: {rec.completion}")
    if rec.completion.result != expected_output():
        raise RuntimeError(f"run {rec.id} returned {rec.completion.result!r}")


class Stalled(RuntimeError):
    pass


class _Progress:
    """Runs completed so far, watched by :func:`_stall_guard`.

    One watchdog per phase instead of a cancel scope per run: a scope costs ~5 us of
    trio thread, a few percent of a whole run here, and it is the harness's, not
    perdure's.
    """

    done = 0


@contextlib.asynccontextmanager
async def _stall_guard() -> AsyncIterator[None]:
    async def watchdog() -> None:
        last = -1
        while True:
            await trio.sleep(STALL_S)
            if _Progress.done == last:
                raise Stalled(f"no run finished for {STALL_S:.0f} s: perdure stalled")
            last = _Progress.done

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watchdog)
        yield
        nursery.cancel_scope.cancel()


async def _one(rt: perdure.Runtime, i: int) -> perdure.RunRecord:
    started = await rt.start(TARGET, {"i": i}, owner=OWNER)
    rec = await rt.wait(started.run.id)
    _Progress.done += 1
    return rec


async def bench(path: str, config: str, spec: dict[str, Any]) -> dict[str, Any]:
    durability, _, steps = config.partition(":")
    rt = make_runtime(path, durability, steps=steps or "async")
    out: dict[str, Any] = {
        "system": "perdure",
        "config": config,
        "version": perdure.__version__,
        "throughput": {},
    }
    async with rt, _stall_guard():
        for i in range(spec["warmup"]):
            _check(await _one(rt, -1 - i))
        lat = []
        for i in range(spec["seq"]):
            t = time.perf_counter()
            rec = await _one(rt, i)
            lat.append(time.perf_counter() - t)
            if i == 0:
                _check(rec)
        out["seq"] = latency_summary(lat)
        say(f"perdure {config}: seq p50 {out['seq']['p50_ms']:.2f} ms")

        for level_s, total in spec["levels"].items():
            level = int(level_s)
            left = total
            failures = 0

            async def worker() -> None:
                nonlocal left, failures
                while left > 0:
                    left -= 1
                    rec = await _one(rt, left)
                    if rec.status != "completed":
                        failures += 1

            clock = Clock()
            async with trio.open_nursery() as nursery:
                for _ in range(min(level, total)):
                    nursery.start_soon(worker)
            r = rate(total, clock.elapsed(), min(level, total))
            r["failed"] = failures
            out["throughput"][level_s] = r
            say(f"perdure {config}: {level} in flight -> {r['runs_per_s']:.0f} runs/s")
    return out


async def crash_child(path: str, n: int, starters: int = 500) -> None:
    """Start ``n`` runs that park inside step 2, say ``ready``, then hang until killed."""
    entered = 0
    all_in = trio.Event()

    async def parked(x: int) -> dict[str, int]:
        nonlocal entered
        entered += 1
        if entered == n:
            all_in.set()
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    rt = make_runtime(path, "sync", step_b=parked)
    clock = Clock()
    async with rt:
        next_i = 0
        started = 0

        async def starter() -> None:
            nonlocal next_i, started
            while next_i < n:
                i = next_i
                next_i += 1
                await rt.start(TARGET, {"i": i}, owner=OWNER, run_id=f"rec-{i}")
                started += 1

        async def watchdog() -> None:
            last = (-1, -1)
            while True:
                await trio.sleep(STALL_S)
                now = (started, entered)
                if now == last:
                    raise Stalled(
                        f"no progress for {STALL_S:.0f} s: {started} of {n} started, "
                        f"{entered} inside step 2"
                    )
                last = now

        async with trio.open_nursery() as outer:
            outer.start_soon(watchdog)
            async with trio.open_nursery() as nursery:
                for _ in range(min(starters, n)):
                    nursery.start_soon(starter)
            started_s = clock.elapsed()
            await all_in.wait()
            outer.cancel_scope.cancel()
        ready({"n": n, "started_s": started_s, "all_in_step2_s": clock.elapsed()})
        await trio.sleep_forever()


async def recover(path: str, n: int) -> dict[str, Any]:
    rt = make_runtime(path, "sync")
    clock = Clock()
    async with rt:
        opened_s = clock.elapsed()
        recovered = dict(rt.recovered)
        with trio.fail_after(STALL_S + n / 100):
            for i in range(n):
                _check(await rt.wait(f"rec-{i}"))
        seconds = clock.elapsed()
    return {
        "system": "perdure",
        "config": "sync",
        "n": n,
        "open_s": opened_s,
        "seconds": seconds,
        "runs_per_s": n / seconds,
        "recovered": recovered,
    }


def main() -> None:
    args = parse_args()
    if args.mode == "bench":
        result = trio.run(bench, args.dir, args.config or "sync", json.loads(args.spec))
    else:
        result = trio.run(recover, args.dir, args.n)
    write_result(args.out, result)


if __name__ == "__main__":
    main()
