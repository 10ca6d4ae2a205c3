"""`credit-gateway demo` end to end, small: the sealed delivery, then a credit list arriving, a sanction case
answered, a revocation propagated, a late record reported and a historical penalty withheld — each checked in
the summary *and* against what the demo left behind (the department's and the archive's SQLite files, the
sandbox's database, the store through the commands the summary points to). A broken scene makes the demo exit
1 and say why."""

from __future__ import annotations

import contextlib
import io
import re
import sqlite3
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.cli import main
from gateway.clock import china_today
from gateway.demo import run_demo
from gateway.demo import scenes as demo_scenes

SMALL = {"licences": 40, "penalties": 40}
CHECKS = ("delivered, every valid record held once", "evidence verified offline",
          "credit lists arrived, digests equal at every end, red/black conflict caught", "sanction case answered",
          "revocation confirmed by every target", "late record reported",
          "historical penalty withheld from the platform")


def query(db: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return conn.execute(sql, params).fetchall()


def cli_json(capsys: pytest.CaptureFixture[str], workdir: Path, *argv: str) -> tuple[int, Any]:
    """A command from the summary's "Where to look next", with --json."""
    capsys.readouterr()
    code = main(["-c", str(workdir / "credit-gateway.toml"), *argv, "--json"])
    return code, orjson.loads(capsys.readouterr().out)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, str]:
    """One small demo run, shared by the checks below (the demo takes a few seconds)."""
    workdir = tmp_path_factory.mktemp("demo") / "demo-run"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = run_demo(workdir, **SMALL)
    return workdir, code, printed.getvalue()


class TestDemo:
    def test_exits_0_with_every_check_ok(self, demo_run: tuple[Path, int, str]) -> None:
        _, code, text = demo_run
        assert code == 0, text
        checks = text[text.index("\nChecks ("):]
        for name in CHECKS:
            assert f"  {name}: OK" in checks
        assert "FAILED" not in text and "MISMATCH" not in text

    def test_where_to_look_next_names_the_new_commands(self, demo_run: tuple[Path, int, str]) -> None:
        text = demo_run[2].split("Where to look next", 1)[1]
        for command in ("lists status", "sanctions", "records changes", "timeliness"):
            assert re.search(rf"credit-gateway\.toml {command}\s+#", text), command

    def test_ends_with_the_dashboard_and_this_months_report(self, demo_run: tuple[Path, int, str]) -> None:
        """The last lines say how to open the dashboard (its URL, the token file) and where this month's report is;
        the report is a workbook with the sheets and the sandbox's deliveries of the day."""
        from openpyxl import load_workbook

        workdir, _, text = demo_run
        month = china_today().strftime("%Y-%m")
        tail = text[text.index("\nMonthly report for"):]
        assert "http://127.0.0.1:8470/dashboard" in tail and str(workdir / "dashboard.token") in tail
        book = load_workbook(workdir / f"monthly-{month}.xlsx")
        assert book["说明"]["B2"].value == month
        sandbox = next(row for row in book["报送情况"].iter_rows(values_only=True) if row[0] == "sandbox")
        accepted = query(workdir / "spool" / "gateway.db",
                         "SELECT sum(accepted) FROM cg_receipts WHERE target = 'sandbox'")[0][0]
        assert sandbox[2] == accepted > 0  # the demo ran today: every receipt is this month's

    def test_lists_arrived_with_equal_digests_and_the_conflict_held(
            self, demo_run: tuple[Path, int, str], capsys: pytest.CaptureFixture[str]) -> None:
        workdir, _, text = demo_run
        code, status = cli_json(capsys, workdir, "lists", "status")
        assert code == 0 and status["conflicts"] == 1
        year = china_today().year
        assert sorted(v["list_code"] for v in status["lists"]) == [f"BLACK-{year}", f"RED-{year}"]
        for v in status["lists"]:
            assert v["platform"]["version"] == v["ledger"]["version"] == 1
            assert v["ledger"]["digest"] == v["platform"]["digest"] and v["ledger"]["matches_platform"]
            [target] = v["targets"]
            assert target["target"] == "department" and target["in_sync"]
            assert target["digest"] == target["expected_digest"]
        shared = demo_scenes.list_items(china_today())[0][0]["TYSHXYDM"]
        rows = query(workdir / "department.db", "SELECT list_code, uscc FROM dept_credit_list ORDER BY record_key")
        assert (f"BLACK-{year}", shared) in rows and (f"RED-{year}", shared) not in rows and len(rows) == 4
        assert f"RED-{year}|{shared}|" in text.split("2. A sanction case")[0]  # the conflict is shown

    def test_the_case_was_answered(self, demo_run: tuple[Path, int, str], capsys: pytest.CaptureFixture[str]) -> None:
        workdir = demo_run[0]
        case_id = f"LH-{china_today().year}-0001"
        code, report = cli_json(capsys, workdir, "sanctions")
        [case] = report["cases"]
        assert code == 0 and case["case_id"] == case_id and case["state"] == "answered"
        assert case["pushed"]["target"] == "department" and case["answered"]["target"] == "sandbox"
        assert query(workdir / "department.db", "SELECT ajbh, zt FROM lhjc_aj") == [(case_id, "0")]
        held = query(workdir / "sandbox.db", "SELECT data FROM held WHERE table_code = 'LHJC_FK'")
        assert [(orjson.loads(d)["FK_AJBH"], orjson.loads(d)["FK_JG"]) for (d,) in held] == [(case_id, "已惩戒")]

    def test_the_revocation_was_confirmed_by_both_targets(
            self, demo_run: tuple[Path, int, str], capsys: pytest.CaptureFixture[str]) -> None:
        workdir = demo_run[0]
        code, changes = cli_json(capsys, workdir, "records", "changes", "--operation", "revoke", "--dataset",
                                 "penalty", "--limit", "1")
        [change] = changes
        assert code == 0 and change["version"] == 2 and change["origin"] == "source"
        assert sorted(d["target"] for d in change["deliveries"] if d["state"] == "delivered") == ["archive", "sandbox"]
        key = change["record_key"]
        wsh, code_ = key.split("|")
        assert query(workdir / "department.db", "SELECT zt FROM xzcf WHERE cfjdswh = ? AND cfjgdm = ?", wsh,
                     code_) == [("1",)]
        assert query(workdir / "archive.db", "SELECT CF_ZT FROM xzcf_archive WHERE CF_WSH = ?", wsh) == [("1",)]
        [(version, operation)] = query(workdir / "sandbox.db", "SELECT version, operation FROM held WHERE "
                                       "table_code = 'XZCF' AND record_key = ?", key)
        assert (version, operation) == (2, "revoke")

    def test_a_late_record_is_reported(self, demo_run: tuple[Path, int, str],
                                       capsys: pytest.CaptureFixture[str]) -> None:
        workdir, _, text = demo_run
        code, report = cli_json(capsys, workdir, "timeliness")
        late_keys = {k for g in report["departments"] for k in g["late_keys"]}
        late = sum(t["late"] for t in report["datasets"].values())
        assert code == 0 and late >= 1
        found = re.search(r"(\d+) late in all; e\.g\. \w+ (\S+): decided (\S+), due (\S+)", text)
        # the fifth scene's penalty, decided four years ago and received by the archive since, is late too
        assert found is not None and int(found[1]) + 1 == late and found[2] in late_keys
        assert found[4] < china_today().isoformat()  # due before the day it was delivered


    def test_the_historical_penalty_went_to_the_archive_only(
            self, demo_run: tuple[Path, int, str], capsys: pytest.CaptureFixture[str]) -> None:
        """The penalty decided four years ago: in the archive's table, not at the sandbox; withheld there, and
        `status` counts it."""
        workdir, _, text = demo_run
        found = re.search(r"records show penalty '([^']+)'", text)
        assert found is not None
        key = found[1]
        wsh, code_ = key.split("|")
        [(decided,)] = query(workdir / "department.db", "SELECT jdrq FROM xzcf WHERE cfjdswh = ? AND cfjgdm = ?",
                             wsh, code_)
        assert decided.replace("/", "-") < china_today().replace(year=china_today().year - 3).isoformat()
        assert query(workdir / "archive.db", "SELECT count(*) FROM xzcf_archive WHERE CF_WSH = ?", wsh) == [(1,)]
        assert query(workdir / "sandbox.db", "SELECT count(*) FROM held WHERE record_key = ?", key) == [(0,)]
        code, history = cli_json(capsys, workdir, "records", "show", "penalty", key)
        assert code == 0 and {d["target"]: d["state"] for d in history["deliveries"]} == {
            "archive": "delivered", "sandbox": "withheld"}
        code, status = cli_json(capsys, workdir, "status")
        assert code == 0 and {t["target"]: t["withheld"] for t in status["targets"]}["sandbox"] >= 1

def test_a_failed_scene_makes_the_demo_exit_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """Lists without a common subject: no conflict to catch, so that check fails, says why, and the exit is 1."""
    real = demo_scenes.list_items

    def no_common_subject(today: Any) -> Any:
        black, red = real(today)
        return black, red[:-1]

    monkeypatch.setattr(demo_scenes, "list_items", no_common_subject)
    code = run_demo(tmp_path / "demo-run", **SMALL)
    text = capsys.readouterr().out
    assert code == 1
    assert "credit lists arrived, digests equal at every end, red/black conflict caught: FAILED (expected one " \
           "red/black conflict" in text
    assert "sanction case answered: OK" in text  # the other scenes still ran and passed
