"""Cron schedules: parsing, next slots in time zones (DST both ways), catch-up policies, run ids."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from swarm.errors import InvalidSpec
from swarm.workflow.cron import (
    CronError,
    CronExpr,
    due_slots,
    next_slot,
    parse_timezone,
    prev_slot,
    slot_run_id,
)


def ts(text: str) -> float:
    """An RFC 3339 instant as epoch seconds."""
    return datetime.fromisoformat(text).timestamp()


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


KNOWN = [
    # expression, zone, after (UTC), expected next slot (UTC)
    ("0 2 * * *", "Asia/Shanghai", "2023-11-22T08:15:32+00:00", "2023-11-22T18:00:00Z"),
    ("0 2 * * *", "Asia/Shanghai", "2023-11-22T18:00:00+00:00", "2023-11-23T18:00:00Z"),
    ("*/15 * * * *", "UTC", "2024-01-01T00:07:00+00:00", "2024-01-01T00:15:00Z"),
    ("*/15 * * * *", "UTC", "2024-01-01T00:15:00+00:00", "2024-01-01T00:30:00Z"),
    ("0 0 29 2 *", "UTC", "2025-03-01T00:00:00+00:00", "2028-02-29T00:00:00Z"),
    ("0 0 29 2 *", "UTC", "2023-06-01T00:00:00+00:00", "2024-02-29T00:00:00Z"),
    # Vixie rule: both day fields restricted -> either matches (Sep 6 2024 is a Friday, before the 13th).
    ("0 0 13 * FRI", "UTC", "2024-09-01T00:00:00+00:00", "2024-09-06T00:00:00Z"),
    ("0 0 13 * 5", "UTC", "2024-09-07T00:00:00+00:00", "2024-09-13T00:00:00Z"),
    # ... but a field starting with '*' counts as unrestricted: odd days that are Mondays.
    ("0 0 */2 * MON", "UTC", "2024-09-01T00:00:00+00:00", "2024-09-09T00:00:00Z"),
    ("0 9 * * 1-5", "Europe/Berlin", "2024-09-06T08:00:00+00:00", "2024-09-09T07:00:00Z"),
    ("0 0 * * 7", "UTC", "2024-09-01T00:00:00+00:00", "2024-09-08T00:00:00Z"),
    ("0 12 1 JAN,jul *", "UTC", "2024-02-01T00:00:00+00:00", "2024-07-01T12:00:00Z"),
    ("5 4 * * sun", "UTC", "2024-09-02T00:00:00+00:00", "2024-09-08T04:05:00Z"),
    ("0 22 * * 1-5/2", "UTC", "2024-09-03T23:00:00+00:00", "2024-09-04T22:00:00Z"),
    ("@hourly", "UTC", "2024-01-01T10:00:00+00:00", "2024-01-01T11:00:00Z"),
    ("@daily", "Asia/Kolkata", "2024-01-01T00:00:00+00:00", "2024-01-01T18:30:00Z"),
    ("@weekly", "UTC", "2024-09-04T00:00:00+00:00", "2024-09-08T00:00:00Z"),
    ("@monthly", "UTC", "2024-12-15T00:00:00+00:00", "2025-01-01T00:00:00Z"),
    ("@yearly", "UTC", "2024-01-01T00:00:00+00:00", "2025-01-01T00:00:00Z"),
    # New York, spring forward (2024-03-10 02:00 EST -> 03:00 EDT): 02:30 does not exist, fires at 03:00.
    ("30 2 * * *", "America/New_York", "2024-03-09T12:00:00+00:00", "2024-03-10T07:00:00Z"),
    ("30 2 * * *", "America/New_York", "2024-03-10T07:00:00+00:00", "2024-03-11T06:30:00Z"),
    # New York, fall back (2024-11-03 02:00 EDT -> 01:00 EST): 01:30 happens twice, fires at the first.
    ("30 1 * * *", "America/New_York", "2024-11-03T00:00:00+00:00", "2024-11-03T05:30:00Z"),
    ("30 1 * * *", "America/New_York", "2024-11-03T05:30:00+00:00", "2024-11-04T06:30:00Z"),
    ("30 1 * * *", "America/New_York", "2024-11-03T06:10:00+00:00", "2024-11-04T06:30:00Z"),
]


@pytest.mark.parametrize(("text", "zone", "after", "expected"), KNOWN)
def test_known_next_slots(text: str, zone: str, after: str, expected: str) -> None:
    assert iso(next_slot(CronExpr.parse(text), zone, ts(after))) == expected


def test_slots_inside_the_spring_gap_collapse_into_one_firing() -> None:
    expr, t, fired = CronExpr.parse("*/15 * * * *"), ts("2024-03-10T06:40:00+00:00"), []
    for _ in range(4):
        t = next_slot(expr, "America/New_York", t)
        fired.append(iso(t))
    # 01:45 EST, then 02:00-02:45 (absent) and 03:00 EDT all at 07:00Z, once; then 03:15 EDT.
    assert fired == [
        "2024-03-10T06:45:00Z",
        "2024-03-10T07:00:00Z",
        "2024-03-10T07:15:00Z",
        "2024-03-10T07:30:00Z",
    ]


def test_repeated_fall_back_hour_fires_once_every_minute_slot() -> None:
    expr, t, fired = CronExpr.parse("* * * * *"), ts("2024-11-03T04:59:00+00:00"), []
    while t < ts("2024-11-03T07:05:00+00:00"):
        t = next_slot(expr, "America/New_York", t)
        fired.append(t)
    assert len(fired) == len(set(fired))
    assert fired == sorted(fired)
    # 00:59 EDT .. 01:59 EDT is 60 slots, the repeated 01:xx EST hour adds none, then 02:00-02:05 EST.
    assert iso(fired[0]) == "2024-11-03T05:00:00Z"
    assert "2024-11-03T06:30:00Z" not in {iso(x) for x in fired}
    assert iso(fired[60]) == "2024-11-03T07:00:00Z"


def test_prev_slot_is_the_latest_at_or_before() -> None:
    expr = CronExpr.parse("0 2 * * *")
    assert (
        iso(prev_slot(expr, "Asia/Shanghai", ts("2023-11-22T18:00:00+00:00")) or 0) == "2023-11-22T18:00:00Z"
    )
    assert (
        iso(prev_slot(expr, "Asia/Shanghai", ts("2023-11-22T17:59:59+00:00")) or 0) == "2023-11-21T18:00:00Z"
    )
    # During the repeated New York hour, the 01:30 slot (first occurrence) is already behind us.
    repeated = CronExpr.parse("30 1 * * *")
    assert iso(prev_slot(repeated, "America/New_York", ts("2024-11-03T06:10:00+00:00")) or 0) == (
        "2024-11-03T05:30:00Z"
    )


def test_next_slot_is_fast_for_sparse_expressions() -> None:
    expr = CronExpr.parse("0 0 29 2 *")
    start = time.perf_counter()
    for _ in range(100):
        next_slot(expr, "UTC", ts("2025-03-01T00:00:00+00:00"))
    assert time.perf_counter() - start < 0.5


class TestCatchup:
    EXPR = CronExpr.parse("0 * * * *")
    CREATED = ts("2024-01-01T00:00:00+00:00")

    def due(self, now: str, catchup: str, last: str | None = "2024-01-01T05:00:00+00:00") -> list[str]:
        last_fired = ts(last) if last else None
        return [iso(t) for t in due_slots(self.EXPR, "UTC", last_fired, ts(now), catchup, self.CREATED)]

    def test_on_time_slot_fires_under_every_policy(self) -> None:
        for policy in ("NONE", "LATEST", "ALL", "none"):
            assert self.due("2024-01-01T06:00:20+00:00", policy) == ["2024-01-01T06:00:00Z"]

    def test_three_hours_down(self) -> None:
        now = "2024-01-01T08:30:00+00:00"
        assert self.due(now, "NONE") == []
        assert self.due(now, "LATEST") == ["2024-01-01T08:00:00Z"]
        assert self.due(now, "ALL") == [
            "2024-01-01T06:00:00Z",
            "2024-01-01T07:00:00Z",
            "2024-01-01T08:00:00Z",
        ]

    def test_nothing_due_twice(self) -> None:
        assert self.due("2024-01-01T06:00:20+00:00", "ALL", last="2024-01-01T06:00:00+00:00") == []
        assert self.due("2024-01-01T05:00:00+00:00", "LATEST") == []

    def test_never_fired_counts_from_creation(self) -> None:
        assert self.due("2024-01-01T02:10:00+00:00", "ALL", last=None) == [
            "2024-01-01T01:00:00Z",
            "2024-01-01T02:00:00Z",
        ]

    def test_all_is_capped_and_resumes_oldest_first(self) -> None:
        minutely = CronExpr.parse("* * * * *")
        first = due_slots(minutely, "UTC", None, self.CREATED + 86400, "ALL", self.CREATED, limit=100)
        assert len(first) == 100
        assert iso(first[0]) == "2024-01-01T00:01:00Z"
        resumed = due_slots(minutely, "UTC", first[-1], self.CREATED + 86400, "ALL", self.CREATED, limit=100)
        assert resumed[0] == first[-1] + 60

    def test_bad_policy(self) -> None:
        with pytest.raises(CronError, match="catchup"):
            self.due("2024-01-01T06:00:20+00:00", "SOMETIMES")


def test_run_id_names_the_utc_slot() -> None:
    slot = next_slot(CronExpr.parse("0 2 * * *"), "Asia/Shanghai", ts("2023-11-22T08:15:32+00:00"))
    assert slot_run_id("sales-analytics-pipeline-v3", slot) == "sales-analytics-pipeline-v3@20231122T1800Z"


def test_macro_and_names_parse_to_values() -> None:
    weekly = CronExpr.parse("@weekly")
    assert (weekly.minutes, weekly.hours, weekly.weekdays) == ((0,), (0,), frozenset({0}))
    expr = CronExpr.parse("0 0 * * MON-FRI")
    assert expr.weekdays == frozenset({1, 2, 3, 4, 5})
    assert CronExpr.parse("0 0 * * 5-7").weekdays == frozenset({5, 6, 0})


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("61 * * * *", "minute"),
        ("* 24 * * *", "hour"),
        ("0 0 0 * *", "day-of-month"),
        ("0 0 * 13 *", "month"),
        ("0 0 * * 8", "day-of-week"),
        ("0 0 * FOO *", "month"),
        ("5-1 * * * *", "minute"),
        ("*/0 * * * *", "minute"),
        ("1,,2 * * * *", "minute"),
        ("0 0 30 2 *", "day-of-month"),
        ("* * * *", "expression"),
        ("* * * * * *", "expression"),
        ("@reboot", "expression"),
        ("", "expression"),
    ],
)
def test_bad_expressions_name_the_field(text: str, field: str) -> None:
    with pytest.raises(CronError) as info:
        CronExpr.parse(text)
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")
    assert isinstance(info.value, InvalidSpec)


def test_unknown_time_zone() -> None:
    with pytest.raises(CronError, match="Mars/Olympus"):
        parse_timezone("Mars/Olympus")
    with pytest.raises(CronError, match="timezone"):
        next_slot(CronExpr.parse("@daily"), "../etc/passwd", 0.0)
