"""Running a graph inside its run's body: the walk's effects on a :class:`RunContext`.

Every effect is an ordinary journaled call of the body API, so a graph run is durable,
replayable and cancellable like any code workflow (R6-R17): ``ctx.step`` for step
functions and for the steps that record a node's outcome, ``ctx.start_child`` for
task, agent and sub-workflow nodes, ``ctx.wait_for_approval`` / ``ctx.wait_for_event``
for waits (AG-UI interrupts), ``ctx.sleep`` for sleeps and loop delays. Concurrent
branches are tasks of a trio nursery, each in its own ``ctx.lane``.

A branch the graph itself stops (a race's loser, the rest of a fail-fast ``all``,
``map`` or ``depends_on`` sequence) takes its subtree with it (R15): a child run it
was waiting for is cancelled before the branch ends. Only the graph's own stops do
that: when the whole body is torn down instead (the runtime closing, the run
passivated or cancelled), child runs are left to the runtime, which resumes or
cancels them with their parent. The cancellation is not journaled (a replay finds the
child ended); a crash between it and the record that decided the container (a race's
winner, a failure) makes the replay see the child cancelled, and the branch show as
failed instead of cancelled.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Sequence
from contextlib import AbstractContextManager, nullcontext, suppress
from contextvars import ContextVar
from typing import Any

import trio

from perdure._errors import (
    ChildCancelled,
    ChildFailed,
    NonDeterminismError,
    PerdureError,
    StepFailed,
    WaitExpired,
)
from perdure.runtime import ChildHandle, RetryPolicy, RunContext
from perdure.storage import Conversation

from ._context import NodeContext
from ._errors import ApprovalExpired, ApprovalRejected, GraphCallbackError, NodeFailed
from ._nodes import Approval, Node, Sleep, Step, SubWorkflow, WaitEvent
from ._walk import Outcome, Scope, Stop, Strand

__all__ = ["Live"]

_ONE_ATTEMPT = RetryPolicy()
_NOT_RUN = Outcome()
"""A branch cancelled or never started (shared: outcomes are never modified)."""


_CANCEL_BOUND = 30.0
"""Seconds a stopped branch waits, shielded, for the child run it cancels to end."""


class _Stop:
    """Set when a nursery of the walk cancels its branches itself (a winner, a failure)."""

    __slots__ = ("set",)

    def __init__(self) -> None:
        self.set = False


_STOPS: ContextVar[tuple[_Stop, ...]] = ContextVar("perdure_graph_stops", default=())
"""The stops of the nurseries around the current branch (a task inherits its spawner's)."""


def _stopped() -> bool:
    return any(stop.set for stop in _STOPS.get())


async def _cancel_child(handle: ChildHandle, key: str) -> None:
    """Cancel the child run of a branch the graph stopped (shielded: the branch is being
    cancelled; bounded: the cancel request is sent at once, only its end is awaited)."""
    with trio.CancelScope(shield=True), trio.move_on_after(_CANCEL_BOUND), suppress(PerdureError):
        await handle.cancel(f"graph node {key!r} was cancelled (its branch was stopped)")


def _value(value: Any) -> Any:
    return value


def _fail(error: PerdureError) -> None:
    raise error


def _undecided() -> None:
    raise AssertionError("a race's winner is only read back once recorded")


class Live:
    """The effects of a walk that runs the graph (see :mod:`._walk`)."""

    __slots__ = ("ctx", "run_id")
    runs = True

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.run_id = ctx.run_id

    # -- what the state derivation tracks: nothing to do while running ----------------------

    def started(self, node: Node, key: str, path: str, scope: Scope) -> None:
        pass

    def completed(self, node: Node, key: str, output: Any, scope: Scope) -> None:
        pass

    def failed(self, node: Node, key: str, error: Exception, scope: Scope) -> None:
        pass

    def skipped(self, node: Node, key: str, path: str, scope: Scope) -> None:
        pass

    def not_run(self, node: Node, key: str, path: str, status: str) -> None:
        pass

    def cancelled(self, path: str) -> None:
        pass

    # -- leaves ----------------------------------------------------------------------------

    def step(self, node: Step, key: str, path: str, scope: Scope, c: NodeContext) -> Awaitable[Any]:
        return self.ctx.step(
            path,
            node.fn,  # type: ignore[arg-type]
            c,
            retry=node.retry,
            timeout=node.timeout,
            inactivity_timeout=node.inactivity_timeout,
            inline=node.inline,
        )

    async def record(self, path: str, value: Any) -> Any:
        """The step that records a node's outcome (its events: the node's step pair)."""
        return await self.ctx.step(path, _value, value, inline=True)

    async def fail(self, path: str, error: PerdureError) -> None:
        """Record a node's failure as its step's error, then raise ``error``."""
        with suppress(StepFailed):
            await self.ctx.step(path, _fail, error, inline=True)
        raise error

    async def child(
        self, node: Step | SubWorkflow, key: str, path: str, scope: Scope, c: NodeContext
    ) -> Any:
        """A task, agent or sub-workflow node: a child run per attempt, then its record.

        The child's id derives from this run, the node's key and the attempt, so a
        replay (or a crash between the start and its journal entry) finds the same
        child. ``timeout`` bounds each attempt's wait (counted again from the start of
        an activation) and cancels the child; a cancelled child is never retried.
        """
        ctx = self.ctx
        target = node.target
        assert target is not None
        if node.input is not None:
            try:
                input = node.input(c)
            except Exception as exc:
                raise GraphCallbackError(
                    f"node {key!r}: input raised {type(exc).__name__}: {exc}",
                    node=key,
                    what="input",
                ) from exc
        else:
            input = c.input
        owner = Conversation(self.run_id) if target.startswith("agent:") else None
        policy = node.retry or _ONE_ATTEMPT
        attempt = 1
        while True:
            child_id = uuid.uuid5(uuid.NAMESPACE_URL, f"{self.run_id}/graph/{key}/{attempt}").hex
            handle = await ctx.start_child(target, input, owner=owner, run_id=child_id)
            failure: PerdureError | None = None
            ended = False
            bound: AbstractContextManager[Any] = (
                trio.move_on_after(node.timeout) if node.timeout is not None else nullcontext()
            )
            with bound:
                try:
                    result = await handle.result()
                    ended = True
                except (ChildFailed, ChildCancelled) as exc:
                    failure = exc
                except trio.Cancelled:
                    if _stopped():  # a race's loser, a fail-fast's rest: its subtree too
                        await _cancel_child(handle, key)
                    raise
            if ended:
                break
            if isinstance(failure, ChildCancelled) and ctx.run.cancel is not None:
                # This run is being cancelled: its children go first (R15), and the
                # cancellation reaches this body next. Nothing of the node is recorded.
                await trio.sleep_forever()
            if failure is None:  # the attempt's timeout
                await handle.cancel(f"graph node {key!r} timed out after {node.timeout} s")
                failure = NodeFailed(f"{node.kind} {key!r}: attempt {attempt} timed out", node=key)
            if not isinstance(failure, ChildCancelled) and policy.should_retry(attempt, failure):
                await ctx.sleep(policy.delay(attempt))
                attempt += 1
                continue
            await self.fail(
                path,
                NodeFailed(
                    f"{node.kind} {key!r}: child run {child_id} ({target}) did not complete: "
                    f"{failure.message}",
                    node=key,
                    child=child_id,
                    attempts=attempt,
                    child_error=failure.code,
                ),
            )
        if isinstance(node, SubWorkflow) and node.output is not None:
            try:
                result = node.output(result)
            except Exception as exc:
                raise GraphCallbackError(
                    f"node {key!r}: output raised {type(exc).__name__}: {exc}",
                    node=key,
                    what="output",
                ) from exc
        return await self.record(path, result)

    async def approval(self, node: Approval, key: str, path: str, scope: Scope) -> Any:
        wait_key = (node.key or node.id) + scope.suffix
        try:
            decision = await self.ctx.wait_for_approval(
                wait_key,
                prompt=node.prompt,
                approvers=None if node.approvers is None else list(node.approvers),
                schema=node.schema,
                timeout=node.timeout,
            )
        except WaitExpired:
            await self.fail(
                path,
                ApprovalExpired(
                    f"approval {key!r} expired before a decision", node=key, key=wait_key
                ),
            )
        if not decision.approved:
            await self.fail(
                path,
                ApprovalRejected(
                    f"approval {key!r} was rejected by {decision.approver!r}",
                    node=key,
                    key=wait_key,
                    approver=decision.approver,
                    comment=decision.comment,
                ),
            )
        return await self.record(
            path,
            {
                "approved": True,
                "approver": decision.approver,
                "response": decision.response,
                "comment": decision.comment,
            },
        )

    async def wait_event(self, node: WaitEvent, key: str, path: str, scope: Scope) -> Any:
        try:
            payload = await self.ctx.wait_for_event(
                node.event, timeout=node.timeout, schema=node.schema
            )
        except WaitExpired as exc:
            await self.fail(path, WaitExpired(exc.message, node=key, event=node.event))
        return await self.record(path, payload)

    async def sleep(
        self,
        node: Sleep,
        key: str,
        path: str,
        scope: Scope,
        seconds: float | None,
        until: float | None,
    ) -> Any:
        if until is not None:
            await self.ctx.sleep_until(until)
        else:
            assert seconds is not None
            await self.ctx.sleep(seconds)
        return await self.record(path, None)

    async def delay(self, seconds: float, scope: Scope) -> None:
        await self.ctx.sleep(seconds)

    async def race_winner(self, path: str, scope: Scope) -> str | None:
        if not self.ctx.recorded(path):
            return None
        decision = await self.ctx.step(path, _undecided, inline=True)
        return str(decision["winner"])

    async def record_winner(self, path: str, scope: Scope, winner: str) -> None:
        await self.record(path, {"winner": winner})

    # -- concurrency -----------------------------------------------------------------------

    async def strands(
        self, scope: Scope, strands: Sequence[Strand], limit: int | None, stop: Stop
    ) -> list[Outcome]:
        """Run the branches at once (``limit`` at a time), each in its own lane.

        ``stop="failure"``: the first failure cancels the others; ``"success"``: the
        first success does (a race). Branches cancelled or never started keep an empty
        outcome. A non-determinism error always ends the whole run.
        """
        outcomes = [_NOT_RUN] * len(strands)
        ctx = self.ctx
        ended = 0
        fatal: list[BaseException] = []
        stopping = _Stop()
        stops = (*_STOPS.get(), stopping)

        async with trio.open_nursery() as nursery:
            bounded = limit is not None and limit < len(strands)
            semaphore = trio.Semaphore(limit) if bounded and limit is not None else None

            async def branch(i: int, strand: Strand) -> None:
                nonlocal ended
                _STOPS.set(stops)  # this task's own context
                try:
                    with ctx.lane(strand.key):
                        value = await strand.run(strand.scope)
                except NonDeterminismError as exc:
                    fatal.append(exc)
                    nursery.cancel_scope.cancel()
                except Exception as exc:
                    ended += 1
                    outcomes[i] = Outcome("failed", error=exc, seq=ended)
                    if stop == "failure":
                        stopping.set = True
                        nursery.cancel_scope.cancel()
                else:
                    ended += 1
                    outcomes[i] = Outcome("ok", value, seq=ended)
                    if stop == "success":
                        stopping.set = True
                        nursery.cancel_scope.cancel()
                finally:
                    if semaphore is not None:
                        semaphore.release()

            for i, strand in enumerate(strands):
                if semaphore is not None:
                    await semaphore.acquire()
                nursery.start_soon(branch, i, strand)
        if fatal:
            raise fatal[0]
        return outcomes

    async def dag(
        self, scope: Scope, strands: Sequence[Strand], deps: Sequence[Sequence[int]]
    ) -> list[Outcome]:
        """Run each node once its dependencies have completed; a failure cancels the rest."""
        outcomes = [_NOT_RUN] * len(strands)
        done = [trio.Event() for _ in strands]
        ctx = self.ctx
        fatal: list[BaseException] = []
        stopping = _Stop()
        stops = (*_STOPS.get(), stopping)

        async with trio.open_nursery() as nursery:

            async def branch(i: int, strand: Strand) -> None:
                _STOPS.set(stops)
                for dep in deps[i]:
                    await done[dep].wait()
                try:
                    with ctx.lane(strand.key):
                        value = await strand.run(strand.scope)
                except NonDeterminismError as exc:
                    fatal.append(exc)
                    nursery.cancel_scope.cancel()
                except Exception as exc:
                    outcomes[i] = Outcome("failed", error=exc)
                    stopping.set = True
                    nursery.cancel_scope.cancel()
                else:
                    outcomes[i] = Outcome("ok", value)
                    done[i].set()

            for i, strand in enumerate(strands):
                nursery.start_soon(branch, i, strand)
        if fatal:
            raise fatal[0]
        return outcomes
