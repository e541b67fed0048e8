"""The pydantic-ai support agent of examples/pydantic_ai_agent.py, served by ``perdure serve``
and driven end to end by the official ``@ag-ui/client`` ``HttpAgent`` from node.

The server is a real process (``perdure serve examples.pydantic_ai_agent:runtime``); the
client is tests/agui_node/support_agent_e2e.mjs, which verifies every stream as it
reads it (``verifyEvents`` is part of the client's pipeline: a stream it rejects makes
``runAgent`` fail). After the server stops, the stored logs go through perdure's checks
and the official verifier (``official_agui_check``), the streams the client recorded
through the official verifier once more, and the journal is read to show that each
model request and tool call was made once.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio
from helpers.checks import check_store_logs
from helpers.official_verifier import NODE_DIR, run_verify_mjs
from test_server_agui import node_or_skip
from test_server_support import cli_env

import perdure
from perdure.agui import Event, decode_event, event_to_json
from perdure.storage import Store

pytestmark = pytest.mark.usefixtures("official_agui_check")

ROOT = Path(__file__).resolve().parent.parent
Wire = list[dict[str, Any]]


def serve_example(data: Path) -> tuple[subprocess.Popen[str], str]:
    """``perdure serve examples.pydantic_ai_agent:runtime`` from the repository root."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "perdure.cli",
            "serve",
            "examples.pydantic_ai_agent:runtime",
            "--port",
            "0",
        ],
        cwd=ROOT,
        env=cli_env({"SUPPORT_DATA": str(data)}),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("perdure: serving "):
        proc.kill()
        raise AssertionError(f"server did not start: {line!r} {proc.communicate()[1]}")
    return proc, line.split()[2]


def stored(data: Path) -> tuple[dict[str, Any], dict[str, list[Event]], dict[str, list[str]]]:
    """Records, logs and journal entry names (``kind name``) of every run."""
    store = Store(data, readonly=True)
    try:
        records = {rec.id: rec for rec in store.iter_runs()}
        logs = {
            run_id: [decode_event(raw) for _, raw in store.events(run_id)] for run_id in records
        }
        journals = {
            run_id: [f"{e.kind} {e.name}" for e in store.journal(run_id)] for run_id in records
        }
    finally:
        store.close()
    return records, logs, journals


def types(log: list[Event]) -> list[str]:
    return [json.loads(event_to_json(event))["type"] for event in log]


def shown(types: list[str]) -> list[str]:
    """Event types without the streamed deltas (their number depends on chunking)."""
    return [t for t in types if t not in ("TEXT_MESSAGE_CONTENT", "TOOL_CALL_ARGS")]


def ids(messages: Wire) -> list[str]:
    return [m["id"] for m in messages]


async def test_the_support_agent_served_over_agui_end_to_end(tmp_path: Path) -> None:
    node = node_or_skip()
    data = tmp_path / "data"
    server, url = serve_example(data)
    try:
        with trio.fail_after(60):
            client = await trio.run_process(
                [node, str(NODE_DIR / "support_agent_e2e.mjs"), url],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
    finally:
        server.send_signal(signal.SIGTERM)
        _, server_err = server.communicate(timeout=20)
    assert client.returncode == 0, client.stderr.decode()
    assert server.returncode == 0, server_err
    report = json.loads(client.stdout.decode().strip().splitlines()[-1])
    streams = {k: v for k, v in report.items() if isinstance(v, dict) and "types" in v}
    failed = {k: v["error"] for k, v in streams.items() if not v["ok"]}
    assert not failed, failed  # the client's own verifier accepted every stream

    # 1. The question: a streamed answer and the plain tool's call, its result, then
    # the refund's call and an interrupt asking for its approval.
    ask = report["ask"]
    tool_call = ["TOOL_CALL_START", "TOOL_CALL_END"]
    assert shown(ask["types"]) == [
        "RUN_STARTED",
        "STEP_STARTED",  # model:1
        "TEXT_MESSAGE_START",
        "TEXT_MESSAGE_END",
        *tool_call,  # lookup_order
        "STEP_FINISHED",
        "STEP_STARTED",  # tool:lookup_order:call_1
        "TOOL_CALL_RESULT",
        "STEP_FINISHED",
        "STEP_STARTED",  # model:2
        "TEXT_MESSAGE_START",
        "TEXT_MESSAGE_END",
        *tool_call,  # refund
        "STEP_FINISHED",
        "RUN_FINISHED",
    ]
    assert ask["types"].count("TEXT_MESSAGE_CONTENT") > 4  # streamed word by word
    events = ask["events"]
    starts = [e for e in events if e["type"] == "TOOL_CALL_START"]
    assert [(e["toolCallName"], e["toolCallId"]) for e in starts] == [
        ("lookup_order", "call_1"),
        ("refund", "call_2"),
    ]
    [lookup] = [e for e in events if e["type"] == "TOOL_CALL_RESULT"]
    assert lookup["toolCallId"] == "call_1" and json.loads(lookup["content"])["item"] == "kettle"
    assert events[-1]["outcome"]["type"] == "interrupt"
    refund = report["refundInterrupt"]
    assert refund["id"] == "approval:call_2" and refund["reason"] == "confirmation"
    assert "A-1001" in refund["message"]
    assert ask["pendingInterrupts"] == [refund]

    # 2. Approved (resume[] on a new request): the same run goes on and answers.
    approve = report["approve"]
    assert approve["events"][0]["runId"] == "support-1"  # the run resumed, not a new one
    assert shown(approve["types"]) == [
        "RUN_STARTED",
        "CUSTOM",  # perdure.approval
        "STEP_STARTED",  # tool:refund:call_2
        "TOOL_CALL_RESULT",
        "STEP_FINISHED",
        "STEP_STARTED",  # model:3
        "TEXT_MESSAGE_START",
        "TEXT_MESSAGE_END",
        "STEP_FINISHED",
        "MESSAGES_SNAPSHOT",
        "RUN_FINISHED",
    ]
    assert approve["events"][1]["value"] == {"key": "call_2", "approved": True, "approver": "ann"}
    assert approve["result"] == "Done: refunded 49.00 EUR on A-1001."
    assert approve["pendingInterrupts"] == []
    # The client's conversation is in order: each tool result right after its call.
    conversation = approve["messages"]
    assert [(m["role"], m["id"]) for m in conversation] == [
        ("user", "t-support-u1"),
        ("assistant", "msg_support-1_1"),
        ("tool", "toolresult_call_1"),
        ("assistant", "msg_support-1_2"),
        ("tool", "toolresult_call_2"),
        ("assistant", "msg_support-1_3"),
    ]
    snapshot = next(e for e in approve["events"] if e["type"] == "MESSAGES_SNAPSHOT")
    assert ids(snapshot["messages"]) == ids(conversation)

    # 3. The next turn of the thread starts from the client's history and uses it.
    follow = report["followUp"]
    assert follow["events"][0]["runId"] == "support-3"
    assert shown(follow["types"]) == [
        "RUN_STARTED",
        "STEP_STARTED",
        "TEXT_MESSAGE_START",
        "TEXT_MESSAGE_END",
        "STEP_FINISHED",
        "MESSAGES_SNAPSHOT",
        "RUN_FINISHED",
    ]
    assert follow["result"].startswith("Your refund went through (refunded 49.00 EUR on A-1001.)")
    assert ids(follow["messages"]) == [*ids(conversation), "t-support-u2", "msg_support-3_1"]

    # 4. Denied with a comment: the model is told why.
    assert report["denyInterrupt"]["id"] == "approval:call_2"
    deny = report["deny"]
    assert shown(deny["types"]) == [
        "RUN_STARTED",
        "CUSTOM",  # perdure.approval (approved: false)
        "TOOL_CALL_RESULT",  # the denial, as the refund's result
        "STEP_STARTED",
        "TEXT_MESSAGE_START",
        "TEXT_MESSAGE_END",
        "STEP_FINISHED",
        "MESSAGES_SNAPSHOT",
        "RUN_FINISHED",
    ]
    reason = "B-2002 is past the 30-day window."
    assert deny["events"][2]["content"] == reason
    assert deny["result"] == f"I could not refund order B-2002: {reason}"

    # 5. Cancelled over HTTP while the model streams: the message is closed, then the
    # run ends cancelled, all in the client's stream.
    cancel = report["cancel"]
    assert shown(cancel["types"]) == [
        "RUN_STARTED",
        "STEP_STARTED",
        "TEXT_MESSAGE_START",
        "TEXT_MESSAGE_END",
        "STEP_FINISHED",
        "RUN_FINISHED",
    ]
    assert cancel["events"][-1]["outcome"] == {"type": "cancelled"}
    assert report["cancelAnswer"]["cancelled"] is True

    # 6. The client's abort ends its stream only (the client reports a RUN_ERROR of its
    # own, code "abort"); the durable run goes on until it is cancelled.
    abort = report["abort"]
    assert abort["types"][-1] == "RUN_ERROR" and abort["events"][-1]["code"] == "abort"
    assert report["afterAbort"] == "running"
    assert report["abortCancel"]["cancelled"] is True and report["abortFinal"] == "cancelled"

    # Every stream the client saw, through the official verifier once more (complete).
    verdicts = run_verify_mjs(
        node, [s["events"] for s in streams.values() if s is not abort], "--complete"
    )
    assert all(v["ok"] for v in verdicts), verdicts

    # What was stored: valid logs whose segments are what the client received.
    assert check_store_logs(data) == []
    records, logs, journals = stored(data)
    assert {run_id: rec.status for run_id, rec in records.items()} == {
        "support-1": "completed",
        "support-3": "completed",
        "deny-1": "completed",
        "cancel-1": "cancelled",
        "abort-1": "cancelled",
    }
    assert types(logs["support-1"]) == ask["types"] + approve["types"]
    assert types(logs["deny-1"]) == report["denyAsk"]["types"] + deny["types"]
    assert types(logs["cancel-1"]) == cancel["types"]
    # The second turn's input is the client's history plus the new question.
    assert ids(records["support-3"].input["messages"]) == [*ids(conversation), "t-support-u2"]
    # Each model request and tool call was made once and journaled once.
    steps = [name for name in journals["support-1"] if name.startswith("step ")]
    assert steps == [
        "step model:1",
        "step tool:lookup_order:call_1",
        "step model:2",
        "step tool:refund:call_2",
        "step model:3",
    ]
    completion = records["support-1"].completion
    assert completion.model == "support" and completion.result == approve["result"]
    [usage] = completion.usage
    assert usage.model == "support" and usage.input_tokens > 0 and usage.output_tokens > 0

    # perdure's own fold of the log (rt.snapshot, what GET /runs/{id}/snapshot and the
    # SSE prelude serve) ends where the client did.
    async with perdure.Runtime(data) as rt:
        assert ids(rt.snapshot("support-1").messages) == ids(conversation)
        assert ids(rt.snapshot("support-3").messages) == ids(follow["messages"])
