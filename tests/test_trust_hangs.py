"""No hangs (R31) and the smaller cases of issue 9.

Every caller gets an answer: a cancel with a reason that cannot be stored, a wait schema
whose ``$ref`` cannot resolve (refused when declared, never fetched), an exception of the
run actor itself (not of the body) while ``resume``, ``cancel``, ``wait`` and followers
are parked on the run, and closing a runtime whose body swallows ``trio.Cancelled``.
Then: waits and followers on ended runs leave nothing in the change hub, a child start
never adopts an unrelated run nor takes its own tree's id, and a start whose
idempotency key and run id name different runs is a conflict.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from helpers.checks import waiting
from helpers.trust import assert_readers_work

import perdure
from perdure import ExternalEvent, InputResponse
from perdure.testing import internals

P = perdure.Project("p1")
Q = perdure.Project("p2")


def make(path: Path, **options: Any) -> perdure.Runtime:
    options.setdefault("durability", "process")
    rt = perdure.Runtime(path, **options)

    @rt.workflow("echo")
    async def echo(ctx: perdure.RunContext, inp: Any) -> Any:
        return inp

    @rt.workflow("hold")
    async def hold(ctx: perdure.RunContext, inp: Any) -> Any:
        return await ctx.wait_for_event("go")

    @rt.workflow("busy")
    async def busy(ctx: perdure.RunContext, inp: Any) -> None:
        while True:
            await ctx.custom("tick", None)
            await trio.sleep(0.01)

    return rt


# -- cancel reasons ---------------------------------------------------------------------------


async def test_cancel_with_an_unstorable_reason_answers_and_the_run_stays_cancellable(
    data_dir: Path,
) -> None:
    """``rt.cancel(id, reason="\\ud800")`` used to kill the run's actor and hang the
    caller; now it is InvalidInput at once, for a waiting and for a running run, and a
    well-formed cancel afterwards works (the stored reason is cut to 1000 characters)."""
    async with make(data_dir) as rt:
        held = (await rt.start("workflow:hold", None, owner=P)).run.id
        busy = (await rt.start("workflow:busy", None, owner=P)).run.id
        await waiting(rt, held)
        for run_id in (held, busy):
            for reason in ("\ud800", "ok \udfff", 5, None, b"bytes", "r" * 70_000):
                with trio.fail_after(5), pytest.raises(perdure.InvalidInput):
                    await rt.cancel(run_id, reason=reason)  # type: ignore[arg-type]
            assert rt.get(run_id).status in ("waiting", "running")
            assert rt.get(run_id).cancel is None
        with trio.fail_after(10):
            for run_id in (held, busy):
                cancelled = await rt.cancel(run_id, reason="é" * 5000)
                assert cancelled.cancelled and cancelled.run.status == "cancelled"
                assert cancelled.run.cancel is not None
                assert cancelled.run.cancel.reason == "é" * 1000
        await assert_readers_work(rt)


# -- JSON Schema $ref: refused at declaration, never fetched -----------------------------------


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A loopback TCP port nobody should ever connect to."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.setblocking(False)
    yield sock
    sock.close()


def connections(sock: socket.socket) -> int:
    count = 0
    while True:
        try:
            conn, _ = sock.accept()
        except BlockingIOError:
            return count
        conn.close()
        count += 1


async def test_an_unresolvable_ref_is_refused_at_declaration_and_never_fetched(
    data_dir: Path, listener: socket.socket
) -> None:
    """A wait schema whose ``$ref`` points at a URL (here a loopback port we listen on),
    at a missing local definition, or at a relative document is InvalidInput when the
    wait is declared; no connection ever reaches the port, and a local ``$ref`` works."""
    port = listener.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    bad_schemas: list[dict[str, Any]] = [
        {"$ref": f"{url}/schema.json"},
        {"type": "object", "properties": {"a": {"$ref": f"{url}/a.json#/x"}}},
        {"type": "array", "prefixItems": [{"$ref": f"{url}/b.json"}]},
        {"$ref": "#/$defs/missing"},
        {"$ref": "other.json"},
        {"$id": f"{url}/root.json", "$ref": "sibling.json"},
    ]
    refused: list[str] = []
    rt = make(data_dir)

    @rt.workflow("refs")
    async def refs(ctx: perdure.RunContext, inp: Any) -> Any:
        for i, schema in enumerate(bad_schemas):
            try:
                await ctx.wait_for_input(f"bad{i}", schema=schema)
            except perdure.InvalidInput as exc:
                refused.append(exc.message)
        local = {"$defs": {"n": {"type": "integer"}}, "$ref": "#/$defs/n"}
        return await ctx.wait_for_input("good", schema=local)

    async with rt:
        run_id = (await rt.start("workflow:refs", None, owner=P)).run.id
        await waiting(rt, run_id)
        assert len(refused) == len(bad_schemas), refused
        with trio.fail_after(5), pytest.raises(perdure.InvalidSignal):
            await rt.resume(run_id, InputResponse(key="good", value="not an integer"))
        await rt.resume(run_id, InputResponse(key="good", value=3))
        assert (await rt.wait(run_id)).completion.result == 3  # type: ignore[union-attr]
        await trio.sleep(0.1)  # a fetch on another thread would have connected by now
    assert connections(listener) == 0


# -- a failure of the run actor itself --------------------------------------------------------


class ActorBug(RuntimeError):
    """Not a PerdureError: what a bug inside the runtime looks like."""


async def test_an_actor_crash_fails_the_run_and_every_caller_gets_an_answer(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A non-PerdureError raised inside the run actor (here by its signal handling, for
    one key) answers the ``resume`` that triggered it with a typed error, fails the run
    with a recorded INTERNAL_ERROR, and wakes ``wait`` and ``events(follow=True)``
    callers that were parked on the run; ``cancel`` and ``resume`` afterwards answer."""
    import perdure.runtime._run_actor as run_actor

    real_accept = run_actor.accept_signals

    async def accept(actor: Any, signals: Any) -> Any:
        if any(key == "event:boom" for _, key in signals):
            raise ActorBug("boom \ud800 (a message that is not even valid UTF-8)")
        return await real_accept(actor, signals)

    monkeypatch.setattr(run_actor, "accept_signals", accept)
    async with make(data_dir) as rt:
        run_id = (await rt.start("workflow:hold", None, owner=P)).run.id
        other = (await rt.start("workflow:hold", None, owner=P)).run.id
        await waiting(rt, run_id)
        answers: dict[str, Any] = {}

        async def wait() -> None:
            answers["wait"] = await rt.wait(run_id)

        async def follow() -> None:
            answers["follow"] = [e.to_wire() async for e in rt.events(run_id, follow=True)]

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(wait)
                nursery.start_soon(follow)
                await trio.sleep(0.05)  # both parked on the run
                with pytest.raises(perdure.PerdureError) as raised:
                    await rt.resume(run_id, ExternalEvent(name="boom"))
        assert "ActorBug" in raised.value.message
        rec = answers["wait"]
        assert rec.status == "failed" and rec.completion.error.code == "INTERNAL_ERROR"
        assert "ActorBug" in rec.completion.error.message
        assert answers["follow"][-1]["type"] == "RUN_ERROR"
        with trio.fail_after(5):
            assert (await rt.cancel(run_id)).cancelled is False
            with pytest.raises(perdure.RunNotActive):
                await rt.resume(run_id, ExternalEvent(name="go"))
        # The other run is untouched and still takes signals.
        await rt.resume(other, ExternalEvent(name="go", payload=1))
        assert (await rt.wait(other)).completion.result == 1  # type: ignore[union-attr]
        await assert_readers_work(rt)


async def test_concurrent_callers_are_answered_when_the_actor_crashes(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Messages queued behind the one that crashes the actor (a cancel, a second signal)
    are answered too (on_stop answers the mailbox), never left waiting."""
    import perdure.runtime._run_actor as run_actor

    real_accept = run_actor.accept_signals

    async def accept(actor: Any, signals: Any) -> Any:
        if any(key == "event:boom" for _, key in signals):
            await trio.sleep(0.05)  # let the other messages queue up behind this one
            raise ActorBug("boom")
        return await real_accept(actor, signals)

    monkeypatch.setattr(run_actor, "accept_signals", accept)
    async with make(data_dir) as rt:
        run_id = (await rt.start("workflow:hold", None, owner=P)).run.id
        await waiting(rt, run_id)
        answers: dict[str, Any] = {}

        async def call(name: str, coro: Any) -> None:
            try:
                answers[name] = await coro
            except perdure.PerdureError as exc:
                answers[name] = exc

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(call, "boom", rt.resume(run_id, ExternalEvent(name="boom")))
                await trio.sleep(0.01)
                nursery.start_soon(call, "go", rt.resume(run_id, ExternalEvent(name="go")))
                nursery.start_soon(call, "cancel", rt.cancel(run_id))
            final = await rt.wait(run_id)
        assert set(answers) == {"boom", "go", "cancel"}
        assert isinstance(answers["boom"], perdure.PerdureError)
        # The crash fails the run; the messages queued behind it are told so.
        assert final.status == "failed"
        assert isinstance(answers["go"], perdure.RunNotActive)
        assert isinstance(answers["cancel"], perdure.RunNotActive)
        await assert_readers_work(rt)


async def test_when_even_the_failure_cannot_be_stored_waiters_get_the_error(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the run's failure cannot be recorded either, the hub hands a StorageError to
    everyone parked on the run instead of leaving them waiting forever (R31)."""
    import perdure.runtime._engine as engine_module
    import perdure.runtime._run_actor as run_actor

    async def accept(actor: Any, signals: Any) -> Any:
        raise ActorBug("boom")

    def spawn(*args: Any, **kwargs: Any) -> Any:
        raise ActorBug("cannot spawn either")

    monkeypatch.setattr(run_actor, "accept_signals", accept)
    monkeypatch.setattr(engine_module, "spawn", spawn)
    async with make(data_dir) as rt:
        run_id = (await rt.start("workflow:hold", None, owner=P)).run.id
        await waiting(rt, run_id)
        answers: dict[str, Any] = {}

        async def call(name: str, fn: Any) -> None:
            try:
                answers[name] = await fn()
            except perdure.PerdureError as exc:
                answers[name] = exc

        async def follow() -> list[Any]:
            return [e async for e in rt.events(run_id, follow=True)]

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(call, "wait", lambda: rt.wait(run_id))
                nursery.start_soon(call, "follow", follow)
                await trio.sleep(0.05)
                with pytest.raises(perdure.PerdureError):
                    await rt.resume(run_id, ExternalEvent(name="go"))
        assert isinstance(answers["wait"], perdure.StorageError), answers
        assert isinstance(answers["follow"], perdure.StorageError), answers
        assert len(internals(rt).hub) == 0
        # The run is still as stored (waiting); an administrator can still cancel it.
        monkeypatch.undo()
        with trio.fail_after(5):
            assert (await rt.cancel(run_id)).run.status == "cancelled"


# -- closing while a body swallows cancellation -----------------------------------------------


async def test_close_is_bounded_when_a_body_swallows_cancellation(
    data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A body that catches ``trio.Cancelled`` in a loop used to make leaving ``async with
    rt:`` spin forever, deaf to an outer timeout. Closing now gives up on it after its
    bound (2 * cancel_grace + 1 s per phase), and an outer timeout ends the block too.

    Real clock: the body spins without ever blocking, so a MockClock's virtual time
    would never advance to the bound. The ``fail_after`` guards only catch a hang; that
    closing gave up on the body (rather than the body ending) is read from the log."""
    grace = 0.05
    bound = 2 * (2 * grace + 1.0)
    released = trio.Event()
    entered: list[str] = []

    def build() -> perdure.Runtime:
        rt = make(data_dir, cancel_grace=grace)

        @rt.workflow("stubborn")
        async def stubborn(ctx: perdure.RunContext, inp: Any) -> None:
            entered.append(ctx.run_id)
            while not released.is_set():
                # The bug in the body: cancellation swallowed, again and again.
                with contextlib.suppress(trio.Cancelled):
                    await trio.sleep(10)

        return rt

    def abandoned() -> list[str]:
        return [
            r.getMessage()
            for r in caplog.records
            if "ignore cancellation still running" in r.getMessage()
        ]

    try:
        with trio.fail_after(bound + 5):  # hang guard
            async with build() as rt:
                run_id = (await rt.start("workflow:stubborn", None, owner=P)).run.id
                while not entered:
                    await trio.sleep(0.01)
        # Closing gave up on the stubborn body (it is still looping) and said so.
        assert not released.is_set()
        [message] = abandoned()
        assert run_id in message
        # An outer timeout: the block is cancelled from outside, and still returns.
        with trio.fail_after(0.3 + bound + 5):  # hang guard
            with trio.move_on_after(0.3) as outer:
                async with build() as rt:
                    while len(entered) < 2:  # the same run, recovered and stubborn again
                        await trio.sleep(0.01)
                    await trio.sleep_forever()
        assert outer.cancelled_caught
        assert entered == [run_id, run_id]
        assert len(abandoned()) == 2 and run_id in abandoned()[1]
    finally:
        released.set()  # let the abandoned bodies end, or trio.run could not finish
        await trio.sleep(0.1)


# -- the change hub leaks nothing -------------------------------------------------------------


async def test_waits_and_followers_on_ended_runs_leave_no_hub_entry(data_dir: Path) -> None:
    """20,000 ``wait``/``events(follow=True)`` calls on ended runs (and cancelled ones on
    live runs) leave the change hub empty (issue 9: +5.9 MB per 20k calls)."""
    async with make(data_dir) as rt:
        hub = internals(rt).hub
        ended = [(await rt.start("workflow:echo", {"i": i}, owner=P)).run.id for i in range(100)]
        for run_id in ended:
            await rt.wait(run_id)
        held = (await rt.start("workflow:hold", None, owner=P)).run.id
        await waiting(rt, held)
        assert len(hub) == 0
        for _ in range(100):
            for run_id in ended:
                await rt.wait(run_id)
                async for _event in rt.events(run_id, after=2, follow=True):
                    pass
        assert len(hub) == 0
        for _ in range(200):  # waits and followers of a live run, given up on
            with trio.move_on_after(0):
                await rt.wait(held)
            with trio.move_on_after(0.0005):
                async for _event in rt.events(held, follow=True):
                    pass
        assert len(hub) == 0


# -- child starts and idempotency -------------------------------------------------------------


async def test_a_child_start_never_adopts_another_run_nor_its_own_tree(data_dir: Path) -> None:
    """``start_child(run_id=<an unrelated run>)`` is IdempotencyConflict (it used to adopt
    it, even from another owner); the parent's own id or its root's is InvalidInput (it
    used to deadlock); the body gets the answer at once and goes on."""
    rt = make(data_dir)
    outcomes: dict[str, Any] = {}

    @rt.workflow("parent")
    async def parent(ctx: perdure.RunContext, inp: dict) -> dict:
        for name, run_id, owner in (
            ("unrelated", inp["unrelated"], None),
            ("other owner", inp["foreign"], Q),
            ("own id", ctx.run_id, None),
            ("root id", ctx.root_id, None),
        ):
            try:
                await ctx.start_child("workflow:echo", {"x": 1}, run_id=run_id, owner=owner)
                outcomes[name] = "adopted"
            except perdure.PerdureError as exc:
                outcomes[name] = exc
        child = await ctx.start_child("workflow:echo", {"x": 2}, run_id="my-child")
        return {"child": await child.result()}

    async with rt:
        unrelated = (await rt.start("workflow:echo", {"x": 1}, owner=P)).run.id
        foreign = (await rt.start("workflow:echo", {"x": 1}, owner=Q, run_id="foreign")).run.id
        with trio.fail_after(10):
            run = (
                await rt.start(
                    "workflow:parent", {"unrelated": unrelated, "foreign": foreign}, owner=P
                )
            ).run
            done = await rt.wait(run.id)
        assert done.status == "completed" and done.completion is not None
        assert done.completion.result == {"child": {"x": 2}}
        assert isinstance(outcomes["unrelated"], perdure.IdempotencyConflict), outcomes
        assert isinstance(outcomes["other owner"], perdure.IdempotencyConflict), outcomes
        for name in ("own id", "root id"):
            assert type(outcomes[name]) is perdure.InvalidInput, outcomes
        for run_id in (unrelated, foreign):
            assert rt.get(run_id).parent_id is None
        assert [r.id for r in rt.list(parent_id=run.id).runs] == ["my-child"]


async def test_an_idempotency_key_and_a_run_id_naming_different_runs_conflict(
    data_dir: Path,
) -> None:
    """``start(idempotency_key=K, run_id="b")`` where K names run "a" used to return "a"
    silently; it is IdempotencyConflict and "b" is not created. The same key with the
    same id (or with no id) is still an idempotent duplicate."""
    async with make(data_dir) as rt:
        a = await rt.start("workflow:echo", {"n": 1}, owner=P, idempotency_key="K", run_id="a")
        assert not a.duplicate
        c = await rt.start("workflow:echo", {"n": 1}, owner=P, run_id="c")
        with pytest.raises(perdure.IdempotencyConflict):
            await rt.start("workflow:echo", {"n": 1}, owner=P, idempotency_key="K", run_id="b")
        with pytest.raises(perdure.IdempotencyConflict):  # a taken id with another key
            await rt.start("workflow:echo", {"n": 1}, owner=P, idempotency_key="K2", run_id="a")
        with pytest.raises(perdure.IdempotencyConflict):  # key K names a, not c
            await rt.start("workflow:echo", {"n": 1}, owner=P, idempotency_key="K", run_id="c")
        with pytest.raises(perdure.RunNotFound):
            rt.get("b")
        assert rt.get(c.run.id).idempotency_key is None
        again = await rt.start("workflow:echo", {"n": 1}, owner=P, idempotency_key="K", run_id="a")
        by_key = await rt.start("workflow:echo", {"n": 1}, owner=P, idempotency_key="K")
        assert again.duplicate and by_key.duplicate and again.run.id == by_key.run.id == "a"
        # The same key under another owner is another run.
        other = await rt.start("workflow:echo", {"n": 1}, owner=Q, idempotency_key="K")
        assert not other.duplicate and other.run.id != "a"
        assert len(rt.list(limit=100).runs) == 3


# -- virtual time -----------------------------------------------------------------------------

_LONG_VIRTUAL_SLEEP = r"""
import sys, trio, trio.testing
import perdure
from perdure.testing import pin_wall_time

epoch, seconds = float(sys.argv[1]), float(sys.argv[2])


async def main():
    pin_wall_time(epoch)  # the wall time at which virtual time starts: reproducible floats
    rt = perdure.Runtime(None, durability="memory")

    @rt.workflow("long")
    async def long(ctx, inp):
        await ctx.sleep(seconds)
        try:
            await ctx.wait_for_event("never", timeout=seconds)
        except perdure.WaitExpired:
            pass
        return ctx.now()

    async with rt:
        run = (await rt.start("workflow:long", None, owner=perdure.Project("p"))).run
        print((await rt.wait(run.id)).status, flush=True)


trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
"""


def test_long_virtual_sleeps_end() -> None:
    """``ctx.sleep(12 years)`` then a 12-year wait timeout under virtual time end (the
    runtime promises that every timer runs in virtual time). With this (2026) start of
    virtual time, the timer service busy-loops for ever: 100% CPU, no progress (the
    sleep and the wait each hang alone). In a subprocess: a hang inside a trio run under
    a MockClock cannot be interrupted from inside it."""
    import subprocess
    import sys

    try:
        proc = subprocess.run(
            [sys.executable, "-c", _LONG_VIRTUAL_SLEEP, "1796079708.2741747", "378285134.44468874"],
            capture_output=True,
            text=True,
            timeout=5,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("a 12-year virtual sleep never ended")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "completed"
