"""HTTP serving benchmark: SSE followers of live runs, and POST /runs throughput.

    python bench/serve.py [--followers 1000] [--rate 1000] [--duration 10]
                          [--posts 10000] [--connections 100] [--durability sync] [--json OUT]

The server is ``perdure serve`` in a process of its own, on loopback; the clients
run in this process (asyncio, raw HTTP/1.1 on keep-alive sockets, so the client's
own cost stays small), so the two do not share CPU accounting. Both share the
machine's cores, as they would on one box.

Phase 1 (followers): ``--followers`` runs stay live, each emitting one ``CUSTOM``
event every ``followers / rate`` seconds (together ``--rate`` events/s), each
followed by one SSE client from its first event. Each event carries the wall time
at which the body emitted it; a client's latency is its receive time minus that,
so it includes the commit (an upper bound of commit -> client); only ticks emitted
after the follower's stream was open count (older ones arrive as a replay). Reported: events/s
delivered, p50/p99/max latency, and the server's resident memory per follower
(RSS with the followers connected minus RSS with the same runs and none).

Phase 2 (starts): ``--posts`` ``POST /runs`` of a workflow that returns at once, over
``--connections`` keep-alive connections: requests/s and latency percentiles.

Every loop is bounded in count and time; only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

APP = '''\
import os
import time

import trio

import perdure

_gc = os.environ.get("BENCH_GC", "")
rt = perdure.Runtime(
    os.environ["BENCH_DIR"],
    durability=os.environ["BENCH_DURABILITY"],
    **({"gc_threshold": None if _gc == "none" else tuple(map(int, _gc.split(",")))} if _gc else {}),
)


@rt.workflow("ticker")
async def ticker(ctx: perdure.RunContext, inp: dict) -> dict:
    await trio.sleep(inp["offset"])
    for i in range(inp["n"]):
        await ctx.custom("tick", {"i": i, "t": time.time()})
        await trio.sleep(inp["interval"])
    return {"n": inp["n"]}


@rt.workflow("probe")
async def probe(ctx: perdure.RunContext, inp: dict) -> dict:
    """When each tick of the sampled runs became visible to a follower in this process.

    Not a deterministic body (it reads the clock and other runs' logs): a benchmark
    probe, never recovered. Its result pairs with the HTTP clients' receive times.
    """
    seen: dict[str, dict[str, float]] = {}
    pauses: list[float] = []
    began: list[float] = []

    def on_gc(phase: str, info: dict) -> None:
        if phase == "start":
            began.append(time.perf_counter())
        elif began:
            pauses.append(time.perf_counter() - began.pop())

    import gc

    gc.callbacks.append(on_gc)

    async def watch(run_id: str) -> None:
        marks = seen.setdefault(run_id, {})
        async for event in rt.events(run_id):
            value = getattr(event.event, "value", None)
            if isinstance(value, dict) and "i" in value:
                marks[str(value["i"])] = time.time()

    async with trio.open_nursery() as nursery:
        for run_id in inp["runs"]:
            nursery.start_soon(watch, run_id)
    gc.callbacks.remove(on_gc)
    pauses.sort()
    return {"seen": seen, "gc_pauses": len(pauses), "gc_max_ms": pauses[-1] * 1000 if pauses else 0,
            "gc_total_ms": sum(pauses) * 1000}


@rt.workflow("noop")
async def noop(ctx: perdure.RunContext, inp: dict) -> dict:
    return inp
'''

BASELINE = """\
import sys

import trio
from hypercorn.config import Config
from hypercorn.trio import serve

BODY = b'{"accepted":true,"duplicate":false,"run":{"id":"baseline"}}'


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    while (await receive()).get("more_body"):
        pass
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]
    await send({"type": "http.response.start", "status": 202, "headers": headers})
    await send({"type": "http.response.body", "body": BODY})


config = Config()
config.bind = [f"fd://{sys.argv[1]}"]
config.accesslog = None
config.backlog = 4096
config.keep_alive_max_requests = 1_000_000
trio.run(serve, app, config)
"""

_T = re.compile(rb'"i":([0-9]+),"t":([0-9.eE+-]+)')


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Http:
    """One keep-alive HTTP/1.1 connection with just enough parsing for this benchmark."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Http:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 22)
        return cls(reader, writer)

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        self.writer.write(head + body)
        status_line = await self.reader.readline()
        status = int(status_line.split()[1])
        length = 0
        chunked = False
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
            elif name.lower() == "transfer-encoding" and "chunked" in value:
                chunked = True
        if chunked:
            data = b""
            while (size := int((await self.reader.readline()).strip(), 16)) > 0:
                data += await self.reader.readexactly(size + 2)
            await self.reader.readline()
            return status, data
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


async def follow(
    port: int,
    run_id: str,
    latencies: list[float],
    counts: list[int],
    window: list[float],
    received: dict[str, float],
) -> None:
    """Follow one run's SSE stream; record each tick's emit -> receive latency."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 22)
    writer.write(
        f"GET /runs/{run_id}/events HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n\r\n".encode()
    )
    try:
        while await reader.readline() not in (b"\r\n", b""):
            pass
        # Only ticks emitted after the stream is open measure live delivery; earlier ones
        # arrive as the replay of the committed log.
        live_from = time.time()
        while True:
            chunk = await reader.read(1 << 16)
            if not chunk:
                return
            now = time.time()
            for match in _T.finditer(chunk):
                emitted = float(match.group(2))
                received[match.group(1).decode()] = now
                if emitted >= live_from:
                    latencies.append(now - emitted)
                counts[0] += 1
                window[0] = min(window[0], now)
                window[1] = max(window[1], now)
            if b'"RUN_FINISHED"' in chunk:
                return
    finally:
        writer.close()


async def start_runs(
    port: int, bodies: list[dict[str, Any]], connections: int
) -> list[tuple[str, float]]:
    """POST /runs for each body over ``connections`` keep-alive connections."""
    queue: asyncio.Queue[tuple[int, dict[str, Any]]] = asyncio.Queue()
    for item in enumerate(bodies):
        queue.put_nowait(item)
    results: list[tuple[str, float]] = [("", 0.0)] * len(bodies)

    async def worker() -> None:
        http = await Http.open(port)
        try:
            while True:
                try:
                    index, body = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                started = time.perf_counter()
                status, data = await http.request("POST", "/runs", json.dumps(body).encode())
                elapsed = time.perf_counter() - started
                if status != 202:
                    raise RuntimeError(f"POST /runs answered {status}: {data[:200]!r}")
                results[index] = (json.loads(data)["run"]["id"], elapsed)
        finally:
            http.close()

    await asyncio.gather(*(worker() for _ in range(connections)))
    return results


def spawn_server(workdir: Path, durability: str, gc: str) -> tuple[subprocess.Popen[str], int]:
    (workdir / "bench_app.py").write_text(APP)
    env = dict(
        os.environ, BENCH_DIR=str(workdir / "data"), BENCH_DURABILITY=durability, BENCH_GC=gc
    )
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "perdure.cli",
            "serve",
            "bench_app:rt",
            "--port",
            "0",
            "--heartbeat",
            "15",
        ],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("perdure: serving"):
        proc.kill()
        raise RuntimeError(f"the server did not start: {line!r}")
    return proc, int(line.split()[2].rsplit(":", 1)[1])


async def phase_followers(port: int, pid: int, args: argparse.Namespace) -> dict[str, Any]:
    n = args.followers
    interval = n / args.rate
    ticks = max(2, int(args.duration / interval))
    bodies = [
        {
            "target": "workflow:ticker",
            "input": {"n": ticks, "interval": interval, "offset": 2.0 + n / 500 + interval * i / n},
            "owner": "project:bench",
        }
        for i in range(n)
    ]
    started = await start_runs(port, bodies, min(100, n))
    sample = [rid for rid, _ in started[:: max(1, n // 100)]]
    [(probe_id, _)] = await start_runs(
        port, [{"target": "workflow:probe", "input": {"runs": sample}, "owner": "project:b"}], 1
    )
    await asyncio.sleep(0.3)
    rss_without = rss_kb(pid)
    latencies: list[float] = []
    counts = [0]
    window = [float("inf"), 0.0]  # first and last receive time of a tick
    received: dict[str, dict[str, float]] = {rid: {} for rid, _ in started}
    cpu_server, cpu_client, wall = cpu_seconds(pid), time.process_time(), time.perf_counter()
    tasks = [
        asyncio.ensure_future(follow(port, rid, latencies, counts, window, received[rid]))
        for rid, _ in started
    ]
    await asyncio.sleep(0.9)
    rss_with = rss_kb(pid)
    deadline = args.duration + interval * 2 + 30
    done, pending = await asyncio.wait(tasks, timeout=deadline)
    for task in pending:
        task.cancel()
    wall = time.perf_counter() - wall
    cpu_server = (cpu_seconds(pid) - cpu_server) / wall
    cpu_client = (time.process_time() - cpu_client) / wall
    elapsed = max(window[1] - window[0], 1e-9)
    errors = [t.exception() for t in done if t.exception() is not None]
    # commit -> client, paired per event: when the tick reached the HTTP client minus when
    # it became visible to a follower inside the server process (same clock).
    http = await Http.open(port)
    status, data = await http.request("GET", f"/runs/{probe_id}/wait?timeout=60")
    http.close()
    probe = json.loads(data)["completion"]["result"] if status == 200 else {}
    visible = probe.get("seen", {})
    commit_to_client = [
        received[rid][i] - at
        for rid, marks in visible.items()
        for i, at in marks.items()
        if i in received.get(rid, {})
    ]
    return {
        "followers": n,
        "target_events_per_s": args.rate,
        "events_received": counts[0],
        "live_samples": len(latencies),
        "events_expected": n * ticks,
        "events_per_s_delivered": counts[0] / elapsed,
        "latency_p50_ms": percentile(latencies, 0.50) * 1000,
        "latency_p99_ms": percentile(latencies, 0.99) * 1000,
        "latency_max_ms": max(latencies, default=float("nan")) * 1000,
        "rss_per_follower_kb": (rss_with - rss_without) / n,
        "server_gc": {k: v for k, v in probe.items() if k.startswith("gc_")},
        "server_cpu_cores": cpu_server,
        "client_cpu_cores": cpu_client,
        "commit_to_client_samples": len(commit_to_client),
        "commit_to_client_p50_ms": percentile(commit_to_client, 0.50) * 1000,
        "commit_to_client_p99_ms": percentile(commit_to_client, 0.99) * 1000,
        "unfinished_streams": len(pending),
        "errors": [repr(e) for e in errors[:3]],
    }


async def phase_posts(port: int, args: argparse.Namespace) -> dict[str, Any]:
    bodies = [
        {"target": "workflow:noop", "input": {"i": i}, "owner": "project:posts"}
        for i in range(args.posts)
    ]
    await start_runs(port, bodies[:200], args.connections)  # warm up
    t0 = time.perf_counter()
    results = await asyncio.wait_for(start_runs(port, bodies, args.connections), 120)
    elapsed = time.perf_counter() - t0
    lat = [r[1] for r in results]
    return {
        "posts": args.posts,
        "connections": args.connections,
        "requests_per_s": args.posts / elapsed,
        "latency_p50_ms": percentile(lat, 0.5) * 1000,
        "latency_p99_ms": percentile(lat, 0.99) * 1000,
        "mean_ms": statistics.fmean(lat) * 1000,
    }


async def phase_baseline(args: argparse.Namespace) -> dict[str, Any]:
    """The same POST load against hypercorn's trio worker serving an empty ASGI app."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4096)
    port = listener.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-c", BASELINE, str(listener.fileno())],
        pass_fds=[listener.fileno()],
        stderr=subprocess.DEVNULL,
    )
    listener.close()
    try:
        bodies = [{"i": i} for i in range(args.posts)]
        await start_runs(port, bodies[:200], args.connections)
        t0 = time.perf_counter()
        results = await asyncio.wait_for(start_runs(port, bodies, args.connections), 120)
        elapsed = time.perf_counter() - t0
    finally:
        proc.kill()
        proc.wait()
    lat = [r[1] for r in results]
    return {
        "requests_per_s": args.posts / elapsed,
        "latency_p50_ms": percentile(lat, 0.5) * 1000,
        "latency_p99_ms": percentile(lat, 0.99) * 1000,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"cores": os.cpu_count(), "durability": args.durability, "gc": args.gc}
    with tempfile.TemporaryDirectory(prefix="perdure-serve-bench-") as tmp:
        proc, port = spawn_server(Path(tmp), args.durability, args.gc)
        try:
            if args.followers:
                out["followers"] = await phase_followers(port, proc.pid, args)
            if args.posts:
                out["starts"] = await phase_posts(port, args)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    if args.posts and not args.no_baseline:
        out["baseline"] = await phase_baseline(args)
    out["loadavg_1min"] = float(Path("/proc/loadavg").read_text().split()[0])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--followers", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=1000.0, help="events/s across the runs")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of ticking")
    parser.add_argument("--posts", type=int, default=10_000)
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--durability", choices=("sync", "process", "memory"), default="sync")
    parser.add_argument(
        "--gc",
        default="",
        metavar="T0,T1,T2|none",
        help="the server Runtime's gc_threshold (default: the Runtime's own default)",
    )
    parser.add_argument(
        "--no-baseline",
        action="store_true",
        help="skip the raw limit (hypercorn's trio worker with an empty ASGI app)",
    )
    parser.add_argument("--json", metavar="OUT", help="also write the results as JSON")
    args = parser.parse_args(argv)
    result = asyncio.run(run(args))
    if "followers" in result:
        f = result["followers"]
        print(
            f"SSE: {f['followers']} followers, {f['target_events_per_s']:.0f} events/s emitted: "
            f"{f['events_per_s_delivered']:.0f} events/s delivered "
            f"({f['events_received']}/{f['events_expected']}), emit->client p50 "
            f"{f['latency_p50_ms']:.1f} ms, p99 {f['latency_p99_ms']:.1f} ms, max "
            f"{f['latency_max_ms']:.1f} ms; commit->client p50 {f['commit_to_client_p50_ms']:.1f} ms, "
            f"p99 {f['commit_to_client_p99_ms']:.1f} ms ({f['commit_to_client_samples']} paired); "
            f"server RSS per follower {f['rss_per_follower_kb']:.1f} KB; CPU: server "
            f"{f['server_cpu_cores']:.2f} cores, client {f['client_cpu_cores']:.2f}"
            + (f"; {f['unfinished_streams']} unfinished" if f["unfinished_streams"] else "")
            + (f"; errors {f['errors']}" if f["errors"] else "")
        )
    if "starts" in result:
        s = result["starts"]
        print(
            f"POST /runs: {s['posts']} over {s['connections']} connections: "
            f"{s['requests_per_s']:.0f} requests/s, p50 {s['latency_p50_ms']:.1f} ms, "
            f"p99 {s['latency_p99_ms']:.1f} ms ({result['durability']} durability, "
            f"{result['cores']} cores)"
        )
    if "baseline" in result:
        b = result["baseline"]
        ratio = result["starts"]["requests_per_s"] / b["requests_per_s"]
        print(
            f"raw limit (hypercorn trio worker, empty ASGI app, same load): "
            f"{b['requests_per_s']:.0f} requests/s, p99 {b['latency_p99_ms']:.1f} ms; "
            f"perdure POST /runs = {ratio:.0%} of it (load average {result['loadavg_1min']:.2f})"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
