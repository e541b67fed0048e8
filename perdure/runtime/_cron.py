"""Cron time logic (R25, R26): when a schedule fires, what to do about missed fires
and about a fire that arrives while the previous run still runs.

Pure functions of their arguments: no I/O, no clock, no trio, no storage. The engine
passes instants in and gets instants (UTC epoch seconds, whole minutes) out, so a
year of a minutely schedule can be computed in virtual time and every answer is
reproducible.

Parsing and the calendar walk
    ``cronsim`` (maintained, Debian-cron compatible) parses the expression and walks
    the *wall-clock* calendar: it yields naive local times that match the five fields.
    perdure accepts a strict subset of what cronsim does (see :class:`CronSpec`): the
    standard fields with names, ranges, lists and steps, and nothing that means
    something different elsewhere.

Wall clock to instants (DST)
    A wall time can exist once, twice (the repeated hour when clocks go back) or not at
    all (the skipped hour when they go forward). Following Debian cron, an expression
    is either *fixed-time* or *wildcard* (:attr:`CronSpec.fixed_time`):

    ================  ============================  =================================
    wall time is      fixed-time (minute and hour   wildcard (minute or hour starts
                      fields do not start with *)   with *: "0 * * * *", "*/5 2 ...")
    ================  ============================  =================================
    normal            fires at it                   fires at it
    repeated          fires once, first pass        fires at both passes
    skipped           fires at the end of the gap   does not fire
                      (first real minute after it,
                      once even if several fixed
                      times fall in the gap)
    ================  ============================  =================================

    So a daily job runs exactly once per local day, and an hourly job runs at every
    real instant whose wall clock shows its minute.

    cronsim applies the same rule when given an aware datetime, but its stepping in
    that mode assumes N elapsed minutes move the wall clock by N minutes; across a
    30-minute transition (Australia/Lord_Howe) it jumps over real matches ("30 * * *
    *" misses 01:30 in the repeated half hour and 02:30 right after the gap). We
    therefore give cronsim naive wall times only, where its arithmetic is exact, and
    map them to instants here (:func:`_fixed_time_instants`,
    :func:`_wildcard_instants`). In whole-hour zones the result is identical to
    cronsim's own (tests compare a year of Berlin and New York).

Fire identity
    A fire is keyed by (schedule name, scheduled instant in integer UTC milliseconds),
    see :func:`fire_key`.
"""

from __future__ import annotations

import enum
import heapq
import itertools
import math
import re
import zoneinfo
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cache
from typing import Literal, NamedTuple, cast

from cronsim import CronSim, CronSimError

from .._errors import InvalidInput

__all__ = [
    "CATCHUP_POLICIES",
    "DEFAULT_CATCHUP_BOUND",
    "DEFAULT_COUNT_LIMIT",
    "OVERLAP_POLICIES",
    "Action",
    "CatchUp",
    "CatchUpPolicy",
    "CronSpec",
    "FireKey",
    "OverlapPolicy",
    "check_catchup",
    "check_overlap",
    "fire_key",
    "fires_between",
    "iter_fires",
    "next_fires",
    "overlap_action",
    "plan_catchup",
]

# --------------------------------------------------------------------------- parsing

_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_DAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")

# name, lowest, highest, accepted names -> value
_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day-of-month", 1, 31, {}),
    ("month", 1, 12, {name: i + 1 for i, name in enumerate(_MONTHS)}),
    ("day-of-week", 0, 7, {name: i for i, name in enumerate(_DAYS)}),
)

# Refused with the equivalent spelled out: cronsim 2.8 does not parse macros, and one
# spelling per schedule keeps stored definitions comparable.
_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

_ITEM = re.compile(r"(\*|([0-9A-Za-z]+)(?:-([0-9A-Za-z]+))?)(?:/([0-9]+))?")
_EXTENSION = re.compile(r"[#?]|^(?:L|LW|[0-9]*L|[0-9]+W)$")

# Not IANA zones but aliases of whatever the host is set to: a schedule would fire at
# different instants on different machines.
_HOST_ZONES = frozenset({"localtime", "posixrules"})


def _refuse(expr: str, reason: str) -> InvalidInput:
    return InvalidInput(f"invalid cron expression {expr!r}: {reason}", field="cron", cron=expr)


def _check_value(expr: str, text: str, fld: tuple[str, int, int, dict[str, int]]) -> int:
    name, low, high, names = fld
    if text.isdigit():
        value = int(text)
        if not low <= value <= high:
            raise _refuse(expr, f"{name} value {value} is out of range {low}-{high}")
        return value
    if text.upper() in names:
        return names[text.upper()]
    if _EXTENSION.search(text.upper()):
        raise _refuse(expr, f"{name} {text!r}: the L, W, # and ? extensions are not supported")
    if names:
        first, last = next(iter(names)), list(names)[-1]
        raise _refuse(expr, f"unknown {name} name {text!r} (use {first}-{last} or numbers)")
    raise _refuse(expr, f"{name} field takes numbers, not {text!r}")


def _check_field(expr: str, text: str, fld: tuple[str, int, int, dict[str, int]]) -> None:
    name = fld[0]
    for item in text.split(","):
        m = _ITEM.fullmatch(item)
        if m is None:
            if _EXTENSION.search(item.upper()):
                raise _refuse(
                    expr, f"{name} {item!r}: the L, W, # and ? extensions are not supported"
                )
            raise _refuse(expr, f"{name} item {item!r} is not *, N, N-M or one of them /STEP")
        _, start, end, step = m.groups()
        if start is not None:
            a = _check_value(expr, start, fld)
            if end is not None and _check_value(expr, end, fld) < a:
                raise _refuse(
                    expr, f"{name} range {item!r} goes backwards (write it as two ranges)"
                )
        if step is not None and int(step) == 0:
            raise _refuse(expr, f"{name} step must be at least 1")


def _parse(expr: object) -> str:
    """Validate ``expr`` and return it with whitespace normalised."""
    if not isinstance(expr, str):
        raise InvalidInput("cron expression must be a string", field="cron")
    parts = expr.split()
    if len(parts) == 1 and parts[0].startswith("@"):
        macro = parts[0].lower()
        hint = f"; write {_MACROS[macro]!r}" if macro in _MACROS else ""
        raise _refuse(expr, f"macros like {parts[0]} are not supported{hint}")
    if len(parts) == 6:
        raise _refuse(
            expr,
            "6 fields given; schedules have minute resolution, so there "
            "is no seconds field (minute hour day-of-month month day-of-week)",
        )
    if len(parts) != 5:
        raise _refuse(
            expr,
            f"{len(parts)} fields given; expected 5 (minute hour day-of-month month day-of-week)",
        )
    for text, fld in zip(parts, _FIELDS, strict=True):
        _check_field(expr, text, fld)
    normal = " ".join(parts)
    try:
        walk = CronSim(normal, datetime(2000, 1, 1))
    except CronSimError:
        # Our checks passed, so this is cronsim refusing a day that no chosen month
        # has ("0 0 30 2 *"): such a schedule would never fire.
        raise _refuse(expr, "never fires: no chosen month has that day of the month") from None
    # The syntax accepted above cannot express a schedule without fires (every
    # day-of-week and every day <= 28 recurs in every month); checked anyway so that a
    # cronsim change can never hand the engine a schedule that is silently dead.
    if next(walk, None) is None:
        raise _refuse(expr, "never fires")
    return normal


@cache
def _iana_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones()) - _HOST_ZONES


def _load_zone(name: object) -> zoneinfo.ZoneInfo:
    if not isinstance(name, str):
        raise InvalidInput("time zone must be a string", field="timezone")
    if name not in _iana_zones():
        raise InvalidInput(
            f"unknown time zone {name!r}: use an IANA name such as 'UTC', "
            "'Europe/Berlin' or 'America/New_York' (names are case-sensitive)",
            field="timezone",
            timezone=name,
        )
    try:
        return zoneinfo.ZoneInfo(name)
    except (ValueError, OSError, zoneinfo.ZoneInfoNotFoundError) as err:  # pragma: no cover
        raise InvalidInput(
            f"time zone {name!r} cannot be loaded: {err}", field="timezone", timezone=name
        ) from None


@dataclass(frozen=True, slots=True)
class CronSpec:
    """A validated 5-field cron expression in an IANA time zone.

    Accepted, per field: ``*``, numbers, names (``JAN``-``DEC``, ``SUN``-``SAT``, any
    case), ranges ``N-M``, lists ``a,b,c`` and steps ``*/S``, ``N-M/S`` and ``N/S``
    (meaning ``N-max/S``, as in cronie; Debian cron refuses it). Day-of-week 0 and 7
    are Sunday. Day-of-month and day-of-week combine as in Vixie/Debian cron: when
    either field *starts with* ``*`` both must match, otherwise either may
    (``"0 9 1-7 * MON"`` is days 1-7 *and* every Monday; ``"0 9 */2 * MON"`` is odd
    days that are Mondays).

    Refused with :class:`~perdure.InvalidInput`: any other field count (six fields
    would be seconds), macros such as ``@daily`` (the message names the equivalent),
    cronsim's ``L``/``W``/``#`` extensions and ``?`` (not standard cron, and ``#``
    makes schedules that never fire expressible), out-of-range values, backward
    ranges, step 0, unknown names, expressions that never fire (``"0 0 30 2 *"``),
    and unknown or host-dependent zones (``localtime``).

    ``expr`` is stored with runs of whitespace collapsed, so equal schedules compare
    equal.
    """

    expr: str
    timezone: str = "UTC"
    _zone: zoneinfo.ZoneInfo = field(init=False, repr=False, compare=False)
    _fixed: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        normal = _parse(self.expr)
        object.__setattr__(self, "expr", normal)
        object.__setattr__(self, "_zone", _load_zone(self.timezone))
        minute, hour = normal.split()[:2]
        object.__setattr__(self, "_fixed", not minute.startswith("*") and not hour.startswith("*"))

    @property
    def fixed_time(self) -> bool:
        """True when neither the minute nor the hour field starts with ``*``.

        Decides the DST rule (module docstring): fixed-time schedules fire once per
        matching local time even on transition days; wildcard ones follow the clock.
        ``"0 0-23 * * *"`` is fixed-time although it fires hourly, like in Debian cron.
        """
        return self._fixed


# ------------------------------------------------------------------- computing fires

_EPOCH = datetime(1970, 1, 1)
_MINUTE = timedelta(minutes=1)
_DAY = 86400
# Instants are limited so that the calendar walk (which looks up to 50 years ahead)
# stays inside datetime's range.
_MAX_INSTANT = 64060588800.0  # 4000-01-01T00:00:00Z


def _check_instant(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInput(f"{name} must be a number of UTC epoch seconds", field=name)
    if not (math.isfinite(value) and 0 <= value < _MAX_INSTANT):
        raise InvalidInput(f"{name} must be between 1970 and 4000, got {value!r}", field=name)
    return float(value)


def _offsets(wall: datetime, zone: zoneinfo.ZoneInfo) -> tuple[float, float]:
    """UTC offsets (seconds) of naive ``wall`` on its first and second pass.

    Equal for a normal wall time; first > second in a repeated stretch (fall back);
    first < second in a skipped one (spring forward): PEP 495's reading of ``fold``.
    """
    first = zone.utcoffset(wall)
    second = zone.utcoffset(wall.replace(fold=1))
    assert first is not None and second is not None  # a ZoneInfo always has an offset
    return first.total_seconds(), second.total_seconds()


def _start_wall(zone: zoneinfo.ZoneInfo, after: float) -> datetime:
    """A naive wall time at or before every wall time that maps past ``after``.

    A wall time W maps to W - offset, so W must exceed ``after`` + the smallest
    offset in force around it (a day either side covers any repeated hour). One
    second earlier still, so that rounding ``after`` can never skip a fire.
    """
    least = min(
        datetime.fromtimestamp(t, zone).utcoffset() or timedelta()
        for t in (max(after - _DAY, 0), after, after + _DAY)
    )
    return _EPOCH + timedelta(seconds=math.floor(after + least.total_seconds()) - 1)


def _walls(expr: str, start: datetime) -> Iterator[datetime]:
    try:
        yield from CronSim(expr, start)
    except OverflowError:  # the walk passed year 9999: no more fires
        return


def _gap_end(wall: datetime, zone: zoneinfo.ZoneInfo) -> float:
    """The instant of the first real whole minute after a skipped wall time."""
    first, second = _offsets(wall, zone)
    while first < second:
        wall += _MINUTE
        first, second = _offsets(wall, zone)
    return (wall - _EPOCH).total_seconds() - first


def _fixed_time_instants(
    walls: Iterator[datetime], zone: zoneinfo.ZoneInfo, after: float
) -> Iterator[float]:
    # Fold 0 (first pass) for repeated times, the gap's end for skipped ones. The
    # result never decreases along the walk, so "greater than the last one" both
    # drops what lies before ``after`` and fires a gap's end only once.
    last = after
    for wall in walls:
        first, second = _offsets(wall, zone)
        skipped = first < second  # by a spring-forward transition
        at = _gap_end(wall, zone) if skipped else (wall - _EPOCH).total_seconds() - first
        if at > last:
            last = at
            yield at


def _wildcard_instants(
    walls: Iterator[datetime], zone: zoneinfo.ZoneInfo, after: float
) -> Iterator[float]:
    # Each real wall time fires; a repeated one fires on both passes. First-pass
    # instants never decrease along the walk, but second-pass ones come after every
    # first pass of the repeated stretch, so they wait in a heap until the walk has
    # gone past them.
    second_passes: list[float] = []
    for wall in walls:
        first, second = _offsets(wall, zone)
        if first < second:  # skipped: this wall time does not happen today
            continue
        base = (wall - _EPOCH).total_seconds()
        at = base - first
        while second_passes and second_passes[0] < at:
            earlier = heapq.heappop(second_passes)
            if earlier > after:
                yield earlier
        if at > after:
            yield at
        if first > second:  # repeated by a fall-back transition
            heapq.heappush(second_passes, base - second)
    while second_passes:
        earlier = heapq.heappop(second_passes)
        if earlier > after:
            yield earlier


def iter_fires(spec: CronSpec, after_utc: float) -> Iterator[float]:
    """Every fire instant strictly after ``after_utc``, ascending, as UTC epoch seconds.

    Lazy and unbounded (it ends only past year 9999): the engine can keep one per
    schedule and pull the next fire as virtual or real time reaches it, which is
    several times faster than calling :func:`next_fires` for each fire.
    """
    after = _check_instant("after_utc", after_utc)
    zone = spec._zone
    walls = _walls(spec.expr, _start_wall(zone, after))
    if spec._fixed:
        return _fixed_time_instants(walls, zone, after)
    return _wildcard_instants(walls, zone, after)


def next_fires(spec: CronSpec, after_utc: float, n: int = 1) -> list[float]:
    """The next ``n`` fire instants strictly after ``after_utc`` (UTC epoch seconds)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise InvalidInput("n must be a non-negative integer", field="n")
    return list(itertools.islice(iter_fires(spec, after_utc), n))


def fires_between(
    spec: CronSpec, after_utc: float, until_utc: float, limit: int
) -> tuple[list[float], bool]:
    """Fires in ``(after_utc, until_utc]``, oldest first, at most ``limit`` of them.

    The interval is open at ``after_utc`` (the last fire already handled) and closed
    at ``until_utc`` (a fire due exactly now is missed, not future). ``truncated`` is
    True when more fires than ``limit`` lie in the interval.
    """
    until = _check_instant("until_utc", until_utc)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise InvalidInput("limit must be a non-negative integer", field="limit")
    out: list[float] = []
    for at in iter_fires(spec, after_utc):
        if at > until:
            return out, False
        if len(out) == limit:
            return out, True
        out.append(at)
    return out, False


def _newest(spec: CronSpec, after: float, until: float, keep: int) -> list[float]:
    # The newest ``keep`` fires in (after, until] when there are too many to list:
    # look back over windows that double until one holds ``keep`` fires (or reaches
    # ``after``). Only forward walks are used: cronsim's reverse walk, started in the
    # second pass of a repeated hour, misses that hour's first-pass fire.
    width = 3600.0 * keep
    while True:
        low = max(after, until - width)
        found: deque[float] = deque(maxlen=keep)
        for at in iter_fires(spec, low):
            if at > until:
                break
            found.append(at)
        if len(found) == keep or low == after:
            return list(found)
        width *= 2


# ------------------------------------------------------------------ catch-up (R26)

CatchUpPolicy = Literal["skip", "latest", "all"]
CATCHUP_POLICIES: tuple[CatchUpPolicy, ...] = ("skip", "latest", "all")
DEFAULT_CATCHUP_BOUND = 100
DEFAULT_COUNT_LIMIT = 10_000

# How many of the newest missed fires each policy runs; None: the policy's bound.
_KEEP: dict[str, int | None] = {"skip": 0, "latest": 1, "all": None}


class CatchUp(NamedTuple):
    """What to do about the fires missed while the runtime was down."""

    fire: tuple[float, ...]
    """Missed instants to fire now, oldest first."""
    dropped: int
    """Missed instants that will never fire (exact when ``dropped_exact``)."""
    dropped_exact: bool
    """False when more fires were missed than were counted; ``dropped`` is then a
    lower bound."""


def check_catchup(policy: object, bound: object = DEFAULT_CATCHUP_BOUND) -> CatchUpPolicy:
    """Validate a catch-up policy and its bound (checked whatever the policy)."""
    if policy not in _KEEP:
        raise InvalidInput(
            f"catchup must be one of {', '.join(CATCHUP_POLICIES)}, got {policy!r}", field="catchup"
        )
    if isinstance(bound, bool) or not isinstance(bound, int) or bound < 1:
        raise InvalidInput("catch-up bound must be a positive integer", field="catchup_bound")
    return cast(CatchUpPolicy, policy)


def plan_catchup(
    spec: CronSpec,
    after_utc: float,
    now_utc: float,
    policy: CatchUpPolicy = "latest",
    bound: int = DEFAULT_CATCHUP_BOUND,
    count_limit: int = DEFAULT_COUNT_LIMIT,
) -> CatchUp:
    """Decide which fires missed in ``(after_utc, now_utc]`` to run now.

    ``after_utc`` is the last instant the schedule handled (fired or decided not
    to); ``now_utc`` is the present. The policy keeps the *newest* missed fires:

    - ``"skip"``: none;
    - ``"latest"`` (the default in DESIGN.md): only the most recent one;
    - ``"all"``: the newest ``bound`` of them, fired oldest first.

    Everything older is dropped, so a bounded catch-up leaves the gap at the old end
    and history is contiguous up to now (Temporal's catch-up window behaves alike);
    keeping the oldest instead would fire stale ticks and still skip the recent
    ones. Missed fires are counted up to ``count_limit`` (a year of a minutely
    schedule is 525,600 of them); past it ``dropped`` is a lower bound.

    Either way the engine then moves its cursor to ``now_utc``: dropped instants are
    never considered again. The fires returned still go through
    :func:`overlap_action` one by one, like live fires.
    """
    policy = check_catchup(policy, bound)
    keep = _KEEP[policy]
    if keep is None:
        keep = bound
    if isinstance(count_limit, bool) or not isinstance(count_limit, int) or count_limit < keep:
        raise InvalidInput(
            "count_limit must be an integer no smaller than the number of fires the policy keeps",
            field="count_limit",
        )
    after = _check_instant("after_utc", after_utc)
    now = _check_instant("now_utc", now_utc)
    missed, truncated = fires_between(spec, after, now, count_limit)
    if not truncated:
        fire = missed[len(missed) - keep :] if keep else []
        return CatchUp(tuple(fire), len(missed) - len(fire), True)
    fire = _newest(spec, after, now, keep) if keep else []
    # More than count_limit were missed, so at least count_limit + 1 - keep dropped.
    return CatchUp(tuple(fire), count_limit + 1 - len(fire), False)


# ------------------------------------------------------------------- overlap (R25)

OverlapPolicy = Literal["allow", "forbid", "replace", "buffer_one"]
OVERLAP_POLICIES: tuple[OverlapPolicy, ...] = ("allow", "forbid", "replace", "buffer_one")


class Action(enum.StrEnum):
    """What the engine does with a fire that is due now."""

    START = "start"
    """Start a run for this fire."""
    SKIP = "skip"
    """Record the fire as skipped; start nothing."""
    CANCEL_THEN_START = "cancel_then_start"
    """Cancel the schedule's running run, wait for it to end, then start this fire."""
    BUFFER = "buffer"
    """Remember this fire; start it when the running run ends."""


# (policy, state of the schedule's previous fire) -> action for a fire due now.
# "idle": no run of this schedule is active; "running": one is; "running+buffered":
# one is and another fire already waits for it (only buffer_one ever buffers; the
# other policies answer as for "running", which also covers a buffered fire left
# from before the policy changed).
_OVERLAP: dict[tuple[str, str], Action] = {
    ("allow", "idle"): Action.START,
    ("allow", "running"): Action.START,
    ("allow", "running+buffered"): Action.START,
    ("forbid", "idle"): Action.START,
    ("forbid", "running"): Action.SKIP,
    ("forbid", "running+buffered"): Action.SKIP,
    ("replace", "idle"): Action.START,
    ("replace", "running"): Action.CANCEL_THEN_START,
    ("replace", "running+buffered"): Action.CANCEL_THEN_START,
    ("buffer_one", "idle"): Action.START,
    ("buffer_one", "running"): Action.BUFFER,
    ("buffer_one", "running+buffered"): Action.SKIP,
}


def check_overlap(policy: object) -> OverlapPolicy:
    """Validate an overlap policy name."""
    if policy not in OVERLAP_POLICIES:
        raise InvalidInput(
            f"overlap must be one of {', '.join(OVERLAP_POLICIES)}, got {policy!r}", field="overlap"
        )
    return policy


def overlap_action(policy: OverlapPolicy, running: bool, buffered: bool) -> Action:
    """The action for a fire that is due while the schedule is in the given state.

    ``forbid`` is the default policy (DESIGN.md R25). Under ``buffer_one`` the
    buffered fire starts when the running run ends (whatever its outcome), and keeps
    its own scheduled instant as its fire key; at most one fire waits, later ones are
    skipped. ``replace`` keeps at most one run too: the new fire starts only after the
    cancelled run has ended.
    """
    if buffered and not running:
        raise ValueError("a fire can only be buffered behind a running run")
    state = "running+buffered" if buffered else "running" if running else "idle"
    return _OVERLAP[check_overlap(policy), state]


# ------------------------------------------------------------------------- fire keys


class FireKey(NamedTuple):
    """Identity of one fire: a crash never fires the same key twice (R25)."""

    schedule: str
    at_ms: int
    """Scheduled instant, integer milliseconds since the UTC epoch."""


def fire_key(schedule: str, at_utc: float) -> FireKey:
    """The key of ``schedule``'s fire scheduled at ``at_utc`` (UTC epoch seconds).

    The instant is an integer count of milliseconds, not a float of seconds:

    - a key must compare equal however the instant was obtained; floats reached by
      different arithmetic (``t + 60 * k`` versus a fresh walk, a value parsed back
      from JSON) can differ in the last bit and would key one tick twice, i.e. fire
      it twice;
    - integers encode to fixed-width big-endian bytes whose order is time order (the
      LMDB key layout needs that), and have no NaN or ``-0.0``;
    - milliseconds lose nothing (fires fall on whole minutes) and are the unit of
      AG-UI timestamps and JavaScript dates.

    Manual triggers are keyed by their idempotency key instead, by the engine.
    """
    if not isinstance(schedule, str) or not schedule:
        raise InvalidInput("schedule name must be a non-empty string", field="schedule")
    at = _check_instant("at_utc", at_utc)
    return FireKey(schedule, round(at * 1000))
