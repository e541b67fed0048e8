"""Cron schedules in the engine (R25, R26), all in virtual time (trio's MockClock).

* a minutely schedule fires exactly once per tick over a simulated day, the same way
  on every run of the test (deterministic);
* DST: hourly and daily schedules in Europe/Berlin and Australia/Lord_Howe (a 30-minute
  shift) fire through a spring-forward and a fall-back night at the instants
  docs/schedules.md documents;
* overlap policies ``forbid``, ``allow``, ``buffer_one``, ``replace``; catch-up policies
  ``skip``, ``latest``, ``all`` (bounded) after downtime; ``max_runs``;
* pause / resume / delete affect future ticks only; a manual trigger is idempotent with
  its key; schedule changes in code are applied at open (created, updated, left alone);
* a tick is never started twice, even when the engine is asked to fire it again.

The after-test check of conftest (``helpers.fires``) also holds every test here: each
fires key maps to exactly one run of that schedule and tick.
"""

from __future__ import annotations

import itertools
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio

import perdure
from perdure.runtime._cron import CronSpec, fires_between
from perdure.testing import internals, pin_wall_time

P = perdure.Project("p1")


def t(text: str) -> float:
    """UTC epoch seconds of an ISO date-time given in UTC."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%m-%dT%H:%M")


def make(path: Path, **options: Any) -> perdure.Runtime:
    options.setdefault("durability", "process")
    rt = perdure.Runtime(path, **options)

    @rt.task("tick")
    async def tick(ctx: perdure.RunContext, inp: Any) -> dict:
        return {"tick": ctx.run.trigger.scheduled_at, "input": inp}

    @rt.task("slow")
    async def slow(ctx: perdure.RunContext, inp: dict) -> dict:
        await ctx.sleep(inp["seconds"])
        return {"slept": inp["seconds"]}

    return rt


def schedule_runs(rt: perdure.Runtime, name: str) -> list[perdure.RunRecord]:
    """Every run the schedule started, oldest first."""
    runs: list[perdure.RunRecord] = []
    after = None
    while True:
        page = rt.list(owner=perdure.Project(f"schedule:{name}"), after=after, limit=1000)
        runs.extend(page.runs)
        if page.next_cursor is None:
            return runs
        after = page.next_cursor


def ticks(runs: list[perdure.RunRecord]) -> list[float]:
    return [run.trigger.scheduled_at for run in runs if run.trigger.scheduled_at is not None]


async def settle(rt: perdure.Runtime) -> None:
    """Let every run in flight end (virtual time)."""
    for run in rt.list(status=["pending", "running", "waiting"], limit=1000).runs:
        await rt.wait(run.id)


# -- exactly once per tick, deterministic --------------------------------------------------


async def _a_day_of_minutes(path: Path) -> list[tuple[float, float | None, str]]:
    pin_wall_time(t("2026-01-05T00:00:30"))
    rt = make(path)
    rt.schedule("minutely", "* * * * *", target="task:tick", input={"n": 1})
    async with rt:
        await trio.sleep(86_400)
        await settle(rt)
        runs = schedule_runs(rt, "minutely")
        info = rt.get_schedule("minutely")
    assert info.fired == info.runs == 1440 and info.skipped == 0 and info.missed == 0
    assert info.last_scheduled_at == t("2026-01-06T00:00:00")
    assert info.active == [] and info.last_successful_at is not None
    assert all(run.status == "completed" for run in runs)
    return [(run.trigger.scheduled_at or 0.0, run.started_at, run.id) for run in runs]


async def test_a_minutely_schedule_fires_once_per_tick_over_a_day(
    tmp_path: Path, autojump_clock: Any
) -> None:
    fired = await _a_day_of_minutes(tmp_path / "a")
    expected = [t("2026-01-05T00:01:00") + 60 * i for i in range(1440)]
    assert [tick for tick, _, _ in fired] == expected
    assert {run_id for _, _, run_id in fired} == {
        f"schedule:minutely:{round(tick * 1000)}" for tick in expected
    }
    # Each run starts at its tick (virtual time: not a millisecond late).
    assert all(started == tick for tick, started, _ in fired)


async def test_the_same_schedule_fires_the_same_way_every_time(
    tmp_path: Path, autojump_clock: Any
) -> None:
    # Two stores, one virtual clock: pinned to the same instant before each day.
    first = await _a_day_of_minutes(tmp_path / "a")
    second = await _a_day_of_minutes(tmp_path / "b")
    assert first == second


async def test_a_year_of_an_hourly_schedule_across_both_dst_nights(
    tmp_path: Path, autojump_clock: Any
) -> None:
    """A simulated year in Lord Howe (30-minute shifts): the engine fires exactly the
    instants the pure time logic lists, each once."""
    pin_wall_time(t("2026-01-01T00:00:30"))
    rt = make(tmp_path / "d")
    rt.schedule("h", "30 * * * *", target="task:tick", timezone="Australia/Lord_Howe")
    async with rt:
        await trio.sleep(365 * 86_400)
        await settle(rt)
        fired = ticks(schedule_runs(rt, "h"))
    expected, _ = fires_between(
        CronSpec("30 * * * *", "Australia/Lord_Howe"),
        t("2026-01-01T00:00:30"),
        t("2027-01-01T00:00:30"),
        10_000,
    )
    assert fired == expected and len(fired) == 8760 + 1  # + the repeated 01:30 in April
    assert fired == sorted(set(fired))


@pytest.mark.soak
@pytest.mark.timeout(1800)
@pytest.mark.skipif(os.environ.get("PERDURE_SOAK") != "1", reason="soak: PERDURE_SOAK=1")
async def test_a_year_of_a_minutely_schedule(tmp_path: Path, autojump_clock: Any) -> None:
    """525,600 ticks in virtual time, in Berlin (both DST nights): every minute fires
    once, in order, and the schedule's counters agree (make soak; ~2-3 minutes of CPU,
    each tick being a real run on a real store)."""
    pin_wall_time(t("2026-01-01T00:00:30"))
    rt = make(tmp_path / "d", retention=perdure.Retention(completed=3600, interval=600))
    rt.schedule("m", "* * * * *", target="task:tick", timezone="Europe/Berlin")
    async with rt:
        await trio.sleep(365 * 86_400)
        await settle(rt)
        info = rt.get_schedule("m")
    expected, _ = fires_between(
        CronSpec("* * * * *", "Europe/Berlin"),
        t("2026-01-01T00:00:30"),
        t("2027-01-01T00:00:30"),
        600_000,
    )
    assert len(expected) == 365 * 1440
    assert info.runs == info.fired == len(expected) and info.skipped == info.missed == 0
    assert info.last_scheduled_at == expected[-1]


# -- DST (docs/schedules.md) ---------------------------------------------------------------

DST_CASES = [
    # zone, cron, from, until, expected ticks (UTC, month-day T hour:minute)
    (
        "Europe/Berlin",
        "0 * * * *",
        "2026-03-28T23:30",
        "2026-03-29T02:30",
        ["03-29T00:00", "03-29T01:00", "03-29T02:00"],
    ),
    (
        "Europe/Berlin",
        "30 2 * * *",
        "2026-03-28T12:00",
        "2026-03-30T12:00",
        ["03-29T01:00", "03-30T00:30"],
    ),
    (
        "Europe/Berlin",
        "0 * * * *",
        "2026-10-24T23:30",
        "2026-10-25T02:30",
        ["10-25T00:00", "10-25T01:00", "10-25T02:00"],
    ),
    (
        "Europe/Berlin",
        "30 2 * * *",
        "2026-10-24T12:00",
        "2026-10-26T12:00",
        ["10-25T00:30", "10-26T01:30"],
    ),
    (
        "Australia/Lord_Howe",
        "0 * * * *",
        "2026-04-04T13:30",
        "2026-04-04T16:45",
        ["04-04T14:00", "04-04T15:30", "04-04T16:30"],
    ),
    (
        "Australia/Lord_Howe",
        "30 * * * *",
        "2026-04-04T13:45",
        "2026-04-04T16:15",
        ["04-04T14:30", "04-04T15:00", "04-04T16:00"],
    ),
    ("Australia/Lord_Howe", "45 1 * * *", "2026-04-04T12:00", "2026-04-05T12:00", ["04-04T14:45"]),
    (
        "Australia/Lord_Howe",
        "0 * * * *",
        "2026-10-03T14:15",
        "2026-10-03T16:15",
        ["10-03T14:30", "10-03T16:00"],
    ),
    (
        "Australia/Lord_Howe",
        "30 * * * *",
        "2026-10-03T14:45",
        "2026-10-03T16:45",
        ["10-03T15:00", "10-03T15:30", "10-03T16:30"],
    ),
    ("Australia/Lord_Howe", "0 2 * * *", "2026-10-03T12:00", "2026-10-04T12:00", ["10-03T15:30"]),
]


@pytest.mark.parametrize(
    ("zone", "cron", "start", "until", "expected"),
    DST_CASES,
    ids=[f"{c[0].split('/')[1]}-{c[1].replace(' ', '_')}-{c[2][5:10]}" for c in DST_CASES],
)
async def test_dst_transitions_fire_at_the_documented_instants(
    tmp_path: Path,
    autojump_clock: Any,
    zone: str,
    cron: str,
    start: str,
    until: str,
    expected: list[str],
) -> None:
    pin_wall_time(t(start))
    rt = make(tmp_path / "data")
    rt.schedule("dst", cron, target="task:tick", timezone=zone, overlap="allow")
    async with rt:
        await trio.sleep(t(until) - t(start))
        await settle(rt)
        fired = ticks(schedule_runs(rt, "dst"))
        upcoming = rt.get_schedule("dst").next_fire_times
    assert [iso(tick) for tick in fired] == expected
    assert upcoming and upcoming[0] > t(until)


# -- overlap -------------------------------------------------------------------------------


async def _overlap(
    path: Path, policy: str, seconds: int = 150
) -> tuple[perdure.ScheduleInfo, list[perdure.RunRecord]]:
    # Runs never end on a whole minute: a tick and a run's end at the same virtual
    # instant may be handled in either order.
    pin_wall_time(t("2026-02-02T00:00:00"))
    rt = make(path)
    rt.schedule("o", "* * * * *", target="task:slow", input={"seconds": seconds}, overlap=policy)
    minutes = 10
    async with rt:
        await trio.sleep(60 * minutes + 30)
        info = rt.get_schedule("o")
        await rt.pause_schedule("o")
        await settle(rt)
        runs = schedule_runs(rt, "o")
        return info, runs


def minute(ts: float | None) -> float:
    assert ts is not None
    return (ts - t("2026-02-02T00:00:00")) / 60


async def test_forbid_skips_ticks_while_a_run_is_active(
    tmp_path: Path, autojump_clock: Any
) -> None:
    info, runs = await _overlap(tmp_path / "d", "forbid")
    # A run takes 2.5 minutes: ticks 1, 4, 7, 10 start, the two after each are skipped.
    assert [minute(tick) for tick in ticks(runs)] == [1, 4, 7, 10]
    assert info.skipped == 6 and info.buffered == 0 and info.fired == 4
    assert all(run.started_at == run.trigger.scheduled_at for run in runs)


async def test_allow_starts_every_tick(tmp_path: Path, autojump_clock: Any) -> None:
    info, runs = await _overlap(tmp_path / "d", "allow")
    assert [minute(tick) for tick in ticks(runs)] == list(range(1, 11))
    assert info.skipped == 0 and len(info.active) == 3  # ticks 8, 9, 10 still ran


async def test_buffer_one_starts_one_waiting_tick_when_the_run_ends(
    tmp_path: Path, autojump_clock: Any
) -> None:
    info, runs = await _overlap(tmp_path / "d", "buffer_one", seconds=130)
    # Tick 1 runs 1:00-3:10; 2 waits and starts at 3:10 under its own key; 3 is skipped
    # (one waits already); 4 waits, starts when 2 ends at 5:20; and so on.
    starts = [(minute(run.trigger.scheduled_at), round(minute(run.started_at), 2)) for run in runs]
    assert starts == [(1, 1), (2, 3.17), (4, 5.33), (6, 7.5), (8, 9.67)]
    assert info.buffered == 5 and info.skipped == 4  # 3, 5, 7, 9 skipped; 10 waits
    assert info.buffered_at == t("2026-02-02T00:10:00")
    assert all(run.status == "completed" for run in runs)


async def test_replace_cancels_the_active_run_then_starts(
    tmp_path: Path, autojump_clock: Any
) -> None:
    _info, runs = await _overlap(tmp_path / "d", "replace")
    assert [minute(tick) for tick in ticks(runs)] == list(range(1, 11))
    assert [run.status for run in runs] == ["cancelled"] * 9 + ["completed"]
    for earlier, later in itertools.pairwise(runs):
        # At most one run at a time: the new one starts once the old one has ended.
        assert earlier.finished_at is not None and later.started_at is not None
        assert earlier.finished_at <= later.started_at
        assert "replaced" in (earlier.cancel.reason if earlier.cancel else "")


# -- catch-up after downtime (R26) ---------------------------------------------------------


async def _downtime(
    path: Path, catchup: str, bound: int = 100, overlap: str = "allow"
) -> tuple[perdure.ScheduleInfo, list[perdure.RunRecord], float]:
    pin_wall_time(t("2026-02-02T00:00:00"))

    def runtime() -> perdure.Runtime:
        rt = make(path)
        rt.schedule(
            "c",
            "*/10 * * * *",
            target="task:tick",
            catchup=catchup,
            catchup_bound=bound,
            overlap=overlap,
        )
        return rt

    async with runtime() as rt:
        await trio.sleep(60 * 25)  # ticks 00:10 and 00:20
        await settle(rt)
    await trio.sleep(3600)  # down from 00:25 to 01:25: 00:30 ... 01:20 missed (6 ticks)
    async with runtime() as rt:
        reopened = rt.now()
        await settle(rt)
        info = rt.get_schedule("c")
        runs = schedule_runs(rt, "c")
    return info, runs, reopened


async def test_catchup_latest_fires_the_newest_missed_tick(
    tmp_path: Path, autojump_clock: Any
) -> None:
    info, runs, reopened = await _downtime(tmp_path / "d", "latest")
    assert [iso(tick) for tick in ticks(runs)] == ["02-02T00:10", "02-02T00:20", "02-02T01:20"]
    assert runs[-1].started_at == reopened
    assert info.missed == 5 and info.fired == 3


async def test_catchup_skip_fires_nothing_missed(tmp_path: Path, autojump_clock: Any) -> None:
    info, runs, _ = await _downtime(tmp_path / "d", "skip")
    assert [iso(tick) for tick in ticks(runs)] == ["02-02T00:10", "02-02T00:20"]
    assert info.missed == 6 and info.next_fire_times[0] == t("2026-02-02T01:30")


async def test_catchup_all_fires_the_newest_up_to_its_bound(
    tmp_path: Path, autojump_clock: Any
) -> None:
    info, runs, reopened = await _downtime(tmp_path / "d", "all", bound=4)
    assert [iso(tick) for tick in ticks(runs)] == [
        "02-02T00:10",
        "02-02T00:20",
        "02-02T00:50",
        "02-02T01:00",
        "02-02T01:10",
        "02-02T01:20",
    ]
    assert all(run.started_at == reopened for run in runs[2:])
    assert info.missed == 2


async def test_catchup_all_goes_through_the_overlap_policy(
    tmp_path: Path, autojump_clock: Any
) -> None:
    info, runs, _ = await _downtime(tmp_path / "d", "all", overlap="forbid")
    # Six missed ticks: the first starts, the other five find it active and are skipped.
    assert [iso(tick) for tick in ticks(runs)] == ["02-02T00:10", "02-02T00:20", "02-02T00:30"]
    assert info.skipped == 5 and info.missed == 0


async def test_a_closed_runtime_never_fires_and_runs_of_a_tick_are_recovered(
    tmp_path: Path, autojump_clock: Any
) -> None:
    # A run started by a tick and interrupted by close goes on at the next open, and
    # the schedule sees it end (its active list empties, last_successful_at is set).
    pin_wall_time(t("2026-02-02T00:00:00"))
    path = tmp_path / "d"

    def runtime() -> perdure.Runtime:
        rt = make(path)
        rt.schedule("s", "0 * * * *", target="task:slow", input={"seconds": 30})
        return rt

    async with runtime() as rt:
        await trio.sleep(3600 + 10)  # the 01:00 tick started and sleeps
        assert rt.get_schedule("s").active == [
            "schedule:s:" + str(round(t("2026-02-02T01:00") * 1000))
        ]
    async with runtime() as rt:
        await settle(rt)
        await trio.sleep(1)
        info = rt.get_schedule("s")
        assert info.active == [] and info.last_successful_at is not None
        assert info.fired == 1 and info.missed == 0


# -- limits and changes ----------------------------------------------------------------------


async def test_max_runs_stops_the_schedule(tmp_path: Path, autojump_clock: Any) -> None:
    pin_wall_time(t("2026-02-02T00:00:00"))
    rt = make(tmp_path / "d")
    rt.schedule("m", "* * * * *", target="task:tick", max_runs=3)
    async with rt:
        await trio.sleep(600)
        await settle(rt)
        started = await rt.trigger_schedule("m")  # manual: not counted
        await rt.wait(started.run.id)
        info = rt.get_schedule("m")
        assert info.fired == 3 and info.triggered == 1 and info.runs == 4
        assert info.next_fire_times == []
        assert len(schedule_runs(rt, "m")) == 4


async def test_pause_resume_delete_affect_future_ticks_only(
    tmp_path: Path, autojump_clock: Any
) -> None:
    pin_wall_time(t("2026-02-02T00:00:00"))
    path = tmp_path / "d"

    def runtime() -> perdure.Runtime:
        rt = make(path)
        rt.schedule("p", "* * * * *", target="task:slow", input={"seconds": 90}, overlap="allow")
        return rt

    async with runtime() as rt:
        await trio.sleep(150)  # ticks 1 and 2 started
        await rt.pause_schedule("p")
        await rt.pause_schedule("p")  # again: no change
        info = rt.get_schedule("p")
        assert info.paused and info.next_fire_times == [] and len(info.active) == 2
        await trio.sleep(600)  # nothing fires; the two runs end on their own
        assert [minute(x) for x in ticks(schedule_runs(rt, "p"))] == [1, 2]
        assert all(run.status == "completed" for run in schedule_runs(rt, "p"))
    # The pause is durable: reopening (with the same declaration) leaves it paused, and
    # the ticks of the paused stretch are not caught up.
    async with runtime() as rt:
        await trio.sleep(120)
        assert rt.get_schedule("p").paused
        assert len(schedule_runs(rt, "p")) == 2
        await rt.resume_schedule("p")
        resumed = rt.now()
        info = rt.get_schedule("p")
        assert not info.paused and info.next_fire_times[0] > resumed
        await trio.sleep(125)
        fired = ticks(schedule_runs(rt, "p"))
        assert len(fired) == 4 and all(tick > resumed for tick in fired[2:])
        await rt.delete_schedule("p")
        with pytest.raises(perdure.ScheduleNotFound):
            rt.get_schedule("p")
        with pytest.raises(perdure.ScheduleNotFound):
            await rt.pause_schedule("p")
        await trio.sleep(300)
        runs = schedule_runs(rt, "p")
        assert len(runs) == 4  # nothing fired after the delete ...
        await settle(rt)
        assert all(run.status == "completed" for run in schedule_runs(rt, "p"))  # ... runs went on
        assert rt.list_schedules() == []


async def test_manual_trigger_is_idempotent_with_its_key(
    tmp_path: Path, autojump_clock: Any
) -> None:
    pin_wall_time(t("2026-02-02T00:00:00"))
    rt = make(tmp_path / "d")
    rt.schedule(
        "nightly", "0 3 * * *", target="task:tick", input={"x": 1}, timezone="Europe/Berlin"
    )
    async with rt:
        first = await rt.trigger_schedule("nightly", idempotency_key="manual-1")
        again = await rt.trigger_schedule("nightly", idempotency_key="manual-1")
        other = await rt.trigger_schedule("nightly", idempotency_key="manual-2")
        plain = [await rt.trigger_schedule("nightly") for _ in range(2)]
        assert not first.duplicate and again.duplicate and again.run.id == first.run.id
        assert other.run.id != first.run.id and plain[0].run.id != plain[1].run.id
        # Racing triggers with one key: exactly one run.
        results: list[perdure.Started] = []
        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(
                    lambda: _append(results, rt.trigger_schedule("nightly", idempotency_key="race"))
                )
        assert len({r.run.id for r in results}) == 1 and sum(not r.duplicate for r in results) == 1
        run = await rt.wait(first.run.id)
        assert run.trigger == perdure.Trigger(type="schedule", ref="nightly")
        assert run.completion is not None and run.completion.result == {
            "tick": None,
            "input": {"x": 1},
        }
        await settle(rt)
        info = rt.get_schedule("nightly")
        assert info.triggered == 5 and info.fired == 0 and info.last_scheduled_at is None
        with pytest.raises(perdure.InvalidInput):
            await rt.trigger_schedule("nightly", idempotency_key="")
        with pytest.raises(perdure.ScheduleNotFound):
            await rt.trigger_schedule("missing")


async def _append(results: list[Any], awaitable: Any) -> None:
    results.append(await awaitable)


async def test_schedule_changes_in_code_are_applied_at_open(
    tmp_path: Path, autojump_clock: Any
) -> None:
    pin_wall_time(t("2026-02-02T00:00:00"))
    path = tmp_path / "d"
    rt = make(path)
    rt.schedule("a", "0 * * * *", target="task:tick", input={"v": 1})
    rt.schedule("b", "*/15 * * * *", target="task:tick")
    async with rt:
        await trio.sleep(3600 + 5)
        created = rt.get_schedule("a")
        assert created.cron == "0 * * * *" and created.fired == 1 and created.declared
    # Unchanged: left alone (not even its updated_at moves). Changed: updated, with its
    # counters kept. Not declared any more: kept, inert.
    rt = make(path)
    rt.schedule("a", "0  *  * * *", target="task:tick", input={"v": 1})  # same, spaced
    async with rt:
        assert rt.get_schedule("a").updated_at == created.updated_at
        assert not rt.get_schedule("b").declared
        assert rt.get_schedule("b").next_fire_times == []
        await trio.sleep(1800)
        assert rt.get_schedule("b").fired == 4  # it fired before; nothing new
    rt = make(path)
    rt.schedule(
        "a",
        "30 * * * *",
        target="task:slow",
        input={"seconds": 1},
        timezone="Asia/Tokyo",
        overlap="allow",
        max_runs=10,
    )
    async with rt:
        changed = rt.get_schedule("a")
        assert (changed.cron, changed.timezone, changed.target, changed.input) == (
            "30 * * * *",
            "Asia/Tokyo",
            "task:slow",
            {"seconds": 1},
        )
        assert changed.overlap == "allow" and changed.max_runs == 10
        assert changed.fired == 1 and changed.updated_at > created.updated_at
        # A changed expression starts from now: no catch-up of its "missed" ticks.
        assert changed.next_fire_times[0] > rt.now()
        assert changed.missed == 0


async def test_declarations_are_checked(tmp_path: Path, autojump_clock: Any) -> None:
    rt = make(tmp_path / "d")
    bad: list[dict[str, Any]] = [
        {"name": "x y", "cron": "* * * * *", "target": "task:tick"},
        {"name": "x", "cron": "* * * *", "target": "task:tick"},
        {"name": "x", "cron": "@daily", "target": "task:tick"},
        {"name": "x", "cron": "* * * * *", "target": "task:tick", "timezone": "Mars/Olympus"},
        {"name": "x", "cron": "* * * * *", "target": "agent:chat"},
        {"name": "x", "cron": "* * * * *", "target": "task:tick", "overlap": "sometimes"},
        {"name": "x", "cron": "* * * * *", "target": "task:tick", "catchup": "most"},
        {"name": "x", "cron": "* * * * *", "target": "task:tick", "catchup_bound": 0},
        {"name": "x", "cron": "* * * * *", "target": "task:tick", "max_runs": 0},
        {"name": "x", "cron": "* * * * *", "target": "task:tick", "input": object()},
        {
            "name": "x",
            "cron": "* * * * *",
            "target": "task:tick",
            "owner": perdure.Conversation("c"),
        },
    ]
    for case in bad:
        with pytest.raises(perdure.InvalidInput):
            rt.schedule(case.pop("name"), case.pop("cron"), **case)
    rt.schedule("x", "* * * * *", target="task:tick")
    with pytest.raises(perdure.InvalidInput):
        rt.schedule("x", "* * * * *", target="task:tick")
    # What needs the registry is checked at open: nothing is stored then.
    rt2 = make(tmp_path / "e")
    rt2.schedule("y", "* * * * *", target="task:missing")
    with pytest.raises(perdure.UnknownTarget):
        async with rt2:
            pass
    rt3 = perdure.Runtime(tmp_path / "f", durability="process")

    @rt3.task("typed")
    async def typed(ctx: perdure.RunContext, inp: dict) -> None:
        return None

    rt3.schedule("z", "* * * * *", target="task:typed", input=[1, 2])
    with pytest.raises(perdure.InvalidInput):
        async with rt3:
            pass
    async with rt:
        with pytest.raises(perdure.PerdureError):
            rt.schedule("late", "* * * * *", target="task:tick")


async def test_a_tick_asked_for_twice_starts_one_run(tmp_path: Path, autojump_clock: Any) -> None:
    """Whatever asks for a tick again (a stale cursor, a racing fire), its key wins."""
    pin_wall_time(t("2026-02-02T00:00:00"))
    rt = make(tmp_path / "d")
    rt.schedule("r", "* * * * *", target="task:tick", overlap="allow")
    async with rt:
        await trio.sleep(65)
        service = internals(rt).schedules
        live = service._live["r"]
        tick = t("2026-02-02T00:01:00")
        # Pretend the cursor never moved past the tick, then fire it twice more.
        live.rec = msgspec.structs.replace(live.rec, cursor=tick - 60)
        assert service._on_tick(live, tick) == [] and service._on_tick(live, tick) == []
        await settle(rt)
        assert ticks(schedule_runs(rt, "r")) == [tick]
        # A run id a user took is never overwritten by a tick.
        taken = f"schedule:r:{round((tick + 120) * 1000)}"
        await rt.start("task:tick", None, owner=P, run_id=taken)
        await trio.sleep(130)
        await settle(rt)
        assert rt.get(taken).owner == P and rt.get_schedule("r").skipped == 1


async def test_idle_schedules_cost_no_wakeups(tmp_path: Path, autojump_clock: Any) -> None:
    pin_wall_time(t("2026-02-02T00:00:00"))
    rt = make(tmp_path / "d")
    for i in range(2000):
        rt.schedule(f"yearly{i}", f"{i % 60} {i % 24} 1 1 *", target="task:tick")
    async with rt:
        service = internals(rt).schedules
        assert len(service._heap) == 2000
        ticked = 0
        original = service._tick

        async def counting() -> None:
            nonlocal ticked
            ticked += 1
            await original()

        service._tick = counting
        await trio.sleep(30 * 86_400)  # a month of virtual time: nothing is due
        assert ticked == 0


async def test_raising_max_runs_of_a_used_up_schedule_goes_on_from_now(
    tmp_path: Path, autojump_clock: Any
) -> None:
    """The hours after a schedule used its runs were not downtime: more runs allowed
    later start at the next tick, never at the ticks of the past (catchup="all")."""
    pin_wall_time(t("2026-01-01T00:30:00"))

    def deploy(max_runs: int) -> perdure.Runtime:
        rt = make(tmp_path / "d")
        rt.schedule(
            "s", "0 * * * *", target="task:tick", max_runs=max_runs, catchup="all",
            catchup_bound=100,
        )  # fmt: skip
        return rt

    async with deploy(2) as rt:
        await trio.sleep(10 * 3600)  # 10:30: used up since 02:00
        await settle(rt)
        assert [iso(x) for x in ticks(schedule_runs(rt, "s"))] == ["01-01T01:00", "01-01T02:00"]
    async with deploy(5) as rt:  # redeployed at once, with more runs allowed
        await trio.sleep(2 * 3600)
        await settle(rt)
        assert [iso(x) for x in ticks(schedule_runs(rt, "s"))] == [
            "01-01T01:00",
            "01-01T02:00",
            "01-01T11:00",
            "01-01T12:00",
        ]
