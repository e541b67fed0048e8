"""The AG-UI endpoint ``POST /agents/{name}`` (R34): RunAgentInput in, SSE out.

With httpx: idempotent run ids, the interrupt contract (pending interrupts block new
input, a resume must cover every open interrupt, unknown interrupts, bad payloads,
replayed resumes), capabilities and HTTP-level errors. With node: the official
``@ag-ui/client`` ``HttpAgent`` through a tool call, an interrupt, a resume, an
approval and a cancel.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import trio
from helpers.official_verifier import NODE_DIR
from test_server_support import (
    agent_input,
    full_log,
    make_runtime,
    read_sse,
    served,
    tool_call_id,
    wait_status,
)

import perdure
from perdure.agui import verify_prefixes

pytestmark = pytest.mark.usefixtures("official_agui_check")


async def post_agent(s: Any, name: str, body: Any) -> Any:
    return await read_sse(s.client, "POST", f"/agents/{name}", json=body)


async def test_a_run_its_retry_and_the_interrupt_contract(data_dir: Path) -> None:
    rt = make_runtime(data_dir)
    async with served(rt) as s:
        first = await post_agent(s, "assistant", agent_input("t1", "run-1", "weather?"))
        assert first.status == 200
        assert first.types[0] == "RUN_STARTED" and first.types[-1] == "RUN_FINISHED"
        assert first.wire[0]["runId"] == "run-1" and first.wire[0]["threadId"] == "t1"
        outcome = first.wire[-1]["outcome"]
        assert outcome["type"] == "interrupt"
        [interrupt] = outcome["interrupts"]
        assert interrupt["reason"] == "tool_call" and interrupt["toolCallId"] == tool_call_id(
            "run-1"
        )
        verify_prefixes(first.wire)
        rec = rt.get("run-1")
        assert rec.owner == perdure.Conversation("t1") and rec.status == "waiting"
        assert rec.input["messages"] == [{"id": "u-run-1", "role": "user", "content": "weather?"}]

        # A retried POST replays the run's first segment; nothing new is stored.
        retry = await post_agent(s, "assistant", agent_input("t1", "run-1", "weather?"))
        assert retry.wire == first.wire and retry.ids == first.ids
        assert len(rt.list(limit=1000).runs) == 1

        # New input while the interrupt is open: RUN_ERROR, nothing started.
        blocked = await post_agent(s, "assistant", agent_input("t1", "run-2", "and now?"))
        assert blocked.status == 200 and blocked.types == ["RUN_ERROR"]
        assert blocked.wire[0]["code"] == "INTERRUPT_PENDING"
        assert interrupt["id"] in blocked.wire[0]["message"]
        verify_prefixes(blocked.wire)
        assert len(rt.list(limit=1000).runs) == 1

        # Resume entries for interrupts nobody announced, malformed entries: RUN_ERROR.
        for entries, code in (
            (
                [{"interruptId": "tool:nope", "status": "resolved", "payload": 1}],
                "UNKNOWN_INTERRUPT",
            ),
            ([{"status": "resolved"}], "INVALID_SIGNAL"),
            ([{"interruptId": interrupt["id"], "status": "maybe"}], "INVALID_SIGNAL"),
            ([{"interruptId": interrupt["id"], "status": "cancelled"}], "INVALID_SIGNAL"),
            (
                [
                    {"interruptId": interrupt["id"], "payload": 1},
                    {"interruptId": interrupt["id"], "payload": 2},
                ],
                "INVALID_SIGNAL",
            ),
        ):
            refused = await post_agent(s, "assistant", agent_input("t1", "run-x", resume=entries))
            assert refused.types == ["RUN_ERROR"] and refused.wire[0]["code"] == code, entries
        assert rt.get("run-1").status == "waiting"

        # The resume: a new segment of the same run, up to the next interrupt.
        entry = {"interruptId": interrupt["id"], "status": "resolved", "payload": "18C"}
        resumed = await post_agent(s, "assistant", agent_input("t1", "run-3", resume=[entry]))
        assert resumed.types[0] == "RUN_STARTED" and resumed.wire[0]["runId"] == "run-1"
        assert resumed.types[1] == "TOOL_CALL_RESULT" and resumed.wire[1]["content"] == "18C"
        assert resumed.ids[0] == first.ids[-1] + 1
        approval = resumed.wire[-1]["outcome"]["interrupts"][0]
        assert approval["reason"] == "confirmation" and approval["id"] == "approval:send"
        verify_prefixes(resumed.wire)

        # Replaying the same resume applies nothing twice and streams the same segment.
        again = await post_agent(s, "assistant", agent_input("t1", "run-3", resume=[entry]))
        assert again.wire == resumed.wire
        # A different payload for the answered interrupt is a conflict.
        other = {**entry, "payload": "rain"}
        conflict = await post_agent(s, "assistant", agent_input("t1", "run-4", resume=[other]))
        assert conflict.types == ["RUN_ERROR"]
        assert conflict.wire[0]["code"] in ("SIGNAL_CONFLICT", "RESUME_INCOMPLETE")

        # A payload failing the approval's schema: RUN_ERROR, the run keeps waiting.
        bad = {"interruptId": "approval:send", "payload": {"approved": "yes"}}
        refused = await post_agent(s, "assistant", agent_input("t1", "run-5", resume=[bad]))
        assert refused.types == ["RUN_ERROR"] and refused.wire[0]["code"] == "INVALID_SIGNAL"
        assert rt.get("run-1").status == "waiting"

        good = {"interruptId": "approval:send", "payload": {"approved": True}}
        done = await post_agent(s, "assistant", agent_input("t1", "run-6", resume=[good]))
        assert done.types[0] == "RUN_STARTED" and done.types[-1] == "RUN_FINISHED"
        assert done.wire[-1].get("outcome", {"type": "success"}) == {"type": "success"}
        assert done.wire[-1]["result"] == {"sent": True}
        verify_prefixes(done.wire)
        # The whole conversation is one run whose log is the three streams, in order.
        assert first.wire + resumed.wire + done.wire == await full_log(rt, "run-1")

        # Once finished, the thread takes new input again.
        fresh = await post_agent(s, "assistant", agent_input("t1", "run-7", "again"))
        assert fresh.types[0] == "RUN_STARTED" and fresh.wire[0]["runId"] == "run-7"
        await rt.cancel("run-7")


async def test_a_resume_must_cover_every_open_interrupt(data_dir: Path) -> None:
    rt = make_runtime(data_dir)
    async with served(rt) as s:
        first = await post_agent(s, "parallel", agent_input("t2", "par"))
        ids = [i["id"] for i in first.wire[-1]["outcome"]["interrupts"]]
        assert len(ids) == 2
        partial = [{"interruptId": ids[0], "status": "resolved", "payload": "a"}]
        refused = await post_agent(s, "parallel", agent_input("t2", "par-2", resume=partial))
        assert refused.types == ["RUN_ERROR"] and refused.wire[0]["code"] == "RESUME_INCOMPLETE"
        assert ids[1] in refused.wire[0]["message"]
        assert rt.get("par").status == "waiting" and len(rt.get("par").waiting.waits) == 2

        both = [*partial, {"interruptId": ids[1], "status": "resolved", "payload": "b"}]
        resumed = await post_agent(s, "parallel", agent_input("t2", "par-3", resume=both))
        # Both interrupts are answered in one commit: one resumed segment to the run's end.
        assert resumed.types.count("RUN_STARTED") == 1
        assert resumed.wire[-1].get("outcome", {"type": "success"}) == {"type": "success"}
        verify_prefixes(resumed.wire)
        assert first.wire + resumed.wire == await full_log(rt, "par")
        # A retry of the whole resume replays the whole stream.
        again = await post_agent(s, "parallel", agent_input("t2", "par-3", resume=both))
        assert again.wire == resumed.wire


async def test_http_level_errors_and_capabilities(data_dir: Path) -> None:
    rt = make_runtime(data_dir)
    async with served(rt) as s:
        r = await s.client.post("/agents/nobody", json=agent_input("t", "r"))
        assert r.status_code == 404 and r.json()["code"] == "UNKNOWN_TARGET"
        for body in (b"{oops", b'{"threadId": 5}', b"[]"):
            r = await s.client.post("/agents/assistant", content=body)
            assert r.status_code == 400 and r.json()["code"] == "INVALID_INPUT", body
        r = await s.client.post("/agents/assistant", json={**agent_input("t", "r"), "runId": ""})
        assert r.status_code == 400
        r = await s.client.post("/agents/assistant", json=agent_input("bad thread!", "r"))
        assert r.status_code == 400
        # A run id already used by another thread or agent: 409, nothing started.
        await read_sse(s.client, "POST", "/agents/slow", json=agent_input("t-a", "shared"), limit=2)
        r = await s.client.post("/agents/assistant", json=agent_input("t-b", "shared"))
        assert r.status_code == 409 and r.json()["code"] == "IDEMPOTENCY_CONFLICT"
        await rt.cancel("shared")
        assert [run.id for run in rt.list().runs] == ["shared"]

        caps = await s.client.get("/agents/assistant/capabilities")
        assert caps.status_code == 200
        body = caps.json()
        assert body["identity"] == {"name": "assistant", "type": "perdure"}
        assert body["transport"]["streaming"] is True
        assert body["humanInTheLoop"]["interrupts"] is True
        assert (await s.client.get("/agents/nobody/capabilities")).status_code == 404


async def test_approver_from_resume_metadata(data_dir: Path) -> None:
    rt = make_runtime(data_dir)

    @rt.agent("guarded")
    async def guarded(ctx: perdure.AgentContext, inp: perdure.AgentInput) -> dict:
        d = await ctx.wait_for_approval("go", approvers=["ann"])
        return {"by": d.approver}

    async with served(rt) as s:
        await post_agent(s, "guarded", agent_input("t3", "g1"))
        entry = {"interruptId": "approval:go", "status": "resolved", "payload": {"approved": True}}
        anonymous = await post_agent(s, "guarded", agent_input("t3", "g2", resume=[entry]))
        assert anonymous.wire[0]["code"] == "PERMISSION_DENIED"
        signed = {**entry, "metadata": {"approver": "ann"}}
        ok = await post_agent(s, "guarded", agent_input("t3", "g3", resume=[signed]))
        assert ok.wire[-1]["result"] == {"by": "ann"}


async def test_disconnecting_does_not_cancel_the_run(data_dir: Path) -> None:
    rt = make_runtime(data_dir)
    async with served(rt) as s:
        part = await read_sse(
            s.client, "POST", "/agents/slow", json=agent_input("t4", "gone"), limit=4
        )
        assert part.types[:2] == ["RUN_STARTED", "TEXT_MESSAGE_START"]
        await trio.sleep(0.1)
        assert rt.get("gone").status == "running"
        await rt.cancel("gone")


# -- the official client ----------------------------------------------------------------------


def node_or_skip() -> str:
    node = shutil.which("node")
    if node is None or not (NODE_DIR / "node_modules" / "@ag-ui" / "client").is_dir():
        if os.environ.get("PERDURE_REQUIRE_NODE"):
            pytest.fail("PERDURE_REQUIRE_NODE is set but node or @ag-ui/client is missing")
        pytest.skip("node and tests/agui_node/node_modules are needed")
    return node


async def test_the_official_http_agent_end_to_end(data_dir: Path) -> None:
    node = node_or_skip()
    rt = make_runtime(data_dir)
    async with served(rt) as s:
        proc = await trio.run_process(
            [node, str(NODE_DIR / "http_agent_e2e.mjs"), s.url],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr.decode()
        report = json.loads(proc.stdout.decode().strip().splitlines()[-1])

        first = report["first"]
        assert first["ok"], first
        assert first["types"][0] == "RUN_STARTED" and first["types"][-1] == "RUN_FINISHED"
        assert "TOOL_CALL_START" in first["types"] and "STATE_SNAPSHOT" in first["types"]
        tool = report["toolInterrupt"]
        assert tool["reason"] == "tool_call" and tool["toolCallId"] == tool_call_id("r-e2e")

        assert report["retry"]["ok"] and report["retry"]["types"] == first["types"]

        pending = report["pending"]
        assert not pending["ok"] or pending["types"] == ["RUN_ERROR"], pending
        assert pending["types"] == ["RUN_ERROR"]
        assert pending["events"][0]["code"] == "INTERRUPT_PENDING"

        second = report["second"]
        assert second["ok"], second
        assert second["types"][:2] == ["RUN_STARTED", "TOOL_CALL_RESULT"]
        assert report["approvalInterrupt"]["reason"] == "confirmation"

        third = report["third"]
        assert third["ok"], third
        assert third["result"] == {"sent": True}
        assert third["pendingInterrupts"] == []
        roles = [m["role"] for m in report["messages"]]
        assert roles[0] == "user" and "tool" in roles and roles[-1] == "assistant"
        assert report["messages"][-1]["content"] == "Weather: 18C and sunny; sent: True"
        assert report["state"] == {"step": 2, "log": ["asked"]}

        cancel = report["cancel"]
        assert cancel["ok"], cancel
        assert cancel["types"][-1] == "RUN_FINISHED"
        assert cancel["events"][-1]["outcome"] == {"type": "cancelled"}
        assert report["cancelAnswer"]["cancelled"] is True
        assert rt.get("r-e2e-cancel").status == "cancelled"
        assert rt.get("r-e2e").status == "completed"
        assert len(rt.list(limit=100).runs) == 2  # the retry and the refusal started nothing
        await wait_status(rt, "r-e2e", "completed")
