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

import contextlib
import random
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import msgspec
import trio

from perdure._errors import IdempotencyConflict, InvalidInput, PerdureError
from perdure.agui import AgentInput
from perdure.storage import Op, Owner, RunRecord, TimerRef, Trigger, owner_key

from ._boundary import plain as plain_value
from ._boundary import text
from ._definitions import Definition, Registry, validate_identifier
from ._lifecycle import begin
from ._results import Started
from ._spawning import spawn

if TYPE_CHECKING:
    from ._engine import Engine

__all__ = ["Checked", "Starter", "check_start", "new_run_id"]

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
        checked: Checked | None = None,
    ) -> Started:
        """Start a run; ``checked``: what :func:`check_start` already made of the start
        (``target``, ``input`` and ``owner`` are then not looked at again)."""
        # One coroutine and positional calls: this is every start's path.
        definition, owner, typed, plain = checked or check_start(
            self._engine.registry, target, input, owner, run_id, parent, idempotency_key
        )
        if idempotency_key is None and run_id is None:
            # Nothing to deduplicate against: a fresh id cannot collide.
            return await self._create(definition, owner, typed, plain, None, None, parent, trigger)
        okey = owner_key(owner)
        claims: list[tuple[str, ...]] = []
        if idempotency_key is not None:
            claims.append(("key", okey, idempotency_key))
        if run_id is not None:
            claims.append(("id", run_id))
        async with self.claim(claims):
            existing = self._existing(claims, idempotency_key, run_id)
            if existing is not None:
                return _duplicate(existing, definition, owner, parent)
            return await self._create(
                definition, owner, typed, plain, idempotency_key, run_id, parent, trigger
            )

    async def _wait_claims(self, claims: list[tuple[str, ...]]) -> None:
        """Wait until no other task holds one of ``claims``; refused (nothing done) if
        the runtime began closing meanwhile: its store is going away."""
        waited = False
        while any(claim in self._claims for claim in claims):
            waited = True
            await next(self._claims[c] for c in claims if c in self._claims).wait()
        if waited and self._engine.closing:
            raise PerdureError("the runtime is closing: use `async with rt:`")

    @contextlib.asynccontextmanager
    async def claim(self, claims: list[tuple[str, ...]]) -> AsyncIterator[None]:
        """Hold ``claims`` (waiting while another task holds one): starts with the same
        idempotency key are serialised, so exactly one of them creates what it names."""
        await self._wait_claims(claims)
        done = trio.Event()
        for claim in claims:
            self._claims[claim] = done
        try:
            yield
        finally:
            for claim in claims:
                self._claims.pop(claim, None)
            done.set()

    async def start_child(self, checked: Checked, *, run_id: str, parent: RunRecord) -> Started:
        """Start a child of ``parent`` (``ctx.start_child``, which :func:`check_start`
        checked before its journal was consulted): same root, parent link."""
        trigger = Trigger(type="child", ref=parent.id)
        definition, owner = checked[0], checked[1]
        return await self.start(
            definition.target, None, owner, None, run_id, parent, trigger, checked
        )

    def _existing(
        self, claims: list[tuple[str, ...]], idempotency_key: str | None, run_id: str | None
    ) -> RunRecord | None:
        """The run a retried start names, if any; a key and an id that name different runs
        (or a run id taken by a run with another key) are a conflict, never a guess."""
        store = self._engine.store
        found: list[RunRecord] = []
        for claim in claims:
            if claim[0] == "key":
                by_key = store.get_idem(claim[1], claim[2])
                rec = store.get_run(by_key) if by_key is not None else None
            else:
                rec = store.get_run(claim[1])
            if rec is not None:
                found.append(rec)
        if not found:
            return None
        rec = found[0]
        if (
            run_id is not None
            and idempotency_key is not None
            and (rec.id != run_id or rec.idempotency_key != idempotency_key)
        ):
            raise IdempotencyConflict(
                f"idempotency key {idempotency_key!r} and run id {run_id!r} name different "
                "runs (or one of them is taken)",
                run_id=rec.id,
            )
        return rec

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
        rec, ops, admit = self.build(
            definition, owner, typed, plain, idempotency_key, run_id, parent, trigger
        )
        try:
            await self._engine.writer.commit(ops)
        except BaseException:
            self.abandon(rec, admit)
            raise
        self.launch(rec, admit)
        return Started(run=rec, duplicate=False)

    def build(
        self,
        definition: Definition,
        owner: Owner,
        typed: Any,
        plain: Any,
        idempotency_key: str | None,
        run_id: str | None,
        parent: RunRecord | None,
        trigger: Trigger,
        batch_id: str | None = None,
    ) -> tuple[RunRecord, list[Op], bool]:
        """A new run's record and the ops that store it, and whether it is admitted.

        For callers that commit runs together with ops of their own (batches, schedule
        fires): commit the ops, then :meth:`launch` the run, or :meth:`abandon` it if
        the commit failed. Nothing here awaits, so what is checked before still holds.
        """
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
            plain = plain_value(
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
            version=definition.version,
            last_event_id=1 if admit else 0,  # the RUN_STARTED committed with it
            batch_id=batch_id,
        )
        ops: list[Op] = []
        if admit:
            change = begin(rec, now)
            rec = change.record
            ops.append(engine.ops.events(rid, 1, change.events))
            if definition.timeout is not None:
                ops.append(engine.arm_timer(TimerRef.at(rid, now + definition.timeout, "deadline")))
        ops.extend(engine.ops.save_run(None, rec))
        return rec, ops, admit

    def abandon(self, rec: RunRecord, admit: bool) -> None:
        """The commit of a :meth:`build` failed: give back its ``max_running`` slot."""
        if admit and rec.parent_id is None:
            self._engine.admission.release(rec.id)

    def launch(self, rec: RunRecord, admit: bool) -> None:
        """The run of a :meth:`build` is durable: start its actor, or queue it.

        Once the runtime is closing nothing is started any more: the committed run
        stays stored (``running`` or ``pending``) and is recovered at the next open
        (R26), so the start that committed it still reports its success.
        """
        if self._engine.closing:
            return
        if admit:
            spawn(self._engine, rec, fresh=True)
        else:
            self._engine.admission.queue(rec.id)


Checked = tuple[Definition, Owner, Any, Any]
"""A start that passed :func:`check_start`: its definition, owner, and input (typed,
and as stored). A plain tuple: it is built on every start."""


def check_start(
    registry: Registry,
    target: str,
    input: Any,
    owner: Owner,
    run_id: str | None,
    parent: RunRecord | None,
    idempotency_key: str | None = None,
) -> Checked:
    """What a start refuses without looking at the store; what it starts from if not.

    A child start is checked before the body's journal is consulted, so a refused
    ``start_child`` records nothing and is refused again on replay (R7).
    """
    definition = registry.resolve(target)
    owner = registry.check_owner(definition, owner)
    if run_id is not None:
        validate_identifier(run_id, "run_id")
        if parent is not None and run_id in (parent.id, parent.root_id):
            raise InvalidInput(
                f"a child of {parent.id} cannot take the id {run_id!r} of its own tree",
                run_id=run_id,
            )
    if idempotency_key is not None:
        text(idempotency_key, "idempotency_key", max_bytes=256)
    typed, plain = definition.convert_input(input)
    return definition, owner, typed, plain


def _duplicate(
    rec: RunRecord, definition: Definition, owner: Owner, parent: RunRecord | None
) -> Started:
    if rec.target != definition.target or rec.owner != owner:
        raise IdempotencyConflict(
            f"run {rec.id} already exists for {rec.target} owned by {owner_key(rec.owner)}",
            run_id=rec.id,
        )
    if rec.parent_id != (parent.id if parent is not None else None):
        # A child start never adopts an unrelated run (nor a top-level start a child).
        raise IdempotencyConflict(
            f"run {rec.id} already exists with another parent ({rec.parent_id})",
            run_id=rec.id,
        )
    return Started(run=rec, duplicate=True)
