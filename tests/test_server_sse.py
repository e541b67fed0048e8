"""SSE streams of run logs (R35): ids, reconnects at every offset, preludes, heartbeats,
segment ends, slow clients, shutdown. Real HTTP on loopback; every stream is checked
with the AG-UI verifier (the Python port here, the official one in node at the end).
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import h11
import trio
from helpers.official_verifier import node_verify
from test_server_support import (
    P,
    SSEOptions,
    full_log,
    make_runtime,
    read_sse,
    served,
    tool_call_id,
    wait_status,
)

import perdure
from perdure.agui import event_from_json, fold_events, verify_prefixes

C = perdure.Conversation("c1")


def segment_end(log: list[dict[str, Any]], after: int) -> int:
    """The id of the first segment end after ``after`` (1-based ids)."""
    for event_id in range(after + 1, len(log) + 1):
        if log[event_id - 1]["type"] in ("RUN_FINISHED", "RUN_ERROR"):
            return event_id
    return len(log)


async def assistant_run(rt: perdure.Runtime) -> str:
    """A full agent run: text, reasoning, state, a tool call, two interrupts, a result."""
    started = await rt.start(
        "agent:assistant",
        perdure.AgentInput(messages=[{"id": "u1", "role": "user", "content": "weather?"}]),
        owner=C,
    )
    rid = started.run.id
    await wait_status(rt, rid, "waiting")
    await rt.resume(rid, perdure.ToolResult(tool_call_id=tool_call_id(rid), content="18C"))
    await wait_status(rt, rid, "waiting")
    await rt.resume(
        rid, perdure.ApprovalDecision(key="send", approved=True, response={"approved": True})
    )
    await rt.wait(rid)
    return rid


async def test_reconnect_at_every_offset_verifies_and_loses_nothing(data_dir: Path) -> None:
    rt = make_runtime(data_dir)
    async with served(rt) as s:
        rid = await assistant_run(rt)
        log = await full_log(rt, rid)
        n = len(log)
        assert n > 20
        streams: list[list[dict[str, Any]]] = []
        for after in range(n + 1):
            for until in ("segment", "end"):
                # Half the reconnects say where by Last-Event-ID, half by ?after=.
                if (after + (until == "end")) % 2:
                    kw: dict[str, Any] = {"headers": {"Last-Event-ID": str(after)}}
                    url = f"/runs/{rid}/events?until={until}&after=0"
                else:
                    kw = {}
                    url = f"/runs/{rid}/events?until={until}&after={after}"
                st = await read_sse(s.client, "GET", url, **kw)
                if after == n:
                    assert st.status == 204  # after the terminal event nothing ever comes
                    continue
                end = segment_end(log, after) if until == "segment" else n
                assert st.status == 200 and st.headers["content-type"].startswith(
                    "text/event-stream"
                )
                assert st.ids == list(range(after + 1, end + 1)), (after, until)
                tail = [event for event_id, event in st.events if event_id is not None]
                assert tail == log[after:end]
                verify_prefixes(st.wire)
                streams.append(st.wire)
                prelude = st.wire[: len(st.wire) - len(tail)]
                mid_segment = after > 0 and log[after - 1]["type"] not in (
                    "RUN_FINISHED",
                    "RUN_ERROR",
                )
                assert bool(prelude) == mid_segment, (after, [e["type"] for e in prelude])
                if prelude:
                    assert prelude[0]["type"] == "RUN_STARTED"
                    assert prelude[1]["type"] == "MESSAGES_SNAPSHOT"
                    # The joining client ends with the messages and state of one that saw all.
                    joined = fold_events([event_from_json(json.dumps(e)) for e in st.wire])
                    expected = (
                        await s.client.get(f"/runs/{rid}/snapshot", params={"upto": end})
                    ).json()
                    assert joined.messages == expected["messages"], after
                    assert joined.state == expected["state"], after
        verdicts = node_verify(streams)
        if verdicts is not None:
            bad = [(i, v) for i, v in enumerate(verdicts) if not v["ok"]]
            assert not bad, bad[:3]


async def test_a_follower_gets_live_events_and_the_stream_closes_at_the_end(data_dir: Path) -> None:
    rt = make_runtime(data_dir, max_running=1)
    async with served(rt) as s:
        blocker = await rt.start("workflow:block", {"gate": "first"}, owner=P)
        queued = await rt.start("workflow:emit", {"n": 3}, owner=P)
        assert rt.get(queued.run.id).status == "pending"  # no event yet: the stream waits
        result: dict[str, Any] = {}

        async def follow() -> None:
            result["stream"] = await read_sse(s.client, "GET", f"/runs/{queued.run.id}/events")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(follow)
            await trio.sleep(0.1)
            assert "stream" not in result
            rt.gates.open("first")  # type: ignore[attr-defined]
        st = result["stream"]
        assert st.types == ["RUN_STARTED", "CUSTOM", "CUSTOM", "CUSTOM", "RUN_FINISHED"]
        assert st.ids == [1, 2, 3, 4, 5]
        verify_prefixes(st.wire)
        assert (await rt.wait(blocker.run.id)).status == "completed"


async def test_a_stream_ends_at_an_interrupt_and_a_reconnect_waits_for_the_resume(
    data_dir: Path,
) -> None:
    rt = make_runtime(data_dir)
    async with served(rt, sse=SSEOptions(heartbeat=0.05)) as s:
        started = await rt.start("agent:assistant", perdure.AgentInput(), owner=C)
        rid = started.run.id
        first = await read_sse(s.client, "GET", f"/runs/{rid}/events")
        assert first.types[0] == "RUN_STARTED" and first.types[-1] == "RUN_FINISHED"
        assert first.wire[-1]["outcome"]["type"] == "interrupt"
        result: dict[str, Any] = {}

        async def reconnect() -> None:
            result["next"] = await read_sse(
                s.client,
                "GET",
                f"/runs/{rid}/events",
                headers={"Last-Event-ID": str(first.ids[-1])},
            )

        async with trio.open_nursery() as nursery:
            nursery.start_soon(reconnect)
            await trio.sleep(0.3)
            assert "next" not in result  # held open (with heartbeats) until the resume
            await rt.resume(rid, perdure.ToolResult(tool_call_id=tool_call_id(rid), content="ok"))
        nxt = result["next"]
        assert nxt.comments >= 1
        assert nxt.ids[0] == first.ids[-1] + 1 and nxt.types[0] == "RUN_STARTED"
        assert nxt.types[1] == "TOOL_CALL_RESULT" and nxt.wire[-1]["outcome"]["type"] == "interrupt"
        verify_prefixes(nxt.wire)


async def test_heartbeats_keep_an_idle_stream_alive(data_dir: Path) -> None:
    rt = make_runtime(data_dir)
    async with served(rt, sse=SSEOptions(heartbeat=0.05)) as s:
        run = await rt.start("workflow:block", {"gate": "g"}, owner=P)
        result: dict[str, Any] = {}

        async def follow() -> None:
            result["s"] = await read_sse(s.client, "GET", f"/runs/{run.run.id}/events")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(follow)
            await trio.sleep(0.5)
            rt.gates.open("g")  # type: ignore[attr-defined]
        st = result["s"]
        assert st.comments >= 3  # every 0.05 s of silence (slack for a loaded machine)
        assert st.types == ["RUN_STARTED", "CUSTOM", "RUN_FINISHED"]


async def test_no_heartbeat_when_disabled(data_dir: Path) -> None:
    rt = make_runtime(data_dir)
    async with served(rt, sse=SSEOptions(heartbeat=0)) as s:
        run = await rt.start("workflow:block", {"gate": "g"}, owner=P)
        result: dict[str, Any] = {}

        async def follow() -> None:
            result["s"] = await read_sse(s.client, "GET", f"/runs/{run.run.id}/events")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(follow)
            await trio.sleep(0.3)
            rt.gates.open("g")  # type: ignore[attr-defined]
        assert result["s"].comments == 0


async def test_bad_stream_requests(data_dir: Path) -> None:
    rt = make_runtime(data_dir)
    async with served(rt) as s:
        run = await rt.start("workflow:echo", {}, owner=P)
        await rt.wait(run.run.id)
        for headers, url in (
            ({"Last-Event-ID": "x"}, f"/runs/{run.run.id}/events"),
            ({}, f"/runs/{run.run.id}/events?until=forever"),
            ({}, f"/runs/{run.run.id}/events?after=-3"),
        ):
            st = await read_sse(s.client, "GET", url, headers=headers)
            assert st.status == 400, url
        st = await read_sse(s.client, "GET", "/runs/missing/events")
        assert st.status == 404


async def test_a_stalled_client_is_cut_off_without_slowing_the_run_or_others(
    data_dir: Path,
) -> None:
    rt = make_runtime(data_dir)

    @rt.workflow("bulk")
    async def bulk(ctx: perdure.RunContext, inp: dict) -> dict:
        for i in range(inp["n"]):
            await ctx.custom("blob", {"i": i, "pad": "x" * 200_000})
        return {"n": inp["n"]}

    options = SSEOptions(stall_timeout=0.5, buffer=4, heartbeat=0.1)
    async with served(rt, sse=options) as s:
        run = await rt.start("workflow:bulk", {"n": 60}, owner=P)  # 12 MB of events
        rid = run.run.id
        host, port = s.url.removeprefix("http://").split(":")
        # A client with a tiny receive buffer that sends its request, then reads nothing.
        sock = trio.socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        await sock.connect((host, int(port)))
        conn = h11.Connection(h11.CLIENT)
        await sock.send(
            conn.send(
                h11.Request(
                    method="GET",
                    target=f"/runs/{rid}/events",
                    headers=[("Host", host), ("Accept", "text/event-stream")],
                )
            )
        )
        await sock.send(conn.send(h11.EndOfMessage()))

        with trio.fail_after(20):  # the run and a reading client are not slowed down
            fast = await read_sse(s.client, "GET", f"/runs/{rid}/events")
            done = await rt.wait(rid)
        assert done.status == "completed" and fast.ids == list(range(1, 63))
        await trio.sleep(1.0)  # well past the stall timeout

        # When it reads again it gets what was already in flight, then the end of the
        # response: its stream was ended, not fed the remaining megabytes.
        body = bytearray()
        with trio.fail_after(20):
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await sock.recv(1 << 20))
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    break
        sock.close()
        frames = [f for f in bytes(body).split(b"\n\n") if f.startswith(b"id:")]
        ids = [int(f.split(b"\n")[0][3:]) for f in frames]
        assert ids == list(range(1, len(ids) + 1)) and len(ids) < 62, len(ids)
        # It reconnects with the last id it received and loses nothing.
        rest = await read_sse(
            s.client, "GET", f"/runs/{rid}/events", headers={"Last-Event-ID": str(ids[-1])}
        )
        assert [i for i in rest.ids] == list(range(ids[-1] + 1, 63))


async def test_shutdown_ends_open_streams_cleanly(data_dir: Path) -> None:
    rt = make_runtime(data_dir)
    result: dict[str, Any] = {}
    async with served(rt) as s:
        run = await rt.start("workflow:block", {"gate": "never"}, owner=P)

        async def follow() -> None:
            result["s"] = await read_sse(s.client, "GET", f"/runs/{run.run.id}/events")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(follow)
            await trio.sleep(0.2)
            with trio.fail_after(3):
                s.stop.set()  # the server shuts down; the stream must end, not hang
                while "s" not in result:
                    await trio.sleep(0.01)
    assert result["s"].types == ["RUN_STARTED", "CUSTOM"]  # complete response, then reconnect


async def test_a_join_mid_message_gets_the_message_so_far(data_dir: Path) -> None:
    rt = make_runtime(data_dir)
    async with served(rt) as s:
        started = await rt.start("agent:slow", perdure.AgentInput(), owner=C)
        rid = started.run.id
        with trio.fail_after(5):
            while rt.get(rid).last_event_id < 10:
                await trio.sleep(0.01)
        st = await read_sse(
            s.client, "GET", f"/runs/{rid}/events", headers={"Last-Event-ID": "5"}, limit=8
        )
        assert st.types[:3] == ["RUN_STARTED", "MESSAGES_SNAPSHOT", "TEXT_MESSAGE_START"]
        assert st.wire[1]["messages"] == [
            {"id": f"s-{rid}", "role": "assistant", "content": "0 1 2 "}
        ]
        assert st.ids[0] == 6
        await rt.cancel(rid)
