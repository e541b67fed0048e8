"""Bad arguments to every public method (R5, §6): the right error, and nothing stored."""

from __future__ import annotations

from typing import Any

import pytest
from helpers.checks import dump_store, read_log
from helpers.defs import BODY_CALLS, Order

import perdure
from perdure.testing import internals

P = perdure.Project("p1")
C = perdure.Conversation("c1")
EXISTING = "existing-run"

E = perdure  # shorter error names in the table
BAD_OWNER = perdure.Project("a b")
LONG_OWNER = perdure.Project("o" * 257)


def start(target: Any, inp: Any = None, owner: Any = P, **kw: Any) -> Any:
    return lambda rt: rt.start(target, inp, owner=owner, **kw)


def call(method: str, *args: Any, **kw: Any) -> Any:
    return lambda rt: getattr(rt, method)(*args, **kw)


def events(*args: Any, **kw: Any) -> Any:
    async def drain(rt: perdure.Runtime) -> None:
        async for _ in rt.events(*args, **kw):
            pass

    return drain


CASES: list[Any] = [
    # -- start: target -------------------------------------------------------------------
    ("start-unknown-name", start("workflow:nope", {}), E.UnknownTarget),
    ("start-no-prefix", start("echo", {}), E.UnknownTarget),
    ("start-bad-prefix", start("bogus:echo", {}), E.UnknownTarget),
    ("start-kind-as-prefix", start("job:job", {}), E.UnknownTarget),
    ("start-wrong-prefix", start("task:echo", {}), E.UnknownTarget),
    ("start-upper-prefix", start("WORKFLOW:echo", {}), E.UnknownTarget),
    ("start-padded", start(" workflow:echo", {}), E.UnknownTarget),
    ("start-empty-name", start("workflow:", {}), E.UnknownTarget),
    ("start-empty-target", start("", {}), E.UnknownTarget),
    ("start-none-target", start(None, {}), E.UnknownTarget),
    ("start-int-target", start(42, {}), E.UnknownTarget),
    # -- start: owner --------------------------------------------------------------------
    ("start-workflow-by-conversation", start("workflow:echo", {}, owner=C), E.InvalidInput),
    ("start-job-by-conversation", start("task:job", {}, owner=C), E.InvalidInput),
    ("start-agent-by-project", start("agent:chat", {}, owner=P), E.InvalidInput),
    ("start-owner-str", start("workflow:echo", {}, owner="p1"), E.InvalidInput),
    ("start-owner-none", start("workflow:echo", {}, owner=None), E.InvalidInput),
    ("start-owner-dict", start("workflow:echo", {}, owner={"id": "p1"}), E.InvalidInput),
    ("start-owner-empty-id", start("workflow:echo", {}, owner=perdure.Project("")), E.InvalidInput),
    ("start-owner-bad-id", start("workflow:echo", {}, owner=BAD_OWNER), E.InvalidInput),
    ("start-owner-long-id", start("workflow:echo", {}, owner=LONG_OWNER), E.InvalidInput),
    ("start-owner-int-id", start("workflow:echo", {}, owner=perdure.Project(5)), E.InvalidInput),  # type: ignore[arg-type]
    # -- start: input --------------------------------------------------------------------
    ("start-struct-wrong-type", start("workflow:typed", {"sku": "a", "qty": "x"}), E.InvalidInput),
    ("start-struct-missing-field", start("workflow:typed", {"sku": "a"}), E.InvalidInput),
    ("start-struct-none", start("workflow:typed", None), E.InvalidInput),
    ("start-struct-list", start("workflow:typed", ["a", 1]), E.InvalidInput),
    ("start-struct-other-struct", start("workflow:typed", perdure.Project("x")), E.InvalidInput),
    ("start-dict-none", start("workflow:echo", None), E.InvalidInput),
    ("start-dict-list", start("workflow:echo", [1, 2]), E.InvalidInput),
    ("start-dict-str", start("workflow:echo", "text"), E.InvalidInput),
    ("start-agent-bad-messages", start("agent:chat", {"messages": "hi"}, owner=C), E.InvalidInput),
    ("start-agent-bad-message", start("agent:chat", {"messages": [1]}, owner=C), E.InvalidInput),
    ("start-unserializable", start("task:any", object()), E.SerializationError),
    ("start-unserializable-nested", start("task:any", {"x": [1, object()]}), E.SerializationError),
    ("start-unserializable-complex", start("task:any", {"z": 1j}), E.SerializationError),
    ("start-unserializable-in-dict", start("workflow:echo", {"x": object()}), E.SerializationError),
    # -- start: caller run id ------------------------------------------------------------
    ("start-run-id-empty", start("workflow:echo", {}, run_id=""), E.InvalidInput),
    ("start-run-id-space", start("workflow:echo", {}, run_id="a b"), E.InvalidInput),
    ("start-run-id-slash", start("workflow:echo", {}, run_id="a/b"), E.InvalidInput),
    ("start-run-id-nul", start("workflow:echo", {}, run_id="a\0b"), E.InvalidInput),
    ("start-run-id-unicode", start("workflow:echo", {}, run_id="ü"), E.InvalidInput),
    ("start-run-id-129", start("workflow:echo", {}, run_id="x" * 129), E.InvalidInput),
    ("start-run-id-int", start("workflow:echo", {}, run_id=12), E.InvalidInput),
    pytest.param(
        "start-run-id-newline",
        start("workflow:echo", {}, run_id="abc\n"),
        E.InvalidInput,
    ),
    pytest.param(
        "start-owner-id-newline",
        start("workflow:echo", {}, owner=perdure.Project("p1\n")),
        E.InvalidInput,
    ),
    # -- start: idempotency key ----------------------------------------------------------
    ("start-key-empty", start("workflow:echo", {}, idempotency_key=""), E.InvalidInput),
    ("start-key-int", start("workflow:echo", {}, idempotency_key=12), E.InvalidInput),
    ("start-key-nul", start("workflow:echo", {}, idempotency_key="a\0b"), E.InvalidInput),
    ("start-key-257", start("workflow:echo", {}, idempotency_key="x" * 257), E.InvalidInput),
    ("start-key-258-bytes", start("workflow:echo", {}, idempotency_key="é" * 129), E.InvalidInput),
    pytest.param(
        "start-key-surrogate",
        start("workflow:echo", {}, idempotency_key="\ud800"),
        E.InvalidInput,
    ),
    # -- start: conflicts with the existing run ------------------------------------------
    ("start-key-other-target", start("task:job", {}, idempotency_key="k"), E.IdempotencyConflict),
    ("start-run-id-other-target", start("task:job", {}, run_id=EXISTING), E.IdempotencyConflict),
    (
        "start-run-id-other-owner",
        start("workflow:echo", {}, owner=perdure.Project("p2"), run_id=EXISTING),
        E.IdempotencyConflict,
    ),
    # -- get -------------------------------------------------------------------------------
    ("get-unknown", call("get", "nope"), E.RunNotFound),
    ("get-nul", call("get", "a\0b"), E.InvalidInput),
    ("get-very-long", call("get", "x" * 600), E.InvalidInput),
    ("get-empty", call("get", ""), E.InvalidInput),
    ("get-none", call("get", None), E.InvalidInput),
    ("get-int", call("get", 5), E.InvalidInput),
    ("get-bytes", call("get", EXISTING.encode()), E.InvalidInput),
    ("get-surrogate", call("get", "\ud800"), E.InvalidInput),
    # -- list ------------------------------------------------------------------------------
    ("list-status-bogus", call("list", status="bogus"), E.InvalidInput),
    ("list-status-empty", call("list", status=[]), E.InvalidInput),
    ("list-status-mixed", call("list", status=["running", "bogus"]), E.InvalidInput),
    ("list-status-int", call("list", status=5), E.InvalidInput),
    ("list-kind-bogus", call("list", kind="bogus"), E.InvalidInput),
    ("list-kind-target-prefix", call("list", kind="task"), E.InvalidInput),
    ("list-limit-0", call("list", limit=0), E.InvalidInput),
    ("list-limit-negative", call("list", limit=-1), E.InvalidInput),
    ("list-limit-1001", call("list", limit=1001), E.InvalidInput),
    ("list-limit-str", call("list", limit="5"), E.InvalidInput),
    ("list-limit-float", call("list", limit=1.5), E.InvalidInput),
    ("list-limit-none", call("list", limit=None), E.InvalidInput),
    ("list-owner-str", call("list", owner="p1"), E.InvalidInput),
    ("list-owner-bad-id", call("list", owner=perdure.Project("a b")), E.InvalidInput),
    ("list-parent-empty", call("list", parent_id=""), E.InvalidInput),
    ("list-parent-int", call("list", parent_id=5), E.InvalidInput),
    ("list-root-empty", call("list", root_id=""), E.InvalidInput),
    ("list-after-word", call("list", after="abc"), E.InvalidInput),
    ("list-after-negative", call("list", after="-1"), E.InvalidInput),
    ("list-after-empty", call("list", after=""), E.InvalidInput),
    ("list-after-float", call("list", after="1.5"), E.InvalidInput),
    ("list-after-int", call("list", after=5), E.InvalidInput),
    ("list-after-huge", call("list", after="9" * 20), E.InvalidInput),
    pytest.param(
        "list-after-superscript",
        call("list", after="²"),
        E.InvalidInput,
    ),
    # -- events ----------------------------------------------------------------------------
    ("events-unknown", events("nope"), E.RunNotFound),
    ("events-empty-id", events(""), E.InvalidInput),
    ("events-int-id", events(7), E.InvalidInput),
    ("events-after-negative", events(EXISTING, after=-1), E.InvalidInput),
    ("events-after-str", events(EXISTING, after="3"), E.InvalidInput),
    ("events-after-float", events(EXISTING, after=1.5), E.InvalidInput),
    ("events-after-bool", events(EXISTING, after=True), E.InvalidInput),
    ("events-after-none", events(EXISTING, after=None), E.InvalidInput),
    pytest.param(
        "events-after-huge",
        events(EXISTING, after=2**64),
        E.InvalidInput,
    ),
    # -- wait and cancel ---------------------------------------------------------------------
    ("wait-unknown", call("wait", "nope"), E.RunNotFound),
    ("wait-empty", call("wait", ""), E.InvalidInput),
    ("wait-none", call("wait", None), E.InvalidInput),
    ("cancel-unknown", call("cancel", "nope"), E.RunNotFound),
    ("cancel-empty", call("cancel", ""), E.InvalidInput),
    ("cancel-int", call("cancel", 3), E.InvalidInput),
    ("cancel-reason-int", call("cancel", EXISTING, 5), E.InvalidInput),
    ("cancel-reason-none", call("cancel", EXISTING, None), E.InvalidInput),
]


def _ids(case: Any) -> str:
    return case.values[0] if hasattr(case, "values") else case[0]


@pytest.mark.parametrize(("name", "action", "error"), CASES, ids=[_ids(c) for c in CASES])
async def test_bad_input_raises_and_stores_nothing(
    name: str, action: Any, error: type[perdure.PerdureError], make_rt: Any
) -> None:
    rt = make_rt(durability="process")  # no fsync: a hundred stores are created here
    async with rt:
        existing = await rt.start(
            "workflow:echo", {"x": 1}, owner=P, run_id=EXISTING, idempotency_key="k"
        )
        await rt.wait(existing.run.id)
        blocked = (await rt.start("workflow:block", {}, owner=P)).run
        image = dump_store(internals(rt).store)
        count = len(rt.list().runs)
        log = await read_log(rt, EXISTING)
        calls = dict(BODY_CALLS)

        with pytest.raises(error) as info:
            result = action(rt)
            if hasattr(result, "__await__"):
                await result
        err = info.value
        assert type(err) is error, f"{name}: {type(err).__name__} is not exactly {error.__name__}"
        assert err.code == error.code and err.message
        assert isinstance(err.to_dict()["detail"], dict)

        assert dump_store(internals(rt).store) == image, f"{name} stored something"
        assert len(rt.list().runs) == count
        assert await read_log(rt, EXISTING) == log
        assert dict(BODY_CALLS) == calls  # no body ran
        # the runtime still works after the refusal
        await rt.cancel(blocked.id)
        again = await rt.start(
            "workflow:echo", {"x": 1}, owner=P, run_id=EXISTING, idempotency_key="k"
        )
        assert again.duplicate


async def test_longest_valid_owner_and_key_work(make_rt: Any) -> None:
    rt = make_rt()
    async with rt:
        owner = perdure.Project("o" * 128)
        key = "k" * 256
        first = await rt.start("workflow:echo", {}, owner=owner, idempotency_key=key)
        again = await rt.start("workflow:echo", {}, owner=owner, idempotency_key=key)
        assert again.duplicate and again.run.id == first.run.id
        await rt.wait(first.run.id)


async def test_longest_valid_ids_work(make_rt: Any) -> None:
    rt = make_rt()
    async with rt:
        owner = perdure.Project("o" * 128)
        run = (await rt.start("workflow:echo", {}, owner=owner, run_id="r" * 128)).run
        run2 = (await rt.start("workflow:echo", {}, owner=owner, idempotency_key="k" * 200)).run
        for rid in (run.id, run2.id):
            await rt.wait(rid)
        assert [r.id for r in rt.list(owner=owner).runs] == [run.id, run2.id]
        assert [r.id for r in rt.list(root_id=run.id).runs] == [run.id]


async def test_every_method_refuses_while_not_open(make_rt: Any) -> None:
    rt = make_rt()
    for action in (
        start("workflow:echo", {}),
        call("get", "x"),
        call("list"),
        events("x"),
        call("wait", "x"),
        call("cancel", "x"),
    ):
        with pytest.raises(perdure.PerdureError):
            result = action(rt)
            if hasattr(result, "__await__"):
                await result
    async with rt:
        run = (await rt.start("workflow:echo", {}, owner=P)).run
        await rt.wait(run.id)
    with pytest.raises(perdure.PerdureError):
        rt.get(run.id)  # closed again
    with pytest.raises(perdure.PerdureError):
        await rt.start("workflow:echo", {}, owner=P)


async def test_bad_definitions_are_refused(data_dir: Any) -> None:
    rt = perdure.Runtime(data_dir)

    @rt.workflow("w")
    async def w(ctx: perdure.RunContext, inp: dict) -> None: ...

    with pytest.raises(perdure.InvalidInput):
        rt.workflow("w")(w)  # registered twice

    def not_async(ctx: Any, inp: Any) -> None: ...

    with pytest.raises(perdure.InvalidInput):
        rt.task("sync")(not_async)  # type: ignore[arg-type]
    for name in ("", "a b", "a:b", "x" * 101, 5):
        with pytest.raises(perdure.InvalidInput):
            rt.agent(name)(w)  # type: ignore[arg-type]
    # a name may be shared by different kinds: targets differ
    rt.task("w")(w)
    rt.agent("w")(w)


def test_definition_name_with_trailing_newline_is_refused(data_dir: Any) -> None:
    rt = perdure.Runtime(data_dir)

    async def body(ctx: Any, inp: Any) -> None: ...

    with pytest.raises(perdure.InvalidInput):
        rt.workflow("name\n")(body)


def test_struct_input_type_can_be_given_explicitly(data_dir: Any) -> None:
    rt = perdure.Runtime(data_dir)

    @rt.workflow("explicit", input_type=Order)
    async def explicit(ctx: Any, inp: Any) -> None: ...

    definition = rt._registry.resolve("workflow:explicit")
    with pytest.raises(perdure.InvalidInput):
        definition.convert_input({"sku": 1})
    typed, plain = definition.convert_input({"sku": "a", "qty": 1})
    assert typed == Order("a", 1) and plain == {"sku": "a", "qty": 1}
