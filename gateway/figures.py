"""The figures the dashboard and the monthly report show, read from the store and the configuration.

Everything here is counted in China time: a month runs from its first midnight to the next month's, a delivery
counts on the day its receipt was stored. The dashboard and ``credit-gateway report monthly`` call the same
functions, so a page and a sheet never disagree. Values are plain (dicts, lists, numbers, text); the callers
mask personal ID numbers (:func:`gateway.operations.mask_personal`) before they show them.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.certs import inventory
from gateway.clock import CHINA, china_time
from gateway.config import Config
from gateway.domain.calendar import WorkCalendar
from gateway.domain.sanctions import SanctionsReport, sanctions_report
from gateway.domain.timeliness import LATE, ON_TIME, TimelinessReport, TimelinessRows, timeliness_report
from gateway.store import Store

SAMPLES = 3  # sample rows shown per quarantine reason


@dataclass(frozen=True)
class Month:
    """A calendar month in China time."""

    year: int
    month: int

    @classmethod
    def parse(cls, text: str) -> Month:
        """``2026-11`` → Month; anything else is a ValueError naming the expected form."""
        found = re.fullmatch(r"(\d{4})-(\d{2})", text.strip())
        if found is None or not 1 <= int(found[2]) <= 12:
            raise ValueError(f"month {text!r}: expected YYYY-MM")
        return cls(int(found[1]), int(found[2]))

    @classmethod
    def of(cls, day: dt.date) -> Month:
        return cls(day.year, day.month)

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"

    @property
    def first(self) -> dt.date:
        return dt.date(self.year, self.month, 1)

    @property
    def next_first(self) -> dt.date:
        return dt.date(self.year + self.month // 12, self.month % 12 + 1, 1)

    def days(self) -> list[dt.date]:
        return [self.first + dt.timedelta(days=n) for n in range((self.next_first - self.first).days)]

    def span(self) -> tuple[float, float]:
        """[since, until) in epoch seconds."""
        return _midnight(self.first), _midnight(self.next_first)


def _midnight(day: dt.date) -> float:
    return dt.datetime.combine(day, dt.time(), CHINA).timestamp()


def china_text(epoch: float | None) -> str:
    """An epoch time as ``YYYY-MM-DD HH:MM:SS`` in China time ('' for none)."""
    return "" if epoch is None else china_time(epoch).strftime("%Y-%m-%d %H:%M:%S")


def rate(counts: dict[str, int]) -> float | None:
    """The on-time rate: on time / (on time + late); None when no record has fallen due yet."""
    judged = counts[ON_TIME] + counts[LATE]
    return counts[ON_TIME] / judged if judged else None


# ---------------------------------------------------------------- 双公示 timeliness for a month

class _MonthRows:
    """The store's timeliness rows of records decided in one month (a :class:`TimelinessRows`)."""

    def __init__(self, source: TimelinessRows, month: Month) -> None:
        self.source, self.prefix = source, f"{month}-"

    async def timeliness_rows(self, deadline: Callable[[str | None], float | None],
                              datasets: Sequence[str] | None = None,
                              target: str | None = None) -> list[tuple[Any, ...]]:
        rows = await self.source.timeliness_rows(deadline, datasets, target)
        return [row for row in rows if str(row[2] or "").startswith(self.prefix)]

    async def timeliness_keys(self, dates: Sequence[str], datasets: Sequence[str] | None = None,
                              target: str | None = None) -> list[tuple[Any, ...]]:
        return await self.source.timeliness_keys([d for d in dates if d.startswith(self.prefix)], datasets, target)


class LedgerRows:
    """The store's timeliness rows read once and kept, for several months' reports from one read of the ledger
    (the rows' deadlines depend only on the calendar, the same for every month)."""

    def __init__(self, source: TimelinessRows) -> None:
        self.source = source
        self._rows: dict[tuple[Any, ...], list[tuple[Any, ...]]] = {}

    async def timeliness_rows(self, deadline: Callable[[str | None], float | None],
                              datasets: Sequence[str] | None = None,
                              target: str | None = None) -> list[tuple[Any, ...]]:
        key = (tuple(datasets) if datasets is not None else None, target)
        if key not in self._rows:
            self._rows[key] = await self.source.timeliness_rows(deadline, datasets, target)
        return self._rows[key]

    async def timeliness_keys(self, dates: Sequence[str], datasets: Sequence[str] | None = None,
                              target: str | None = None) -> list[tuple[Any, ...]]:
        return await self.source.timeliness_keys(dates, datasets, target)


async def month_timeliness(store: Store, config: Config, month: Month, today: dt.date, at_risk_days: int = 2,
                           rows: TimelinessRows | None = None) -> TimelinessReport:
    """Records decided in ``month``, classified as of ``today`` (a record still undelivered past its due date
    is late). ``rows``: a :class:`LedgerRows` shared by several months' reports."""
    calendar = WorkCalendar.from_settings(config.calendar)
    return await timeliness_report(_MonthRows(rows or store.reports, month), calendar, today=today,
                                   at_risk_days=at_risk_days)


# ---------------------------------------------------------------- deliveries

@dataclass
class TargetDeliveries:
    target: str
    per_day: dict[dt.date, int]  # records acknowledged per China day
    rejected: int = 0
    batches: int = 0

    @property
    def delivered(self) -> int:
        return sum(self.per_day.values())


async def deliveries(store: Store, since: float, until: float) -> dict[str, TargetDeliveries]:
    """Per target: records acknowledged by a receipt stored in [since, until), per China day."""
    out: dict[str, TargetDeliveries] = {}
    for row in await store.reports.receipts_between(since, until):
        found = out.setdefault(row["target"], TargetDeliveries(row["target"], {}))
        day = china_time(row["received_at"]).date()
        found.per_day[day] = found.per_day.get(day, 0) + int(row["accepted"])
        found.rejected += int(row["rejected"])
        found.batches += 1
    return out


async def overview(store: Store, today: dt.date) -> dict[str, Any]:
    """Per target: backlog, delivered today and this month, oldest pending, circuit, dead letters, last error; per
    source: last poll, rows read, quarantined; the instances' heartbeats."""
    month = Month.of(today)
    sent = await deliveries(store, *month.span())
    beats = await store.reports.heartbeats()
    circuits: dict[str, dict[str, Any]] = {}
    for beat in beats:
        for name, state in (beat["state"].get("targets") or {}).items():
            if isinstance(state, dict):
                circuits[str(name)] = {**state, "instance": beat["instance"]}
    targets = []
    for row in await store.reports.target_status():
        got = sent.get(row["target"])
        state = circuits.get(row["target"], {})
        targets.append({**row, "today": (got.per_day.get(today, 0) if got else 0),
                        "month": got.delivered if got else 0, "circuit": state.get("circuit", ""),
                        "last_error": state.get("blocked") or row.get("last_error") or state.get("last_error")})
    return {"targets": targets, "sources": await store.reports.source_status(),
            "instances": [{"instance": b["instance"], "pid": b["pid"], "state": b["state"].get("state"),
                           "beat_at": b["beat_at"]} for b in beats],
            "per_day": {t: d.per_day for t, d in sent.items()}}


# ---------------------------------------------------------------- quarantine

def reason_shape(message: str) -> str:
    """A reason without the row's own values, so equal reasons group together."""
    message = re.sub(r"^(USCC|ID) [0-9A-Za-z*]+: ", r"\1: ", message)
    message = re.sub(r"should be \w, not \w", "is wrong", message)
    message = re.sub(r"\d{4}-\d{2}-\d{2}", "<date>", message)
    return re.sub(r"^\d+ characters, at most", "longer than", message)


async def quarantine_reasons(store: Store, *, state: str | None = "open", since: float | None = None,
                             until: float | None = None) -> list[dict[str, Any]]:
    """Quarantine entries grouped by stage, dataset, field and reason: the count and a few samples each, the
    largest group first. ``since``/``until`` select entries by when they were first quarantined."""
    groups: dict[tuple[str, str, str, str], dict[str, Any]] = {}
    for entry in await store.reports.list_quarantine(state, limit=10_000_000):
        if (since is not None and entry["created_at"] < since) or (until is not None and entry["created_at"] >= until):
            continue
        for reason in entry["reasons"]:
            what = str(reason.get("code") or reason.get("field") or "")
            key = (entry["stage"], entry["dataset"], what, reason_shape(str(reason.get("message", ""))))
            group = groups.setdefault(key, {"stage": key[0], "dataset": key[1], "field": key[2], "reason": key[3],
                                            "count": 0, "samples": []})
            group["count"] += 1
            if len(group["samples"]) < SAMPLES:
                group["samples"].append({"id": entry["id"], "source": entry["source"],
                                         "source_key": entry["source_key"], "record_key": entry["record_key"],
                                         "message": reason.get("message", ""), "raw": entry["raw"]})
    return sorted(groups.values(), key=lambda g: (-g["count"], g["stage"], g["dataset"], g["reason"]))


# ---------------------------------------------------------------- sanctions, certificates, calendar

async def sanctions(store: Store, config: Config, today: dt.date) -> tuple[SanctionsReport, dict[str, int]]:
    """The 联合奖惩 cases as of ``today``, and the feedback records per result code (执行结果)."""
    report = await sanctions_report(store.history, WorkCalendar.from_settings(config.calendar), today=today,
                                    due_working_days=config.sanctions.feedback_due_working_days)
    rows = await store.history.sanction_rows()
    results = Counter(str(fb.payload.get("result", "")) for fb in rows.feedback)
    return report, dict(sorted(results.items()))


def credentials(config: Config, now: dt.datetime) -> list[dict[str, Any]]:
    """Every key, certificate and token the configuration uses, with its days left."""
    out = []
    for c in inventory(config):
        days = c.days_left(now)
        out.append({"where": c.where, "kind": c.kind, "subject": c.subject,
                    "not_after": c.not_after.astimezone(CHINA).strftime("%Y-%m-%d") if c.not_after else "",
                    "days_left": None if days is None else int(days // 1), "status": c.status(now)})
    return sorted(out, key=lambda c: (c["days_left"] is None, c["days_left"] or 0, c["where"]))


def calendar_cover(config: Config, today: dt.date) -> dict[str, Any]:
    """Until when the working-day calendar has a schedule, and the days left."""
    calendar = WorkCalendar.from_settings(config.calendar)
    until = dt.date(calendar.official.last_year, 12, 31)
    if calendar.covered_until is not None and calendar.covered_until > until:
        until = calendar.covered_until
    return {"coverage": calendar.coverage(), "covered_until": until.isoformat(), "days_left": (until - today).days}
