"""``perdure serve`` and ``perdure runs resume`` as a user runs them: real processes."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import trio
from test_server_support import make_runtime, perdure_cli, spawn_server

import perdure

MARKUP_KEY = "[link=https://evil.example]click[/link] [/] [bold red]x"


async def _start_waiting(url: str, token: str | None = None) -> str:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=20) as client:
        r = await client.post(
            "/agents/assistant",
            json={
                "threadId": "t-cli",
                "runId": "cli-run",
                "messages": [],
                "tools": [],
                "context": [],
            },
        )
        assert r.status_code == 200
        with trio.fail_after(10):
            while (await client.get("/runs/cli-run")).json()["status"] != "waiting":
                await trio.sleep(0.02)
    return "cli-run"


async def test_serve_and_resume_through_the_server(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = spawn_server(tmp_path, data, "--token", "tok", "--heartbeat", "1")
    try:
        run_id = await _start_waiting(server.url, "tok")
        env = {"PERDURE_TOKEN": "tok"}
        tc = f"tc-{run_id}"
        out = perdure_cli(
            "runs",
            "resume",
            run_id,
            "--tool-result",
            tc,
            '"18C"',
            "--url",
            server.url,
            cwd=tmp_path,
            env=env,
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == f"resumed run {run_id}: tool:{tc}"
        again = perdure_cli(
            "runs",
            "resume",
            run_id,
            "--tool-result",
            tc,
            '"18C"',
            "--url",
            server.url,
            "--json",
            cwd=tmp_path,
            env=env,
        )
        assert json.loads(again.stdout) == {
            "accepted": True,
            "duplicate": True,
            "run_id": run_id,
            "key": f"tool:{tc}",
        }
        # Refusals print the server's error, code first; nothing is changed.
        wrong = perdure_cli(
            "runs",
            "resume",
            run_id,
            "--approve",
            "nope",
            "--url",
            server.url,
            cwd=tmp_path,
            env=env,
        )
        assert wrong.returncode == 2 and wrong.stderr.startswith("error: NOT_WAITING: ")
        denied = perdure_cli(
            "runs", "resume", run_id, "--approve", "send", "--url", server.url, cwd=tmp_path
        )
        assert denied.returncode == 2 and "error: UNAUTHORIZED" in denied.stderr
        bad_json = perdure_cli(
            "runs",
            "resume",
            run_id,
            "--event",
            "go",
            "{oops",
            "--url",
            server.url,
            cwd=tmp_path,
            env=env,
        )
        assert bad_json.returncode == 2 and "must be JSON" in bad_json.stderr
        with trio.fail_after(10):
            while True:
                r = httpx.get(
                    f"{server.url}/runs/{run_id}", headers={"Authorization": "Bearer tok"}
                )
                if r.json()["status"] == "waiting" and r.json()["waiting"]["reason"] == "approval":
                    break
                await trio.sleep(0.02)
        ok = perdure_cli(
            "runs",
            "resume",
            run_id,
            "--approve",
            "send",
            "--response",
            '{"approved": true}',
            "--url",
            server.url,
            cwd=tmp_path,
            env=env,
        )
        assert ok.returncode == 0, ok.stderr
        assert server.stop() == 0  # SIGTERM: a clean shutdown
    finally:
        if server.proc.poll() is None:
            server.kill()
    out = perdure_cli("runs", "show", "cli-run", "--dir", str(data), "--json", cwd=tmp_path)
    assert json.loads(out.stdout)["status"] == "completed"


async def test_resume_into_a_free_directory_prints_keys_literally(tmp_path: Path) -> None:
    data = tmp_path / "data"
    rt = make_runtime(data)

    @rt.workflow("gate")
    async def gate(ctx: perdure.RunContext, inp: dict) -> dict:
        d = await ctx.wait_for_approval(MARKUP_KEY)
        return {"approved": d.approved}

    async with rt:
        started = await rt.start("workflow:gate", {}, owner=perdure.Project("p1"))
        with trio.fail_after(5):
            while rt.get(started.run.id).status != "waiting":
                await trio.sleep(0.01)
    run_id = started.run.id
    out = perdure_cli(
        "runs",
        "resume",
        run_id,
        "--reject",
        MARKUP_KEY,
        "--approver",
        "ann",
        "--dir",
        str(data),
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"resumed run {run_id}: approval:{MARKUP_KEY}"
    again = perdure_cli(
        "runs",
        "resume",
        run_id,
        "--reject",
        MARKUP_KEY,
        "--approver",
        "ann",
        "--dir",
        str(data),
        cwd=tmp_path,
    )
    assert (
        again.stdout.strip()
        == f"resumed run {run_id}: approval:{MARKUP_KEY} (already taken: duplicate)"
    )
    conflict = perdure_cli(
        "runs", "resume", run_id, "--approve", MARKUP_KEY, "--dir", str(data), cwd=tmp_path
    )
    assert conflict.returncode == 2 and conflict.stderr.startswith("error: SIGNAL_CONFLICT")
    missing = perdure_cli(
        "runs", "resume", "nope", "--approve", "k", "--dir", str(data), cwd=tmp_path
    )
    assert missing.returncode == 2 and "RUN_NOT_ACTIVE" in missing.stderr
    # The owner opens the directory again: the run takes the stored decision and ends.
    rt2 = make_runtime(data)
    rt2.workflow("gate")(gate)
    async with rt2:
        done = await rt2.wait(run_id)
    assert done.completion is not None and done.completion.result == {"approved": False}


async def test_resume_needs_a_free_directory(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with make_runtime(data):
        out = perdure_cli(
            "runs", "resume", "r1", "--approve", "k", "--dir", str(data), cwd=tmp_path
        )
    assert out.returncode == 2 and "DIRECTORY_LOCKED" in out.stderr


def test_serve_usage_errors(tmp_path: Path) -> None:
    for args, text in (
        (["serve", "no-colon"], "MODULE:ATTR"),
        (["serve", "missing_module:rt"], "cannot import"),
        (["serve", "json:dumps"], "did not return a Runtime"),
        (["serve", "json:__name__"], "is not a perdure.Runtime"),
        (["serve", "json:rt", "--port", "70000"], "--port"),
        (
            ["runs", "resume", "r1", "--approve", "k", "--url", "http://127.0.0.1:9", "--dir", "d"],
            "not both",
        ),
    ):
        out = perdure_cli(*args, cwd=tmp_path)
        assert out.returncode == 2 and text in out.stderr, (args, out.stderr)
    out = perdure_cli(
        "runs", "resume", "r1", "--approve", "k", "--url", "http://127.0.0.1:9", cwd=tmp_path
    )
    assert out.returncode == 2 and "cannot reach" in out.stderr
