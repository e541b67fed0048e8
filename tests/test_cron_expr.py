"""Cron time logic (perdure.runtime._cron): parsing, DST, catch-up, overlap, fire keys.

Expected instants are written out by hand from the 2026 transitions (reasoning in the
comments) or computed by brute-force oracles below that share no code with the module:
they walk every UTC minute, or every local date, with zoneinfo alone.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from cronsim import CronSim

from perdure import InvalidInput
from perdure.runtime import _cron
from perdure.runtime._cron import (
    CATCHUP_POLICIES,
    OVERLAP_POLICIES,
    Action,
    CronSpec,
    FireKey,
    check_catchup,
    check_overlap,
    fire_key,
    fires_between,
    iter_fires,
    next_fires,
    overlap_action,
    plan_catchup,
)

SOAK = os.environ.get("PERDURE_SOAK") == "1"


def t(iso: str) -> float:
    """'2026-03-29T01:00Z' -> UTC epoch seconds."""
    return datetime.fromisoformat(iso).timestamp()


def iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%MZ")


def isos(ats: list[float]) -> list[str]:
    return [iso(a) for a in ats]


# ------------------------------------------------------------------ DST, pinned by hand
#
# 2026 transitions (zoneinfo/IANA):
#   Europe/Berlin     CET +1 / CEST +2. Spring 2026-03-29 01:00Z: 02:00 -> 03:00 local.
#                     Fall 2026-10-25 01:00Z: 03:00 CEST -> 02:00 CET (02:xx repeats).
#   America/New_York  EST -5 / EDT -4. Spring 2026-03-08 07:00Z: 02:00 -> 03:00 local.
#                     Fall 2026-11-01 06:00Z: 02:00 EDT -> 01:00 EST (01:xx repeats).
#   Australia/Lord_Howe  LHST +10:30 / LHDT +11 (a 30-minute shift).
#                     Fall 2026-04-04 15:00Z: 02:00 LHDT -> 01:30 LHST (01:30-01:59 repeats).
#                     Spring 2026-10-03 15:30Z: 02:00 LHST -> 02:30 LHDT (02:00-02:29 skipped).

DST_CASES = [
    # --- Berlin, spring forward
    # 01:00 CET = 00:00Z is before; 02:00 does not exist; 03:00 CEST = 01:00Z.
    ("Europe/Berlin", "0 * * * *", "2026-03-29T00:30Z", ["2026-03-29T01:00Z", "2026-03-29T02:00Z"]),
    # 01:30 CET = 00:30Z; 02:30 skipped; 03:30 CEST = 01:30Z.
    (
        "Europe/Berlin",
        "30 * * * *",
        "2026-03-29T00:00Z",
        ["2026-03-29T00:30Z", "2026-03-29T01:30Z"],
    ),
    # daily 02:30 falls in the gap: fires at its end, 03:00 CEST = 01:00Z; next day 02:30 CEST.
    (
        "Europe/Berlin",
        "30 2 * * *",
        "2026-03-28T12:00Z",
        ["2026-03-29T01:00Z", "2026-03-30T00:30Z"],
    ),
    ("Europe/Berlin", "0 3 * * *", "2026-03-28T12:00Z", ["2026-03-29T01:00Z", "2026-03-30T01:00Z"]),
    # 02:00 and 02:30 both in the gap and 03:00 real: one fire at 03:00 CEST, then 03:30.
    (
        "Europe/Berlin",
        "0,30 2-3 * * *",
        "2026-03-28T12:00Z",
        ["2026-03-29T01:00Z", "2026-03-29T01:30Z", "2026-03-30T00:00Z"],
    ),
    # wildcard minute, fixed hour 2: no 02:xx that day, so nothing until the next day.
    (
        "Europe/Berlin",
        "*/20 2 * * *",
        "2026-03-28T12:00Z",
        ["2026-03-30T00:00Z", "2026-03-30T00:20Z"],
    ),
    # --- Berlin, fall back
    # 02:00 CEST = 00:00Z, 02:00 CET = 01:00Z (both passes), 03:00 CET = 02:00Z.
    (
        "Europe/Berlin",
        "0 * * * *",
        "2026-10-24T23:30Z",
        ["2026-10-25T00:00Z", "2026-10-25T01:00Z", "2026-10-25T02:00Z"],
    ),
    (
        "Europe/Berlin",
        "30 * * * *",
        "2026-10-25T00:00Z",
        ["2026-10-25T00:30Z", "2026-10-25T01:30Z", "2026-10-25T02:30Z"],
    ),
    # daily 02:30: first pass only (02:30 CEST = 00:30Z); next day 02:30 CET = 01:30Z.
    (
        "Europe/Berlin",
        "30 2 * * *",
        "2026-10-24T12:00Z",
        ["2026-10-25T00:30Z", "2026-10-26T01:30Z"],
    ),
    ("Europe/Berlin", "0 3 * * *", "2026-10-24T12:00Z", ["2026-10-25T02:00Z", "2026-10-26T02:00Z"]),
    # "0 0-23" is fixed-time although hourly: 02:00 fires once (CEST), unlike "0 * * * *".
    (
        "Europe/Berlin",
        "0 0-23 * * *",
        "2026-10-24T23:30Z",
        ["2026-10-25T00:00Z", "2026-10-25T02:00Z"],
    ),
    # wildcard minute, fixed hour: both passes of 02:xx.
    (
        "Europe/Berlin",
        "*/20 2 * * *",
        "2026-10-24T12:00Z",
        [
            "2026-10-25T00:00Z",
            "2026-10-25T00:20Z",
            "2026-10-25T00:40Z",
            "2026-10-25T01:00Z",
            "2026-10-25T01:20Z",
            "2026-10-25T01:40Z",
            "2026-10-26T01:00Z",
        ],
    ),
    # --- New York, spring forward
    # 01:00 EST = 06:00Z is before; 02:00 skipped; 03:00 EDT = 07:00Z.
    (
        "America/New_York",
        "0 * * * *",
        "2026-03-08T06:30Z",
        ["2026-03-08T07:00Z", "2026-03-08T08:00Z"],
    ),
    (
        "America/New_York",
        "30 * * * *",
        "2026-03-08T06:00Z",
        ["2026-03-08T06:30Z", "2026-03-08T07:30Z"],
    ),
    # 02:30 in the gap -> 03:00 EDT = 07:00Z; next day 02:30 EDT = 06:30Z.
    (
        "America/New_York",
        "30 2 * * *",
        "2026-03-07T12:00Z",
        ["2026-03-08T07:00Z", "2026-03-09T06:30Z"],
    ),
    (
        "America/New_York",
        "0 3 * * *",
        "2026-03-07T12:00Z",
        ["2026-03-08T07:00Z", "2026-03-09T07:00Z"],
    ),
    # --- New York, fall back (01:xx repeats)
    # 01:00 EDT = 05:00Z, 01:00 EST = 06:00Z, 02:00 EST = 07:00Z.
    (
        "America/New_York",
        "0 * * * *",
        "2026-11-01T04:30Z",
        ["2026-11-01T05:00Z", "2026-11-01T06:00Z", "2026-11-01T07:00Z"],
    ),
    (
        "America/New_York",
        "30 * * * *",
        "2026-11-01T05:00Z",
        ["2026-11-01T05:30Z", "2026-11-01T06:30Z", "2026-11-01T07:30Z"],
    ),
    # 02:30 is not repeated in New York: 02:30 EST = 07:30Z.
    (
        "America/New_York",
        "30 2 * * *",
        "2026-10-31T12:00Z",
        ["2026-11-01T07:30Z", "2026-11-02T07:30Z"],
    ),
    (
        "America/New_York",
        "0 3 * * *",
        "2026-10-31T12:00Z",
        ["2026-11-01T08:00Z", "2026-11-02T08:00Z"],
    ),
    # daily 01:30 is: first pass only (01:30 EDT = 05:30Z), next day 01:30 EST = 06:30Z.
    (
        "America/New_York",
        "30 1 * * *",
        "2026-10-31T12:00Z",
        ["2026-11-01T05:30Z", "2026-11-02T06:30Z"],
    ),
    # --- Lord Howe, fall back (01:30-01:59 repeats)
    # 01:00 LHDT = 14:00Z; 02:00 LHST = 15:30Z; 03:00 LHST = 16:30Z (01:00 is not repeated).
    (
        "Australia/Lord_Howe",
        "0 * * * *",
        "2026-04-04T13:30Z",
        ["2026-04-04T14:00Z", "2026-04-04T15:30Z", "2026-04-04T16:30Z"],
    ),
    # 01:30 LHDT = 14:30Z, 01:30 LHST = 15:00Z (second pass: cronsim's own stepping misses it),
    # 02:30 LHST = 16:00Z.
    (
        "Australia/Lord_Howe",
        "30 * * * *",
        "2026-04-04T14:00Z",
        ["2026-04-04T14:30Z", "2026-04-04T15:00Z", "2026-04-04T16:00Z"],
    ),
    (
        "Australia/Lord_Howe",
        "30 2 * * *",
        "2026-04-04T00:00Z",
        ["2026-04-04T16:00Z", "2026-04-05T16:00Z"],
    ),
    (
        "Australia/Lord_Howe",
        "0 3 * * *",
        "2026-04-04T00:00Z",
        ["2026-04-04T16:30Z", "2026-04-05T16:30Z"],
    ),
    # daily 01:45 is repeated: first pass only (01:45 LHDT = 14:45Z); next day 01:45 LHST = 15:15Z.
    (
        "Australia/Lord_Howe",
        "45 1 * * *",
        "2026-04-04T00:00Z",
        ["2026-04-04T14:45Z", "2026-04-05T15:15Z"],
    ),
    # --- Lord Howe, spring forward (02:00-02:29 skipped)
    # 01:00 LHST = 14:30Z; 02:00 skipped; 03:00 LHDT = 16:00Z.
    (
        "Australia/Lord_Howe",
        "0 * * * *",
        "2026-10-03T14:00Z",
        ["2026-10-03T14:30Z", "2026-10-03T16:00Z"],
    ),
    # 01:30 LHST = 15:00Z; 02:30 LHDT = 15:30Z exists (cronsim's own stepping misses it); 03:30 = 16:30Z.
    (
        "Australia/Lord_Howe",
        "30 * * * *",
        "2026-10-03T14:00Z",
        ["2026-10-03T15:00Z", "2026-10-03T15:30Z", "2026-10-03T16:30Z"],
    ),
    # daily 02:30 exists (first minute after the gap): 15:30Z; next day 02:30 LHDT = 15:30Z.
    (
        "Australia/Lord_Howe",
        "30 2 * * *",
        "2026-10-03T00:00Z",
        ["2026-10-03T15:30Z", "2026-10-04T15:30Z"],
    ),
    (
        "Australia/Lord_Howe",
        "0 3 * * *",
        "2026-10-03T00:00Z",
        ["2026-10-03T16:00Z", "2026-10-04T16:00Z"],
    ),
    # daily 02:00 and 02:15 are skipped: both fire at the gap's end, 02:30 LHDT = 15:30Z.
    (
        "Australia/Lord_Howe",
        "0 2 * * *",
        "2026-10-03T00:00Z",
        ["2026-10-03T15:30Z", "2026-10-04T15:00Z"],
    ),
    (
        "Australia/Lord_Howe",
        "15 2 * * *",
        "2026-10-03T00:00Z",
        ["2026-10-03T15:30Z", "2026-10-04T15:15Z"],
    ),
]


@pytest.mark.parametrize(("zone", "expr", "after", "expected"), DST_CASES)
def test_dst_transitions_2026(zone: str, expr: str, after: str, expected: list[str]) -> None:
    assert isos(next_fires(CronSpec(expr, zone), t(after), len(expected))) == expected


def test_fixed_time_classification_follows_debian() -> None:
    # Debian cron: a job is "wildcard" when its minute or hour field starts with '*'.
    assert CronSpec("30 2 * * *").fixed_time
    assert CronSpec("0 0-23 * * *").fixed_time
    assert CronSpec("0,30 1-3 * * *").fixed_time
    assert not CronSpec("0 * * * *").fixed_time
    assert not CronSpec("0 */2 * * *").fixed_time
    assert not CronSpec("*/20 2 * * *").fixed_time


# ------------------------------------------------------------------ independent oracles

Pred = Callable[[datetime], bool]

# expression, fixed-time by hand (Debian rule), predicate on the local wall time
ORACLE_EXPRS: list[tuple[str, bool, Pred]] = [
    ("0 * * * *", False, lambda w: w.minute == 0),
    ("30 * * * *", False, lambda w: w.minute == 30),
    ("45 * * * *", False, lambda w: w.minute == 45),
    ("*/15 * * * *", False, lambda w: w.minute % 15 == 0),
    ("* 1 * * *", False, lambda w: w.hour == 1),
    ("*/10 2 * * *", False, lambda w: w.hour == 2 and w.minute % 10 == 0),
    ("30 2 * * *", True, lambda w: (w.hour, w.minute) == (2, 30)),
    ("0 3 * * *", True, lambda w: (w.hour, w.minute) == (3, 0)),
    ("30 1 * * *", True, lambda w: (w.hour, w.minute) == (1, 30)),
    ("0,15,45 2 * * *", True, lambda w: w.hour == 2 and w.minute in (0, 15, 45)),
    ("0 0-23 * * *", True, lambda w: w.minute == 0),
    ("10 1-3 * * *", True, lambda w: w.minute == 10 and 1 <= w.hour <= 3),
]


def wildcard_oracle(pred: Pred, zone: ZoneInfo, start: float, end: float) -> list[float]:
    """Every real UTC minute in (start, end] whose wall clock matches."""
    out = []
    at = math.floor(start / 60) * 60 + 60
    while at <= end:
        if pred(datetime.fromtimestamp(at, zone)):
            out.append(float(at))
        at += 60
    return out


def is_real(wall: datetime, zone: ZoneInfo) -> bool:
    aware = wall.replace(tzinfo=zone)
    return aware.astimezone(UTC).astimezone(zone).replace(tzinfo=None) == wall


def fixed_oracle(pred: Pred, zone: ZoneInfo, start: float, end: float) -> list[float]:
    """Per local date, each matching wall time once: its first pass, or if skipped
    the first real minute after it; the same instant only once."""
    out: set[float] = set()
    day = datetime.fromtimestamp(start, zone).date() - timedelta(days=1)
    last = datetime.fromtimestamp(end, zone).date() + timedelta(days=1)
    while day <= last:
        for minute in range(1440):
            wall = datetime(day.year, day.month, day.day) + timedelta(minutes=minute)
            if not pred(wall):
                continue
            while not is_real(wall, zone):
                wall += timedelta(minutes=1)
            at = wall.replace(tzinfo=zone, fold=0).timestamp()
            if start < at <= end:
                out.add(at)
        day += timedelta(days=1)
    return sorted(out)


TRANSITIONS = [
    ("Europe/Berlin", "2026-03-29T01:00Z"),
    ("Europe/Berlin", "2026-10-25T01:00Z"),
    ("America/New_York", "2026-03-08T07:00Z"),
    ("America/New_York", "2026-11-01T06:00Z"),
    ("Australia/Lord_Howe", "2026-04-04T15:00Z"),
    ("Australia/Lord_Howe", "2026-10-03T15:30Z"),
]


@pytest.mark.parametrize(("zone", "when"), TRANSITIONS)
@pytest.mark.parametrize(("expr", "fixed", "pred"), ORACLE_EXPRS, ids=[e[0] for e in ORACLE_EXPRS])
def test_matches_oracle_around_transitions(
    zone: str, when: str, expr: str, fixed: bool, pred: Pred
) -> None:
    spec = CronSpec(expr, zone)
    assert spec.fixed_time is fixed
    start, end = t(when) - 2 * 86400, t(when) + 2 * 86400
    oracle = fixed_oracle if fixed else wildcard_oracle
    expected = oracle(pred, ZoneInfo(zone), start, end)
    got, truncated = fires_between(spec, start, end, 100_000)
    assert not truncated
    assert got == expected


@pytest.mark.parametrize(("zone", "when"), TRANSITIONS)
@pytest.mark.parametrize(
    "expr",
    ["30 * * * *", "*/10 2 * * *", "* 1 * * *", "30 2 * * *", "0,15,45 2 * * *", "45 1 * * *"],
)
def test_any_restart_point_continues_the_same_stream(zone: str, expr: str, when: str) -> None:
    """What a crash-recovering engine relies on: asking again from any instant (a fire,
    just before or after one, inside a repeated or skipped stretch) gives exactly the
    rest of the same stream, so no tick is fired twice or lost."""
    spec = CronSpec(expr, zone)
    start, end = t(when) - 86400, t(when) + 86400
    stream, _ = fires_between(spec, start, end + 4 * 86400, 100_000)
    probes = {start + k * 997 + 0.5 for k in range(int((end - start) / 997))}
    for at in stream:
        probes |= {at - 0.001, at, at + 59}
    for probe in sorted(p for p in probes if p <= end):
        rest = [s for s in stream if s > probe][:3]
        assert next_fires(spec, probe, 3) == rest, iso(probe)


@pytest.mark.parametrize("zone", ["Europe/Berlin", "America/New_York"])
@pytest.mark.parametrize(
    "expr",
    [
        "0 * * * *",
        "17 */3 * * *",
        "30 2 * * *",
        "0 3 * * *",
        "30 1 * * *",
        "15 1,2,3 * * 1-5",
        "0 0-23 * * *",
        "*/20 2 * * *",
    ],
)
def test_same_as_cronsim_in_whole_hour_zones_for_a_year(zone: str, expr: str) -> None:
    """We map wall times to instants ourselves; where cronsim's zone-aware stepping is
    right (whole-hour shifts) the results must be identical to it."""
    z = ZoneInfo(zone)
    start, end = t("2026-01-01T00:00Z"), t("2027-01-01T00:00Z")
    theirs = []
    for local in CronSim(expr, datetime.fromtimestamp(start, z)):
        if local.timestamp() > end:
            break
        theirs.append(local.timestamp())
    ours, _ = fires_between(CronSpec(expr, zone), start, end, 100_000)
    assert ours == theirs


def test_cronsim_zone_stepping_still_misses_lord_howe_wall_times() -> None:
    """Why we do not use cronsim's own DST handling (cronsim 2.8). If this starts to
    fail, cronsim fixed it and the module docstring should say so."""
    z = ZoneInfo("Australia/Lord_Howe")
    theirs = CronSim("30 * * * *", datetime.fromtimestamp(t("2026-04-04T14:00Z"), z))
    got = [next(theirs).timestamp() for _ in range(2)]
    assert isos(got) == ["2026-04-04T14:30Z", "2026-04-04T16:00Z"]  # 15:00Z skipped


@pytest.mark.parametrize(("zone", "when"), TRANSITIONS)
def test_minutely_fires_once_per_real_minute_across_a_transition(zone: str, when: str) -> None:
    start, end = t(when) - 86400, t(when) + 86400
    got, _ = fires_between(CronSpec("* * * * *", zone), start, end, 100_000)
    assert got == [start + 60 * k for k in range(1, 2 * 1440 + 1)]


def test_daily_fixed_time_fires_once_per_local_day_all_year() -> None:
    for zone in ("Europe/Berlin", "America/New_York", "Australia/Lord_Howe"):
        for expr in ("30 2 * * *", "30 1 * * *", "45 1 * * *", "0 2 * * *"):
            z = ZoneInfo(zone)
            got, _ = fires_between(
                CronSpec(expr, zone), t("2025-12-31T12:00Z"), t("2026-12-31T12:00Z"), 1000
            )
            days = [datetime.fromtimestamp(a, z).date() for a in got]
            assert days == [date(2026, 1, 1) + timedelta(days=k) for k in range(365)], (zone, expr)


# ------------------------------------------------------------------ parsing


def first(expr: str, after: str = "2026-01-01T00:00Z", n: int = 1, zone: str = "UTC") -> list[str]:
    return isos(next_fires(CronSpec(expr, zone), t(after), n))


def test_names_any_case_ranges_lists_steps() -> None:
    # 2026-01-01 is a Thursday.
    assert first("0 9 * * MON-FRI", n=3) == [
        "2026-01-01T09:00Z",
        "2026-01-02T09:00Z",
        "2026-01-05T09:00Z",
    ]
    assert first("0 9 * * mon,wed", n=2) == ["2026-01-05T09:00Z", "2026-01-07T09:00Z"]
    assert first("0 0 1 jan,Jul *", after="2025-12-31T12:00Z", n=2) == [
        "2026-01-01T00:00Z",
        "2026-07-01T00:00Z",
    ]
    assert first("0 0 1 MAR-MAY/2 *", n=2) == ["2026-03-01T00:00Z", "2026-05-01T00:00Z"]
    assert first("*/15 * * * *", n=3) == [
        "2026-01-01T00:15Z",
        "2026-01-01T00:30Z",
        "2026-01-01T00:45Z",
    ]
    assert first("1-10/3 0 * * *", n=5) == [
        "2026-01-01T00:01Z",
        "2026-01-01T00:04Z",
        "2026-01-01T00:07Z",
        "2026-01-01T00:10Z",
        "2026-01-02T00:01Z",
    ]
    assert first("5,50 */12 * * *", n=4) == [
        "2026-01-01T00:05Z",
        "2026-01-01T00:50Z",
        "2026-01-01T12:05Z",
        "2026-01-01T12:50Z",
    ]
    # N/S means N-max/S (cronie, croniter); 7 and 0 are both Sunday.
    assert first("50/5 0 * * *", n=3) == [
        "2026-01-01T00:50Z",
        "2026-01-01T00:55Z",
        "2026-01-02T00:50Z",
    ]
    assert first("0 0 * * 7", n=1) == first("0 0 * * SUN", n=1) == ["2026-01-04T00:00Z"]


def test_day_of_month_or_day_of_week_as_in_standard_cron() -> None:
    # Both restricted: either matches (the 13th, or any Friday). 2026-01-02 is a Friday.
    assert first("0 0 13 * FRI", n=4) == [
        "2026-01-02T00:00Z",
        "2026-01-09T00:00Z",
        "2026-01-13T00:00Z",
        "2026-01-16T00:00Z",
    ]
    # "First Monday" cannot be written as 1-7 + MON: that is days 1-7 or any Monday.
    assert first("0 0 1-7 * MON", after="2026-01-07T12:00Z", n=2) == [
        "2026-01-12T00:00Z",
        "2026-01-19T00:00Z",
    ]
    # A field starting with '*' makes both required (Vixie/Debian): odd days that are Fridays.
    assert first("0 0 */2 * FRI", n=3) == [
        "2026-01-09T00:00Z",
        "2026-01-23T00:00Z",
        "2026-02-13T00:00Z",
    ]
    # With day-of-week '*', day-of-month alone decides.
    assert first("0 0 13 * *", n=2) == ["2026-01-13T00:00Z", "2026-02-13T00:00Z"]


def test_february_29_fires_in_leap_years_only() -> None:
    assert first("0 0 29 2 *", n=3) == [
        "2028-02-29T00:00Z",
        "2032-02-29T00:00Z",
        "2036-02-29T00:00Z",
    ]
    # 2100 is not a leap year: an eight-year gap, well inside the calendar walk's reach.
    assert first("0 0 29 2 *", after="2096-03-01T00:00Z") == ["2104-02-29T00:00Z"]
    assert first("0 0 31 1,2 *", n=2) == ["2026-01-31T00:00Z", "2027-01-31T00:00Z"]


def test_the_sparsest_accepted_schedule_still_fires() -> None:
    # "*/7" on day-of-week is {0, 7}: Sunday; the leading '*' makes both day fields
    # required. Feb 29 on a Sunday: gaps of 28 years, 40 across 2100.
    spec = CronSpec("0 0 29 2 */7")
    leap_sundays = [
        y
        for y in range(2026, 2300)
        if (y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)) and date(y, 2, 29).weekday() == 6
    ]
    assert leap_sundays[:4] == [2032, 2060, 2088, 2128]
    got = next_fires(spec, t("2026-01-01T00:00Z"), 4)
    assert isos(got) == [f"{y}-02-29T00:00Z" for y in leap_sundays[:4]]


@pytest.mark.parametrize(
    "expr", ["0 0 30 2 *", "0 0 31 2 *", "0 0 30,31 2 *", "0 0 31 4,6,9,11 *", "0 0 30-31/5 FEB *"]
)
def test_never_firing_expressions_are_refused(expr: str) -> None:
    with pytest.raises(InvalidInput, match="never fires"):
        CronSpec(expr)


def test_whitespace_is_normalised() -> None:
    spec = CronSpec("  0\t3  * *\n *  ", "Europe/Berlin")
    assert spec.expr == "0 3 * * *"
    assert spec == CronSpec("0 3 * * *", "Europe/Berlin")
    assert hash(spec) == hash(CronSpec("0 3 * * *", "Europe/Berlin"))
    assert spec != CronSpec("0 3 * * *", "UTC")


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("", "0 fields given; expected 5"),
        ("0 0 *", "3 fields given; expected 5"),
        ("0 0 * * * * *", "7 fields given; expected 5"),
        ("0 0 3 * * *", "6 fields given; .* no seconds field"),
        ("@daily", "macros like @daily are not supported; write '0 0 \\* \\* \\*'"),
        ("@HOURLY", "write '0 \\* \\* \\* \\*'"),
        ("@reboot", "macros like @reboot are not supported$"),
        ("60 * * * *", "minute value 60 is out of range 0-59"),
        ("0 24 * * *", "hour value 24 is out of range 0-23"),
        ("0 0 0 * *", "day-of-month value 0 is out of range 1-31"),
        ("0 0 32 * *", "day-of-month value 32 is out of range 1-31"),
        ("0 0 * 13 *", "month value 13 is out of range 1-12"),
        ("0 0 * 0 *", "month value 0 is out of range 1-12"),
        ("0 0 * * 8", "day-of-week value 8 is out of range 0-7"),
        ("0 5-1 * * *", "hour range '5-1' goes backwards"),
        ("0 0 * * FRI-SUN", "day-of-week range 'FRI-SUN' goes backwards"),
        ("*/0 * * * *", "minute step must be at least 1"),
        ("0 0 * * MONDAY", "unknown day-of-week name 'MONDAY'"),
        ("0 0 * FOO *", "unknown month name 'FOO'"),
        ("MON * * * *", "minute field takes numbers, not 'MON'"),
        ("0 0 JAN * *", "day-of-month field takes numbers, not 'JAN'"),
        ("1,,2 * * * *", "minute item '' is not"),
        ("-1 * * * *", "minute item '-1' is not"),
        ("1-2-3 * * * *", "minute item '1-2-3' is not"),
        ("1/2/3 * * * *", "minute item '1/2/3' is not"),
        ("*/ * * * *", "minute item '\\*/' is not"),
        ("\uff10 * * * *", "minute item"),  # a full-width digit zero
        ("0 0 L * *", "'L': the L, W, # and \\? extensions are not supported"),
        ("0 0 LW * *", "extensions are not supported"),
        ("0 0 15W * *", "extensions are not supported"),
        ("0 0 * * 5L", "extensions are not supported"),
        ("0 0 * * MON#1", "extensions are not supported"),
        ("0 0 ? * MON", "extensions are not supported"),
    ],
)
def test_bad_expressions_are_refused_clearly(expr: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message) as err:
        CronSpec(expr)
    assert err.value.detail["field"] == "cron"
    assert err.value.to_dict()["code"] == "INVALID_INPUT"


@pytest.mark.parametrize("expr", [None, 5, b"0 0 * * *", ["0", "0", "*", "*", "*"]])
def test_non_string_expression_is_refused(expr: object) -> None:
    with pytest.raises(InvalidInput, match="must be a string"):
        CronSpec(expr)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "zone",
    [
        "Foo/Bar",
        "europe/berlin",
        "Europe",
        "",
        "localtime",
        "posixrules",
        "/etc/localtime",
        "Europe/../Europe/Berlin",
        "a\x00b",
        "x" * 300,
        "right/UTC",
    ],
)
def test_unknown_or_host_dependent_zones_are_refused(zone: str) -> None:
    with pytest.raises(InvalidInput, match="unknown time zone") as err:
        CronSpec("0 0 * * *", zone)
    assert err.value.detail["field"] == "timezone"


def test_zone_must_be_a_string() -> None:
    with pytest.raises(InvalidInput, match="time zone must be a string"):
        CronSpec("0 0 * * *", None)  # type: ignore[arg-type]


@pytest.mark.parametrize("zone", ["UTC", "Etc/UTC", "Asia/Kathmandu", "US/Eastern", "Etc/GMT+5"])
def test_iana_zones_and_aliases_are_accepted(zone: str) -> None:
    spec = CronSpec("0 0 * * *", zone)
    offset = ZoneInfo(zone).utcoffset(datetime(2026, 1, 2))
    assert offset is not None
    # Midnight local on 2026-01-02 (no DST in January for any of these).
    assert next_fires(spec, t("2026-01-01T12:00Z") - offset.total_seconds()) == [
        t("2026-01-02T00:00Z") - offset.total_seconds()
    ]


def test_utc_is_the_default_zone() -> None:
    assert CronSpec("0 3 * * *").timezone == "UTC"
    assert first("0 3 * * *") == ["2026-01-01T03:00Z"]


# ------------------------------------------------------------------ next_fires / fires_between


def test_next_fires_is_strictly_after() -> None:
    spec = CronSpec("0 * * * *")
    at = t("2026-01-01T05:00Z")
    assert next_fires(spec, at, 1) == [at + 3600]
    assert next_fires(spec, at - 0.001, 1) == [at]
    assert next_fires(spec, math.nextafter(at, 0), 1) == [at]  # rounding never skips a fire
    # after + offset rounds up across 2**31 here; the fire just after must still come.
    at = t("2038-01-19T03:00Z")  # 2**31 s is 03:14:08Z
    assert next_fires(CronSpec("0 * * * *", "Europe/Berlin"), math.nextafter(at, 0), 1) == [at]
    assert next_fires(spec, at, 0) == []


@pytest.mark.parametrize("bad", [-1, 1.5, True, "3", None])
def test_next_fires_checks_n(bad: object) -> None:
    with pytest.raises(InvalidInput):
        next_fires(CronSpec("* * * * *"), 0.0, bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "bad", [math.nan, math.inf, -math.inf, -1.0, 64060588800.0, True, "0", None]
)
def test_instants_are_checked(bad: object) -> None:
    spec = CronSpec("* * * * *")
    with pytest.raises(InvalidInput):
        next_fires(spec, bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        fires_between(spec, 0.0, bad, 10)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        fire_key("s", bad)  # type: ignore[arg-type]


def test_iteration_ends_cleanly_before_datetime_runs_out() -> None:
    spec = CronSpec("0 0 1 1 *")
    tail = list(iter_fires(spec, t("3999-06-01T00:00Z")))
    assert isos(tail)[:2] == ["4000-01-01T00:00Z", "4001-01-01T00:00Z"]
    assert isos(tail)[-1] == "9999-01-01T00:00Z"


def test_fires_between_is_open_closed_and_bounded() -> None:
    spec = CronSpec("0 * * * *")
    a, b = t("2026-01-01T00:00Z"), t("2026-01-01T03:00Z")
    assert fires_between(spec, a, b, 10) == ([a + 3600, a + 7200, b], False)
    assert fires_between(spec, a, b, 3) == ([a + 3600, a + 7200, b], False)
    assert fires_between(spec, a, b, 2) == ([a + 3600, a + 7200], True)
    assert fires_between(spec, a, b, 0) == ([], True)
    assert fires_between(spec, a, a + 3599, 0) == ([], False)
    assert fires_between(spec, b, a, 10) == ([], False)


# ------------------------------------------------------------------ catch-up

HOURLY = CronSpec("0 * * * *")
T0 = t("2026-01-01T00:00Z")


def hours(*ks: int) -> tuple[float, ...]:
    return tuple(T0 + 3600 * k for k in ks)


def test_catchup_policies_keep_the_newest_missed_fires() -> None:
    # Down from 00:00 to 05:30: missed 01:00 .. 05:00 (five fires).
    now = T0 + 5.5 * 3600
    assert plan_catchup(HOURLY, T0, now, "skip") == (hours(), 5, True)
    assert plan_catchup(HOURLY, T0, now, "latest") == (hours(5), 4, True)
    assert plan_catchup(HOURLY, T0, now) == (hours(5), 4, True)  # latest is the default
    assert plan_catchup(HOURLY, T0, now, "all") == (hours(1, 2, 3, 4, 5), 0, True)
    assert plan_catchup(HOURLY, T0, now, "all", bound=2) == (hours(4, 5), 3, True)
    # A fire due exactly now counts as missed.
    assert plan_catchup(HOURLY, T0, T0 + 3 * 3600, "latest") == (hours(3), 2, True)


def test_catchup_with_nothing_missed() -> None:
    for policy in CATCHUP_POLICIES:
        assert plan_catchup(HOURLY, T0, T0 + 3599, policy) == ((), 0, True)
        assert plan_catchup(HOURLY, T0, T0, policy) == ((), 0, True)


def test_catchup_past_the_count_limit_still_finds_the_newest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 24 * 10 = 240 missed fires, counted up to 50.
    now = T0 + 240 * 3600 + 1800
    assert plan_catchup(HOURLY, T0, now, "latest", count_limit=50) == (hours(240), 50, False)
    assert plan_catchup(HOURLY, T0, now, "all", bound=3, count_limit=50) == (
        hours(238, 239, 240),
        48,
        False,
    )
    assert plan_catchup(HOURLY, T0, now, "skip", count_limit=50) == ((), 51, False)
    # A year of a minutely schedule, down all year: answered without listing 525,600 fires.
    # Every fire the planner walks is counted: far fewer than the year's fires.
    walked = 0
    real_iter_fires = iter_fires

    def counting_iter_fires(spec: CronSpec, after_utc: float) -> Iterator[float]:
        nonlocal walked
        for at in real_iter_fires(spec, after_utc):
            walked += 1
            yield at

    monkeypatch.setattr(_cron, "iter_fires", counting_iter_fires)
    minutely = CronSpec("* * * * *", "Europe/Berlin")
    plan = plan_catchup(minutely, T0, t("2027-01-01T00:00Z"), "all", bound=100)
    # Counting stops at 10,001; the look-back for the newest 100 walks a few thousand more.
    assert 10_001 < walked < 20_000
    assert plan.fire == tuple(t("2027-01-01T00:00Z") - 60 * k for k in range(99, -1, -1))
    # More than the default 10,000 counted, so at least 10,001 - 100 dropped.
    assert (plan.dropped, plan.dropped_exact) == (9_901, False)


def test_catchup_finds_the_latest_of_a_sparse_schedule() -> None:
    yearly = CronSpec("0 0 1 1 *", "America/New_York")
    plan = plan_catchup(
        yearly, t("2000-06-01T00:00Z"), t("2026-06-01T00:00Z"), "latest", bound=1, count_limit=10
    )
    assert isos(list(plan.fire)) == ["2026-01-01T05:00Z"]
    assert (plan.dropped, plan.dropped_exact) == (10, False)  # 26 missed, 11 counted
    plan = plan_catchup(
        yearly, t("2000-06-01T00:00Z"), t("2026-06-01T00:00Z"), "latest", bound=1, count_limit=100
    )
    assert (plan.dropped, plan.dropped_exact) == (25, True)


def test_catchup_in_the_repeated_hour() -> None:
    # Down from 01:45 CEST (23:45Z) to 02:45 CET (01:45Z) on the fall-back night.
    spec = CronSpec("30 * * * *", "Europe/Berlin")
    plan = plan_catchup(spec, t("2026-10-24T23:45Z"), t("2026-10-25T01:45Z"), "all")
    assert isos(list(plan.fire)) == ["2026-10-25T00:30Z", "2026-10-25T01:30Z"]  # 02:30 twice
    spec = CronSpec("30 2 * * *", "Europe/Berlin")
    plan = plan_catchup(spec, t("2026-10-24T23:45Z"), t("2026-10-25T01:45Z"), "all")
    assert isos(list(plan.fire)) == ["2026-10-25T00:30Z"]  # 02:30 once


@pytest.mark.parametrize(
    ("policy", "bound", "message"),
    [
        ("sometimes", 100, "catchup must be one of skip, latest, all"),
        (None, 100, "catchup must be one of"),
        ("all", 0, "bound must be a positive integer"),
        ("all", True, "bound must be a positive integer"),
        ("latest", 2.0, "bound must be a positive integer"),
    ],
)
def test_catchup_arguments_are_checked(policy: object, bound: object, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        check_catchup(policy, bound)
    with pytest.raises(InvalidInput, match=message):
        plan_catchup(HOURLY, T0, T0 + 7200, policy, bound)  # type: ignore[arg-type]


def test_count_limit_must_cover_the_bound() -> None:
    with pytest.raises(InvalidInput, match="count_limit"):
        plan_catchup(HOURLY, T0, T0 + 7200, "all", bound=10, count_limit=5)


# ------------------------------------------------------------------ overlap

# The table as docs/schedules.md states it: rows policy, columns idle / running /
# running with one fire buffered.
OVERLAP_TABLE = {
    "allow": ("start", "start", "start"),
    "forbid": ("start", "skip", "skip"),
    "replace": ("start", "cancel_then_start", "cancel_then_start"),
    "buffer_one": ("start", "buffer", "skip"),
}


def test_overlap_table() -> None:
    assert set(OVERLAP_TABLE) == set(OVERLAP_POLICIES)
    for policy, (idle, running, buffered) in OVERLAP_TABLE.items():
        assert overlap_action(policy, running=False, buffered=False) == idle  # type: ignore[arg-type]
        assert overlap_action(policy, running=True, buffered=False) == running  # type: ignore[arg-type]
        assert overlap_action(policy, running=True, buffered=True) == buffered  # type: ignore[arg-type]
    assert {a.value for a in Action} == {"start", "skip", "cancel_then_start", "buffer"}


def test_overlap_rejects_unknown_policy_and_impossible_state() -> None:
    with pytest.raises(
        InvalidInput, match="overlap must be one of allow, forbid, replace, buffer_one"
    ):
        overlap_action("queue", running=True, buffered=False)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        check_overlap(None)
    assert check_overlap("forbid") == "forbid"
    with pytest.raises(ValueError, match="buffered behind a running run"):
        overlap_action("buffer_one", running=False, buffered=True)


# ------------------------------------------------------------------ fire keys


def test_fire_key_is_integer_milliseconds() -> None:
    at = t("2026-03-29T01:00Z")
    key = fire_key("nightly", at)
    assert key == FireKey("nightly", 1774746000000)
    assert type(key.at_ms) is int
    # The same tick reached by float arithmetic that is off in the last bits keys the same.
    drifted = sum([at / 3] * 3)
    assert fire_key("nightly", drifted) == key
    assert fire_key("nightly", math.nextafter(at, math.inf)) == key
    assert fire_key("nightly", at + 60) != key
    assert fire_key("other", at) != key


def test_fire_key_checks_its_name() -> None:
    with pytest.raises(InvalidInput):
        fire_key("", 0.0)
    with pytest.raises(InvalidInput):
        fire_key(None, 0.0)  # type: ignore[arg-type]


# ------------------------------------------------------------------ a year of fires
# (fires per second of iter_fires are measured by bench/schedules.py, not here)


def count_minutely_fires(zone: str, days: int) -> int:
    spec = CronSpec("* * * * *", zone)
    start = t("2026-01-01T00:00Z")
    count = 0
    for at in iter_fires(spec, start):
        if at > start + days * 86400:
            break
        count += 1
    return count


def test_a_week_of_minutely_fires() -> None:
    # A week of a minutely schedule; the full year is the soak test below.
    assert count_minutely_fires("Europe/Berlin", 7) == 7 * 1440


@pytest.mark.soak
@pytest.mark.skipif(not SOAK, reason="set PERDURE_SOAK=1 (make soak)")
@pytest.mark.parametrize("zone", ["UTC", "Europe/Berlin", "Australia/Lord_Howe"])
def test_a_year_of_minutely_fires(zone: str) -> None:
    assert count_minutely_fires(zone, 365) == 365 * 1440
