"""Jobs on a cron schedule, with logs, retries and a batch (in virtual time).

    python examples/cron_job.py [DATA_DIR]

A nightly report job runs at 03:00 Berlin time. The example runs under trio's virtual
clock (``MockClock``), pinned to the evening before the spring-forward night of 2026,
so three simulated nights pass in a moment: on the night 02:00 does not exist, the
03:00 job still runs once. The job logs through ``ctx.log`` (kept apart from its AG-UI
events) and its flaky step is retried as a whole job (``max_attempts``). Then a manual
trigger (idempotent with its key) and a batch of three jobs.
"""

from __future__ import annotations

import sys
import tempfile
from datetime import UTC, datetime

import trio

import perdure
from perdure.testing import MockClock, pin_wall_time

rt = perdure.Runtime(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp() + "/data")
attempts: dict[str, int] = {}


@rt.task(
    "report",
    input_schema={
        "type": "object",
        "properties": {"region": {"type": "string"}},
        "required": ["region"],
    },
    output_schema={"type": "object", "required": ["rows"]},
    max_attempts=3,
    timeout=3600,
)
async def report(ctx: perdure.RunContext, config: dict[str, str]) -> dict[str, int]:
    """Build the nightly report of a region."""
    ctx.log("report starting", region=config["region"])

    def query() -> int:
        attempts[ctx.run_id] = attempts.get(ctx.run_id, 0) + 1
        ctx.log("querying", attempt=attempts[ctx.run_id])
        if attempts[ctx.run_id] == 1 and ctx.run.trigger.type == "schedule":
            raise ConnectionError("database restarting")  # the first try fails
        return 42

    rows = await ctx.step("query", query)
    ctx.log("report done", level="info", rows=rows)
    return {"rows": rows}


rt.schedule(
    "nightly",
    "0 3 * * *",
    target="task:report",
    input={"region": "eu"},
    timezone="Europe/Berlin",
)


def utc(ts: float | None) -> str:
    return "-" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")


async def main() -> None:
    pin_wall_time(datetime(2026, 3, 27, 18, 0, tzinfo=UTC).timestamp())
    async with rt:
        await trio.sleep(3 * 86_400)  # three nights, in virtual time
        info = rt.get_schedule("nightly")
        print(f"nightly fired {info.fired} times; next: {utc(info.next_fire_times[0])}")
        runs = rt.list(owner=perdure.Project("schedule:nightly")).runs
        for run in runs:
            done = await rt.wait(run.id)
            print(f"  tick {utc(run.trigger.scheduled_at)}: {done.status}", end="")
            print(f" {done.completion.result if done.completion else None}")
        for entry in rt.logs(runs[0].id).entries:
            print(f"    log {entry.seq} {entry.level} {entry.message} {entry.fields}")

        manual = await rt.trigger_schedule("nightly", idempotency_key="rerun-1")
        again = await rt.trigger_schedule("nightly", idempotency_key="rerun-1")
        print(
            "manual trigger:",
            (await rt.wait(manual.run.id)).status,
            "(same run again:",
            again.run.id == manual.run.id,
            ")",
        )

        batch = await rt.start_batch(
            "task:report",
            [{"region": r} for r in ("eu", "us", "apac")],
            owner=perdure.Project("reports"),
        )
        for run in rt.list(batch_id=batch.id).runs:
            await rt.wait(run.id)
        print("batch", batch.total, "jobs:", rt.batch(batch.id).counts)


if __name__ == "__main__":
    trio.run(main, clock=MockClock(autojump_threshold=0))
