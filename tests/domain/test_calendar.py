"""Tests for gateway.domain.calendar: working days on the official Chinese calendar and the [calendar] override table.

Expected due dates are counted by hand from the State Council's 2026 notice (国办发明电, 2025-11-04):
春节 02-15 (Sun) … 02-23 (Mon) off, Saturdays 02-14 and 02-28 worked; 中秋 09-25 (Fri) … 09-27 off; 国庆
10-01 … 10-07 off, Sunday 09-20 and Saturday 10-10 worked. A due date is the 7th working day after the
decision date, the decision date itself not counted. Tests about years the package lacks pretend it ends
in 2026 (``Official.from_package(until_year=2026)``), so a newer chinesecalendar does not change them.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from gateway.config import load_config
from gateway.domain.calendar import CalendarError, CalendarSettings, Official, WorkCalendar
from gateway.errors import ConfigError
from tests.support.helpers import write_config

D = dt.date.fromisoformat
UNTIL_2026 = Official.from_package(until_year=2026)

# An invented 2027 schedule in the shape of a notice (the real one is not out when this is written).
HOLIDAYS_2027 = (D("2027-01-01"), *(D("2027-02-06") + dt.timedelta(days=i) for i in range(9)))  # 02-06 … 02-14
WORKDAYS_2027 = (D("2027-02-20"),)  # a Saturday


def calendar_2027() -> WorkCalendar:
    """The invented 2027 table on a package that ends in 2026."""
    return WorkCalendar(HOLIDAYS_2027, WORKDAYS_2027, D("2027-12-31"), official=UNTIL_2026)


@pytest.fixture(scope="module")
def cal() -> WorkCalendar:
    """The package's calendar, no overrides."""
    return WorkCalendar()


class TestIsWorkday:
    @pytest.mark.parametrize(("day", "works"), [
        ("2026-02-13", True),   # Friday before the Spring Festival
        ("2026-02-14", True),   # adjusted working Saturday
        ("2026-02-16", False),  # Monday inside the Spring Festival
        ("2026-02-21", False),  # ordinary Saturday inside the holiday
        ("2026-02-23", False),  # last holiday, a Monday
        ("2026-02-28", True),   # adjusted working Saturday
        ("2026-03-01", False),  # ordinary Sunday
        ("2026-09-20", True),   # adjusted working Sunday
        ("2026-10-05", False),  # National Day, a Monday
        ("2026-10-10", True),   # adjusted working Saturday
        ("2026-10-11", False),  # ordinary Sunday
    ])
    def test_official_2026_days(self, cal: WorkCalendar, day: str, works: bool) -> None:
        """Holidays, adjusted working weekends and ordinary days of 2026 are classified as announced."""
        assert cal.is_workday(D(day)) is works


class TestAddWorkdays:
    @pytest.mark.parametrize(("decision", "due"), [
        # Thu 02-12: 13 Fri(1) 14 Sat-adj(2) | 15…23 off | 24(3) 25(4) 26(5) 27(6) 28 Sat-adj(7)
        ("2026-02-12", "2026-02-28"),
        # Fri 02-13: 14 Sat-adj(1) | 15…23 off | 24(2) 25(3) 26(4) 27(5) 28 Sat-adj(6) | 03-01 Sun | 03-02(7)
        ("2026-02-13", "2026-03-02"),
        # Tue 02-10: 11(1) 12(2) 13(3) 14 Sat-adj(4) | 15…23 off | 24(5) 25(6) 26(7)
        ("2026-02-10", "2026-02-26"),
    ])
    def test_spring_festival_2026(self, cal: WorkCalendar, decision: str, due: str) -> None:
        """Due dates across the 2026 Spring Festival skip the holiday and count the adjusted Saturdays."""
        assert cal.add_workdays(D(decision), 7) == D(due)

    @pytest.mark.parametrize(("decision", "due"), [
        # Fri 09-18: 19 Sat | 20 Sun-adj(1) 21(2) 22(3) 23(4) 24(5) | 25…27 中秋 | 28(6) 29(7)
        ("2026-09-18", "2026-09-29"),
        # Tue 09-29: 30(1) | 10-01…07 off | 08(2) 09(3) 10 Sat-adj(4) | 11 Sun | 12(5) 13(6) 14(7)
        ("2026-09-29", "2026-10-14"),
        # Wed 09-30: | 10-01…07 off | 08(1) 09(2) 10 Sat-adj(3) | 11 Sun | 12(4) 13(5) 14(6) 15(7)
        ("2026-09-30", "2026-10-15"),
    ])
    def test_national_day_2026(self, cal: WorkCalendar, decision: str, due: str) -> None:
        """Due dates across the 2026 Mid-Autumn and National Day holidays count 09-20 and 10-10 as working days."""
        assert cal.add_workdays(D(decision), 7) == D(due)

    def test_decision_on_an_adjusted_saturday(self, cal: WorkCalendar) -> None:
        """A decision on a worked Saturday counts from the next working day, like any other decision."""
        # Sat 02-14 (worked, not counted): 15…23 off | 24(1) 25(2) 26(3) 27(4) 28 Sat-adj(5) | 03-01 | 02(6) 03(7)
        assert cal.add_workdays(D("2026-02-14"), 7) == D("2026-03-03")

    def test_decision_on_a_holiday(self, cal: WorkCalendar) -> None:
        """A decision taken during a holiday counts from the first working day after it."""
        # Sat 10-03 (holiday): 04…07 off | 08(1) 09(2) 10 Sat-adj(3) | 11 Sun | 12(4) 13(5) 14(6) 15(7)
        assert cal.add_workdays(D("2026-10-03"), 7) == D("2026-10-15")

    def test_zero_days_is_the_day_itself_and_negative_is_refused(self, cal: WorkCalendar) -> None:
        """n = 0 gives the date itself; a negative n is a programming error."""
        assert cal.add_workdays(D("2026-02-15"), 0) == D("2026-02-15")
        with pytest.raises(ValueError, match="0 or more"):
            cal.add_workdays(D("2026-02-15"), -1)


class TestWorkdaysBetween:
    def test_counts_after_start_up_to_end(self, cal: WorkCalendar) -> None:
        """Working days in (start, end]: 02-12 → 02-28 is 7, the inverse of add_workdays."""
        assert cal.workdays_between(D("2026-02-12"), D("2026-02-28")) == 7
        assert cal.workdays_between(D("2026-02-15"), D("2026-02-23")) == 0  # all holiday

    def test_reversed_range_is_negative(self, cal: WorkCalendar) -> None:
        """end before start gives minus the forward count; equal dates give 0."""
        assert cal.workdays_between(D("2026-10-14"), D("2026-09-29")) == -7
        assert cal.workdays_between(D("2026-10-14"), D("2026-10-14")) == 0


class TestOverrides:
    def test_2027_from_the_override_table(self) -> None:
        """Past the package, the override table decides: its holidays, worked Saturdays and weekends."""
        cal = calendar_2027()
        # Thu 02-04: 05 Fri(1) | 06…14 off | 15(2) 16(3) 17(4) 18(5) 19(6) 20 Sat-adj(7)
        assert cal.add_workdays(D("2027-02-04"), 7) == D("2027-02-20")
        assert not cal.is_workday(D("2027-01-01")) and not cal.is_workday(D("2027-01-02"))  # holiday, Saturday
        assert cal.is_workday(D("2027-01-04"))

    def test_due_date_across_the_new_year(self) -> None:
        """A late-December decision is due in the next year when the overrides cover it."""
        cal = calendar_2027()
        # Wed 2026-12-30: 31 Thu(1) | 2027-01-01 off, 02 Sat, 03 Sun | 04(2) 05(3) 06(4) 07(5) 08(6) | 09, 10 | 11(7)
        assert cal.add_workdays(D("2026-12-30"), 7) == D("2027-01-11")

    def test_override_wins_over_the_package(self) -> None:
        """A listed day changes a year the package covers too (a late change to a published schedule)."""
        cal = WorkCalendar([D("2026-02-27")], [], D("2026-12-31"))  # an extra day off
        # Thu 02-12: 13(1) 14 Sat-adj(2) | 15…23 off | 24(3) 25(4) 26(5) | 27 off | 28 Sat-adj(6) | 03-01 | 02(7)
        assert cal.add_workdays(D("2026-02-12"), 7) == D("2026-03-02")

    def test_refuses_dates_after_covered_until(self) -> None:
        """A year covered only up to covered_until has no schedule after it."""
        cal = WorkCalendar([D("2027-01-01")], [], D("2027-06-30"), official=UNTIL_2026)
        assert cal.is_workday(D("2027-06-30"))
        with pytest.raises(CalendarError, match="2027-07-01"):
            cal.is_workday(D("2027-07-01"))

    def test_from_settings(self) -> None:
        """A CalendarSettings from the config builds the same calendar."""
        settings = CalendarSettings(HOLIDAYS_2027, WORKDAYS_2027, D("2027-12-31"))
        cal = WorkCalendar.from_settings(settings, official=UNTIL_2026)
        assert cal.add_workdays(D("2027-02-04"), 7) == D("2027-02-20")


class TestUncovered:
    def test_year_without_overrides_raises_with_instructions(self) -> None:
        """A 2028 date with overrides only up to 2027 is refused, naming the date, the coverage and the fix."""
        cal = calendar_2027()
        with pytest.raises(CalendarError) as err:
            cal.add_workdays(D("2028-03-01"), 7)
        message = str(err.value)
        assert "2028-03-02" in message  # the first day it needed
        assert "covers 2004–2026" in message and "[calendar] covers 2027-01-01 to 2027-12-31" in message
        assert "holidays = [2028-01-01" in message and "covered_until = 2028-12-31" in message
        assert err.value.day == D("2028-03-02")

    def test_real_package_names_its_version_and_range(self, cal: WorkCalendar) -> None:
        """Without overrides, the message says which chinesecalendar is installed and what it covers."""
        with pytest.raises(CalendarError, match=r"chinesecalendar \d+\.\d+.* covers 2004–\d{4}"):
            cal.is_workday(D("2099-01-05"))

    def test_years_before_the_package_are_refused(self) -> None:
        """Before 2004 there is no schedule, overrides or not: nothing is guessed."""
        cal = calendar_2027()
        with pytest.raises(CalendarError, match="2003-12-31"):
            cal.add_workdays(D("2003-12-30"), 7)

    def test_is_a_gateway_error(self) -> None:
        """The CLI reports it like every other expected error."""
        from gateway.errors import GatewayError

        assert issubclass(CalendarError, GatewayError)


def calendar_config(tmp_path: Path, table: str) -> Path:
    path = write_config(tmp_path, url="http://127.0.0.1:9/api", db=tmp_path / "department.db", token="t" * 24)
    with path.open("a", encoding="utf-8") as fh:
        fh.write("\n[calendar]\n" + table)
    return path


def problems(tmp_path: Path, table: str) -> dict[str, str]:
    with pytest.raises(ConfigError) as err:
        load_config(calendar_config(tmp_path, table))
    return {p.path: p.message for p in err.value.problems}


class TestCalendarConfig:
    def test_override_table_is_loaded(self, tmp_path: Path) -> None:
        """[calendar] with TOML dates (or ISO strings) becomes CalendarSettings on the Config."""
        config = load_config(calendar_config(tmp_path, 'holidays = [2027-01-01, "2027-02-06"]\n'
                                                       "workdays = [2027-02-20]\ncovered_until = 2027-12-31\n"))
        assert config.calendar == CalendarSettings((D("2027-01-01"), D("2027-02-06")), (D("2027-02-20"),),
                                                   D("2027-12-31"))

    def test_config_without_calendar_still_loads(self, tmp_path: Path) -> None:
        """Existing configs have no [calendar]: the package alone is used."""
        path = write_config(tmp_path, url="http://127.0.0.1:9/api", db=tmp_path / "department.db", token="t" * 24)
        assert load_config(path).calendar == CalendarSettings()

    def test_bad_date_has_its_path(self, tmp_path: Path) -> None:
        """A value that is not a date is reported at calendar.holidays[0]."""
        found = problems(tmp_path, 'holidays = ["2027-13-01"]\ncovered_until = 2027-12-31\n')
        assert found == {"calendar.holidays[0]": "expected a date like 2027-01-01, got '2027-13-01'"}

    def test_inconsistent_table(self, tmp_path: Path) -> None:
        """Days after covered_until, a weekday listed as worked, a day both off and worked are all reported."""
        found = problems(tmp_path, "holidays = [2027-01-01, 2027-02-20]\n"
                                   "workdays = [2027-02-20, 2027-02-22, 2028-01-08]\ncovered_until = 2027-12-31\n")
        assert found["calendar.workdays[0]"] == "2027-02-20 is also listed in holidays"
        assert "2027-02-22 is a Monday, a working day anyway" in found["calendar.workdays[1]"]
        assert found["calendar.workdays[2]"] == "2028-01-08 is after covered_until 2027-12-31"

    def test_covered_until_is_required_and_every_year_listed(self, tmp_path: Path) -> None:
        """Lists without covered_until, or a covered year without holidays, would mean guessing."""
        assert "required" in problems(tmp_path, "holidays = [2027-01-01]\n")["calendar.covered_until"]
        found = problems(tmp_path, "holidays = [2027-01-01]\ncovered_until = 2028-12-31\n")
        assert found == {"calendar.holidays": "no holidays listed for 2028, but covered_until 2028-12-31 includes it"}

    def test_unknown_key_and_wrong_shape(self, tmp_path: Path) -> None:
        """A misspelt key and a non-list are reported with their paths."""
        found = problems(tmp_path, "holiday = [2027-01-01]\nworkdays = 2027-02-20\n")
        assert "unknown setting" in found["calendar.holiday"]
        assert found["calendar.workdays"].startswith("expected a list of dates")
