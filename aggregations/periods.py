"""Calendar periods in a site's time zone: today, yesterday, ISO weeks, months, years.

Pure functions of (instant, zone). A period's Redis keys are named after its label and expire a
while after the period ends, long enough to be read as "yesterday", "last week", "last month".
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

DEFAULT_TIMEZONE = "Asia/Ho_Chi_Minh"


@dataclass(frozen=True, slots=True)
class Periods:
    """Every period label a hit at some instant falls in, and when its keys may be dropped."""

    day: date
    yesterday: date
    week: str
    last_week: str
    month: str
    last_month: str
    year: str
    week_start: date
    last_week_start: date
    month_start: date
    last_month_start: date
    year_start: date
    valid_from: float
    valid_until: float
    day_expires: int
    week_expires: int
    month_expires: int
    year_expires: int
    salt_expires: int


def local_midnight(day: date, tz: ZoneInfo) -> float:
    """Unix time of the first instant of `day` in `tz` (also where midnight falls in a DST gap)."""
    return datetime.combine(day, time(), tzinfo=tz).timestamp()


def local_date(ts: float, tz: ZoneInfo) -> date:
    return datetime.fromtimestamp(ts, tz).date()


def week_label(day: date) -> str:
    iso = day.isocalendar()
    return f"{iso.year}-W{iso.week:02d}"


def month_label(day: date) -> str:
    return f"{day.year:04d}-{day.month:02d}"


def add_months(first: date, months: int) -> date:
    index = first.year * 12 + first.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def periods_at(ts: float, tz: ZoneInfo) -> Periods:
    """The periods that the instant `ts` belongs to in zone `tz`."""
    day = local_date(ts, tz)
    week_start = day - timedelta(days=day.weekday())
    month_start = day.replace(day=1)
    year_start = date(day.year, 1, 1)
    last_month_start = add_months(month_start, -1)
    midnight = local_midnight(day, tz)
    return Periods(
        day=day,
        yesterday=day - timedelta(days=1),
        week=week_label(day),
        last_week=week_label(week_start - timedelta(days=7)),
        month=month_label(day),
        last_month=month_label(last_month_start),
        year=str(day.year),
        week_start=week_start,
        last_week_start=week_start - timedelta(days=7),
        month_start=month_start,
        last_month_start=last_month_start,
        year_start=year_start,
        valid_from=midnight,
        valid_until=local_midnight(day + timedelta(days=1), tz),
        # kept while it can be read as "yesterday", plus a day for a late rollup
        day_expires=int(local_midnight(day + timedelta(days=3), tz)),
        # kept while it is "last week" / "last month", plus a day
        week_expires=int(local_midnight(week_start + timedelta(days=15), tz)),
        month_expires=int(local_midnight(add_months(month_start, 2) + timedelta(days=1), tz)),
        year_expires=int(local_midnight(date(day.year + 1, 1, 3), tz)),
        salt_expires=int(midnight) + 48 * 3600,
    )


class Calendar:
    """`periods_at` with a per-zone cache: the answer only changes at local midnight."""

    def __init__(self) -> None:
        self._cache: dict[str, Periods] = {}

    def at(self, ts: float, tz: ZoneInfo) -> Periods:
        cached = self._cache.get(tz.key)
        if cached is not None and cached.valid_from <= ts < cached.valid_until:
            return cached
        fresh = periods_at(ts, tz)
        self._cache[tz.key] = fresh
        return fresh
