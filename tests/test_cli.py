"""The ``perdure`` command line: runs list/show/events/cancel, demo, bench.

The CLI is exercised in-process through ``perdure.cli.main([...])`` and as a real
subprocess (``python -m perdure.cli`` and the ``perdure`` console script), against
directories populated by a Runtime in the test, including one that another
process owns while the CLI reads it (R27).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

import perdure
from perdure import cli
from perdure.agui import verify_prefixes
from perdure.cli import main

REPO = Path(__file__).resolve().parent.parent


# -- helpers -----------------------------------------------------------------------------------


def _define(rt: perdure.Runtime) -> None:
    @rt.workflow("report")
    async def report(ctx: perdure.RunContext, inp: dict[str, Any]) -> dict[str, Any]:
        for page in range(inp.get("pages", 2)):
            await ctx.custom("progress", {"page": page + 1})
        return {"pages": inp.get("pages", 2)}

    @rt.agent("helper")
    async def helper(ctx: perdure.AgentContext, inp: perdure.AgentInput) -> None:
        await ctx.state_snapshot({"mood": "helpful"})
        await ctx.say("hi there")

    @rt.task("thumb")
    async def thumb(ctx: perdure.RunContext, config: dict[str, Any]) -> dict[str, Any]:
        return {"size": config["size"] // 2}

    @rt.task("explode")
    async def explode(ctx: perdure.RunContext, config: dict[str, Any]) -> None:
        raise ValueError("boom")

    @rt.workflow("blocked")
    async def blocked(ctx: perdure.RunContext, inp: dict[str, Any]) -> None:
        await ctx.custom("progress", {"stage": "waiting forever"})
        await trio.sleep_forever()


async def _populate(directory: Path, *, blocked: int = 0) -> dict[str, Any]:
    """Finished runs of every kind, plus ``blocked`` runs left ``running`` on close."""
    rt = perdure.Runtime(directory, durability="process")
    _define(rt)
    ids: dict[str, Any] = {}
    async with rt:
        p1, p2 = perdure.Project("p1"), perdure.Project("p2")
        for name, target, inp, owner in (
            ("workflow", "workflow:report", {"pages": 3}, p1),
            ("agent", "agent:helper", perdure.AgentInput(messages=[]), perdure.Conversation("c1")),
            ("job", "task:thumb", {"size": 640}, p2),
            ("failed", "task:explode", {}, p2),
        ):
            started = await rt.start(target, inp, owner=owner)
            await rt.wait(started.run.id)
            ids[name] = started.run.id
        ids["blocked"] = []
        for _ in range(blocked):
            started = await rt.start("workflow:blocked", {}, owner=perdure.Project("p3"))
            # Let the body log its first event so recovery has something to replay.
            async for ev in rt.events(started.run.id):
                if ev.type == "CUSTOM":
                    break
            ids["blocked"].append(started.run.id)
    return ids


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PERDURE_DIR", None)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _subprocess(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "perdure.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_cli_env(),
        cwd=REPO,
    )


@pytest.fixture(scope="module")
def populated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    directory = tmp_path_factory.mktemp("cli") / "data"
    ids = trio.run(_populate, directory)
    return {"dir": str(directory), **ids}


# -- runs list ---------------------------------------------------------------------------------


def test_list_json_lists_every_run_oldest_first(
    populated: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _run(["runs", "list", "--dir", populated["dir"], "--json"], capsys)
    assert code == 0, err
    page = json.loads(out)
    assert page["next_cursor"] is None
    runs = page["runs"]
    assert [r["id"] for r in runs] == [populated[k] for k in ("workflow", "agent", "job", "failed")]
    by_id = {r["id"]: r for r in runs}
    assert by_id[populated["workflow"]]["status"] == "completed"
    assert by_id[populated["workflow"]]["kind"] == "workflow"
    assert by_id[populated["workflow"]]["owner"] == {"type": "project", "id": "p1"}
    assert by_id[populated["agent"]]["kind"] == "agent"
    assert by_id[populated["job"]]["completion"]["result"] == {"size": 320}
    assert by_id[populated["failed"]]["status"] == "failed"
    assert by_id[populated["failed"]]["completion"]["error"]["code"] == "UNHANDLED_EXCEPTION"


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        (["--kind", "job"], ["job", "failed"]),
        (["--status", "failed"], ["failed"]),
        (["--status", "completed", "--kind", "job"], ["job"]),
        (["--status", "completed,failed", "--kind", "job"], ["job", "failed"]),
        (["--status", "completed", "--status", "failed"], ["workflow", "agent", "job", "failed"]),
        (["--owner", "conversation:c1"], ["agent"]),
        (["--owner", "project:p2", "--status", "completed"], ["job"]),
        (["--owner", "project:nobody"], []),
        (["--status", "running"], []),
    ],
)
def test_list_filters(
    populated: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
    filters: list[str],
    expected: list[str],
) -> None:
    code, out, err = _run(["runs", "list", "--dir", populated["dir"], "--json", *filters], capsys)
    assert code == 0, err
    assert [r["id"] for r in json.loads(out)["runs"]] == [populated[k] for k in expected]


def test_list_pages_with_cursor(
    populated: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    seen: list[str] = []
    after: list[str] = []
    for _ in range(5):
        code, out, err = _run(
            ["runs", "list", "--dir", populated["dir"], "--json", "--limit", "3", *after], capsys
        )
        assert code == 0, err
        page = json.loads(out)
        seen += [r["id"] for r in page["runs"]]
        if page["next_cursor"] is None:
            break
        after = ["--after", page["next_cursor"]]
    assert seen == [populated[k] for k in ("workflow", "agent", "job", "failed")]


def test_list_table(populated: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(["runs", "list", "--dir", populated["dir"], "--limit", "3"], capsys)
    assert code == 0
    assert "STATUS" in out and "TARGET" in out
    for key in ("workflow", "agent", "job"):
        assert populated[key] in out
    assert populated["failed"] not in out
    assert "--after 3" in out  # how to get the next page
    assert "workflow:report" in out and "conversation:c1" in out and "completed" in out


def test_default_dir_comes_from_environment(
    populated: dict[str, Any], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PERDURE_DIR", populated["dir"])
    code, out, err = _run(["runs", "list", "--json"], capsys)
    assert code == 0, err
    assert len(json.loads(out)["runs"]) == 4


# -- runs show / events ------------------------------------------------------------------------


def test_show_json(populated: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    run_id = populated["workflow"]
    code, out, err = _run(["runs", "show", run_id, "--dir", populated["dir"], "--json"], capsys)
    assert code == 0, err
    rec = json.loads(out)
    assert rec["id"] == run_id and rec["root_id"] == run_id
    assert rec["target"] == "workflow:report"
    assert rec["status"] == "completed"
    assert rec["input"] == {"pages": 3}
    assert rec["completion"] == {"status": "completed", "result": {"pages": 3}}
    assert rec["last_event_id"] == 5  # RUN_STARTED, 3 x CUSTOM, RUN_FINISHED


def test_show_human(populated: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(["runs", "show", populated["failed"], "--dir", populated["dir"]], capsys)
    assert code == 0
    assert populated["failed"] in out
    assert "task:explode" in out and "failed" in out
    assert "UNHANDLED_EXCEPTION" in out and "boom" in out


def test_events_json_lines(populated: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    run_id = populated["workflow"]
    code, out, err = _run(["runs", "events", run_id, "--dir", populated["dir"], "--json"], capsys)
    assert code == 0, err
    lines = _json_lines(out)
    assert [line["event_id"] for line in lines] == [1, 2, 3, 4, 5]
    assert {line["run_id"] for line in lines} == {run_id}
    types = [line["event"]["type"] for line in lines]
    assert types == ["RUN_STARTED", "CUSTOM", "CUSTOM", "CUSTOM", "RUN_FINISHED"]
    assert lines[0]["event"]["runId"] == run_id
    assert [line["event"]["value"] for line in lines[1:4]] == [{"page": n} for n in (1, 2, 3)]
    assert lines[4]["event"]["result"] == {"pages": 3}


def test_events_match_the_runtime_log(
    populated: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    run_id = populated["agent"]
    code, out, _ = _run(["runs", "events", run_id, "--dir", populated["dir"], "--json"], capsys)
    assert code == 0
    from_cli = [(line["event_id"], line["event"]) for line in _json_lines(out)]

    async def read() -> list[tuple[int, dict[str, Any]]]:
        rt = perdure.Runtime(populated["dir"], durability="process")
        _define(rt)
        async with rt:
            return [(ev.event_id, ev.to_wire()) async for ev in rt.events(run_id, follow=False)]

    assert from_cli == trio.run(read)
    types = [event["type"] for _, event in from_cli]
    assert types[0] == "RUN_STARTED" and types[-1] == "RUN_FINISHED"
    assert "STATE_SNAPSHOT" in types
    text = [e["delta"] for _, e in from_cli if e["type"] == "TEXT_MESSAGE_CONTENT"]
    assert text == ["hi there"]


def test_events_after_and_follow(
    populated: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    run_id = populated["workflow"]
    directory = populated["dir"]
    code, out, _ = _run(
        ["runs", "events", run_id, "--dir", directory, "--json", "--after", "3"], capsys
    )
    assert code == 0
    assert [line["event_id"] for line in _json_lines(out)] == [4, 5]
    # --follow on a finished run replays and stops at the terminal event.
    code, out, _ = _run(
        ["runs", "events", run_id, "--dir", directory, "--json", "--follow"], capsys
    )
    assert code == 0
    assert [line["event_id"] for line in _json_lines(out)] == [1, 2, 3, 4, 5]
    code, out, _ = _run(["runs", "events", run_id, "--dir", directory, "--after", "5"], capsys)
    assert code == 0 and out == ""


def test_events_human(populated: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(["runs", "events", populated["failed"], "--dir", populated["dir"]], capsys)
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 2
    assert "RUN_STARTED" in lines[0] and lines[0].split()[0] == "1"
    assert "RUN_ERROR" in lines[1] and "boom" in lines[1]


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        (["runs", "show", "no-such-run"], "RUN_NOT_FOUND"),
        (["runs", "events", "no-such-run"], "RUN_NOT_FOUND"),
        (["runs", "cancel", "no-such-run"], "RUN_NOT_FOUND"),
        (["runs", "list", "--status", "finished"], "INVALID_INPUT"),
        (["runs", "list", "--kind", "task"], "INVALID_INPUT"),
        (["runs", "list", "--owner", "team:x"], "INVALID_INPUT"),
        (["runs", "list", "--limit", "0"], "INVALID_INPUT"),
        (["runs", "list", "--after", "abc"], "INVALID_INPUT"),
        (["runs", "list", "--after", "\u00b2"], "INVALID_INPUT"),  # isdigit(), not an int
        (["runs", "list", "--after", "9" * 19], "INVALID_INPUT"),  # past any seq
        (["runs", "list", "--status", "running,nope"], "INVALID_INPUT"),
        (["runs", "events", "x", "--after", "-1"], "INVALID_INPUT"),
    ],
)
def test_errors_print_code_and_exit_2(
    populated: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    code: str,
) -> None:
    status, out, err = _run([*argv, "--dir", populated["dir"]], capsys)
    assert status == 2
    assert err.startswith(f"error: {code}: ")
    assert out == ""


def test_missing_and_foreign_directories(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, err = _run(["runs", "list", "--dir", str(tmp_path / "nothing")], capsys)
    assert status == 2 and err.startswith("error: STORAGE_ERROR: ")
    assert not (tmp_path / "nothing").exists()  # reading never creates a directory
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    for argv in (["runs", "list"], ["runs", "cancel", "x"]):
        status, _, err = _run([*argv, "--dir", str(foreign)], capsys)
        assert status == 2 and err.startswith("error: FOREIGN_DIRECTORY: ")
    assert os.listdir(foreign) == ["notes.txt"]


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in ([], ["runs"], ["runs", "resume", "x"], ["runs", "list", "--bogus"], ["nope"]):
        status, _, err = _run(argv, capsys)
        assert status == 2, argv
        assert "usage:" in err
    status, out, _ = _run(["--help"], capsys)
    assert status == 0 and "runs" in out and "demo" in out and "bench" in out


def test_errors_from_inside_the_runtime_are_unwrapped(
    populated: dict[str, Any], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Errors raised inside `async with rt:` reach the CLI wrapped in an ExceptionGroup.
    def grouped(args: Any) -> int:
        raise ExceptionGroup("nursery", [perdure.RunNotActive("run x is not active")])

    monkeypatch.setattr(cli, "_cmd_show", grouped)
    status, _, err = _run(["runs", "show", "x", "--dir", populated["dir"]], capsys)
    assert status == 2 and err == "error: RUN_NOT_ACTIVE: run x is not active\n"


def test_follow_stops_on_interrupt(tmp_path: Path) -> None:
    directory = tmp_path / "data"
    ids = trio.run(lambda: _populate(directory, blocked=1))
    follower = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "perdure.cli",
            "runs",
            "events",
            ids["blocked"][0],
            "--dir",
            str(directory),
            "--follow",
            "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_cli_env(),
        cwd=REPO,
    )
    try:
        assert follower.stdout is not None
        lines = [json.loads(follower.stdout.readline()) for _ in range(2)]
        assert [line["event"]["type"] for line in lines] == ["RUN_STARTED", "CUSTOM"]
        follower.send_signal(signal.SIGINT)
        follower.wait(timeout=30)
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
    assert follower.returncode == 130


# -- runs cancel -------------------------------------------------------------------------------


def test_cancel_a_run_left_running(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    directory = tmp_path / "data"
    ids = trio.run(lambda: _populate(directory, blocked=1))
    run_id = ids["blocked"][0]
    code, out, err = _run(["runs", "show", run_id, "--dir", str(directory), "--json"], capsys)
    assert json.loads(out)["status"] == "running"

    code, out, err = _run(
        ["runs", "cancel", run_id, "--dir", str(directory), "--reason", "ops", "--json"], capsys
    )
    assert code == 0, err
    result = json.loads(out)
    assert result["cancelled"] is True
    assert result["run"]["status"] == "cancelled"
    assert result["run"]["cancel"]["reason"] == "ops"

    code, out, _ = _run(["runs", "events", run_id, "--dir", str(directory), "--json"], capsys)
    events = [line["event"] for line in _json_lines(out)]
    assert [line["event_id"] for line in _json_lines(out)] == list(range(1, len(events) + 1))
    assert events[0]["type"] == "RUN_STARTED"
    assert events[-1]["type"] == "RUN_FINISHED"
    assert events[-1]["outcome"]["type"] == "cancelled"
    verify_prefixes(events)

    # Cancelling a terminal run is a no-op that says so (R15).
    code, out, _ = _run(["runs", "cancel", run_id, "--dir", str(directory), "--json"], capsys)
    assert code == 0
    assert json.loads(out)["cancelled"] is False
    code, out, _ = _run(["runs", "cancel", ids["job"], "--dir", str(directory)], capsys)
    assert code == 0 and "already completed" in out


def test_cancel_leaves_other_runs_exactly_as_stored(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = tmp_path / "data"
    ids = trio.run(lambda: _populate(directory, blocked=2))
    first, second = ids["blocked"]
    code, out, err = _run(["runs", "cancel", first, "--dir", str(directory), "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["run"]["status"] == "cancelled"
    # Administration mode re-ran nothing: the other interrupted run is untouched.
    code, out, _ = _run(["runs", "show", second, "--dir", str(directory), "--json"], capsys)
    rec = json.loads(out)
    assert rec["status"] == "running" and rec["last_event_id"] == 2 and "cancel" not in rec


async def _populate_waiting(directory: Path, *, deadline: float | None = None) -> dict[str, str]:
    """A parent awaiting a child that waits for approval, and a lone waiting run
    (its wait expiring after ``deadline`` seconds if given)."""
    rt = perdure.Runtime(directory, durability="process")

    @rt.workflow("parent")
    async def parent(ctx: perdure.RunContext, inp: dict[str, Any]) -> Any:
        child = await ctx.start_child("workflow:approve", {"who": "ann"})
        return await child.result()

    @rt.workflow("approve")
    async def approve(ctx: perdure.RunContext, inp: dict[str, Any]) -> bool:
        decision = await ctx.wait_for_approval("go", prompt="ship it?")
        return bool(decision.approved)

    @rt.workflow("lone")
    async def lone(ctx: perdure.RunContext, inp: dict[str, Any]) -> Any:
        return await ctx.wait_for_event("ping", timeout=deadline)

    async def until(run_id: str, status: str) -> None:
        with trio.fail_after(30):
            while rt.get(run_id).status != status:
                await trio.sleep(0.01)

    async with rt:
        owner = perdure.Project("tree")
        top = (await rt.start("workflow:parent", {}, owner=owner)).run.id
        with trio.fail_after(30):
            while not (children := rt.list(parent_id=top).runs):
                await trio.sleep(0.01)
        child = children[0].id
        await until(child, "waiting")
        lone_id = (await rt.start("workflow:lone", {}, owner=owner)).run.id
        await until(lone_id, "waiting")
    return {"parent": top, "child": child, "lone": lone_id}


def test_cancel_a_tree_with_a_waiting_child(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = str(tmp_path / "data")
    ids = trio.run(lambda: _populate_waiting(Path(directory), deadline=3600))
    code, out, _ = _run(["runs", "list", "--dir", directory, "--json"], capsys)
    statuses = {r["id"]: r["status"] for r in json.loads(out)["runs"]}
    assert statuses[ids["child"]] == "waiting" and statuses[ids["lone"]] == "waiting"

    code, out, err = _run(["runs", "cancel", ids["parent"], "--dir", directory, "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["run"]["status"] == "cancelled"
    for key in ("parent", "child"):
        code, out, _ = _run(["runs", "show", ids[key], "--dir", directory, "--json"], capsys)
        assert json.loads(out)["status"] == "cancelled", key
        code, out, _ = _run(["runs", "events", ids[key], "--dir", directory, "--json"], capsys)
        events = [line["event"] for line in _json_lines(out)]
        assert events[-1]["type"] == "RUN_FINISHED" and events[-1]["outcome"]["type"] == "cancelled"
        verify_prefixes(events)
    # The unrelated waiting run was left alone.
    code, out, _ = _run(["runs", "show", ids["lone"], "--dir", directory, "--json"], capsys)
    assert json.loads(out)["status"] == "waiting"

    # A waiting run with no timer due can be cancelled on its own as well.
    code, out, err = _run(["runs", "cancel", ids["lone"], "--dir", directory, "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["run"]["status"] == "cancelled"


def test_cancel_does_not_fire_another_runs_due_timer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = str(tmp_path / "data")
    ids = trio.run(lambda: _populate_waiting(Path(directory), deadline=0.05))
    time.sleep(0.2)  # the lone run's wait deadline has passed while nobody owned the directory
    code, _, err = _run(["runs", "cancel", ids["parent"], "--dir", directory], capsys)
    assert code == 0, err
    code, out, _ = _run(["runs", "show", ids["lone"], "--dir", directory, "--json"], capsys)
    lone = json.loads(out)
    assert lone["status"] == "waiting"  # its timer did not fire in administration mode
    code, out, _ = _run(["runs", "list", "--dir", directory, "--json"], capsys)
    statuses = {r["id"]: r["status"] for r in json.loads(out)["runs"]}
    assert statuses[ids["parent"]] == "cancelled"
    assert [s for i, s in statuses.items() if i not in (ids["parent"], ids["lone"])] == [
        "cancelled"
    ]


# -- as a subprocess ---------------------------------------------------------------------------


def test_module_and_console_script(populated: dict[str, Any]) -> None:
    proc = _subprocess("runs", "list", "--dir", populated["dir"], "--json")
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(proc.stdout)["runs"]) == 4

    proc = _subprocess("runs", "show", "nope", "--dir", populated["dir"])
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: RUN_NOT_FOUND: ")

    script = Path(sys.executable).parent / "perdure"
    if not script.exists():
        pytest.skip("the perdure console script is not installed next to this python")
    proc = subprocess.run(
        [str(script), "runs", "events", populated["job"], "--dir", populated["dir"], "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        env=_cli_env(),
    )
    assert proc.returncode == 0, proc.stderr
    assert [e["event"]["type"] for e in _json_lines(proc.stdout)] == ["RUN_STARTED", "RUN_FINISHED"]


_HOLDER = textwrap.dedent(
    """
    import json, os, sys, time
    import trio
    import perdure

    directory, ready, go, stop = sys.argv[1:5]

    async def main():
        rt = perdure.Runtime(directory)

        @rt.workflow("gated")
        async def gated(ctx, inp: dict) -> dict:
            await ctx.custom("progress", {"stage": "waiting for go"})
            while not os.path.exists(go):
                await trio.sleep(0.02)
            for n in range(3):
                await ctx.custom("progress", {"stage": n})
            return {"went": True}

        @rt.task("quick")
        async def quick(ctx, config: dict) -> dict:
            return {"ok": True}

        async with rt:
            done = await rt.start("task:quick", {}, owner=perdure.Project("held"))
            await rt.wait(done.run.id)
            gated_run = await rt.start("workflow:gated", {}, owner=perdure.Project("held"))
            async for ev in rt.events(gated_run.run.id):
                if ev.type == "CUSTOM":
                    break
            with open(ready + ".tmp", "w") as f:
                json.dump({"quick": done.run.id, "gated": gated_run.run.id, "pid": os.getpid()}, f)
            os.replace(ready + ".tmp", ready)
            await rt.wait(gated_run.run.id)
            while not os.path.exists(stop):
                await trio.sleep(0.02)

    trio.run(main)
    """
)


@pytest.fixture
def held_directory(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A data directory owned by another process running a gated workflow."""
    directory, ready, go, stop = (tmp_path / n for n in ("data", "ready", "go", "stop"))
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(directory), str(ready), str(go), str(stop)],
        env=_cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            if holder.poll() is not None:
                _, err = holder.communicate()
                pytest.fail(f"holder process exited early: {err}")
            if time.monotonic() > deadline:
                pytest.fail("holder process did not get ready")
            time.sleep(0.02)
        info = json.loads(ready.read_text())
        yield {"dir": str(directory), "go": go, "holder": holder, **info}
        stop.touch()
        go.touch()
        holder.wait(timeout=30)
        assert holder.returncode == 0, holder.stderr.read() if holder.stderr else ""
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


def test_reads_beside_the_owning_process(
    held_directory: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    held = held_directory
    directory = held["dir"]
    # In-process and as a subprocess: list works read-only while the directory is owned.
    code, out, err = _run(["runs", "list", "--dir", directory, "--json"], capsys)
    assert code == 0, err
    runs = {r["id"]: r["status"] for r in json.loads(out)["runs"]}
    assert runs == {held["quick"]: "completed", held["gated"]: "running"}
    proc = _subprocess("runs", "list", "--dir", directory)
    assert proc.returncode == 0, proc.stderr
    assert held["gated"] in proc.stdout and "running" in proc.stdout

    # A follower in another process sees the live run through to its terminal event.
    follower = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "perdure.cli",
            "runs",
            "events",
            held["gated"],
            "--dir",
            directory,
            "--follow",
            "--json",
            "--poll",
            "0.05",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_cli_env(),
        cwd=REPO,
    )
    try:
        # Writing needs the directory: refused while it is owned, naming the holder.
        code, _, err = _run(["runs", "cancel", held["gated"], "--dir", directory], capsys)
        assert code == 2
        assert err.startswith("error: DIRECTORY_LOCKED: ")
        assert f"pid {held['pid']}" in err
        held["go"].touch()
        out, err = follower.communicate(timeout=60)
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
    assert follower.returncode == 0, err
    lines = _json_lines(out)
    assert [line["event_id"] for line in lines] == list(range(1, len(lines) + 1))
    types = [line["event"]["type"] for line in lines]
    assert types == ["RUN_STARTED", "CUSTOM", "CUSTOM", "CUSTOM", "CUSTOM", "RUN_FINISHED"]
    assert lines[-1]["event"]["result"] == {"went": True}


# -- bench ----------------------------------------------------------------------------


def test_bench_quick(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_file = tmp_path / "bench.json"
    code, out, err = _run(
        ["bench", "--quick", "--json", str(out_file), "--tmp", str(tmp_path)], capsys
    )
    assert code == 0, err
    assert "raw LMDB" in out and "runs/s" in out
    data = json.loads(out_file.read_text())
    assert data["quick"] is True
    assert data["machine"]["nproc"] >= 1
    assert {r["name"] for r in data["raw"]} == {"group sync", "group nosync", "single put sync"}
    assert {(f["durability"], f["inflight"]) for f in data["perdure"]} == {
        (d, n) for d in ("sync", "process") for n in (1, 10, 100)
    }
    for fig in data["perdure"]:
        assert fig["runs_per_s"] > 0 and fig["records"] >= 9 * fig["runs"]
        assert fig["ratio_to_raw"] > 0
    assert [p.name for p in tmp_path.iterdir()] == ["bench.json"]  # scratch stores removed


def test_bench_builtin_fallback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli, "_find_bench", lambda: None)
    monkeypatch.chdir(tmp_path)
    code, out, err = _run(["bench"], capsys)
    assert code == 0, err
    assert "quick bench" in out and "sync" in out and "process" in out
    assert list(tmp_path.iterdir()) == []
    code, _, err = _run(["bench", "--quick"], capsys)
    assert code == 2 and err.startswith("error: INVALID_INPUT: ")


@pytest.fixture(autouse=True)
def _no_stray_demo_data() -> Iterator[None]:
    existed = (REPO / "demo-data").exists()
    yield
    if not existed and (REPO / "demo-data").exists():
        shutil.rmtree(REPO / "demo-data")
