"""Crash workload: a perdure process meant to be killed with SIGKILL at any moment.

Usage::

    python workload.py DATA_DIR SIDE_EFFECT_FILE ACK_FILE N_RUNS SEED

It opens a :class:`perdure.Runtime` on ``DATA_DIR`` (which recovers whatever a
previous, killed incarnation left), starts ``N_RUNS`` runs of ``workflow:crashy``
with caller run ids ``r-0000`` … (idempotent: after a restart ``start`` returns the
existing run with ``duplicate=True``), about 50 in flight, waits for all of them,
prints ``DONE`` and exits 0.

Every line this process writes to the two witness files is appended with a single
``write`` on an ``O_APPEND`` descriptor and then ``fsync``-ed, so a line that exists
survived the kill and a line that does not exist was never written. Each line ends
with a token ``INC.SEQ``: ``INC`` is the process incarnation (env
``PERDURE_INCARNATION``, the harness counts launches) and ``SEQ`` a counter shared by
both files within the incarnation, so the harness can order any two lines.

- SIDE_EFFECT_FILE: ``RUN STEP TOKEN TIME`` each time a step *function* runs
  (an attempt), before it returns; ``TOKEN`` is also part of the step's result,
  so the harness knows which attempt's result the journal recorded.
- ACK_FILE: ``STARTED RUN TOKEN DUP`` after ``rt.start`` returned (the run is
  durably recorded) and ``ACK RUN STEP TOKEN`` after ``await ctx.step`` returned
  in the body (the step's result is acknowledged, hence durable).

Environment:

- ``PERDURE_INCARNATION``: launch number (default 0);
- ``PERDURE_DURABILITY``: ``sync`` (default) or ``process``;
- ``PERDURE_WORKLOAD``: ``kill`` (default, the mixed workload) or ``sleep``
  (one run per id: step ``before``, a durable sleep, step ``after``);
- ``PERDURE_SLEEP_SECONDS``: that sleep's length (default 0.5);
- ``PERDURE_EVENTS_FILE``: optional; runs with ``i % 8 == 1`` then get a live
  follower (``rt.events(follow=True)``) that appends ``EV RUN EVENT_ID DIGEST`` for
  every event it is shown (no fsync needed: SIGKILL keeps the page cache), so the
  harness can check that whatever a subscriber saw is in the final log unchanged (R20);
- ``PERDURE_STATUS_FILE``: optional 16-byte file the process keeps mapped and
  updates without syscalls, so the harness can tell where a kill landed:
  byte 0 = phase (1 importing, 2 opening/recovering, 3 running, 4 closing,
  5 done), byte 1 = 1 while the LMDB writer is inside a write transaction
  (building, committing, flushing), bytes 2-3 = run bodies still replaying a
  journal recorded by an earlier incarnation (recovery in progress), bytes 8-15 =
  transactions completed.

Step values are deterministic: ``v(-1) = i`` and ``v(k) = (v(k-1) * 31 + k + seed)
% 1000003`` for the run with index ``i``; the run's result is
``{"values": [...], "tokens": [...]}``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import mmap
import os
import sys
import threading
import time

PHASE_IMPORTING, PHASE_OPENING, PHASE_RUNNING, PHASE_CLOSING, PHASE_DONE = 1, 2, 3, 4, 5
STEPS = 4
IN_FLIGHT = 50


class Status:
    """Where this process is, readable after a SIGKILL (a shared file mapping)."""

    def __init__(self, path: str | None) -> None:
        self._map: mmap.mmap | None = None
        if path:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            os.ftruncate(fd, 16)
            self._map = mmap.mmap(fd, 16)
            os.close(fd)
            self._map[:] = bytes(16)
        self.txns = 0

    def phase(self, value: int) -> None:
        if self._map is not None:
            self._map[0] = value

    def replaying(self, delta: int) -> None:
        """Count bodies that are replaying a recovered journal (bytes 2-3)."""
        if self._map is not None:
            count = int.from_bytes(self._map[2:4], "little") + delta
            self._map[2:4] = count.to_bytes(2, "little")

    def committing(self, flag: bool) -> None:
        if self._map is not None:
            self._map[1] = 1 if flag else 0
            if not flag:
                self.txns += 1
                self._map[8:16] = self.txns.to_bytes(8, "little")


class Witness:
    """Append-only, fsync-ed witness lines; each gets the token ``INC.SEQ``."""

    def __init__(
        self, path: str, incarnation: int, counter: itertools.count[int], lock: threading.Lock
    ):
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._inc = incarnation
        self._counter = counter
        self._lock = lock

    def write(self, *fields: object, stamp: bool = False) -> str:
        """Append ``FIELDS… TOKEN [TIME]`` with one ``write`` and fsync; return the token."""
        with self._lock:  # steps also run in worker threads
            token = f"{self._inc}.{next(self._counter)}"
            parts = [*map(str, fields), token]
            if stamp:
                parts.append(f"{time.time():.6f}")
            os.write(self._fd, (" ".join(parts) + "\n").encode())
            os.fsync(self._fd)
        return token


def event_digest(wire: dict[str, object]) -> str:
    """Digest of an event's wire form (the harness recomputes it from the final log)."""
    text = json.dumps(wire, sort_keys=True, separators=(",", ":"))
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def next_value(prev: int, k: int, seed: int) -> int:
    return (prev * 31 + k + seed) % 1000003


def step_kind(seed: int, i: int, k: int) -> str:
    """``sync`` (worker thread), ``async``, or ``stream`` (flushes events mid-step)."""
    digest = hashlib.blake2b(f"{seed}/{i}/{k}".encode(), digest_size=2).digest()
    return ("sync", "async", "stream", "stream")[digest[0] % 4]


def main(argv: list[str]) -> int:
    status = Status(os.environ.get("PERDURE_STATUS_FILE"))
    status.phase(PHASE_IMPORTING)
    data_dir, side_path, ack_path = argv[1], argv[2], argv[3]
    n_runs, seed = int(argv[4]), int(argv[5])
    incarnation = int(os.environ.get("PERDURE_INCARNATION", "0"))
    durability = os.environ.get("PERDURE_DURABILITY", "sync")
    mode = os.environ.get("PERDURE_WORKLOAD", "kill")
    sleep_seconds = float(os.environ.get("PERDURE_SLEEP_SECONDS", "0.5"))

    import trio

    import perdure
    from perdure.agui import (
        TextMessageContentEvent,
        TextMessageEndEvent,
        TextMessageStartEvent,
    )
    from perdure.storage import Writer

    print("PERDURE", os.path.dirname(os.path.abspath(perdure.__file__)), flush=True)

    # Instrumentation only (no behaviour change): flag the writer's transactions.
    original_write = getattr(Writer, "_write", None)
    if original_write is not None:

        def _write(self: object, batch: object) -> None:
            status.committing(True)
            try:
                original_write(self, batch)
            finally:
                status.committing(False)

        Writer._write = _write  # type: ignore[method-assign]

    counter = itertools.count(1)
    lock = threading.Lock()
    effects = Witness(side_path, incarnation, counter, lock)
    acks = Witness(ack_path, incarnation, counter, lock)

    def side_effect(run_id: str, step: str) -> str:
        return effects.write(run_id, step, stamp=True)

    def ack(*fields: str) -> None:
        acks.write(*fields)

    rt = perdure.Runtime(data_dir, durability=durability)  # type: ignore[arg-type]

    def sync_step(run_id: str, step: str, prev: int, k: int) -> dict[str, object]:
        token = side_effect(run_id, step)
        return {"v": next_value(prev, k, seed), "token": token}

    async def async_step(run_id: str, step: str, prev: int, k: int) -> dict[str, object]:
        token = side_effect(run_id, step)
        await trio.sleep(0)
        return {"v": next_value(prev, k, seed), "token": token}

    def stream_step(ctx: perdure.RunContext, i: int) -> object:
        async def fn(run_id: str, step: str, prev: int, k: int) -> dict[str, object]:
            token = side_effect(run_id, step)
            # Even runs reuse one message id per step (as deterministic user code
            # would), odd runs use a fresh id per attempt.
            mid = f"m-{run_id}-{step}" if i % 2 == 0 else f"m-{run_id}-{step}-{token}"
            await ctx.emit(
                TextMessageStartEvent(message_id=mid, role="assistant"),
                TextMessageContentEvent(message_id=mid, delta=f"{step} of {run_id}: "),
            )
            await ctx.flush()  # committed now: a kill from here on cuts the attempt (R21)
            await trio.sleep(0.002)
            await ctx.emit(TextMessageContentEvent(message_id=mid, delta=str(prev)))
            await ctx.flush()
            await ctx.emit(TextMessageEndEvent(message_id=mid))
            return {"v": next_value(prev, k, seed), "token": token}

        return fn

    class Replay:
        """Tracks (in the status file) whether this body still replays its journal."""

        def __init__(self, ctx: perdure.RunContext) -> None:
            self.ctx = ctx
            self.active = ctx.replaying
            if self.active:
                status.replaying(+1)

        def check(self) -> None:
            if self.active and not self.ctx.replaying:
                self.active = False
                status.replaying(-1)

    @rt.workflow("crashy")
    async def crashy(ctx: perdure.RunContext, inp: dict) -> dict:  # type: ignore[type-arg]
        replay = Replay(ctx)
        i = inp["i"]
        prev = i
        values: list[int] = []
        tokens: list[str] = []
        for k in range(STEPS):
            name = f"s{k}"
            kind = step_kind(seed, i, k)
            fn = {"sync": sync_step, "async": async_step}.get(kind) or stream_step(ctx, i)
            result = await ctx.step(name, fn, ctx.run_id, name, prev, k)
            ack("ACK", ctx.run_id, name)
            replay.check()
            prev = result["v"]
            values.append(prev)
            tokens.append(result["token"])
            if k == 1 and i % 4 == 0:
                await ctx.sleep(0.05)
                replay.check()
            if k == 2 and i % 3 == 0:
                await ctx.custom("progress", {"run": ctx.run_id, "k": k})
                replay.check()
        return {"values": values, "tokens": tokens}

    @rt.workflow("sleepy")
    async def sleepy(ctx: perdure.RunContext, inp: dict) -> dict:  # type: ignore[type-arg]
        before = await ctx.step("before", async_step, ctx.run_id, "before", inp["i"], 0)
        ack("ACK", ctx.run_id, "before")
        await ctx.sleep(sleep_seconds)
        after = await ctx.step("after", async_step, ctx.run_id, "after", before["v"], 1)
        ack("ACK", ctx.run_id, "after")
        return {"values": [before["v"], after["v"]], "tokens": [before["token"], after["token"]]}

    target = "workflow:sleepy" if mode == "sleep" else "workflow:crashy"

    events_path = os.environ.get("PERDURE_EVENTS_FILE")
    events_fd = (
        os.open(events_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644) if events_path else None
    )

    async def follow(run_id: str) -> None:
        """A live subscriber: witness every event it is shown (R20: committed ones only)."""
        assert events_fd is not None
        async for ev in rt.events(run_id, after=0, follow=True):
            os.write(
                events_fd, f"EV {run_id} {ev.event_id} {event_digest(ev.to_wire())}\n".encode()
            )

    async def amain() -> int:
        status.phase(PHASE_OPENING)
        failures: list[str] = []
        async with rt:
            print("RECOVERED", " ".join(f"{k}={v}" for k, v in rt.recovered.items()), flush=True)
            status.phase(PHASE_RUNNING)
            limit = trio.Semaphore(IN_FLIGHT)

            async def one(i: int) -> None:
                async with limit:
                    started = await rt.start(
                        target,
                        {"i": i, "seed": seed},
                        owner=perdure.Project("p"),
                        run_id=f"r-{i:04d}",
                    )
                    ack("STARTED", started.run.id, int(started.duplicate))
                    async with trio.open_nursery() as inner:
                        if events_fd is not None and i % 8 == 1:
                            inner.start_soon(follow, started.run.id)
                        rec = await rt.wait(started.run.id)
                    if rec.status != "completed":
                        failures.append(f"{rec.id} {rec.status} {rec.completion}")

            async with trio.open_nursery() as nursery:
                for i in range(n_runs):
                    nursery.start_soon(one, i)
            status.phase(PHASE_CLOSING)
        status.phase(PHASE_DONE)
        for failure in failures:
            print("FAILED", failure, flush=True)
        if failures:
            return 1
        print("DONE", flush=True)
        return 0

    return trio.run(amain)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
