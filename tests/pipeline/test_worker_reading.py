"""Source pages read and mapped in a mapping worker process are the pages the daemon would read and map.

A SQLite source offers ``page_reader()``: the worker runs the page query itself and maps the rows, so they never
cross into the daemon. These tests compare that path with :meth:`SqlSource.fetch` and the in-process mapping on
real department databases (UTF-8, GBK, a stray GBK value, two key columns, a look-back window) and run the
intake through the real process pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import pickle
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from adapters.sql.pages import SqlitePageReader
from adapters.sql.source import SqlSource
from gateway.adapter import SourceBatch
from gateway.clock import china_today
from gateway.domain.publicity import PublicitySettings
from gateway.errors import RetryableError
from gateway.jobs import repair_screen
from gateway.pipeline.config import SourceConfig
from gateway.pipeline.intake import Intake
from gateway.pipeline.workers import MapPool
from gateway.store import Store, open_store
from gateway.testing.department_db import apply_changes
from tests.adapters.test_source_encoding import _convert_to_gbk, _store_gbk
from tests.adapters.test_sql_source import NAME, ROUTES, opened
from tests.support.helpers import ledger, make_department_db, outbox, penalty_mapping, read_rows
from tests.support.rules_helpers import key_of, pick_row, set_decision

Page = tuple[list[tuple[str, dict[str, Any], tuple[Any, ...]]], Any, bool]


def _plain(batch: SourceBatch) -> Page:
    return [(row.key, dict(row.data), tuple(row.problems)) for row in batch.rows], batch.cursor, batch.more


async def _both_ways(source: SqlSource, limit: int) -> tuple[list[Page], list[Page]]:
    """Every page after the first read with fetch() and with the page reader (pickled, as a worker gets it),
    each from the same cursor: the first page's, as a poll drains a backlog."""
    first = await source.fetch(None, limit)
    assert first.more, "the table must take more than one page"
    fetched: list[Page] = []
    cursor = first.cursor
    while True:
        batch = await source.fetch(cursor, limit)
        fetched.append(_plain(batch))
        cursor = batch.cursor
        if not batch.more:
            break
    read: list[Page] = []
    cursor = first.cursor
    while True:
        reader = source.page_reader()
        assert isinstance(reader, SqlitePageReader)
        batch = pickle.loads(pickle.dumps(reader))(cursor, limit)
        read.append(_plain(batch))
        cursor = batch.cursor
        if not batch.more:
            break
    return fetched, read


class TestPageReader:
    async def test_the_reader_gives_the_pages_fetch_gives(self, tmp_path: Path) -> None:
        """Same rows (keys, values, problems), cursors and `more`, page by page, from the first row on."""
        sample = make_department_db(tmp_path, penalties=45)
        async with opened(tmp_path, url=f"sqlite:///{sample.path}", table="xzcf") as source:
            fetched, read = await _both_ways(source, 10)
        assert len(fetched) == 4 and sum(len(rows) for rows, _, _ in read) == 35
        assert read == fetched

    async def test_a_stray_gbk_value_is_read_as_bytes_and_named(self, tmp_path: Path) -> None:
        """A page with a value that is not UTF-8 is read again as bytes; the column is a problem of its row."""
        sample = make_department_db(tmp_path, penalties=20)
        async with opened(tmp_path, url=f"sqlite:///{sample.path}", table="xzcf") as source:
            in_order = [int(row.data["id"]) for row in (await source.fetch(None, 50)).rows]
            _store_gbk(sample.path, in_order[-1], "xdr_mc", "苏州瑞丰食品有限公司")  # on the second page
            fetched, read = await _both_ways(source, 12)
        assert read == fetched
        [(key, problems)] = [(key, problems) for page in read for key, _, problems in page[0] if problems]
        assert key == str(in_order[-1]) and problems[0].path == "xdr_mc" and "not utf-8" in problems[0].message

    async def test_a_gbk_database_and_two_key_columns(self, tmp_path: Path) -> None:
        """encoding = "gbk" decodes every text value; a query's two key columns make the key and the cursor."""
        sample = make_department_db(tmp_path, penalties=25)
        names = {str(r["id"]): r["xdr_mc"] for r in read_rows(sample.path)}
        _convert_to_gbk(sample.path)
        async with opened(tmp_path, url=f"sqlite:///{sample.path}", encoding="gbk", key_columns=["cfjgdm", "id"],
                          query="SELECT * FROM xzcf") as source:
            fetched, read = await _both_ways(source, 7)
        assert read == fetched and len(read) == 3
        assert all("/" in key and not problems for key, _, problems in read[0][0])
        assert {str(data["id"]): data["xdr_mc"] for page in read for _, data, _ in page[0]}.items() <= names.items()

    async def test_the_reader_reads_after_the_cursor_the_first_page_rereads_the_window(self, tmp_path: Path
                                                                                        ) -> None:
        """With lookback_s the first page of a poll (fetched in the daemon) starts a window before the
        watermark; the pages a worker reads start after it, and handing out a reader makes the next poll's
        first page re-read the window again."""
        sample = make_department_db(tmp_path, penalties=12)
        async with opened(tmp_path, url=f"sqlite:///{sample.path}", table="xzcf", lookback_s=10 * 365 * 86400.0
                          ) as source:
            last = (await source.fetch(None, 12)).cursor  # a full page: the source is draining
            reader = source.page_reader()
            assert reader is not None
            assert reader(last, 100).rows == []
            assert len((await source.fetch(last, 100)).rows) == 12  # the whole table is inside the window

    async def test_a_missing_database_is_retryable_and_named(self, tmp_path: Path) -> None:
        """The reader does not create an empty database where the source was; the error names the source."""
        sample = make_department_db(tmp_path, penalties=3)
        async with opened(tmp_path, url=f"sqlite:///{sample.path}", table="xzcf") as source:
            reader = source.page_reader()
        assert reader is not None
        sample.path.rename(tmp_path / "moved.db")
        with pytest.raises(RetryableError) as caught:
            pickle.loads(pickle.dumps(reader))(None, 10)
        assert f"source {NAME}" in str(caught.value)
        assert not sample.path.exists()

    async def test_only_a_file_database_is_read_elsewhere(self, tmp_path: Path) -> None:
        """An in-memory database exists only in the daemon: it has no page reader."""
        async with opened(tmp_path, url="sqlite://", table="xzcf") as source:
            assert source.page_reader() is None


def _intake(source: SqlSource, store: Store, pool: MapPool, batch_size: int) -> Intake:
    cfg = SourceConfig(NAME, "sql", {"penalty": penalty_mapping()}, 1.0, batch_size, source)
    return Intake(cfg, store, ROUTES, asyncio.Semaphore(4), 60.0, lambda: None, pool=pool)


def _count_worker_reads(pool: MapPool) -> list[int]:
    """The number of rows of each page the pool reads in its worker, as the pages are read."""
    read = pool.read
    in_worker: list[int] = []

    async def reading(*args: Any) -> Any:
        got = await read(*args)
        in_worker.append(got[1])
        return got

    pool.read = reading  # type: ignore[method-assign]
    return in_worker


@pytest.fixture
def pool() -> Any:
    workers = MapPool(1)
    yield workers
    workers.close()


class TestIntakeThroughTheWorker:
    async def test_the_worker_reads_and_maps_what_the_daemon_would(self, tmp_path: Path, store: Store,
                                                                   pool: MapPool) -> None:
        """An intake whose pages are read and mapped in the worker writes the ledger, outbox and quarantine an
        in-process intake writes; the daemon fetches only the first page of the poll."""
        sample = make_department_db(tmp_path, penalties=700, invalid_fraction=0.05)
        _store_gbk(sample.path, 9, "xdr_mc", "苏州瑞丰食品有限公司")
        async with opened(tmp_path, url=f"sqlite:///{sample.path}", table="xzcf") as source:
            fetches = 0
            fetch = source.fetch

            async def counted(cursor: Any, limit: int) -> SourceBatch:
                nonlocal fetches
                fetches += 1
                return await fetch(cursor, limit)

            source.fetch = counted  # type: ignore[method-assign]
            in_worker = _count_worker_reads(pool)
            assert await _intake(source, store, pool, 300).poll() == 700
            assert fetches == 1 and in_worker == [300, 100]  # the first page here, the backlog in the worker
            here = await open_store(f"sqlite:///{tmp_path / 'here.db'}")
            try:
                assert await _intake(source, here, MapPool(0), 300).poll() == 700
                assert fetches == 4
                expected = (await _contents(here))
            finally:
                await here.aclose()
        assert await _contents(store) == expected
        assert len(expected[0]) > 600 and len(expected[2]) >= 30  # accepted rows and quarantined ones

    async def test_a_refused_repair_keeps_its_source_row(self, tmp_path: Path, store: Store,
                                                          pool: MapPool) -> None:
        """A repair before the minimum publicity period, read in the worker, is quarantined by the daemon's
        screen with the source row as it was read."""
        sample = make_department_db(tmp_path, penalties=450)
        row = set_decision(sample.path, pick_row(sample.path)["id"], china_today() - dt.timedelta(days=10))
        async with opened(tmp_path, url=f"sqlite:///{sample.path}", table="xzcf") as source:
            intake = _intake(source, store, pool, 200)
            intake.screens.append(repair_screen(store, PublicitySettings()))
            await intake.poll()
            others = [r["id"] for r in read_rows(sample.path) if r["id"] != row["id"]][:250]
            apply_changes(sample.path, table="xzcf", ids=others, change="touch")
            apply_changes(sample.path, table="xzcf", ids=[row["id"]], change="repair")  # last: the second page
            in_worker = _count_worker_reads(pool)
            assert await intake.poll() == 251
        assert in_worker == [51]
        [entry] = await store.reports.list_quarantine("open", "mapping")
        assert entry["record_key"] == key_of(row) and "minimum publicity period" in entry["reasons"][0]["message"]
        with contextlib.closing(sqlite3.connect(sample.path)) as conn:
            zt = conn.execute("SELECT zt FROM xzcf WHERE id = ?", (row["id"],)).fetchone()[0]
        assert entry["raw"]["id"] == row["id"] and entry["raw"]["zt"] == zt == "3"
        assert entry["raw"]["xdr_mc"] == row["xdr_mc"]
        assert (await ledger(store))[key_of(row)]["version"] == 1


async def _contents(store: Store) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    records = sorted((r["record_key"], r["version"], r["operation"], r["payload"])
                     for r in (await ledger(store)).values())
    queued = sorted((r["record_key"], r["version"], r["target"]) for r in await outbox(store))
    held = sorted((q["source_key"], q["record_key"], str(q["reasons"]), str(q["raw"]))
                  for q in await store.reports.list_quarantine("open", "mapping", limit=10_000))
    return records, queued, held


def _compiled_here() -> dict[str, int]:
    """In a worker: the mapping files it holds compiled, with their versions."""
    from gateway.pipeline import workers as cpu

    return {path: held[0] for path, held in cpu._COMPILED.items()}


class TestWarmUp:
    async def test_the_worker_starts_and_compiles_the_files_before_the_first_page(self, tmp_path: Path,
                                                                                  pool: MapPool) -> None:
        """warm() starts the worker process and has it compile the daemon's mapping files (by path, at the
        daemon's version); a file that cannot be read is left for the first page to report."""
        inbound = penalty_mapping()
        pool.warm([(inbound.path, inbound.version), (str(tmp_path / "gone.toml"), 1),
                   (inbound.path.replace("department-penalty", "platform-2019-penalty"), -1)])
        assert pool._pool is not None
        held = await asyncio.get_running_loop().run_in_executor(pool._pool, _compiled_here)
        assert held == {inbound.path: inbound.version}

    def test_a_worker_leaves_the_daemons_main_module_and_its_libraries_behind(self, tmp_path: Path) -> None:
        """A worker is a spawned process: it would import the daemon's main module again (the console script
        imports the whole command line) and, through it, SQLAlchemy and aiohttp, which no worker uses. It
        imports neither, so the first page does not wait for them."""
        script = tmp_path / "daemon_like.py"
        script.write_text(
            "import json, sys\n"
            "import gateway.cli  # as the credit-gateway console script does\n"
            "from gateway.pipeline.workers import MapPool\n"
            "if __name__ == '__main__':\n"
            "    pool = MapPool(1)\n"
            "    pool.warm([(sys.argv[1], 1)])\n"
            "    modules = pool._pool.submit(eval, 'sorted(__import__(\"sys\").modules)').result(timeout=60)\n"
            "    pool.close()\n"
            "    print(json.dumps(modules))\n", encoding="utf-8")
        done = subprocess.run([sys.executable, str(script), penalty_mapping().path], capture_output=True,
                              text=True, timeout=120, cwd=Path(__file__).resolve().parents[2], check=True)
        modules = set(json.loads(done.stdout.strip().splitlines()[-1]))
        assert "gateway.pipeline.workers" in modules and "gateway.mapping" in modules  # the worker did its warm-up
        assert not {"gateway.cli", "gateway.store.database", "sqlalchemy", "aiohttp"} & modules
