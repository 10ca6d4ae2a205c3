"""Timeliness of 双公示 publication: a record is due 7 working days after its decision date (domain.md §1.5).

Every ledger record is put in one class, per department (the deciding body, ``authority``) and dataset:

* ``on_time``: its first acknowledged delivery (the receipt's day in China time) is on or before the due date;
* ``late``: acknowledged after the due date, or not acknowledged and today is past the due date;
* ``at_risk``: not acknowledged, and due today or within ``at_risk_days`` working days;
* ``pending``: not acknowledged, due later;
* ``uncovered``: the working-day calendar has no schedule for the dates needed (or there is no decision
  date): counted and explained, never guessed.

The store streams the ledger once and counts it per department and decision date; due dates are computed once
per distinct decision date (a few thousand), whatever the size of the ledger. Late keys are then read for the
oldest late decision dates only.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from gateway.clock import CHINA
from gateway.domain.calendar import CalendarError, WorkCalendar
from gateway.domain.datasets import DATASETS

WORKDAYS = 7  # 自作出决定之日起7个工作日内

CLASSES = ("on_time", "late", "at_risk", "pending", "uncovered")
ON_TIME, LATE, AT_RISK, PENDING, UNCOVERED = CLASSES
LATE_KEYS = 20  # late record keys listed per department and dataset
T = TypeVar("T")


@dataclass
class Group:
    """The records of one department and dataset, counted per class."""

    dataset: str
    department: str
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CLASSES, 0))
    late_keys: list[str] = field(default_factory=list)  # the oldest decisions first, at most LATE_KEYS

    def as_json(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "department": self.department, **self.counts, "late_keys": self.late_keys}


@dataclass(frozen=True)
class TimelinessReport:
    today: dt.date
    at_risk_days: int
    target: str | None  # None: the first delivery to any target counts
    groups: Sequence[Group]
    uncovered: Sequence[str]  # why records are uncovered: one message per missing year

    def totals(self) -> dict[str, dict[str, int]]:
        """dataset → counts per class."""
        out: dict[str, dict[str, int]] = {}
        for g in self.groups:
            total = out.setdefault(g.dataset, dict.fromkeys(CLASSES, 0))
            for name, n in g.counts.items():
                total[name] += n
        return out

    def as_json(self) -> dict[str, Any]:
        return {"today": self.today.isoformat(), "working_days": WORKDAYS, "at_risk_days": self.at_risk_days,
                "target": self.target, "datasets": self.totals(), "departments": [g.as_json() for g in self.groups],
                "uncovered": list(self.uncovered)}

    def status_lines(self) -> list[str]:
        """One line per dataset for ``credit-gateway status``."""
        lines = []
        for dataset, t in sorted(self.totals().items()):
            extra = f", no calendar {t[UNCOVERED]}" if t[UNCOVERED] else ""
            lines.append(f"timeliness {dataset}: on time {t[ON_TIME]}, late {t[LATE]}, at risk {t[AT_RISK]}"
                         f"{extra}")
        return lines


class Classifier:
    """Due dates, deadlines and the class of undelivered records, computed once per decision date."""

    def __init__(self, calendar: WorkCalendar, today: dt.date, at_risk_days: int) -> None:
        self.calendar, self.today, self.at_risk_days = calendar, today, at_risk_days
        self.problems: dict[int | None, str] = {}  # year (None: no usable date) → why
        self._due: dict[str | None, dt.date | None] = {}
        self._waiting: dict[dt.date, str] = {}

    def due(self, decision_date: str | None) -> dt.date | None:
        """The due date of a decision date (ISO text), or None when the calendar cannot tell."""
        if decision_date not in self._due:
            self._due[decision_date] = self._compute(lambda: self.calendar.add_workdays(
                dt.date.fromisoformat(decision_date or ""), WORKDAYS), decision_date)
        return self._due[decision_date]

    def deadline(self, decision_date: str | None) -> float | None:
        """The first moment (epoch seconds) a delivery is late: midnight after the due date, China time."""
        due = self.due(decision_date)
        return dt.datetime.combine(due + dt.timedelta(days=1), dt.time(), CHINA).timestamp() if due else None

    def undelivered(self, decision_date: str | None) -> str:
        """The class of a record decided on this date that no receipt acknowledged yet."""
        due = self.due(decision_date)
        if due is None:
            return UNCOVERED
        if self.today > due:
            return LATE
        if due not in self._waiting:
            near = self._compute(lambda: self.calendar.workdays_between(self.today, due) <= self.at_risk_days, due)
            self._waiting[due] = UNCOVERED if near is None else AT_RISK if near else PENDING
        return self._waiting[due]

    def delivered(self, decision_date: str | None, first_at: float) -> str:
        deadline = self.deadline(decision_date)
        return UNCOVERED if deadline is None else ON_TIME if first_at < deadline else LATE

    def _compute(self, fn: Callable[[], T], what: object) -> T | None:
        try:
            return fn()
        except CalendarError as exc:
            self.problems.setdefault(exc.day.year, str(exc))
        except ValueError:
            self.problems.setdefault(None, f"records without a usable decision date (e.g. {what!r})")
        return None


class TimelinessRows(Protocol):
    """Where the report's counts come from (the store's reports: gateway.store.Reports)."""

    async def timeliness_rows(self, deadline: Callable[[str | None], float | None],
                              datasets: Sequence[str] | None = None,
                              target: str | None = None) -> list[tuple[Any, ...]]: ...

    async def timeliness_keys(self, dates: Sequence[str], datasets: Sequence[str] | None = None,
                              target: str | None = None) -> list[tuple[Any, ...]]: ...


async def timeliness_report(source: TimelinessRows, calendar: WorkCalendar, *, today: dt.date,
                            datasets: Sequence[str] | None = None, target: str | None = None,
                            at_risk_days: int = 2) -> TimelinessReport:
    """Classify every ledger record (of ``datasets``; delivered to ``target`` or to any target).

    By default only datasets dated by a decision (licences, penalties): credit lists have no 7-day rule.
    """
    if datasets is None:
        datasets = [name for name, d in DATASETS.items() if d.date_field == "decision_date"]
    classifier = Classifier(calendar, today, at_risk_days)
    groups: dict[tuple[str, str], Group] = {}
    late: dict[tuple[str, str], list[tuple[str, int]]] = {}  # group → (decision date, late records)
    for dataset, authority, decision, records, delivered, in_time in await source.timeliness_rows(
            classifier.deadline, datasets, target):
        key = (dataset, authority or "")
        counts = groups.setdefault(key, Group(*key)).counts
        if classifier.due(decision) is None:
            counts[UNCOVERED] += records
            continue
        waiting = classifier.undelivered(decision)
        counts[ON_TIME] += in_time
        counts[LATE] += delivered - in_time
        counts[waiting] += records - delivered
        n_late = delivered - in_time + (records - delivered if waiting == LATE else 0)
        if n_late:
            late.setdefault(key, []).append((decision, n_late))
    if late:
        await _fill_late_keys(source, classifier, groups, late, datasets, target)
    ordered = [groups[k] for k in sorted(groups)]
    return TimelinessReport(today, at_risk_days, target, ordered, [m for _, m in sorted(
        classifier.problems.items(), key=lambda item: -1 if item[0] is None else item[0])])


async def _fill_late_keys(source: TimelinessRows, classifier: Classifier, groups: dict[tuple[str, str], Group],
                          late: dict[tuple[str, str], list[tuple[str, int]]], datasets: Sequence[str] | None,
                          target: str | None) -> None:
    """List the first LATE_KEYS late records per group, oldest decision first: only the dates needed are read."""
    dates: set[str] = set()
    for rows in late.values():
        seen = 0
        for decision, n in sorted(rows):
            if seen >= LATE_KEYS:
                break
            dates.add(decision)
            seen += n
    found = await source.timeliness_keys(sorted(dates), datasets, target)
    for dataset, authority, decision, first_at, record_key in sorted(found, key=lambda r: (r[2], r[4])):
        group = groups[(dataset, authority or "")]
        cls = classifier.undelivered(decision) if first_at is None else classifier.delivered(decision, first_at)
        if len(group.late_keys) < LATE_KEYS and cls == LATE:
            group.late_keys.append(record_key)
