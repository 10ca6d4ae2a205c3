"""The monthly report for the development-and-reform commission: one table per sheet, Chinese names throughout.

:func:`monthly_report` reads the month's figures (gateway.figures) into :class:`Sheet` tables; the CLI writes them
as an Excel workbook with charts (gateway.xlsx), as CSV files (one per sheet) or as JSON. Personal ID numbers
are masked in every cell.
"""

from __future__ import annotations

import csv
import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway import figures
from gateway.clock import CHINA, china_today
from gateway.config import Config
from gateway.domain.calendar import WorkCalendar
from gateway.domain.datasets import DATASETS
from gateway.domain.timeliness import AT_RISK, LATE, ON_TIME, PENDING, UNCOVERED
from gateway.figures import Month
from gateway.jobs import list_status
from gateway.operations import mask_personal, personal_keys
from gateway.store import Store

TIMELINESS, LATE_RECORDS, QUARANTINE = "双公示及时性", "逾期记录", "隔离原因"
DELIVERIES, PER_DAY = "报送情况", "每日报送"
LISTS, CASES, FEEDBACK, CREDENTIALS = "信用名单", "联合奖惩案件", "联合奖惩反馈", "证书与日历"
STAGES = {"mapping": "网关校验", "target": "平台拒收"}
CASE_STATES = {"open": "办理中", "answered": "已反馈", "overdue": "已逾期", "revoked": "已撤销",
               "no_calendar": "无日历"}


@dataclass
class Chart:
    """A native chart over a sheet's columns: ``kind`` bar or line; ``values`` the value columns (names)."""

    kind: str
    title: str
    category: str
    values: list[str]
    y_title: str = ""


@dataclass
class Sheet:
    name: str
    columns: list[str]
    rows: list[list[Any]] = field(default_factory=list)
    chart: Chart | None = None

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "rows": [dict(zip(self.columns, row, strict=True)) for row in self.rows]}


@dataclass
class MonthlyReport:
    month: Month
    made_on: dt.date
    department: str
    sheets: list[Sheet]

    def sheet(self, name: str) -> Sheet:
        return next(s for s in self.sheets if s.name == name)

    def as_json(self) -> dict[str, Any]:
        return {"month": str(self.month), "made_on": self.made_on.isoformat(), "department": self.department,
                "sheets": [s.as_json() for s in self.sheets]}

    def write_csv(self, directory: Path) -> list[Path]:
        """One UTF-8 CSV per sheet (with a BOM, so Excel reads the Chinese), named after the sheet."""
        directory.mkdir(parents=True, exist_ok=True)
        paths = []
        for sheet in self.sheets:
            path = directory / f"{self.month}-{sheet.name}.csv"
            with path.open("w", encoding="utf-8-sig", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(sheet.columns)
                writer.writerows(sheet.rows)
            paths.append(path)
        return paths


def dataset_label(name: str) -> str:
    found = DATASETS.get(name)
    return found.label.split(" ")[0] if found else name


def due_month(today: dt.date, calendar: WorkCalendar) -> Month | None:
    """The month whose report is due by ``today``: last month, from the first working day of this one on (a
    CalendarError when the calendar has no schedule for this month)."""
    first = today.replace(day=1)
    if today < calendar.add_workdays(first - dt.timedelta(days=1), 1):
        return None
    return Month.of(first - dt.timedelta(days=1))


async def monthly_report(store: Store, config: Config, month: Month, today: dt.date | None = None, *,
                         adapters_open: bool = False) -> MonthlyReport:
    """Every sheet of ``month``'s report, as of ``today`` (China time); ``adapters_open``: a running gateway's
    target adapters are open already (the list sheet reads the targets through them)."""
    today = today or china_today()
    sheets = [*await _timeliness(store, config, month, today), await _quarantine(store, month),
              *await _deliveries(store, month), await _lists(store, config, adapters_open),
              *await _sanctions(store, config, month, today), _credentials(config, today)]
    keys = personal_keys(config)
    for sheet in sheets:
        sheet.rows = [mask_personal(row, keys) for row in sheet.rows]
    return MonthlyReport(month, today, config.gateway.department_name or config.gateway.department_code, sheets)


async def _timeliness(store: Store, config: Config, month: Month, today: dt.date) -> list[Sheet]:
    report = await figures.month_timeliness(store, config, month, today)
    sheet = Sheet(TIMELINESS, ["数据集", "部门", "记录数", "按时", "逾期", "临期", "待报送", "无日历", "按时率"],
                  chart=Chart("bar", f"{month} 按时率", "部门", ["按时率"], "按时率"))
    late = Sheet(LATE_RECORDS, ["数据集", "部门", "记录编号"])
    for g in report.groups:
        c = g.counts
        on_time = figures.rate(c)
        sheet.rows.append([dataset_label(g.dataset), g.department, sum(c.values()), c[ON_TIME], c[LATE], c[AT_RISK],
                           c[PENDING], c[UNCOVERED], None if on_time is None else round(on_time, 4)])
        late.rows += [[dataset_label(g.dataset), g.department, key] for key in g.late_keys]
    return [sheet, late]


async def _quarantine(store: Store, month: Month) -> Sheet:
    since, until = month.span()
    sheet = Sheet(QUARANTINE, ["环节", "数据集", "字段或代码", "原因", "条数", "示例记录"])
    for g in await figures.quarantine_reasons(store, state=None, since=since, until=until):
        sheet.rows.append([STAGES.get(g["stage"], g["stage"]), dataset_label(g["dataset"]), g["field"], g["reason"],
                           g["count"], "; ".join(str(s["source_key"]) for s in g["samples"])])
    return sheet


async def _deliveries(store: Store, month: Month) -> list[Sheet]:
    sent = await figures.deliveries(store, *month.span())
    status = {row["target"]: row for row in await store.reports.target_status()}
    names = sorted(set(sent) | set(status))
    totals = Sheet(DELIVERIES, ["报送目标", "批次", "确认记录数", "拒收记录数", "积压", "死信"],
                   chart=Chart("bar", f"{month} 各目标确认记录数", "报送目标", ["确认记录数", "拒收记录数"], "记录数"))
    for name in names:
        got = sent.get(name)
        totals.rows.append([name, got.batches if got else 0, got.delivered if got else 0, got.rejected if got else 0,
                            status.get(name, {}).get("backlog", 0), status.get(name, {}).get("dead", 0)])
    per_day = Sheet(PER_DAY, ["日期", *names], chart=Chart("line", f"{month} 每日确认记录数", "日期", names, "记录数"))
    for day in month.days():
        per_day.rows.append([day.isoformat(), *[sent[n].per_day.get(day, 0) if n in sent else 0 for n in names]])
    return [totals, per_day]


async def _lists(store: Store, config: Config, adapters_open: bool) -> Sheet:
    sheet = Sheet(LISTS, ["名单编码", "名单类型", "平台版本", "平台摘要", "平台条数", "已应用版本", "台账摘要",
                          "台账条数", "红黑冲突暂缓", "各目标一致"])
    for view in await list_status(config, store, adapters_open=adapters_open):
        targets = "; ".join(f"{t.target}: {'一致' if t.in_sync else t.error or '不一致'}" for t in view.targets)
        sheet.rows.append([view.list_code, view.list_type, view.platform_version, view.platform_digest,
                           view.platform_count, view.applied_version, view.ledger_digest, view.ledger_count,
                           view.held, targets])
    return sheet


async def _sanctions(store: Store, config: Config, month: Month, today: dt.date) -> list[Sheet]:
    report, _ = await figures.sanctions(store, config, today)
    cases = Sheet(CASES, ["案件编号", "主体", "措施", "状态", "收到日期", "反馈期限", "已推送部门", "反馈条数",
                          "已送达反馈", "答复时间", "逾期答复"])
    for c in report.cases:
        if Month.of(c.received_on) != month:
            continue
        cases.rows.append([c.case_id, c.subject, c.measure, CASE_STATES.get(c.state, c.state),
                           c.received_on.isoformat(), c.due.isoformat() if c.due else "", "是" if c.pushed else "否",
                           c.feedback_collected, c.feedback_delivered,
                           figures.china_text(c.answered.at) if c.answered else "", "是" if c.answered_late else "否"])
    rows = await store.history.sanction_rows()
    results: dict[str, int] = {}
    for fb in rows.feedback:
        if str(fb.payload.get("executed_date", "")).startswith(f"{month}-"):
            result = str(fb.payload.get("result", ""))
            results[result] = results.get(result, 0) + 1
    feedback = Sheet(FEEDBACK, ["执行结果", "反馈条数"], [[k, v] for k, v in sorted(results.items())])
    return [cases, feedback]


def _credentials(config: Config, today: dt.date) -> Sheet:
    now = dt.datetime.combine(today, dt.time(12), CHINA)
    sheet = Sheet(CREDENTIALS, ["位置", "类型", "主体", "到期日", "剩余天数", "状态"])
    for c in figures.credentials(config, now):
        sheet.rows.append([c["where"], c["kind"], c["subject"], c["not_after"], c["days_left"], c["status"]])
    cover = figures.calendar_cover(config, today)
    sheet.rows.append(["calendar", "工作日日历", cover["coverage"], cover["covered_until"], cover["days_left"],
                       "ok" if cover["days_left"] > 60 else "即将到期"])
    return sheet
