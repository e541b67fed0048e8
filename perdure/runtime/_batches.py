"""Batches (R24): many jobs started atomically under one batch id.

``start_batch(target, inputs, owner=…)`` converts and checks every input first (the
first bad one is :class:`~perdure.InvalidInput` naming its index, and nothing is
stored), then commits every job, the :class:`~perdure.storage.BatchRecord` and the
batch's membership index in **one** transaction: either the whole batch exists or none
of it does. The jobs then start like any others (``max_running`` queues the rest).

An idempotency key (scoped per owner, apart from run keys) makes the start
idempotent: the same key returns the existing batch with ``duplicate=True``;
concurrent starts with one key are serialised by the starter's claims, so exactly one
creates the batch.

A batch's counts are read from its members' committed records (the ``b`` index,
then one record each): exact at the moment of reading, never a counter that a crash
could leave behind. Cancelling a batch cancels every member not yet terminal (R15
for each: children first), at most :data:`CANCEL_CONCURRENCY` at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

import msgspec
import trio

from perdure._errors import BatchNotFound, IdempotencyConflict, InvalidInput, RunNotFound
from perdure.storage import BatchRecord, Op, Owner, RunRecord, Trigger, owner_key

from ._boundary import text
from ._definitions import validate_identifier
from ._delivery import cancel
from ._starting import new_run_id

if TYPE_CHECKING:
    from ._engine import Engine

__all__ = ["MAX_BATCH", "BatchInfo", "batch_info", "cancel_batch", "start_batch"]

MAX_BATCH: Final = 10_000
"""Jobs per batch: one batch is one transaction, and this bounds it."""
CANCEL_CONCURRENCY: Final = 256


class BatchInfo(msgspec.Struct, frozen=True, omit_defaults=True):
    """A batch (``rt.batch``): its jobs, and how many are in each status now.

    ``counts`` maps each status some job is in to how many are; ``duplicate`` is True
    when ``start_batch`` found the batch its idempotency key had already started.
    """

    id: str
    target: str
    owner: Owner
    total: int
    counts: dict[str, int]
    created_at: float
    idempotency_key: str | None = None
    duplicate: bool = False


def _info(engine: Engine, batch: BatchRecord, duplicate: bool = False) -> BatchInfo:
    return BatchInfo(
        id=batch.id,
        target=batch.target,
        owner=batch.owner,
        total=batch.total,
        counts=engine.store.batch_counts(batch.id),
        created_at=batch.created_at,
        idempotency_key=batch.idempotency_key,
        duplicate=duplicate,
    )


async def start_batch(
    engine: Engine,
    target: str,
    inputs: Sequence[Any],
    owner: Owner,
    idempotency_key: str | None,
) -> BatchInfo:
    registry = engine.registry
    definition = registry.resolve(target)
    owner = registry.check_owner(definition, owner)
    if definition.kind != "job":
        raise InvalidInput(f"batches start jobs: {target} is not a task target", target=target)
    if isinstance(inputs, str | bytes | dict) or not isinstance(inputs, Sequence):
        raise InvalidInput("inputs must be a list of job inputs")
    if not 1 <= len(inputs) <= MAX_BATCH:
        raise InvalidInput(f"a batch holds 1 to {MAX_BATCH} jobs (got {len(inputs)})")
    if idempotency_key is not None:
        text(idempotency_key, "idempotency_key", max_bytes=256)
    converted = []
    for index, value in enumerate(inputs):
        try:
            converted.append(definition.convert_input(value))
        except InvalidInput as exc:
            raise InvalidInput(
                f"inputs[{index}]: {exc.message}", index=index, **exc.detail
            ) from None
    starter = engine.starter
    claims: list[tuple[str, ...]] = []
    if idempotency_key is not None:
        claims.append(("batch", owner_key(owner), idempotency_key))
    async with starter.claim(claims):
        if idempotency_key is not None:
            found = engine.store.get_batch_idem(owner, idempotency_key)
            existing = engine.store.get_batch(found) if found is not None else None
            if existing is not None:
                if existing.target != definition.target:
                    raise IdempotencyConflict(
                        f"batch {existing.id} already exists for {existing.target}",
                        batch_id=existing.id,
                    )
                return _info(engine, existing, duplicate=True)
        batch_id = new_run_id()
        trigger = Trigger(type="batch", ref=batch_id)
        built: list[tuple[RunRecord, bool]] = []
        ops: list[Op] = []
        for typed, plain in converted:
            rec, run_ops, admit = starter.build(
                definition, owner, typed, plain, None, None, None, trigger, batch_id
            )
            built.append((rec, admit))
            ops.extend(run_ops)
        batch = BatchRecord(
            id=batch_id,
            target=definition.target,
            owner=owner,
            total=len(built),
            created_at=engine.now(),
            idempotency_key=idempotency_key,
        )
        ops.extend(engine.ops.save_batch(batch))
        try:
            await engine.writer.commit(ops)
        except BaseException:
            for rec, admit in built:
                starter.abandon(rec, admit)
            raise
        for rec, admit in built:
            starter.launch(rec, admit)
    return _info(engine, batch)


def batch_info(engine: Engine, batch_id: str) -> BatchInfo:
    validate_identifier(batch_id, "batch_id")
    batch = engine.store.get_batch(batch_id)
    if batch is None:
        raise BatchNotFound(f"no batch {batch_id!r}", batch_id=batch_id)
    return _info(engine, batch)


async def cancel_batch(engine: Engine, batch_id: str, reason: str) -> int:
    """Cancel every job of the batch that has not ended; how many this call cancelled."""
    validate_identifier(batch_id, "batch_id")
    store = engine.store
    if store.get_batch(batch_id) is None:
        raise BatchNotFound(f"no batch {batch_id!r}", batch_id=batch_id)
    limiter = trio.CapacityLimiter(CANCEL_CONCURRENCY)
    cancelled = 0

    async def one(run_id: str) -> None:
        nonlocal cancelled
        async with limiter:
            rec = store.get_run(run_id)
            if rec is None or rec.terminal:
                return
            try:
                result = await cancel(engine, rec, reason)
            except RunNotFound:
                return
            cancelled += result.cancelled

    async with trio.open_nursery() as nursery:
        for run_id in store.batch_members(batch_id):
            nursery.start_soon(one, run_id)
    return cancelled
