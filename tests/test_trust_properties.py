"""Property tests (hypothesis) for R30: hostile values at every public call that takes one.

For each call (start input, the payload of every resume signal and of ``publish``, an
emitted CUSTOM value, a step's result, a run's result, ``report_usage`` counts and model
labels, cancel reasons, sleep durations and wait timeouts) hypothesis generates values
built to break a store: dicts keyed by None, tuples, huge ints or lone surrogates, ints
past the 64-bit range, NaN and infinities, bytes, nested lists, a list containing
itself, 100k levels of nesting. Each value must either be refused with a typed
:class:`perdure.PerdureError` (and store nothing), or be accepted and read back equal,
modulo the documented conversions (``_boundary.py``: bytes become base64 text, tuples
lists; NaN reads as ``null`` on the JSON wire). Acceptance is predicted by an oracle
written here, independently of the runtime. Afterwards every reader still works: get,
list, events, wait, and a reopen that replays the runs still waiting (their replayed
values must equal the first ones).

One runtime per property, many runs in it; hypothesis runs in a worker thread and each
example crosses into trio (``trio.from_thread.run``). Examples are derandomized (the
same on every run) and kept to 60 per property.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio
from helpers.checks import waiting
from helpers.trust import (
    assert_readers_work,
    check_store_as_wire,
    cli_reads,
    same,
    wire_form,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import perdure
from perdure import ApprovalDecision, ExternalEvent, InputResponse, ToolResult
from perdure.testing import pin_wall_time

P = perdure.Project("p1")
GO = ExternalEvent(name="go")
MAX_DURATION = 100 * 365.25 * 86400.0
EPOCH = 1796031986.3069427
"""Where virtual time starts in the property that sleeps (a wall time of 2026)."""
SETTINGS = settings(
    max_examples=60,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)

# -- hostile values ---------------------------------------------------------------------------

_TEXT = st.text(max_size=8) | st.text(
    st.characters(categories=["Cs", "Ll", "Lu", "Nd", "Zs", "So", "Cc"]), max_size=8
)
_INTS = st.integers(min_value=-(2**70), max_value=2**70) | st.sampled_from(
    [2**53, 2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1, -(2**64)]
)
_LEAVES = st.none() | st.booleans() | _INTS | st.floats() | _TEXT | st.binary(max_size=8)
_KEYS = (
    _TEXT
    | _INTS
    | st.none()
    | st.tuples(st.integers(0, 3))
    | st.floats()
    | st.booleans()
    | st.binary(max_size=4)
)


def _json_key(key: Any) -> Any:
    try:
        return next(iter(msgspec.json.decode(msgspec.json.encode({key: 0}))))
    except Exception:
        return ("unencodable", repr(key))


def _distinct_on_the_wire(value: dict[Any, Any]) -> bool:
    """Keys that stay distinct once JSON makes them strings ({1: x, "1": y} collide:
    tested apart, test_trust_values.test_keys_that_collide_on_the_json_wire_are_refused)."""
    keys = [_json_key(k) for k in value]
    return len(set(map(repr, keys))) == len(keys)


def _self_referencing() -> list[Any]:
    value: list[Any] = []
    value.append([1, value])
    return value


def _nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


HOSTILE = st.recursive(
    _LEAVES,
    lambda children: (
        st.lists(children, max_size=4)
        | st.tuples(children, children)
        | st.dictionaries(_KEYS, children, max_size=4).filter(_distinct_on_the_wire)
    ),
    max_leaves=12,
) | st.sampled_from(["self", "deep"]).map(
    lambda kind: _self_referencing() if kind == "self" else _nested(100_000)
)


# -- the oracle -------------------------------------------------------------------------------


def storable(
    value: Any, depth: int = 0, seen: frozenset[int] = frozenset(), *, wire_keys: bool = False
) -> bool:
    """Whether perdure must accept ``value`` (R30), decided without msgspec: plain data
    msgpack and JSON both carry, ints in [-2**63, 2**64), text without lone surrogates,
    dict keys that are text, numbers (not bool) or bytes, not self-referencing, nesting
    well below the interpreter's recursion limit. ``wire_keys``: the value is stored as
    its JSON decodes (an emitted event), so any int key is fine: it becomes a string."""
    if depth > 200:
        return False
    if value is None or isinstance(value, bool | float | bytes):
        return True
    if isinstance(value, int):
        return -(2**63) <= value < 2**64
    if isinstance(value, str):
        return _valid_text(value)
    if isinstance(value, list | tuple | dict):
        if id(value) in seen:
            return False
        inner = seen | {id(value)}
        if isinstance(value, dict):
            return all(
                _storable_key(k, wire_keys) and storable(v, depth + 1, inner, wire_keys=wire_keys)
                for k, v in value.items()
            )
        return all(storable(v, depth + 1, inner, wire_keys=wire_keys) for v in value)
    return False


def _storable_key(key: Any, wire_keys: bool) -> bool:
    if isinstance(key, bool) or key is None or isinstance(key, tuple):
        return False
    if isinstance(key, int):
        return wire_keys or -(2**63) <= key < 2**64
    if isinstance(key, str):
        return _valid_text(key)
    return isinstance(key, float | bytes)


def _valid_text(text: str) -> bool:
    return not any(0xD800 <= ord(c) <= 0xDFFF for c in text)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def plain_form(value: Any) -> Any:
    """An accepted input, payload or result as stored: bytes are base64 text (keys too),
    tuples are lists (msgspec's builtins form, documented in _boundary.py)."""
    if isinstance(value, bytes):
        return _b64(value)
    if isinstance(value, list | tuple):
        return [plain_form(v) for v in value]
    if isinstance(value, dict):
        return {(_b64(k) if isinstance(k, bytes) else k): plain_form(v) for k, v in value.items()}
    return value


def msgpack_form(value: Any) -> Any:
    """An accepted step result or signal payload as stored and read back (msgpack
    builtins): tuples are lists, bytes stay bytes (base64 only on the JSON wire)."""
    if isinstance(value, list | tuple):
        return [msgpack_form(v) for v in value]
    if isinstance(value, dict):
        return {k: msgpack_form(v) for k, v in value.items()}
    return value


# -- running a property against one runtime ---------------------------------------------------


def run_property(
    path: Path,
    define: Callable[[perdure.Runtime], None],
    strategy: Any,
    check: Callable[[perdure.Runtime, Any], Awaitable[None]],
    after_reopen: Callable[[perdure.Runtime], Awaitable[None]] | None = None,
    *,
    virtual: bool = False,
) -> None:
    """Open a runtime, run ``check(rt, value)`` for each generated value, check every
    reader, reopen the store (``after_reopen`` may drive the replays), check again.

    ``virtual``: each example gets its own trio run under a fresh MockClock (and so its
    own opening of the store), so that the years slept by one example do not push the
    next one's clock towards year 9999."""

    def build() -> perdure.Runtime:
        rt = perdure.Runtime(path, durability="process")
        define(rt)
        return rt

    checked: list[Any] = []

    async def counted(rt: perdure.Runtime, value: Any) -> None:
        checked.append(value)
        await check(rt, value)

    async def readers() -> None:
        async with build() as rt:
            if after_reopen is not None:
                await after_reopen(rt)
            await assert_readers_work(rt)

    if virtual:

        @SETTINGS
        @given(strategy)
        def each(value: Any) -> None:
            async def one() -> None:
                # A pinned start of virtual time: the same floats on every run (see
                # test_trust_hangs.test_long_virtual_sleeps_end for why that matters).
                pin_wall_time(EPOCH)
                async with build() as rt:
                    await counted(rt, value)

            trio.run(one, clock=trio.testing.MockClock(autojump_threshold=0))

        async def pinned_readers() -> None:
            pin_wall_time(EPOCH)
            await readers()

        each()
        trio.run(pinned_readers, clock=trio.testing.MockClock(autojump_threshold=0))
    else:

        async def main() -> None:
            async with build() as rt:

                def examples() -> None:
                    @SETTINGS
                    @given(strategy)
                    def prop(value: Any) -> None:
                        trio.from_thread.run(counted, rt, value)

                    prop()

                await trio.to_thread.run_sync(examples)
                await assert_readers_work(rt)
            await readers()

        trio.run(main)
    assert len(checked) >= SETTINGS.max_examples, f"only {len(checked)} examples ran"


def count_runs(rt: perdure.Runtime) -> int:
    return len(rt.list(limit=1000).runs)


# -- the properties ---------------------------------------------------------------------------


def test_start_inputs(data_dir: Path) -> None:
    """``rt.start(target, value)``: SerializationError for what the oracle refuses (nothing
    stored), else ``rt.get().input`` and what the body sees equal the value as stored,
    also when the body is replayed after a reopen; the CLI reads the accepted runs."""
    seen: dict[str, list[Any]] = {}
    accepted: dict[str, Any] = {}

    def define(rt: perdure.Runtime) -> None:
        @rt.workflow("take")
        async def take(ctx: perdure.RunContext, inp: Any) -> None:
            seen.setdefault(ctx.run_id, []).append(inp)
            await ctx.wait_for_event("go")

    async def check(rt: perdure.Runtime, value: Any) -> None:
        before = count_runs(rt)
        try:
            run_id = (await rt.start("workflow:take", value, owner=P)).run.id
        except perdure.PerdureError as exc:
            assert not storable(value), f"refused a storable value: {exc}"
            assert isinstance(exc, perdure.SerializationError), exc
            assert count_runs(rt) == before
            return
        assert storable(value), f"accepted {value!r:.200}"
        expected = plain_form(value)
        await waiting(rt, run_id)
        assert same(rt.get(run_id).input, expected)
        assert same(seen[run_id][0], expected)
        msgspec.json.encode(wire_form(rt.get(run_id)))
        accepted[run_id] = expected

    async def after_reopen(rt: perdure.Runtime) -> None:
        assert sorted(await rt.publish(GO, owner=P)) == sorted(accepted)
        for run_id, expected in accepted.items():
            assert (await rt.wait(run_id)).status == "completed"
            assert len(seen[run_id]) == 2 and same(seen[run_id][1], expected)

    run_property(data_dir, define, HOSTILE, check, after_reopen)
    assert accepted, "no value was ever accepted: the strategy is too hostile"
    cli_reads(data_dir, list(accepted)[:3])


SIGNAL_KINDS = ("tool", "approval", "input", "event", "publish")


def test_signal_and_publish_payloads(data_dir: Path) -> None:
    """The payload of each signal type and of ``publish``: InvalidSignal for what the
    oracle refuses (the run keeps waiting and takes a good signal), else the body
    receives the payload as stored (msgpack: bytes stay bytes, unlike an input's)."""
    received: dict[str, Any] = {}

    def define(rt: perdure.Runtime) -> None:
        @rt.workflow("one_wait")
        async def one_wait(ctx: perdure.RunContext, kind: str) -> None:
            if kind == "tool":
                received[ctx.run_id] = await ctx.wait_for_tool_result("t")
            elif kind == "approval":
                received[ctx.run_id] = (await ctx.wait_for_approval("a")).response
            elif kind == "input":
                received[ctx.run_id] = await ctx.wait_for_input("i")
            else:
                received[ctx.run_id] = await ctx.wait_for_event(f"e-{ctx.run_id}")

    def signal(kind: str, run_id: str, value: Any) -> Any:
        if kind == "tool":
            return ToolResult(tool_call_id="t", content=value)
        if kind == "approval":
            return ApprovalDecision(key="a", approved=True, response=value)
        if kind == "input":
            return InputResponse(key="i", value=value)
        return ExternalEvent(name=f"e-{run_id}", payload=value)

    async def deliver(rt: perdure.Runtime, kind: str, run_id: str, value: Any) -> None:
        sent = signal(kind, run_id, value)
        if kind == "publish":
            assert await rt.publish(sent, owner=P) == [run_id]
        else:
            await rt.resume(run_id, sent)

    async def check(rt: perdure.Runtime, example: tuple[str, Any]) -> None:
        kind, value = example
        run_id = (await rt.start("workflow:one_wait", kind, owner=P)).run.id
        await waiting(rt, run_id)
        try:
            with trio.fail_after(10):
                await deliver(rt, kind, run_id, value)
        except perdure.PerdureError as exc:
            assert not storable(value), f"refused a storable payload: {exc}"
            assert isinstance(exc, perdure.InvalidSignal), exc
            assert rt.get(run_id).status == "waiting"
            await deliver(rt, kind, run_id, "fine")
            assert (await rt.wait(run_id)).status == "completed"
            assert received[run_id] == "fine"
            return
        assert storable(value), f"accepted {value!r:.200}"
        assert (await rt.wait(run_id)).status == "completed"
        assert same(received[run_id], msgpack_form(value))

    run_property(data_dir, define, st.tuples(st.sampled_from(SIGNAL_KINDS), HOSTILE), check)


def test_emitted_custom_values(data_dir: Path) -> None:
    """``ctx.emit(CustomEvent(value=v))``: InvalidInput for what the oracle refuses
    (nothing logged), else the logged event carries the value as the JSON wire says it
    (NaN as null, bytes as base64, keys as strings: an event is stored as its wire JSON
    decodes, so an int key beyond 64 bits is fine, as a string)."""
    values: dict[int, Any] = {}
    outcome: dict[str, Any] = {}

    def define(rt: perdure.Runtime) -> None:
        @rt.workflow("emit")
        async def emit(ctx: perdure.RunContext, index: int) -> None:
            try:
                await ctx.emit(perdure.agui.CustomEvent(name="v", value=values[index]))
                outcome[ctx.run_id] = None
            except perdure.PerdureError as exc:
                outcome[ctx.run_id] = exc

    async def check(rt: perdure.Runtime, value: Any) -> None:
        index = len(values)
        values[index] = value
        run_id = (await rt.start("workflow:emit", index, owner=P)).run.id
        assert (await rt.wait(run_id)).status == "completed"
        log = [e.to_wire() async for e in rt.events(run_id, follow=False)]
        custom = [e for e in log if e["type"] == "CUSTOM"]
        if outcome[run_id] is not None:
            assert not storable(value, wire_keys=True), f"refused: {outcome[run_id]}"
            assert isinstance(outcome[run_id], perdure.InvalidInput), outcome[run_id]
            assert custom == []
            return
        assert storable(value, wire_keys=True), f"accepted {value!r:.200}"
        assert custom[0]["value"] == wire_form(plain_form(value))

    run_property(data_dir, define, HOSTILE, check)


def test_step_results(data_dir: Path) -> None:
    """A step returning ``v``: SerializationError in the body for what the oracle refuses
    (the body goes on), else the body gets ``v`` as msgpack keeps it; after a reopen the
    replayed step returns exactly the same value without running again."""
    values: dict[int, Any] = {}
    got: dict[str, list[Any]] = {}
    calls: dict[str, int] = {}

    def define(rt: perdure.Runtime) -> None:
        @rt.workflow("step")
        async def step(ctx: perdure.RunContext, index: int) -> None:
            def fn() -> Any:
                calls[ctx.run_id] = calls.get(ctx.run_id, 0) + 1
                return values[index]

            try:
                result = await ctx.step("hostile", fn, inline=True)
            except perdure.PerdureError as exc:
                result = exc
            got.setdefault(ctx.run_id, []).append(result)
            await ctx.wait_for_event("go")

    async def check(rt: perdure.Runtime, value: Any) -> None:
        index = len(values)
        values[index] = value
        run_id = (await rt.start("workflow:step", index, owner=P)).run.id
        await waiting(rt, run_id)
        result = got[run_id][0]
        if isinstance(result, perdure.PerdureError):
            assert not storable(value), f"refused a storable result: {result}"
            assert isinstance(result, perdure.SerializationError), result
            return
        assert storable(value), f"accepted {value!r:.200}"
        assert same(result, msgpack_form(value))

    async def after_reopen(rt: perdure.Runtime) -> None:
        await rt.publish(GO, owner=P)
        for run_id, results in got.items():
            assert (await rt.wait(run_id)).status == "completed"
            first, again = results
            if isinstance(first, perdure.PerdureError):
                assert type(again) is type(first) and again.message == first.message
            else:
                assert same(again, first)
            assert calls[run_id] == 1, "a recorded step ran again on replay"

    run_property(data_dir, define, HOSTILE, check, after_reopen)


@pytest.mark.no_log_check  # results whose wire form differs are checked by check_store_as_wire
def test_run_results(data_dir: Path) -> None:
    """A body returning ``v``: the run fails with SERIALIZATION_ERROR for what the oracle
    refuses, else it completes with ``v`` as stored, and RUN_FINISHED carries it as the
    JSON wire says it."""
    values: dict[int, Any] = {}

    def define(rt: perdure.Runtime) -> None:
        @rt.workflow("result")
        async def result(ctx: perdure.RunContext, index: int) -> Any:
            return values[index]

    async def check(rt: perdure.Runtime, value: Any) -> None:
        index = len(values)
        values[index] = value
        run_id = (await rt.start("workflow:result", index, owner=P)).run.id
        done = await rt.wait(run_id)
        assert done.completion is not None
        if done.status == "failed":
            assert not storable(value), f"refused a storable result: {done.completion.error}"
            assert done.completion.error is not None
            assert done.completion.error.code == "SERIALIZATION_ERROR"
            return
        assert storable(value), f"accepted {value!r:.200}"
        assert done.status == "completed"
        assert same(done.completion.result, plain_form(value))
        log = [e.to_wire() async for e in rt.events(run_id, follow=False)]
        assert log[-1].get("result") == wire_form(plain_form(value))

    run_property(data_dir, define, HOSTILE, check)
    check_store_as_wire(data_dir)
    cli_reads(data_dir, [])


_COUNTS = (
    _INTS | st.floats() | _TEXT | st.booleans() | st.none() | st.lists(st.integers(), max_size=2)
)
_LABELS = (
    _TEXT | st.none() | _INTS | st.text(min_size=250, max_size=300) | st.sampled_from(["", "a\0b"])
)


def test_usage_counts_and_model_labels(data_dir: Path) -> None:
    """``report_usage(input_tokens=v)``: accepted exactly for None and ints in
    [0, 2**53-1]; ``set_model(v)``: for None and 1-256 bytes of text without NUL. What is
    accepted is in the completion and on RUN_FINISHED; the rest is InvalidInput."""
    examples: dict[int, tuple[Any, Any]] = {}
    outcome: dict[str, list[Any]] = {}

    def define(rt: perdure.Runtime) -> None:
        @rt.workflow("usage")
        async def usage(ctx: perdure.RunContext, index: int) -> None:
            count, label = examples[index]
            results: list[Any] = []
            for act in (lambda: ctx.report_usage(input_tokens=count), lambda: ctx.set_model(label)):
                try:
                    act()
                    results.append(None)
                except perdure.PerdureError as exc:
                    results.append(exc)
            outcome[ctx.run_id] = results

    async def check(rt: perdure.Runtime, example: tuple[Any, Any]) -> None:
        count, label = example
        index = len(examples)
        examples[index] = example
        run_id = (await rt.start("workflow:usage", index, owner=P)).run.id
        done = await rt.wait(run_id)
        assert done.status == "completed" and done.completion is not None
        usage_error, model_error = outcome[run_id]
        count_ok = count is None or (type(count) is int and 0 <= count <= 2**53 - 1)
        label_ok = label is None or (
            isinstance(label, str)
            and _valid_text(label)
            and 1 <= len(label.encode()) <= 256
            and "\0" not in label
        )
        assert (usage_error is None) == count_ok, (count, usage_error)
        assert (model_error is None) == label_ok, (label, model_error)
        for error in (usage_error, model_error):
            assert error is None or isinstance(error, perdure.InvalidInput)
        log = [e.to_wire() async for e in rt.events(run_id, follow=False)]
        if count_ok:
            assert done.completion.usage == [perdure.TokenUsage(input_tokens=count)]
            assert log[-1]["usage"] == [{"inputTokens": count} if count is not None else {}]
        else:
            assert done.completion.usage == [] and "usage" not in log[-1]
        assert done.completion.model == (label if label_ok else None)

    run_property(data_dir, define, st.tuples(_COUNTS, _LABELS), check)


_REASONS = (
    _TEXT
    | st.none()
    | _INTS
    | st.binary(max_size=4)
    | st.text(min_size=900, max_size=1200)
    | st.sampled_from(["", "a\0b", "x" * 70_000])
)


def test_cancel_reasons(data_dir: Path) -> None:
    """``rt.cancel(id, reason=v)``: InvalidInput (and the run still waiting) unless ``v``
    is text of valid UTF-8 without NUL, at most 64 KiB; then the run is cancelled and
    the stored reason is ``v`` cut to 1000 characters."""

    def define(rt: perdure.Runtime) -> None:
        @rt.workflow("hold")
        async def hold(ctx: perdure.RunContext, inp: Any) -> None:
            await ctx.wait_for_event("never")

    async def check(rt: perdure.Runtime, reason: Any) -> None:
        run_id = (await rt.start("workflow:hold", None, owner=P)).run.id
        await waiting(rt, run_id)
        ok = (
            isinstance(reason, str)
            and _valid_text(reason)
            and len(reason.encode()) <= 64 * 1024
            and "\0" not in reason
        )
        try:
            with trio.fail_after(10):
                cancelled = await rt.cancel(run_id, reason=reason)
        except perdure.PerdureError as exc:
            assert not ok, f"refused {reason!r:.100}: {exc}"
            assert isinstance(exc, perdure.InvalidInput)
            assert rt.get(run_id).status == "waiting"
            await rt.cancel(run_id)
            return
        assert ok, f"accepted {reason!r:.100}"
        assert cancelled.run.status == "cancelled" and cancelled.run.cancel is not None
        assert cancelled.run.cancel.reason == reason[:1000]

    run_property(data_dir, define, _REASONS, check)


_DURATIONS = (
    st.floats()
    | st.floats(min_value=0, max_value=MAX_DURATION)
    | st.integers(min_value=-10, max_value=2**64)
    | st.booleans()
    | st.none()
    | _TEXT
    | st.sampled_from([0, 0.0, MAX_DURATION, MAX_DURATION * 1.01, 1e300, -0.0, 5e-324])
)


def test_sleep_durations_and_wait_timeouts(data_dir: Path) -> None:
    """``ctx.sleep(v)`` is accepted exactly for finite numbers (not bool) in
    [0, 100 years] and then lasts ``v`` on the runtime's clock; a wait ``timeout=v`` is
    accepted exactly for those > 0 and then expires (WaitExpired) after ``v``. The rest
    is InvalidInput (``timeout=None`` means no timeout: not tried). Runs under virtual
    time (a hundred years pass instantly)."""
    examples: dict[int, Any] = {}
    seen: dict[str, dict[str, Any]] = {}

    def define(rt: perdure.Runtime) -> None:
        @rt.workflow("timing")
        async def timing(ctx: perdure.RunContext, index: int) -> None:
            value = examples[index]
            record: dict[str, Any] = {}
            start = ctx.now()
            try:
                await ctx.sleep(value)
                record["slept"] = ctx.now() - start
            except perdure.PerdureError as exc:
                record["sleep error"] = exc
            start = ctx.now()
            try:
                if value is None:  # no timeout: a wait for ever, not a hostile value
                    raise perdure.InvalidInput("skipped")
                await ctx.wait_for_event("never", timeout=value)
                record["waited"] = "a signal?"
            except perdure.WaitExpired:
                record["expired"] = ctx.now() - start
            except perdure.PerdureError as exc:
                record["wait error"] = exc
            seen[ctx.run_id] = record

    async def check(rt: perdure.Runtime, value: Any) -> None:
        index = len(examples)
        examples[index] = value
        run_id = (await rt.start("workflow:timing", index, owner=P)).run.id
        done = await rt.wait(run_id)
        assert done.status == "completed", done.completion
        record = seen[run_id]
        number = not isinstance(value, bool) and isinstance(value, int | float)
        sleep_ok = number and math.isfinite(value) and 0 <= value <= MAX_DURATION
        wait_ok = sleep_ok and value > 0
        if sleep_ok:
            assert record.get("slept") == pytest.approx(float(value), rel=1e-9, abs=1e-3), record
        else:
            assert isinstance(record.get("sleep error"), perdure.InvalidInput), (value, record)
        if wait_ok:
            assert record.get("expired") == pytest.approx(float(value), rel=1e-9, abs=1e-3), record
        else:
            assert isinstance(record.get("wait error"), perdure.InvalidInput), (value, record)

    run_property(data_dir, define, _DURATIONS, check, virtual=True)
