"""Helpers of the publication-rule tests: several sandbox platforms, a gateway config routing to them, the CLI.

Every target is a real sandbox on 127.0.0.1 with its own SQLite file; the config is a TOML file read by the
real loader, with the store at the test's ``store_url`` (SQLite or PostgreSQL), so the CLI sees the same store.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import sqlite3
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from gateway import cli
from gateway.config import Config, load_config
from gateway.daemon import Gateway
from gateway.sandbox.server import Sandbox, SandboxConfig
from gateway.store import Store
from gateway.testing.rows import make_uscc
from tests.conftest import TOKEN
from tests.support.helpers import DEPARTMENT_CODE, MAPPINGS, SOURCE, read_rows, to_record

TABLE = "XZCF"
AUTHORITY = ("苏州市应急管理局", make_uscc("11", "320500", "MB1C1783"))

_HEAD = """\
[gateway]
instance = "rules"
department_code = "{department}"
department_name = "苏州市市场监督管理局"

[store]
url = "{store_url}"

[daemon]
log_format = "text"
log_level = "error"
adapter_timeout_s = 10
shutdown_grace_s = 5
idle_check_s = 0.05
map_workers = 0

[sources.{source}]
type = "sql"
url = "sqlite:///{db}"
table = "xzcf"
key_columns = ["id"]
update_column = "gxsj"
mapping = "{mappings}/department-penalty.toml"
poll_interval_s = 1
batch_size = 100
"""

_TARGET = """
[targets.{name}]
type = "credit_platform"
url = "{url}"
token_file = "sandbox.token"
timeout_s = 5
datasets = {{ penalty = "{mappings}/platform-2019-penalty.toml" }}
batch_size = 25
external = false
public = {public}
changes_only = {changes_only}

[targets.{name}.retry]
initial_s = 0.05
max_s = 0.2
jitter_s = 0.02
max_attempts = 30
"""


def write_rules_config(directory: Path, store_url: str, db: Path, sandboxes: dict[str, Sandbox], *,
                       public: Sequence[str] = (), changes_only: Sequence[str] = (), extra: str = "",
                       name: str = "credit-gateway.toml") -> Config:
    """A config reading penalties from ``db`` and sending them to every sandbox (internal routes, except the
    ``public`` ones; ``changes_only`` ones no longer get new penalty records)."""
    (directory / "sandbox.token").write_text(TOKEN + "\n", encoding="utf-8")
    text = _HEAD.format(department=DEPARTMENT_CODE, store_url=store_url, source=SOURCE, db=db.as_posix(),
                        mappings=MAPPINGS.as_posix())
    for target, sandbox in sandboxes.items():
        text += _TARGET.format(name=target, url=sandbox.upload_url, mappings=MAPPINGS.as_posix(),
                               public=str(target in public).lower(),
                               changes_only='["penalty"]' if target in changes_only else "[]")
    path = directory / name
    path.write_text(text + extra, encoding="utf-8")
    return load_config(path)


@contextlib.asynccontextmanager
async def platforms(tmp_path: Path, names: Sequence[str]) -> AsyncIterator[dict[str, Sandbox]]:
    """One sandbox platform per name, each with its own database."""
    async with contextlib.AsyncExitStack() as stack:
        yield {name: await stack.enter_async_context(
            Sandbox(SandboxConfig(token=TOKEN, db_path=str(tmp_path / f"platform-{name}.db"), platform_name=name)))
            for name in names}


async def deliver(config: Config, store: Store, today: dt.date | None = None) -> None:
    """Poll the department table and deliver until nothing is left (``today`` injected when given)."""
    gw = Gateway(config, store, today=lambda: today) if today else Gateway(config, store)
    async with gw:
        assert await gw.run_until_idle(timeout_s=60)


def pick_row(db: Path) -> dict[str, Any]:
    """A penalty row in force (zt 0), decided by 苏州市应急管理局: its USCC is not all digits, so logs and the
    CLI (which mask 18-digit ID numbers wherever they appear) print the record key as it is."""
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        row_id = conn.execute("SELECT id FROM xzcf WHERE zt = '0' ORDER BY id LIMIT 1").fetchone()[0]
        conn.execute("UPDATE xzcf SET cfjg = ?, cfjgdm = ? WHERE id = ?", (AUTHORITY[0], AUTHORITY[1], row_id))
    return read_rows(db, ids=[row_id])[0]


def set_decision(db: Path, row_id: int, decision: dt.date, domain: str | None = None) -> dict[str, Any]:
    """Date a row's decision (its validity and publicity end follow it), optionally set its 领域; the row as now."""
    day = decision.strftime("%Y/%m/%d")
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("UPDATE xzcf SET jdrq = ?, cfyxq = ?, gsjzq = '' WHERE id = ?", (day, day, row_id))
        if domain is not None:
            conn.execute("UPDATE xzcf SET ly = ? WHERE id = ?", (domain, row_id))
    return read_rows(db, ids=[row_id])[0]


def key_of(row: dict[str, Any]) -> str:
    return to_record(row).key


async def run_cli(capsys: pytest.CaptureFixture[str], config: Config, *argv: str) -> tuple[int, str]:
    """``credit-gateway -c CONFIG argv…`` in a thread of its own (the CLI runs its own event loop)."""
    capsys.readouterr()
    code = await asyncio.to_thread(cli.main, ["-c", str(config.path), *argv])
    return code, capsys.readouterr().out
