"""Helpers shared by the store, SQL source and delivery tests: sample rows, records, configs, store peeks.

Everything here builds real things: rows come from a sample department database made by
:mod:`gateway.testing.department_db`, records from the repository's own inbound mapping, configs are TOML files read
by the real loader. The store is only read here (plain SELECTs on its tables), never written behind its back.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import select

from gateway.clock import china_today
from gateway.mapping import InboundMapping, load_mapping
from gateway.records import Record
from gateway.store import Store
from gateway.store import schema as s
from gateway.store.outbox import EncodedBatch
from gateway.stored import LeasedRecord, Reject
from gateway.testing.department_db import SampleResult, SampleSpec, create_department_db

ROOT = Path(__file__).resolve().parents[2]
MAPPINGS = ROOT / "mappings"
PENALTY_MAPPING = MAPPINGS / "department-penalty.toml"
LICENSE_MAPPING = MAPPINGS / "department-license.toml"
DEPARTMENT_CODE = "11320500014117422K"
SOURCE = "department_penalties"


# ---------------------------------------------------------------- sample department data


def make_department_db(directory: Path, *, penalties: int = 60, licences: int = 0, invalid_fraction: float = 0.0,
                       natural: float = 0.15, seed: int = 2026, name: str = "department.db") -> SampleResult:
    """A fresh sample department database (SQLite) under ``directory``."""
    spec = SampleSpec(licences=licences, penalties=penalties, invalid_fraction=invalid_fraction, seed=seed,
                      natural_person_fraction=natural)
    return create_department_db(directory / name, spec)


@contextlib.contextmanager
def _opened(path: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    try:
        yield conn
    finally:
        conn.close()


def read_rows(path: Path, table: str = "xzcf", ids: Sequence[int] | None = None) -> list[dict[str, Any]]:
    """Rows of a sample table as dicts, in id order (all, or the given ids)."""
    with _opened(path) as conn:
        found = [dict(r) for r in conn.execute(f"SELECT * FROM {table} ORDER BY id")]
    return found if ids is None else [r for r in found if r["id"] in set(ids)]


def penalty_mapping() -> InboundMapping:
    mapping = load_mapping(PENALTY_MAPPING)
    assert isinstance(mapping, InboundMapping)
    return mapping


def to_record(row: dict[str, Any], source: str = SOURCE) -> Record:
    """A department row mapped to a canonical record by the real mapping (it must be valid)."""
    mapped = penalty_mapping().map_row(row, china_today(), source, str(row["id"]))
    assert mapped.record is not None, mapped.problems
    return mapped.record


def to_reject(row: dict[str, Any], source: str = SOURCE) -> Reject:
    """A department row that fails mapping, as the intake would quarantine it."""
    mapped = penalty_mapping().map_row(row, china_today(), source, str(row["id"]))
    assert mapped.record is None, f"row {row['id']} unexpectedly valid"
    raw = {k: v for k, v in row.items()}
    return Reject(source, str(row["id"]), "penalty", mapped.key, mapped.problems, raw)


def edited(row: dict[str, Any], note: str = "（更正）") -> dict[str, Any]:
    """The row with its 处罚内容 changed, as an edit at the department would."""
    return {**row, "cfnr": row["cfnr"] + note}


# ---------------------------------------------------------------- encoders for lease_batch


def json_encoder(fail_keys: Sequence[str] = ()) -> Callable[[Sequence[LeasedRecord]], EncodedBatch]:
    """An encoder like a sink's: one JSON body; records whose key is in ``fail_keys`` cannot be encoded."""

    def encode(leased: Sequence[LeasedRecord]) -> EncodedBatch:
        batch_id = f"b-{uuid.uuid4().hex}"
        included = [r for r in leased if r.record_key not in fail_keys]
        failed = [(r, f"cannot encode {r.record_key}") for r in leased if r.record_key in fail_keys]
        body = orjson.dumps({"batchId": batch_id, "records": [
            {"recordKey": r.record_key, "version": r.version, "operation": r.operation, "data": r.payload}
            for r in included]}) if included else b""
        return EncodedBatch(batch_id, body, included, failed)

    return encode


# ---------------------------------------------------------------- reading the store


async def select_rows(store: Store, table: Any, *where: Any, order: Any) -> list[dict[str, Any]]:
    stmt = select(table)
    for cond in where:
        stmt = stmt.where(cond)
    stmt = stmt.order_by(order)
    async with store.db.engine.connect() as conn:
        return [dict(r._mapping) for r in await conn.execute(stmt)]


async def outbox(store: Store, key: str | None = None, target: str | None = None) -> list[dict[str, Any]]:
    o = s.outbox.c
    conds = [c for c in ((o.record_key == key) if key else None, (o.target == target) if target else None)
             if c is not None]
    return await select_rows(store, s.outbox, *conds, order=o.id)


async def ledger(store: Store) -> dict[str, dict[str, Any]]:
    return {r["record_key"]: r for r in await select_rows(store, s.records, order=s.records.c.id)}


async def batches(store: Store, target: str | None = None) -> list[dict[str, Any]]:
    b = s.batches.c
    rows = await select_rows(store, s.batches, *([b.target == target] if target else []), order=b.created_at)
    return rows


async def attempts(store: Store, batch_id: str | None = None) -> list[dict[str, Any]]:
    a = s.attempts.c
    return await select_rows(store, s.attempts, *([a.batch_id == batch_id] if batch_id else []), order=a.id)


async def receipts(store: Store) -> list[dict[str, Any]]:
    return await select_rows(store, s.receipts, order=s.receipts.c.id)


async def wait_for(condition: Callable[[], Awaitable[bool] | bool], timeout_s: float = 10.0,
                   what: str = "condition") -> None:
    """Wait until ``condition`` holds (re-checked as the loop runs), failing after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if not isinstance(value, bool):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


# ---------------------------------------------------------------- configuration files

CONFIG = """\
[gateway]
instance = "{instance}"
department_code = "{department}"
department_name = "苏州市市场监督管理局"
region_code = "320500"

[store]
url = "sqlite:///spool/gateway.db"

[daemon]
log_format = "text"
log_level = "error"
adapter_timeout_s = {adapter_timeout_s}
shutdown_grace_s = {shutdown_grace_s}
idle_check_s = {idle_check_s}
heartbeat_s = 5

[sources.{source}]
type = "sql"
url = "sqlite:///{db}"
table = "xzcf"
key_columns = ["id"]
update_column = "gxsj"
mapping = "{mappings}/department-penalty.toml"
poll_interval_s = {poll_interval_s}
batch_size = {source_batch_size}

[targets.{target}]
type = "credit_platform"
url = "{url}"
token_file = "sandbox.token"
timeout_s = {timeout_s}
datasets = {{ penalty = "{mappings}/platform-2019-penalty.toml" }}
batch_size = {batch_size}
max_in_flight = {max_in_flight}
personal_ids = "{personal_ids}"
external = {external}

[targets.{target}.retry]
initial_s = {initial_s}
max_s = {max_s}
jitter_s = {jitter_s}
max_attempts = {max_attempts}

[targets.{target}.circuit]
failure_threshold = {failure_threshold}
reset_s = {reset_s}
"""

DEFAULTS: dict[str, Any] = {
    "instance": "test", "department": DEPARTMENT_CODE, "adapter_timeout_s": 10.0, "shutdown_grace_s": 5.0,
    "idle_check_s": 0.05, "source": SOURCE, "poll_interval_s": 1.0, "source_batch_size": 100,
    "target": "platform", "timeout_s": 5.0, "batch_size": 25, "max_in_flight": 2, "personal_ids": "mask",
    "external": "false", "initial_s": 0.05, "max_s": 0.2, "jitter_s": 0.02, "max_attempts": 30,
    "failure_threshold": 100, "reset_s": 0.5,
}


def write_config(directory: Path, *, url: str, db: Path, token: str, name: str = "credit-gateway.toml",
                 **settings: Any) -> Path:
    """Write a gateway config (penalties from ``db`` to the platform at ``url``) and its token file."""
    unknown = set(settings) - set(DEFAULTS)
    assert not unknown, f"unknown config settings {unknown}"
    (directory / "sandbox.token").write_text(token + "\n", encoding="utf-8")
    values = {**DEFAULTS, **settings, "url": url, "db": db.as_posix(), "mappings": MAPPINGS.as_posix()}
    path = directory / name
    path.write_text(CONFIG.format(**values), encoding="utf-8")
    return path


# ---------------------------------------------------------------- making store writes fail

_FAIL_SQL = {
    "sqlite": ["CREATE TRIGGER cg_test_fail BEFORE INSERT ON cg_intake "
               "BEGIN SELECT RAISE(ABORT, 'simulated store failure'); END"],
    "postgresql": ["CREATE FUNCTION cg_test_fail() RETURNS trigger LANGUAGE plpgsql AS "
                   "$$ BEGIN RAISE EXCEPTION 'simulated store failure'; END $$",
                   "CREATE TRIGGER cg_test_fail BEFORE INSERT ON cg_intake "
                   "FOR EACH ROW EXECUTE FUNCTION cg_test_fail()"],
}
_HEAL_SQL = {
    "sqlite": ["DROP TRIGGER cg_test_fail"],
    "postgresql": ["DROP TRIGGER cg_test_fail ON cg_intake", "DROP FUNCTION cg_test_fail()"],
}


async def _run_sql(store: Store, statements: Sequence[str]) -> None:
    from sqlalchemy import text

    async with store.db.engine.begin() as conn:
        for sql in statements:
            await conn.execute(text(sql))


async def break_intake_writes(store: Store) -> None:
    """From now on every intake commit fails inside its transaction (a database-side trigger)."""
    await _run_sql(store, _FAIL_SQL[store.db.dialect])


async def heal_intake_writes(store: Store) -> None:
    await _run_sql(store, _HEAL_SQL[store.db.dialect])


async def failed_batch(store: Store, directory: Path, error: str, dead: bool, penalties: int = 3) -> int:
    """Penalty rows taken in for target ``province``, leased as one batch and failed once (``dead``: given up);
    the number of records in it."""
    rows = read_rows(make_department_db(directory, penalties=penalties).path)
    await store.intake.commit_intake(SOURCE, [to_record(r) for r in rows], [], [rows[-1]["gxsj"], rows[-1]["id"]],
                                     {"penalty": ["province"]}, len(rows))
    batch = await store.outbox.lease_batch("province", "penalty", 100, json_encoder())
    assert batch is not None
    await store.outbox.fail_attempt(batch, error, time.time() + (0 if dead else 60), dead, 1.0)
    return len(rows)
