"""The joint-sanction (联合奖惩) closed loop through the sandbox: the platform issues signed cases, the gateway
pulls them and drops them for the department, the department records feedback (in its SQLite table and as a
GBK file), the gateway collects it and uploads it sealed, the platform answers with signed receipts; and the
`sanctions` report and command follow each case, overdue by the official working-day calendar."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import sqlite3
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from gateway.cli import main
from gateway.clock import china_today
from gateway.config import Config, load_config
from gateway.daemon import Gateway
from gateway.domain.calendar import CalendarError, Official, WorkCalendar
from gateway.domain.datasets import SANCTION_CASE, SANCTION_FEEDBACK
from gateway.domain.sanctions import ANSWERED, NO_CALENDAR, OPEN, OVERDUE, REVOKED, classify, sanctions_report
from gateway.errors import PermanentError
from gateway.mapping import InboundMapping, load_mapping
from gateway.sandbox.server import Sandbox, SandboxConfig
from gateway.sealing.base import Credentials
from gateway.sealing.target import load_sealing
from gateway.store import open_store
from tests.conftest import TOKEN
from tests.support.helpers import MAPPINGS
from tests.support.pki import CA, Issued, make_ca

DEPT = "11320500014117422Q"  # 苏州市市场监督管理局 (the implementing department)
PERSON_ID = "11010519491231002X"


def case(case_id: str, subject: str, uscc: str = "", person_id: str = "", measure: str = "CS-017") -> dict[str, str]:
    """A case as the platform issues it (LH_* fields)."""
    fields = {"LH_AJBH": case_id, "LH_JCLX": "惩戒", "LH_BWLBM": "FGCJ-2016-141",
              "LH_BWLMC": "关于对失信被执行人实施联合惩戒的合作备忘录", "LH_CSBM": measure,
              "LH_CSMC": "限制参与政府采购", "LH_CSXZ": "在政府采购活动中依法限制其参与", "LH_FLYJ": "国发〔2016〕33号",
              "LH_ZTMC": subject, "LH_FQBM": "江苏省苏州市中级人民法院", "LH_FQBMDM": "12320500466000000X",
              "LH_XZQZ": "2026-11-20", "LH_XZQZI": "2029-11-19", "LH_FQRQ": "2026-11-20", "LH_DFBM": "320500"}
    if person_id:
        fields.update(LH_ZTLB="自然人", LH_ZJLX="身份证", LH_ZJHM=person_id)
    else:
        fields.update(LH_ZTLB="法人及非法人组织", LH_TYSHXYDM=uscc)
    return fields


CASE_ORG = case("LH-2026-0001", "苏州某某科技有限公司", uscc="91320500MA1MABCD0P")
CASE_PERSON = case("LH-2026-0002", "张某", person_id=PERSON_ID)
CASE_QUIET = case("LH-2026-0003", "昆山某某贸易有限公司", uscc="91320594MA20B3XW21")

CONFIG = """\
[gateway]
department_code = "{dept}"
department_name = "苏州市市场监督管理局"
region_code = "320500"

[store]
url = "{store_url}"

[daemon]
log_format = "text"
log_level = "error"
map_workers = 0
idle_check_s = 0.05

[sanctions]
feedback_due_working_days = 10

[sources.platform_cases]
type = "platform_cases"
url = "{sandbox}/api/v1/sanctions/cases"
token_file = "sandbox.token"
peer_cert = "{pki}/platform.crt"
trusted_cas = ["{pki}/ca.crt"]
mapping = "{mappings}/platform-sanction-case.toml"
poll_interval_s = 1

[sources.feedback_db]
type = "sql"
url = "sqlite:///{dept_db}"
table = "lhjc_fk"
key_columns = ["id"]
update_column = "gxsj"
mapping = "{mappings}/department-sanction-feedback.toml"

[sources.feedback_files]
type = "file_drop"
inbox = "dept/inbox"
encoding = "gbk"
mapping = "{mappings}/department-sanction-feedback.toml"

[targets.department]
type = "file_drop"
directory = "dept/outbox"
datasets = {{ sanction_case = "{mappings}/department-sanction-case.toml" }}
personal_ids = "full"
external = false

[targets.platform]
type = "credit_platform"
url = "{sandbox}/api/v1/upload"
token_file = "sandbox.token"
datasets = {{ sanction_feedback = "{mappings}/platform-sanction-feedback.toml" }}
personal_ids = "mask"

[targets.platform.retry]
initial_s = 0.05
max_s = 0.2
max_attempts = 3

[targets.platform.envelope]
profile = "cms"
key = "{pki}/gateway.key"
cert = "{pki}/gateway.crt"
peer_cert = "{pki}/platform.crt"
trusted_cas = ["{pki}/ca.crt"]
"""

FEEDBACK_COLUMNS = ("ajbh", "csbm", "csmc", "sxbm", "sxmc", "jg", "jgsm", "je", "zxrq", "zxbm", "zxbmdm", "dfbm",
                    "ztmc", "tyshxydm", "zjhm", "bz")


def create_department_db(path: Path) -> None:
    """The department's enforcement system keeps its feedback in a table of its own (real SQLite)."""
    with sqlite3.connect(path) as conn:
        columns = ", ".join(f"{c} TEXT" for c in FEEDBACK_COLUMNS)
        conn.execute(f"CREATE TABLE lhjc_fk (id INTEGER PRIMARY KEY, {columns}, gxsj TEXT NOT NULL)")


def feedback_row(dropped: dict[str, Any], matter: str, matter_name: str, result: str, **extra: str) -> dict[str, str]:
    """What the department records after acting on a case it received (a row of the dropped file)."""
    return {"ajbh": dropped["ajbh"], "csbm": dropped["csbm"], "csmc": dropped["csmc"], "sxbm": matter,
            "sxmc": matter_name, "jg": result, "zxrq": "2026-11-20", "zxbm": "苏州市市场监督管理局", "zxbmdm": DEPT,
            "dfbm": "320500", "ztmc": dropped["ztmc"], **extra}


@dataclass
class World:
    tmp: Path
    sandbox: Sandbox
    config_path: Path
    dept_db: Path
    pki: CA

    @property
    def config(self) -> Config:
        return load_config(self.config_path)

    async def run(self) -> None:
        """The gateway until every source is drained and everything delivered."""
        config = self.config
        store = await open_store(config.store_url())
        try:
            async with Gateway(config, store) as gw:
                assert await gw.run_until_idle(timeout_s=60)
        finally:
            await store.aclose()

    def dropped(self) -> list[dict[str, Any]]:
        """The department side: records of every complete batch file (one whose manifest exists)."""
        out = []
        for manifest_path in sorted((self.tmp / "dept" / "outbox").glob("*.manifest.json")):
            manifest = orjson.loads(manifest_path.read_bytes())
            lines = (manifest_path.parent / manifest["file"]).read_bytes().splitlines()
            assert len(lines) == manifest["records"]
            out += [orjson.loads(line) for line in lines]
        return out

    def write_feedback_rows(self, rows: Sequence[dict[str, str]]) -> None:
        with sqlite3.connect(self.dept_db) as conn:
            for i, row in enumerate(rows):
                values = [row.get(c) for c in FEEDBACK_COLUMNS]
                conn.execute(f"INSERT INTO lhjc_fk ({', '.join(FEEDBACK_COLUMNS)}, gxsj) VALUES "
                             f"({', '.join('?' for _ in FEEDBACK_COLUMNS)}, ?)", [*values, f"2026-11-20 10:00:0{i}"])

    def drop_feedback_file(self, name: str, rows: Sequence[dict[str, str]]) -> None:
        """The department's export: a GBK CSV, then its .done marker."""
        inbox = self.tmp / "dept" / "inbox"
        inbox.mkdir(parents=True, exist_ok=True)
        lines = [",".join(FEEDBACK_COLUMNS)] + [",".join(r.get(c, "") for c in FEEDBACK_COLUMNS) for r in rows]
        (inbox / name).write_bytes(("\r\n".join(lines) + "\r\n").encode("gbk"))
        (inbox / f"{name}.done").write_bytes(b"")

    async def report(self, today: dt.date | None = None, calendar: WorkCalendar | None = None) -> dict[str, Any]:
        store = await open_store(self.config.store_url())
        try:
            report = await sanctions_report(store.history, calendar or WorkCalendar(), today=today or china_today(),
                                            due_working_days=10)
        finally:
            await store.aclose()
        return {c.case_id: c for c in report.cases}


def _sandbox_sealing(platform: Issued, gateway: Issued, ca: CA) -> Any:
    raw = {"profile": "cms", "key": str(platform.key_path), "cert": str(platform.cert_path),
           "peer_cert": str(gateway.cert_path), "trusted_cas": [str(ca.root.cert_path)]}
    sealing, problems = load_sealing(raw, "sandbox.envelope", Path("/"))
    assert problems == []
    return sealing


async def _world(tmp_path: Path, store_url: str, receipt_signer: str = "") -> AsyncIterator[World]:
    ca = make_ca(tmp_path / "pki", "rsa")
    gateway, platform = ca.issue("gateway"), ca.issue("platform")
    signer = ca.issue(receipt_signer) if receipt_signer else None
    config = SandboxConfig(token=TOKEN, db_path=str(tmp_path / "sandbox.db"), departments=(DEPT,),
                           sealing=_sandbox_sealing(platform, gateway, ca),
                           receipt_credentials=Credentials(signer.key_pem, signer.cert_pem) if signer else None)
    dept_db = tmp_path / "department.db"
    create_department_db(dept_db)
    (tmp_path / "sandbox.token").write_text(TOKEN + "\n", encoding="utf-8")
    async with Sandbox(config) as sandbox:
        path = tmp_path / "credit-gateway.toml"
        path.write_text(CONFIG.format(dept=DEPT, store_url=store_url, sandbox=sandbox.url, pki=ca.directory.as_posix(),
                                      mappings=MAPPINGS.as_posix(), dept_db=dept_db.as_posix()), encoding="utf-8")
        yield World(tmp_path, sandbox, path, dept_db, ca)


@pytest.fixture
async def world(tmp_path: Path, store_url: str) -> AsyncIterator[World]:
    async for w in _world(tmp_path, store_url):
        yield w


async def cli(*argv: str) -> int:
    """The command line, as ops run it (in a thread: it runs its own event loop)."""
    return await asyncio.to_thread(main, list(argv))


def _states(world: World) -> dict[str, dict[str, Any]]:
    return {c["caseId"]: c for c in world.sandbox.sanctions.states()}


# ---------------------------------------------------------------- the whole loop

class TestClosedLoop:
    async def test_a_case_goes_round_the_loop(self, world: World, capsys: pytest.CaptureFixture[str]) -> None:
        """Issued → pulled (signed feed) → dropped for the department → feedback (table and GBK file) → collected
        → uploaded sealed → signed receipts → answered at the platform and in `sanctions`."""
        world.sandbox.sanctions.issue([CASE_ORG, CASE_PERSON, CASE_QUIET], department=DEPT)
        await world.run()
        assert {k: v["state"] for k, v in _states(world).items()} == dict.fromkeys(
            ["LH-2026-0001", "LH-2026-0002", "LH-2026-0003"], "fetched")
        dropped = {r["ajbh"]: r for r in world.dropped()}
        assert set(dropped) == {"LH-2026-0001", "LH-2026-0002", "LH-2026-0003"}
        assert dropped["LH-2026-0002"]["zjhm"] == PERSON_ID  # the internal enforcement route gets the full number
        assert dropped["LH-2026-0001"]["zt"] == "0" and dropped["LH-2026-0001"]["csbm"] == "CS-017"
        pushed = await world.report()
        assert {c.state for c in pushed.values()} == {OPEN}
        assert all(c.pushed and c.pushed.receipt_id.endswith(".manifest.json") for c in pushed.values())

        org, person = dropped["LH-2026-0001"], dropped["LH-2026-0002"]
        world.write_feedback_rows([
            feedback_row(org, "S-0101", "政府采购投标资格审查", "1", jgsm="已拒绝其投标", je="125000.50"),
            feedback_row(org, "S-0102", "政府采购供应商登记", "3"),
            feedback_row({**org, "ajbh": "LH-2026-9999"}, "S-0101", "政府采购投标资格审查", "1"),  # no such case
        ])
        world.drop_feedback_file("fk-20261120.csv", [
            feedback_row(person, "S-0201", "个体工商户登记", "未涉及", zjhm=PERSON_ID)])
        await world.run()

        states = _states(world)
        assert {k: v["state"] for k, v in states.items()} == {
            "LH-2026-0001": "answered", "LH-2026-0002": "answered", "LH-2026-0003": "fetched"}
        assert sorted(f["matter"] for f in states["LH-2026-0001"]["feedback"]) == ["S-0101", "S-0102"]
        held = {(d["FK_AJBH"], d["FK_SXBM"]): d for _v, _op, d in world.sandbox.held("LHJC_FK").values()}
        assert set(held) == {("LH-2026-0001", "S-0101"), ("LH-2026-0001", "S-0102"), ("LH-2026-0002", "S-0201")}
        assert held["LH-2026-0002", "S-0201"]["FK_ZJHM"] == "110105********002X"  # the platform route masks
        assert held["LH-2026-0001", "S-0101"]["FK_JE"] == "125000.50"
        assert held["LH-2026-0001", "S-0102"]["FK_JG"] == "未涉及"
        assert (world.tmp / "dept" / "inbox" / "done" / "fk-20261120.csv").exists()

        cases = await world.report()
        assert {k: c.state for k, c in cases.items()} == {
            "LH-2026-0001": ANSWERED, "LH-2026-0002": ANSWERED, "LH-2026-0003": OPEN}
        answered = cases["LH-2026-0001"]
        assert (answered.feedback_collected, answered.feedback_delivered) == (2, 2)
        assert answered.answered is not None and answered.answered.receipt_id.startswith("r-")
        await self._check_stored_receipts_are_signed(world)
        await self._check_unknown_case_quarantined(world)
        await self._check_commands(world, capsys)

    async def _check_stored_receipts_are_signed(self, world: World) -> None:
        """Every platform receipt kept in the store carries the platform's signature (checked before storing)."""
        store = await open_store(world.config.store_url())
        try:
            batches = await store.reports.list_batches("platform", limit=100)
            bodies = [(await store.reports.show_batch(b["id"]) or {})["receipt"]["body"] for b in batches]
        finally:
            await store.aclose()
        assert batches and {b["state"] for b in batches} == {"done"}
        assert all(orjson.loads(body).get("receiptSignature") for body in bodies)

    async def _check_unknown_case_quarantined(self, world: World) -> None:
        """Feedback for a case the platform never issued is refused with its code 7101 and quarantined."""
        store = await open_store(world.config.store_url())
        try:
            entries = await store.reports.list_quarantine("open", "target")
        finally:
            await store.aclose()
        assert [(e["target"], e["record_key"], e["reasons"][0]["code"]) for e in entries] == [
            ("platform", "LH-2026-9999|CS-017|S-0101", "7101")]
        assert "案件不存在" in entries[0]["reasons"][0]["message"]

    async def _check_commands(self, world: World, capsys: pytest.CaptureFixture[str]) -> None:
        """`sanctions --json`, `sanctions --state open` and `status` say the same."""
        capsys.readouterr()
        assert await cli("-c", str(world.config_path), "sanctions", "--json") == 0
        report = json.loads(capsys.readouterr().out)
        assert report["counts"]["answered"] == 2 and report["counts"]["open"] == 1
        by_id = {c["case_id"]: c for c in report["cases"]}
        assert by_id["LH-2026-0002"]["answered"]["target"] == "platform"
        assert by_id["LH-2026-0002"]["pushed"]["target"] == "department"
        assert await cli("-c", str(world.config_path), "sanctions", "--state", "open") == 0
        text = capsys.readouterr().out
        assert "LH-2026-0003" in text and "LH-2026-0001" not in text
        assert await cli("-c", str(world.config_path), "status") == 0
        status = capsys.readouterr().out
        assert "sanctions: 3 case(s): open 1, answered 2, overdue 0" in status
        assert "timeliness sanction" not in status  # the 7-working-day rule is for 双公示 records only

    async def test_overdue_with_injected_today(self, world: World, capsys: pytest.CaptureFixture[str]) -> None:
        """A case without feedback is open up to its due date and overdue the day after (today injected)."""
        world.sandbox.sanctions.issue([CASE_QUIET], department=DEPT)
        await world.run()
        received = (await world.report())["LH-2026-0003"].received_on
        due = WorkCalendar().add_workdays(received, 10)
        on_due = await world.report(today=due)
        after = await world.report(today=due + dt.timedelta(days=1))
        assert (on_due["LH-2026-0003"].state, on_due["LH-2026-0003"].due) == (OPEN, due)
        assert after["LH-2026-0003"].state == OVERDUE
        capsys.readouterr()
        day_after = (due + dt.timedelta(days=1)).isoformat()
        assert await cli("-c", str(world.config_path), "sanctions", "--state", "overdue", "--today", day_after) == 0
        assert "LH-2026-0003" in capsys.readouterr().out

    async def test_no_calendar_is_reported_not_guessed(self, world: World) -> None:
        """Without a schedule for the year of receipt, the case is `no_calendar` with the reason."""
        world.sandbox.sanctions.issue([CASE_QUIET], department=DEPT)
        await world.run()
        received = (await world.report())["LH-2026-0003"].received_on
        calendar = WorkCalendar(official=Official.from_package(until_year=received.year - 1))
        store = await open_store(world.config.store_url())
        try:
            report = await sanctions_report(store.history, calendar, today=received, due_working_days=10)
        finally:
            await store.aclose()
        assert [c.state for c in report.cases] == [NO_CALENDAR]
        assert len(report.uncovered) == 1
        assert report.uncovered[0].startswith(f"no official working-day calendar for {received.year}-")
        assert f"covers 2004–{received.year - 1}" in report.uncovered[0]

    async def test_revoked_case_reaches_the_department(self, world: World) -> None:
        """A case the platform withdraws goes to the department again with 状态 1 and is no longer awaited."""
        world.sandbox.sanctions.issue([CASE_QUIET], department=DEPT)
        await world.run()
        world.sandbox.sanctions.issue([CASE_QUIET], department=DEPT, operation="revoke")
        await world.run()
        versions = [(r["_version"], r["_operation"], r["zt"]) for r in world.dropped()]
        assert sorted(versions) == [(1, "upsert", "0"), (2, "revoke", "1")]
        assert (await world.report(today=dt.date(2026, 12, 31)))["LH-2026-0003"].state == REVOKED
        assert _states(world)["LH-2026-0003"]["state"] == "revoked"


class TestFeedTrust:
    async def test_feed_signed_by_another_certificate_is_refused(self, tmp_path: Path, store_url: str) -> None:
        """Cases whose page is signed by a certificate other than the platform's are not taken."""
        async for world in _world(tmp_path, store_url, receipt_signer="impostor"):
            world.sandbox.sanctions.issue([CASE_ORG], department=DEPT)
            with pytest.raises(PermanentError, match="not by the platform"):
                await world.run()
            assert await world.report() == {}
            assert _states(world)["LH-2026-0001"]["state"] == "fetched"  # the platform sent it; we refused it


# ---------------------------------------------------------------- the platform side

class TestSandboxDesk:
    async def test_feed_pages_and_feedback_rules(self, world: World) -> None:
        """Cases issued by the control endpoint; the feed pages after a cursor and only shows the department's
        cases; feedback naming another measure than its case's is refused with 7102."""
        world.sandbox.sanctions.issue([CASE_ORG, CASE_PERSON, CASE_QUIET], department=DEPT)
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with aiohttp.ClientSession(headers=headers) as http:
            control = world.sandbox.url + "/_sandbox/sanctions/cases"
            other = {"department": "X", "cases": [case("LH-OTHER", "别处公司", uscc="91320500MA1MABCD0P")]}
            async with http.post(control, json=other) as resp:
                assert (await resp.json())["issued"] == [{"caseId": "LH-OTHER", "seq": 4}]
            async with http.post(control, json={"cases": [{"LH_ZTMC": "无编号"}]}) as resp:
                assert resp.status == 400 and "LH_AJBH" in (await resp.json())["errorMsg"]
            async with http.get(world.sandbox.url + "/_sandbox/sanctions") as resp:
                shown = {c["caseId"]: c["state"] for c in (await resp.json())["cases"]}
            assert shown == {"LH-2026-0001": "issued", "LH-2026-0002": "issued", "LH-2026-0003": "issued",
                             "LH-OTHER": "issued"}
            feed = world.sandbox.url + "/api/v1/sanctions/cases"
            async with http.get(feed, params={"departmentCode": DEPT, "after": "0", "limit": "2"}) as resp:
                first = await resp.json()
            async with http.get(feed, params={"departmentCode": DEPT, "after": str(first["cursor"])}) as resp:
                second = await resp.json()
            async with http.get(feed) as resp:
                assert resp.status == 400 and (await resp.json())["errorCode"] == "4001"
            body = {"batchId": "b-x", "tableCode": "LHJC_FK", "departmentCode": DEPT, "records": [{
                "recordKey": "LH-2026-0001|CS-999|S1", "version": 1, "operation": "upsert", "data": {
                    "FK_AJBH": "LH-2026-0001", "FK_CSBM": "CS-999", "FK_SXBM": "S1", "FK_SXMC": "事项",
                    "FK_JG": "已惩戒", "FK_ZXRQ": "2026-11-20", "FK_ZXBM": "部门", "FK_ZXBMDM": DEPT,
                    "FK_DFBM": "320500"}}]}
            sealed = world.config.targets["platform"].sealing.seal(orjson.dumps(body))
            async with http.post(world.sandbox.upload_url, data=sealed,
                                 headers={"Content-Type": "application/pkcs7-mime"}) as resp:
                answer = await resp.json()
        assert [c["caseId"] for c in first["cases"]] == ["LH-2026-0001", "LH-2026-0002"] and first["more"]
        assert [c["caseId"] for c in second["cases"]] == ["LH-2026-0003"] and not second["more"]
        assert first["manifest"]["count"] == 2 and first["manifestSignature"]
        assert answer["results"][0]["status"] == "rejected" and answer["results"][0]["errorCode"] == "7102"


# ---------------------------------------------------------------- due dates on the official calendar

class TestDueDates:
    CAL = WorkCalendar()

    def test_national_day_holiday_and_adjusted_saturday(self) -> None:
        """Received 2026-09-29: ten working days skip 10-01…10-07, count Saturday 10-10, end Monday 10-19."""
        received = dt.date(2026, 9, 29)
        state, due, _ = classify(received, dt.date(2026, 10, 14), None, False, self.CAL, 10)
        assert (state, due) == (OPEN, dt.date(2026, 10, 19))  # counting weekdays only would say 10-13: overdue
        assert classify(received, dt.date(2026, 10, 19), None, False, self.CAL, 10)[0] == OPEN
        assert classify(received, dt.date(2026, 10, 20), None, False, self.CAL, 10)[0] == OVERDUE

    def test_spring_festival(self) -> None:
        """Received Thursday 2026-02-12: Friday, the adjusted Saturday 02-14, then nothing until 02-24."""
        assert classify(dt.date(2026, 2, 12), dt.date(2026, 2, 24), None, False, self.CAL, 3)[1] == dt.date(2026, 2, 24)
        assert classify(dt.date(2026, 2, 12), dt.date(2026, 2, 25), None, False, self.CAL, 3)[0] == OVERDUE

    def test_answer_after_the_due_date_is_late(self) -> None:
        """An answered case says whether its answer came after the due date."""
        assert classify(dt.date(2026, 9, 29), dt.date(2026, 11, 1), dt.date(2026, 10, 20), False, self.CAL, 10) == (
            ANSWERED, dt.date(2026, 10, 19), True)
        assert classify(dt.date(2026, 9, 29), dt.date(2026, 11, 1), dt.date(2026, 10, 19), False, self.CAL, 10)[2] \
            is False

    def test_outside_the_calendar_raises(self) -> None:
        """A year without an official schedule is refused, not guessed."""
        with pytest.raises(CalendarError, match="2027"):
            classify(dt.date(2027, 3, 1), dt.date(2027, 3, 2), None, False, self.CAL, 10)


# ---------------------------------------------------------------- the canonical datasets

class TestDatasets:
    CASES = load_mapping(MAPPINGS / "platform-sanction-case.toml")
    FEEDBACK = load_mapping(MAPPINGS / "department-sanction-feedback.toml")
    TODAY = dt.date(2026, 11, 21)

    def _case(self, **changes: str) -> list[str]:
        assert isinstance(self.CASES, InboundMapping)
        mapped = self.CASES.map_row({**CASE_PERSON, "operation": "upsert", **changes}, self.TODAY)
        return sorted(p.path for p in mapped.problems)

    def test_a_platform_case_maps_to_a_valid_record(self) -> None:
        """The shipped mapping turns a platform case into a sanction_case keyed by its case id."""
        assert isinstance(self.CASES, InboundMapping)
        mapped = self.CASES.map_row({**CASE_ORG, "operation": "revoke"}, self.TODAY)
        assert mapped.record is not None and mapped.key == "LH-2026-0001"
        assert mapped.record.operation.value == "revoke"
        assert mapped.record.fields["period_to"] == dt.date(2029, 11, 19)

    def test_case_rules(self) -> None:
        """A natural person needs an ID number with a valid check character; the period cannot end before it
        starts; an organisation needs its USCC but (unlike 双公示) no legal representative."""
        assert self._case() == []
        assert self._case(LH_ZJHM="") == ["id_no"]
        assert self._case(LH_ZJHM="110105194912310021") == ["id_no"]
        assert self._case(LH_XZQZI="2026-01-01") == ["period_to"]
        assert self._case(LH_ZTLB="法人及非法人组织", LH_ZJLX="", LH_ZJHM="") == ["uscc"]
        assert self._case(LH_ZTLB="法人及非法人组织", LH_ZJLX="", LH_ZJHM="", LH_TYSHXYDM="91320500MA1MABCD0P") == []

    def test_case_id_number_is_personal(self) -> None:
        """Only the ID number is masked on routes that do not allow personal IDs."""
        assert SANCTION_CASE.personal_id_fields == frozenset({"id_no"})
        assert SANCTION_FEEDBACK.personal_id_fields == frozenset({"id_no"})

    def test_feedback_rules(self) -> None:
        """Feedback results come from the code list; the executing department's code is a USCC."""
        assert isinstance(self.FEEDBACK, InboundMapping)
        row = feedback_row({"ajbh": "LH-1", "csbm": "cs-017", "csmc": "限制", "ztmc": "某"}, "s-1", "事项", "2")
        mapped = self.FEEDBACK.map_row(row, self.TODAY)
        assert mapped.record is not None and mapped.key == "LH-1|CS-017|S-1"
        assert mapped.record.fields["result"] == "未惩戒"
        bad = self.FEEDBACK.map_row({**row, "jg": "9", "zxbmdm": "11320500014117422K", "zxrq": "2026-12-01"},
                                    self.TODAY)
        assert sorted(p.path for p in bad.problems) == ["executed_date", "executing_dept_code", "result"]


class TestAnsweredMeansEveryRoute:
    """Feedback answers a case only when every target it went to confirmed it: a receipt from an internal copy
    (an archive) while the platform refused it is not an answer."""

    @staticmethod
    def _delivery(target: str, state: str, at: float | None, version: int = 1) -> Any:
        from gateway.domain.sanctions import Delivery

        receipt = f"r-{target}" if state == "delivered" else None
        return Delivery("sanction_feedback", "LH-1|CS-1|SX-1", target, version, state, receipt, at)

    def test_internal_receipt_with_a_platform_refusal_is_not_an_answer(self) -> None:
        from gateway.domain.sanctions import _confirmed_by_all, _latest_per_target

        rows = _latest_per_target([self._delivery("archive", "delivered", 100.0),
                                   self._delivery("platform", "rejected", None)])
        assert _confirmed_by_all(rows) is None

    def test_answered_when_the_last_route_confirms(self) -> None:
        from gateway.domain.sanctions import _confirmed_by_all, _latest_per_target

        rows = _latest_per_target([self._delivery("platform", "rejected", None, version=1),
                                   self._delivery("platform", "delivered", 300.0, version=2),
                                   self._delivery("archive", "delivered", 100.0, version=2)])
        step = _confirmed_by_all(rows)
        assert step is not None and (step.target, step.at) == ("platform", 300.0)
