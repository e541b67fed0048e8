"""A server killed with SIGKILL mid-stream: its clients reconnect to a new server process
on the same directory and lose nothing (R20, R35).

The run streams text from inside durable steps (``ctx.flush()`` commits each piece
live), so the kill cuts a step with a message still open. The new process recovers the
run (closing what the cut attempt left open, R21) and re-runs the step; a client that
reconnects with its ``Last-Event-ID`` gets a prelude and the rest of the log. What the
client received over both connections is the stored log, exactly, without a gap or a
duplicate, and each connection's stream is valid AG-UI.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import trio
from test_server_support import SERVED_MODULE, spawn_server

from perdure.agui import verify_events, verify_prefixes

STORY_MODULE = (
    SERVED_MODULE
    + """
import trio
import perdure
from perdure.agui import TextMessageContentEvent, TextMessageEndEvent, TextMessageStartEvent


@rt.agent("story")
async def story(ctx: perdure.AgentContext, inp: perdure.AgentInput) -> dict:
    for part in range(8):

        async def write(part: int = part) -> int:
            mid = f"m{part}-{ctx.run_id}"
            await ctx.emit(TextMessageStartEvent(message_id=mid, role="assistant"))
            for i in range(8):
                await ctx.emit(TextMessageContentEvent(message_id=mid, delta=f"{part}.{i} "))
                await ctx.flush()
                await trio.sleep(0.02)
            await ctx.emit(TextMessageEndEvent(message_id=mid))
            return part

        await ctx.step(f"part{part}", write)
    return {"parts": 8}
"""
)


async def read_frames(
    client: httpx.AsyncClient,
    url: str,
    last_id: int,
    into: list[tuple[int | None, dict[str, Any]]],
    stop_after: int | None = None,
) -> bool:
    """Append complete SSE frames to ``into``; True if the stream ended by itself."""
    headers = {"Accept": "text/event-stream", "Last-Event-ID": str(last_id)}
    buffer = ""
    try:
        async with client.stream("GET", url, headers=headers) as response:
            assert response.status_code == 200
            async for text in response.aiter_text():
                buffer += text
                while "\n\n" in buffer:
                    raw, buffer = buffer.split("\n\n", 1)
                    event_id = None
                    data = None
                    for line in raw.split("\n"):
                        if line.startswith("id:"):
                            event_id = int(line[3:])
                        elif line.startswith("data:"):
                            data = line[5:].strip()
                    if data is not None:
                        import json

                        into.append((event_id, json.loads(data)))
                    if stop_after is not None and sum(1 for i, _ in into if i) >= stop_after:
                        return False
    except (httpx.RemoteProtocolError, httpx.ReadError):
        return False  # the server died under the stream
    return True


async def test_sigkill_mid_stream_then_reconnect_to_a_new_process(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (tmp_path / "served_app.py").write_text(STORY_MODULE)
    first = spawn_server(tmp_path, data, write_module=False)
    received: list[list[tuple[int | None, dict[str, Any]]]] = [[]]
    try:
        async with httpx.AsyncClient(base_url=first.url, timeout=20) as client:
            r = await client.post(
                "/runs", json={"target": "agent:story", "input": {}, "owner": "conversation:c1"}
            )
            rid = r.json()["run"]["id"]
            url = f"/runs/{rid}/events?until=end"
            async with trio.open_nursery() as nursery:

                async def follow() -> None:
                    await read_frames(client, url, 0, received[0])

                nursery.start_soon(follow)
                with trio.fail_after(20):
                    while sum(1 for i, _ in received[0] if i) < 30:
                        await trio.sleep(0.005)
                first.kill()  # SIGKILL, mid-step, mid-message
        assert first.proc.returncode == -9
    finally:
        if first.proc.poll() is None:
            first.kill()

    second = spawn_server(tmp_path, data, write_module=False)
    try:
        async with httpx.AsyncClient(base_url=second.url, timeout=30) as client:
            ended = False
            with trio.fail_after(60):
                while not ended:  # reconnect with the last id received, as EventSource does
                    last = max((i for conn in received for i, _ in conn if i), default=0)
                    received.append([])
                    ended = await read_frames(client, url, last, received[-1])
            log = []
            after = 0
            while True:
                page = (
                    await client.get(f"/runs/{rid}/events", params={"after": after, "limit": 1000})
                ).json()
                log += page["events"]
                after = page["next_after"]
                if not page["more"]:
                    break
            record = (await client.get(f"/runs/{rid}")).json()
        assert second.stop() == 0
    finally:
        if second.proc.poll() is None:
            second.kill()

    assert record["status"] == "completed"
    stored = {e["event_id"]: e["event"] for e in log}
    assert list(stored) == list(range(1, len(stored) + 1))
    types = [e["type"] for e in stored.values()]
    assert "CUSTOM" in types and any(
        e["type"] == "CUSTOM" and e["name"] == "perdure.attempt_aborted" for e in stored.values()
    ), "the kill did not cut a step"
    seen = [i for conn in received for i, _ in conn if i is not None]
    assert seen == list(range(1, len(stored) + 1)), "lost or repeated events"
    for conn in received:
        for event_id, event in conn:
            if event_id is not None:
                assert event == stored[event_id]
    verify_events([e for _, e in received[0]])  # cut short by the kill: a valid prefix
    verify_prefixes([e for _, e in received[-1]])  # the last one ends the run
    for conn in received[1:]:
        if conn and conn[0][0] is None:
            assert conn[0][1]["type"] == "RUN_STARTED"  # a mid-segment join had its prelude
        verify_events([e for _, e in conn])
