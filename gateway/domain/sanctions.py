"""The joint-sanction (联合奖惩) closed loop, as ops and the DRC follow it: one line per case.

A case goes round the loop in four steps, each proven by a receipt or a ledger entry:

1. **received**: the platform's case is in the ledger (dataset ``sanction_case``; the day it first arrived,
   China time, starts the clock);
2. **pushed**: a target receiving ``sanction_case`` (the department's system) acknowledged it (receipt id);
3. **feedback collected**: the department's feedback naming the case is in the ledger
   (``sanction_feedback``, one record per measure and business matter);
4. **feedback delivered**: a target receiving ``sanction_feedback`` (the platform) acknowledged at least one
   of them with a receipt.

State: ``answered`` after step 4; ``overdue`` when it has not happened and today is past the due date, the
``[sanctions] feedback_due_working_days``-th working day after the day of receipt (official calendar,
gateway.domain.calendar); ``open`` otherwise; ``revoked`` when the platform withdrew the case; ``no_calendar``
when the calendar has no schedule for the dates needed (reported, never guessed). An answered case also
says whether its answer came late.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway.clock import CHINA
from gateway.domain.calendar import CalendarError, WorkCalendar

STATES = ("open", "answered", "overdue", "revoked", "no_calendar")
OPEN, ANSWERED, OVERDUE, REVOKED, NO_CALENDAR = STATES


@dataclass(frozen=True)
class Step:
    """A delivery proven by a receipt: to which target, the receipt id, when (epoch seconds)."""

    target: str
    receipt_id: str
    at: float

    def as_json(self) -> dict[str, Any]:
        return {"target": self.target, "receipt": self.receipt_id, "at": _iso(self.at)}


@dataclass
class CaseStatus:
    case_id: str
    subject: str
    measure: str
    received_at: float
    received_on: dt.date
    due: dt.date | None
    state: str
    pushed: Step | None = None
    feedback_collected: int = 0
    feedback_delivered: int = 0
    feedback_rejected: int = 0  # refused by the platform (in quarantine with its reason)
    answered: Step | None = None
    answered_late: bool = False

    def as_json(self) -> dict[str, Any]:
        return {"case_id": self.case_id, "subject": self.subject, "measure": self.measure, "state": self.state,
                "received_at": _iso(self.received_at), "received_on": self.received_on.isoformat(),
                "due": self.due.isoformat() if self.due else None,
                "pushed": self.pushed.as_json() if self.pushed else None,
                "feedback_collected": self.feedback_collected, "feedback_delivered": self.feedback_delivered,
                "feedback_rejected": self.feedback_rejected,
                "answered": self.answered.as_json() if self.answered else None, "answered_late": self.answered_late}


@dataclass(frozen=True)
class SanctionsReport:
    today: dt.date
    due_working_days: int
    cases: Sequence[CaseStatus]
    uncovered: Sequence[str] = field(default_factory=tuple)  # why some cases have no due date

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(STATES, 0)
        for case in self.cases:
            counts[case.state] += 1
        return counts

    def only(self, state: str | None) -> list[CaseStatus]:
        return [c for c in self.cases if state is None or c.state == state]

    def as_json(self, state: str | None = None) -> dict[str, Any]:
        return {"today": self.today.isoformat(), "feedback_due_working_days": self.due_working_days,
                "counts": self.counts(), "cases": [c.as_json() for c in self.only(state)],
                "uncovered": list(self.uncovered)}

    def status_lines(self) -> list[str]:
        """One line for ``credit-gateway status`` (none while there are no cases)."""
        if not self.cases:
            return []
        c = self.counts()
        extra = "".join(f", {name.replace('_', ' ')} {c[name]}" for name in (REVOKED, NO_CALENDAR) if c[name])
        return [f"sanctions: {len(self.cases)} case(s): open {c[OPEN]}, answered {c[ANSWERED]}, "
                f"overdue {c[OVERDUE]}{extra}"]


CASES = "sanction_case"
FEEDBACK = "sanction_feedback"


@dataclass(frozen=True, slots=True)
class LedgerCase:
    key: str
    operation: str
    payload: dict[str, Any]
    first_seen_at: float


@dataclass(frozen=True, slots=True)
class LedgerFeedback:
    key: str
    case_id: str
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Delivery:
    """One outbox row of a case or feedback record, with the receipt of its batch when there is one."""

    dataset: str
    key: str
    target: str
    version: int
    state: str  # pending | leased | delivered | rejected | dead | superseded | replayed | withheld
    receipt_id: str | None
    received_at: float | None


@dataclass(frozen=True)
class SanctionRows:
    cases: list[LedgerCase]
    feedback: list[LedgerFeedback]
    deliveries: list[Delivery]


class SanctionSource(Protocol):
    """Where the report's rows come from (the store's history: gateway.store.History)."""

    async def sanction_rows(self) -> SanctionRows: ...


def due_date(received_on: dt.date, calendar: WorkCalendar, due_days: int) -> dt.date:
    """The day feedback is due: the ``due_days``-th working day after the day of receipt (CalendarError if unknown)."""
    return calendar.add_workdays(received_on, due_days)


def classify(received_on: dt.date, today: dt.date, answered_on: dt.date | None, revoked: bool,
             calendar: WorkCalendar, due_days: int) -> tuple[str, dt.date | None, bool]:
    """(state, due date, answered late) of one case; CalendarError when the calendar cannot tell."""
    if revoked:
        return REVOKED, None, False
    due = due_date(received_on, calendar, due_days)
    if answered_on is not None:
        return ANSWERED, due, answered_on > due
    return (OVERDUE if today > due else OPEN), due, False


async def sanctions_report(source: SanctionSource, calendar: WorkCalendar, *, today: dt.date,
                           due_working_days: int) -> SanctionsReport:
    """Every case in the ledger with its steps and state as of ``today``."""
    rows = await source.sanction_rows()
    by_case: dict[str, list[str]] = {}
    for fb in rows.feedback:
        by_case.setdefault(fb.case_id, []).append(fb.key)
    deliveries = _group(rows.deliveries)
    uncovered: dict[int, str] = {}
    cases = []
    for case in rows.cases:
        status = _status(case, by_case.get(case.payload.get("case_id", case.key), []), deliveries)
        try:
            answered_on = _china_day(status.answered.at) if status.answered else None
            status.state, status.due, status.answered_late = classify(
                status.received_on, today, answered_on, case.operation == "revoke", calendar, due_working_days)
        except CalendarError as exc:
            status.state = NO_CALENDAR
            uncovered.setdefault(exc.day.year, str(exc))
        cases.append(status)
    cases.sort(key=lambda c: (c.received_at, c.case_id))
    return SanctionsReport(today, due_working_days, cases, [m for _, m in sorted(uncovered.items())])


def _group(deliveries: Iterable[Delivery]) -> dict[tuple[str, str], list[Delivery]]:
    out: dict[tuple[str, str], list[Delivery]] = {}
    for d in deliveries:
        out.setdefault((d.dataset, d.key), []).append(d)
    return out


def _first_receipt(deliveries: Iterable[Delivery]) -> Step | None:
    done = [d for d in deliveries if d.state == "delivered" and d.receipt_id is not None and d.received_at]
    first = min(done, key=lambda d: d.received_at or 0.0, default=None)
    return Step(first.target, first.receipt_id or "", first.received_at or 0.0) if first else None


def _latest_per_target(deliveries: Iterable[Delivery]) -> list[Delivery]:
    """Each target's outbox row of the newest version it was sent."""
    latest: dict[str, Delivery] = {}
    for d in deliveries:
        if d.target not in latest or d.version >= latest[d.target].version:
            latest[d.target] = d
    return list(latest.values())


def _confirmed_by_all(rows: Sequence[Delivery]) -> Step | None:
    """Feedback counts as delivered once every target it went to (the platform among them) acknowledged it with
    a receipt; the step is the last of those receipts. A receipt from an internal copy alone is not the answer."""
    if not rows or any(d.state != "delivered" or d.receipt_id is None or not d.received_at for d in rows):
        return None
    last = max(rows, key=lambda d: d.received_at or 0.0)
    return Step(last.target, last.receipt_id or "", last.received_at or 0.0)


def _status(case: LedgerCase, feedback_keys: Sequence[str],
            deliveries: dict[tuple[str, str], list[Delivery]]) -> CaseStatus:
    p = case.payload
    status = CaseStatus(str(p.get("case_id", case.key)), str(p.get("subject_name", "")),
                        f"{p.get('measure_code', '')} {p.get('measure_name', '')}".strip(), case.first_seen_at,
                        _china_day(case.first_seen_at), None, OPEN)
    status.pushed = _first_receipt(deliveries.get((CASES, case.key), []))
    status.feedback_collected = len(feedback_keys)
    answers = []
    for key in feedback_keys:
        rows = _latest_per_target(deliveries.get((FEEDBACK, key), []))
        step = _confirmed_by_all(rows)
        if step is not None:
            status.feedback_delivered += 1
            answers.append(step)
        elif any(d.state == "rejected" for d in rows):
            status.feedback_rejected += 1
    status.answered = min(answers, key=lambda a: a.at, default=None)
    return status


def _china_day(epoch: float) -> dt.date:
    return dt.datetime.fromtimestamp(epoch, CHINA).date()


def _iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, CHINA).isoformat(timespec="seconds")
