"""Start runs with a fixed number in flight and measure: the demo's throughput section
and ``bench/throughput.py`` share it."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from perdure import Conversation, InvalidInput, Project, RunRecord, Runtime

__all__ = ["DriveResult", "Job", "drive"]

Job = tuple[str, Any, Conversation | Project]
"""``(target, input, owner)`` of one run to start."""


@dataclass
class DriveResult:
    """What :func:`drive` measured; ``records``/``txns``/``batches`` are writer deltas."""

    runs: int
    elapsed: float
    events: int
    records: int
    txns: int
    batches: int
    by_kind_status: Counter[tuple[str, str]] = field(default_factory=Counter)
    sample: dict[str, str] = field(default_factory=dict)

    @property
    def runs_per_s(self) -> float:
        return self.runs / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def events_per_s(self) -> float:
        return self.events / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def records_per_s(self) -> float:
        return self.records / self.elapsed if self.elapsed > 0 else 0.0


async def drive(
    rt: Runtime,
    make_job: Callable[[int], Job],
    count: int,
    concurrency: int,
    on_done: Callable[[RunRecord], None] | None = None,
) -> DriveResult:
    """Start ``count`` runs (``make_job(i)``) with at most ``concurrency`` in flight.

    Each run is started and then awaited to its terminal status before its slot is
    reused. Returns wall time, events logged (sum of ``last_event_id``) and the
    writer's committed records, transactions and batches over the whole drive
    (from ``rt.stats()``).
    """
    if count < 0 or concurrency < 1:
        raise InvalidInput("count must be >= 0 and concurrency >= 1")
    stats = rt.stats()
    records0, txns0, batches0 = stats.records, stats.txns, stats.batches
    result = DriveResult(runs=count, elapsed=0.0, events=0, records=0, txns=0, batches=0)
    slots = trio.Semaphore(concurrency)

    async def one(i: int) -> None:
        try:
            target, inp, owner = make_job(i)
            started = await rt.start(target, inp, owner=owner)
            rec = await rt.wait(started.run.id)
            result.events += rec.last_event_id
            result.by_kind_status[(rec.kind, rec.status)] += 1
            result.sample.setdefault(rec.kind, rec.id)
            if on_done is not None:
                on_done(rec)
        finally:
            slots.release()

    t0 = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for i in range(count):
            await slots.acquire()
            nursery.start_soon(one, i)
    result.elapsed = time.perf_counter() - t0
    stats = rt.stats()
    result.records = stats.records - records0
    result.txns = stats.txns - txns0
    result.batches = stats.batches - batches0
    return result
