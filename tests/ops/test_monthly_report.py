"""`credit-gateway report monthly`: the workbook opened with openpyxl, its figures compared with the store's rows
(read with sqlite3, not through the code that made the report), its charts, CSV and JSON, masked ID numbers."""

from __future__ import annotations

import calendar
import datetime as dt
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from openpyxl import load_workbook

from gateway.cli import main
from gateway.clock import CHINA, china_today
from gateway.domain.datasets import DATASETS
from tests.support.dashboard_helpers import Scenario, make_scenario, unmasked_ids

SHEETS = ["说明", "双公示及时性", "逾期记录", "隔离原因", "报送情况", "每日报送", "信用名单", "联合奖惩案件",
          "联合奖惩反馈", "证书与日历"]


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    return make_scenario(tmp_path_factory.mktemp("monthly"))


def _span(month: str) -> tuple[float, float]:
    first = dt.date.fromisoformat(month + "-01")
    nxt = dt.date(first.year + first.month // 12, first.month % 12 + 1, 1)
    return (dt.datetime.combine(first, dt.time(), CHINA).timestamp(),
            dt.datetime.combine(nxt, dt.time(), CHINA).timestamp())


def _busiest_month(scenario: Scenario) -> str:
    """The month with most 双公示 decisions in the ledger (the sample's dates reach back three years)."""
    return str(scenario.query("SELECT substr(decision_date, 1, 7) m, count(*) FROM cg_records WHERE dataset IN "
                              "('penalty', 'license') GROUP BY m ORDER BY count(*) DESC, m DESC LIMIT 1")[0][0])


def _report(scenario: Scenario, tmp_path: Path, month: str) -> Any:
    path = tmp_path / f"{month}.xlsx"
    assert main(["-c", str(scenario.config), "report", "monthly", "--month", month, "--xlsx", str(path)]) == 0
    return load_workbook(path)


def _rows(book: Any, name: str) -> list[dict[str, Any]]:
    values = list(book[name].iter_rows(values_only=True))
    return [dict(zip(values[0], row, strict=True)) for row in values[1:]]


class TestWorkbook:
    def test_sheets_have_chinese_names_and_charts(self, scenario: Scenario, tmp_path: Path) -> None:
        """Every sheet is there, by its Chinese name; timeliness and deliveries carry native charts."""
        book = _report(scenario, tmp_path, china_today().strftime("%Y-%m"))
        assert book.sheetnames == SHEETS
        for name in ("双公示及时性", "报送情况", "每日报送"):
            assert len(book[name]._charts) == 1, name
        assert book["说明"]["B2"].value == china_today().strftime("%Y-%m")

    def test_timeliness_counts_the_months_records(self, scenario: Scenario, tmp_path: Path) -> None:
        """Records per department and dataset are the ledger's decisions of the month; the classes add up; the
        rate is on time / (on time + late); late records listed were decided that month."""
        month = _busiest_month(scenario)
        rows = _rows(_report(scenario, tmp_path, month), "双公示及时性")
        expected = Counter()
        for dataset, payload in scenario.query("SELECT dataset, payload FROM cg_records WHERE decision_date LIKE ? "
                                               "AND dataset IN ('penalty', 'license')", month + "-%"):
            expected[(DATASETS[dataset].label.split(" ")[0], json.loads(payload).get("authority") or "")] += 1
        assert {(r["数据集"], r["部门"]): r["记录数"] for r in rows} == dict(expected)
        for r in rows:
            assert r["按时"] + r["逾期"] + r["临期"] + r["待报送"] + r["无日历"] == r["记录数"]
            judged = r["按时"] + r["逾期"]
            assert r["按时率"] == (round(r["按时"] / judged, 4) if judged else None)
        assert sum(r["逾期"] for r in rows) > 0  # the sample's old decisions were delivered today: late
        book = _report(scenario, tmp_path, month)
        decided = {k for (k,) in scenario.query("SELECT record_key FROM cg_records WHERE decision_date LIKE ?",
                                                month + "-%")}
        listed = [r["记录编号"] for r in _rows(book, "逾期记录")]
        assert listed and set(listed) <= decided

    def test_deliveries_are_the_receipts_of_the_month(self, scenario: Scenario, tmp_path: Path) -> None:
        """Acknowledged records and batches per target are the month's receipts; the per-day sheet adds up."""
        month = china_today().strftime("%Y-%m")
        book = _report(scenario, tmp_path, month)
        since, until = _span(month)
        expected = {t: (n, a, r) for t, n, a, r in scenario.query(
            "SELECT target, count(*), sum(accepted), sum(rejected) FROM cg_receipts WHERE received_at >= ? AND "
            "received_at < ? GROUP BY target", since, until)}
        rows = _rows(book, "报送情况")
        assert {r["报送目标"]: (r["批次"], r["确认记录数"], r["拒收记录数"]) for r in rows} == expected
        per_day = _rows(book, "每日报送")
        assert len(per_day) == calendar.monthrange(*map(int, month.split("-")))[1]
        for target, (_, accepted, _) in expected.items():
            assert sum(r[target] for r in per_day) == accepted
        today = next(r for r in per_day if r["日期"] == china_today().isoformat())
        assert today["sandbox"] == expected["sandbox"][1]  # the demo delivered everything today

    def test_quarantine_lists_and_sanctions_match_the_store(self, scenario: Scenario, tmp_path: Path) -> None:
        """Quarantine reasons count every reason of the month's entries; list entries and conflicts per list;
        the month's cases and feedback results."""
        month = china_today().strftime("%Y-%m")
        book = _report(scenario, tmp_path, month)
        since, until = _span(month)
        reasons = sum(len(json.loads(r)) for (r,) in scenario.query(
            "SELECT reasons FROM cg_quarantine WHERE created_at >= ? AND created_at < ?", since, until))
        assert sum(r["条数"] for r in _rows(book, "隔离原因")) == reasons > 0
        lists = {r["名单编码"]: (r["台账条数"], r["红黑冲突暂缓"]) for r in _rows(book, "信用名单")}
        assert lists == {code: (n, held) for code, n, held in scenario.query(
            "SELECT list_code, sum(active), sum(held) FROM cg_list_entries GROUP BY list_code")}
        cases = scenario.query("SELECT count(*) FROM cg_records WHERE dataset = 'sanction_case' AND first_seen_at >= ? "
                               "AND first_seen_at < ?", since, until)[0][0]
        assert len(_rows(book, "联合奖惩案件")) == cases > 0
        results = Counter(json.loads(p)["result"] for (p,) in scenario.query(
            "SELECT payload FROM cg_records WHERE dataset = 'sanction_feedback'")
            if json.loads(p)["executed_date"].startswith(month))
        assert {r["执行结果"]: r["反馈条数"] for r in _rows(book, "联合奖惩反馈")} == dict(results)

    def test_certificates_and_calendar(self, scenario: Scenario, tmp_path: Path) -> None:
        """The gateway's certificate has its days left; the calendar row says until when it has a schedule."""
        from cryptography import x509

        book = _report(scenario, tmp_path, china_today().strftime("%Y-%m"))
        rows = _rows(book, "证书与日历")
        cert = x509.load_pem_x509_certificate((scenario.workdir / "certs/rsa/gateway.crt").read_bytes())
        row = next(r for r in rows if r["位置"] == "targets.sandbox.envelope.cert")
        assert row["到期日"] == cert.not_valid_after_utc.astimezone(CHINA).strftime("%Y-%m-%d")
        assert abs(row["剩余天数"] - (cert.not_valid_after_utc - dt.datetime.now(dt.UTC)).days) <= 1
        calendar = next(r for r in rows if r["位置"] == "calendar")
        until = dt.date.fromisoformat(calendar["到期日"])
        assert calendar["剩余天数"] == (until - china_today()).days

    def test_no_id_number_unmasked(self, scenario: Scenario, tmp_path: Path) -> None:
        """No cell of any sheet holds an ID number of the department's rows as it is."""
        book = _report(scenario, tmp_path, china_today().strftime("%Y-%m"))
        text = "\n".join(str(v) for ws in book.worksheets for row in ws.iter_rows(values_only=True) for v in row)
        assert scenario.raw_ids() and not (scenario.raw_ids() & set(unmasked_ids(text)))
        assert not unmasked_ids(text)


class TestOtherFormats:
    def test_csv_one_file_per_sheet(self, scenario: Scenario, tmp_path: Path) -> None:
        """--csv writes one UTF-8 (BOM) file per sheet with the same figures."""
        month = china_today().strftime("%Y-%m")
        assert main(["-c", str(scenario.config), "report", "monthly", "--month", month, "--csv", str(tmp_path)]) == 0
        files = sorted(p.name for p in tmp_path.glob("*.csv"))
        assert files == sorted(f"{month}-{name}.csv" for name in SHEETS[1:])
        text = (tmp_path / f"{month}-报送情况.csv").read_text(encoding="utf-8-sig").splitlines()
        assert text[0] == "报送目标,批次,确认记录数,拒收记录数,积压,死信"

    def test_json_and_bad_month(self, scenario: Scenario, capsys: pytest.CaptureFixture[str]) -> None:
        """--json prints every sheet; a month not in YYYY-MM form is refused by the parser."""
        month = china_today().strftime("%Y-%m")
        capsys.readouterr()
        assert main(["-c", str(scenario.config), "report", "monthly", "--month", month, "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["month"] == month and [s["name"] for s in report["sheets"]] == SHEETS[1:]
        with pytest.raises(SystemExit):
            main(["-c", str(scenario.config), "report", "monthly", "--month", "2026-13", "--json"])


class TestScheduled:
    def test_due_from_the_first_working_day(self) -> None:
        """Last month's report is due from the first working day of a month (1 November 2026 is a Sunday)."""
        from gateway.domain.calendar import WorkCalendar
        from gateway.figures import Month
        from gateway.monthly import due_month

        calendar = WorkCalendar()
        assert due_month(dt.date(2026, 11, 1), calendar) is None
        assert due_month(dt.date(2026, 11, 2), calendar) == Month(2026, 10)
        assert due_month(dt.date(2026, 12, 1), calendar) == Month(2026, 11)
        assert due_month(dt.date(2026, 5, 5), calendar) is None  # the Labour Day holidays: 1 to 5 May 2026
        assert due_month(dt.date(2026, 5, 6), calendar) == Month(2026, 4)

    async def test_the_daemon_writes_it_once(self, scenario: Scenario, tmp_path: Path) -> None:
        """With [reports] monthly_dir the gateway writes last month's workbook when due, and only once."""
        from gateway.config import load_config
        from gateway.daemon import Gateway
        from gateway.store import open_store

        text = scenario.config.read_text(encoding="utf-8")
        config_path = scenario.workdir / "reports.toml"
        config_path.write_text(text + f'\n[reports]\nmonthly_dir = "{tmp_path / "reports"}"\n', encoding="utf-8")
        config = load_config(config_path)
        store = await open_store(config.store_url())
        try:
            async with Gateway(config, store) as gw:
                assert await gw.write_monthly_report(dt.date(2026, 11, 1)) is None  # a Sunday: not yet
                path = await gw.write_monthly_report(dt.date(2026, 11, 2))
                assert path == tmp_path / "reports" / "monthly-2026-10.xlsx"
                assert load_workbook(path)["说明"]["B2"].value == "2026-10"
                assert await gw.write_monthly_report(dt.date(2026, 11, 3)) is None  # there already
        finally:
            await store.aclose()
