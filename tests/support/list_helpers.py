"""Helpers for the credit-list tests: platform items, a department database with its own list table, configs.

Items carry valid identifiers (USCC check characters, GB 11643 ID numbers) made by the same code the sample
data uses; the department table is created with plain DDL, the way a department would.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from adapters.sql.url import DRIVERS
from gateway.config import Config, load_config
from gateway.domain.identifiers import id_check_char
from gateway.testing.rows import make_uscc
from tests.conftest import TOKEN
from tests.support.helpers import MAPPINGS

DEPT_TABLE_DDL = """
CREATE TABLE dept_credit_list (
    id               INTEGER PRIMARY KEY,
    record_key       VARCHAR(400) NOT NULL UNIQUE,
    list_code        VARCHAR(64)  NOT NULL,
    list_type        VARCHAR(32)  NOT NULL,
    subject_category VARCHAR(32),
    subject_name     VARCHAR(200) NOT NULL,
    uscc             VARCHAR(18),
    id_type          VARCHAR(32),
    id_no            VARCHAR(64),
    reason           TEXT,
    basis            VARCHAR(128),
    deciding_body    VARCHAR(200),
    listing_date     DATE,
    expiry_date      DATE,
    removal_date     DATE,
    removal_reason   TEXT,
    gateway_version  INTEGER,
    status           VARCHAR(16)
)"""


def uscc(n: int) -> str:
    return make_uscc("91", "320500", f"{n:08d}")


def resident_id(n: int) -> str:
    first17 = f"32050519800101{n:03d}"
    return first17 + id_check_char(first17)


def org_item(n: int, **changes: Any) -> dict[str, Any]:
    """A legal person as the platform lists it (platform field names)."""
    return {"ZTLB": "法人及非法人组织", "ZTMC": f"苏州测试企业{n}有限公司", "TYSHXYDM": uscc(n), "FDDBR": f"法人{n}",
            "LRSY": f"事由{n}", "RDWH": f"苏信认〔2026〕{n}号", "RDDW": "苏州市发展和改革委员会", "RDRQ": "2026-01-15",
            "YXQZ": "2027-01-14", **changes}


def person_item(n: int, **changes: Any) -> dict[str, Any]:
    """A natural person as the platform lists it."""
    return {"ZTLB": "自然人", "ZTMC": f"张{n}", "ZJLX": "身份证", "ZJHM": resident_id(n), "LRSY": f"事由{n}",
            "RDWH": f"苏信认〔2026〕{100 + n}号", "RDDW": "苏州市中级人民法院", "RDRQ": "2026-02-01", **changes}


def make_dept_db(path: Path) -> Path:
    conn = sqlite3.connect(path)
    conn.execute(DEPT_TABLE_DDL)
    conn.commit()
    conn.close()
    return path


def dept_rows(path: Path) -> dict[str, dict[str, Any]]:
    """record_key → row of the department's list table."""
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    try:
        return {r["record_key"]: dict(r) for r in conn.execute("SELECT * FROM dept_credit_list")}
    finally:
        conn.close()


def dept_sql(path: Path, *statements: str | tuple[str, Sequence[Any]]) -> None:
    """Change the department's table behind the gateway's back."""
    conn = sqlite3.connect(path)
    for st in statements:
        sql, params = (st, ()) if isinstance(st, str) else st
        conn.execute(sql, params)
    conn.commit()
    conn.close()


def async_url(url: str) -> str:
    """A test database's URL with the async driver the SQL adapters use (utf8mb4 on MariaDB)."""
    parsed = make_url(url)
    if parsed.drivername in ("mysql", "mariadb"):
        parsed = parsed.update_query_dict({"charset": "utf8mb4"})
    return parsed.set(drivername=DRIVERS.get(parsed.drivername, parsed.drivername)).render_as_string(False)


async def run_sql(url: str, statements: Sequence[str]) -> None:
    """DDL on a department database given by URL (SQLite, PostgreSQL or MariaDB)."""
    engine = create_async_engine(async_url(url))
    try:
        async with engine.begin() as conn:
            for sql in statements:
                await conn.execute(text(sql))
    finally:
        await engine.dispose()


LIST_CONFIG = """\
[gateway]
instance = "lists-test"
department_code = "11320500014117422K"
department_name = "苏州市市场监督管理局"

[store]
url = "{store_url}"

[daemon]
log_format = "text"
log_level = "error"
adapter_timeout_s = 10
idle_check_s = 0.05
map_workers = 0

[lists]
reconcile_interval_s = 0

[sources.platform_lists]
type = "platform_lists"
url = "{url}/api/v1"
token_file = "sandbox.token"
mapping = "{mappings}/platform-credit_list.toml"
batch_size = {batch_size}
{source_extra}

[targets.department]
type = "sql"
url = "sqlite:///{dept}"
datasets = {{ credit_list = "{mappings}/department-credit_list.toml" }}
batch_size = 50
personal_ids = "full"
external = false

[targets.department.retry]
initial_s = 0.05
max_s = 0.2
jitter_s = 0.01

[targets.department.tables.credit_list]
table = "dept_credit_list"
key_columns = ["record_key"]
{table_extra}
"""


def list_config(directory: Path, *, url: str, store_url: str, dept: Path, batch_size: int = 100,
                source_extra: str = "", table_extra: str = "") -> Config:
    (directory / "sandbox.token").write_text(TOKEN + "\n", encoding="utf-8")
    path = directory / "credit-gateway.toml"
    path.write_text(LIST_CONFIG.format(store_url=store_url, url=url, mappings=MAPPINGS.as_posix(), dept=dept.as_posix(),
                                       batch_size=batch_size, source_extra=source_extra, table_extra=table_extra),
                    encoding="utf-8")
    return load_config(path)
