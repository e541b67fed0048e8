"""perdure side of ``bench/waits.py``: one scenario per process (clean RSS).

    python bench/_waits_child.py MODE --dir DIR --spec JSON --out FILE

Modes (sizes come in ``--spec``):

``resume``  sequential resume latency, durability ``sync``. Per sample a fresh run of
            workflow ``w`` (``v = await ctx.wait_for_event("go")``, one ``ctx.step``,
            return) is started and awaited until its wait checkpoint is committed (its
            log shows the RUN_FINISHED interrupt); an ``rt.events`` follower is parked
            on the log; then ``t0`` is taken just before ``rt.resume(...)``. Timed:
            the ``resume()`` call (signal durably stored), until the follower sees the
            step's STEP_FINISHED (the body continued and its next commit is durable),
            until the body is past the step (in-body clock), until the terminal event
            is committed. A second series attaches no follower (only ``rt.wait``): the
            follower shares the trio thread and adds a wake-up and a log read per commit. Then the same for runs that were *passivated* at their wait
            (``passivate_after=0``: actor stopped, state only in LMDB), where resume
            re-activates the run by replay. Also the raw LMDB floor: one flushed
            put+commit on the same filesystem.
``live``    N runs started with C starters in flight, each parked in
            ``wait_for_event`` with its actor alive (``passivate_after`` huge).
            VmRSS (and RssAnon/RssFile) from /proc/self/status after ``gc.collect()``,
            before starting and once every run is committed ``waiting``.
``bare``    the floor of ``live``: N bare trio tasks, each parked on its own
            ``trio.Event``, same RSS measurement.
``create``  N runs that park at a wait and are passivated right after the checkpoint
            commits (``passivate_after=0``), durability from the spec, until N or the
            time budget; the runtime is then closed. Writes a random sample of run ids.
``open``    opens the directory of ``create`` in this fresh process: time of
            ``async with rt`` (recovery leaves waiting runs passive) and RSS; then
            resumes the sampled runs one by one and awaits their completion.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import os
import random
import sys
import time
from collections import deque
from typing import Any

import lmdb
import trio
from _peer_common import latency_summary

import perdure
from perdure.testing import internals

ExternalEvent = perdure.ExternalEvent

OWNER = perdure.Project("bench-waits")
TARGET = "workflow:w"
MAP_SIZE = 8 * 1024**3

# Filled in by the body of `w`: run id -> perf_counter() right after its step returned.
BODY_PAST_STEP: dict[str, float] = {}


async def _after(v: Any) -> dict[str, Any]:
    return {"v": v}


def make_runtime(
    path: str, durability: str, passivate_after: float, *, defaults: bool = False
) -> perdure.Runtime:
    # max_live_actors=None: these scenarios measure what a *live* parked run costs;
    # the default cap (10,000 live actors) would passivate most of a large population.
    # ``defaults`` keeps the default cap and passivation: what a host gets out of the box.
    limits: dict[str, Any] = (
        {} if defaults else {"passivate_after": passivate_after, "max_live_actors": None}
    )
    rt = perdure.Runtime(
        path,
        durability=durability,  # type: ignore[arg-type]
        map_size=MAP_SIZE,
        **limits,
    )

    @rt.workflow("w")
    async def w(ctx: perdure.RunContext, inp: Any) -> dict[str, Any]:
        v = await ctx.wait_for_event("go")
        out = await ctx.step("after", _after, v)
        BODY_PAST_STEP[ctx.run_id] = time.perf_counter()
        return out

    return rt


# -- measurement helpers ------------------------------------------------------------------


def proc_status() -> dict[str, float]:
    """Memory fields of /proc/self/status in MB."""
    out: dict[str, float] = {}
    with open("/proc/self/status") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "RssAnon", "RssFile", "RssShmem", "VmHWM"):
                out[name] = int(rest.split()[0]) / 1024
    return out


def settled_rss() -> dict[str, float]:
    gc.collect()
    return proc_status()


def malloc_trim() -> bool:
    try:
        return bool(ctypes.CDLL("libc.so.6").malloc_trim(0))
    except (OSError, AttributeError):
        return False


def say(what: str) -> None:
    print(f"    {what}", file=sys.stderr, flush=True)


def _is_interrupt(ev: perdure.RunEvent) -> bool:
    outcome = getattr(ev.event, "outcome", None)
    return (
        ev.type == "RUN_FINISHED"
        and outcome is not None
        and (type(outcome).__struct_config__.tag == "interrupt")
    )


def _is_terminal(ev: perdure.RunEvent) -> bool:
    return ev.type == "RUN_ERROR" or (ev.type == "RUN_FINISHED" and not _is_interrupt(ev))


async def until_waiting(rt: perdure.Runtime, run_id: str, timeout: float = 30.0) -> int:
    """Follow the run's log until its wait checkpoint is committed; its event id."""
    with trio.fail_after(timeout):
        async with contextlib.aclosing(rt.events(run_id, after=0, follow=True)) as it:
            async for ev in it:
                if _is_interrupt(ev):
                    return ev.event_id
                if _is_terminal(ev):
                    break
    raise RuntimeError(f"run {run_id} ended before waiting: {rt.get(run_id).status}")


async def until_live_count(rt: perdure.Runtime, at_most: int, timeout: float = 30.0) -> None:
    with trio.fail_after(timeout):
        while len(internals(rt).supervisor) > at_most:
            await trio.sleep(0.0005)


class GcPauses:
    """Collector passes and their pauses, per generation, while installed."""

    def __init__(self) -> None:
        self.t0 = 0.0
        self.by_gen: dict[int, list[float]] = {0: [], 1: [], 2: []}
        gc.callbacks.append(self._cb)

    def _cb(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self.t0 = time.perf_counter()
        else:
            self.by_gen[info["generation"]].append(time.perf_counter() - self.t0)

    def stop(self) -> dict[str, Any]:
        gc.callbacks.remove(self._cb)
        return {
            f"gen{g}": {"passes": len(v), "total_s": sum(v), "max_ms": max(v, default=0) * 1e3}
            for g, v in self.by_gen.items()
        }


class WaitTracker:
    """Confirms, cheaply and through the public API, that started runs are ``waiting``.

    Runs reach their checkpoint roughly in start order, so a poller walks the
    unconfirmed ids from the oldest, one ``rt.get`` each, and stops at the first
    that is not waiting yet: O(1) amortised reads per run.
    """

    def __init__(self, rt: perdure.Runtime) -> None:
        self.rt = rt
        self.unconfirmed: deque[str] = deque()
        self.confirmed = 0
        self.failed: list[tuple[str, str]] = []

    def add(self, run_id: str) -> None:
        self.unconfirmed.append(run_id)

    def poll(self) -> None:
        rt = self.rt
        q = self.unconfirmed
        spins = 0
        while q:
            status = rt.get(q[0]).status
            if status == "waiting":
                q.popleft()
                self.confirmed += 1
                spins = 0
            elif status in ("running", "pending"):
                # look a little further: one slow run must not hide the others
                q.rotate(-1)
                spins += 1
                if spins >= 64:
                    return
            else:
                self.failed.append((q.popleft(), status))


# -- mode: resume -----------------------------------------------------------------------------


async def _sample(rt: perdure.Runtime, i: int, passive: bool, follower: bool) -> dict[str, float]:
    started = await rt.start(TARGET, {}, owner=OWNER)
    rid = started.run.id
    last = await until_waiting(rt, rid)
    if passive:
        await until_live_count(rt, 0)  # the actor is gone: state only in LMDB
    if not follower:  # nothing else on the trio thread but the run and rt.wait
        t0 = time.perf_counter()
        res = await rt.resume(rid, ExternalEvent(name="go", payload=i))
        t1 = time.perf_counter()
        with trio.fail_after(30):
            rec = await rt.wait(rid)
        t2 = time.perf_counter()
        if res.duplicate or rec.status != "completed":
            raise RuntimeError(f"run {rid} ended {rec.status}: {rec.completion}")
        return {
            "resume_call": t1 - t0,
            "body_past_step": BODY_PAST_STEP.pop(rid) - t0,
            "completed": t2 - t0,
        }
    seen: dict[str, float] = {}
    follower_ready = trio.Event()

    async def follow() -> None:
        async with contextlib.aclosing(rt.events(rid, after=last, follow=True)) as it:
            follower_ready.set()
            async for ev in it:
                if ev.type == "STEP_FINISHED" and "step" not in seen:
                    seen["step"] = time.perf_counter()
                if _is_terminal(ev):
                    seen["done"] = time.perf_counter()
                    return

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(follow)
            await follower_ready.wait()
            await trio.sleep(0)  # let the follower read the log and park on it
            t0 = time.perf_counter()
            res = await rt.resume(rid, ExternalEvent(name="go", payload=i))
            t1 = time.perf_counter()
    if res.duplicate:
        raise RuntimeError("first resume reported duplicate")
    rec = rt.get(rid)
    if rec.status != "completed" or rec.completion.result != {"v": i}:  # type: ignore[union-attr]
        raise RuntimeError(f"run {rid} ended {rec.status}: {rec.completion}")
    return {
        "resume_call": t1 - t0,
        "step_committed": seen["step"] - t0,
        "body_past_step": BODY_PAST_STEP.pop(rid) - t0,
        "completed": seen["done"] - t0,
    }


async def _series(
    path: str, n: int, warmup: int, passive: bool, follower: bool = True
) -> dict[str, Any]:
    rt = make_runtime(path, "sync", 0.0 if passive else 1e9)
    rows: list[dict[str, float]] = []
    async with rt:
        for i in range(-warmup, n):
            row = await _sample(rt, i, passive, follower)
            if i >= 0:
                rows.append(row)
        stats = internals(rt).writer.stats
        txns = stats.txns
    out: dict[str, Any] = {k: latency_summary([r[k] for r in rows]) for k in rows[0]}
    out["lmdb_txns"] = txns
    return out


def raw_floor(path: str, n: int) -> dict[str, Any]:
    """One flushed LMDB put+commit (the disk floor of one durable step), same filesystem."""
    os.makedirs(path, exist_ok=True)
    env = lmdb.open(path, map_size=1 << 28, sync=True, metasync=True, max_dbs=2, readahead=False)
    try:
        db = env.open_db(b"x")
        value = os.urandom(200)
        lat: list[float] = []
        for i in range(n + 20):
            t = time.perf_counter()
            with env.begin(write=True, db=db) as txn:
                txn.put(i.to_bytes(8, "big"), value)
            if i >= 20:
                lat.append(time.perf_counter() - t)
    finally:
        env.close()
    return latency_summary(lat)


def mode_resume(path: str, spec: dict[str, Any]) -> dict[str, Any]:
    n, warmup, n_passive = int(spec["n"]), int(spec["warmup"]), int(spec["passive_n"])
    out: dict[str, Any] = {"durability": "sync"}
    out["raw_flush"] = raw_floor(os.path.join(path, "raw"), max(200, n))
    say(f"raw LMDB flushed put+commit p50 {out['raw_flush']['p50_ms']:.3f} ms")
    live = trio.run(_series, os.path.join(path, "live"), n, warmup, False)
    out["live"] = live
    say(
        f"perdure resume: call p50 {live['resume_call']['p50_ms']:.3f} ms, "
        f"-> step committed p50 {live['step_committed']['p50_ms']:.3f} ms, "
        f"-> completed p50 {live['completed']['p50_ms']:.3f} ms (n={n})"
    )
    quiet = trio.run(_series, os.path.join(path, "quiet"), n, warmup, False, False)
    out["live_no_follower"] = quiet
    say(
        f"perdure resume, no follower: -> body past step p50 "
        f"{quiet['body_past_step']['p50_ms']:.3f} ms, -> completed (rt.wait) p50 "
        f"{quiet['completed']['p50_ms']:.3f} ms"
    )
    if n_passive:
        passive = trio.run(_series, os.path.join(path, "passive"), n_passive, min(warmup, 20), True)
        out["passive"] = passive
        say(
            f"perdure resume of passivated runs: call p50 "
            f"{passive['resume_call']['p50_ms']:.3f} ms, "
            f"-> completed p50 {passive['completed']['p50_ms']:.3f} ms (n={n_passive})"
        )
    return out


# -- mode: live -------------------------------------------------------------------------------


async def _live(path: str, spec: dict[str, Any]) -> dict[str, Any]:
    n, inflight, durability = int(spec["n"]), int(spec["inflight"]), spec["durability"]
    defaults = bool(spec.get("defaults"))
    rt = make_runtime(path, durability, 1e9, defaults=defaults)
    out: dict[str, Any] = {
        "n": n,
        "inflight": inflight,
        "durability": durability,
        "defaults": defaults,
    }
    async with rt:
        # warm-up: imports, caches and code paths of start/wait/resume, not counted
        warm = [(await rt.start(TARGET, {}, owner=OWNER)).run.id for _ in range(20)]
        for i, rid in enumerate(warm):
            await until_waiting(rt, rid)
            await rt.resume(rid, ExternalEvent(name="go", payload=i))
            await rt.wait(rid)
        await until_live_count(rt, 0)
        BODY_PAST_STEP.clear()
        out["rss_before"] = settled_rss()
        out["live_before"] = len(internals(rt).supervisor)
        tracker = WaitTracker(rt)
        first: list[str] = []
        left = n
        pauses = GcPauses()
        t0 = time.perf_counter()

        async def starter() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                rid = (await rt.start(TARGET, {}, owner=OWNER)).run.id
                tracker.add(rid)
                if len(first) < 20:
                    first.append(rid)

        last_say = t0
        async with trio.open_nursery() as nursery:
            for _ in range(inflight):
                nursery.start_soon(starter)
            while left > 0 or tracker.unconfirmed:
                await trio.sleep(0.02)
                tracker.poll()
                if tracker.failed:
                    raise RuntimeError(f"runs did not reach waiting: {tracker.failed[:3]}")
                now = time.perf_counter()
                if now - last_say > 10:
                    last_say = now
                    say(f"live: {tracker.confirmed:,}/{n:,} waiting after {now - t0:.0f} s")
                if now - t0 > spec.get("timeout", 1800):
                    raise RuntimeError(f"only {tracker.confirmed} of {n} runs waiting in time")
        t_all = time.perf_counter() - t0
        out["gc_during_setup"] = pauses.stop()
        out["seconds_to_all_waiting"] = t_all
        out["runs_per_s"] = n / t_all
        out["rss_after"] = settled_rss()
        out["live_actors"] = len(internals(rt).supervisor)
        out["lmdb_txns"] = internals(rt).writer.stats.txns
        say(
            f"live: {n:,} waiting in {t_all:.1f} s; RSS {out['rss_before']['VmRSS']:.0f} -> "
            f"{out['rss_after']['VmRSS']:.0f} MB; {out['live_actors']:,} live actors"
        )
        # a handful of resumes with everything parked, to show the runs are responsive
        out["gc_objects"] = len(gc.get_objects())
        t = time.perf_counter()
        gc.collect()
        out["full_gc_seconds"] = time.perf_counter() - t
        lat = []
        pauses = GcPauses()
        for i, rid in enumerate(first):
            t = time.perf_counter()
            await rt.resume(rid, ExternalEvent(name="go", payload=i))
            await rt.wait(rid)
            lat.append(time.perf_counter() - t)
        out["resume_to_completed_with_all_parked"] = latency_summary(lat)
        out["gc_during_resumes"] = pauses.stop()
        t_close = time.perf_counter()
    out["close_seconds"] = time.perf_counter() - t_close
    return out


def mode_live(path: str, spec: dict[str, Any]) -> dict[str, Any]:
    return trio.run(_live, path, spec)


# -- mode: bare ----------------------------------------------------------------------------------


async def _bare(n: int) -> dict[str, Any]:
    """The floor of scenario 2: N bare trio tasks, each parked on its own trio.Event."""
    events = [trio.Event() for _ in range(10)]

    async def parked(ev: trio.Event) -> None:
        await ev.wait()

    async with trio.open_nursery() as nursery:  # warm-up
        for ev in events:
            nursery.start_soon(parked, ev)
        await trio.sleep(0.01)
        for ev in events:
            ev.set()
    before = settled_rss()
    t0 = time.perf_counter()
    async with trio.open_nursery() as nursery:
        events = [trio.Event() for _ in range(n)]
        for ev in events:
            nursery.start_soon(parked, ev)
        await trio.sleep(0.05)
        seconds = time.perf_counter() - t0
        after = settled_rss()
        for ev in events:
            ev.set()
    return {"n": n, "rss_before": before, "rss_after": after, "seconds": seconds}


def mode_bare(path: str, spec: dict[str, Any]) -> dict[str, Any]:
    return trio.run(_bare, int(spec["n"]))


# -- mode: create -------------------------------------------------------------------------------


async def _create(path: str, spec: dict[str, Any]) -> dict[str, Any]:
    n, inflight, durability = int(spec["n"]), int(spec["inflight"]), spec["durability"]
    budget = float(spec["budget"])
    rt = make_runtime(path, durability, 0.0)
    rng = random.Random(1234)
    sample: list[str] = []
    k = int(spec.get("sample", 50))
    started = 0
    out: dict[str, Any] = {
        "target_n": n,
        "inflight": inflight,
        "durability": durability,
        "budget_s": budget,
    }
    async with rt:
        tracker = WaitTracker(rt)
        t0 = time.perf_counter()
        stop_at = t0 + budget

        async def starter() -> None:
            nonlocal started
            while started < n and time.perf_counter() < stop_at:
                started += 1
                seq = started
                rid = (await rt.start(TARGET, {}, owner=OWNER)).run.id
                tracker.add(rid)
                if len(sample) < k:  # reservoir sample of the created runs
                    sample.append(rid)
                else:
                    j = rng.randrange(seq)
                    if j < k:
                        sample[j] = rid
                while len(internals(rt).supervisor) > 20_000:  # never let live actors pile up
                    await trio.sleep(0.005)

        last_say = t0
        async with trio.open_nursery() as nursery:
            for _ in range(inflight):
                nursery.start_soon(starter)
            while True:
                await trio.sleep(0.05)
                tracker.poll()
                if tracker.failed:
                    raise RuntimeError(f"runs did not reach waiting: {tracker.failed[:3]}")
                now = time.perf_counter()
                if now - last_say > 15:
                    last_say = now
                    say(
                        f"create: {tracker.confirmed:,} waiting after {now - t0:.0f} s "
                        f"({tracker.confirmed / (now - t0):,.0f}/s), {len(internals(rt).supervisor):,} live"
                    )
                done_starting = started >= n or now >= stop_at
                if done_starting and not tracker.unconfirmed and len(nursery.child_tasks) == 0:
                    break
        await until_live_count(rt, 0, timeout=120)
        seconds = time.perf_counter() - t0
        out.update(
            n=started,
            seconds=seconds,
            runs_per_s=started / seconds,
            budget_hit=started < n,
            rss=proc_status(),
            lmdb_txns=internals(rt).writer.stats.txns,
            sample=sample,
        )
        t_close = time.perf_counter()
    out["close_seconds"] = time.perf_counter() - t_close
    out["data_mb"] = os.path.getsize(os.path.join(path, "data.mdb")) / 1e6
    say(
        f"create: {started:,} passivated waiting runs in {seconds:.1f} s "
        f"({started / seconds:,.0f}/s), data.mdb {out['data_mb']:,.0f} MB"
    )
    return out


def mode_create(path: str, spec: dict[str, Any]) -> dict[str, Any]:
    return trio.run(_create, path, spec)


# -- mode: open ---------------------------------------------------------------------------------


async def _open(path: str, spec: dict[str, Any]) -> dict[str, Any]:
    sample: list[str] = spec["sample"]
    rt = make_runtime(path, "sync", 60.0)
    out: dict[str, Any] = {"durability": "sync"}
    out["rss_before"] = settled_rss()
    t0 = time.perf_counter()
    async with rt:
        out["open_seconds"] = time.perf_counter() - t0
        out["rss_after_open_no_gc"] = proc_status()
        out["rss_after_open"] = settled_rss()
        out["recovered"] = dict(rt.recovered)
        out["live_actors_after_open"] = len(internals(rt).supervisor)
        say(
            f"open: {out['open_seconds']:.2f} s, RSS {out['rss_before']['VmRSS']:.0f} -> "
            f"{out['rss_after_open']['VmRSS']:.0f} MB, recovered {out['recovered']}"
        )
        picked = random.Random(99).sample(sample, min(int(spec["resume"]), len(sample)))
        call: list[float] = []
        done: list[float] = []
        ok = 0
        for i, rid in enumerate(picked):
            before = rt.get(rid).status
            t = time.perf_counter()
            await rt.resume(rid, ExternalEvent(name="go", payload=i))
            t1 = time.perf_counter()
            with trio.fail_after(30):
                rec = await rt.wait(rid)
            t2 = time.perf_counter()
            call.append(t1 - t)
            done.append(t2 - t)
            ok += (
                before == "waiting"
                and rec.status == "completed"
                and (rec.completion is not None and rec.completion.result == {"v": i})
            )
        out["resumed"] = len(picked)
        out["resumed_ok"] = ok
        out["resume_call"] = latency_summary(call)
        out["resume_to_completed"] = latency_summary(done)
        out["rss_after_resumes"] = settled_rss()
        t_close = time.perf_counter()
    out["close_seconds"] = time.perf_counter() - t_close
    out["trimmed"] = malloc_trim()
    out["rss_after_close_trim"] = proc_status()
    say(
        f"open: resumed {ok}/{len(picked)} sampled runs to completion, "
        f"p50 {out['resume_to_completed']['p50_ms']:.1f} ms"
    )
    return out


def mode_open(path: str, spec: dict[str, Any]) -> dict[str, Any]:
    return trio.run(_open, path, spec)


# -- main ---------------------------------------------------------------------------------------

MODES = {
    "resume": mode_resume,
    "live": mode_live,
    "bare": mode_bare,
    "create": mode_create,
    "open": mode_open,
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=sorted(MODES))
    ap.add_argument("--dir", required=True)
    ap.add_argument("--spec", default="{}")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    result = MODES[args.mode](args.dir, json.loads(args.spec))
    result["max_rss_mb"] = proc_status().get("VmHWM")
    tmp = f"{args.out}.tmp"
    with open(tmp, "w") as f:
        json.dump(result, f, indent=1)
    os.replace(tmp, args.out)


if __name__ == "__main__":
    main()
