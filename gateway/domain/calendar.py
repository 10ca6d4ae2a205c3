"""Working days on the official Chinese calendar: 法定节假日 off, 调休 Saturdays and Sundays worked.

The schedule comes from the State Council's yearly notice (国务院办公厅关于XXXX年部分节假日安排的通知) as
the ``chinesecalendar`` package ships it (2004–2026 in 1.11), plus an override table from ``[calendar]`` for
years the package does not cover yet (the notice for a year arrives around November of the year before):

* a date listed in ``[calendar] workdays`` is a working day, one listed in ``holidays`` is not — this wins
  over the package too, so a late change to a year it covers can be entered the same way;
* any other date is decided by the package for the years it covers, and by the weekend rule (Monday to
  Friday work) from January 1 of the first year the overrides list up to ``covered_until``;
* any other date raises :class:`CalendarError`: the gateway never guesses a schedule.

Working-day arithmetic counts *after* a date: :meth:`WorkCalendar.add_workdays` ``(d, 7)`` is the seventh
working day after ``d``, ``d`` itself not counted whether or not it is a working day — the 7-working-day
publication deadline of 双公示 records (domain.md §1.5) for a decision dated ``d``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import chinese_calendar

from gateway.errors import GatewayError, Problem
from gateway.settings import setting

ONE_DAY = dt.timedelta(days=1)
OVERRIDE_KEYS = ("covered_until", "holidays", "workdays")


@dataclass(frozen=True)
class CalendarSettings:
    """``[calendar]``: the official schedule for years the calendar package does not cover yet (domain.calendar)."""

    holidays: tuple[dt.date, ...] = setting((), help="days off (放假), weekend days inside a holiday included")
    workdays: tuple[dt.date, ...] = setting((), help="adjusted working Saturdays and Sundays (调休上班)")
    covered_until: dt.date | None = setting(None, help="the last date the lists cover; later dates are refused")



class CalendarError(GatewayError):
    """A date the working-day calendar has no official schedule for (``day``)."""

    def __init__(self, message: str, day: dt.date) -> None:
        super().__init__(message)
        self.day = day


@dataclass(frozen=True)
class Official:
    """An official schedule for whole years: days off and adjusted working days (weekend rule otherwise)."""

    holidays: frozenset[dt.date]
    workdays: frozenset[dt.date]
    first_year: int
    last_year: int
    name: str

    @classmethod
    def from_package(cls, until_year: int | None = None) -> Official:
        """The ``chinesecalendar`` package's schedule (``until_year``: pretend it ends there, for tests)."""
        holidays = frozenset(d for d in chinese_calendar.holidays if until_year is None or d.year <= until_year)
        workdays = frozenset(d for d in chinese_calendar.workdays if until_year is None or d.year <= until_year)
        years = [d.year for d in holidays]
        return cls(holidays, workdays, min(years), max(years), f"chinesecalendar {chinese_calendar.__version__}")

    def covers(self, year: int) -> bool:
        return self.first_year <= year <= self.last_year


@dataclass(frozen=True)
class _Year:
    workdays: frozenset[dt.date]
    until: dt.date  # the last date of the year this schedule covers


class WorkCalendar:
    """Is a date a working day; the n-th working day after a date; working days between two dates."""

    def __init__(self, holidays: Iterable[dt.date] = (), workdays: Iterable[dt.date] = (),
                 covered_until: dt.date | None = None, *, official: Official | None = None) -> None:
        self.holidays, self.workdays = frozenset(holidays), frozenset(workdays)
        self.covered_until = covered_until
        self.official = official or Official.from_package()
        listed = self.holidays | self.workdays
        self.override_from = dt.date(min(listed).year, 1, 1) if listed and covered_until else None
        self._years: dict[int, _Year] = {}

    @classmethod
    def from_settings(cls, settings: CalendarSettings, *, official: Official | None = None) -> WorkCalendar:
        return cls(settings.holidays, settings.workdays, settings.covered_until, official=official)

    def is_workday(self, day: dt.date) -> bool:
        year = self._years.get(day.year) or self._load(day)
        if day > year.until:
            raise self._uncovered(day)
        return day in year.workdays

    def add_workdays(self, day: dt.date, n: int) -> dt.date:
        """The n-th working day after ``day`` (``day`` itself never counts); ``day`` itself when n is 0."""
        if n < 0:
            raise ValueError(f"n must be 0 or more, got {n}")
        while n:
            day += ONE_DAY
            if self.is_workday(day):
                n -= 1
        return day

    def workdays_between(self, start: dt.date, end: dt.date) -> int:
        """Working days after ``start`` up to and including ``end`` (negative when ``end`` is earlier)."""
        if end < start:
            return -self.workdays_between(end, start)
        count, day = 0, start
        while day < end:
            day += ONE_DAY
            if self.is_workday(day):
                count += 1
        return count

    def last_covered(self) -> dt.date:
        """The last date with an official schedule (the package's last year, or ``[calendar] covered_until``)."""
        last = dt.date(self.official.last_year, 12, 31)
        return max(last, self.covered_until) if self.override_from and self.covered_until else last

    def coverage(self) -> str:
        """Which dates have a schedule, in words (for messages)."""
        off = self.official
        text = f"{off.name} covers {off.first_year}–{off.last_year}"
        if self.override_from and self.covered_until:
            text += f", [calendar] covers {self.override_from} to {self.covered_until}"
        return text

    def _load(self, day: dt.date) -> _Year:
        """Build (once) the working days of ``day``'s year, or refuse a year without a schedule."""
        first, last = dt.date(day.year, 1, 1), dt.date(day.year, 12, 31)
        if self.official.covers(day.year):
            base_off, base_work, until = self.official.holidays, self.official.workdays, last
        elif self.override_from and self.covered_until and self.override_from <= day <= self.covered_until:
            base_off, base_work, until = frozenset(), frozenset(), min(last, self.covered_until)
        else:
            raise self._uncovered(day)
        days = (first + dt.timedelta(days=i) for i in range((until - first).days + 1))
        year = _Year(frozenset(d for d in days if _works(d, self.holidays, self.workdays, base_off, base_work)),
                     until)
        self._years[day.year] = year
        return year

    def _uncovered(self, day: dt.date) -> CalendarError:
        y = day.year
        return CalendarError(
            f"no official working-day calendar for {day}: {self.coverage()}. Add the State Council's {y} schedule "
            f"(国务院办公厅关于{y}年部分节假日安排的通知) to [calendar]: holidays = [{y}-01-01, …] (days off), "
            f"workdays = […] (adjusted working Saturdays/Sundays), covered_until = {y}-12-31 — or upgrade "
            f"chinesecalendar once it covers {y}", day)


def _works(day: dt.date, holidays: frozenset[dt.date], workdays: frozenset[dt.date],
           base_off: frozenset[dt.date], base_work: frozenset[dt.date]) -> bool:
    if day in workdays or day in holidays:  # the override table first
        return day in workdays
    return day in base_work or (day.weekday() < 5 and day not in base_off)


# ---------------------------------------------------------------- the [calendar] table


def parse_overrides(raw: Mapping[str, Any], path: str = "calendar") -> tuple[dict[str, Any], list[Problem]]:
    """Check a ``[calendar]`` table; return its values (dates) and every problem with its TOML path."""
    problems = [Problem(f"{path}.{key}", f"unknown setting; known: {', '.join(OVERRIDE_KEYS)}")
                for key in sorted(set(raw) - set(OVERRIDE_KEYS))]
    holidays = _date_list(raw.get("holidays", []), f"{path}.holidays", problems)
    workdays = _date_list(raw.get("workdays", []), f"{path}.workdays", problems)
    until = None
    if "covered_until" in raw:
        until = _date(raw["covered_until"], f"{path}.covered_until", problems)
    if not problems:
        problems += _consistency(holidays, workdays, until, path)
    values = {"holidays": tuple(holidays), "workdays": tuple(workdays), "covered_until": until}
    return values, problems


def _date(value: Any, where: str, problems: list[Problem]) -> dt.date | None:
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            pass
    problems.append(Problem(where, f"expected a date like 2027-01-01, got {value!r}"))
    return None


def _date_list(value: Any, where: str, problems: list[Problem]) -> list[dt.date]:
    if not isinstance(value, list):
        problems.append(Problem(where, f"expected a list of dates like [2027-01-01, 2027-01-02], got {value!r}"))
        return []
    dates = [_date(v, f"{where}[{i}]", problems) for i, v in enumerate(value)]
    return [d for d in dates if d is not None]


def _consistency(holidays: list[dt.date], workdays: list[dt.date], until: dt.date | None,
                 path: str) -> list[Problem]:
    """The lists must fit ``covered_until``, not contradict each other, and list every year they claim."""
    if not (holidays or workdays):
        return [Problem(f"{path}.covered_until", "no holidays or workdays are listed to cover it")] if until else []
    if until is None:
        return [Problem(f"{path}.covered_until", "required with holidays/workdays: the last date they cover, "
                                                 "e.g. 2027-12-31")]
    problems = [Problem(f"{path}.{name}[{i}]", f"{d} is after covered_until {until}")
                for name, dates in (("holidays", holidays), ("workdays", workdays))
                for i, d in enumerate(dates) if d > until]
    problems += [Problem(f"{path}.workdays[{i}]", f"{d} is also listed in holidays")
                 for i, d in enumerate(workdays) if d in set(holidays)]
    problems += [Problem(f"{path}.workdays[{i}]", f"{d} is a {d:%A}, a working day anyway: list only the "
                                                  "adjusted working Saturdays and Sundays (调休上班)")
                 for i, d in enumerate(workdays) if d.weekday() < 5]
    listed_years = {d.year for d in holidays}
    problems += [Problem(f"{path}.holidays", f"no holidays listed for {y}, but covered_until {until} includes it")
                 for y in range(min(holidays + workdays).year, until.year + 1) if y not in listed_years]
    return problems
