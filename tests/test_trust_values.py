"""Nothing accepted that cannot be read back (R30; issue 9, "Stored, then unreadable").

Each hostile value of the issue is tried where it enters: completion metadata
(``report_usage``, ``set_model``, ``set_finish_reason``), resume signals, emitted events,
and plain values (inputs, signal payloads, publish payloads, step results, run results).
Each must be refused with a typed :class:`perdure.PerdureError`, store nothing, and leave
every reader working: ``get``, ``list``, ``events``, ``wait``, a replay after reopening
the store, the CLI in a subprocess and the HTTP API. The values that are accepted but
change on the way (``bytes`` become base64 text, NaN reads as ``null`` on the JSON wire)
are asserted as documented in ``perdure/runtime/_boundary.py``.

The events the runtime builds itself stay under the 240 KiB event cap (R19): a large
result is left out of ``RUN_FINISHED`` (the completion keeps it), a tool result too large
for its ``TOOL_CALL_RESULT`` and a prompt too large for an interrupt are refused.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio
from helpers.checks import dump_store, waiting
from helpers.trust import (
    assert_readers_work,
    check_store_as_wire,
    cli,
    cli_reads,
    http_reads,
    same,
)

import perdure
from perdure import ApprovalDecision, ExternalEvent, InputResponse, ToolResult
from perdure.agui import (
    MAX_EVENT_BYTES,
    CustomEvent,
    RunFinishedEvent,
    StateDeltaEvent,
    TextMessageStartEvent,
)
from perdure.testing import internals

P = perdure.Project("p1")
GO = ExternalEvent(name="go")


def self_referencing() -> list[Any]:
    value: list[Any] = []
    value.append(value)
    return value


def nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


HOSTILE: dict[str, Callable[[], Any]] = {
    "tuple key": lambda: {(1, 2): 3},
    "None key": lambda: {None: 1},
    "int 2**64": lambda: 2**64,
    "int -2**63-1": lambda: -(2**63) - 1,
    "int -2**64": lambda: {"n": -(2**64)},
    "lone surrogate": lambda: {"s": "\ud800"},
    "lone surrogate key": lambda: {"\udfff": 1},
    "100k nesting": lambda: nested(100_000),
    "self-referencing list": self_referencing,
}
"""Plain-looking values that msgpack or JSON cannot carry (issue 9's 23 wrong-type cases)."""


# -- the definitions (registered again on each reopened runtime) ----------------------------

OUTCOMES: dict[tuple[str, str], BaseException | None] = {}
"""(run id, case) -> what a hostile call inside the body raised (None: accepted)."""

META_CASES: list[tuple[str, Callable[[perdure.RunContext], Any]]] = [
    ("report_usage(input_tokens=12.0)", lambda ctx: ctx.report_usage(input_tokens=12.0)),
    ("report_usage(input_tokens=-5)", lambda ctx: ctx.report_usage(input_tokens=-5)),
    ("report_usage(input_tokens='7')", lambda ctx: ctx.report_usage(input_tokens="7")),
    ("report_usage(input_tokens=2**60)", lambda ctx: ctx.report_usage(input_tokens=2**60)),
    ("report_usage(output_tokens=True)", lambda ctx: ctx.report_usage(output_tokens=True)),
    ("report_usage(bogus=1)", lambda ctx: ctx.report_usage(bogus=1)),
    (
        "report_usage(TokenUsage(input_tokens=12.0))",  # a struct built without validation
        lambda ctx: ctx.report_usage(perdure.TokenUsage(input_tokens=12.0)),  # type: ignore[arg-type]
    ),
    (
        "report_usage(TokenUsage(model=5))",
        lambda ctx: ctx.report_usage(perdure.TokenUsage(model=5)),  # type: ignore[arg-type]
    ),
    ("set_model(5)", lambda ctx: ctx.set_model(5)),  # type: ignore[arg-type]
    ("set_model('m', provider=[1])", lambda ctx: ctx.set_model("m", provider=[1])),  # type: ignore[arg-type]
    ("set_model('\\ud800')", lambda ctx: ctx.set_model("\ud800")),
    ("set_model('m' * 10_000)", lambda ctx: ctx.set_model("m" * 10_000)),
    ("set_finish_reason(['stop'])", lambda ctx: ctx.set_finish_reason(["stop"])),  # type: ignore[arg-type]
]

EMIT_CASES: list[tuple[str, Callable[[perdure.RunContext], Any]]] = [
    ("CustomEvent(name=5)", lambda ctx: ctx.emit(CustomEvent(name=5, value=1))),  # type: ignore[arg-type]
    ("timestamp=2**60", lambda ctx: ctx.emit(CustomEvent(name="x", value=1, timestamp=2**60))),
    (
        "TextMessageStartEvent(role='bogus')",
        lambda ctx: ctx.emit(TextMessageStartEvent(message_id="m", role="bogus")),  # type: ignore[arg-type]
    ),
    ("StateDeltaEvent(delta='x')", lambda ctx: ctx.emit(StateDeltaEvent(delta="x"))),  # type: ignore[arg-type]
    ("custom(None)", lambda ctx: ctx.custom(None)),  # type: ignore[arg-type]
    ("custom('x', '\\ud800')", lambda ctx: ctx.custom("x", "\ud800")),
    ("custom('x', {(1, 2): 3})", lambda ctx: ctx.custom("x", {(1, 2): 3})),
    ("custom('x', 2**64)", lambda ctx: ctx.custom("x", 2**64)),
    ("custom('x', self-referencing)", lambda ctx: ctx.custom("x", self_referencing())),
    (
        "RunFinishedEvent",
        lambda ctx: ctx.emit(RunFinishedEvent(thread_id="t", run_id=ctx.run_id)),
    ),
]


def define(rt: perdure.Runtime) -> perdure.Runtime:
    """The workflows of this module on ``rt``."""

    @rt.workflow("meta")
    async def meta(ctx: perdure.RunContext, inp: Any) -> dict:
        for name, act in META_CASES:
            try:
                act(ctx)
                OUTCOMES[ctx.run_id, name] = None
            except Exception as exc:
                OUTCOMES[ctx.run_id, name] = exc
        ctx.report_usage(input_tokens=12, output_tokens=3)
        ctx.set_model("m-1", provider="prov")
        ctx.set_finish_reason("stop")
        await ctx.wait_for_event("go")
        return {"ok": True}

    @rt.workflow("emits")
    async def emits(ctx: perdure.RunContext, inp: Any) -> dict:
        for name, act in EMIT_CASES:
            try:
                await act(ctx)
                OUTCOMES[ctx.run_id, name] = None
            except Exception as exc:
                OUTCOMES[ctx.run_id, name] = exc
        await ctx.custom("fine", {"n": 1})
        await ctx.wait_for_event("go")
        await ctx.custom("after", None)
        return {"ok": True}

    @rt.workflow("waits")
    async def waits(ctx: perdure.RunContext, inp: Any) -> list:
        decision = await ctx.wait_for_approval("ok", approvers=["alice"])
        tool = await ctx.wait_for_tool_result("t1")
        value = await ctx.wait_for_input("i1")
        payload = await ctx.wait_for_event("e1")
        return [decision.approved, decision.response, tool, value, payload]

    @rt.workflow("one_wait")
    async def one_wait(ctx: perdure.RunContext, inp: dict) -> Any:
        kind = inp["kind"]
        if kind == "tool":
            return {"got": await ctx.wait_for_tool_result("t")}
        if kind == "approval":
            return {"got": (await ctx.wait_for_approval("a")).response}
        if kind == "input":
            return {"got": await ctx.wait_for_input("i")}
        return {"got": await ctx.wait_for_event("e")}

    @rt.workflow("step_result")
    async def step_result(ctx: perdure.RunContext, inp: dict) -> dict:
        value = HOSTILE[inp["case"]]()
        try:
            await ctx.step("hostile", lambda: value, inline=True)
            OUTCOMES[ctx.run_id, "step"] = None
        except Exception as exc:
            OUTCOMES[ctx.run_id, "step"] = exc
        return {"after": await ctx.step("fine", lambda: 1, inline=True)}

    @rt.workflow("run_result")
    async def run_result(ctx: perdure.RunContext, inp: dict) -> Any:
        return HOSTILE[inp["case"]]()

    @rt.workflow("echo")
    async def echo(ctx: perdure.RunContext, inp: Any) -> None:
        return None

    @rt.workflow("big_result")
    async def big_result(ctx: perdure.RunContext, inp: dict) -> dict:
        return {"blob": "x" * inp["size"]}

    return rt


def make(path: Path, **options: Any) -> perdure.Runtime:
    options.setdefault("durability", "process")
    return define(perdure.Runtime(path, **options))


# -- completion metadata ---------------------------------------------------------------------


async def test_completion_metadata_is_checked_as_stored(data_dir: Path) -> None:
    """report_usage/set_model/set_finish_reason with values the record cannot hold raise
    InvalidInput at the call; only the valid metadata ends up in the completion and on
    RUN_FINISHED, and every reader (replay after reopen, CLI, HTTP) still works."""
    async with make(data_dir) as rt:
        run_id = (await rt.start("workflow:meta", None, owner=P)).run.id
        await waiting(rt, run_id)
        for name, _ in META_CASES:
            assert isinstance(OUTCOMES[run_id, name], perdure.InvalidInput), name
        await assert_readers_work(rt)
    await http_reads(make(data_dir), [run_id])
    # Reopen: the waiting run is replayed (the refused calls are refused again).
    async with make(data_dir) as rt:
        await waiting(rt, run_id)
        assert await rt.publish(GO, owner=P) == [run_id]
        done = await rt.wait(run_id)
        assert done.status == "completed" and done.completion is not None
        assert done.completion.usage == [perdure.TokenUsage(input_tokens=12, output_tokens=3)]
        assert (done.completion.model, done.completion.provider) == ("m-1", "prov")
        assert done.completion.finish_reason == "stop"
        log = [e.to_wire() async for e in rt.events(run_id, follow=False)]
        assert log[-1]["usage"] == [{"inputTokens": 12, "outputTokens": 3}]
        await assert_readers_work(rt)
    cli_reads(data_dir, [run_id])


# -- resume signals ---------------------------------------------------------------------------

BAD_SIGNALS: list[Any] = [
    ApprovalDecision(key="ok", approved="yes", approver="alice"),  # type: ignore[arg-type]
    ApprovalDecision(key="ok", approved=True, approver=5),  # type: ignore[arg-type]
    ApprovalDecision(key="ok", approved=True, approver="alice", comment=["x"]),  # type: ignore[arg-type]
    ApprovalDecision(key="ok", approved=True, approver="\ud800"),
    ApprovalDecision(key="ok", approved=True, approver="alice", comment="c" * 20_000),
    ApprovalDecision(key=5, approved=True),  # type: ignore[arg-type]
    ToolResult(tool_call_id="t1", is_error="no"),  # type: ignore[arg-type]
    ToolResult(tool_call_id="t1", content=msgspec.Raw(b"\xc1")),
    ToolResult(tool_call_id="t1", content=msgspec.Raw(b"\x92\x01")),  # truncated array
    InputResponse(key="i1", responder=7),  # type: ignore[arg-type]
    InputResponse(key="i1", value=1, responder="r" * 1000),
    ExternalEvent(name="e1", payload=msgspec.Raw(b"\xc1")),
    ExternalEvent(name="e1", payload={(1, 2): 3}),
    ExternalEvent(name="e1", payload=2**64),
    ExternalEvent(name="e1", payload="\ud800"),
    ExternalEvent(name="\ud800"),
]


async def test_malformed_signals_are_refused_and_cannot_poison_a_run(data_dir: Path) -> None:
    """Each malformed signal of the issue is InvalidSignal before it reaches the run (it
    used to be accepted and then kill the run); nothing is stored; the run keeps waiting
    and completes with well-formed signals, after a reopen; readers all work."""
    async with make(data_dir) as rt:
        run_id = (await rt.start("workflow:waits", None, owner=P)).run.id
        await waiting(rt, run_id)
        before = dump_store(internals(rt).store)
        for signal in BAD_SIGNALS:
            with trio.fail_after(5), pytest.raises(perdure.InvalidSignal):
                await rt.resume(run_id, signal)
        for event in (ExternalEvent(name="e1", payload={None: 1}), ExternalEvent(name="\ud800")):
            with pytest.raises(perdure.InvalidSignal):
                await rt.publish(event, owner=P)
        assert dump_store(internals(rt).store) == before
        assert rt.get(run_id).status == "waiting"
        # A well-formed raw payload is decoded as it will be stored.
        await rt.resume(run_id, ApprovalDecision(key="ok", approved=True, approver="alice"))
        await rt.resume(
            run_id, ToolResult(tool_call_id="t1", content=msgspec.Raw(b"\x92\x01\xa1x"))
        )
        await assert_readers_work(rt)
    await http_reads(make(data_dir), [run_id])
    async with make(data_dir) as rt:
        await waiting(rt, run_id)
        await rt.resume(run_id, InputResponse(key="i1", value={"v": 1}))
        await rt.resume(run_id, ExternalEvent(name="e1", payload=[1.5, None]))
        done = await rt.wait(run_id)
        assert done.status == "completed" and done.completion is not None
        assert done.completion.result == [True, None, [1, "x"], {"v": 1}, [1.5, None]]
        await assert_readers_work(rt)
    cli_reads(data_dir, [run_id])


# -- emitted events ---------------------------------------------------------------------------


async def test_unloggable_events_are_refused_and_the_log_stays_readable(data_dir: Path) -> None:
    """Events whose wire form could not be read back (a non-string name, a timestamp past
    2**53, an unknown role, a delta that is not a patch list, ``custom(None)``: a CUSTOM
    event needs a name) are InvalidInput at ``emit`` and log nothing; the run goes on and
    its log renders everywhere, also after a reopen. (A replay of such a body is the
    subject of test_a_refused_call_is_refused_again_on_replay.)"""
    async with make(data_dir) as rt:
        run_id = (await rt.start("workflow:emits", None, owner=P)).run.id
        await waiting(rt, run_id)
        for name, _ in EMIT_CASES:
            assert isinstance(OUTCOMES[run_id, name], perdure.InvalidInput), (
                name,
                OUTCOMES[run_id, name],
            )
        log = [e.to_wire() async for e in rt.events(run_id, follow=False)]
        assert [e["name"] for e in log if e["type"] == "CUSTOM"] == ["fine"]
        await assert_readers_work(rt)
        await rt.publish(GO, owner=P)
        assert (await rt.wait(run_id)).status == "completed"
        log = [e.to_wire() async for e in rt.events(run_id, follow=False)]
        assert [e["name"] for e in log if e["type"] == "CUSTOM"] == [
            "fine",
            "perdure.event",
            "after",
        ]
    async with make(data_dir) as rt:
        await assert_readers_work(rt)
    await http_reads(make(data_dir), [run_id])
    cli_reads(data_dir, [run_id])


@pytest.mark.parametrize("call", ["emit", "emit-other-kind", "start_child"])
async def test_a_refused_call_is_refused_again_on_replay(data_dir: Path, call: str) -> None:
    """A deterministic body that catches a refused ``emit`` / ``start_child`` and goes on
    must replay exactly: the refused call is refused again (it stored nothing, so it must
    consume nothing), the log gets no duplicate and no second child is started.

    Today ``RunContext.emit`` and ``start_child`` call ``journal.take`` before the value
    is checked: on replay the refused call takes the entry recorded by the *next* call."""
    seen: list[str] = []
    parent = "parent-run"

    def build() -> perdure.Runtime:
        rt = make(data_dir)

        @rt.workflow("refused_then_fine")
        async def refused_then_fine(ctx: perdure.RunContext, inp: Any) -> None:
            try:
                if call == "emit":
                    await ctx.emit(CustomEvent(name=5, value=1))  # type: ignore[arg-type]
                elif call == "emit-other-kind":
                    await ctx.emit(StateDeltaEvent(delta="x"))  # type: ignore[arg-type]
                else:
                    await ctx.start_child("workflow:echo", None, run_id=ctx.run_id)
                seen.append("accepted")
            except perdure.InvalidInput:
                seen.append("refused")
            if call == "start_child":
                await ctx.start_child("workflow:echo", None)
            else:
                await ctx.custom("fine", 1)
            await ctx.wait_for_event("go")

        return rt

    async with build() as rt:
        await rt.start("workflow:refused_then_fine", None, owner=P, run_id=parent)
        await waiting(rt, parent)
    async with build() as rt:  # the signal re-activates the run: its body replays
        await rt.publish(GO, owner=P)
        done = await rt.wait(parent)
        log = [e.to_wire() async for e in rt.events(parent, follow=False)]
        children = rt.list(parent_id=parent).runs
    assert seen == ["refused", "refused"]
    assert done.status == "completed", done.completion
    assert [e["name"] for e in log if e["type"] == "CUSTOM"] == (
        ["perdure.event"] if call == "start_child" else ["fine", "perdure.event"]
    )
    assert len(children) == (1 if call == "start_child" else 0)


async def test_emit_of_a_non_event_is_invalid_input(data_dir: Path) -> None:
    """``ctx.emit({...})`` and ``ctx.emit(None)`` are InvalidInput, like any other value
    that is not an AG-UI event struct (issue 9: raw AttributeError)."""
    seen: list[BaseException] = []
    rt = make(data_dir)

    @rt.workflow("emit_junk")
    async def emit_junk(ctx: perdure.RunContext, inp: Any) -> None:
        for junk in ({"type": "CUSTOM", "name": "x", "value": 1}, None, "CUSTOM"):
            try:
                await ctx.emit(junk)  # type: ignore[arg-type]
            except Exception as exc:
                seen.append(exc)

    async with rt:
        run_id = (await rt.start("workflow:emit_junk", None, owner=P)).run.id
        assert (await rt.wait(run_id)).status == "completed"
    assert len(seen) == 3
    assert all(isinstance(exc, perdure.InvalidInput) for exc in seen), seen


async def test_a_non_event_emitted_inside_a_step_fails_the_step_not_the_log(
    data_dir: Path,
) -> None:
    """Inside a step, ``emit({...})`` / ``emit(None)`` are InvalidInput; the step fails and
    its STEP_STARTED/STEP_FINISHED stay paired (issue 9: STEP_FINISHED without its start)."""
    rt = make(data_dir)
    seen: list[BaseException] = []

    @rt.workflow("emit_in_step")
    async def emit_in_step(ctx: perdure.RunContext, inp: Any) -> str:
        for junk in ({"type": "CUSTOM"}, None):

            async def act(junk: Any = junk) -> None:
                await ctx.emit(junk)

            try:
                await ctx.step(f"junk-{junk!r}"[:50], act)
            except perdure.StepFailed as exc:
                seen.append(exc)
        return "done"

    async with rt:
        run_id = (await rt.start("workflow:emit_in_step", None, owner=P)).run.id
        assert (await rt.wait(run_id)).status == "completed"
        log = [e.to_wire() async for e in rt.events(run_id, follow=False)]
    assert len(seen) == 2
    assert [exc.detail["cause"] for exc in seen] == ["INVALID_INPUT", "INVALID_INPUT"]
    kinds = [e["type"] for e in log]
    assert kinds.count("STEP_STARTED") == kinds.count("STEP_FINISHED") == 2


# -- plain values: inputs, payloads, step results, run results -------------------------------


async def test_hostile_plain_values_are_typed_errors_everywhere(data_dir: Path) -> None:
    """Tuple or None keys, ints beyond the 64-bit range, lone surrogates, 100k nesting and
    self-referencing lists: as a start input (SerializationError, nothing stored), as any
    signal's payload or a publish payload (InvalidSignal, the run keeps waiting), as a step
    result (SerializationError in the body, which goes on) and as a run result (the run
    fails with SERIALIZATION_ERROR). Never a raw OverflowError, UnicodeEncodeError,
    RecursionError or ValueError."""
    async with make(data_dir) as rt:
        store = internals(rt).store
        kinds = ("tool", "approval", "input", "event")
        waiters = {
            kind: (await rt.start("workflow:one_wait", {"kind": kind}, owner=P)).run.id
            for kind in kinds
        }
        for run_id in waiters.values():
            await waiting(rt, run_id)
        before = dump_store(store)
        for build in HOSTILE.values():
            with pytest.raises(perdure.SerializationError):
                await rt.start("workflow:echo", build(), owner=P)
            for target in ("workflow:echo", "workflow:one_wait"):  # typed (dict) input too
                with pytest.raises(perdure.SerializationError):
                    await rt.start(target, {"wrapped": [build()]}, owner=P, run_id="never")
            signals = {
                "tool": ToolResult(tool_call_id="t", content=build()),
                "approval": ApprovalDecision(key="a", approved=True, response=build()),
                "input": InputResponse(key="i", value=build()),
                "event": ExternalEvent(name="e", payload=build()),
            }
            for kind, signal in signals.items():
                with trio.fail_after(5), pytest.raises(perdure.InvalidSignal):
                    await rt.resume(waiters[kind], signal)
            with pytest.raises(perdure.InvalidSignal):
                await rt.publish(ExternalEvent(name="e", payload=build()), owner=P)
        assert dump_store(store) == before, "a refused value stored something"
        for run_id in waiters.values():
            assert rt.get(run_id).status == "waiting"

        step_runs = {}
        result_runs = {}
        for case in HOSTILE:
            step_runs[case] = (
                await rt.start("workflow:step_result", {"case": case}, owner=P)
            ).run.id
            result_runs[case] = (
                await rt.start("workflow:run_result", {"case": case}, owner=P)
            ).run.id
        for case in HOSTILE:
            done = await rt.wait(step_runs[case])
            assert done.status == "completed", (case, done.completion)
            assert done.completion is not None and done.completion.result == {"after": 1}
            assert isinstance(OUTCOMES[step_runs[case], "step"], perdure.SerializationError), case
            failed = await rt.wait(result_runs[case])
            assert failed.status == "failed" and failed.completion is not None
            assert failed.completion.error is not None
            assert failed.completion.error.code == "SERIALIZATION_ERROR", (case, failed.completion)
        # The waiting runs still take a well-formed signal.
        await rt.resume(waiters["tool"], ToolResult(tool_call_id="t", content={"k": [1]}))
        await rt.resume(waiters["approval"], ApprovalDecision(key="a", approved=True, response=2))
        await rt.resume(waiters["input"], InputResponse(key="i", value="v"))
        assert await rt.publish(ExternalEvent(name="e", payload=None), owner=P) == [
            waiters["event"]
        ]
        results = [(await rt.wait(waiters[kind])).completion for kind in kinds]
        assert [c.result if c else None for c in results] == [
            {"got": {"k": [1]}},
            {"got": 2},
            {"got": "v"},
            {"got": None},
        ]
        await assert_readers_work(rt)
    async with make(data_dir) as rt:
        await assert_readers_work(rt)
    cli_reads(data_dir, [*step_runs.values(), *result_runs.values()][:4])


async def test_keys_that_collide_on_the_json_wire_are_refused(data_dir: Path) -> None:
    """R30: an accepted value reads back equal on every reader. ``{1: "a", "1": "b"}`` is
    stored as given, but JSON (events, HTTP, ``--json``) cannot say it: refuse it."""
    rt = make(data_dir)
    logged: list[Any] = []

    @rt.workflow("collide")
    async def collide(ctx: perdure.RunContext, inp: Any) -> None:
        try:
            await ctx.custom("v", {1: "a", "1": "b"})
        except perdure.InvalidInput:
            logged.append("refused")

    async with rt:
        with pytest.raises(perdure.PerdureError):
            await rt.start("workflow:echo", {1: "a", "1": "b"}, owner=P)
        run_id = (await rt.start("workflow:collide", None, owner=P)).run.id
        await rt.wait(run_id)
    assert logged == ["refused"]


# -- conversions that are documented, not refused ---------------------------------------------


async def test_bytes_become_base64_and_nan_reads_as_null_on_the_wire(data_dir: Path) -> None:
    """Documented in _boundary.py: bytes in an input are stored as base64 text (msgspec's
    builtins form); NaN and infinities are stored as given and read as ``null`` in JSON
    (events, ``perdure runs show --json``, the HTTP API); integer keys become strings."""
    rt = make(data_dir)

    @rt.workflow("floats")
    async def floats(ctx: perdure.RunContext, inp: Any) -> None:
        await ctx.custom("floats", {"nan": math.nan, "inf": math.inf, "ninf": -math.inf, 1: 2})
        await ctx.wait_for_event("go")

    value = {"b": b"\x00\xffab", "nan": math.nan, "inf": math.inf, "k": {1: "one"}}
    async with rt:
        run_id = (await rt.start("workflow:floats", value, owner=P)).run.id
        await waiting(rt, run_id)
        stored = rt.get(run_id).input
        assert stored["b"] == "AP9hYg==" and isinstance(stored["b"], str)
        assert math.isnan(stored["nan"]) and stored["inf"] == math.inf
        assert stored["k"] == {1: "one"}
        log = [e.to_wire() async for e in rt.events(run_id, follow=False)]
        custom = next(e for e in log if e["type"] == "CUSTOM")
        assert custom["value"] == {"nan": None, "inf": None, "ninf": None, "1": 2}
        await rt.publish(GO, owner=P)
        await rt.wait(run_id)
    from test_server_support import served

    async with served(make(data_dir)) as s:
        r = await s.client.get(f"/runs/{run_id}")
        assert r.status_code == 200
        assert r.json()["input"] == {"b": "AP9hYg==", "nan": None, "inf": None, "k": {"1": "one"}}
    shown = cli("runs", "show", run_id, "--dir", str(data_dir), "--json")
    assert shown.returncode == 0, shown.stderr
    assert msgspec.json.decode(shown.stdout)["input"] == {
        "b": "AP9hYg==",
        "nan": None,
        "inf": None,
        "k": {"1": "one"},
    }
    async with make(data_dir) as rt:
        again = rt.get(run_id).input
        assert same(again, stored)


# -- event cap on the events the runtime builds (R19) ------------------------------------------


@pytest.mark.no_log_check  # the omitted result is checked by check_store_as_wire below
async def test_runtime_built_events_stay_under_the_cap(data_dir: Path) -> None:
    """A 10 MB result (under the 16 MiB value limit) completes: RUN_FINISHED says
    ``resultOmitted`` and the completion (rt.get, HTTP) holds the result; a 20 MB result
    fails the run with SERIALIZATION_ERROR; a 10 MB tool result is InvalidSignal and the
    run keeps waiting; a 1 MB prompt is refused when the wait is declared."""
    rt = make(data_dir)
    prompt_errors: list[BaseException] = []

    @rt.workflow("long_prompt")
    async def long_prompt(ctx: perdure.RunContext, inp: Any) -> str:
        try:
            await ctx.wait_for_input("k", prompt="p" * 1_000_000)
        except perdure.InvalidInput as exc:
            prompt_errors.append(exc)
        return await ctx.wait_for_input("k2", prompt="p" * 16_000)

    ten_mb = 10 * 1024 * 1024
    async with rt:
        big = (await rt.start("workflow:big_result", {"size": ten_mb}, owner=P)).run.id
        huge = (await rt.start("workflow:big_result", {"size": 20 * 1024 * 1024}, owner=P)).run.id
        tool = (await rt.start("workflow:one_wait", {"kind": "tool"}, owner=P)).run.id
        prompt = (await rt.start("workflow:long_prompt", None, owner=P)).run.id
        done = await rt.wait(big)
        assert done.status == "completed" and done.completion is not None
        assert done.completion.result == {"blob": "x" * ten_mb}
        log = [e.to_wire() async for e in rt.events(big, follow=False)]
        finished = log[-1]
        assert finished["type"] == "RUN_FINISHED" and "result" not in finished
        assert finished["metadata"]["perdure"]["resultOmitted"] is True
        assert finished["metadata"]["perdure"]["resultBytes"] > ten_mb
        failed = await rt.wait(huge)
        assert failed.status == "failed" and failed.completion is not None
        assert failed.completion.error is not None
        assert failed.completion.error.code == "SERIALIZATION_ERROR"

        await waiting(rt, tool)
        with pytest.raises(perdure.InvalidSignal):
            await rt.resume(tool, ToolResult(tool_call_id="t", content="c" * ten_mb))
        with pytest.raises(perdure.InvalidSignal):
            await rt.resume(tool, ToolResult(tool_call_id="t", content={"c": "c" * 300_000}))
        assert rt.get(tool).status == "waiting"
        await rt.resume(tool, ToolResult(tool_call_id="t", content="c" * 200_000))
        assert (await rt.wait(tool)).status == "completed"

        rec = await waiting(rt, prompt)
        assert len(prompt_errors) == 1
        assert rec.waiting is not None and [w.key for w in rec.waiting.waits] == ["k2"]
        await rt.resume(prompt, InputResponse(key="k2", value="v"))
        await rt.wait(prompt)
        for run_id in (big, huge, tool, prompt):
            for event in [e async for e in rt.events(run_id, follow=False)]:
                assert len(msgspec.json.encode(event.to_wire())) <= MAX_EVENT_BYTES
        await assert_readers_work(rt)
    check_store_as_wire(data_dir)
