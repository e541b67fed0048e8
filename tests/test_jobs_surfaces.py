"""Logs, batches and schedules over HTTP, the command line and the hosts (R24, R25, R33, R36).

* ``GET /runs/{id}/logs`` (both directions), ``GET /batches/{id}``, ``GET /schedules``,
  ``GET /schedules/{name}``, ``POST /schedules/{name}/pause|resume|trigger`` (idempotent
  with a key) on the real server;
* ``perdure runs logs``, ``perdure schedules list|show|pause|resume|trigger`` on a data
  directory (reading beside an owner; changing one nobody owns) and through a server;
* the blocking ``Host`` and the ``AsyncioHost`` forward the new calls.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import trio
from test_server_support import make_runtime, served, spawn_server

import perdure

P = perdure.Project("p1")


def add_jobs(rt: perdure.Runtime) -> None:
    @rt.task("logger")
    async def logger(ctx: perdure.RunContext, inp: dict) -> int:
        for i in range(inp["n"]):
            ctx.log(f"entry {i}", level="warning" if i == 0 else "info", i=i)
        await ctx.step("s", lambda: ctx.log("from the step", step_field=True) or 1)
        return int(inp["n"])

    rt.schedule(
        "yearly", "0 0 1 1 *", target="task:logger", input={"n": 2}, timezone="Europe/Berlin"
    )


async def test_logs_batches_and_schedules_over_http(data_dir: Path) -> None:
    rt = make_runtime(data_dir)
    add_jobs(rt)
    async with served(rt) as s:
        c = s.client
        run = (await rt.start("task:logger", {"n": 5}, owner=P)).run
        await rt.wait(run.id)
        r = await c.get(f"/runs/{run.id}/logs", params={"limit": 4})
        assert r.status_code == 200, r.text
        page = r.json()
        assert [e["seq"] for e in page["entries"]] == [1, 2, 3, 4] and page["next_cursor"] == 4
        assert page["entries"][0] == {
            "seq": 1,
            "at": page["entries"][0]["at"],
            "level": "warning",
            "message": "entry 0",
            "fields": {"i": 0},
            "step": None,
            "attempt": 1,
        }
        r = await c.get(f"/runs/{run.id}/logs", params={"after": 4})
        assert [e["message"] for e in r.json()["entries"]] == ["entry 4", "from the step"]
        assert r.json()["entries"][-1]["step"] == "s" and r.json()["next_cursor"] is None
        r = await c.get(f"/runs/{run.id}/logs", params={"direction": "backward", "limit": 2})
        assert [e["seq"] for e in r.json()["entries"]] == [6, 5]
        for bad in ({"direction": "up"}, {"after": "x"}, {"limit": 0}):
            assert (await c.get(f"/runs/{run.id}/logs", params=bad)).status_code == 400
        assert (await c.get("/runs/missing/logs")).status_code == 404

        batch = await rt.start_batch("task:logger", [{"n": 1}, {"n": 2}], owner=P)
        for job in rt.list(batch_id=batch.id).runs:
            await rt.wait(job.id)
        r = await c.get(f"/batches/{batch.id}")
        assert r.status_code == 200 and r.json()["counts"] == {"completed": 2}
        assert r.json()["total"] == 2
        r = await c.get("/batches/missing")
        assert r.status_code == 404 and r.json()["code"] == "BATCH_NOT_FOUND"

        r = await c.get("/schedules")
        [listed] = r.json()["schedules"]
        assert listed["name"] == "yearly" and listed["declared"] is True
        assert len(listed["next_fire_times"]) == 5
        r = await c.get("/schedules/yearly")
        assert r.json()["cron"] == "0 0 1 1 *" and r.json()["timezone"] == "Europe/Berlin"
        r = await c.post("/schedules/yearly/pause")
        assert r.status_code == 200 and r.json()["paused"] is True
        assert r.json()["next_fire_times"] == []
        r = await c.post("/schedules/yearly/resume")
        assert r.json()["paused"] is False
        r = await c.post("/schedules/yearly/trigger", json={"idempotency_key": "http-1"})
        assert r.status_code == 202 and r.json()["duplicate"] is False
        first = r.json()["run"]["id"]
        r = await c.post("/schedules/yearly/trigger", headers={"Idempotency-Key": "http-1"})
        assert r.json()["duplicate"] is True and r.json()["run"]["id"] == first
        r = await c.post("/schedules/yearly/trigger")
        assert r.json()["run"]["id"] != first
        assert r.json()["run"]["trigger"] == {"type": "schedule", "ref": "yearly"}
        r = await c.get("/schedules/missing")
        assert r.status_code == 404 and r.json()["code"] == "SCHEDULE_NOT_FOUND"
        assert (await c.post("/schedules/missing/pause")).status_code == 404
        for job in rt.list(owner=perdure.Project("schedule:yearly")).runs:
            await rt.wait(job.id)


def cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> Any:
    return subprocess.run(
        [sys.executable, "-m", "perdure.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env=env,
    )


async def test_cli_logs_and_schedules_on_a_directory(data_dir: Path) -> None:
    rt = perdure.Runtime(data_dir, durability="sync")
    add_jobs(rt)
    async with rt:
        run = (await rt.start("task:logger", {"n": 3}, owner=P)).run
        await rt.wait(run.id)
        # Reading beside the owner (the runtime is still open).
        out = await trio.to_thread.run_sync(
            lambda: cli("runs", "logs", run.id, "--dir", str(data_dir), "--json")
        )
        assert out.returncode == 0, out.stderr
        lines = [json.loads(line) for line in out.stdout.splitlines()]
        assert [e["message"] for e in lines] == ["entry 0", "entry 1", "entry 2", "from the step"]
        out = await trio.to_thread.run_sync(
            lambda: cli(
                "runs", "logs", run.id, "--dir", str(data_dir), "--backward", "--limit", "2"
            )
        )
        assert (
            out.returncode == 0
            and out.stdout.index("from the step") < out.stdout.index("entry 2")
            and "entry 1" not in out.stdout
        )
        out = await trio.to_thread.run_sync(
            lambda: cli("schedules", "list", "--dir", str(data_dir))
        )
        assert out.returncode == 0 and "yearly" in out.stdout and "0 0 1 1 *" in out.stdout
        out = await trio.to_thread.run_sync(
            lambda: cli("schedules", "pause", "yearly", "--dir", str(data_dir))
        )
        assert out.returncode == 2 and "DIRECTORY_LOCKED" in out.stderr
    # Changing a schedule in a directory nobody owns (administration mode).
    d = str(data_dir)
    out = cli("schedules", "pause", "yearly", "--dir", d)
    assert out.returncode == 0 and "paused yearly" in out.stdout
    out = cli("schedules", "show", "yearly", "--dir", d, "--json")
    shown = json.loads(out.stdout)
    assert shown["paused"] is True and shown["next_fire_times"] == []
    assert "declared" not in shown
    assert cli("schedules", "resume", "yearly", "--dir", d).returncode == 0
    out = cli("schedules", "trigger", "yearly", "--key", "k1", "--dir", d, "--json")
    triggered = json.loads(out.stdout)
    assert triggered["run"]["status"] == "pending" and not triggered["duplicate"]
    again = json.loads(
        cli("schedules", "trigger", "yearly", "--key", "k1", "--dir", d, "--json").stdout
    )
    assert again["duplicate"] and again["run"]["id"] == triggered["run"]["id"]
    out = cli("schedules", "show", "missing", "--dir", d)
    assert out.returncode == 2 and "SCHEDULE_NOT_FOUND" in out.stderr
    out = cli("runs", "logs", "missing", "--dir", d)
    assert out.returncode == 2 and "RUN_NOT_FOUND" in out.stderr
    # The owner runs the pending, triggered run when it next opens the directory.
    rt = perdure.Runtime(data_dir, durability="sync")
    add_jobs(rt)
    async with rt:
        done = await rt.wait(triggered["run"]["id"])
        assert done.status == "completed" and not rt.get_schedule("yearly").paused
        assert rt.get_schedule("yearly").triggered == 1


APP = """
import perdure

rt = perdure.Runtime("data", durability="process")


@rt.task("logger")
async def logger(ctx, inp: dict) -> int:
    ctx.log("hello from the server", n=inp["n"])
    return inp["n"]


rt.schedule("yearly", "0 0 1 1 *", target="task:logger", input={"n": 1})
"""


def test_cli_schedules_and_logs_through_a_server(tmp_path: Path) -> None:
    (tmp_path / "served_app.py").write_text(APP)
    server = spawn_server(tmp_path, tmp_path / "data", write_module=False)
    try:
        env = {**os.environ}
        out = cli(
            "schedules", "trigger", "yearly", "--url", server.url, "--key", "s1", "--json", env=env
        )
        assert out.returncode == 0, out.stderr
        run_id = json.loads(out.stdout)["run"]["id"]
        out = cli("schedules", "pause", "yearly", "--url", server.url)
        assert out.returncode == 0 and "paused yearly" in out.stdout
        out = cli("schedules", "pause", "missing", "--url", server.url)
        assert out.returncode == 2 and "SCHEDULE_NOT_FOUND" in out.stderr
        out = cli("runs", "logs", run_id, "--dir", str(tmp_path / "data"), "--follow", "--json")
        assert out.returncode == 0, out.stderr
        [entry] = [json.loads(line) for line in out.stdout.splitlines()]
        assert entry["message"] == "hello from the server" and entry["fields"] == {"n": 1}
    finally:
        server.stop()


def test_hosts_forward_the_new_calls(data_dir: Path) -> None:
    host = perdure.Host(data_dir, durability="process")

    @host.task("logger")
    async def logger(ctx: perdure.RunContext, inp: dict) -> int:
        ctx.log("via host")
        return 1

    @host.task("parked")
    async def parked(ctx: perdure.RunContext, inp: dict) -> int:
        await ctx.wait_for_event("never")
        return 1

    host.schedule("yearly", "0 0 1 1 *", target="task:logger", input={})
    with host:
        run = host.start("task:logger", {}, owner=P).run
        host.wait(run.id)
        assert [e.message for e in host.logs(run.id).entries] == ["via host"]
        batch = host.start_batch("task:parked", [{}, {}], owner=P)
        assert host.batch(batch.id).total == 2
        assert host.cancel_batch(batch.id) == 2  # both were parked: both are cancelled
        for member in host.list(batch_id=batch.id).runs:
            assert host.wait(member.id).status == "cancelled"
        assert host.batch(batch.id).counts == {"cancelled": 2}
        assert len(host.list(batch_id=batch.id).runs) == 2
        assert [s.name for s in host.list_schedules()] == ["yearly"]
        host.pause_schedule("yearly")
        assert host.get_schedule("yearly").paused
        host.resume_schedule("yearly")
        started = host.trigger_schedule("yearly", "k")
        assert host.trigger_schedule("yearly", "k").run.id == started.run.id
        host.delete_schedule("yearly")
        assert host.list_schedules() == []

    async def main() -> None:
        ahost = perdure.AsyncioHost(data_dir.parent / "async", durability="process")

        @ahost.task("logger")
        async def logger(ctx: perdure.RunContext, inp: dict) -> int:
            ctx.log("via asyncio")
            return 1

        ahost.schedule("yearly", "0 0 1 1 *", target="task:logger", input={})
        async with ahost:
            run = (await ahost.start("task:logger", {}, owner=P)).run
            await ahost.wait(run.id)
            page = await ahost.logs(run.id)
            assert [e.message for e in page.entries] == ["via asyncio"]
            batch = await ahost.start_batch("task:logger", [{}], owner=P)
            assert (await ahost.batch(batch.id)).total == 1
            await ahost.pause_schedule("yearly")
            assert (await ahost.get_schedule("yearly")).paused
            await ahost.resume_schedule("yearly")
            started = await ahost.trigger_schedule("yearly", idempotency_key="a")
            assert not started.duplicate
            assert len(await ahost.list_schedules()) == 1
            await ahost.cancel_batch(batch.id)
            await ahost.delete_schedule("yearly")

    asyncio.run(main())
