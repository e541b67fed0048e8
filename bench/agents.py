"""Durable pydantic-ai agents against the same agents without perdure.

    python bench/agents.py                    # 1,000 concurrent runs per phase (~2 minutes)
    python bench/agents.py --quick            # 20 runs per phase, a few seconds (the tests run it)
    python bench/agents.py --runs 500 --repeat 3 --json out.json

The agent: a pydantic-ai ``Agent`` on a ``FunctionModel`` (a real offline model) whose
first response calls two tools at once and whose second answers with text; both
tools are ``async`` and return at once. So one run is two model requests and two tool
calls, and all of the time measured is framework time, none of it model latency.

Throughput phases (``runs`` started at once, timed until the last one completes):

``plain``         pydantic-ai alone on asyncio (``asyncio.gather`` of ``agent.run``):
                  not durable. The baseline.
``trio-asyncio``  pydantic-ai alone under trio, each run in its own trio-asyncio loop,
                  as a perdure run body does it: not durable. Isolates the cost of
                  running pydantic-ai on trio.
``durable-mem``   perdure, ``durability="memory"``: everything of a durable run but the
                  disk (steps, journal, AG-UI log, waits) in an in-memory store.
``durable``       perdure, ``durability="sync"``: every commit flushed (survives power
                  loss). The headline figure.

Memory phases (``runs`` agents, each stopped in the middle of its run waiting for a
human approval), each measured twice: the growth of anonymous RSS per waiting agent
(after a full GC, against the same process after a warm-up run), and, in a second
run under ``tracemalloc``, the growth of the live Python heap per waiting agent (RSS
does not shrink when objects are freed, so only the heap figure shows what a
passivated run still holds):

``plain-wait``    pydantic-ai alone, the approval an ``asyncio.Event`` a tool awaits.
``durable-wait``  perdure runs waiting on an approval with their actors live (the
                  default up to ``max_live_actors`` = 10,000).
``passive-wait``  the same runs passivated (``max_live_actors=1``): a waiting run is
                  only its LMDB record until the decision arrives (R14).

Every phase runs in a fresh interpreter (this file with ``--phase``), so phases do
not share warm caches or heap, and the plain baseline never imports trio-asyncio
(which replaces asyncio's loop functions when imported).

The durability overhead is reported as a ratio: durable runs/s over plain runs/s,
and durable bytes per waiting agent over plain.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
THROUGHPUT = ("plain", "trio-asyncio", "durable-mem", "durable")
MEMORY = ("plain-wait", "durable-wait", "passive-wait")


# -- the agent ---------------------------------------------------------------------------


def build_agent(approval: bool = False) -> Any:
    """The benchmark agent; with ``approval`` its second tool needs a human's approval."""
    from pydantic_ai import Agent
    from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart
    from pydantic_ai.models.function import AgentInfo, FunctionModel

    async def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        if not any(isinstance(m, ModelResponse) for m in messages):
            return ModelResponse(
                parts=[
                    ToolCallPart("stock", {"sku": "A1"}, tool_call_id="call_stock"),
                    ToolCallPart("price", {"sku": "A1"}, tool_call_id="call_price"),
                ]
            )
        return ModelResponse(parts=[TextPart("A1: 3 in stock at 9.90")])

    agent = Agent(FunctionModel(model))

    @agent.tool_plain
    async def stock(sku: str) -> int:
        return 3

    @agent.tool_plain(requires_approval=approval)
    async def price(sku: str) -> float:
        return 9.90

    return agent


def user_input() -> dict[str, Any]:
    return {"messages": [{"id": "u1", "role": "user", "content": "How many A1, at what price?"}]}


def rss_anon() -> int:
    """Anonymous resident memory in bytes (heap and stacks; not LMDB's file pages)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no RssAnon in /proc/self/status")


TRACE = "--trace" in sys.argv


def settled_rss() -> int:
    """Memory in use now: anonymous RSS, or the live Python heap under ``--trace``.

    Tracing starts at the first call (after imports and the warm-up run: tracing the
    imports of pydantic-ai would take minutes), so the heap figure is the growth of
    what was allocated since and is still alive.
    """
    gc.collect()
    if TRACE:
        if not tracemalloc.is_tracing():
            tracemalloc.start()
        return tracemalloc.get_traced_memory()[0]
    return rss_anon()


# -- throughput phases ------------------------------------------------------------------


def phase_plain(runs: int, tmp: str) -> dict[str, Any]:
    agent = build_agent()

    async def main() -> float:
        await agent.run("warm up")
        began = time.perf_counter()
        results = await asyncio.gather(*(agent.run("How many A1?") for _ in range(runs)))
        seconds = time.perf_counter() - began
        assert all(r.output == "A1: 3 in stock at 9.90" for r in results)
        return seconds

    return {"seconds": asyncio.run(main())}


def phase_trio_asyncio(runs: int, tmp: str) -> dict[str, Any]:
    import trio
    import trio_asyncio

    agent = build_agent()
    outputs: list[str] = []

    async def one() -> None:
        async with trio_asyncio.open_loop():
            result = await trio_asyncio.aio_as_trio(agent.run)("How many A1?")
        outputs.append(result.output)

    async def main() -> float:
        await one()
        began = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(runs):
                nursery.start_soon(one)
        return time.perf_counter() - began

    seconds = trio.run(main)
    assert outputs.count("A1: 3 in stock at 9.90") == runs + 1
    return {"seconds": seconds}


def _durable(runs: int, tmp: str, durability: str) -> dict[str, Any]:
    import trio

    import perdure
    from perdure.integrations.pydantic_ai import register_agent

    rt = perdure.Runtime(tempfile.mkdtemp(dir=tmp), durability=durability)  # type: ignore[arg-type]
    register_agent(rt, "shop", build_agent())
    owner = perdure.Conversation("bench")

    async def main() -> dict[str, Any]:
        async with rt:
            warm = await rt.start("agent:shop", user_input(), owner=owner)
            await rt.wait(warm.run.id)
            txns0 = rt.stats().txns
            began = time.perf_counter()
            ids = [
                (await rt.start("agent:shop", user_input(), owner=owner)).run.id
                for _ in range(runs)
            ]
            for run_id in ids:
                rec = await rt.wait(run_id)
                assert (
                    rec.completion is not None and rec.completion.result == "A1: 3 in stock at 9.90"
                )
            seconds = time.perf_counter() - began
            return {"seconds": seconds, "txns": rt.stats().txns - txns0}

    return trio.run(main)


def phase_durable(runs: int, tmp: str) -> dict[str, Any]:
    return _durable(runs, tmp, "sync")


def phase_durable_mem(runs: int, tmp: str) -> dict[str, Any]:
    return _durable(runs, tmp, "memory")


# -- memory phases ----------------------------------------------------------------------


def phase_plain_wait(runs: int, tmp: str) -> dict[str, Any]:
    from pydantic_ai import Agent
    from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart
    from pydantic_ai.models.function import AgentInfo, FunctionModel

    decided = asyncio.Event()
    waiting = 0

    async def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        if not any(isinstance(m, ModelResponse) for m in messages):
            return ModelResponse(
                parts=[
                    ToolCallPart("stock", {"sku": "A1"}, tool_call_id="call_stock"),
                    ToolCallPart("price", {"sku": "A1"}, tool_call_id="call_price"),
                ]
            )
        return ModelResponse(parts=[TextPart("A1: 3 in stock at 9.90")])

    agent = Agent(FunctionModel(model))

    @agent.tool_plain
    async def stock(sku: str) -> int:
        return 3

    @agent.tool_plain
    async def price(sku: str) -> float:
        nonlocal waiting
        waiting += 1
        await decided.wait()  # the in-memory stand-in for a human's approval
        return 9.90

    async def main() -> dict[str, Any]:
        decided.set()
        await agent.run("warm up")
        decided.clear()
        before = settled_rss()
        tasks = [asyncio.create_task(agent.run("How many A1?")) for _ in range(runs)]
        while waiting < runs:
            await asyncio.sleep(0.01)
        after = settled_rss()
        decided.set()
        await asyncio.gather(*tasks)
        return {"bytes": after - before}

    return asyncio.run(main())


def _durable_wait(runs: int, tmp: str, max_live: int) -> dict[str, Any]:
    import trio

    import perdure
    from perdure.integrations.pydantic_ai import register_agent

    rt = perdure.Runtime(tempfile.mkdtemp(dir=tmp), durability="sync", max_live_actors=max_live)
    register_agent(rt, "shop", build_agent(approval=True))
    owner = perdure.Conversation("bench")

    async def until_waiting(ids: list[str]) -> None:
        while any(rt.get(run_id).status != "waiting" for run_id in ids):
            await trio.sleep(0.02)

    async def main() -> dict[str, Any]:
        async with rt:
            warm = (await rt.start("agent:shop", user_input(), owner=owner)).run.id
            await until_waiting([warm])
            await rt.resume(warm, perdure.ApprovalDecision(key="call_price", approved=True))
            await rt.wait(warm)
            before = settled_rss()
            ids = [
                (await rt.start("agent:shop", user_input(), owner=owner)).run.id
                for _ in range(runs)
            ]
            await until_waiting(ids)
            await trio.sleep(0.1)  # let passivation finish
            after = settled_rss()
            for run_id in ids:
                await rt.resume(run_id, perdure.ApprovalDecision(key="call_price", approved=True))
            for run_id in ids:
                rec = await rt.wait(run_id)
                assert (
                    rec.completion is not None and rec.completion.result == "A1: 3 in stock at 9.90"
                )
            return {"bytes": after - before}

    return trio.run(main)


def phase_durable_wait(runs: int, tmp: str) -> dict[str, Any]:
    return _durable_wait(runs, tmp, 10_000)


def phase_passive_wait(runs: int, tmp: str) -> dict[str, Any]:
    return _durable_wait(runs, tmp, 1)


PHASES = {
    "plain": phase_plain,
    "trio-asyncio": phase_trio_asyncio,
    "durable-mem": phase_durable_mem,
    "durable": phase_durable,
    "plain-wait": phase_plain_wait,
    "durable-wait": phase_durable_wait,
    "passive-wait": phase_passive_wait,
}


# -- driver -----------------------------------------------------------------------------


def run_phase(name: str, runs: int, tmp: str, trace: bool = False) -> dict[str, Any]:
    command = [sys.executable, str(HERE), "--phase", name, "--runs", str(runs), "--tmp", tmp]
    proc = subprocess.run(
        [*command, "--trace"] if trace else command,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"phase {name} failed:\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def _ratio(figures: dict[str, Any], name: str, base: str, field: str) -> float | None:
    """``name``'s figure over the baseline's (None when the baseline phase did not run)."""
    if base not in figures:
        return None
    return float(figures[name][field] / figures[base][field])


def _times(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.2f}x"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=1, help="throughput repetitions (median)")
    parser.add_argument("--quick", action="store_true", help="20 runs per phase")
    parser.add_argument("--tmp", default=str(HERE.parent), help="where scratch stores go")
    parser.add_argument("--json", help="also write every figure here")
    parser.add_argument(
        "--phases",
        default=",".join(PHASES),
        help="comma-separated subset of: " + ", ".join(PHASES),
    )
    parser.add_argument("--phase", choices=sorted(PHASES), help=argparse.SUPPRESS)
    parser.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    runs = 20 if args.quick else args.runs
    chosen = [name for name in args.phases.split(",") if name]
    unknown = sorted(set(chosen) - set(PHASES))
    if unknown:
        parser.error(f"unknown phases: {', '.join(unknown)}")

    if args.phase is not None:
        tmp = tempfile.mkdtemp(prefix="agents-", dir=args.tmp)
        try:
            print(json.dumps(PHASES[args.phase](runs, tmp)))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return

    figures: dict[str, Any] = {"runs": runs, "repeat": args.repeat, "cpus": os.cpu_count()}
    print(f"{runs} concurrent agent runs per phase; 2 model requests + 2 tool calls per run")
    print(f"{'phase':<14} {'runs/s':>9} {'min-max':>15}  {'vs plain':>8}")
    for name in (n for n in THROUGHPUT if n in chosen):
        rates = [runs / run_phase(name, runs, args.tmp)["seconds"] for _ in range(args.repeat)]
        figures[name] = {"runs_per_s": statistics.median(rates), "all": rates}
        ratio = _ratio(figures, name, "plain", "runs_per_s")
        figures[name]["vs_plain"] = ratio
        spread = f"{min(rates):.0f}-{max(rates):.0f}"
        print(f"{name:<14} {figures[name]['runs_per_s']:>9.1f} {spread:>15}  {_times(ratio):>8}")
    print(f"\n{'KiB per waiting agent':<22} {'RSS':>8} {'vs plain':>9} {'heap':>8} {'vs plain':>9}")
    for name in (n for n in MEMORY if n in chosen):
        rss = run_phase(name, runs, args.tmp)["bytes"] / runs
        heap = run_phase(name, runs, args.tmp, trace=True)["bytes"] / runs
        figures[name] = {"rss_per_agent": rss, "heap_per_agent": heap}
        rss_ratio = _ratio(figures, name, "plain-wait", "rss_per_agent")
        heap_ratio = _ratio(figures, name, "plain-wait", "heap_per_agent")
        figures[name].update(rss_vs_plain=rss_ratio, heap_vs_plain=heap_ratio)
        print(
            f"{name:<22} {rss / 1024:>8.1f} {_times(rss_ratio):>9} "
            f"{heap / 1024:>8.1f} {_times(heap_ratio):>9}"
        )
    if "durable" in figures and "plain" in figures:
        durable, plain = figures["durable"]["runs_per_s"], figures["plain"]["runs_per_s"]
        print(
            f"\ndurability overhead: durable runs/s / plain runs/s = {durable / plain:.2f} "
            f"(a plain run takes {1000 / plain:.1f} ms of wall time at this concurrency, "
            f"a durable one {1000 / durable:.1f} ms)"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
