"""Task definitions (R24, R5, R30): schemas, whole-job retries, listing.

* ``input_schema``: a failing input is ``InvalidInput`` and nothing is stored;
  ``output_schema``: a failing result fails the job with ``INVALID_OUTPUT``;
* schema checks are bounded: a catastrophic-backtracking pattern cannot freeze the
  trio thread, and a schema never makes perdure fetch a remote ``$ref``;
* ``max_attempts``: whole-job retries with backoff, visible as ``CUSTOM perdure.restart``
  events; recorded steps are not run again, the failed one is;
* ``rt.targets()`` and ``perdure targets MODULE:ATTR`` list descriptions, schemas,
  attempts and timeouts.
"""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from helpers.checks import assert_valid_log, dump_store
from helpers.patterns import forbid_backtracking_re

import perdure
from perdure.testing import internals

P = perdure.Project("p1")
COUNTS: dict[str, int] = {}

INPUT_SCHEMA = {
    "type": "object",
    "properties": {"w": {"type": "integer", "minimum": 1}, "name": {"type": "string"}},
    "required": ["w"],
    "additionalProperties": False,
}


@pytest.fixture(autouse=True)
def _reset() -> None:
    COUNTS.clear()


def bump(name: str) -> int:
    COUNTS[name] = COUNTS.get(name, 0) + 1
    return COUNTS[name]


def make(path: Path, **options: Any) -> perdure.Runtime:
    options.setdefault("durability", "process")
    rt = perdure.Runtime(path, **options)

    @rt.task(
        "resize",
        input_schema=INPUT_SCHEMA,
        output_schema={"type": "object", "required": ["w2"]},
        timeout=300,
    )
    async def resize(ctx: perdure.RunContext, cfg: dict) -> dict:
        """Double a width.

        More words that targets() does not need."""
        if cfg.get("name") == "broken":
            return {"oops": True}
        return {"w2": cfg["w"] * 2}

    @rt.task("flaky", max_attempts=3, description="fails twice, then works")
    async def flaky(ctx: perdure.RunContext, inp: dict) -> dict:
        a = await ctx.step("a", lambda: bump(f"a:{ctx.run_id}"))

        def b() -> int:
            n = bump(f"b:{ctx.run_id}")
            if n <= inp["fail"]:
                raise ValueError(f"b failed ({n})")
            return n

        return {"a": a, "b": await ctx.step("b", b)}

    @rt.task("invalid_output", max_attempts=3, output_schema={"type": "integer"})
    async def invalid_output(ctx: perdure.RunContext, inp: Any) -> str:
        bump("invalid_output")
        return "not an integer"

    return rt


async def test_input_schema_refuses_before_storing(data_dir: Path, autojump_clock: Any) -> None:
    async with make(data_dir) as rt:
        store = internals(rt).store
        before = dump_store(store)
        for bad in ({}, {"w": 0}, {"w": "3"}, {"w": 3, "extra": 1}, [1], None):
            with pytest.raises(perdure.InvalidInput) as caught:
                await rt.start("task:resize", bad, owner=P)
            if isinstance(bad, dict):  # others fail the body's declared type first
                assert caught.value.detail["reason"] == "schema"
            with pytest.raises(perdure.InvalidInput):
                await rt.start_batch("task:resize", [{"w": 1}, bad], owner=P)
        assert dump_store(store) == before
        err = None
        try:
            await rt.start("task:resize", {"w": 0}, owner=P)
        except perdure.InvalidInput as exc:
            err = exc
        assert err is not None and err.detail["path"] == "/w" and "minimum" in err.message
        ok = await rt.start("task:resize", {"w": 4}, owner=P)
        done = await rt.wait(ok.run.id)
        assert done.completion is not None and done.completion.result == {"w2": 8}


async def test_output_schema_fails_the_job_and_is_not_retried(
    data_dir: Path, autojump_clock: Any
) -> None:
    async with make(data_dir) as rt:
        run = (await rt.start("task:resize", {"w": 2, "name": "broken"}, owner=P)).run
        done = await rt.wait(run.id)
        assert done.status == "failed" and done.completion is not None
        error = done.completion.error
        assert error is not None and error.code == "INVALID_OUTPUT"
        assert "'w2' is a required property" in error.message
        run = (await rt.start("task:invalid_output", None, owner=P)).run
        done = await rt.wait(run.id)
        assert done.completion.error.code == "INVALID_OUTPUT"  # type: ignore[union-attr]
        assert COUNTS["invalid_output"] == 1  # replaying the journal would fail the same way
        await assert_valid_log(rt, run.id)


async def test_whole_job_retries_with_backoff_visible_in_the_log(
    data_dir: Path, autojump_clock: Any
) -> None:
    async with make(data_dir) as rt:
        run = (await rt.start("task:flaky", {"fail": 2}, owner=P)).run
        done = await rt.wait(run.id)
        assert done.status == "completed" and done.completion is not None
        assert done.completion.result == {"a": 1, "b": 3}
        assert {f"a:{run.id}": 1, f"b:{run.id}": 3} == COUNTS  # "a" never re-ran
        wire = await assert_valid_log(rt, run.id)
        marks = [e["value"] for e in wire if e.get("name") == "perdure.restart"]
        assert [(m["attempt"], m["delay"]) for m in marks] == [(2, 1.0), (3, 2.0)]
        assert all(m["error"]["code"] == "STEP_FAILED" for m in marks)
        assert done.finished_at is not None and done.started_at is not None
        assert done.finished_at - done.started_at >= 3.0  # 1 s, then 2 s of backoff

        run = (await rt.start("task:flaky", {"fail": 5}, owner=P)).run
        done = await rt.wait(run.id)
        assert done.status == "failed" and COUNTS[f"b:{run.id}"] == 3  # 3 attempts in all
        assert done.completion.error.code == "STEP_FAILED"  # type: ignore[union-attr]


def test_task_options_are_checked_at_registration(data_dir: Path) -> None:
    rt = perdure.Runtime(data_dir)

    async def body(ctx: perdure.RunContext, inp: Any) -> None:
        return None

    for options in (
        {"max_attempts": 0},
        {"max_attempts": True},
        {"max_attempts": 2, "restart": perdure.RestartPolicy()},
        {"input_schema": {"type": 5}},
        {"input_schema": "not a schema"},
        {"output_schema": {"properties": {"x": {"pattern": "("}}}},
        {"input_schema": {"$ref": "https://example.invalid/schema.json"}},
        {"input_schema": {"items": [{"$ref": "file:///etc/passwd"}]}},
        {"description": 42},
    ):
        with pytest.raises(perdure.InvalidInput):
            rt.task("t", **options)(body)  # type: ignore[arg-type]


def test_targets_list_descriptions_schemas_and_attempts(data_dir: Path) -> None:
    rt = make(data_dir)
    infos = {info.target: info for info in rt.targets()}
    resize = infos["task:resize"]
    assert resize.description is not None and resize.description.startswith("Double a width.")
    assert resize.input_schema == INPUT_SCHEMA and resize.output_schema == {
        "type": "object",
        "required": ["w2"],
    }
    assert resize.timeout == 300 and resize.max_attempts is None
    flaky = infos["task:flaky"]
    assert flaky.description == "fails twice, then works" and flaky.max_attempts == 3


def test_perdure_targets_lists_a_programs_targets(tmp_path: Path) -> None:
    (tmp_path / "jobs_app.py").write_text(
        "import perdure\n"
        "rt = perdure.Runtime('data')\n"
        "@rt.task('resize', input_schema={'type': 'object'}, max_attempts=2, timeout=60)\n"
        "async def resize(ctx, cfg: dict) -> dict:\n"
        "    '''Resize an image.'''\n"
        "    return cfg\n"
    )
    out = subprocess.run(
        [sys.executable, "-m", "perdure.cli", "targets", "jobs_app:rt", "--json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    [info] = json.loads(out.stdout)["targets"]
    assert info == {
        "target": "task:resize",
        "kind": "job",
        "name": "resize",
        "description": "Resize an image.",
        "timeout": 60.0,
        "input_schema": {"type": "object"},
        "max_attempts": 2,
    }
    table = subprocess.run(
        [sys.executable, "-m", "perdure.cli", "targets", "jobs_app:rt"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (
        table.returncode == 0
        and "task:resize" in table.stdout
        and "Resize an image." in table.stdout
    )


# -- bounded checks ----------------------------------------------------------------------------


async def test_a_catastrophic_pattern_cannot_freeze_the_trio_thread(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    evil = {"^(a|aa)+$", "^(a+)+$", "^(x|xx)+$"}
    compiled_by_regex = forbid_backtracking_re(monkeypatch, evil)
    rt = perdure.Runtime(data_dir, durability="process")
    schema = {
        "type": "object",
        "properties": {
            "a": {"type": "string", "pattern": "^(a|aa)+$"},
            "b": {"type": "string", "pattern": "^(a+)+$"},
        },
        "patternProperties": {"^(x|xx)+$": {"type": "integer"}},
    }

    @rt.task("guarded", input_schema=schema)
    async def guarded(ctx: perdure.RunContext, inp: dict) -> None:
        return None

    ticks = 0

    async def heartbeat() -> None:
        nonlocal ticks
        while True:
            await trio.sleep(0.005)
            ticks += 1

    attack = "a" * 60 + "!"
    async with rt, trio.open_nursery() as nursery:
        nursery.start_soon(heartbeat)
        for inp in ({"a": attack}, {"b": attack}, {"x" * 60 + "!": 1}):
            before = ticks
            with pytest.raises(perdure.InvalidInput) as caught:
                await rt.start("task:guarded", inp, owner=P)
            assert caught.value.detail["reason"] in ("budget", "schema")
            with trio.fail_after(30):  # hang guard: the trio thread serves other tasks again
                while ticks == before:
                    await trio.sleep(0.005)
        nursery.cancel_scope.cancel()
    # Python's re would take hours on the first one and hold the GIL all along: the
    # patterns went to the regex engine (which takes a timeout), never to re.
    assert evil <= compiled_by_regex
    assert ticks > 0


class _Counting(http.server.BaseHTTPRequestHandler):
    hits = 0

    def do_GET(self) -> None:
        type(self).hits += 1
        body = b'{"type": "integer"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        return


@pytest.fixture
def schema_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Counting)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Counting.hits = 0
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


async def test_remote_refs_are_never_fetched(
    data_dir: Path, autojump_clock: Any, schema_server: str
) -> None:
    rt = perdure.Runtime(data_dir, durability="process")

    async def body(ctx: perdure.RunContext, inp: Any) -> None:
        return None

    with pytest.raises(perdure.InvalidInput, match="remote"):
        rt.task("direct", input_schema={"$ref": f"{schema_server}/int.json"})(body)
    # A relative $ref under a remote $id names a remote schema too: it does not resolve
    # within the schema, so it is refused at registration, still without a fetch.
    with pytest.raises(perdure.InvalidInput, match="does not resolve"):
        rt.task("relative", input_schema={"$id": f"{schema_server}/root.json", "$ref": "int.json"})(
            body
        )
    assert _Counting.hits == 0
