"""kill -9 in the middle of durable pydantic-ai conversations: nothing recorded runs twice.

A real process (this file run as a script) hosts a perdure runtime with a pydantic-ai
support agent: per run, a model request that calls ``lookup`` and ``refund`` (which
needs approval), an approval the process grants itself, and a second model request.
The model (a ``FunctionModel``) and both tools sleep a little, so kills land inside
model requests and tool calls, and append an fsync-ed witness line *outside the store*
each time they are called, with a token unique to that call; the token goes into the
model's response or the tool's result, and so into the journal when the step is
recorded.

The test SIGKILLs the process at several points of progress, relaunches it (recovery
re-activates the running runs, the waiting ones wake on the approval), and lets a last
launch finish. Then, for every run and every model request and tool call:

- the recorded result carries the token of the *last* call the witness file shows for
  it: no call was made after its result was recorded, across every kill and replay
  (a call cut by a kill before its result was recorded may run again; that is the
  at-least-once half of R6);
- that call really ran (its token is in the witness file);
- the run completed with the answer built from its recorded calls, and its log is
  valid AG-UI at every prefix.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import msgspec

HERE = Path(__file__).resolve()
RUNS = 8


# -- the workload (runs in the child process) ------------------------------------------------


def workload(data_dir: str, witness_path: str) -> None:
    import trio
    from pydantic_ai import Agent
    from pydantic_ai.messages import (
        ModelMessage,
        ModelRequest,
        ModelResponse,
        TextPart,
        ToolCallPart,
        ToolReturnPart,
        UserPromptPart,
    )
    from pydantic_ai.models.function import AgentInfo, FunctionModel

    import perdure
    from perdure.integrations.pydantic_ai import register_agent

    fd = os.open(witness_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    counter = 0

    def witness(kind: str, tag: str, key: str) -> str:
        nonlocal counter
        counter += 1
        token = f"{os.getpid()}.{counter}"
        os.write(fd, f"{kind} {tag} {key} {token}\n".encode())
        os.fsync(fd)
        return token

    def tag_of(messages: list[ModelMessage]) -> str:
        first = messages[0]
        assert isinstance(first, ModelRequest)
        return str(next(p.content for p in first.parts if isinstance(p, UserPromptPart)))

    async def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        tag = tag_of(messages)
        n = sum(isinstance(m, ModelResponse) for m in messages) + 1
        token = witness("model", tag, f"model:{n}")
        await asyncio.sleep(0.02 + (counter % 5) * 0.01)
        if n == 1:
            return ModelResponse(
                parts=[
                    ToolCallPart(
                        "lookup", {"order": tag, "token": token}, tool_call_id="call_lookup"
                    ),
                    ToolCallPart(
                        "refund", {"order": tag, "token": token}, tool_call_id="call_refund"
                    ),
                ]
            )
        results = {
            p.tool_call_id: p.content
            for m in messages
            if isinstance(m, ModelRequest)
            for p in m.parts
            if isinstance(p, ToolReturnPart)
        }
        return ModelResponse(
            parts=[TextPart(json.dumps({"token": token, "tools": results}, sort_keys=True))]
        )

    agent = Agent(FunctionModel(model))

    @agent.tool_plain
    async def lookup(order: str, token: str) -> str:
        mine = witness("tool", order, "tool:lookup")
        await asyncio.sleep(0.03)
        return mine

    @agent.tool_plain(requires_approval=True)
    async def refund(order: str, token: str) -> str:
        mine = witness("tool", order, "tool:refund")
        await asyncio.sleep(0.03)
        return mine

    rt = perdure.Runtime(data_dir)
    register_agent(rt, "support", agent)

    async def main() -> None:
        async with rt:
            ids = []
            for i in range(RUNS):
                started = await rt.start(
                    "agent:support",
                    {"messages": [{"id": "u1", "role": "user", "content": f"order-{i}"}]},
                    owner=perdure.Conversation(f"thread-{i}"),
                    idempotency_key=f"order-{i}",
                )
                ids.append(started.run.id)
            # The approver: grants each refund it has seen waiting for a little while (so
            # kills land on waiting runs too, which a relaunch replays when it approves).
            seen: dict[str, float] = {}
            while True:
                statuses = [rt.get(run_id).status for run_id in ids]
                if all(status == "completed" for status in statuses):
                    break
                now = trio.current_time()
                for run_id, status in zip(ids, statuses, strict=True):
                    if status == "waiting" and now - seen.setdefault(run_id, now) > 0.1:
                        decision = perdure.ApprovalDecision(
                            key="call_refund", approved=True, approver="bot"
                        )
                        with contextlib.suppress(perdure.NotWaiting):
                            await rt.resume(run_id, decision)
                await trio.sleep(0.01)
        print("all completed", flush=True)

    trio.run(main)


# -- the test ---------------------------------------------------------------------------------


def _launch(data_dir: Path, witness: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(HERE), str(data_dir), str(witness)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _lines(witness: Path) -> list[list[str]]:
    if not witness.exists():
        return []
    return [line.split() for line in witness.read_text().splitlines() if line.strip()]


def _recorded_token(name: str, value: bytes) -> str:
    """The witness token inside a recorded model response or tool outcome."""
    data: Any = msgspec.msgpack.decode(value)
    if name.startswith("model:"):
        part = data["parts"][0]
        if part["part_kind"] == "tool-call":
            args = part["args"] if isinstance(part["args"], dict) else json.loads(part["args"])
            return str(args["token"])
        return str(json.loads(part["content"])["token"])
    assert data["kind"] == "return", data
    return str(data["value"])


def test_kill9_mid_conversation_never_repeats_a_recorded_call(tmp_path: Path) -> None:
    import perdure
    from perdure.agui import verify_prefixes
    from perdure.storage import Store

    data_dir, witness = tmp_path / "data", tmp_path / "witness.txt"
    # Kill when the witness file reaches these many calls (an uncrashed workload makes
    # 4 per run, 32 in all; calls a kill cut short run again and add to the count): in
    # the first model requests, among lookups and approvals, among refunds and the
    # final requests. Each launch makes at least two calls before it is killed.
    targets = [4, 14, 24, 34]
    kills = 0
    for target in targets:
        proc = _launch(data_dir, witness)
        goal = max(target, len(_lines(witness)) + 2)
        deadline = time.monotonic() + 60
        while len(_lines(witness)) < goal and proc.poll() is None:
            assert time.monotonic() < deadline, "the workload made no progress"
            time.sleep(0.002)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.communicate(timeout=30)
    proc = _launch(data_dir, witness)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    assert "all completed" in out
    assert kills >= 3, "the kills should land while the conversations are in flight"

    attempts: dict[tuple[str, str], list[str]] = defaultdict(list)
    for _kind, tag, key, token in _lines(witness):
        attempts[(tag, key)].append(token)

    store = Store(data_dir, readonly=True)
    try:
        runs = list(store.iter_runs())
        assert len(runs) == RUNS
        for rec in runs:
            assert rec.status == "completed", rec.completion
            tag = str(rec.input["messages"][0]["content"])  # type: ignore[index]
            steps = [e for e in store.journal(rec.id) if e.kind == "step"]
            assert [e.name for e in steps] == [
                "model:1",
                "tool:lookup:call_lookup",
                "tool:refund:call_refund",
                "model:2",
            ]
            recorded: dict[str, str] = {}
            for entry in steps:
                key = (
                    entry.name
                    if entry.name.startswith("model:")
                    else ":".join(entry.name.split(":")[:2])
                )
                token = _recorded_token(entry.name, entry.value)
                calls = attempts[(tag, key)]
                assert token in calls, f"{tag} {key}: recorded token {token} was never produced"
                assert calls[-1] == token, (
                    f"{tag} {key}: called again after its result was recorded: {calls} (recorded {token})"
                )
                recorded[key] = token
            assert set(recorded) == {k for (t, k) in attempts if t == tag}
            final = json.loads(rec.completion.result)  # type: ignore[union-attr]
            assert final == {
                "token": recorded["model:2"],
                "tools": {
                    "call_lookup": recorded["tool:lookup"],
                    "call_refund": recorded["tool:refund"],
                },
            }
            wire = [
                json.loads(perdure.agui.event_to_json(perdure.agui.decode_event(raw)))
                for _, raw in store.events(rec.id)
            ]
            verify_prefixes(wire)
    finally:
        store.close()
    # Let the suite's after-test log check see this store too.
    perdure.Runtime(data_dir, recover=False)


if __name__ == "__main__":
    workload(sys.argv[1], sys.argv[2])
