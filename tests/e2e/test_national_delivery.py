"""The whole pipeline to the national 互联网+监管 system: the department's inspections table → the gateway → the 前置库
(national_frontdb sink) → the simulated national side (gateway/sandbox/national.py), which processes the rows on
a schedule and rejects one. Broken rows are quarantined at mapping, the rejected one at the target with the national
reason, every other record is delivered once with its receipt.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import orjson
import pytest

from gateway.config import load_config
from gateway.daemon import Gateway
from gateway.sandbox.national import FrontDbFaults, NationalFrontDb
from gateway.store import Store
from gateway.testing import DEPARTMENT_CODE
from gateway.testing.national import BODY, supervision_rows
from tests.support.helpers import MAPPINGS, receipts

ROWS = 30
CONFIG = """\
[gateway]
instance = "test"
department_code = "{department}"
department_name = "苏州市市场监督管理局"
region_code = "320500"

[store]
url = "sqlite:///spool/gateway.db"

[daemon]
log_format = "text"
log_level = "error"
idle_check_s = 0.05

[sources.jcxw]
type = "sql"
url = "sqlite:///{department_db}"
table = "jcxw"
key_columns = ["id"]
update_column = "gxsj"
mapping = "{mappings}/department-inspection.toml"
poll_interval_s = 1.0

[targets.national]
type = "national_frontdb"
url = "sqlite:///{front_db}"
region_code = "320000"
poll_s = 0.05
datasets = {{ inspection = "{mappings}/national-inspection.toml" }}
batch_size = 8
personal_ids = "full"
external = false

[targets.national.retry]            # waiting for the national side is neither an attempt nor a failure:
initial_s = 0.05                    # with these limits a counted wait would dead-letter batches or open the circuit
max_s = 0.1
max_attempts = 1

[targets.national.circuit]
failure_threshold = 2
reset_s = 30
"""


def department_db(path: Path, count: int = ROWS) -> list[dict[str, object]]:
    """The department's inspections table ``jcxw`` (10% of the rows broken), with an update column."""
    rows = supervision_rows("inspection", count)
    columns = sorted({c for r in rows for c in r if c != "_broken"})
    with sqlite3.connect(path) as conn:
        conn.execute(f"CREATE TABLE jcxw (id INTEGER PRIMARY KEY, {', '.join(f'{c} TEXT' for c in columns)}, "
                     "gxsj TEXT NOT NULL)")
        for n, row in enumerate(rows, start=1):
            values = [row.get(c) for c in columns]
            stamp = f"2025-03-03 10:{n // 60:02d}:{n % 60:02d}"
            conn.execute(f"INSERT INTO jcxw (id, {', '.join(columns)}, gxsj) VALUES "
                         f"({', '.join('?' * (len(columns) + 2))})", [n, *values, stamp])
    conn.close()
    return rows


def front_db(path: Path) -> None:
    """The national front-end table of inspections, from the shipped DDL."""
    with sqlite3.connect(path) as conn:
        conn.executescript((MAPPINGS / "national" / "ddl" / "tr_t_jgxw_check_action.sql").read_text(encoding="utf-8"))
    conn.close()


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
async def test_inspections_reach_the_national_side_once(tmp_path: Path, store: Store) -> None:
    """Valid rows land once each and are processed; the national rejection is quarantined with its reason."""
    rows = department_db(tmp_path / "dept.db")
    front_db(tmp_path / "front.db")
    (tmp_path / "spool").mkdir()
    config_path = tmp_path / "credit-gateway.toml"
    config_path.write_text(CONFIG.format(department=DEPARTMENT_CODE, department_db=tmp_path / "dept.db",
                                         front_db=tmp_path / "front.db", mappings=MAPPINGS.as_posix()),
                           encoding="utf-8")
    valid = [n for n, r in enumerate(rows, start=1) if "_broken" not in r]
    refused = f"{rows[valid[3] - 1]['xwbh']}|{BODY[1]}"  # the gateway's record key: action code | body code
    side = NationalFrontDb(f"sqlite:///{tmp_path / 'front.db'}", FrontDbFaults(rejected={refused: "检查对象不存在"}))
    stop = asyncio.Event()
    drainer = asyncio.create_task(side.run(0.05, stop))
    try:
        async with Gateway(load_config(config_path), store) as gw:
            assert await gw.run_until_idle(timeout_s=60)
    finally:
        stop.set()
        await drainer
        await side.aclose()
    with sqlite3.connect(tmp_path / "front.db") as conn:
        landed = conn.execute("SELECT cd_id, record_unique_identity, cd_operation, deal_status "
                              "FROM tr_t_jgxw_check_action").fetchall()
    conn.close()
    assert len(landed) == len(valid) == len({r[0] for r in landed})
    assert {r[2] for r in landed} == {"i"}
    assert sorted(r[3] for r in landed) == ["1"] * (len(valid) - 1) + ["2"]
    mapping_rejects = await store.reports.list_quarantine("open", "mapping", limit=100)
    assert len(mapping_rejects) == ROWS - len(valid)
    target_rejects = await store.reports.list_quarantine("open", "target", limit=100)
    assert [(e["record_key"], e["reasons"][0]["code"], e["reasons"][0]["message"]) for e in target_rejects] == [
        (refused, "NATIONAL", "检查对象不存在")]
    stored = await receipts(store)
    assert sum(r["accepted"] for r in stored) == len(valid) - 1
    assert all(orjson.loads(r["body"])["receipt"]["cdBatch"].startswith("20") for r in stored)

