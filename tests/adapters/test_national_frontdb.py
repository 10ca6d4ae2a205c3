"""Tests for adapters/national/frontdb.py (the 前置库 sink), the national side simulated by gateway/sandbox/national.py.

On a real SQLite file and a real PostgreSQL database made from the shipped DDL (mappings/national/ddl): envelope
columns, cd_batch numbering across batches, restarts and days, i/u/d order, an idempotent retry, and the national
side's answers read back as receipts (processed) and rejections with the national reason.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from adapters.national.ddl import write_ddl
from adapters.national.frontdb import NationalFrontDbSink
from gateway.adapter import SINK_GROUP, AdapterContext, OutgoingBatch, TargetRecord, load_adapter
from gateway.clock import CHINA
from gateway.errors import AwaitingAnswer
from gateway.mapping import InboundMapping, OutboundMapping, load_mapping
from gateway.records import Operation
from gateway.sandbox.national import FrontDbFaults, NationalFrontDb
from gateway.testing.national import supervision_rows
from tests.support.helpers import MAPPINGS

TODAY = dt.date(2025, 6, 1)
DDL = MAPPINGS / "national" / "ddl"
TABLE = "tr_t_jgxw_check_action"


def outbound() -> OutboundMapping:
    mapping = load_mapping(MAPPINGS / "national-inspection.toml")
    assert isinstance(mapping, OutboundMapping)
    return mapping


def inspections(count: int, operation: str = "upsert", version: int = 1) -> list[TargetRecord]:
    """Valid sample inspections as the national mapping makes them."""
    inbound, out = load_mapping(MAPPINGS / "department-inspection.toml"), outbound()
    assert isinstance(inbound, InboundMapping)
    records = []
    for row in supervision_rows("inspection", count, broken_every=0, day=dt.date(2025, 3, 3)):
        record = inbound.map_row(row, TODAY).record
        assert record is not None
        fields = out.map_record(record)
        records.append(TargetRecord(record.key, version, operation, fields))
    return records


async def create_tables(url: str) -> None:
    engine = create_async_engine(url.replace("sqlite://", "sqlite+aiosqlite://").replace(
        "postgresql://", "postgresql+asyncpg://"))
    async with engine.begin() as conn:
        for path in sorted(DDL.glob("tr_t_*.sql")):
            for statement in path.read_text(encoding="utf-8").split(";"):
                if statement.strip():
                    await conn.execute(text(statement))
    await engine.dispose()


async def rows(url: str, sql: str) -> list[Any]:
    engine = create_async_engine(url.replace("sqlite://", "sqlite+aiosqlite://").replace(
        "postgresql://", "postgresql+asyncpg://"))
    async with engine.connect() as conn:
        found = list((await conn.execute(text(sql))).all())
    await engine.dispose()
    return found


@pytest.fixture
async def front(store_url: str) -> AsyncIterator[str]:
    """A fresh front-end database (SQLite file or PostgreSQL database) with the shipped tables."""
    await create_tables(store_url)
    yield store_url


@pytest.fixture
async def national(front: str) -> AsyncIterator[NationalFrontDb]:
    side = NationalFrontDb(front, today=TODAY)
    yield side
    await side.aclose()


def build(url: str, tmp_path: Path) -> NationalFrontDbSink:
    factory, problem = load_adapter(SINK_GROUP, "national_frontdb", "targets.national")
    assert factory is not None and problem is None
    ctx = AdapterContext("national", "targets.national", tmp_path, "11320500014160151X", "苏州市市场监督管理局",
                         fields={"inspection": outbound().target_fields})
    sink, problems = factory.from_settings({"url": url, "region_code": "320000", "poll_s": 5}, ctx)
    assert problems == [] and isinstance(sink, NationalFrontDbSink)
    return sink


def batch(sink: NationalFrontDbSink, batch_id: str, records: list[TargetRecord]) -> OutgoingBatch:
    return OutgoingBatch(batch_id, "inspection", sink.encode(batch_id, "inspection", TABLE, records), len(records))


async def waiting(sink: NationalFrontDbSink, out: OutgoingBatch) -> AwaitingAnswer:
    """Deliver a batch the national side has not processed yet: the answer is 'ask again'."""
    with pytest.raises(AwaitingAnswer) as caught:
        async with sink:
            await sink.deliver(out)
    return caught.value


def at(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(9, 30), CHINA)


class TestEnvelope:
    async def test_rows_carry_the_envelope(self, front: str, tmp_path: Path) -> None:
        """cd_id, cd_time, cd_source (province + department), cd_batch (date + 00001), cd_operation i."""
        sink = build(front, tmp_path)
        sink.now = lambda: at(dt.date(2019, 4, 11))
        records = inspections(3)
        error = await waiting(sink, batch(sink, "b-1", records))
        assert error.retry_after_s == 5 and "3 of 3 rows" in str(error)
        found = await rows(front, f"SELECT cd_id, cd_source, cd_batch, cd_operation, record_unique_identity, cd_time, "
                                  f"check_action_code FROM {TABLE} ORDER BY check_action_code")
        assert len(found) == 3 and len({r[0] for r in found}) == 3
        assert {(r[1], r[2], r[3]) for r in found} == {("32000011320500014160151X", "201904110000" + "1", "i")}
        assert [r[4] for r in found] == sorted(r.key for r in records)
        assert all(str(r[5]).replace("T", " ").startswith("2019-04-11 09:30") for r in found)

    async def test_a_retried_batch_writes_no_second_row(self, front: str, tmp_path: Path) -> None:
        """The same batch delivered again (after a crash, a timeout) keeps its rows and its cd_batch."""
        sink = build(front, tmp_path)
        out = batch(sink, "b-1", inspections(4))
        await waiting(sink, out)
        await waiting(build(front, tmp_path), out)  # a restarted gateway
        found = await rows(front, f"SELECT cd_batch, count(*) FROM {TABLE} GROUP BY cd_batch")
        assert [(r[0][8:], r[1]) for r in found] == [("00001", 4)]


class TestBatchNumbers:
    async def test_sequence_continues_across_restarts_and_restarts_each_day(self, front: str, tmp_path: Path) -> None:
        """2nd and 3rd batch of a day (the 3rd after a restart) get 00002 and 00003; the next day starts at 00001."""
        records = inspections(4)
        numbers = []
        for n, day in enumerate([dt.date(2019, 4, 11)] * 3 + [dt.date(2019, 4, 12)]):
            sink = build(front, tmp_path)  # a new sink each time: nothing is remembered in memory
            sink.now = lambda day=day: at(day)  # type: ignore[misc]
            await waiting(sink, batch(sink, f"b-{n}", [records[n]]))
            numbers.append((await rows(front, f"SELECT cd_batch FROM {TABLE} WHERE record_unique_identity = "
                                              f"'{records[n].key}'"))[0][0])
        assert numbers == ["2019041100001", "2019041100002", "2019041100003", "2019041200001"]


class TestReadBack:
    async def test_processed_rows_are_the_receipt(self, front: str, national: NationalFrontDb,
                                                  tmp_path: Path) -> None:
        """After the national side processed every row, the batch is answered: every record accepted."""
        sink = build(front, tmp_path)
        out = batch(sink, "b-1", inspections(5))
        await waiting(sink, out)
        drained = await national.drain()
        assert (drained.processed, drained.rejected) == (5, 0)
        async with sink:
            receipt = await sink.deliver(out)
        assert [r.status for r in receipt.results] == ["accepted"] * 5
        assert receipt.raw["receipt"]["cdBatch"].endswith("00001")

    async def test_unprocessed_rows_keep_the_batch_waiting(self, front: str, tmp_path: Path) -> None:
        """A row the national side leaves unprocessed keeps the whole batch open (retryable), nothing duplicated."""
        records = inspections(3)
        side = NationalFrontDb(front, FrontDbFaults(unprocessed={records[1].key}), today=TODAY)
        try:
            sink = build(front, tmp_path)
            out = batch(sink, "b-1", records)
            await waiting(sink, out)
            assert (await side.drain()).left == 1
            error = await waiting(sink, out)
            assert "1 of 3 rows" in str(error)
        finally:
            await side.aclose()
        assert (await rows(front, f"SELECT count(*) FROM {TABLE}"))[0][0] == 3

    async def test_rejected_rows_carry_the_national_reason(self, front: str, tmp_path: Path) -> None:
        """A row the national side rejects is answered 'rejected' with its reason (the engine quarantines it)."""
        records = inspections(3)
        bad = TargetRecord(records[2].key, 1, "upsert", {**records[2].fields, "area_number": "329999"})
        side = NationalFrontDb(front, FrontDbFaults(rejected={records[0].key: "监管对象不存在"}), today=TODAY)
        try:
            sink = build(front, tmp_path)
            out = batch(sink, "b-1", [*records[:2], bad])
            await waiting(sink, out)
            assert (await side.drain()).rejected == 2
        finally:
            await side.aclose()
        async with sink:
            receipt = await sink.deliver(out)
        answers = {r.key: (r.status, r.code, r.message) for r in receipt.results}
        assert answers[records[0].key] == ("rejected", "NATIONAL", "监管对象不存在")
        assert answers[records[1].key] == ("accepted", "", "")
        assert answers[bad.key][:2] == ("rejected", "NATIONAL")
        assert answers[bad.key][2] == "area_number: 329999 is not in the GB/T 2260 table"


class TestOrder:
    async def test_insert_update_delete_in_order_per_key(self, front: str, national: NationalFrontDb,
                                                         tmp_path: Path) -> None:
        """v1 → i, v2 → u, a withdraw → d; the national side takes u and d only after the key's i."""
        first = inspections(1)[0]
        versions = [first, TargetRecord(first.key, 2, "upsert", {**first.fields, "check_result": "其他"}),
                    TargetRecord(first.key, 3, Operation.WITHDRAW.value, first.fields)]
        sink = build(front, tmp_path)
        for n, record in enumerate(versions):
            out = batch(sink, f"b-{n}", [record])
            await waiting(sink, out)
            await national.drain()
            async with sink:
                assert [r.status for r in (await sink.deliver(out)).results] == ["accepted"]
        found = await rows(front, f"SELECT cd_operation, deal_status FROM {TABLE} ORDER BY cd_batch")
        assert [tuple(r) for r in found] == [("i", "1"), ("u", "1"), ("d", "1")]

    async def test_after_a_rejected_insert_the_next_version_inserts_again(self, front: str, tmp_path: Path) -> None:
        """v1 rejected by the national side (it holds nothing of the key): the corrected v2 goes as i, and is taken."""
        first = inspections(1)[0]
        side = NationalFrontDb(front, FrontDbFaults(rejected={first.key: "监管对象不存在"}), today=TODAY)
        try:
            sink = build(front, tmp_path)
            await waiting(sink, batch(sink, "b-1", [first]))
            await side.drain()
            side.faults.rejected.clear()
            await waiting(sink, batch(sink, "b-2", [TargetRecord(first.key, 2, "upsert", first.fields)]))
            assert (await side.drain()).processed == 1
        finally:
            await side.aclose()
        found = await rows(front, f"SELECT cd_operation, deal_status FROM {TABLE} ORDER BY cd_batch")
        assert [tuple(r) for r in found] == [("i", "2"), ("i", "1")]

    async def test_an_update_without_its_insert_is_refused_by_the_national_side(
            self, front: str, national: NationalFrontDb, tmp_path: Path) -> None:
        """The simulator checks the order itself: a 'u' whose key has no processed 'i' is rejected."""
        record = inspections(1)[0]
        sink = build(front, tmp_path)
        await waiting(sink, batch(sink, "b-1", [record]))
        await rows(front, "SELECT 1")
        engine = create_async_engine(front.replace("sqlite://", "sqlite+aiosqlite://").replace(
            "postgresql://", "postgresql+asyncpg://"))
        async with engine.begin() as conn:
            await conn.execute(text(f"UPDATE {TABLE} SET cd_operation = 'u'"))
        await engine.dispose()
        assert (await national.drain()).rejected == 1
        found = await rows(front, f"SELECT deal_message FROM {TABLE}")
        assert found[0][0] == "cd_operation u before the key's processed insert"


class TestShippedDdl:
    def test_the_shipped_ddl_is_what_the_mappings_give(self, tmp_path: Path) -> None:
        """mappings/national/ddl is up to date with the national mappings (python -m adapters.national.ddl)."""
        for path in write_ddl(tmp_path, MAPPINGS):
            assert (DDL / path.name).read_text(encoding="utf-8") == path.read_text(encoding="utf-8"), path.name

    def test_settings_problems_name_their_path(self, tmp_path: Path) -> None:
        factory, _ = load_adapter(SINK_GROUP, "national_frontdb", "targets.national")
        assert factory is not None
        ctx = AdapterContext("national", "targets.national", tmp_path, "", "")
        _sink, problems = factory.from_settings({"url": "sqlite:///x.db", "region_code": "320500"}, ctx)
        assert {p.path for p in problems} == {"targets.national.region_code", "targets.national.department_code"}
