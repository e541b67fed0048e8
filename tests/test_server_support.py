"""Shared pieces of the server tests (no tests here): agents, a live server, SSE reading.

``served(rt)`` runs the real server (hypercorn's trio worker inside the runtime's
trio run, bound to a free loopback port) and yields a real ``httpx`` client.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import trio
from helpers.defs import register

import perdure
from perdure.agui import (
    ReasoningMessageContentEvent,
    ReasoningMessageEndEvent,
    ReasoningMessageStartEvent,
    TextMessageContentEvent,
    TextMessageEndEvent,
    TextMessageStartEvent,
    ToolCallArgsEvent,
    ToolCallEndEvent,
    ToolCallStartEvent,
)
from perdure.server import SSEOptions, serve

P = perdure.Project("p1")


def tool_call_id(run_id: str) -> str:
    return f"tc-{run_id}"[:128]


def register_agents(rt: perdure.Runtime) -> None:
    """Agents of the server tests (beside the standard definitions of helpers.defs)."""

    @rt.agent("assistant")
    async def assistant(ctx: perdure.AgentContext, inp: perdure.AgentInput) -> dict:
        """Text, reasoning, state, a streamed client-side tool call, then an approval."""
        await ctx.emit(
            ReasoningMessageStartEvent(message_id=f"r-{ctx.run_id}"),
            ReasoningMessageContentEvent(message_id=f"r-{ctx.run_id}", delta="thinking"),
            ReasoningMessageEndEvent(message_id=f"r-{ctx.run_id}"),
        )
        mid = f"a-{ctx.run_id}"
        await ctx.emit(TextMessageStartEvent(message_id=mid, role="assistant"))
        await ctx.emit(TextMessageContentEvent(message_id=mid, delta="Let me "))
        await ctx.state_snapshot({"step": 1, "log": []})
        await ctx.emit(TextMessageContentEvent(message_id=mid, delta="look."))
        tc = tool_call_id(ctx.run_id)
        await ctx.emit(
            ToolCallStartEvent(tool_call_id=tc, tool_call_name="get_weather", parent_message_id=mid)
        )
        await ctx.emit(ToolCallArgsEvent(tool_call_id=tc, delta='{"city":'))
        await ctx.state_delta([{"op": "add", "path": "/log/-", "value": "asked"}])
        await ctx.emit(ToolCallArgsEvent(tool_call_id=tc, delta='"Paris"}'))
        await ctx.emit(ToolCallEndEvent(tool_call_id=tc), TextMessageEndEvent(message_id=mid))
        weather = await ctx.wait_for_tool_result(tc)
        await ctx.state_delta([{"op": "replace", "path": "/step", "value": 2}])
        decision = await ctx.wait_for_approval(
            "send",
            prompt="Send the report?",
            schema={"type": "object", "properties": {"approved": {"type": "boolean"}}},
        )
        await ctx.say(f"Weather: {weather}; sent: {decision.approved}")
        return {"sent": decision.approved}

    @rt.agent("parallel")
    async def parallel(ctx: perdure.AgentContext, inp: perdure.AgentInput) -> dict:
        """Two client-side tool calls answered together (one interrupt, two ids)."""
        ids = [f"a-{ctx.run_id}", f"b-{ctx.run_id}"]
        for tc in ids:
            await ctx.emit(
                ToolCallStartEvent(tool_call_id=tc, tool_call_name="lookup"),
                ToolCallArgsEvent(tool_call_id=tc, delta="{}"),
                ToolCallEndEvent(tool_call_id=tc),
            )
        results = await ctx.wait_for_tool_results(ids)
        await ctx.say(f"got {sorted(map(str, results.values()))}")
        return {"results": results}

    @rt.agent("slow")
    async def slow(ctx: perdure.AgentContext, inp: perdure.AgentInput) -> None:
        """A long streamed text message (for cancels and mid-message joins)."""
        mid = f"s-{ctx.run_id}"
        await ctx.emit(TextMessageStartEvent(message_id=mid, role="assistant"))
        for i in range(400):
            await ctx.emit(TextMessageContentEvent(message_id=mid, delta=f"{i} "))
            await trio.sleep(0.01)
        await ctx.emit(TextMessageEndEvent(message_id=mid))


def make_runtime(path: Any, **options: Any) -> perdure.Runtime:
    options.setdefault("durability", "process")
    rt = perdure.Runtime(path, **options)
    rt.gates = register(rt)  # type: ignore[attr-defined]
    register_agents(rt)
    return rt


@dataclass
class Served:
    url: str
    client: httpx.AsyncClient
    rt: perdure.Runtime
    stop: trio.Event = field(default_factory=trio.Event)


@asynccontextmanager
async def served(
    rt: perdure.Runtime, *, token: str | None = None, **serve_options: Any
) -> AsyncIterator[Served]:
    """The real server on a free loopback port, and an httpx client for it."""
    async with trio.open_nursery() as nursery:
        stop = trio.Event()
        binds = await nursery.start(
            partial(serve, rt, port=0, token=token, shutdown_trigger=stop.wait, **serve_options)
        )
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with httpx.AsyncClient(base_url=binds[0], timeout=20, headers=headers) as client:
            yield Served(binds[0], client, rt, stop)
        stop.set()


@dataclass
class Stream:
    """One SSE response, parsed: ``(id or None, wire event)`` and the comments seen."""

    status: int
    events: list[tuple[int | None, dict[str, Any]]]
    comments: int = 0
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def wire(self) -> list[dict[str, Any]]:
        return [event for _, event in self.events]

    @property
    def ids(self) -> list[int]:
        return [i for i, _ in self.events if i is not None]

    @property
    def types(self) -> list[str]:
        return [e["type"] for e in self.wire]


async def read_sse(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    limit: int | None = None,
    **kwargs: Any,
) -> Stream:
    """Read an SSE response to its end (or until ``limit`` events)."""
    all_headers = {"Accept": "text/event-stream", **(headers or {})}
    async with client.stream(method, url, headers=all_headers, **kwargs) as response:
        stream = Stream(response.status_code, [], headers=dict(response.headers))
        if response.status_code != 200:
            await response.aread()
            return stream
        event_id: int | None = None
        data: list[str] = []
        async for line in response.aiter_lines():
            if line.startswith(":"):
                stream.comments += 1
            elif line.startswith("id:"):
                event_id = int(line[3:].strip())
            elif line.startswith("data:"):
                data.append(line[5:].strip())
            elif line == "":
                if data:
                    stream.events.append((event_id, json.loads("\n".join(data))))
                    if limit is not None and len(stream.events) >= limit:
                        return stream
                event_id, data = None, []
    return stream


async def wait_status(rt: perdure.Runtime, run_id: str, status: str, timeout: float = 10) -> None:
    with trio.fail_after(timeout):
        while rt.get(run_id).status != status:
            await trio.sleep(0.005)


async def full_log(rt: perdure.Runtime, run_id: str) -> list[dict[str, Any]]:
    return [e.to_wire() async for e in rt.events(run_id, follow=False)]


def agent_input(thread: str, run: str, text: str = "hi", **extra: Any) -> dict[str, Any]:
    return {
        "threadId": thread,
        "runId": run,
        "messages": [{"id": f"u-{run}", "role": "user", "content": text}],
        "tools": [],
        "context": [],
        "state": {},
        "forwardedProps": {},
        **extra,
    }


TESTS = Path(__file__).resolve().parent
SERVED_MODULE = """\
import os
from test_server_support import make_runtime

rt = make_runtime(os.environ["PERDURE_TEST_DIR"])
"""


@dataclass
class ServerProcess:
    """``perdure serve`` in a process of its own."""

    proc: subprocess.Popen[str]
    url: str

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(15)


def perdure_cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run the ``perdure`` command line (this interpreter) and wait for it."""
    return subprocess.run(
        [sys.executable, "-m", "perdure.cli", *args],
        cwd=cwd,
        env=cli_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    env.pop("PERDURE_TOKEN", None)
    env.update(extra or {})
    return env


def spawn_server(
    workdir: Path,
    data_dir: Path,
    *args: str,
    env: dict[str, str] | None = None,
    write_module: bool = True,
) -> ServerProcess:
    """``perdure serve served_app:rt --port 0`` over ``data_dir``, once it listens."""
    if write_module:
        (workdir / "served_app.py").write_text(SERVED_MODULE)
    proc = subprocess.Popen(
        [sys.executable, "-m", "perdure.cli", "serve", "served_app:rt", "--port", "0", *args],
        cwd=workdir,
        env=cli_env({"PERDURE_TEST_DIR": str(data_dir), **(env or {})}),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("perdure: serving "):
        proc.kill()
        raise AssertionError(
            f"server did not start: {line!r} {proc.stderr.read() if proc.stderr else ''}"
        )
    return ServerProcess(proc, line.split()[2])


__all__ = [
    "SERVED_MODULE",
    "P",
    "SSEOptions",
    "Served",
    "ServerProcess",
    "Stream",
    "agent_input",
    "cli_env",
    "full_log",
    "make_runtime",
    "perdure_cli",
    "read_sse",
    "register_agents",
    "served",
    "spawn_server",
    "tool_call_id",
    "wait_status",
]
