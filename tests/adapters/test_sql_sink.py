"""The SQL sink on real department databases (a SQLite file, and a database on the test PostgreSQL and MariaDB servers):
upserts and deletes by key columns, per-record rejections with the database's message, idempotent replay,
on_withdraw modes, reading the table back for drift checks, and its settings."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from adapters.sql.sink import SqlSink
from gateway.adapter import AdapterContext, Holdings, OutgoingBatch, Receipt, TargetRecord
from gateway.errors import PermanentError, RetryableError
from tests.support.list_helpers import async_url, run_sql

FIELDS = ("case_no", "authority", "subject_name", "amount", "decided", "note", "version")
DDL = """CREATE TABLE dept_cases (
    id           INTEGER,
    case_no      VARCHAR(32) NOT NULL,
    authority    VARCHAR(18) NOT NULL,
    subject_name VARCHAR(100) NOT NULL,
    amount       NUMERIC(18, 6),
    decided      DATE,
    note         TEXT,
    version      INTEGER,
    status       VARCHAR(8),
    handled_by   VARCHAR(20),
    CHECK (amount IS NULL OR amount >= 0),
    PRIMARY KEY (case_no, authority)
)"""
_counter = itertools.count()


@pytest.fixture
def dept_url(department_url: str) -> str:
    return department_url


def build(dept_url: str, tmp_path: Path, **table: Any) -> SqlSink:
    raw = {"url": dept_url, "tables": {"penalty": {"table": "dept_cases", "key_columns": ["case_no", "authority"],
                                                   **table}}}
    ctx = AdapterContext("dept", "targets.dept", tmp_path, "X", "Y", fields={"penalty": FIELDS})
    sink, problems = SqlSink.from_settings(raw, ctx)
    assert problems == [] and sink is not None
    return sink


@pytest.fixture
async def sink(dept_url: str, tmp_path: Path) -> AsyncIterator[SqlSink]:
    await run_sql(dept_url, [DDL])
    async with build(dept_url, tmp_path) as s:
        yield s


def rec(n: int, version: int = 1, op: str = "upsert", **fields: Any) -> TargetRecord:
    base = {"case_no": f"C-{n}", "authority": "11320500014117422K", "subject_name": f"主体{n}", "amount": "1.500000",
            "decided": "2026-03-02", "note": f"备注{n}", "version": version}
    data = {k: v for k, v in {**base, **fields}.items() if v is not None}
    return TargetRecord(f"C-{n}|11320500014117422K", version, op, data)


async def send(sink: SqlSink, *records: TargetRecord, batch_id: str = "") -> Receipt:
    batch_id = batch_id or f"b-{next(_counter)}"
    body = sink.encode(batch_id, "penalty", "ignored", list(records))
    return await sink.deliver(OutgoingBatch(batch_id, "penalty", body, len(records)))


async def table_rows(url: str) -> dict[str, dict[str, Any]]:
    engine = create_async_engine(async_url(url))
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(text("SELECT * FROM dept_cases ORDER BY case_no"))).mappings().all()
    finally:
        await engine.dispose()
    return {r["case_no"]: dict(r) for r in rows}


def statuses(receipt: Receipt) -> dict[str, tuple[str, str, str]]:
    return {r.key.split("|")[0]: (r.status, r.code, r.message) for r in receipt.results}


class TestWriting:
    async def test_rows_land_and_refused_rows_carry_the_database_message(self, sink: SqlSink, dept_url: str) -> None:
        """One transaction per batch, a savepoint per record: refused rows are rejected, the rest land."""
        receipt = await send(sink, rec(1), rec(2, amount="-3"), rec(3, subject_name=None), rec(4, decided="2026-13-45"),
                             rec(5))
        found = statuses(receipt)
        assert found["C-1"][0] == found["C-5"][0] == "accepted"
        assert found["C-2"][:2] == ("rejected", "DB")
        assert "check" in found["C-2"][2].lower() or "constraint" in found["C-2"][2].lower()  # MariaDB: CONSTRAINT
        assert found["C-3"][:2] == ("rejected", "DB") and "subject_name" in found["C-3"][2]
        assert found["C-4"][:2] == ("rejected", "VALUE") and "decided" in found["C-4"][2]
        rows = await table_rows(dept_url)
        assert set(rows) == {"C-1", "C-5"}
        assert str(rows["C-1"]["decided"]) == "2026-03-02" and float(rows["C-1"]["amount"]) == 1.5

    async def test_control_characters_are_refused_by_column_and_position(self, sink: SqlSink, dept_url: str) -> None:
        """A value with NUL or ESC is not written (PostgreSQL cannot hold NUL): rejected naming the column and
        where; TAB and line breaks in a note are kept (issue 17, 4)."""
        receipt = await send(sink, rec(1, subject_name="主体\x00一"), rec(2, note="\x1b[2J"),
                             rec(3, note="一\t二\r\n三"))
        found = statuses(receipt)
        assert found["C-1"][:2] == ("rejected", "VALUE") and "subject_name: control character U+0000 at position 3" \
            in found["C-1"][2]
        assert found["C-2"][:2] == ("rejected", "VALUE") and "note: control character U+001B at position 1" \
            in found["C-2"][2]
        rows = await table_rows(dept_url)
        assert set(rows) == {"C-3"} and rows["C-3"]["note"] == "一\t二\r\n三"

    async def test_honest_local_receipt(self, sink: SqlSink) -> None:
        receipt = await send(sink, rec(1), rec(2, amount="-1"), batch_id="b-receipt")
        body = receipt.raw["receipt"]
        assert (receipt.receipt_id, body["batchId"], body["local"], body["signed"]) == ("sql-b-receipt", "b-receipt",
                                                                                      True, False)
        sent = sink.encode("b-receipt", "penalty", "", [rec(1), rec(2, amount="-1")])
        assert body["bodySha256"] == hashlib.sha256(sent).hexdigest()
        assert (body["accepted"], body["rejected"], body["table"]) == (1, 1, "dept_cases")
        assert "password" not in body["database"]

    async def test_replay_is_idempotent(self, sink: SqlSink, dept_url: str) -> None:
        """The same batch twice (a retry after a lost answer) leaves the same rows."""
        batch = [rec(1), rec(2, version=3), rec(1, version=2, note="second state")]
        first = await send(sink, *batch, batch_id="b-same")
        once = await table_rows(dept_url)
        second = await send(sink, *batch, batch_id="b-same")
        assert await table_rows(dept_url) == once
        assert [r.status for r in first.results] == [r.status for r in second.results] == ["accepted"] * 3
        assert once["C-1"]["note"] == "second state" and once["C-1"]["version"] == 2

    async def test_a_field_the_new_version_lacks_becomes_null(self, sink: SqlSink, dept_url: str) -> None:
        await send(sink, rec(1))
        await run_sql(dept_url, ["UPDATE dept_cases SET handled_by = 'clerk'"])  # the department's own column
        await send(sink, rec(1, version=2, note=None, amount=None))
        row = (await table_rows(dept_url))["C-1"]
        assert (row["note"], row["amount"], row["version"]) == (None, None, 2)
        assert row["handled_by"] == "clerk"  # columns outside the mapping are left alone

    async def test_withdraw_deletes(self, sink: SqlSink, dept_url: str) -> None:
        await send(sink, rec(1), rec(2))
        receipt = await send(sink, rec(1, version=2, op="withdraw"), rec(9, op="withdraw"))
        assert [r.status for r in receipt.results] == ["accepted", "accepted"]  # absent already: nothing to do
        assert set(await table_rows(dept_url)) == {"C-2"}

    async def test_withdraw_marks(self, dept_url: str, tmp_path: Path) -> None:
        await run_sql(dept_url, [DDL])
        async with build(dept_url, tmp_path, on_withdraw="mark", status_column="status", active_value="listed",
                         withdrawn_value="removed") as sink:
            await send(sink, rec(1), rec(2))
            await send(sink, rec(1, version=2, op="withdraw"))
            rows = await table_rows(dept_url)
            assert (rows["C-1"]["status"], rows["C-2"]["status"], rows["C-1"]["version"]) == ("removed", "listed", 2)
            await send(sink, rec(1, version=3))
            assert (await table_rows(dept_url))["C-1"]["status"] == "listed"
            [(_, digest)] = await sink.expected("penalty", [rec(2, op="withdraw")])
            assert digest is not None  # a marked row is still held, with its status

    async def test_missing_table_and_columns_are_named(self, dept_url: str, tmp_path: Path) -> None:
        async with build(dept_url, tmp_path) as sink:
            with pytest.raises(PermanentError, match="dept_cases not found"):
                await send(sink, rec(1))
        await run_sql(dept_url, ["CREATE TABLE dept_cases (case_no VARCHAR(32), authority VARCHAR(18))"])
        async with build(dept_url, tmp_path) as sink:
            with pytest.raises(PermanentError, match=r"lacks column.*subject_name"):
                await send(sink, rec(1))

    async def test_unreachable_database_is_retried(self, tmp_path: Path) -> None:
        async with build("postgresql://gateway@127.0.0.1:1/department", tmp_path) as sink:  # nothing listens
            with pytest.raises(RetryableError):
                await send(sink, rec(1))


class TestReadBack:
    async def test_expected_equals_held_until_someone_edits(self, sink: SqlSink, dept_url: str) -> None:
        """Digests computed from the records and read back from the table agree, whatever the column types."""
        assert isinstance(sink, Holdings)
        records = [rec(1), rec(2, amount="100", note=None), rec(3, authority="91320500MA1XXXXX0X")]
        await send(sink, *records)
        expected = dict(await sink.expected("penalty", records))
        assert dict(await sink.held("penalty", {})) == expected
        scoped = await sink.held("penalty", {"authority": "11320500014117422K"})
        assert len(scoped) == 2 and set(scoped) < set(expected)
        await run_sql(dept_url, ["UPDATE dept_cases SET note = 'edited' WHERE case_no = 'C-1'",
                                 "INSERT INTO dept_cases (case_no, authority, subject_name) VALUES ('C-X', 'A', 'x')"])
        held = await sink.held("penalty", {})
        ident = orjson.dumps(["C-1", "11320500014117422K"]).decode()
        assert held[ident] != expected[ident] and len(held) == 4
        unknown = sorted(set(held) - set(expected))
        assert await sink.discard("penalty", unknown) == 1
        assert set(await table_rows(dept_url)) == {"C-1", "C-2", "C-3"}
        [(_, gone)] = await sink.expected("penalty", [rec(1, op="withdraw")])
        assert gone is None  # on_withdraw = delete: the row should not be there at all

    async def test_a_version_the_table_cannot_take_still_names_its_row(self, sink: SqlSink, dept_url: str) -> None:
        """A later version with a value its column cannot take is refused, and the table keeps the earlier row.
        Read back, that row is the key's (changed), not a row the gateway never sent: reconciliation must not
        discard it."""
        await send(sink, rec(1))
        newer = rec(1, version=2, decided="2026-13-45")
        assert statuses(await send(sink, newer))["C-1"][:2] == ("rejected", "VALUE")
        [(identity, digest)] = await sink.expected("penalty", [newer])
        held = await sink.held("penalty", {})
        assert identity in held and held[identity] != digest
        assert set(held) - {identity} == set()  # nothing here is unknown, so nothing is discarded


class TestSettings:
    @pytest.mark.parametrize(("table", "message"), [
        ({}, "required: the table"),
        ({"table": "t", "key_columns": ["nope"]}, "'nope' is not a field"),
        ({"table": "t", "key_columns": ["case_no"], "on_withdraw": "mark"}, 'required with on_withdraw = "mark"'),
        ({"table": "t; drop", "key_columns": ["case_no"]}, "not a plain name"),
        ({"table": "t", "key_columns": ["case_no"], "on_withdraw": "erase"}, "expected one of delete, mark"),
        ({"table": "t", "key_columns": ["case_no"], "colums": []}, "unknown setting"),
    ])
    def test_problems_name_the_setting(self, tmp_path: Path, table: dict[str, Any], message: str) -> None:
        raw = {"url": "sqlite:///d.db", "tables": {"penalty": table} if table else {}}
        ctx = AdapterContext("dept", "targets.dept", tmp_path, "X", "Y", fields={"penalty": FIELDS})
        sink, problems = SqlSink.from_settings(raw, ctx)
        assert sink is None
        assert any(message in str(p) and str(p).startswith("targets.dept.tables.penalty") for p in problems), problems
