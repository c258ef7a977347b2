"""Cron schedules evaluated in an IANA time zone, with one firing per slot.

Theory of operation
-------------------
An expression has five fields, minute hour day-of-month month day-of-week, each `*`, a value, a range
`a-b`, a step `*/n`, `a-b/n` or `a/n`, or a comma list of those; months and weekdays take names (JAN-DEC,
SUN-SAT, any case) and weekday 7 is Sunday. Macros: @yearly (@annually), @monthly, @weekly, @daily
(@midnight), @hourly. Day matching follows Vixie cron: when both day fields are restricted a day matches if
*either* does; a field counts as unrestricted when it starts with `*` (so `*/2` is "unrestricted" there, as
in Vixie cron and cronie). An expression that can never fire (`0 0 30 2 *`) is refused.

Slots are wall-clock times in the schedule's zone, turned into UTC instants:

- a local time that does not exist (spring forward: 02:30 on a New York March night) fires once, at the
  first valid instant after the gap (03:00 local); several slots inside one gap collapse into that instant;
- a local time that occurs twice (fall back: 01:30 on a New York November night) fires once, at its first
  occurrence; the repeated hour produces no second firing.

The local-time -> instant map is then non-decreasing, which `next_slot` and `prev_slot` rely on: they walk
candidate local times in order, month by month and day by day over matching values only (never minute by
minute), and return the first instant past the bound. A slot's identity is its UTC instant, and
`slot_run_id` turns it into the run id `dagId@YYYYmmddTHHMMZ`: resubmitting a run id is a no-op, so a slot
fires once however often a (new) coordinator re-evaluates the schedule.

`due_slots` applies the catch-up policy over the slots in (last_fired or created_at, now]: NONE fires only
the latest slot if it is at most `ON_TIME_S` (60 s) old, LATEST fires the latest missed slot, ALL fires the
missed slots oldest first, at most `limit` per call (the next call continues after the last one fired).
"""

from __future__ import annotations

import calendar
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from swarm.errors import InvalidSpec

__all__ = [
    "CATCHUP_POLICIES",
    "ON_TIME_S",
    "CronError",
    "CronExpr",
    "due_slots",
    "next_slot",
    "parse_timezone",
    "prev_slot",
    "slot_run_id",
]

ON_TIME_S = 60.0
CATCHUP_POLICIES = ("NONE", "LATEST", "ALL")
MAX_TEXT = 200
_HORIZON_YEARS = 28  # the Gregorian weekday/leap pattern repeats within 28 years (inside 1901-2099)
_MAX_SHIFT = timedelta(hours=3)  # larger than any UTC-offset change at a transition
_Spec = tuple[str, int, int, dict[str, int]]
_FIELDS: tuple[_Spec, ...] = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day-of-month", 1, 31, {}),
    ("month", 1, 12, {m.upper(): i for i, m in enumerate(calendar.month_abbr) if m}),
    ("day-of-week", 0, 7, {d: i for i, d in enumerate(("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"))}),
)
_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTH_MAX_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


class CronError(InvalidSpec):
    """A cron expression, time zone or catch-up policy is invalid; `field` names the part at fault."""

    def __init__(self, field: str, what: str, text: str = "") -> None:
        self.field = field
        suffix = f" in cron expression {text!r}" if text else ""
        super().__init__(f"{field}: {what}{suffix}")


@dataclass(frozen=True, slots=True)
class CronExpr:
    """A parsed five-field cron expression (use `CronExpr.parse`); weekdays are 0-6 with 0 = Sunday."""

    text: str
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: frozenset[int]
    months: tuple[int, ...]
    weekdays: frozenset[int]
    dom_star: bool
    dow_star: bool

    @classmethod
    def parse(cls, text: str) -> CronExpr:
        """Parse an expression or a macro; raises CronError naming the field at fault."""
        if not isinstance(text, str) or not text.strip():
            raise CronError("expression", "expected a cron expression like '0 2 * * *'")
        if len(text) > MAX_TEXT:
            raise CronError("expression", f"longer than {MAX_TEXT} characters")
        source = text.strip()
        body = _MACROS.get(source.lower(), source) if source.startswith("@") else source
        if body.startswith("@"):
            raise CronError("expression", f"unknown macro {source!r} (known: {', '.join(sorted(_MACROS))})")
        parts = body.split()
        if len(parts) != 5:
            raise CronError(
                "expression",
                f"expected 5 fields (minute hour day-of-month month day-of-week), got {len(parts)}",
                text,
            )
        values = [_field(part, spec, text) for part, spec in zip(parts, _FIELDS, strict=True)]
        weekdays = frozenset(d % 7 for d in values[4])
        expr = cls(
            text=source,
            minutes=tuple(sorted(values[0])),
            hours=tuple(sorted(values[1])),
            days=frozenset(values[2]),
            months=tuple(sorted(values[3])),
            weekdays=weekdays,
            dom_star=parts[2].startswith("*"),
            dow_star=parts[4].startswith("*"),
        )
        fits = any(min(expr.days) <= _MONTH_MAX_DAYS[m - 1] for m in expr.months)
        if (expr.dom_star or expr.dow_star) and not fits:
            raise CronError("day-of-month", "the day(s) never occur in the month(s) given", text)
        return expr

    def day_matches(self, day: date) -> bool:
        """Whether the schedule fires on this local date (month and the Vixie day rule)."""
        if day.month not in self.months:
            return False
        return self._day(day.year, day.month, day.day)

    def _day(self, year: int, month: int, day: int) -> bool:
        both_restricted = not (self.dom_star or self.dow_star)
        dom = day in self.days
        if dom and both_restricted:
            return True
        if not dom and not both_restricted:
            return False
        return (date(year, month, day).weekday() + 1) % 7 in self.weekdays


def _field(part: str, spec: _Spec, text: str) -> set[int]:
    name, lo, hi, _ = spec
    out: set[int] = set()
    for item in part.split(","):
        base, _, step_text = item.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) < 1:
                raise CronError(name, f"step {step_text!r} must be a whole number >= 1", text)
            step = int(step_text)
        if base == "*":
            first, last = lo, hi
        elif "-" in base:
            a, _, b = base.partition("-")
            first, last = _value(a, spec, text), _value(b, spec, text)
            if first > last:
                raise CronError(name, f"range {base!r} runs backwards", text)
        else:
            first = _value(base, spec, text)
            last = hi if step_text else first
        if name == "day-of-week" and base == "*":
            last = 6  # 7 is only an alias of Sunday
        out.update(range(first, last + 1, step))
    return out


def _value(token: str, spec: _Spec, text: str) -> int:
    name, lo, hi, names = spec
    if token.upper() in names:
        return names[token.upper()]
    if not token.isdigit():
        expected = f"a number {lo}-{hi}" + (f" or a name like {next(iter(names))}" if names else "")
        raise CronError(name, f"{token!r} is not {expected}", text)
    value = int(token)
    if not lo <= value <= hi:
        raise CronError(name, f"{value} is out of range {lo}-{hi}", text)
    return value


def parse_timezone(tz: str) -> ZoneInfo:
    """The IANA zone named `tz`; raises CronError("timezone", ...) for an unknown or malformed name."""
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise CronError("timezone", f"unknown IANA time zone {tz!r} (e.g. Asia/Shanghai, UTC)") from None


def _forward(expr: CronExpr, start: datetime) -> Iterator[datetime]:
    """Matching local times >= start (a naive local time at a whole minute), ascending."""
    for year in range(start.year, start.year + _HORIZON_YEARS + 1):
        for month in expr.months:
            if (year, month) < (start.year, start.month):
                continue
            this_month = (year, month) == (start.year, start.month)
            for day in range(start.day if this_month else 1, calendar.monthrange(year, month)[1] + 1):
                if not expr._day(year, month, day):
                    continue
                today = this_month and day == start.day
                for hour in expr.hours:
                    if today and hour < start.hour:
                        continue
                    for minute in expr.minutes:
                        if today and hour == start.hour and minute < start.minute:
                            continue
                        yield datetime(year, month, day, hour, minute)


def _backward(expr: CronExpr, start: datetime) -> Iterator[datetime]:
    """Matching local times <= start (naive local, whole minute), descending."""
    for year in range(start.year, start.year - _HORIZON_YEARS - 1, -1):
        for month in reversed(expr.months):
            if (year, month) > (start.year, start.month):
                continue
            this_month = (year, month) == (start.year, start.month)
            last_day = start.day if this_month else calendar.monthrange(year, month)[1]
            for day in range(last_day, 0, -1):
                if not expr._day(year, month, day):
                    continue
                today = this_month and day == start.day
                for hour in reversed(expr.hours):
                    if today and hour > start.hour:
                        continue
                    for minute in reversed(expr.minutes):
                        if today and hour == start.hour and minute > start.minute:
                            continue
                        yield datetime(year, month, day, hour, minute)


def _instant(local: datetime, zone: ZoneInfo) -> float:
    """UTC instant of a naive local time: first occurrence if repeated, end of the gap if skipped."""
    t = local.replace(tzinfo=zone).timestamp()
    if datetime.fromtimestamp(t, zone).replace(tzinfo=None) == local:
        return t
    # In a gap: the two folds bracket the transition; find its first second by bisection.
    lo, hi = sorted((t, local.replace(tzinfo=zone, fold=1).timestamp()))
    low, high = math.floor(lo), math.ceil(hi)
    while high - low > 1:
        mid = (low + high) // 2
        if datetime.fromtimestamp(mid, zone).replace(tzinfo=None) >= local:
            high = mid
        else:
            low = mid
    return float(high)


def _local_minute(instant: float, zone: ZoneInfo) -> datetime:
    return datetime.fromtimestamp(math.floor(instant), zone).replace(tzinfo=None, second=0, microsecond=0)


def next_slot(expr: CronExpr, tz: str, after: float) -> float:
    """The UTC epoch seconds of the first slot strictly after `after`."""
    zone = parse_timezone(tz)
    for local in _forward(expr, _local_minute(after, zone)):
        t = _instant(local, zone)
        if t > after:
            return t
    raise CronError("expression", f"no slot within {_HORIZON_YEARS} years", expr.text)


def prev_slot(expr: CronExpr, tz: str, at_or_before: float) -> float | None:
    """The UTC epoch seconds of the latest slot at or before `at_or_before`, or None within the horizon."""
    zone = parse_timezone(tz)
    # A later local time can map to an earlier instant across a fall-back, so start a little later.
    for local in _backward(expr, _local_minute(at_or_before, zone) + _MAX_SHIFT):
        t = _instant(local, zone)
        if t <= at_or_before:
            return t
    return None


def due_slots(
    expr: CronExpr,
    tz: str,
    last_fired: float | None,
    now: float,
    catchup: str,
    created_at: float,
    limit: int = 100,
) -> list[float]:
    """The slots to fire at `now`, ascending, under the catch-up policy (see the module docstring)."""
    policy = catchup.upper() if isinstance(catchup, str) else ""
    if policy not in CATCHUP_POLICIES:
        raise CronError("catchup", f"expected one of {', '.join(CATCHUP_POLICIES)}, got {catchup!r}")
    start = last_fired if last_fired is not None else created_at
    if now <= start:
        return []
    if policy == "ALL":
        out: list[float] = []
        t = start
        while len(out) < limit:
            t = next_slot(expr, tz, t)
            if t > now:
                break
            out.append(t)
        return out
    latest = prev_slot(expr, tz, now)
    if latest is None or latest <= start:
        return []
    if policy == "NONE" and now - latest > ON_TIME_S:
        return []
    return [latest]


def slot_run_id(dag_id: str, slot: float) -> str:
    """The run id of a slot, `dagId@YYYYmmddTHHMMZ` in UTC: the key that makes each slot fire once."""
    return f"{dag_id}@{datetime.fromtimestamp(slot, UTC).strftime('%Y%m%dT%H%MZ')}"
