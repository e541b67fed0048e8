"""Starting runs (R4, R5, R17): validation, idempotency, the first commit.

Everything is checked before anything is stored (R5): the target resolves, the owner
kind fits the target kind, the input converts to the definition's input type and back
to plain data. A start with an idempotency key (scoped per owner) or a caller-chosen
run id is idempotent (R4): the same key or id returns the existing run with
``duplicate=True``; reusing it for another target or owner is
:class:`~perdure.IdempotencyConflict`. Concurrent starts with the same key are
serialised by an in-memory *claim*, so exactly one creates the run.

A run that may execute at once (a free ``max_running`` slot, or a child run) is
committed already ``running`` with its ``RUN_STARTED``: one commit instead of two, the
transition still checked. Otherwise it is committed ``pending`` and queued for
admission.
"""

from __future__ import annotations

import random
import time
from typing import TYPE_CHECKING, Any

import msgspec
import trio

from perdure._errors import IdempotencyConflict, InvalidInput
from perdure.agui import AgentInput
from perdure.storage import Owner, RunRecord, TimerRef, Trigger, owner_key

from ._definitions import Definition, to_plain, validate_identifier
from ._lifecycle import begin
from ._results import Started
from ._spawning import spawn

if TYPE_CHECKING:
    from ._engine import Engine

__all__ = ["Starter", "new_run_id"]

_id_random = random.Random()  # seeded from os.urandom; ~40x cheaper than uuid4 per id


def new_run_id() -> str:
    """A fresh 32-hex-digit run id (128 random bits, time-ordered prefix)."""
    return f"{time.time_ns() // 1_000_000:012x}{_id_random.getrandbits(80):020x}"


class Starter:
    """Creates runs for one engine; holds the claims of starts in flight."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._claims: dict[tuple[str, ...], trio.Event] = {}

    async def start(
        self,
        target: str,
        input: Any,
        owner: Owner,
        idempotency_key: str | None,
        run_id: str | None,
        parent: RunRecord | None,
        trigger: Trigger,
    ) -> Started:
        registry = self._engine.registry
        definition = registry.resolve(target)
        owner = registry.check_owner(definition, owner)
        if run_id is not None:
            validate_identifier(run_id, "run_id")
        if idempotency_key is not None and (
            not isinstance(idempotency_key, str)
            or not 1 <= len(_utf8(idempotency_key)) <= 256
            or "\0" in idempotency_key
        ):
            raise InvalidInput("idempotency_key must be a string of 1-256 UTF-8 bytes without NUL")
        typed, plain = definition.convert_input(input)
        if idempotency_key is None and run_id is None:
            # Nothing to deduplicate against: a fresh id cannot collide.
            return await self._create(definition, owner, typed, plain, None, None, parent, trigger)
        okey = owner_key(owner)
        claims: list[tuple[str, ...]] = []
        if idempotency_key is not None:
            claims.append(("key", okey, idempotency_key))
        if run_id is not None:
            claims.append(("id", run_id))
        while any(claim in self._claims for claim in claims):
            await next(self._claims[c] for c in claims if c in self._claims).wait()
        existing = self._existing(claims)
        if existing is not None:
            return _duplicate(existing, definition, owner)
        done = trio.Event()
        for claim in claims:
            self._claims[claim] = done
        try:
            return await self._create(
                definition, owner, typed, plain, idempotency_key, run_id, parent, trigger
            )
        finally:
            for claim in claims:
                self._claims.pop(claim, None)
            done.set()

    async def start_child(
        self, target: str, input: Any, *, owner: Owner, run_id: str | None, parent: RunRecord
    ) -> Started:
        """Start a child of ``parent`` (``ctx.start_child``): same root, parent link."""
        trigger = Trigger(type="child", ref=parent.id)
        return await self.start(target, input, owner, None, run_id, parent, trigger)

    def _existing(self, claims: list[tuple[str, ...]]) -> RunRecord | None:
        store = self._engine.store
        for claim in claims:
            if claim[0] == "key":
                found = store.get_idem(claim[1], claim[2])
                rec = store.get_run(found) if found is not None else None
            else:
                rec = store.get_run(claim[1])
            if rec is not None:
                return rec
        return None

    async def _create(
        self,
        definition: Definition,
        owner: Owner,
        typed: Any,
        plain: Any,
        idempotency_key: str | None,
        run_id: str | None,
        parent: RunRecord | None,
        trigger: Trigger,
    ) -> Started:
        engine = self._engine
        now = engine.now()
        rid = run_id or new_run_id()
        if (
            definition.kind == "agent"
            and isinstance(typed, AgentInput)
            and (typed.thread_id, typed.run_id) != (owner.id, rid)
        ):
            # The run's identity is the owner and the run id: what the body sees and what
            # is stored say the same, whatever the caller put in threadId/runId.
            plain = to_plain(
                msgspec.structs.replace(typed, thread_id=owner.id, run_id=rid),
                f"input for {definition.target}",
            )
        seq = engine.next_seq
        engine.next_seq += 1
        admission = engine.admission
        admit = engine.recover and (parent is not None or admission.try_reserve(rid))
        rec = RunRecord(
            id=rid,
            seq=seq,
            kind=definition.kind,
            owner=owner,
            target=definition.target,
            root_id=parent.root_id if parent is not None else rid,
            status="pending",
            created_at=now,
            updated_at=now,
            input=plain,
            parent_id=parent.id if parent is not None else None,
            trigger=trigger,
            idempotency_key=idempotency_key,
            last_event_id=1 if admit else 0,  # the RUN_STARTED committed with it
            version=definition.version,
        )
        ops = []
        if admit:
            change = begin(rec, now)
            rec = change.record
            ops.append(engine.ops.events(rid, 1, change.events))
            if definition.timeout is not None:
                ops.append(engine.arm_timer(TimerRef.at(rid, now + definition.timeout, "deadline")))
        ops.extend(engine.ops.save_run(None, rec))
        try:
            await engine.writer.commit(ops)
        except BaseException:
            if admit and parent is None:
                admission.release(rid)
            raise
        if admit:
            spawn(engine, rec, fresh=True)
        else:
            admission.queue(rid)
        return Started(run=rec, duplicate=False)


def _duplicate(rec: RunRecord, definition: Definition, owner: Owner) -> Started:
    if rec.target != definition.target or rec.owner != owner:
        raise IdempotencyConflict(
            f"run {rec.id} already exists for {rec.target} owned by {owner_key(rec.owner)}",
            run_id=rec.id,
        )
    return Started(run=rec, duplicate=True)


def _utf8(text: str) -> bytes:
    try:
        return text.encode()
    except UnicodeEncodeError:
        raise InvalidInput(f"{text!r} is not valid UTF-8 text") from None
