"""The demo's second part: five scenes of what the gateway does besides delivering 双公示 records.

After the sample department database has been delivered (:mod:`gateway.demo`), the same gateway, store and
sandbox play five scenes, each ending with a check that can fail:

1. **a credit list arrives**: the platform publishes a black list and a red list naming one subject on
   both; the gateway takes them (``platform_lists``) and writes them into the department's own table (the
   ``sql`` sink); versions and digests must be equal at the platform, in the ledger and at the department,
   and the red entry of the black-listed subject must be held back and reported;
2. **a sanction case answered**: the platform issues a joint-sanction case; the gateway pulls it
   (``platform_cases``) into the department's case table; the demo then plays the department's system,
   which reads the case and records its feedback in its feedback table; the gateway collects it and uploads
   it sealed; the case must be ``answered`` in ``sanctions`` and at the platform;
3. **a revocation propagated**: the department revokes a penalty every target already holds; the change
   must be confirmed by every one of them (``records changes``);
4. **a late record reported**: the sample's decision dates reach back three years, so records delivered
   today are past their 7-working-day due date; ``timeliness`` must report at least one;
5. **a historical penalty withheld**: the department adds a penalty decided four years ago, past its
   maximum publicity period (3 years); the archive (internal) must receive it and the platform (public)
   must not: its outbox row for the platform is ``withheld`` (``records show``).

The platform and the department act through their own means only (the sandbox's publish/issue controls,
the department's tables); between those acts the gateway runs until idle. Nothing is slept.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.clock import china_today
from gateway.config import Config
from gateway.daemon import Gateway
from gateway.domain.calendar import CalendarError, WorkCalendar
from gateway.domain.datasets import BLACK_LIST, RED_LIST
from gateway.domain.identifiers import id_check_char
from gateway.domain.sanctions import ANSWERED
from gateway.domain.timeliness import LATE, WORKDAYS, TimelinessReport, timeliness_report
from gateway.jobs import ListView, conflicts, list_status
from gateway.mapping import OutboundMapping, load_mapping
from gateway.records import make_key
from gateway.report import (
    out,
    print_changes,
    print_conflicts,
    print_history,
    print_lists_status,
    print_sanctions,
    report_for,
    table,
)
from gateway.sandbox.server import Sandbox
from gateway.store import Store
from gateway.store.confirmations import Change
from gateway.testing.department_db import SampleResult, apply_changes, insert_rows
from gateway.testing.rows import format_gxsj, make_uscc

PHASE_TIMEOUT_S = 120.0
CASE_TABLE, FEEDBACK_TABLE, LIST_TABLE, ARCHIVE_TABLE = "lhjc_aj", "lhjc_fk", "dept_credit_list", "xzcf_archive"
PENALTY_SOURCE = "department_penalties"

# The department's own tables, created the way a department would (plain DDL; the gateway reflects them).
DEPARTMENT_DDL = (
    f"""CREATE TABLE {LIST_TABLE} (
    id INTEGER PRIMARY KEY, record_key VARCHAR(400) NOT NULL UNIQUE, list_code VARCHAR(64) NOT NULL,
    list_type VARCHAR(32) NOT NULL, subject_category VARCHAR(32), subject_name VARCHAR(200) NOT NULL,
    uscc VARCHAR(18), id_type VARCHAR(32), id_no VARCHAR(64), reason TEXT, basis VARCHAR(128),
    deciding_body VARCHAR(200), listing_date DATE, expiry_date DATE, removal_date DATE, removal_reason TEXT,
    gateway_version INTEGER, status VARCHAR(16))""",
    f"""CREATE TABLE {CASE_TABLE} (
    id INTEGER PRIMARY KEY, ajbh VARCHAR(64) NOT NULL UNIQUE, zt CHAR(1), jclx VARCHAR(8), bwlbm VARCHAR(64),
    bwlmc VARCHAR(256), csbm VARCHAR(64), csmc VARCHAR(256), csxz TEXT, flyj TEXT, ztmc VARCHAR(200),
    ztlb VARCHAR(32), tyshxydm VARCHAR(18), fddbr VARCHAR(50), zjlx VARCHAR(32), zjhm VARCHAR(64),
    fqbm VARCHAR(200), fqbmdm VARCHAR(18), xzqz DATE, xzqzi DATE, fqrq DATE, dfbm VARCHAR(6), bz TEXT)""",
    f"""CREATE TABLE {FEEDBACK_TABLE} (
    id INTEGER PRIMARY KEY, ajbh TEXT, csbm TEXT, csmc TEXT, sxbm TEXT, sxmc TEXT, jg TEXT, jgsm TEXT, je TEXT,
    zxrq TEXT, zxbm TEXT, zxbmdm TEXT, dfbm TEXT, ztmc TEXT, tyshxydm TEXT, zjhm TEXT, bz TEXT,
    gxsj TEXT NOT NULL)""",
)


def create_department_tables(department_db: Path, archive_db: Path, archive_mapping: Path) -> None:
    """The department's list, case and feedback tables, and an internal archive of penalties.

    The archive's columns are the 2019 standard's (the outbound mapping's fields), keyed like the record
    (decision number and deciding body's USCC).
    """
    with contextlib.closing(sqlite3.connect(department_db)) as conn, conn:
        for ddl in DEPARTMENT_DDL:
            conn.execute(ddl)
    mapping = load_mapping(str(archive_mapping))
    if not isinstance(mapping, OutboundMapping):
        raise TypeError(f"{archive_mapping}: not an outbound mapping")
    columns = ", ".join(f"{name} TEXT" for name in mapping.target_fields)
    with contextlib.closing(sqlite3.connect(archive_db)) as conn, conn:
        conn.execute(f"CREATE TABLE {ARCHIVE_TABLE} (id INTEGER PRIMARY KEY, {columns}, "
                     "UNIQUE (CF_WSH, CF_CFJGDM))")


@dataclass
class Stage:
    """What every scene acts on: the running gateway, its store and config, the sandbox, the sample."""

    gw: Gateway
    sandbox: Sandbox
    store: Store
    config: Config
    workdir: Path
    sample: SampleResult

    @property
    def department_db(self) -> Path:
        return self.workdir / "department.db"

    async def run(self) -> bool:
        """The gateway until every source is drained and everything is delivered (False on timeout)."""
        return await self.gw.run_until_idle(timeout_s=PHASE_TIMEOUT_S)


@dataclass(frozen=True)
class Verdict:
    scene: str
    ok: bool
    failed: str = ""  # what did not hold

    def line(self) -> str:
        return f"{self.scene}: " + ("OK" if self.ok else f"FAILED ({self.failed})")


def verdict(scene: str, problems: Sequence[str]) -> Verdict:
    return Verdict(scene, not problems, "; ".join(problems))


async def run_scenes(stage: Stage) -> list[Verdict]:
    return [await credit_lists(stage), await sanction_case(stage), await revocation(stage),
            await late_records(stage), await historical_penalty(stage)]


def heading(title: str) -> None:
    out()
    out(title)


# ---------------------------------------------------------------- 1. a credit list arrives

def _org(n: int, name: str, **extra: str) -> dict[str, str]:
    """A legal person as the platform lists it (platform field names; a valid USCC with letters)."""
    return {"ZTLB": "法人及非法人组织", "ZTMC": name, "TYSHXYDM": _uscc(n), "FDDBR": "王某",
            "LRSY": "事由", "RDWH": f"苏信认〔2026〕{n}号", "RDDW": "苏州市发展和改革委员会", **extra}


def _uscc(n: int) -> str:
    return make_uscc("91", "320500", f"MA{n:05d}X")


def _resident_id(n: int) -> str:
    first17 = f"32050519800101{n:03d}"
    return first17 + id_check_char(first17)


def list_items(today: dt.date) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """(black list, red list): the same company is on both, so its red entry must be held back."""
    listed, expiry = (today - dt.timedelta(days=30)).isoformat(), (today + dt.timedelta(days=3 * 365)).isoformat()
    dated = {"RDRQ": listed, "YXQZ": expiry}
    both = 1
    black = [_org(both, "苏州恒信建材有限公司", LRSY="拒不履行法院生效判决", **dated),
             {"ZTLB": "自然人", "ZTMC": "李某", "ZJLX": "身份证", "ZJHM": _resident_id(7), "LRSY": "失信被执行人",
              "RDWH": "（2026）苏05执123号", "RDDW": "苏州市中级人民法院", "RDRQ": listed}]
    red = [_org(2, "苏州新元科技有限公司", LRSY="A级纳税人", **dated),
           _org(3, "苏州明达物流有限公司", LRSY="守合同重信用企业", **dated),
           _org(both, "苏州恒信建材有限公司", LRSY="守合同重信用企业", **dated)]
    return black, red


async def credit_lists(stage: Stage) -> Verdict:
    today = china_today()
    black_code, red_code = f"BLACK-{today.year}", f"RED-{today.year}"
    black, red = list_items(today)
    heading(f"1. A credit list arrives: the platform publishes {black_code} ({BLACK_LIST}, {len(black)} entries) "
            f"and {red_code} ({RED_LIST}, {len(red)} entries); {red[-1]['ZTMC']} is on both")
    stage.sandbox.lists.publish(black_code, BLACK_LIST, black)
    stage.sandbox.lists.publish(red_code, RED_LIST, red)
    done = await stage.run()
    views = await list_status(stage.config, stage.store, adapters_open=True)
    out(f"  the gateway took both lists (platform_lists) and wrote them into {LIST_TABLE} in department.db (sql sink)")
    out("  lists status:")
    print_lists_status(views, await stage.store.lists.list_entries(), as_json=False)
    found = await conflicts(stage.store)
    print_conflicts(found, as_json=False)
    problems = [] if done else ["the gateway did not finish"]
    problems += _list_problems(views, {black_code, red_code})
    if [(c.red_key, c.black_key) for c in found] != [(f"{red_code}|{_uscc(1)}|", f"{black_code}|{_uscc(1)}|")]:
        problems.append(f"expected one red/black conflict for {_uscc(1)}, found {len(found)}")
    rows = await asyncio.to_thread(_count_rows, stage.department_db, LIST_TABLE)
    out(f"  {LIST_TABLE} holds {rows} rows (the held red entry is not among them)")
    if rows != len(black) + len(red) - 1:
        problems.append(f"{LIST_TABLE} holds {rows} rows, expected {len(black) + len(red) - 1}")
    return verdict("credit lists arrived, digests equal at every end, red/black conflict caught", problems)


def _list_problems(views: Sequence[ListView], codes: set[str]) -> list[str]:
    """Versions and digests equal at the platform and in the ledger; every target holds what it should."""
    problems = []
    if {v.list_code for v in views} != codes:
        problems.append(f"lists {sorted(v.list_code for v in views)}, expected {sorted(codes)}")
    for v in views:
        if v.platform_version != v.applied_version or v.platform_digest != v.ledger_digest:
            problems.append(f"{v.list_code}: ledger v{v.applied_version} {v.ledger_digest[:12]} ≠ platform "
                            f"v{v.platform_version} {v.platform_digest[:12]}")
        if not v.targets:
            problems.append(f"{v.list_code}: no target holds it")
        for t in v.targets:
            if not t.in_sync or t.digest != t.expected_digest:
                problems.append(f"{v.list_code} at {t.target}: {t.error or 'drift'}")
    return problems


def _count_rows(db: Path, table_name: str) -> int:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return int(conn.execute(f"SELECT COUNT(*) FROM {table_name}").fetchone()[0])  # noqa: S608 (our constants)


# ---------------------------------------------------------------- 2. a sanction case answered

def sanction_case_fields(case_id: str, today: dt.date) -> dict[str, str]:
    """A case as the platform issues it (LH_* fields): a black-listed company barred from public procurement."""
    return {"LH_AJBH": case_id, "LH_JCLX": "惩戒", "LH_BWLBM": "FGCJ-2016-141",
            "LH_BWLMC": "关于对失信被执行人实施联合惩戒的合作备忘录", "LH_CSBM": "CS-017",
            "LH_CSMC": "限制参与政府采购", "LH_CSXZ": "在政府采购活动中依法限制其参与", "LH_FLYJ": "国发〔2016〕33号",
            "LH_ZTMC": "苏州恒信建材有限公司", "LH_ZTLB": "法人及非法人组织", "LH_TYSHXYDM": _uscc(1),
            "LH_FQBM": "江苏省苏州市中级人民法院",
            "LH_FQBMDM": "12320500466000000X", "LH_XZQZ": today.isoformat(),
            "LH_XZQZI": (today + dt.timedelta(days=3 * 365)).isoformat(), "LH_FQRQ": today.isoformat(),
            "LH_DFBM": "320500"}


async def sanction_case(stage: Stage) -> Verdict:
    today, gateway = china_today(), stage.config.gateway
    case_id = f"LH-{today.year}-0001"
    fields = sanction_case_fields(case_id, today)
    heading(f"2. A sanction case answered: the platform issues {case_id} ({fields['LH_ZTMC']}: "
            f"{fields['LH_CSBM']} {fields['LH_CSMC']}) to {gateway.department_name}")
    stage.sandbox.sanctions.issue([fields], department=gateway.department_code)
    problems = [] if await stage.run() else ["the gateway did not finish pulling and pushing the case"]
    case = await asyncio.to_thread(_case_row, stage.department_db, case_id)
    if case is None:
        return verdict("sanction case answered", [*problems, f"{case_id} did not reach {CASE_TABLE}"])
    out(f"  the gateway pulled it (signed feed) and wrote it into {CASE_TABLE} (zt {case['zt']}); the department's "
        f"system acts on it and records its feedback in {FEEDBACK_TABLE}")
    feedback = department_feedback(case, gateway.department_name, gateway.department_code, today)
    await asyncio.to_thread(_insert_feedback, stage.department_db, feedback)
    table([{k: feedback[k] for k in ("ajbh", "csbm", "sxbm", "sxmc", "jg", "zxrq", "zxbm")}],
          ["ajbh", "csbm", "sxbm", "sxmc", "jg", "zxrq", "zxbm"])
    if not await stage.run():
        problems.append("the gateway did not finish sending the feedback")
    out("  the gateway collected it and uploaded it sealed (CMS); `sanctions`:")
    report = await report_for(stage.store, stage.config)
    print_sanctions(report)
    states = {c["caseId"]: c for c in stage.sandbox.sanctions.states()}
    at_platform = states.get(case_id, {})
    out(f"  the sandbox's /_sandbox/sanctions: {case_id} {at_platform.get('state', 'unknown')}; feedback held: "
        + ", ".join(f"{f['matter']} {f['result']} (v{f['version']})" for f in at_platform.get("feedback", [])))
    ours = [c for c in report.cases if c.case_id == case_id]
    if not ours or ours[0].state != ANSWERED or not ours[0].feedback_delivered:
        problems.append(f"{case_id} is {ours[0].state if ours else 'missing'} in `sanctions`, not answered")
    if at_platform.get("state") != "answered":
        problems.append(f"{case_id} is {at_platform.get('state', 'unknown')} at the platform, not answered")
    return verdict("sanction case answered", problems)


def _case_row(db: Path, case_id: str) -> dict[str, Any] | None:
    """The department's system reading the case the gateway put into its table."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.row_factory = sqlite3.Row
        row = conn.execute(f"SELECT * FROM {CASE_TABLE} WHERE ajbh = ?", (case_id,)).fetchone()  # noqa: S608
    return dict(row) if row is not None else None


def department_feedback(case: dict[str, Any], department: str, department_code: str,
                        today: dt.date) -> dict[str, str]:
    """What the department records after applying the case's measure to a business matter of its own."""
    return {"ajbh": case["ajbh"], "csbm": case["csbm"], "csmc": case["csmc"], "sxbm": "SX-320500-0417",
            "sxmc": "政府采购供应商资格审查", "jg": "1", "jgsm": "已在供应商资格审查中限制其参与", "je": "",
            "zxrq": today.isoformat(), "zxbm": department, "zxbmdm": department_code, "dfbm": "320500",
            "ztmc": case["ztmc"], "tyshxydm": case["tyshxydm"] or "", "zjhm": "", "bz": ""}


def _insert_feedback(db: Path, row: dict[str, str]) -> None:
    names = [*row, "gxsj"]
    sql = f"INSERT INTO {FEEDBACK_TABLE} ({', '.join(names)}) VALUES ({', '.join('?' for _ in names)})"  # noqa: S608
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        conn.execute(sql, [*row.values(), format_gxsj(dt.datetime.now(dt.UTC))])


# ---------------------------------------------------------------- 3. a revocation propagated

async def revocation(stage: Stage) -> Verdict:
    targets = [t.name for t in stage.config.targets.values() if "penalty" in t.mappings]
    picked = await delivered_penalty(stage, targets)
    heading("3. A revocation propagated: the department revokes a penalty every target holds")
    if picked is None:
        return verdict("revocation confirmed by every target", ["no penalty was delivered to every target"])
    key, row_id = picked
    await asyncio.to_thread(apply_changes, stage.department_db, table="xzcf", ids=[row_id], change="revoke")
    out(f"  xzcf row {row_id} ({key}): zt 0 → 1 (撤销), gxsj bumped; the gateway sends it as version 2 of the "
        f"same record to {', '.join(targets)}")
    problems = [] if await stage.run() else ["the gateway did not finish"]
    changes = [c for c in await stage.store.history.list_changes(list(stage.config.targets), operation="revoke",
                                             dataset="penalty", limit=20) if c.record_key == key]
    out("  records changes (this record):")
    print_changes(changes)
    for line in await asyncio.to_thread(_holdings, stage, key):
        out(line)
    problems += _revocation_problems(changes, targets)
    return verdict("revocation confirmed by every target", problems)


async def delivered_penalty(stage: Stage, targets: Sequence[str]) -> tuple[str, int] | None:
    """A penalty in force (among the first read) that every penalty target acknowledged at version 1."""
    found = await stage.store.history.source_records("penalty", PENALTY_SOURCE, operation="upsert", version=1, limit=50)
    delivered = await stage.store.lists.delivered_versions("penalty", [r.record_key for r in found])
    for r in found:
        if all(delivered.get((t, r.record_key)) == 1 for t in targets):
            return r.record_key, int(r.source_key)
    return None


def _holdings(stage: Stage, key: str) -> list[str]:
    """What each target now holds of the record: the sandbox's copy and the archive's row."""
    lines = []
    held = stage.sandbox.held("XZCF").get(key)
    if held is not None:
        lines.append(f"  the sandbox holds it at version {held[0]}, {held[1]}, CF_ZT {held[2].get('CF_ZT')}")
    wsh, _, code = key.partition("|")
    with contextlib.closing(sqlite3.connect(stage.workdir / "archive.db")) as conn:
        row = conn.execute(f"SELECT CF_ZT FROM {ARCHIVE_TABLE} WHERE CF_WSH = ? AND CF_CFJGDM = ?",  # noqa: S608
                           (wsh, code)).fetchone()
    if row is not None:
        lines.append(f"  the archive's {ARCHIVE_TABLE} row has CF_ZT {row[0]}")
    return lines


def _revocation_problems(changes: Sequence[Change], targets: Sequence[str]) -> list[str]:
    if len(changes) != 1:
        return [f"{len(changes)} revocations of the record in the change log, expected 1"]
    change = changes[0]
    confirmed = sorted(d.target for d in change.deliveries if d.state == "delivered")
    if change.version != 2 or confirmed != sorted(targets):
        return [f"version {change.version} confirmed by {confirmed or 'no target'}, expected {sorted(targets)}"]
    return []


# ---------------------------------------------------------------- 4. a late record reported

async def late_records(stage: Stage) -> Verdict:
    heading("4. A late record reported: due 7 working days after the decision date (official calendar)")
    calendar = WorkCalendar.from_settings(stage.config.calendar)
    report = await timeliness_report(stage.store.reports, calendar, today=china_today())
    print_timeliness_summary(report)
    late = sum(t[LATE] for t in report.totals().values())
    example = next((g for g in report.groups if g.late_keys), None)
    if example is None:
        return verdict("late record reported", [f"{late} late records, none listed"])
    key = example.late_keys[0]
    decided = (await stage.store.lists.ledger_payloads(example.dataset, [key])).get(key, {}).get("decision_date")
    out(f"  {late} late in all; e.g. {example.dataset} {key}: decided {decided}, due {_due(calendar, decided)}, "
        "first receipt today")
    return verdict("late record reported", [] if late else ["no late record"])


def print_timeliness_summary(report: TimelinessReport) -> None:
    """The per-dataset totals (``status`` prints the same lines); `timeliness` gives the per-department table."""
    for line in report.status_lines():
        out(f"  {line}")
    for message in report.uncovered:
        out(f"  no calendar: {message}")


def _due(calendar: WorkCalendar, decided: Any) -> str:
    try:
        return calendar.add_workdays(dt.date.fromisoformat(str(decided)), WORKDAYS).isoformat()
    except (CalendarError, ValueError):
        return "unknown"


# ---------------------------------------------------------------- 5. a historical penalty withheld

HISTORICAL_YEARS = 4


async def historical_penalty(stage: Stage) -> Verdict:
    heading("5. A historical penalty withheld: decided four years ago, its publicity period (3 years) is over")
    today = china_today()
    decided_by = today.replace(year=today.year - HISTORICAL_YEARS)
    [row_id] = await asyncio.to_thread(insert_rows, stage.department_db, table="xzcf", count=1, seed=4,
                                       today=decided_by)
    out(f"  the department adds xzcf row {row_id}, decided in the week before {decided_by} (a backfill of old "
        "records); the archive gets it, the platform, which publishes, must not")
    problems = [] if await stage.run() else ["the gateway did not finish"]
    key = await asyncio.to_thread(_penalty_key, stage.department_db, row_id)
    history = await stage.store.history.record_history("penalty", key, list(stage.config.targets))
    if history is None:
        return verdict("historical penalty withheld from the platform", [f"{key} is not in the ledger"])
    out(f"  records show penalty '{key}':")
    print_history(history)
    states = {d.target: d.state for d in history["deliveries"]}
    if states != {"sandbox": "withheld", "archive": "delivered"}:
        problems.append(f"deliveries {states}, expected the sandbox withheld and the archive delivered")
    if key in stage.sandbox.held("XZCF"):
        problems.append("the sandbox holds it")
    return verdict("historical penalty withheld from the platform", problems)


def _penalty_key(db: Path, row_id: int) -> str:
    """The record key of a penalty row as the department mapping makes it: 决定书文号|处罚机关代码."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        wsh, code = conn.execute("SELECT cfjdswh, cfjgdm FROM xzcf WHERE id = ?", (row_id,)).fetchone()
    return make_key(wsh, code)
