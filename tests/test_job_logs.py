"""Raw run logs (R24): ``ctx.log`` apart from events, paged both ways, exactly once.

* entries page forward and backward with cursors (``limit`` ≤ 1000); they are not events;
* any run kind logs (jobs, workflows, agents), from the body or from inside steps,
  including a step's worker thread;
* exactly once across replays: a body re-activated after a wait, a process closed while
  a step was running (the step re-runs: its entries are written by the re-run only),
  ``ctx.flush()`` inside a step (entries of a cut attempt stay, tagged with their
  attempt), and whole-job retries (body-level entries are not repeated; each step
  attempt keeps its own);
* the per-run cap ends with a marker entry; bad fields are refused at the call (R30).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
from helpers.checks import read_log

import perdure
from perdure.runtime import _logs

P = perdure.Project("p1")
GATES: dict[str, trio.Event] = {}
COUNTS: dict[str, int] = {}


@pytest.fixture(autouse=True)
def _reset() -> None:
    GATES.clear()
    COUNTS.clear()


def bump(name: str) -> int:
    COUNTS[name] = COUNTS.get(name, 0) + 1
    return COUNTS[name]


def make(path: Path, **options: Any) -> perdure.Runtime:
    options.setdefault("durability", "process")
    rt = perdure.Runtime(path, **options)

    @rt.task("chatty")
    async def chatty(ctx: perdure.RunContext, inp: dict) -> int:
        for i in range(inp["n"]):
            ctx.log(f"line {i}", level="debug" if i % 2 else "info", i=i)
            if i % 5 == 4:
                await ctx.step(f"s{i}", lambda i=i: ctx.log(f"from step {i}") or i)
        return inp["n"]

    @rt.workflow("wait_between")
    async def wait_between(ctx: perdure.RunContext, inp: dict) -> str:
        ctx.log("before")

        def step() -> int:
            ctx.log("in step")
            return bump(f"step:{ctx.run_id}")

        await ctx.step("s", step)
        ctx.log("after step")
        got = await ctx.wait_for_event("go")
        ctx.log("after wait", got=got)
        return "done"

    @rt.workflow("stuck_step")
    async def stuck_step(ctx: perdure.RunContext, inp: dict) -> str:
        ctx.log("body start")

        async def step() -> int:
            n = bump(f"stuck:{ctx.run_id}")
            ctx.log("step start", attempt_seen=n)
            if inp.get("flush"):
                await ctx.flush()
            if n == 1:
                await trio.sleep_forever()  # the process "dies" here
            ctx.log("step end")
            return n

        n = await ctx.step("s", step)
        ctx.log("body end", n=n)
        return "ok"

    @rt.task("retried", max_attempts=3)
    async def retried(ctx: perdure.RunContext, inp: dict) -> str:
        ctx.log("body start")

        def step() -> str:
            n = bump(f"retried:{ctx.run_id}")
            ctx.log("attempt", n=n)
            if n < 3:
                raise ValueError(f"flaky {n}")
            return "ok"

        result = await ctx.step("flaky", step)
        ctx.log("body end")
        return result

    @rt.agent("talker")
    async def talker(ctx: perdure.AgentContext, inp: perdure.AgentInput) -> None:
        ctx.log("agent thinking", level="debug", messages=len(inp.messages))
        await ctx.say("hi")

    @rt.task("bad")
    async def bad(ctx: perdure.RunContext, case: str) -> str:
        calls = {
            "level": lambda: ctx.log("x", level="loud"),
            "unencodable": lambda: ctx.log("x", obj=object()),
            "surrogate": lambda: ctx.log("x", a="x\ud800"),
            "huge int": lambda: ctx.log("x", a=2**70),
            "big": lambda: ctx.log("x", big="x" * 9000),
            "not text": lambda: ctx.log(42),  # type: ignore[arg-type]
            "fine": lambda: ctx.log("x", ok=[1, {"a": None}]),
            "long": lambda: ctx.log("é" * 10_000),
        }
        try:
            calls[case]()
        except perdure.PerdureError as exc:
            return exc.code
        return "accepted"

    return rt


def messages(page: perdure.LogPage) -> list[str]:
    return [entry.message for entry in page.entries]


async def test_logs_page_forward_and_backward(data_dir: Path, autojump_clock: Any) -> None:
    async with make(data_dir) as rt:
        run = (await rt.start("task:chatty", {"n": 20}, owner=P)).run
        await rt.wait(run.id)
        every = rt.logs(run.id, limit=1000)
        assert [e.seq for e in every.entries] == list(range(1, 25)) and every.next_cursor is None
        assert messages(every)[:6] == [
            "line 0",
            "line 1",
            "line 2",
            "line 3",
            "line 4",
            "from step 4",
        ]
        step_entry = every.entries[5]
        assert step_entry.step == "s4" and step_entry.level == "info" and step_entry.attempt == 1
        assert every.entries[1].level == "debug" and every.entries[1].fields == {"i": 1}
        assert every.entries[0].step is None
        # Forward pages.
        pages, cursor = [], None
        while True:
            page = rt.logs(run.id, after=cursor, limit=10)
            pages.append([e.seq for e in page.entries])
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        assert pages == [list(range(1, 11)), list(range(11, 21)), list(range(21, 25))]
        # Backward pages, newest first.
        pages, cursor = [], None
        while True:
            page = rt.logs(run.id, after=cursor, limit=10, direction="backward")
            pages.append([e.seq for e in page.entries])
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        assert pages == [list(range(24, 14, -1)), list(range(14, 4, -1)), [4, 3, 2, 1]]
        # A cursor may come back as text (HTTP query strings, the CLI).
        assert [e.seq for e in rt.logs(run.id, after="22").entries] == [23, 24]
        assert rt.logs(run.id, after=24).entries == []
        # Logs are not events: the AG-UI log has no trace of them.
        wire = [e.to_wire() for e in await read_log(rt, run.id)]
        assert not any("line" in str(event) for event in wire)
        for bad in (
            {"limit": 0},
            {"limit": 1001},
            {"direction": "sideways"},
            {"after": -1},
            {"after": "x"},
            {"after": 1.5},
        ):
            with pytest.raises(perdure.InvalidInput):
                rt.logs(run.id, **bad)
        with pytest.raises(perdure.RunNotFound):
            rt.logs("no-such-run")


async def test_any_run_kind_logs(data_dir: Path, autojump_clock: Any) -> None:
    async with make(data_dir) as rt:
        agent = (
            await rt.start("agent:talker", {"messages": []}, owner=perdure.Conversation("c1"))
        ).run
        await rt.wait(agent.id)
        [entry] = rt.logs(agent.id).entries
        assert (entry.message, entry.level, entry.fields) == (
            "agent thinking",
            "debug",
            {"messages": 0},
        )


async def test_logs_from_a_steps_worker_thread(data_dir: Path) -> None:
    rt = make(data_dir)

    @rt.workflow("threaded")
    async def threaded(ctx: perdure.RunContext, inp: dict) -> int:
        def work() -> int:  # a plain function: runs in a worker thread (real clock)
            for i in range(3):
                ctx.log("from a thread", i=i)
            return 3

        return int(await ctx.step("work", work))

    async with rt:
        run = (await rt.start("workflow:threaded", {}, owner=P)).run
        await rt.wait(run.id)
        assert [(e.message, e.fields, e.step) for e in rt.logs(run.id).entries] == [
            ("from a thread", {"i": i}, "work") for i in range(3)
        ]


async def test_body_logs_are_kept_once_across_a_wait_and_reactivation(
    data_dir: Path, autojump_clock: Any
) -> None:
    async with make(data_dir, passivate_after=1) as rt:
        run = (await rt.start("workflow:wait_between", {}, owner=P)).run
        while rt.get(run.id).status != "waiting":
            await trio.sleep(0.01)
        # The entries before the wait committed with the wait's own commit.
        assert messages(rt.logs(run.id)) == ["before", "in step", "after step"]
        await trio.sleep(5)  # passivated: its actor is gone
    async with make(data_dir) as rt:  # reopened: waiting runs stay passive
        await rt.resume(run.id, perdure.ExternalEvent(name="go", payload=7))
        await rt.wait(run.id)
        page = rt.logs(run.id)
        assert messages(page) == ["before", "in step", "after step", "after wait"]
        assert page.entries[-1].fields == {"got": 7}
        assert {f"step:{run.id}": 1} == COUNTS


@pytest.mark.parametrize("flush", [False, True])
async def test_a_step_cut_by_the_process_ending_logs_once(
    data_dir: Path, autojump_clock: Any, flush: bool
) -> None:
    async with make(data_dir) as rt:
        run = (await rt.start("workflow:stuck_step", {"flush": flush}, owner=P)).run
        while COUNTS.get(f"stuck:{run.id}") != 1:
            await trio.sleep(0.01)
        await trio.sleep(1)
        # The body's entry waits for the run's next commit (or the flush).
        assert messages(rt.logs(run.id)) == (["body start", "step start"] if flush else [])
    # Closing stops the actor mid-step, like a crash: nothing of the attempt committed
    # unless it was flushed. The recovered run re-runs the step once.
    async with make(data_dir) as rt:
        done = await rt.wait(run.id)
        assert done.status == "completed"
        entries = rt.logs(run.id).entries
    if flush:
        # The cut attempt's flushed entries stay (attempt 1); the re-run logs as attempt 2.
        assert [(e.message, e.attempt) for e in entries] == [
            ("body start", 1),
            ("step start", 1),
            ("step start", 2),
            ("step end", 2),
            ("body end", 2),
        ]
    else:
        assert [e.message for e in entries] == ["body start", "step start", "step end", "body end"]
        assert entries[1].fields == {"attempt_seen": 2}  # written by the re-run only


async def test_whole_job_retries_keep_each_attempts_step_logs(
    data_dir: Path, autojump_clock: Any
) -> None:
    async with make(data_dir) as rt:
        run = (await rt.start("task:retried", {}, owner=P)).run
        done = await rt.wait(run.id)
        assert done.status == "completed" and done.completion.result == "ok"
        entries = rt.logs(run.id).entries
        assert [(e.message, e.fields, e.step) for e in entries] == [
            ("body start", {}, None),
            ("attempt", {"n": 1}, "flaky"),
            ("attempt", {"n": 2}, "flaky"),
            ("attempt", {"n": 3}, "flaky"),
            ("body end", {}, None),
        ]


async def test_the_per_run_cap_ends_with_a_marker(
    data_dir: Path, autojump_clock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_logs, "MAX_LOGS_PER_RUN", 8)
    async with make(data_dir) as rt:
        run = (await rt.start("task:chatty", {"n": 20}, owner=P)).run
        await rt.wait(run.id)
        entries = rt.logs(run.id).entries
    assert len(entries) == 8
    assert messages(perdure.LogPage(entries=entries[:7])) == [
        "line 0",
        "line 1",
        "line 2",
        "line 3",
        "line 4",
        "from step 4",
        "line 5",
    ]
    marker = entries[-1]
    assert marker.level == "warning" and marker.fields == {"perdure.log_cap": 8}
    assert "cap of 8" in marker.message


async def test_bad_log_calls_are_refused_at_the_call(data_dir: Path, autojump_clock: Any) -> None:
    async with make(data_dir) as rt:
        cases = {
            "level": "INVALID_INPUT",
            "unencodable": "SERIALIZATION_ERROR",
            "surrogate": "SERIALIZATION_ERROR",
            "huge int": "SERIALIZATION_ERROR",
            "big": "INVALID_INPUT",
            "not text": "INVALID_INPUT",
            "fine": "accepted",
            "long": "accepted",
        }
        for case, expected in cases.items():
            run = (await rt.start("task:bad", case, owner=P)).run
            done = await rt.wait(run.id)
            assert done.completion.result == expected, case
            entries = rt.logs(run.id).entries
            assert len(entries) == (expected == "accepted"), case
            if case == "long":  # cut, and saying so
                message = entries[0].message
                assert message.startswith("é" * 8192) and "truncated from 10000" in message
