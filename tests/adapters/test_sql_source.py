"""The SQL source on real department databases: SQLite files made by gateway.testing.department_db, PostgreSQL and
MariaDB (real servers)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import logging
import os
import re
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import create_async_engine

from adapters.sql import pages as sql_pages
from adapters.sql.source import SqlSource
from gateway.adapter import AdapterContext, SourceBatch
from gateway.config import load_config
from gateway.errors import ConfigError, StoreError
from gateway.pipeline.audit import audit_source
from gateway.pipeline.config import SourceConfig
from gateway.pipeline.intake import Intake
from gateway.store import Store
from gateway.store import schema as s
from gateway.testing.department_db import apply_changes, insert_rows, same_gxsj_rows
from gateway.testing.rows import COLUMNS, format_gxsj
from tests.conftest import TOKEN
from tests.support import mariadb_server
from tests.support.helpers import (
    DEPARTMENT_CODE,
    break_intake_writes,
    heal_intake_writes,
    ledger,
    make_department_db,
    outbox,
    penalty_mapping,
    read_rows,
    select_rows,
    write_config,
)
from tests.support.list_helpers import async_url, run_sql
from tests.support.pg_server import create_database

NAME = "s1"
ROUTES = {"penalty": ["province"]}
_pg_counter = itertools.count()


def context(base: Path) -> AdapterContext:
    return AdapterContext(NAME, f"sources.{NAME}", base, DEPARTMENT_CODE, "苏州市市场监督管理局")


def build(base: Path, **raw: Any) -> SqlSource:
    source, problems = SqlSource.from_settings(raw, context(base))
    assert problems == [] and source is not None
    return source


@asynccontextmanager
async def opened(base: Path, **raw: Any) -> AsyncIterator[SqlSource]:
    async with build(base, **raw) as source:
        yield source


async def read_all(source: SqlSource, limit: int, cursor: Any = None) -> list[SourceBatch]:
    """Every page the source yields from ``cursor`` on, the way the intake drains it."""
    pages: list[SourceBatch] = []
    for _ in range(10_000):
        page = await source.fetch(cursor, limit)
        pages.append(page)
        cursor = page.cursor
        if not page.more:
            return pages
    raise AssertionError("the source never reported it was drained")


def ids_of(pages: list[SourceBatch]) -> list[int]:
    return [int(row.data["id"]) for page in pages for row in page.rows]


def intake_for(source: SqlSource, store: Store, batch_size: int) -> Intake:
    mapping = penalty_mapping()
    cfg = SourceConfig(NAME, "sql", {"penalty": mapping}, 1.0, batch_size, source)
    return Intake(cfg, store, ROUTES, asyncio.Semaphore(4), 10.0, lambda: None)


def recent(minutes: float) -> dt.datetime:
    return dt.datetime.now(dt.UTC) - dt.timedelta(minutes=minutes)


class TestSettings:
    @pytest.mark.parametrize(("raw", "path"), [
        pytest.param({"table": "xzcf"}, "sources.s1.url", id="missing-url"),
        pytest.param({"url": "sqlite:///d.db", "table": "xzcf", "query": "SELECT * FROM xzcf"}, "sources.s1.table",
                     id="table-and-query"),
        pytest.param({"url": "sqlite:///d.db"}, "sources.s1.table", id="neither-table-nor-query"),
        pytest.param({"url": "sqlite:///d.db", "table": "x; drop table y"}, "sources.s1.table", id="table-injection"),
        pytest.param({"url": "sqlite:///d.db", "query": "DELETE FROM xzcf"}, "sources.s1.query", id="not-a-select"),
        pytest.param({"url": "sqlite:///d.db", "table": "xzcf", "key_columns": ["id --"]}, "sources.s1.key_columns",
                     id="bad-key-column"),
        pytest.param({"url": "sqlite:///d.db", "table": "xzcf", "update_column": "gxsj)"},
                     "sources.s1.update_column", id="bad-update-column"),
        pytest.param({"url": "sqlite:///d.db", "table": "xzcf", "tabel": "xzxk"}, "sources.s1.tabel",
                     id="unknown-setting"),
        pytest.param({"url": "not a database url", "table": "xzcf"}, "sources.s1.url", id="not-a-url"),
        pytest.param({"url": "mssql://user@db.example/credit", "table": "xzcf"}, "sources.s1.url",
                     id="unsupported-scheme"),
        pytest.param({"url": "mysql+aiomysql://user@db.example/credit", "table": "xzcf"}, "sources.s1.url",
                     id="unsupported-scheme-with-driver"),
        pytest.param({"url": "sqlite:///d.db", "table": "xzcf", "password_env": "CG_TEST_UNSET_PASSWORD"},
                     "sources.s1.password_env", id="password-env-unset"),
    ])
    def test_problem_names_its_path(self, tmp_path: Path, raw: dict[str, Any], path: str) -> None:
        """A bad setting is reported with its TOML path and no adapter is built."""
        os.environ.pop("CG_TEST_UNSET_PASSWORD", None)
        source, problems = SqlSource.from_settings(raw, context(tmp_path))
        assert source is None
        assert path in [p.path for p in problems], problems

    def test_every_problem_is_reported(self, tmp_path: Path) -> None:
        """Several problems in one table are all reported, each with its own path."""
        raw = {"url": "sqlite:///d.db", "table": "x; drop table y", "query": "SELECT 1", "key_columns": []}
        _, problems = SqlSource.from_settings(raw, context(tmp_path))
        assert {p.path for p in problems} >= {"sources.s1.table", "sources.s1.key_columns"}

    async def test_relative_sqlite_path_is_relative_to_the_config(self, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
        """A relative SQLite URL names a file beside the config, whatever the working directory."""
        make_department_db(tmp_path, penalties=4)
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        monkeypatch.chdir(elsewhere)
        async with opened(tmp_path, url="sqlite:///department.db", table="xzcf") as source:
            assert sorted(ids_of(await read_all(source, 10))) == [1, 2, 3, 4]
        assert list(elsewhere.iterdir()) == []

    def test_config_loader_reports_the_source_path(self, tmp_path: Path) -> None:
        """A bad table name in a config file is a ConfigError naming sources.NAME.table."""
        path = write_config(tmp_path, url="http://127.0.0.1:9/api/v1/upload", db=tmp_path / "d.db", token=TOKEN,
                            source="dept")
        path.write_text(path.read_text(encoding="utf-8").replace('table = "xzcf"', 'table = "x; drop table y"'),
                        encoding="utf-8")
        with pytest.raises(ConfigError) as caught:
            load_config(path)
        assert "sources.dept.table" in [p.path for p in caught.value.problems]


class TestWatermark:
    @pytest.mark.parametrize("limit", [2, 3, 5])
    async def test_same_gxsj_group_split_across_pages_is_read_once(self, tmp_path: Path, limit: int) -> None:
        """Rows sharing one gxsj across a page boundary are each read exactly once."""
        sample = make_department_db(tmp_path, penalties=20)
        moment = recent(1)
        group = same_gxsj_rows(sample.path, table="xzcf", count=7, gxsj=moment)
        later = insert_rows(sample.path, table="xzcf", count=2, seed=5, gxsj=moment + dt.timedelta(seconds=1))
        async with opened(tmp_path, url=f"sqlite:///{sample.path}", table="xzcf") as source:
            pages = await read_all(source, limit)
        stamp = format_gxsj(moment)
        split = [(a, b) for a, b in itertools.pairwise(pages)
                 if a.rows and b.rows and a.rows[-1].data["gxsj"] == stamp == b.rows[0].data["gxsj"]]
        assert split, "the page size must split the group for this test to mean anything"
        assert Counter(ids_of(pages)) == Counter(range(1, 21 + len(group) + len(later)))

    async def test_composite_key_skips_nothing(self, tmp_path: Path) -> None:
        """With a composite key (body code, decision number) every row of a same-gxsj group is read once."""
        sample = make_department_db(tmp_path, penalties=15)
        group = same_gxsj_rows(sample.path, table="xzcf", count=9, gxsj=recent(30))
        grouped = read_rows(sample.path, "xzcf", group)
        assert len({r["cfjgdm"] for r in grouped}) < len(grouped), "the group must repeat the first key column"
        async with opened(tmp_path, url=f"sqlite:///{sample.path}", table="xzcf",
                          key_columns=["cfjgdm", "cfjdswh"]) as source:
            pages = await read_all(source, 4)
        assert Counter(ids_of(pages)) == Counter(range(1, 16 + len(group)))
        assert {row.key for page in pages for row in page.rows} >= {f"{r['cfjgdm']}/{r['cfjdswh']}" for r in grouped}

    async def test_rows_updated_after_a_full_read_are_read_again(self, tmp_path: Path) -> None:
        """After a full read, only rows changed since (gxsj moved on) are read from the saved cursor."""
        sample = make_department_db(tmp_path, penalties=25)
        async with opened(tmp_path, url=f"sqlite:///{sample.path}", table="xzcf", lookback_s=0) as source:
            pages = await read_all(source, 10)
            assert sorted(ids_of(pages)) == list(range(1, 26))
            cursor = pages[-1].cursor
            assert ids_of(await read_all(source, 10, cursor)) == []
            apply_changes(sample.path, table="xzcf", ids=[4, 17], change="touch")
            apply_changes(sample.path, table="xzcf", ids=[9], change="edit")
            again = await read_all(source, 10, cursor)
        assert Counter(ids_of(again)) == Counter([4, 17, 9])

    async def test_null_update_column_does_not_stall_the_watermark(self, tmp_path: Path) -> None:
        """Rows never updated (gxsj NULL, common in legacy tables) do not stop the rows after them being read."""
        sample = make_department_db(tmp_path, penalties=12)
        with contextlib.closing(sqlite3.connect(sample.path)) as conn, conn:  # a legacy copy: gxsj may be NULL
            conn.execute("CREATE TABLE legacy AS SELECT * FROM xzcf")
            conn.execute("UPDATE legacy SET gxsj = NULL WHERE id IN (1, 2)")
        async with opened(tmp_path, url=f"sqlite:///{sample.path}", table="legacy") as source:
            pages = await read_all(source, 2)
        assert set(ids_of(pages)) >= set(range(3, 13))

    async def test_page_after_the_watermark_starts_an_index_range(self, tmp_path: Path) -> None:
        """A page is read by searching the (gxsj, id) index from the watermark on, not by walking it from its
        first entry (that made every page of a large table cost as much as the rows before it)."""
        sample = make_department_db(tmp_path, penalties=30)
        async with opened(tmp_path, url=f"sqlite:///{sample.path}", table="xzcf") as source:
            cursor = (await source.fetch(None, 10)).cursor
            sql, params = sql_pages.select_page(source._spec, cursor, 10, draining=True)
        # as the driver gets it: SQLAlchemy binds SQLite parameters by position, one "?" per use of a name
        names = re.findall(r":(\w+)", sql)
        positional = re.sub(r":\w+", "?", sql), [params[name] for name in names]
        with contextlib.closing(sqlite3.connect(sample.path)) as conn:
            plan = " ".join(str(row[-1]) for row in conn.execute(f"EXPLAIN QUERY PLAN {positional[0]}", positional[1]))
            rows = conn.execute(*positional).fetchall()
        assert "SEARCH xzcf USING INDEX ix_xzcf_gxsj_id (gxsj>?)" in plan, plan
        assert len(rows) == 10

    async def test_columns_are_the_tables(self, tmp_path: Path) -> None:
        """columns() lists the table's columns in order."""
        sample = make_department_db(tmp_path, penalties=3)
        async with opened(tmp_path, url=f"sqlite:///{sample.path}", table="xzcf") as source:
            assert await source.columns() == ["id", *COLUMNS["xzcf"], "gxsj"]


class TestIntake:
    async def test_lookback_rereads_the_window_as_unchanged(self, tmp_path: Path, store: Store) -> None:
        """A look-back window is read again on each poll; the ledger counts those rows unchanged."""
        sample = make_department_db(tmp_path, penalties=30)
        insert_rows(sample.path, table="xzcf", count=4, seed=11, gxsj=recent(40))
        insert_rows(sample.path, table="xzcf", count=3, seed=12, gxsj=recent(20))
        async with opened(tmp_path, url=f"sqlite:///{sample.path}", table="xzcf", lookback_s=3600.0) as source:
            intake = intake_for(source, store, 10)
            assert await intake.poll() == 37
            queued = len(await outbox(store))
            cursor = await store.intake.load_cursor(NAME)
            since = format_gxsj(dt.datetime.fromisoformat(cursor[0]).replace(tzinfo=dt.UTC)
                                - dt.timedelta(seconds=3600))
            window = [r for r in read_rows(sample.path) if r["gxsj"] >= since]
            assert 0 < len(window) < 37
            for poll in (1, 2):
                assert await intake.poll() == len(window)
                assert (intake.stats.accepted, intake.stats.unchanged) == (37, poll * len(window))
        assert len(await outbox(store)) == queued
        assert {r["version"] for r in (await ledger(store)).values()} == {1}
        assert await store.intake.load_cursor(NAME) == cursor

    async def test_cursor_moves_only_after_the_intake_commit(self, tmp_path: Path, store: Store) -> None:
        """When the store commit fails the cursor stays put and the same rows are read again next poll."""
        sample = make_department_db(tmp_path, penalties=12)
        async with opened(tmp_path, url=f"sqlite:///{sample.path}", table="xzcf", lookback_s=0) as source:
            intake = intake_for(source, store, 5)
            assert await intake.poll() == 12
            cursor = await store.intake.load_cursor(NAME)
            new = insert_rows(sample.path, table="xzcf", count=8, seed=3, gxsj=recent(5))
            await break_intake_writes(store)
            with pytest.raises((StoreError, SQLAlchemyError)):
                await intake.poll()
            assert await store.intake.load_cursor(NAME) == cursor
            assert len(await ledger(store)) == 12
            await heal_intake_writes(store)
            assert await intake.poll() == len(new)
        assert len(await ledger(store)) == 12 + len(new)
        assert (await store.intake.load_cursor(NAME))[1] == new[-1]


    async def test_a_control_character_in_a_key_column_is_kept_as_an_escape(self, tmp_path: Path,
                                                                            store: Store) -> None:
        """A text key column holding NUL, on a row that is otherwise valid: the row's source key is written with an
        escape (a PostgreSQL store cannot hold NUL; the whole intake failed) and every row lands (issue 17, 4)."""
        sample = make_department_db(tmp_path, penalties=4, invalid_fraction=0.0)
        with sqlite3.connect(sample.path) as conn:
            conn.execute("ALTER TABLE xzcf ADD COLUMN bh TEXT")
            conn.execute("UPDATE xzcf SET bh = 'B-' || id")
            conn.execute("UPDATE xzcf SET bh = 'B-' || char(0) || id WHERE id = 2")
        async with opened(tmp_path, url=f"sqlite:///{sample.path}", table="xzcf", key_columns=["bh"]) as source:
            intake = intake_for(source, store, 10)
            assert await intake.poll() == 4
        assert intake.stats.quarantined == 0
        keys = {r["source_key"] for r in (await ledger(store)).values()}
        assert "B-\\x002" in keys and not any("\x00" in k for k in keys)


class TestLateCommits:
    """Issue 17, finding 1: an edit committed with an update time at or before the watermark."""

    async def test_an_edit_in_the_watermarks_second_reaches_the_platform(self, tmp_path: Path, store: Store) -> None:
        """id 1 at 10:00:00, id 2 at 10:00:05, drain; id 1 edited with gxsj 10:00:05, drain: version 2 is queued."""
        sample = make_department_db(tmp_path, penalties=0)
        base = recent(30).replace(microsecond=0)
        first = same_gxsj_rows(sample.path, table="xzcf", count=1, gxsj=base)
        same_gxsj_rows(sample.path, table="xzcf", count=1, gxsj=base + dt.timedelta(seconds=5))
        async with opened(tmp_path, url=f"sqlite:///{sample.path}", table="xzcf") as source:
            intake = intake_for(source, store, 10)
            assert await intake.poll() == 2
            with sqlite3.connect(sample.path) as conn:
                conn.execute("UPDATE xzcf SET fkje = 777700, gxsj = ? WHERE id = ?",
                             (format_gxsj(base + dt.timedelta(seconds=5)), first[0]))
            await intake.poll()
        versions = {(row["record_key"], row["version"]) for row in await outbox(store)}
        key = next(k for k, r in (await ledger(store)).items() if r["source_key"] == str(first[0]))
        assert (key, 2) in versions
        assert "77.77" in (await ledger(store))[key]["payload"]  # fkje 777700 元 is 77.77 万元
        assert (await store.audits.found())[NAME] == {"late": 1, "recovered": 0}  # `status` shows it


    async def test_a_quarantined_row_in_the_window_is_not_counted_again(self, tmp_path: Path, store: Store,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
        """A look-back re-read of a row quarantined already neither counts a hit nor logs it again."""
        sample = make_department_db(tmp_path, penalties=0)
        bad = insert_rows(sample.path, table="xzcf", count=3, seed=5, gxsj=recent(1))
        with sqlite3.connect(sample.path) as conn:
            conn.execute("UPDATE xzcf SET cfjdswh = '' WHERE id = ?", (bad[0],))
        async with opened(tmp_path, url=f"sqlite:///{sample.path}", table="xzcf", lookback_s=3600.0) as source:
            intake = intake_for(source, store, 10)
            for _ in range(3):
                assert await intake.poll() == 3
        entries = await select_rows(store, s.quarantine, order=s.quarantine.c.id)
        assert [(e["source_key"], e["hits"]) for e in entries] == [(str(bad[0]), 1)]
        assert intake.stats.quarantined == 1
        assert sum(r.getMessage() == "row quarantined" for r in caplog.records) == 1


    async def test_a_reread_that_finds_nothing_is_not_logged_or_counted(self, tmp_path: Path, store: Store,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
        """Polls that re-read an unchanged window write no intake log row, no log line, no rows read."""
        caplog.set_level(logging.INFO, "gateway.engine")
        sample = make_department_db(tmp_path, penalties=0)
        insert_rows(sample.path, table="xzcf", count=5, seed=9, gxsj=recent(1))
        async with opened(tmp_path, url=f"sqlite:///{sample.path}", table="xzcf", lookback_s=3600.0) as source:
            intake = intake_for(source, store, 10)
            for _ in range(3):
                assert await intake.poll() == 5  # read each time
        assert (await store.reports.counts())["rows_read"] == 5
        assert len(await select_rows(store, s.intake, order=s.intake.c.id)) == 1
        assert sum(r.getMessage() == "intake committed" for r in caplog.records) == 1


class TestSourceAudit:
    """The source audit finds rows committed later than the look-back window (gateway.pipeline.audit)."""

    async def test_a_row_committed_beyond_the_lookback_is_recovered_and_counted(self, tmp_path: Path,
                                                                                store: Store) -> None:
        """An edit dated an hour behind the watermark is missed by the poll, found by the audit, queued as v2."""
        sample = make_department_db(tmp_path, penalties=0)
        ids = insert_rows(sample.path, table="xzcf", count=40, seed=7, gxsj=recent(30))
        insert_rows(sample.path, table="xzcf", count=2, seed=8, gxsj=recent(1))
        async with opened(tmp_path, url=f"sqlite:///{sample.path}", table="xzcf") as source:
            intake = intake_for(source, store, 10)
            await intake.poll()
            with sqlite3.connect(sample.path) as conn:
                conn.execute("UPDATE xzcf SET fkje = 777700, gxsj = ? WHERE id = ?",
                             (format_gxsj(recent(90)), ids[17]))
            await intake.poll()
            assert max(r["version"] for r in (await ledger(store)).values()) == 1, "the poll cannot see it"
            found = await audit_source(intake, range_rows=8)
            again = await audit_source(intake, range_rows=8)
        assert (found.rows, found.ranges, found.differing, found.reread, found.recovered) == (40, 5, 1, 1, 1)
        assert (again.differing, again.reread, again.recovered) == (0, 0, 0)
        key = next(k for k, r in (await ledger(store)).items() if r["source_key"] == str(ids[17]))
        assert [r["version"] for r in await outbox(store, key)] == [1, 2]
        audits = await store.audits.latest()
        assert (audits[NAME].recovered, audits[NAME].recovered_total) == (0, 1)

    async def test_an_unchanged_source_audits_with_no_reread(self, tmp_path: Path, store: Store) -> None:
        """After a drain, the audit compares every range and reads no row again."""
        sample = make_department_db(tmp_path, penalties=60)
        async with opened(tmp_path, url=f"sqlite:///{sample.path}", table="xzcf") as source:
            intake = intake_for(source, store, 25)
            await intake.poll()
            result = await audit_source(intake, range_rows=16)
        assert result.rows > 0
        assert (result.differing, result.reread, result.recovered) == (0, 0, 0)
        assert result.ranges == -(-result.rows // 16)

    async def test_nothing_is_audited_before_the_first_poll(self, tmp_path: Path, store: Store) -> None:
        """Without a watermark every row is still the poll's to read."""
        sample = make_department_db(tmp_path, penalties=5)
        async with opened(tmp_path, url=f"sqlite:///{sample.path}", table="xzcf") as source:
            result = await audit_source(intake_for(source, store, 25))
        assert (result.rows, result.reread) == (0, 0)
        assert await ledger(store) == {}



# gxsj's type on each server: a timestamp with microseconds, as the SQLite samples carry them
TIMESTAMP = {"postgresql": "timestamp", "mariadb": "DATETIME(6)"}


class TestServerSource:
    """The same watermark on the database servers departments run (PostgreSQL and MariaDB, real servers)."""

    @pytest.fixture(params=["postgresql", "mariadb"])
    def server(self, request: pytest.FixtureRequest) -> tuple[str, str]:
        name = f"cg_src_{os.getpid()}_{next(_pg_counter)}"
        if request.param == "postgresql":
            return request.param, create_database(request.getfixturevalue("pg_admin_url"), name)
        return request.param, mariadb_server.create_database(request.getfixturevalue("mariadb_admin_url"), name)

    async def test_timestamp_watermark_reads_each_row_once(self, tmp_path: Path, server: tuple[str, str]) -> None:
        """With a real timestamp gxsj, a same-timestamp group across pages is read once."""
        kind, url = server
        sample = make_department_db(tmp_path, penalties=10)
        group = same_gxsj_rows(sample.path, table="xzcf", count=7, gxsj=recent(10))
        rows = read_rows(sample.path)
        await copy_to_server(url, rows, TIMESTAMP[kind], dt.datetime.fromisoformat)
        async with opened(tmp_path, url=url, table="xzcf") as source:
            assert await source.columns() == ["id", *COLUMNS["xzcf"], "gxsj"]
            pages = await read_all(source, 3)
        assert Counter(ids_of(pages)) == Counter(r["id"] for r in rows)
        assert len(rows) == 10 + len(group)

    async def test_text_watermark_reads_each_row_once(self, tmp_path: Path, server: tuple[str, str]) -> None:
        """With gxsj kept as text, a same-timestamp group across pages is read once."""
        _, url = server
        sample = make_department_db(tmp_path, penalties=10)
        same_gxsj_rows(sample.path, table="xzcf", count=7, gxsj=recent(10))
        rows = read_rows(sample.path)
        await copy_to_server(url, rows, "VARCHAR(32)", str)
        async with opened(tmp_path, url=url, table="xzcf", key_columns=["cfjgdm", "id"]) as source:
            pages = await read_all(source, 3)
        assert Counter(ids_of(pages)) == Counter(r["id"] for r in rows)

    async def test_rows_updated_after_a_full_read_are_read_again(self, tmp_path: Path,
                                                                 server: tuple[str, str]) -> None:
        """After a full read only the rows changed since are read from the saved (stored as JSON) cursor."""
        kind, url = server
        rows = read_rows(make_department_db(tmp_path, penalties=12).path)
        await copy_to_server(url, rows, TIMESTAMP[kind], dt.datetime.fromisoformat)
        # no look-back: the re-read from the saved cursor must find nothing until rows change
        async with opened(tmp_path, url=url, table="xzcf", lookback_s=0.0) as source:
            cursor = orjson.loads(orjson.dumps((await read_all(source, 5))[-1].cursor))
            assert ids_of(await read_all(source, 5, cursor)) == []
            later = dt.datetime.now(dt.UTC).replace(tzinfo=None) + dt.timedelta(microseconds=7)
            await run_sql(url, [f"UPDATE xzcf SET gxsj = '{later.isoformat(sep=' ')}' WHERE id IN (3, 8)"])
            assert sorted(ids_of(await read_all(source, 5, cursor))) == [3, 8]


class TestMariaDbWatermark:
    """MySQL/MariaDB's own timestamp semantics (docs/databases.md): DATETIME keeps whole seconds unless declared
    DATETIME(6), and TIMESTAMP is shown in the session's time zone. No look-back here: the reads are exact."""

    @pytest.fixture
    def url(self, mariadb_admin_url: str) -> str:
        return mariadb_server.create_database(mariadb_admin_url, f"cg_my_{os.getpid()}_{next(_pg_counter)}")

    async def test_whole_second_datetime_ties_are_broken_by_the_key(self, tmp_path: Path, url: str) -> None:
        """DATETIME (no fraction) rounds sub-second changes into one value: the key still reads each row once."""
        rows = read_rows(make_department_db(tmp_path, penalties=9).path)
        second = dt.datetime(2026, 3, 2, 9, 30, 0)
        await copy_to_server(url, rows, "DATETIME", lambda v: second + dt.timedelta(microseconds=len(v) * 1000))
        async with opened(tmp_path, url=url, table="xzcf", lookback_s=0.0) as source:
            pages = await read_all(source, 2)
        assert {row.data["gxsj"] for page in pages for row in page.rows} == {second}
        assert Counter(ids_of(pages)) == Counter(r["id"] for r in rows)

    async def test_datetime6_keeps_microseconds_in_the_cursor(self, tmp_path: Path, url: str) -> None:
        """DATETIME(6): the cursor carries the microseconds, so a row one microsecond later is still read."""
        rows = read_rows(make_department_db(tmp_path, penalties=4).path)
        base = dt.datetime(2026, 3, 2, 9, 30, 0, 500_000)
        await copy_to_server(url, rows, "DATETIME(6)", lambda v: base)
        async with opened(tmp_path, url=url, table="xzcf", lookback_s=0.0) as source:
            cursor = (await read_all(source, 10))[-1].cursor
            assert cursor[0] == {"datetime": base.isoformat()}
            await run_sql(url, ["UPDATE xzcf SET gxsj = '2026-03-02 09:30:00.500001' WHERE id = 2"])
            assert ids_of(await read_all(source, 10, cursor)) == [2]

    async def test_timestamp_is_read_in_china_time_whatever_the_servers_zone(self, tmp_path: Path, url: str,
                                                                           mariadb_admin_url: str) -> None:
        """TIMESTAMP columns are read in China time (+08:00) even when the server's time_zone is UTC, so a
        watermark saved before the server's zone changes still means the same instant after."""
        rows = read_rows(make_department_db(tmp_path, penalties=3).path)
        await copy_to_server(url, rows, "TIMESTAMP(6) NULL", lambda v: None)
        await run_sql(url, ["SET time_zone = '+08:00'", "UPDATE xzcf SET gxsj = '2026-03-02 09:30:00' WHERE id = 1",
                            "UPDATE xzcf SET gxsj = '2026-03-02 09:31:00' WHERE id IN (2, 3)"])
        await run_sql(mariadb_admin_url, ["SET GLOBAL time_zone = '+00:00'"])
        try:
            async with opened(tmp_path, url=url, table="xzcf", lookback_s=0.0) as source:
                first = await source.fetch(None, 1)
                assert first.rows[0].data["gxsj"] == dt.datetime(2026, 3, 2, 9, 30)
                await run_sql(mariadb_admin_url, ["SET GLOBAL time_zone = '-05:00'"])
                await source.__aexit__(None, None, None)  # new connections, under the new global zone
                await source.__aenter__()
                assert sorted(ids_of(await read_all(source, 10, first.cursor))) == [2, 3]
        finally:
            await run_sql(mariadb_admin_url, ["SET GLOBAL time_zone = 'SYSTEM'"])


async def copy_to_server(url: str, rows: list[dict[str, Any]], gxsj_type: str, gxsj: Callable[[str], Any]) -> None:
    """Create the department's xzcf table on a database server and fill it with ``rows``."""
    cols = COLUMNS["xzcf"]
    ddl = ", ".join(f"{c} {'double precision' if c in ('fkje', 'mswfsd') else 'VARCHAR(400)'}" for c in cols)
    names = ["id", *cols, "gxsj"]
    engine = create_async_engine(async_url(url))
    try:
        async with engine.begin() as conn:
            await conn.execute(text(f"CREATE TABLE xzcf (id integer PRIMARY KEY, {ddl}, gxsj {gxsj_type})"))
            await conn.execute(text("CREATE INDEX ix_xzcf_gxsj_id ON xzcf (gxsj, id)"))
            marks = ", ".join(f":{c}" for c in names)
            await conn.execute(text(f"INSERT INTO xzcf ({', '.join(names)}) VALUES ({marks})"),
                               [{**{c: r[c] for c in names[:-1]}, "gxsj": gxsj(r["gxsj"])} for r in rows])
    finally:
        await engine.dispose()
