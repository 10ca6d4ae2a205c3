"""The durable store on a real SQLite file and a real PostgreSQL database: intake, leasing, answers, replay."""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
import time
import zlib
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
import zstandard
from sqlalchemy import event, inspect, select, text, update
from sqlalchemy.exc import SQLAlchemyError

from gateway.errors import StoreError
from gateway.store import Store, open_store
from gateway.store import schema as s
from gateway.store.outbox import Batch, DeliveryResult, EncodedBatch, LeaseLost, Outcome
from gateway.stored import RAW_BODY, LeasedRecord, Reject
from gateway.testing.department_db import SampleResult, apply_changes
from tests.support.helpers import (
    SOURCE,
    attempts,
    batches,
    break_intake_writes,
    edited,
    heal_intake_writes,
    json_encoder,
    ledger,
    make_department_db,
    outbox,
    read_rows,
    to_record,
    to_reject,
)

ROUTES = {"penalty": ["province", "national"]}
ONE = {"penalty": ["province"]}


@pytest.fixture(scope="module")
def sample_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("department")


@pytest.fixture(scope="module")
def sample(sample_dir: Path) -> SampleResult:
    """A department database with some broken rows (module-wide: tests only read it)."""
    return make_department_db(sample_dir, penalties=60, invalid_fraction=0.25, natural=0.3)


@pytest.fixture(scope="module")
def valid_rows(sample: SampleResult) -> list[dict[str, Any]]:
    return read_rows(sample.path, "xzcf", sorted(sample.valid_ids("xzcf") - set(sample.invalid["xzcf"])))


@pytest.fixture(scope="module")
def invalid_rows(sample: SampleResult) -> list[dict[str, Any]]:
    broken = {i for i, kind in sample.invalid["xzcf"].items() if kind != "future_date"}
    return read_rows(sample.path, "xzcf", sorted(broken))


def cursor_of(rows: Sequence[dict[str, Any]]) -> list[Any]:
    """The cursor the SQL source would report after these rows: [gxsj, id] of the last one."""
    return [rows[-1]["gxsj"], rows[-1]["id"]]


async def intake(store: Store, rows: Sequence[dict[str, Any]], routes: Any = ROUTES,
                 rejects: Sequence[Reject] = ()) -> Any:
    records = [to_record(r) for r in rows]
    return await store.intake.commit_intake(SOURCE, records, rejects, cursor_of(rows) if rows else None, routes,
                                     len(rows) + len(rejects))


def states(rows: Sequence[dict[str, Any]]) -> Counter[tuple[str, int, str]]:
    return Counter((r["target"], r["version"], r["state"]) for r in rows)


async def lease(store: Store, limit: int = 100, target: str = "province", encoder: Any = None) -> Batch | None:
    return await store.outbox.lease_batch(target, "penalty", limit, encoder or json_encoder())


async def leased_keys(store: Store, batch: Batch) -> list[tuple[str, int]]:
    return [(r["record_key"], r["version"]) for r in await outbox(store) if r["batch_id"] == batch.id]


class TestMigrate:
    async def test_opening_twice_keeps_schema_and_data(self, store_url: str) -> None:
        """Opening the same store again migrates nothing away: one schema_version row, the data stays."""
        first = await open_store(store_url)
        try:
            await first.intake.commit_intake(SOURCE, [], [], ["2025-01-01 00:00:00.000000", 7], ROUTES, 0)
            second = await open_store(store_url)
            try:
                assert await second.migrate() == s.SCHEMA_VERSION
                async with second.db.engine.connect() as conn:
                    meta = (await conn.execute(select(s.meta.c.name, s.meta.c.value))).all()
                assert [tuple(m) for m in meta] == [("schema_version", str(s.SCHEMA_VERSION))]
                assert await second.intake.load_cursor(SOURCE) == ["2025-01-01 00:00:00.000000", 7]
            finally:
                await second.aclose()
        finally:
            await first.aclose()

    async def test_newer_schema_is_refused(self, store_url: str) -> None:
        """A store written by a newer gateway (higher schema version) is refused with StoreError."""
        first = await open_store(store_url)
        try:
            async with first.db.tx() as conn:
                await conn.execute(update(s.meta).where(s.meta.c.name == "schema_version")
                                   .values(value=str(s.SCHEMA_VERSION + 1)))
        finally:
            await first.aclose()
        with pytest.raises(StoreError, match="newer"):
            await open_store(store_url)


    async def test_a_store_of_schema_1_is_upgraded(self, store_url: str, valid_rows: list[dict[str, Any]]) -> None:
        """A store written before the outbox was indexed by ledger row gets its record ids and new index; its
        queue keeps working: a batch leases, and a new version supersedes the pending row of its key."""
        first = await open_store(store_url)
        try:
            await first.intake.commit_intake(SOURCE, [to_record(r) for r in valid_rows[:6]], [], None, ONE, 6)
            leased = await first.outbox.lease_batch("province", "penalty", 2, json_encoder())
            assert leased is not None
            async with first.db.tx() as conn:  # the schema 1 shape: no record_id, an index on the keys
                await conn.execute(text("DROP INDEX ix_outbox_record"))
                await conn.execute(text("ALTER TABLE cg_outbox DROP COLUMN record_id"))
                await conn.execute(text("CREATE INDEX ix_outbox_key ON cg_outbox (target, dataset, record_key)"))
                await conn.execute(update(s.meta).where(s.meta.c.name == "schema_version").values(value="1"))
        finally:
            await first.aclose()
        store = await open_store(store_url)
        try:
            async with store.db.engine.connect() as conn:
                assert (await conn.execute(select(s.meta.c.value))).scalar() == str(s.SCHEMA_VERSION)
                indexes = await conn.run_sync(lambda c: {i["name"] for i in inspect(c).get_indexes("cg_outbox")})
            assert "ix_outbox_record" in indexes and "ix_outbox_key" not in indexes
            ids = {key: row["id"] for key, row in (await ledger(store)).items()}
            rows = await outbox(store)
            assert len(rows) == 6 and all(row["record_id"] == ids[row["record_key"]] for row in rows)
            pending = next(row for row in rows if row["state"] == "pending")
            changed = edited(next(r for r in valid_rows if to_record(r).key == pending["record_key"]))
            await store.intake.commit_intake(SOURCE, [to_record(changed)], [], None, ONE, 1)
            states = [(row["version"], row["state"]) for row in await outbox(store, pending["record_key"])]
            assert states == [(1, "superseded"), (2, "pending")]
            again = await store.outbox.lease_batch("province", "penalty", 10, json_encoder())
            assert again is not None and again.record_count == 4  # the other pending rows and the new version
        finally:
            await store.aclose()


class TestOutboxIndex:
    async def test_rows_of_keys_are_found_through_the_record_index(self, store: Store) -> None:
        """SQLite looks an outbox row up by ledger row id (ix_outbox_record), never by scanning the outbox."""
        if store.db.dialect != "sqlite":
            pytest.skip("a SQLite query plan")
        stmt = select(s.outbox.c.id).where(s.outbox_of_keys("penalty", ["a", "b"]), s.outbox.c.target == "t")
        async with store.db.engine.connect() as conn:
            compiled = stmt.compile(conn.sync_engine, compile_kwargs={"literal_binds": True})
            plan = " | ".join(row[-1] for row in await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}"))
        assert "USING INDEX ix_outbox_record" in plan or "USING COVERING INDEX ix_outbox_record" in plan, plan
        assert "SCAN cg_outbox" not in plan, plan


class TestCommitIntake:
    async def test_new_records_get_version_one_and_a_row_per_target(self, store: Store,
                                                                     valid_rows: list[dict[str, Any]]) -> None:
        """New keys enter the ledger at version 1 with one pending outbox row per routed target."""
        rows = valid_rows[:5]
        result = await intake(store, rows)
        assert (result.accepted, result.unchanged, result.quarantined) == (5, 0, 0)
        assert dict(result.enqueued) == {"province": 5, "national": 5}
        keys = {to_record(r).key for r in rows}
        book = await ledger(store)
        assert set(book) == keys
        assert {r["version"] for r in book.values()} == {1}
        assert states(await outbox(store)) == Counter({("province", 1, "pending"): 5, ("national", 1, "pending"): 5})
        assert {(r["target"], r["record_key"]) for r in await outbox(store)} == \
            {(t, k) for t in ("province", "national") for k in keys}

    async def test_same_content_is_unchanged(self, store: Store, valid_rows: list[dict[str, Any]]) -> None:
        """The same content again is counted unchanged and queues nothing."""
        rows = valid_rows[:5]
        await intake(store, rows)
        again = await intake(store, rows)
        assert (again.accepted, again.unchanged, dict(again.enqueued)) == (0, 5, {})
        assert len(await outbox(store)) == 10
        assert {r["version"] for r in (await ledger(store)).values()} == {1}

    async def test_changed_content_supersedes_the_pending_row(self, store: Store,
                                                              valid_rows: list[dict[str, Any]]) -> None:
        """Changed content becomes version 2 and the still-pending version 1 row is superseded."""
        row = valid_rows[0]
        await intake(store, [row])
        result = await intake(store, [edited(row)])
        assert result.accepted == 1
        key = to_record(row).key
        book = await ledger(store)
        assert book[key]["version"] == 2
        assert orjson.loads(book[key]["payload"])["content"].endswith("（更正）")
        assert states(await outbox(store, key)) == Counter({
            ("province", 1, "superseded"): 1, ("national", 1, "superseded"): 1,
            ("province", 2, "pending"): 1, ("national", 2, "pending"): 1})

    async def test_key_twice_in_one_batch_ends_at_last_state(self, store: Store,
                                                             valid_rows: list[dict[str, Any]]) -> None:
        """A key seen twice in one batch keeps its last state, with one pending row per target."""
        row = valid_rows[1]
        key = to_record(row).key
        await store.intake.commit_intake(SOURCE, [to_record(row), to_record(edited(row))], [], cursor_of([row]),
                                         ROUTES, 2)
        book = await ledger(store)
        assert orjson.loads(book[key]["payload"])["content"].endswith("（更正）")
        pending = [r for r in await outbox(store, key) if r["state"] == "pending"]
        assert sorted(r["target"] for r in pending) == ["national", "province"]
        assert {r["version"] for r in pending} == {book[key]["version"]}

    async def test_every_outbox_row_points_at_its_keys_ledger_row(self, store: Store,
                                                                   valid_rows: list[dict[str, Any]]) -> None:
        """The outbox's record_id is its key's ledger row for new keys, changed keys and a new key seen twice in
        one page, written together in one intake; also after the ledger's highest rows were deleted (SQLite then
        gives their ids again) and when the page's keys do not arrive in key order."""
        await intake(store, valid_rows[:6])
        first = await ledger(store)
        top = [first[to_record(r).key]["id"] for r in valid_rows[4:6]]  # the page's last keys got the last ids
        assert top == sorted(row["id"] for row in first.values())[-2:]
        async with store.db.tx() as conn:  # a hole at the top of the id range
            await conn.execute(s.outbox.delete().where(s.outbox.c.record_id.in_(top)))
            await conn.execute(s.records.delete().where(s.records.c.id.in_(top)))
        fresh = list(reversed(valid_rows[6:12]))
        page = [edited(valid_rows[0]), fresh[0], edited(valid_rows[3]), *fresh[1:], edited(fresh[2])]
        result = await intake(store, page)
        assert result.accepted == 9  # 2 changed + 6 new + 1 of them changed again
        ids = {key: row["id"] for key, row in (await ledger(store)).items()}
        assert len(set(ids.values())) == len(ids) == 10
        rows = await outbox(store)
        assert len(rows) == 2 * (4 + 2 + 6)  # the first page's 4 left, the 2 changed and 6 new keys again
        assert all(row["record_id"] == ids[row["record_key"]] for row in rows), \
            [(row["record_key"], row["record_id"], ids[row["record_key"]]) for row in rows]
        versions = {key: row["version"] for key, row in (await ledger(store)).items()}
        pending = Counter((row["record_key"], row["version"]) for row in rows if row["state"] == "pending")
        assert pending == Counter({(key, version): 2 for key, version in versions.items()})

    async def test_rejects_are_quarantined_with_reasons_and_raw_row(
            self, store: Store, invalid_rows: list[dict[str, Any]]) -> None:
        """Rejected rows are quarantined (stage mapping) with every problem and the raw source row."""
        rejects = [to_reject(r) for r in invalid_rows[:4]]
        result = await store.intake.commit_intake(SOURCE, [], rejects, cursor_of(invalid_rows[:4]), ROUTES, 4)
        assert result.quarantined == 4
        entries = {e["source_key"]: e for e in await store.reports.list_quarantine("open", "mapping")}
        assert set(entries) == {rj.source_key for rj in rejects}
        for rj in rejects:
            entry = entries[rj.source_key]
            assert entry["reasons"] == [{"field": p.path, "message": p.message} for p in rj.problems]
            assert entry["reasons"], "a quarantined row names at least one reason"
            assert entry["raw"] == dict(rj.raw)
            assert (entry["source"], entry["dataset"], entry["record_key"]) == (SOURCE, "penalty", rj.record_key)
        assert await outbox(store) == []

    async def test_row_rejected_twice_in_one_batch_keeps_one_entry(
            self, store: Store, invalid_rows: list[dict[str, Any]]) -> None:
        """The same source row rejected twice in one batch leaves one open entry counting both hits."""
        reject = to_reject(invalid_rows[0])
        await store.intake.commit_intake(SOURCE, [], [reject, reject], cursor_of(invalid_rows[:1]), ROUTES, 2)
        entries = await store.reports.list_quarantine("open", "mapping")
        assert [(e["source_key"], e["hits"]) for e in entries] == [(reject.source_key, 2)]

    async def test_accepted_row_resolves_its_mapping_entry(self, store: Store, tmp_path: Path) -> None:
        """A row quarantined earlier resolves its open entry once a fixed version of it is accepted."""
        sample = make_department_db(tmp_path, penalties=40, invalid_fraction=0.2)
        bad = sorted(i for i, kind in sample.invalid["xzcf"].items() if kind in ("bad_uscc", "bad_id"))[:2]
        assert len(bad) == 2
        rows = read_rows(sample.path, "xzcf", bad)
        await store.intake.commit_intake(SOURCE, [], [to_reject(r) for r in rows], cursor_of(rows), ROUTES, 2)
        apply_changes(sample.path, table="xzcf", ids=[bad[0]], change="fix")
        fixed = read_rows(sample.path, "xzcf", [bad[0]])
        await intake(store, fixed)
        still_open = await store.reports.list_quarantine("open", "mapping")
        assert [e["source_key"] for e in still_open] == [str(bad[1])]
        resolved = await store.reports.list_quarantine("resolved", "mapping")
        assert [e["source_key"] for e in resolved] == [str(bad[0])]

    async def test_resolving_finds_entries_by_their_key_not_by_walking_the_open_ones(
            self, store: Store, valid_rows: list[dict[str, Any]], invalid_rows: list[dict[str, Any]]) -> None:
        """Each intake page resolves the entries of the rows it accepted. SQLite must find them through the
        unique qkey index: through the (state, stage) index it walked every open entry once per chunk, which
        made a page cost as much as the whole open quarantine (11 µs per row at 20,000 open entries)."""
        if store.db.dialect != "sqlite":
            pytest.skip("the plan checked is SQLite's (PostgreSQL plans from statistics)")
        await store.intake.commit_intake(SOURCE, [], [to_reject(r) for r in invalid_rows], cursor_of(invalid_rows),
                                  ROUTES, len(invalid_rows))
        seen: list[tuple[str, Any]] = []

        def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, _ctx: Any, _many: bool) -> None:
            if statement.startswith("UPDATE cg_quarantine"):
                seen.append((statement, parameters))

        event.listen(store.db.engine.sync_engine, "before_cursor_execute", capture)
        try:
            await intake(store, valid_rows[:5])
        finally:
            event.remove(store.db.engine.sync_engine, "before_cursor_execute", capture)
        assert seen, "the intake resolves the entries of the rows it accepted"
        async with store.db.engine.connect() as conn:
            for statement, parameters in seen:
                plan = " ".join(str(row[-1]) for row in await conn.exec_driver_sql(
                    f"EXPLAIN QUERY PLAN {statement}", parameters))
                assert "sqlite_autoindex_cg_quarantine_1 (qkey=?)" in plan, plan

    async def test_cursor_is_saved_with_the_intake(self, store: Store, valid_rows: list[dict[str, Any]]) -> None:
        """The cursor is saved by the intake transaction; cursor=None leaves it where it was."""
        assert await store.intake.load_cursor(SOURCE) is None
        await intake(store, valid_rows[:3])
        assert await store.intake.load_cursor(SOURCE) == cursor_of(valid_rows[:3])
        await store.intake.commit_intake(SOURCE, [to_record(edited(valid_rows[0]))], [], None, ROUTES, 1)
        assert await store.intake.load_cursor(SOURCE) == cursor_of(valid_rows[:3])
        assert await store.intake.load_cursor("another_source") is None

    async def test_failed_commit_leaves_no_trace(self, store: Store, valid_rows: list[dict[str, Any]],
                                                 invalid_rows: list[dict[str, Any]]) -> None:
        """A commit that fails inside its transaction writes no ledger, outbox, quarantine or cursor."""
        await break_intake_writes(store)
        with pytest.raises((StoreError, SQLAlchemyError)):
            await intake(store, valid_rows[:3], rejects=[to_reject(invalid_rows[0])])
        assert await ledger(store) == {}
        assert await outbox(store) == []
        assert await store.reports.list_quarantine(None) == []
        assert await store.intake.load_cursor(SOURCE) is None
        await heal_intake_writes(store)
        assert (await intake(store, valid_rows[:3])).accepted == 3

    async def test_failed_commit_raises_store_error(self, store: Store, valid_rows: list[dict[str, Any]]) -> None:
        """A database failure during the intake commit surfaces as StoreError, not a SQLAlchemy exception."""
        await break_intake_writes(store)
        with pytest.raises(StoreError):
            await intake(store, valid_rows[:2])


class TestLeaseBatch:
    async def test_respects_limit_and_outbox_order(self, store: Store, valid_rows: list[dict[str, Any]]) -> None:
        """Leasing takes at most ``limit`` pending rows, oldest outbox id first, until none is left."""
        await intake(store, valid_rows[:10], ONE)
        ids = [r["id"] for r in await outbox(store)]
        seen: list[list[int]] = []

        def encoder(leased: Sequence[LeasedRecord]) -> EncodedBatch:
            seen.append([r.outbox_id for r in leased])
            return json_encoder()(leased)

        sizes = []
        while (batch := await lease(store, 4, encoder=encoder)) is not None:
            sizes.append(batch.record_count)
        assert sizes == [4, 4, 2]
        assert seen == [ids[0:4], ids[4:8], ids[8:10]]
        assert {r["state"] for r in await outbox(store)} == {"leased"}

    async def test_key_in_flight_is_not_leased_again(self, store: Store, valid_rows: list[dict[str, Any]]) -> None:
        """Version 2 of a key is not leased while version 1 is in flight, and is leased once v1 is done."""
        a, b = valid_rows[0], valid_rows[1]
        await intake(store, [a, b], ONE)
        first = await lease(store)
        assert first is not None
        await intake(store, [edited(a)], ONE)
        assert await lease(store) is None
        key_a = to_record(a).key
        assert states(await outbox(store, key_a)) == Counter({("province", 1, "leased"): 1,
                                                              ("province", 2, "pending"): 1})
        await store.outbox.complete_batch(first, [Outcome(k, v, "accepted") for k, v in await leased_keys(store,
                                                                                                          first)],
                                   {"errorCode": "200"}, "r-1", 5.0)
        second = await lease(store)
        assert second is not None
        assert await leased_keys(store, second) == [(key_a, 2)]

    async def test_unencodable_records_are_quarantined(self, store: Store, valid_rows: list[dict[str, Any]]) -> None:
        """Records the encoder cannot encode are quarantined (stage target) and left out of the batch."""
        await intake(store, valid_rows[:3], ONE)
        bad_key = to_record(valid_rows[1]).key
        batch = await lease(store, encoder=json_encoder([bad_key]))
        assert batch is not None and batch.record_count == 2
        assert bad_key not in [k for k, _ in await leased_keys(store, batch)]
        assert bad_key not in [r["recordKey"] for r in orjson.loads(batch.body)["records"]]
        assert [r["state"] for r in await outbox(store, bad_key)] == ["rejected"]
        entries = await store.reports.list_quarantine("open", "target")
        assert [(e["target"], e["record_key"]) for e in entries] == [("province", bad_key)]
        assert entries[0]["reasons"][0]["message"] == f"cannot encode {bad_key}"
        assert entries[0]["reasons"][0]["code"] == "encode"

    async def test_all_unencodable_yields_no_batch(self, store: Store, valid_rows: list[dict[str, Any]]) -> None:
        """When no leased record can be encoded no batch is opened and every record is quarantined."""
        await intake(store, valid_rows[:2], ONE)
        keys = [to_record(r).key for r in valid_rows[:2]]
        assert await lease(store, encoder=json_encoder(keys)) is None
        assert await batches(store) == []
        assert sorted(e["record_key"] for e in await store.reports.list_quarantine("open", "target")) == sorted(keys)

    async def test_batch_body_is_kept_byte_for_byte(self, store: Store, valid_rows: list[dict[str, Any]]) -> None:
        """The body built at lease time is what due_batches returns for every later attempt."""
        await intake(store, valid_rows[:6], ONE)
        bodies: list[bytes] = []

        def encoder(leased: Sequence[LeasedRecord]) -> EncodedBatch:
            encoded = json_encoder()(leased)
            bodies.append(encoded.body)
            return encoded

        batch = await lease(store, encoder=encoder)
        assert batch is not None and batch.body == bodies[0]
        await store.outbox.fail_attempt(batch, "HTTP 503", time.time() - 1, False, 3.0)
        due = await store.outbox.due_batches("province", 10)
        assert [(d.id, d.body, d.body_sha256, d.attempts) for d in due] == [
            (batch.id, bodies[0], hashlib.sha256(bodies[0]).hexdigest(), 1)]

    @pytest.mark.parametrize("sealed", [False, True])
    async def test_body_is_compressed_only_when_that_pays(self, store: Store, valid_rows: list[dict[str, Any]],
                                                          sealed: bool) -> None:
        """A JSON body is kept compressed; a sealed one (ciphertext) as it is; both come back byte for byte."""
        await intake(store, valid_rows[:30], ONE)

        def encoder(leased: Sequence[LeasedRecord]) -> EncodedBatch:
            encoded = json_encoder()(leased)
            body = os.urandom(len(encoded.body)) if sealed else encoded.body
            return EncodedBatch(encoded.batch_id, body, encoded.included)

        batch = await lease(store, encoder=encoder)
        assert batch is not None and len(batch.body) > 8192
        async with store.db.engine.connect() as conn:
            stored = (await conn.execute(select(s.batches.c.body).where(s.batches.c.id == batch.id))).scalar_one()
        if sealed:
            assert stored == RAW_BODY + batch.body
        else:
            assert len(stored) < len(batch.body) / 2 and zstandard.decompress(stored) == batch.body
        await store.outbox.fail_attempt(batch, "HTTP 503", time.time() - 1, False, 3.0)
        assert [d.body for d in await store.outbox.due_batches("province", 10)] == [batch.body]

    async def test_body_stored_by_an_earlier_version_is_read(self, store: Store,
                                                            valid_rows: list[dict[str, Any]]) -> None:
        """Bodies written by earlier versions still load: before raw storage existed (zlib at its default level)
        and before zstd (zlib at level 1)."""
        await intake(store, valid_rows[:5], ONE)
        batch = await lease(store)
        assert batch is not None
        for level in (-1, 1):
            async with store.db.tx() as conn:
                await conn.execute(update(s.batches).where(s.batches.c.id == batch.id)
                                   .values(body=zlib.compress(batch.body, level), next_attempt_at=0.0))
            assert [d.body for d in await store.outbox.due_batches("province", 10)] == [batch.body]

    async def test_concurrent_leases_take_disjoint_rows(self, store: Store,
                                                        valid_rows: list[dict[str, Any]]) -> None:
        """Two leases running at once never take the same outbox row."""
        await intake(store, valid_rows[:20], ONE)
        got = await asyncio.gather(lease(store, 8), lease(store, 8))
        assert all(b is not None for b in got)
        first = await leased_keys(store, got[0])  # type: ignore[arg-type]
        second = await leased_keys(store, got[1])  # type: ignore[arg-type]
        assert len(first) == len(second) == 8
        assert not set(first) & set(second)

    async def test_rows_leased_since_they_were_read_are_not_leased_again(
            self, store: Store, valid_rows: list[dict[str, Any]]) -> None:
        """Two senders read the same rows; the second to lease them leases nothing and writes nothing."""
        await intake(store, valid_rows[:6], ONE)
        mine = await store.outbox.read_candidates("province", "penalty", 10)
        theirs = await store.outbox.read_candidates("province", "penalty", 10)
        assert [r[0] for r in mine.rows] == [r[0] for r in theirs.rows] and len(mine.rows) == 6
        taken = await store.outbox.lease_encoded("province", "penalty", theirs, json_encoder()(theirs.records))
        assert taken is not None
        with pytest.raises(LeaseLost):
            await store.outbox.lease_encoded("province", "penalty", mine, json_encoder()(mine.records))
        assert [b["id"] for b in await batches(store)] == [taken.id]
        assert {(r["state"], r["batch_id"]) for r in await outbox(store)} == {("leased", taken.id)}

    async def test_lease_lost_retries_with_what_is_left(self, store: Store, valid_rows: list[dict[str, Any]]) -> None:
        """lease_batch reads again when another sender took its rows while it encoded."""
        await intake(store, valid_rows[:6], ONE)
        other: list[Batch] = []

        async def slow_encoder(leased: Sequence[LeasedRecord]) -> EncodedBatch:
            if not other:  # another sender leases three of these rows meanwhile
                batch = await store.outbox.lease_batch("province", "penalty", 3, json_encoder())
                assert batch is not None
                other.append(batch)
            return json_encoder()(leased)

        mine = await store.outbox.lease_batch("province", "penalty", 10, slow_encoder)
        assert mine is not None and mine.record_count == 3
        assert not set(await leased_keys(store, mine)) & set(await leased_keys(store, other[0]))

    async def test_a_version_superseded_since_it_was_read_is_not_leased(
            self, store: Store, valid_rows: list[dict[str, Any]]) -> None:
        """v1 read, then v2 arrives (superseding v1's pending row): v1's lease leases nothing; v2 goes instead."""
        a = valid_rows[0]
        await intake(store, [a], ONE)
        old = await store.outbox.read_candidates("province", "penalty", 10)
        await intake(store, [edited(a)], ONE)
        new = await store.outbox.read_candidates("province", "penalty", 10)
        assert [r[2] for r in old.rows] == [1] and [r[2] for r in new.rows] == [2]
        with pytest.raises(LeaseLost):
            await store.outbox.lease_encoded("province", "penalty", old, json_encoder()(old.records))
        batch = await store.outbox.lease_encoded("province", "penalty", new, json_encoder()(new.records))
        assert batch is not None and orjson.loads(batch.body)["records"][0]["version"] == 2
        assert states(await outbox(store, to_record(a).key)) == Counter({("province", 1, "superseded"): 1,
                                                                         ("province", 2, "leased"): 1})

    async def test_reading_after_a_batch_being_encoded_takes_the_next_rows(
            self, store: Store, valid_rows: list[dict[str, Any]]) -> None:
        """``after``: a second batch read while the first is encoded takes the rows after it; both lease."""
        await intake(store, valid_rows[:10], ONE)
        first = await store.outbox.read_candidates("province", "penalty", 4)
        second = await store.outbox.read_candidates("province", "penalty", 4, after=first.last_id)
        assert [r[0] for r in first.rows][-1] == first.last_id < second.rows[0][0]
        for found in (second, first):
            assert await store.outbox.lease_encoded("province", "penalty", found, json_encoder()(found.records))
        assert Counter(r["state"] for r in await outbox(store)) == Counter({"leased": 8, "pending": 2})


class TestCompleteBatch:
    async def test_answers_are_recorded(self, store: Store, valid_rows: list[dict[str, Any]]) -> None:
        """Accepted/duplicate/stale are delivered, rejected is quarantined, unmentioned goes back to pending."""
        await intake(store, valid_rows[:5], ONE)
        batch = await lease(store)
        assert batch is not None
        keys = [k for k, _ in await leased_keys(store, batch)]
        outcomes = [Outcome(keys[0], 1, "accepted"), Outcome(keys[1], 1, "duplicate"), Outcome(keys[2], 1, "stale"),
                    Outcome(keys[3], 1, "rejected", "7099", "模拟拒收")]
        receipt = {"errorCode": "200", "results": [o.key for o in outcomes], "receipt": {"receiptId": "r-9"}}
        result = await store.outbox.complete_batch(batch, outcomes, receipt, "r-9", 42.0)
        assert result == DeliveryResult(delivered=3, rejected=1, requeued=1)
        by_key = {r["record_key"]: r for r in await outbox(store)}
        assert [by_key[k]["state"] for k in keys] == ["delivered"] * 3 + ["rejected", "pending"]
        assert by_key[keys[4]]["batch_id"] is None
        entry, = await store.reports.list_quarantine("open", "target")
        assert entry["record_key"] == keys[3]
        assert entry["reasons"] == [{"field": "", "code": "7099", "message": "模拟拒收", "version": 1}]
        assert entry["raw"] == orjson.loads((await ledger(store))[keys[3]]["payload"])
        shown = await store.reports.show_batch(batch.id)
        assert shown is not None
        assert (shown["state"], shown["attempts"]) == ("done", 1)
        assert shown["completed_at"] is not None
        assert shown["receipt"]["receipt_id"] == "r-9"
        assert orjson.loads(shown["receipt"]["body"]) == receipt
        assert (shown["receipt"]["accepted"], shown["receipt"]["rejected"]) == (3, 1)
        assert [(a["outcome"], a["duration_ms"]) for a in shown["attempt_log"]] == [("ok", 42.0)]
        again = await lease(store)
        assert again is not None and await leased_keys(store, again) == [(keys[4], 1)]


class TestFailAttempt:
    async def test_retry_keeps_the_batch_open(self, store: Store, valid_rows: list[dict[str, Any]]) -> None:
        """A retryable failure keeps the batch open, its rows leased, due at next_attempt_at."""
        await intake(store, valid_rows[:3], ONE)
        batch = await lease(store)
        assert batch is not None
        at = time.time() + 30
        await store.outbox.fail_attempt(batch, "HTTP 503 平台繁忙", at, False, 7.5)
        row, = await batches(store)
        assert (row["state"], row["attempts"], row["last_error"]) == ("open", 1, "HTTP 503 平台繁忙")
        assert row["next_attempt_at"] == pytest.approx(at)
        assert {r["state"] for r in await outbox(store)} == {"leased"}
        assert await store.outbox.due_batches("province", 10) == []
        assert [d.id for d in await store.outbox.due_batches("province", 10, now=at + 1)] == [batch.id]
        assert [a["outcome"] for a in await attempts(store, batch.id)] == ["retry"]

    async def test_dead_batch_moves_rows_to_dead_letters(self, store: Store,
                                                         valid_rows: list[dict[str, Any]]) -> None:
        """A dead batch is closed and its rows become dead letters, with a dead_letter event."""
        await intake(store, valid_rows[:3], ONE)
        batch = await lease(store)
        assert batch is not None
        await store.outbox.fail_attempt(batch, "HTTP 401", time.time(), True, 1.0)
        row, = await batches(store)
        assert (row["state"], row["attempts"]) == ("dead", 1)
        assert row["completed_at"] is not None
        assert {r["state"] for r in await outbox(store)} == {"dead"}
        assert await store.outbox.due_batches("province", 10, now=time.time() + 3600) == []
        assert [e["kind"] for e in await store.reports.events(kind="dead_letter")] == ["dead_letter"]
        assert [a["outcome"] for a in await attempts(store, batch.id)] == ["dead"]

    async def test_replay_dead_queues_the_current_version_once(self, store: Store,
                                                               valid_rows: list[dict[str, Any]]) -> None:
        """Replay queues each dead key's current version unless it is already queued or delivered."""
        a, b, d = valid_rows[0], valid_rows[1], valid_rows[2]
        key_a, key_b, key_d = (to_record(r).key for r in (a, b, d))
        await intake(store, [a, b, d], ONE)
        first = await lease(store)
        assert first is not None
        await intake(store, [edited(a), edited(d)], ONE)  # v2 of a and d wait behind the in-flight v1
        await store.outbox.fail_attempt(first, "HTTP 401", time.time(), True, 1.0)
        second = await lease(store)
        assert second is not None and sorted(await leased_keys(store, second)) == sorted([(key_a, 2), (key_d, 2)])
        await store.outbox.complete_batch(second, [Outcome(key_d, 2, "accepted")], {}, "r-2",
                                          1.0)  # a v2 back to pending
        assert await store.reports.replay_dead() == 1  # only b: a v2 is queued, d v2 is delivered
        assert await store.reports.replay_dead() == 0
        assert {r["state"] for r in await outbox(store) if r["batch_id"] == first.id} == {"replayed"}
        assert [x["state"] for x in await batches(store) if x["id"] == first.id] == ["replayed"]
        third = await lease(store)
        assert third is not None and sorted(await leased_keys(store, third)) == sorted([(key_a, 2), (key_b, 1)])

    async def test_retry_now_makes_open_batches_due(self, store: Store, valid_rows: list[dict[str, Any]]) -> None:
        """retry_now makes every open batch due at once and leaves dead ones alone."""
        await intake(store, valid_rows[:4], ONE)
        waiting = await lease(store, 2)
        dead = await lease(store, 2)
        assert waiting is not None and dead is not None
        await store.outbox.fail_attempt(waiting, "HTTP 503", time.time() + 3600, False, 1.0)
        await store.outbox.fail_attempt(dead, "HTTP 401", time.time() + 3600, True, 1.0)
        assert await store.outbox.due_batches("province", 10) == []
        assert await store.reports.retry_now() == 1
        assert [d.id for d in await store.outbox.due_batches("province", 10)] == [waiting.id]


class TestStatus:
    async def test_target_status_and_counts_match(self, store: Store, valid_rows: list[dict[str, Any]],
                                                  invalid_rows: list[dict[str, Any]]) -> None:
        """target_status and counts report exactly the backlog, deliveries, rejects and dead letters made."""
        rows = valid_rows[:6]
        await intake(store, rows, ROUTES, rejects=[to_reject(r) for r in invalid_rows[:2]])
        province = await lease(store, 3, "province")
        assert province is not None
        keys = [k for k, _ in await leased_keys(store, province)]
        await store.outbox.complete_batch(province, [Outcome(keys[0], 1, "accepted"), Outcome(keys[1], 1, "accepted"),
                                              Outcome(keys[2], 1, "rejected", "7001", "必填字段为空")], {}, "r", 1.0)
        dead = await lease(store, 4, "national")
        retrying = await lease(store, 4, "national")
        assert dead is not None and retrying is not None and retrying.record_count == 2
        await store.outbox.fail_attempt(dead, "HTTP 401", time.time(), True, 1.0)
        await store.outbox.fail_attempt(retrying, "HTTP 503", time.time() + 60, False, 1.0)
        status = {row["target"]: row for row in await store.reports.target_status()}
        p, n = status["province"], status["national"]
        assert (p["backlog"], p["delivered"], p["rejected"], p["dead"], p["open_batches"]) == (3, 2, 1, 0, 0)
        assert p["last_success"] is not None and p["oldest_pending_s"] is not None
        assert (n["backlog"], n["delivered"], n["rejected"], n["dead"]) == (2, 0, 0, 4)
        assert (n["open_batches"], n["retrying"], n["last_error"]) == (1, 1, "HTTP 503")
        assert n["last_success"] is None
        counts = await store.reports.counts()
        assert counts == {"ledger": {"penalty": 6}, "quarantine": {"mapping": 2, "target": 1}, "rows_read": 8}


class TestReleaseClaims:
    async def test_only_this_instances_claims_are_released(self, store: Store, valid_rows: list[dict[str, Any]]
                                                           ) -> None:
        """At start-up "hub_a" releases its own claims, not those of "hub-a" or "hub%a" (no LIKE wildcards)."""
        await intake(store, valid_rows[:3])
        claimed = {}
        for claimant in ("hub_a:100", "hub-a:200", "hub%a:300"):
            batch = await store.outbox.lease_batch("province", "penalty", 1, json_encoder(), claimant=claimant,
                                                   claim_s=600)
            assert batch is not None
            claimed[claimant] = batch.id
        assert await store.outbox.release_claims("hub_a") == 1
        async with store.db.engine.connect() as conn:
            due = dict((await conn.execute(select(s.batches.c.claimed_by, s.batches.c.next_attempt_at))).all())
        assert due["hub_a:100"] < time.time() < min(due["hub-a:200"], due["hub%a:300"])


class TestFileModes:
    async def test_store_files_are_private(self, tmp_path: Path) -> None:
        """A new SQLite store is 0600 with its -wal and -shm files, in a new spool directory made 0700: it holds
        every full ID number and the subject-key secret."""
        spool = tmp_path / "spool"
        store = await open_store(f"sqlite:///{spool / 'gateway.db'}")
        try:
            await store.key_secret()
            files = sorted(spool.iterdir())
            assert {f.name for f in files} >= {"gateway.db", "gateway.db-wal", "gateway.db-shm"}
            assert {f.name: stat.S_IMODE(f.stat().st_mode) for f in files} == {f.name: 0o600 for f in files}
            assert stat.S_IMODE(spool.stat().st_mode) == 0o700
        finally:
            await store.aclose()

    async def test_an_existing_readable_store_is_narrowed(self, tmp_path: Path) -> None:
        """A store file an earlier version left 0644 is 0600 once opened."""
        db = tmp_path / "gateway.db"
        await (await open_store(f"sqlite:///{db}")).aclose()
        db.chmod(0o644)
        store = await open_store(f"sqlite:///{db}")
        await store.aclose()
        assert stat.S_IMODE(db.stat().st_mode) == 0o600
