"""Period boundaries in the site's zone: pure functions, no I/O."""

from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

import pytest

from aggregations.periods import Calendar, local_midnight, periods_at
from tests.conftest import VN, at

BERLIN = ZoneInfo("Europe/Berlin")


def test_last_second_of_day_and_first_of_next():
    before = periods_at(at("2026-11-27 23:59:59"), VN)
    after = periods_at(at("2026-11-28 00:00:00"), VN)
    assert before.day == date(2026, 11, 27)
    assert after.day == date(2026, 11, 28)
    assert after.yesterday == date(2026, 11, 27)


def test_day_is_local_not_utc():
    # 17:00 UTC is already midnight in Hanoi (UTC+7)
    ts = datetime(2026, 11, 27, 17, 0, 0, tzinfo=ZoneInfo("UTC")).timestamp()
    assert periods_at(ts, VN).day == date(2026, 11, 28)
    assert periods_at(ts - 1, VN).day == date(2026, 11, 27)


def test_sunday_to_monday_changes_iso_week():
    sunday = periods_at(at("2026-11-29 23:59:59"), VN)
    monday = periods_at(at("2026-11-30 00:00:00"), VN)
    assert sunday.week == "2026-W48"
    assert sunday.week_start == date(2026, 11, 23)
    assert monday.week == "2026-W49"
    assert monday.last_week == "2026-W48"
    assert monday.week_start == date(2026, 11, 30)
    assert monday.last_week_start == date(2026, 11, 23)


def test_month_and_year_ends():
    dec31 = periods_at(at("2026-12-31 23:59:59"), VN)
    jan1 = periods_at(at("2027-01-01 00:00:00"), VN)
    assert (dec31.month, dec31.year) == ("2026-12", "2026")
    assert (jan1.month, jan1.year, jan1.last_month) == ("2027-01", "2027", "2026-12")
    assert jan1.last_month_start == date(2026, 12, 1)
    assert jan1.yesterday == date(2026, 12, 31)
    # 1 Jan 2027 is a Friday of ISO week 2026-W53
    assert jan1.week == "2026-W53"
    assert jan1.year_start == date(2027, 1, 1)


def test_end_of_february():
    p = periods_at(at("2028-02-29 12:00:00"), VN)
    assert p.month == "2028-02"
    assert periods_at(at("2028-03-01 00:00:00"), VN).last_month == "2028-02"


@pytest.mark.parametrize(
    ("day", "hours"),
    [("2026-03-29", 23), ("2026-10-25", 25), ("2026-03-28", 24)],
)
def test_dst_days_in_berlin_are_23_or_25_hours(day, hours):
    p = periods_at(at(f"{day} 12:00:00", BERLIN), BERLIN)
    assert p.valid_until - p.valid_from == hours * 3600


def test_dst_spring_forward_boundaries():
    # 02:00 -> 03:00 on 29 March 2026: the day still starts at 00:00 and ends at 24:00 local
    p = periods_at(at("2026-03-29 02:30:00", BERLIN) + 3600, BERLIN)
    assert p.day == date(2026, 3, 29)
    assert p.valid_from == at("2026-03-29 00:00:00", BERLIN)
    last = periods_at(at("2026-03-29 23:59:59", BERLIN), BERLIN)
    first = periods_at(at("2026-03-30 00:00:00", BERLIN), BERLIN)
    assert (last.day, first.day) == (date(2026, 3, 29), date(2026, 3, 30))
    assert (first.week, last.week) == ("2026-W14", "2026-W13")


def test_dst_fall_back_hour_happens_twice_in_the_same_day():
    first_0230 = datetime(2026, 10, 25, 2, 30, fold=0, tzinfo=BERLIN).timestamp()
    second_0230 = datetime(2026, 10, 25, 2, 30, fold=1, tzinfo=BERLIN).timestamp()
    assert second_0230 - first_0230 == 3600
    assert periods_at(first_0230, BERLIN).day == periods_at(second_0230, BERLIN).day
    assert periods_at(at("2026-10-25 23:59:59", BERLIN), BERLIN).day == date(2026, 10, 25)


def test_expiry_keeps_keys_readable_as_previous_period():
    p = periods_at(at("2026-11-27 10:00:00"), VN)
    assert p.day_expires == local_midnight(date(2026, 11, 30), VN)
    assert p.salt_expires == at("2026-11-29 00:00:00")
    # the week of 23-29 Nov is "last week" until 6 Dec; kept until the 8th
    assert p.week_expires == local_midnight(date(2026, 12, 8), VN)
    assert p.month_expires == local_midnight(date(2027, 1, 2), VN)


def test_calendar_cache_answers_like_the_function_across_midnight():
    cal = Calendar()
    for text in ("2026-11-27 23:59:59", "2026-11-28 00:00:00", "2026-11-27 12:00:00"):
        assert cal.at(at(text), VN) == periods_at(at(text), VN)
    assert cal.at(at("2026-03-29 23:59:59", BERLIN), BERLIN).day == date(2026, 3, 29)
