"""The runs REST API over real HTTP (httpx against the server on a loopback port).

Every endpoint's success and error paths; idempotent starts and duplicate resumes;
bad input (malformed JSON, wrong shapes, oversize bodies) answered 400/413 with
nothing stored; the surface routes answer a missing run, schedule or batch with 404.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from test_server_support import P, make_runtime, served, wait_status

import perdure


async def test_health_and_unknown_routes(data_dir: Path) -> None:
    async with served(make_runtime(data_dir)) as s:
        r = await s.client.get("/health")
        assert r.status_code == 200 and r.json() == {"status": "ok", "version": perdure.__version__}
        r = await s.client.get("/nope")
        assert r.status_code == 404 and r.json()["code"] == "NOT_FOUND"
        r = await s.client.delete("/runs")
        assert r.status_code == 405 and r.json()["code"] == "METHOD_NOT_ALLOWED"
        assert r.headers["content-type"] == "application/json"


async def test_start_is_idempotent_and_validated(data_dir: Path) -> None:
    async with served(make_runtime(data_dir)) as s:
        body = {
            "target": "workflow:echo",
            "input": {"a": 1},
            "owner": {"type": "project", "id": "p1"},
        }
        r = await s.client.post("/runs", json={**body, "idempotency_key": "k1"})
        assert r.status_code == 202
        first = r.json()
        assert first["accepted"] is True and first["duplicate"] is False
        run = first["run"]
        assert run["target"] == "workflow:echo" and run["owner"] == {"type": "project", "id": "p1"}
        assert run["input"] == {"a": 1} and run["status"] in ("running", "completed")
        # The same key again (in the body or as the Idempotency-Key header): the same run.
        again = await s.client.post("/runs", json={**body, "idempotency_key": "k1"})
        header = await s.client.post("/runs", json=body, headers={"Idempotency-Key": "k1"})
        for r in (again, header):
            assert r.status_code == 202 and r.json()["duplicate"] is True
            assert r.json()["run"]["id"] == run["id"]
        # A caller-chosen run id, and the owner as one string.
        r = await s.client.post(
            "/runs",
            json={"target": "task:job", "input": {}, "owner": "project:p1", "run_id": "job-1"},
        )
        assert r.status_code == 202 and r.json()["run"]["id"] == "job-1"
        r = await s.client.post(
            "/runs",
            json={"target": "task:job", "input": {}, "owner": "project:p1", "run_id": "job-1"},
        )
        assert r.json()["duplicate"] is True
        # Reusing the id for something else is a conflict.
        r = await s.client.post(
            "/runs",
            json={"target": "workflow:echo", "input": {}, "owner": "project:p1", "run_id": "job-1"},
        )
        assert r.status_code == 409 and r.json()["code"] == "IDEMPOTENCY_CONFLICT"
        stored = len(s.rt.list(limit=1000).runs)

        refusals: list[tuple[Any, int, str]] = [
            ({**body, "target": "workflow:nope"}, 404, "UNKNOWN_TARGET"),
            ({**body, "owner": "team:x"}, 400, "INVALID_INPUT"),
            ({**body, "owner": {"type": "conversation", "id": "c1"}}, 400, "INVALID_INPUT"),
            ({**body, "target": "workflow:typed", "input": {"sku": 1}}, 400, "INVALID_INPUT"),
            ({**body, "surprise": True}, 400, "INVALID_INPUT"),
            ({"input": {}}, 400, "INVALID_INPUT"),
            ({**body, "run_id": "bad id!"}, 400, "INVALID_INPUT"),
            ([1, 2], 400, "INVALID_INPUT"),
        ]
        for payload, status, code in refusals:
            r = await s.client.post("/runs", json=payload)
            assert (r.status_code, r.json()["code"]) == (status, code), (payload, r.text)
            assert set(r.json()) == {"code", "message", "detail"}
        for raw in (b"{not json", b"", b"\xff\xfe", b'{"target": "workflow:echo", "owner": '):
            r = await s.client.post("/runs", content=raw)
            assert r.status_code == 400 and r.json()["code"] == "INVALID_INPUT", raw
        assert len(s.rt.list(limit=1000).runs) == stored  # nothing stored by a refusal


async def test_oversize_bodies_are_refused_and_store_nothing(data_dir: Path) -> None:
    async with served(make_runtime(data_dir), max_body=1024) as s:
        big = {"target": "workflow:echo", "input": {"x": "y" * 2000}, "owner": "project:p1"}
        r = await s.client.post("/runs", json=big)
        assert r.status_code == 413 and r.json()["code"] == "PAYLOAD_TOO_LARGE"

        async def chunked() -> Any:  # no Content-Length: the cap holds on the bytes read
            yield b'{"target": "workflow:echo", "owner": "project:p1", "input": "'
            for _ in range(40):
                yield b"z" * 100
            yield b'"}'

        r = await s.client.post("/runs", content=chunked())
        assert r.status_code == 413
        assert s.rt.list().runs == []
        ok = await s.client.post(
            "/runs", json={"target": "workflow:echo", "input": {}, "owner": "project:p1"}
        )
        assert ok.status_code == 202


async def test_the_default_cap_is_ten_mebibytes(data_dir: Path) -> None:
    async with served(make_runtime(data_dir)) as s:
        payload = (
            b'{"target": "workflow:echo", "owner": "project:p1", "input": "'
            + b"a" * (10 * 2**20)
            + b'"}'
        )
        r = await s.client.post("/runs", content=payload)
        assert r.status_code == 413
        assert r.json()["detail"] == {"limit": 10 * 2**20}


async def test_list_filters_and_pages(data_dir: Path) -> None:
    rt = make_runtime(data_dir)
    async with served(rt) as s:
        ids = []
        for i in range(5):
            r = await s.client.post(
                "/runs",
                json={"target": "workflow:echo", "input": {"i": i}, "owner": f"project:p{i % 2}"},
            )
            ids.append(r.json()["run"]["id"])
        await s.client.post(
            "/runs", json={"target": "task:job", "input": {}, "owner": "project:p0"}
        )
        for rid in ids:
            await s.client.get(f"/runs/{rid}/wait")
        r = await s.client.get("/runs", params={"owner": "project:p0", "kind": "workflow"})
        assert [run["id"] for run in r.json()["runs"]] == ids[0::2]
        r = await s.client.get("/runs", params={"kind": "job"})
        assert [run["kind"] for run in r.json()["runs"]] == ["job"]
        r = await s.client.get("/runs", params=[("status", "completed"), ("status", "failed")])
        ended = r.json()["runs"]
        assert {run["id"] for run in ended} >= set(ids)  # every one of them has ended
        assert all(run["status"] in ("completed", "failed") for run in ended)
        r = await s.client.get("/runs", params={"status": "running,pending"})
        assert r.status_code == 200
        in_flight = r.json()["runs"]
        assert all(run["status"] in ("running", "pending") for run in in_flight)
        assert not {run["id"] for run in in_flight} & set(ids)
        r = await s.client.get("/runs", params={"status": "completed,cancelled"})
        assert {run["id"] for run in r.json()["runs"]} >= set(ids)
        seen: list[str] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 2, "kind": "workflow"}
            if cursor:
                params["after"] = cursor
            page = (await s.client.get("/runs", params=params)).json()
            seen += [run["id"] for run in page["runs"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == ids
        r = await s.client.get("/runs", params={"root_id": ids[0]})
        assert [run["id"] for run in r.json()["runs"]] == [ids[0]]
        for bad in (
            {"limit": "0"},
            {"limit": "x"},
            {"status": "done"},
            {"kind": "k"},
            {"after": "-1"},
            {"owner": "me"},
        ):
            r = await s.client.get("/runs", params=bad)
            assert r.status_code == 400 and r.json()["code"] == "INVALID_INPUT", bad


async def test_get_events_page_snapshot(data_dir: Path) -> None:
    async with served(make_runtime(data_dir)) as s:
        r = await s.client.post(
            "/runs", json={"target": "workflow:emit", "input": {"n": 5}, "owner": "project:p1"}
        )
        rid = r.json()["run"]["id"]
        done = (await s.client.get(f"/runs/{rid}/wait")).json()
        assert (await s.client.get(f"/runs/{rid}")).json() == done
        assert done["completion"] == {"status": "completed", "result": {"n": 5}}
        page = (await s.client.get(f"/runs/{rid}/events", params={"after": 2, "limit": 3})).json()
        assert [e["event_id"] for e in page["events"]] == [3, 4, 5]
        assert page["next_after"] == 5 and page["more"] is True
        assert page["events"][0]["run_id"] == rid and page["events"][0]["event"]["type"] == "CUSTOM"
        rest = (await s.client.get(f"/runs/{rid}/events", params={"after": 5})).json()
        assert [e["event_id"] for e in rest["events"]] == [6, 7] and rest["more"] is False
        empty = (await s.client.get(f"/runs/{rid}/events", params={"after": 7})).json()
        assert empty == {"events": [], "next_after": 7, "more": False}
        snap = (await s.client.get(f"/runs/{rid}/snapshot")).json()
        assert snap["after_event_id"] == 7 and snap["run"]["id"] == rid
        assert snap["messages"] == [] and snap["state"] is None and snap["open_tool_calls"] == []
        upto = (await s.client.get(f"/runs/{rid}/snapshot", params={"upto": 2})).json()
        assert upto["after_event_id"] == 2
        for path in (
            f"/runs/{rid}/events?after=x",
            f"/runs/{rid}/events?limit=0",
            f"/runs/{rid}/snapshot?upto=-1",
        ):
            assert (await s.client.get(path)).status_code == 400
        for path in ("/runs/missing", "/runs/missing/events", "/runs/missing/snapshot"):
            r = await s.client.get(path)
            assert r.status_code == 404 and r.json()["code"] == "RUN_NOT_FOUND"
        r = await s.client.get("/runs/bad%20id")
        assert r.status_code == 400


async def test_snapshot_of_an_agent_run(data_dir: Path) -> None:
    rt = make_runtime(data_dir)
    async with served(rt) as s:
        started = await rt.start(
            "agent:assistant",
            perdure.AgentInput(messages=[{"id": "u1", "role": "user", "content": "weather?"}]),
            owner=perdure.Conversation("c1"),
        )
        await wait_status(rt, started.run.id, "waiting")
        snap = (await s.client.get(f"/runs/{started.run.id}/snapshot")).json()
        assert [m["role"] for m in snap["messages"]] == ["user", "reasoning", "assistant"]
        assistant = snap["messages"][2]
        assert assistant["content"] == "Let me look."
        assert assistant["toolCalls"][0]["function"] == {
            "name": "get_weather",
            "arguments": '{"city":"Paris"}',
        }
        assert snap["state"] == {"step": 1, "log": ["asked"]}
        assert snap["open_tool_calls"] == [assistant["toolCalls"][0]["id"]]
        assert [i["reason"] for i in snap["interrupts"]] == ["tool_call"]
        assert snap["run"]["status"] == "waiting"


async def test_resume_over_http(data_dir: Path) -> None:
    rt = make_runtime(data_dir)

    @rt.workflow("approve")
    async def approve(ctx: perdure.RunContext, inp: dict) -> dict:
        d = await ctx.wait_for_approval(
            "ok", approvers=["ann", "bob"], schema={"type": "object", "required": ["why"]}
        )
        v = await ctx.wait_for_input("size", schema={"type": "integer"})
        e = await ctx.wait_for_event("go")
        return {"approved": d.approved, "size": v, "event": e}

    async with served(rt) as s:
        rid = (
            await s.client.post(
                "/runs", json={"target": "workflow:approve", "input": {}, "owner": "project:p1"}
            )
        ).json()["run"]["id"]
        await wait_status(rt, rid, "waiting")
        approval = {
            "type": "approval",
            "key": "ok",
            "approved": True,
            "approver": "ann",
            "response": {"why": "fine"},
        }
        r = await s.client.post(f"/runs/{rid}/resume", json=approval)
        assert r.status_code == 200
        assert r.json() == {
            "accepted": True,
            "duplicate": False,
            "run_id": rid,
            "key": "approval:ok",
        }
        r = await s.client.post(f"/runs/{rid}/resume", json=approval)
        assert r.json()["duplicate"] is True
        refusals = [
            ({**approval, "approved": False}, 409, "SIGNAL_CONFLICT"),
            ({"type": "input", "key": "size", "value": "big"}, 400, "INVALID_SIGNAL"),
            ({"type": "event", "name": "other"}, 409, "NOT_WAITING"),
            ({"type": "nope", "key": "x"}, 400, "INVALID_INPUT"),
            ({"type": "input"}, 400, "INVALID_INPUT"),
        ]
        await wait_status(rt, rid, "waiting")
        for body, status, code in refusals:
            r = await s.client.post(f"/runs/{rid}/resume", json=body)
            assert (r.status_code, r.json()["code"]) == (status, code), (body, r.text)
        assert (await s.client.post(f"/runs/{rid}/resume", content=b"nope")).status_code == 400
        r = await s.client.post(
            f"/runs/{rid}/resume", json={"type": "input", "key": "size", "value": 3}
        )
        assert r.json()["duplicate"] is False
        await wait_status(rt, rid, "waiting")
        r = await s.client.post(
            f"/runs/{rid}/resume", json={"type": "event", "name": "go", "payload": [1]}
        )
        assert r.status_code == 200
        done = (await s.client.get(f"/runs/{rid}/wait")).json()
        assert done["completion"]["result"] == {"approved": True, "size": 3, "event": [1]}
        r = await s.client.post("/runs/missing/resume", json=approval)
        assert r.status_code == 410 and r.json()["code"] == "RUN_NOT_ACTIVE"

        # An approver outside the allow-list: 403.
        rid2 = (
            await s.client.post(
                "/runs", json={"target": "workflow:approve", "input": {}, "owner": "project:p1"}
            )
        ).json()["run"]["id"]
        await wait_status(rt, rid2, "waiting")
        r = await s.client.post(f"/runs/{rid2}/resume", json={**approval, "approver": "eve"})
        assert r.status_code == 403 and r.json()["code"] == "PERMISSION_DENIED"
        assert rt.get(rid2).status == "waiting"


async def test_cancel_over_http_cancels_the_tree(data_dir: Path) -> None:
    rt = make_runtime(data_dir)

    @rt.workflow("parent")
    async def parent(ctx: perdure.RunContext, inp: dict) -> dict:
        child = await ctx.start_child("workflow:block", {"gate": "never"})
        return {"child": await child.result()}

    async with served(rt) as s:
        rid = (
            await s.client.post(
                "/runs", json={"target": "workflow:parent", "input": {}, "owner": "project:p1"}
            )
        ).json()["run"]["id"]
        with trio.fail_after(5):
            while not (children := rt.list(parent_id=rid).runs):
                await trio.sleep(0.01)
        r = await s.client.post(f"/runs/{rid}/cancel", json={"reason": "stop it"})
        assert r.status_code == 200
        assert r.json()["cancelled"] is True and r.json()["run"]["status"] == "cancelled"
        assert rt.get(children[0].id).status == "cancelled"
        again = await s.client.post(f"/runs/{rid}/cancel")
        assert again.json()["cancelled"] is False
        assert (await s.client.post("/runs/missing/cancel")).status_code == 404
        assert (await s.client.post(f"/runs/{rid}/cancel", json={"reason": 5})).status_code == 400


async def test_wait_returns_202_with_the_current_record_on_timeout(data_dir: Path) -> None:
    rt = make_runtime(data_dir)
    async with served(rt) as s:
        rid = (
            await s.client.post(
                "/runs",
                json={"target": "workflow:block", "input": {"gate": "g"}, "owner": "project:p1"},
            )
        ).json()["run"]["id"]
        r = await s.client.get(f"/runs/{rid}/wait", params={"timeout": "0.1"})
        assert r.status_code == 202 and r.json()["status"] == "running"
        rt.gates.open("g")  # type: ignore[attr-defined]
        r = await s.client.get(f"/runs/{rid}/wait", params={"timeout": "5"})
        assert r.status_code == 200 and r.json()["status"] == "completed"
        for bad in ("-1", "x", "301", "nan"):
            assert (
                await s.client.get(f"/runs/{rid}/wait", params={"timeout": bad})
            ).status_code == 400
        assert (await s.client.get("/runs/missing/wait")).status_code == 404


SURFACES = [
    ("GET", "/runs/{rid}/logs", "RUN_NOT_FOUND"),
    ("GET", "/runs/{rid}/graph", "RUN_NOT_FOUND"),
    ("GET", "/schedules/nightly", "SCHEDULE_NOT_FOUND"),
    ("POST", "/schedules/nightly/pause", "SCHEDULE_NOT_FOUND"),
    ("POST", "/schedules/nightly/resume", "SCHEDULE_NOT_FOUND"),
    ("POST", "/schedules/nightly/trigger", "SCHEDULE_NOT_FOUND"),
    ("GET", "/batches/b1", "BATCH_NOT_FOUND"),
]


@pytest.mark.parametrize(("method", "path", "code"), SURFACES)
async def test_surface_routes_map_missing_things_to_404(
    data_dir: Path, method: str, path: str, code: str
) -> None:
    """Logs, graph, schedule and batch routes reach the runtime (tests/test_jobs_surfaces.py
    and tests/test_graph_state.py cover their answers); a missing run, schedule or batch
    is the runtime's own 404, never a 500, and a refused change stores nothing."""
    rt = make_runtime(data_dir)
    async with served(rt) as s:
        r = await s.client.request(method, path.format(rid="r1"))
        assert r.status_code == 404 and r.json()["code"] == code, r.text
        assert rt.list_schedules() == []
        assert rt.list(owner=P).runs == []


async def test_errors_inside_the_runtime_are_500_without_details(
    data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rt = make_runtime(data_dir)
    async with served(rt) as s:

        def broken(run_id: str) -> None:
            raise RuntimeError("secret stored text")

        rt.__dict__["get"] = broken
        r = await s.client.get("/runs/r1")
        assert r.status_code == 500
        assert r.json() == {
            "code": "INTERNAL_ERROR",
            "message": "internal server error",
            "detail": {},
        }
        assert "secret" not in r.text
        assert "secret stored text" in caplog.text


async def test_http_errors_use_the_error_http_status(data_dir: Path) -> None:
    """Every PerdureError class maps to its own http_status (a table, not branches)."""
    from perdure.server._errors_http import problem_of

    for cls in perdure.PerdureError.__subclasses__():
        response = problem_of(cls("m"))
        assert response is not None and response.status_code == cls.http_status
    grouped = BaseExceptionGroup("g", [perdure.RunNotFound("x")])
    response = problem_of(grouped)
    assert response is not None and response.status_code == 404
    assert problem_of(ValueError()) is None
    _ = httpx


# -- found by trying the server as a new user -------------------------------------------------


async def test_resume_with_a_misspelt_field_is_refused_and_stores_nothing(
    data_dir: Path,
) -> None:
    rt = make_runtime(data_dir)

    @rt.workflow("tool")
    async def tool(ctx: perdure.RunContext, inp: dict) -> dict:
        return {"t": await ctx.wait_for_tool_result("c1")}

    async with served(rt) as s:
        rid = (await rt.start("workflow:tool", {}, owner=P)).run.id
        await wait_status(rt, rid, "waiting")
        for typo in (
            {"type": "tool_result", "tool_call_id": "c1", "contnet": {"temp": "18C"}},
            {"type": "tool_result", "tool_call_id": "c1", "content": 1, "extra": 1},
        ):
            r = await s.client.post(f"/runs/{rid}/resume", json=typo)
            assert r.status_code == 400 and r.json()["code"] == "INVALID_INPUT", r.text
        assert rt.get(rid).status == "waiting"
        body = {"type": "tool_result", "tool_call_id": "c1", "content": {"temp": "18C"}}
        r = await s.client.post(f"/runs/{rid}/resume", json=body)
        assert r.status_code == 200 and r.json()["duplicate"] is False
        done = await rt.wait(rid)
        assert done.completion is not None and done.completion.result == {"t": {"temp": "18C"}}


async def test_odd_input_is_a_400_never_a_500(data_dir: Path) -> None:
    rt = make_runtime(data_dir)
    async with served(rt) as s:
        deep = b'{"target": "workflow:echo", "owner": "project:p1", "input": '
        deep += b"[" * 5000 + b"]" * 5000 + b"}"
        r = await s.client.post("/runs", content=deep)
        assert r.status_code == 400 and r.json()["code"] == "INVALID_INPUT", r.text
        rid = (await rt.start("workflow:echo", {}, owner=P)).run.id
        await rt.wait(rid)
        r = await s.client.get(f"/runs/{rid}/logs", params={"after": "²"})
        assert r.status_code == 400 and r.json()["code"] == "INVALID_INPUT", r.text
        # An empty idempotency key is a mistake, not "no key".
        body = {"target": "workflow:echo", "input": {}, "owner": "project:p1"}
        r = await s.client.post("/runs", json={**body, "idempotency_key": ""})
        assert r.status_code == 400 and r.json()["code"] == "INVALID_INPUT", r.text
        assert [run.id for run in rt.list(owner=P).runs] == [rid]


async def test_list_refuses_unknown_filters_and_lists_a_batch(data_dir: Path) -> None:
    rt = make_runtime(data_dir)
    async with served(rt) as s:
        lone = (await rt.start("task:job", {}, owner=P)).run.id
        batch = await rt.start_batch("task:job", [{}, {}], owner=P)
        r = await s.client.get("/runs", params={"batch_id": batch.id})
        members = {run["id"] for run in r.json()["runs"]}
        assert r.status_code == 200 and len(members) == 2 and lone not in members
        r = await s.client.get("/runs", params={"batchid": batch.id})  # misspelt
        assert r.status_code == 400 and "batchid" in r.json()["message"]


async def test_the_last_full_page_of_events_says_there_is_no_more(data_dir: Path) -> None:
    rt = make_runtime(data_dir)
    async with served(rt) as s:
        rid = (await rt.start("workflow:echo", {}, owner=P)).run.id
        done = await rt.wait(rid)
        total = done.last_event_id
        assert total >= 2
        r = await s.client.get(f"/runs/{rid}/events", params={"after": 0, "limit": total})
        page = r.json()
        assert len(page["events"]) == total and page["more"] is False
        r = await s.client.get(f"/runs/{rid}/events", params={"after": 0, "limit": total - 1})
        page = r.json()
        assert len(page["events"]) == total - 1 and page["more"] is True
        assert page["next_after"] == total - 1


async def test_schedule_pause_refuses_a_malformed_body(data_dir: Path) -> None:
    rt = make_runtime(data_dir)
    rt.schedule("nightly", "0 3 * * *", target="task:job", input={})
    async with served(rt) as s:
        r = await s.client.post("/schedules/nightly/pause", content=b"garbage")
        assert r.status_code == 400 and not rt.get_schedule("nightly").paused
        r = await s.client.post("/schedules/nightly/pause", json={"really": True})
        assert r.status_code == 400 and not rt.get_schedule("nightly").paused
        r = await s.client.post("/schedules/nightly/pause", json={})
        assert r.status_code == 200 and rt.get_schedule("nightly").paused
        r = await s.client.post("/schedules/nightly/trigger", json={"idempotency_key": ""})
        assert r.status_code == 400 and rt.get_schedule("nightly").runs == 0


async def test_a_wait_in_flight_is_answered_when_the_server_shuts_down(data_dir: Path) -> None:
    rt = make_runtime(data_dir)
    answers: list[httpx.Response] = []
    async with served(rt) as s:
        rid = (await rt.start("workflow:block", {"gate": "g"}, owner=P)).run.id

        async def waiter() -> None:
            answers.append(await s.client.get(f"/runs/{rid}/wait", params={"timeout": "120"}))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
            await trio.sleep(0.2)  # the wait is in flight
            with trio.fail_after(20):
                s.stop.set()
                while not answers:
                    await trio.sleep(0.01)
    [r] = answers
    assert r.status_code == 202 and r.json()["id"] == rid and r.json()["status"] == "running"
