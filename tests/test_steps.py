"""Durable steps (R6, R8, R10): sync/async functions, retry and backoff, timeouts,
heartbeats, serialization, and the STEP_STARTED/STEP_FINISHED events of each attempt.

Replay across a reopen is in ``test_replay.py``; durable sleeps and run timeouts in
``test_timers.py``; passivation in ``test_passivation.py``.

Virtual time: tests taking ``autojump_clock`` run under ``trio.testing.MockClock``
(autojump), so seconds of backoff pass instantly. Tests of *sync* step functions run
on the real clock: a worker thread looks idle to the autojump clock, which would jump
straight past any step deadline while the thread is still working.
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio
from helpers.checks import assert_valid_log, wait_until, wire
from helpers.defs import new_rt

import perdure
from perdure import RetryPolicy
from perdure.agui import TextMessageContentEvent, TextMessageStartEvent
from perdure.testing import internals

P = perdure.Project("p1")


def step_events(log: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [
        (e["type"], e["stepName"]) for e in log if e["type"] in ("STEP_STARTED", "STEP_FINISHED")
    ]


def retry_events(log: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in log if e["type"] == "CUSTOM" and e["name"] == "perdure.step_retry"]


# -- sync and async functions ------------------------------------------------------------


class AsyncCallable:
    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, x: int) -> int:
        self.calls += 1
        await trio.sleep(0)
        return x * 10


async def test_sync_and_async_step_functions(data_dir: Path) -> None:
    trio_thread = threading.get_ident()
    where: dict[str, int] = {}
    obj = AsyncCallable()
    rt = new_rt(data_dir)

    def sync_fn(a: int, b: int) -> dict[str, int]:
        where["sync"] = threading.get_ident()
        return {"sum": a + b}

    async def async_fn(a: int) -> list[int]:
        where["async"] = threading.get_ident()
        await trio.sleep(0)
        return [a, a]

    @rt.workflow("mix")
    async def body(ctx: perdure.RunContext, inp: dict) -> dict:
        s = await ctx.step("sync", sync_fn, 2, 3)
        a = await ctx.step("async", async_fn, 7)
        c = await ctx.step("callable", obj, 4)
        return {"s": s, "a": a, "c": c}

    async with rt:
        started = await rt.start("workflow:mix", {}, owner=P)
        rec = await rt.wait(started.run.id)
        assert rec.status == "completed", rec.completion
        assert rec.completion is not None
        assert rec.completion.result == {"s": {"sum": 5}, "a": [7, 7], "c": 40}
        # A plain function runs in a worker thread, an async one on the trio thread.
        assert where["sync"] != trio_thread
        assert where["async"] == trio_thread
        assert obj.calls == 1
        journal = internals(rt).store.journal(started.run.id)
        assert [(e.kind, e.name) for e in journal] == [
            ("step", "sync"),
            ("step", "async"),
            ("step", "callable"),
        ]
        assert msgspec.msgpack.decode(journal[0].value) == {"sum": 5}
        assert all(e.error is None for e in journal)
        log = await assert_valid_log(rt, started.run.id)
        # One STEP_STARTED/STEP_FINISHED pair per step, in order.
        assert step_events(log) == [
            ("STEP_STARTED", "sync"),
            ("STEP_FINISHED", "sync"),
            ("STEP_STARTED", "async"),
            ("STEP_FINISHED", "async"),
            ("STEP_STARTED", "callable"),
            ("STEP_FINISHED", "callable"),
        ]


class Item(msgspec.Struct):
    sku: str
    qty: int


async def test_result_type_and_builtin_decoding(data_dir: Path) -> None:
    """The body gets the decoded stored value the first time too, so replay agrees."""
    rt = new_rt(data_dir)
    seen: dict[str, Any] = {}

    async def make_item() -> Item:
        return Item("a", 2)

    async def make_tuple() -> tuple[int, int]:
        return (1, 2)

    @rt.workflow("typed")
    async def body(ctx: perdure.RunContext, inp: dict) -> dict:
        seen["item"] = await ctx.step("item", make_item, result_type=Item)
        seen["raw"] = await ctx.step("raw", make_item)
        seen["tuple"] = await ctx.step("tuple", make_tuple)
        return {}

    async with rt:
        started = await rt.start("workflow:typed", {}, owner=P)
        rec = await rt.wait(started.run.id)
        assert rec.status == "completed"
    assert seen["item"] == Item("a", 2)
    assert seen["raw"] == {"sku": "a", "qty": 2}  # msgpack builtins without result_type
    assert seen["tuple"] == [1, 2]  # as replay would return it


async def test_step_misuse_is_refused(data_dir: Path) -> None:
    rt = new_rt(data_dir)
    errors: dict[str, str] = {}

    @rt.workflow("misuse")
    async def body(ctx: perdure.RunContext, inp: dict) -> dict:
        async def nested() -> int:
            try:
                await ctx.step("inner", lambda: 1)
            except perdure.PerdureError as exc:
                errors["nested"] = exc.message
            try:
                await ctx.sleep(1)
            except perdure.InvalidInput as exc:
                errors["sleep"] = exc.message
            return 1

        await ctx.step("outer", nested)
        for bad in ("", "x" * 201):
            try:
                await ctx.step(bad, lambda: 1)
            except perdure.PerdureError as exc:
                errors[f"name{len(bad)}"] = exc.message
        return {}

    async with rt:
        started = await rt.start("workflow:misuse", {}, owner=P)
        assert (await rt.wait(started.run.id)).status == "completed"
        assert "do not nest" in errors["nested"]
        assert "not inside a step" in errors["sleep"]
        assert set(errors) == {"nested", "sleep", "name0", "name201"}
        assert [(e.kind, e.name) for e in internals(rt).store.journal(started.run.id)] == [
            ("step", "outer")
        ]


# -- RetryPolicy unit tests -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("backoff", "expected"),
    [
        ("fixed", [2.0, 2.0, 2.0, 2.0, 2.0]),
        ("linear", [2.0, 4.0, 6.0, 8.0, 10.0]),
        ("exponential", [2.0, 4.0, 8.0, 16.0, 30.0]),
    ],
)
def test_retry_delay_shapes(backoff: str, expected: list[float]) -> None:
    policy = RetryPolicy(max_attempts=9, backoff=backoff, initial=2.0, maximum=30.0, jitter=0.0)  # type: ignore[arg-type]
    assert [policy.delay(n) for n in range(1, 6)] == expected


def test_retry_delay_maximum_cap() -> None:
    policy = RetryPolicy(backoff="exponential", initial=1.0, maximum=30.0, jitter=0.0)
    assert [policy.delay(n) for n in (1, 5, 6, 7, 50)] == [1.0, 16.0, 30.0, 30.0, 30.0]
    linear = RetryPolicy(backoff="linear", initial=7.0, maximum=20.0, jitter=0.0)
    assert [linear.delay(n) for n in (1, 2, 3, 10)] == [7.0, 14.0, 20.0, 20.0]
    fixed = RetryPolicy(backoff="fixed", initial=50.0, maximum=20.0, jitter=0.0)
    assert fixed.delay(1) == 20.0


def test_retry_defaults_match_the_contract() -> None:
    policy = RetryPolicy()
    assert (policy.initial, policy.maximum, policy.jitter) == (1.0, 30.0, 0.1)
    assert policy.max_attempts == 1  # a step is not retried unless asked
    assert not policy.should_retry(1, ValueError())


@pytest.mark.parametrize("backoff", ["fixed", "linear", "exponential"])
def test_retry_jitter_range(backoff: str) -> None:
    policy = RetryPolicy(backoff=backoff, initial=1.0, maximum=30.0, jitter=0.1)  # type: ignore[arg-type]
    rng = random.Random(1234)
    for attempt in (1, 3, 9):
        base = min(
            {"fixed": 1.0, "linear": 1.0 * attempt, "exponential": 2.0 ** (attempt - 1)}[backoff],
            30.0,
        )
        samples = [policy.delay(attempt, rng) for _ in range(2000)]
        assert all(base * 0.9 - 1e-9 <= s <= base * 1.1 + 1e-9 for s in samples), (
            min(samples),
            max(samples),
        )
        # It does spread, to both sides.
        assert min(samples) < base * 0.95 < base * 1.05 < max(samples)
    if backoff != "fixed":
        # The cap applies before the jitter (as documented): maximum * (1 ± jitter).
        capped = [policy.delay(40, rng) for _ in range(500)]
        assert all(27.0 - 1e-9 <= s <= 33.0 + 1e-9 for s in capped)
        assert min(capped) < 28.5 and max(capped) > 31.5
    # Same seed, same delays (deterministic simulations).
    assert policy.delay(2, random.Random(7)) == policy.delay(2, random.Random(7))


def test_retry_zero_initial_and_validation() -> None:
    assert RetryPolicy(initial=0.0).delay(3) == 0.0
    with pytest.raises(perdure.InvalidInput):
        RetryPolicy(max_attempts=0)
    with pytest.raises(perdure.InvalidInput):
        RetryPolicy(backoff="random")  # type: ignore[arg-type]
    with pytest.raises(perdure.InvalidInput):
        RetryPolicy(jitter=1.0)
    with pytest.raises(perdure.InvalidInput):
        RetryPolicy(jitter=-0.1)
    with pytest.raises(perdure.InvalidInput):
        RetryPolicy(initial=-1.0)
    with pytest.raises(perdure.InvalidInput):
        RetryPolicy(maximum=-1.0)


def test_should_retry() -> None:
    policy = RetryPolicy(max_attempts=3)
    assert policy.should_retry(1, ValueError())
    assert policy.should_retry(2, ValueError())
    assert not policy.should_retry(3, ValueError())
    picky = RetryPolicy(max_attempts=5, retry_if=lambda exc: isinstance(exc, ConnectionError))
    assert picky.should_retry(1, ConnectionError())
    assert not picky.should_retry(1, ValueError())
    # Serialization and non-determinism are never worth another attempt.
    always = RetryPolicy(max_attempts=5, retry_if=lambda exc: True)
    assert not always.should_retry(1, perdure.SerializationError("x"))
    assert not always.should_retry(1, perdure.NonDeterminismError("x"))


# -- retry and backoff in a run (virtual time) --------------------------------------------------


@pytest.mark.parametrize(
    ("backoff", "bases"),
    [
        ("fixed", [2.0, 2.0, 2.0, 2.0]),
        ("linear", [2.0, 4.0, 6.0, 8.0]),
        ("exponential", [2.0, 4.0, 8.0, 10.0]),  # capped at maximum=10
    ],
)
async def test_retry_backoff_delays_in_the_log(
    data_dir: Path, autojump_clock: Any, backoff: str, bases: list[float]
) -> None:
    rt = new_rt(data_dir)
    calls: list[float] = []
    policy = RetryPolicy(max_attempts=5, backoff=backoff, initial=2.0, maximum=10.0, jitter=0.1)  # type: ignore[arg-type]

    async def always_fails() -> None:
        calls.append(trio.current_time())
        raise ConnectionError(f"attempt {len(calls)}")

    @rt.workflow("flaky")
    async def body(ctx: perdure.RunContext, inp: dict) -> dict:
        try:
            await ctx.step("call", always_fails, retry=policy)
        except perdure.StepFailed as exc:
            return {"caught": exc.detail}
        return {"caught": None}

    async with rt:
        started = await rt.start("workflow:flaky", {}, owner=P)
        rec = await rt.wait(started.run.id)
        assert rec.status == "completed", rec.completion
        assert rec.completion is not None
        detail = rec.completion.result["caught"]
        assert detail["step"] == "call"
        assert detail["attempts"] == 5
        assert detail["cause"] == "STEP_EXCEPTION"
        assert len(calls) == 5

        log = await assert_valid_log(rt, started.run.id)
        retries = retry_events(log)
        assert [r["value"]["attempt"] for r in retries] == [1, 2, 3, 4]
        assert all(r["value"]["step"] == "call" for r in retries)
        assert "attempt 1" in retries[0]["value"]["error"]
        starts = [e["timestamp"] for e in log if e["type"] == "STEP_STARTED"]
        assert len(starts) == 5
        for i, (r, base) in enumerate(zip(retries, bases, strict=True)):
            due = r["value"]["due"]
            delay = due - r["timestamp"] / 1000
            assert base * 0.9 - 0.002 <= delay <= base * 1.1 + 0.002, (i, delay, base)
            # The next attempt waited for the due time, and not much longer.
            assert due * 1000 - 1 <= starts[i + 1] <= due * 1000 + 5
            # ... also on the trio clock the function was called again after the delay.
            gap = calls[i + 1] - calls[i]
            assert base * 0.9 - 0.002 <= gap <= base * 1.1 + 0.002
        # Each attempt is a STEP_STARTED/STEP_FINISHED pair, the retry marker after it.
        kinds = [
            e["type"] if e["type"] != "CUSTOM" else e["name"]
            for e in log
            if e["type"] in ("STEP_STARTED", "STEP_FINISHED", "CUSTOM")
        ]
        assert kinds == ["STEP_STARTED", "STEP_FINISHED", "perdure.step_retry"] * 4 + [
            "STEP_STARTED",
            "STEP_FINISHED",
        ]
        journal = internals(rt).store.journal(started.run.id)
        assert [e.kind for e in journal] == ["retry"] * 4 + ["step"]
        assert journal[-1].error is not None and journal[-1].error.code == "STEP_FAILED"
        assert internals(rt).store.timers() == []


async def test_retry_succeeds_on_a_later_attempt(data_dir: Path, autojump_clock: Any) -> None:
    rt = new_rt(data_dir)
    calls: list[int] = []

    async def third_time_lucky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise TimeoutError("flaky")
        return "ok"

    @rt.workflow("lucky")
    async def body(ctx: perdure.RunContext, inp: dict) -> dict:
        value = await ctx.step(
            "call",
            third_time_lucky,
            retry=RetryPolicy(max_attempts=5, backoff="fixed", initial=3.0),
        )
        return {"value": value}

    async with rt:
        t0 = trio.current_time()
        started = await rt.start("workflow:lucky", {}, owner=P)
        rec = await rt.wait(started.run.id)
        assert rec.status == "completed"
        assert rec.completion is not None and rec.completion.result == {"value": "ok"}
        assert len(calls) == 3
        assert 2 * 3.0 * 0.9 <= trio.current_time() - t0 <= 2 * 3.0 * 1.1 + 0.01
        journal = internals(rt).store.journal(started.run.id)
        assert [e.kind for e in journal] == ["retry", "retry", "step"]
        assert msgspec.msgpack.decode(journal[-1].value) == "ok"
        log = await assert_valid_log(rt, started.run.id)
        assert len(retry_events(log)) == 2


async def test_retry_if_false_stops_after_one_attempt(data_dir: Path, autojump_clock: Any) -> None:
    rt = new_rt(data_dir)
    calls: list[str] = []
    policy = RetryPolicy(
        max_attempts=10,
        backoff="fixed",
        initial=1.0,
        retry_if=lambda exc: isinstance(exc, TimeoutError),
    )

    async def permanent() -> None:
        calls.append("permanent")
        raise KeyError("no such thing")

    async def transient_then_permanent() -> None:
        calls.append("mixed")
        if calls.count("mixed") == 1:
            raise TimeoutError("try again")
        raise KeyError("give up")

    @rt.workflow("picky")
    async def body(ctx: perdure.RunContext, inp: dict) -> dict:
        out = {}
        for name, fn in (("permanent", permanent), ("mixed", transient_then_permanent)):
            try:
                await ctx.step(name, fn, retry=policy)
            except perdure.StepFailed as exc:
                out[name] = exc.detail["attempts"]
        return out

    async with rt:
        started = await rt.start("workflow:picky", {}, owner=P)
        rec = await rt.wait(started.run.id)
        assert rec.completion is not None
        assert rec.completion.result == {"permanent": 1, "mixed": 2}
        assert calls == ["permanent", "mixed", "mixed"]
        log = await assert_valid_log(rt, started.run.id)
        assert [r["value"]["step"] for r in retry_events(log)] == ["mixed"]


async def test_exhausted_step_unhandled_fails_the_run(data_dir: Path, autojump_clock: Any) -> None:
    rt = new_rt(data_dir)
    calls: list[int] = []

    async def broken() -> None:
        calls.append(1)
        raise RuntimeError("database down")

    @rt.workflow("broken")
    async def body(ctx: perdure.RunContext, inp: dict) -> dict:
        await ctx.step(
            "db", broken, retry=RetryPolicy(max_attempts=3, backoff="fixed", initial=1.0)
        )
        return {"unreachable": True}

    async with rt:
        started = await rt.start("workflow:broken", {}, owner=P)
        rec = await rt.wait(started.run.id)
        assert rec.status == "failed"
        assert rec.completion is not None and rec.completion.error is not None
        error = rec.completion.error
        assert error.code == "STEP_FAILED"
        assert error.detail["step"] == "db"
        assert error.detail["attempts"] == 3
        assert error.detail["cause"] == "STEP_EXCEPTION"
        assert "database down" in error.message
        assert len(calls) == 3
        log = await assert_valid_log(rt, started.run.id)
        assert log[-1]["type"] == "RUN_ERROR" and log[-1]["code"] == "STEP_FAILED"


# -- per-attempt timeout --------------------------------------------------------------------------


async def test_per_attempt_timeout_is_retried(data_dir: Path, autojump_clock: Any) -> None:
    rt = new_rt(data_dir)
    calls: list[float] = []

    async def slow() -> str:
        calls.append(trio.current_time())
        await trio.sleep(100)
        return "never"

    async def slow_then_fast() -> str:
        calls.append(trio.current_time())
        if len(calls) == 4:
            await trio.sleep(100)
        await trio.sleep(0.5)
        return "fast"

    policy = RetryPolicy(max_attempts=3, backoff="fixed", initial=2.0, jitter=0.0)

    @rt.workflow("timeouts")
    async def body(ctx: perdure.RunContext, inp: dict) -> dict:
        try:
            await ctx.step("slow", slow, retry=policy, timeout=1.0)
        except perdure.StepFailed as exc:
            failed = exc.detail
        value = await ctx.step("second", slow_then_fast, retry=policy, timeout=1.0)
        return {"failed": failed, "value": value}

    async with rt:
        started = await rt.start("workflow:timeouts", {}, owner=P)
        rec = await rt.wait(started.run.id)
        assert rec.status == "completed", rec.completion
        assert rec.completion is not None
        failed = rec.completion.result["failed"]
        assert failed["cause"] == "STEP_TIMEOUT"
        assert failed["attempts"] == 3
        assert rec.completion.result["value"] == "fast"
        t0 = calls[0]
        # Each attempt is cut after 1 s, then 2 s backoff.
        assert [round(t - t0, 3) for t in calls] == [0.0, 3.0, 6.0, 7.0, 10.0]
        log = await assert_valid_log(rt, started.run.id)
        retries = retry_events(log)
        assert [(r["value"]["step"], r["value"]["attempt"]) for r in retries] == [
            ("slow", 1),
            ("slow", 2),
            ("second", 1),
        ]
        assert all("timed out" in r["value"]["error"] for r in retries)


async def test_per_attempt_timeout_of_a_sync_function(data_dir: Path) -> None:
    """Real clock: a blocking function in a worker thread is abandoned at its timeout."""
    rt = new_rt(data_dir)
    release = threading.Event()
    returned = threading.Event()

    def blocking() -> str:
        release.wait(30)  # blocks until the test releases it
        returned.set()
        return "late"

    @rt.workflow("blocking")
    async def body(ctx: perdure.RunContext, inp: dict) -> dict:
        await ctx.step("block", blocking, timeout=0.1)
        return {}

    try:
        async with rt:
            started = await rt.start("workflow:blocking", {}, owner=P)
            rec = await rt.wait(started.run.id)
            # The run failed while the function was still blocked: abandoned, not waited for.
            assert not release.is_set() and not returned.is_set()
            assert rec.status == "failed"
            assert rec.completion is not None and rec.completion.error is not None
            assert rec.completion.error.code == "STEP_FAILED"
            assert rec.completion.error.detail["cause"] == "STEP_TIMEOUT"
            assert rec.completion.error.detail["attempts"] == 1
    finally:
        release.set()


# -- inactivity timeout and heartbeats -----------------------------------------------------------


async def test_inactivity_timeout_async(data_dir: Path, autojump_clock: Any) -> None:
    rt = new_rt(data_dir)
    beats: list[float] = []

    @rt.workflow("stream")
    async def body(ctx: perdure.RunContext, inp: dict) -> dict:
        async def streaming() -> int:
            for _ in range(20):  # 10 s in total, never silent for 1 s
                await trio.sleep(0.5)
                ctx.heartbeat()
                beats.append(trio.current_time())
            return len(beats)

        async def silent() -> int:
            await trio.sleep(5)
            return -1

        n = await ctx.step("streaming", streaming, inactivity_timeout=1.0)
        t0 = trio.current_time()
        try:
            await ctx.step("silent", silent, inactivity_timeout=1.0)
        except perdure.StepFailed as exc:
            return {"n": n, "silent": exc.detail, "cut_after": trio.current_time() - t0}
        return {"n": n, "silent": None}

    async with rt:
        started = await rt.start("workflow:stream", {}, owner=P)
        rec = await rt.wait(started.run.id)
        assert rec.completion is not None
        result = rec.completion.result
        assert result["n"] == 20
        assert result["silent"]["cause"] == "STEP_INACTIVE"
        assert result["silent"]["step"] == "silent"
        assert result["silent"]["attempts"] == 1
        assert 1.0 <= result["cut_after"] < 1.1
        await assert_valid_log(rt, started.run.id)


async def test_inactivity_timeout_sync_thread_heartbeats(data_dir: Path) -> None:
    """Real clock: ``ctx.heartbeat()`` from the step's worker thread keeps it alive."""
    rt = new_rt(data_dir)

    @rt.workflow("thread")
    async def body(ctx: perdure.RunContext, inp: dict) -> dict:
        def beating() -> int:
            for _ in range(12):  # 0.6 s in total, never silent for 0.3 s
                time.sleep(0.05)
                ctx.heartbeat()
            return 12

        def silent() -> int:
            time.sleep(0.5)
            return -1

        n = await ctx.step("beating", beating, inactivity_timeout=0.3)
        try:
            await ctx.step("silent", silent, inactivity_timeout=0.1)
        except perdure.StepFailed as exc:
            return {"n": n, "silent": exc.detail["cause"]}
        return {"n": n, "silent": None}

    async with rt:
        started = await rt.start("workflow:thread", {}, owner=P)
        rec = await rt.wait(started.run.id)
        assert rec.completion is not None
        assert rec.completion.result == {"n": 12, "silent": "STEP_INACTIVE"}


async def test_heartbeat_outside_a_step_is_harmless(data_dir: Path) -> None:
    rt = new_rt(data_dir)

    @rt.workflow("hb")
    async def body(ctx: perdure.RunContext, inp: dict) -> dict:
        ctx.heartbeat()
        return {"ok": True}

    async with rt:
        started = await rt.start("workflow:hb", {}, owner=P)
        assert (await rt.wait(started.run.id)).status == "completed"


# -- serialization (R10) -------------------------------------------------------------------------


async def test_unserializable_result_names_the_step(data_dir: Path) -> None:
    rt = new_rt(data_dir)
    calls: list[str] = []

    async def returns_object() -> object:
        calls.append("obj")
        return object()

    async def returns_a_function() -> Any:
        calls.append("fn")
        return {"f": lambda: 1}

    @rt.workflow("unhandled")
    async def unhandled(ctx: perdure.RunContext, inp: dict) -> dict:
        # Never retried, whatever the policy says.
        await ctx.step("make-object", returns_object, retry=RetryPolicy(max_attempts=5, initial=0))
        return {}

    @rt.workflow("handled")
    async def handled(ctx: perdure.RunContext, inp: dict) -> dict:
        try:
            await ctx.step("make-fn", returns_a_function)
        except perdure.SerializationError as exc:
            return {"step": exc.detail.get("step"), "message": exc.message, "code": exc.code}
        return {}

    async with rt:
        a = await rt.start("workflow:unhandled", {}, owner=P)
        rec = await rt.wait(a.run.id)
        assert rec.status == "failed"
        assert rec.completion is not None and rec.completion.error is not None
        assert rec.completion.error.code == "SERIALIZATION_ERROR"
        assert "make-object" in rec.completion.error.message
        assert rec.completion.error.detail["step"] == "make-object"
        assert calls == ["obj"]
        # Nothing unserializable was stored; the failure is recorded, no result.
        journal = internals(rt).store.journal(a.run.id)
        assert [(e.kind, e.name) for e in journal] == [("step", "make-object")]
        assert journal[0].error is not None and journal[0].error.code == "SERIALIZATION_ERROR"

        b = await rt.start("workflow:handled", {}, owner=P)
        rec = await rt.wait(b.run.id)
        assert rec.completion is not None
        assert rec.completion.result["step"] == "make-fn"
        assert rec.completion.result["code"] == "SERIALIZATION_ERROR"
        assert "make-fn" in rec.completion.result["message"]
        await assert_valid_log(rt, a.run.id)
        await assert_valid_log(rt, b.run.id)


# -- events of a step ----------------------------------------------------------------------------


async def test_flush_commits_step_events_early(data_dir: Path) -> None:
    rt = new_rt(data_dir)
    flushed = trio.Event()
    release = trio.Event()

    @rt.workflow("streamer")
    async def body(ctx: perdure.RunContext, inp: dict) -> dict:
        async def stream(flush: bool) -> str:
            mid = f"m-{flush}"
            await ctx.emit(
                TextMessageStartEvent(message_id=mid, role="assistant"),
                TextMessageContentEvent(message_id=mid, delta="hel"),
            )
            if flush:
                await ctx.flush()
            flushed.set()
            await release.wait()
            await ctx.emit(TextMessageContentEvent(message_id=mid, delta="lo"))
            return "hello"  # the message is left open: the step closes it

        return {"text": await ctx.step("llm", stream, inp["flush"])}

    async with rt:
        for flush in (True, False):
            flushed = trio.Event()
            release = trio.Event()
            started = await rt.start("workflow:streamer", {"flush": flush}, owner=P)
            await flushed.wait()
            mid_step = [e["type"] for e in await wire(rt, started.run.id)]
            if flush:
                assert mid_step == [
                    "RUN_STARTED",
                    "STEP_STARTED",
                    "TEXT_MESSAGE_START",
                    "TEXT_MESSAGE_CONTENT",
                ]
            else:
                assert mid_step == ["RUN_STARTED"]  # a step's events commit with its result
            release.set()
            rec = await rt.wait(started.run.id)
            assert rec.status == "completed"
            log = await assert_valid_log(rt, started.run.id)
            assert [e["type"] for e in log] == [
                "RUN_STARTED",
                "STEP_STARTED",
                "TEXT_MESSAGE_START",
                "TEXT_MESSAGE_CONTENT",
                "TEXT_MESSAGE_CONTENT",
                "TEXT_MESSAGE_END",
                "STEP_FINISHED",
                "RUN_FINISHED",
            ]
            assert [e.get("delta") for e in log if e["type"] == "TEXT_MESSAGE_CONTENT"] == [
                "hel",
                "lo",
            ]


async def test_failed_attempt_closes_what_it_opened(data_dir: Path, autojump_clock: Any) -> None:
    rt = new_rt(data_dir)
    attempts: list[int] = []

    @rt.workflow("half")
    async def body(ctx: perdure.RunContext, inp: dict) -> dict:
        async def half_message() -> str:
            attempts.append(1)
            mid = f"m{len(attempts)}"
            await ctx.emit(TextMessageStartEvent(message_id=mid, role="assistant"))
            if len(attempts) == 1:
                raise ConnectionError("stream dropped")
            return mid

        return {
            "mid": await ctx.step("llm", half_message, retry=RetryPolicy(max_attempts=2, initial=1))
        }

    async with rt:
        started = await rt.start("workflow:half", {}, owner=P)
        rec = await rt.wait(started.run.id)
        assert rec.status == "completed"
        log = await assert_valid_log(rt, started.run.id)
        types = [e["type"] if e["type"] != "CUSTOM" else e["name"] for e in log]
        assert types == [
            "RUN_STARTED",
            "STEP_STARTED",
            "TEXT_MESSAGE_START",
            "TEXT_MESSAGE_END",
            "STEP_FINISHED",
            "perdure.step_retry",
            "STEP_STARTED",
            "TEXT_MESSAGE_START",
            "TEXT_MESSAGE_END",
            "STEP_FINISHED",
            "RUN_FINISHED",
        ]


async def test_step_events_visible_to_a_live_follower(data_dir: Path) -> None:
    rt = new_rt(data_dir)

    @rt.workflow("three")
    async def body(ctx: perdure.RunContext, inp: dict) -> dict:
        for name in ("a", "b", "c"):
            await ctx.step(name, lambda n=name: n.upper())
        return {}

    async with rt:
        started = await rt.start("workflow:three", {}, owner=P)
        followed = [e.to_wire() async for e in rt.events(started.run.id, follow=True)]
        assert step_events(followed) == [
            (kind, name) for name in "abc" for kind in ("STEP_STARTED", "STEP_FINISHED")
        ]
        await wait_until(lambda: rt.get(started.run.id).terminal)
        assert followed == await wire(rt, started.run.id)
