"""Department databases in the wrong encoding: GBK bytes in a SQLite TEXT column are named, not fatal."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from gateway.store import Store
from tests.adapters.test_sql_source import build, intake_for, opened
from tests.support.helpers import make_department_db, outbox


def _store_gbk(db: Path, row_id: int, column: str, text: str) -> None:
    """Write ``text`` as GBK bytes into a TEXT column, as a legacy system would."""
    conn = sqlite3.connect(db)
    conn.execute(f"UPDATE xzcf SET {column} = CAST(? AS TEXT) WHERE id = ?", (text.encode("gbk"), row_id))
    conn.commit()
    conn.close()


def _convert_to_gbk(db: Path) -> None:
    """Re-encode every TEXT value of the table as GBK bytes (a legacy GBK database)."""
    conn = sqlite3.connect(db)
    columns = [row[1] for row in conn.execute("PRAGMA table_info(xzcf)") if row[2] == "TEXT"]
    for column in columns:
        rows = conn.execute(f"SELECT id, {column} FROM xzcf").fetchall()
        conn.executemany(f"UPDATE xzcf SET {column} = CAST(? AS TEXT) WHERE id = ?",
                         [(value.encode("gbk"), row_id) for row_id, value in rows if value])
    conn.commit()
    conn.close()


class TestGbkBytes:
    async def test_gbk_row_is_quarantined_naming_the_column(self, tmp_path: Path, store: Store) -> None:
        """A row with GBK bytes in a UTF-8 database is quarantined with the column, byte and a hint."""
        sample = make_department_db(tmp_path, penalties=20)
        _store_gbk(sample.path, 5, "xdr_mc", "苏州瑞丰食品有限公司")
        async with opened(tmp_path, url=f"sqlite:///{sample.path}", table="xzcf") as source:
            await intake_for(source, store, 50).poll()
        entries = await store.reports.list_quarantine("open", "mapping")
        assert [e["source_key"] for e in entries] == ["5"]
        reason = entries[0]["reasons"][0]
        assert reason["field"] == "xdr_mc" and "not utf-8 at byte" in reason["message"]
        assert 'encoding = "gbk"' in reason["message"]
        assert len({row["record_key"] for row in await outbox(store)}) == 19  # the other rows went on

    async def test_gbk_database_reads_with_encoding_setting(self, tmp_path: Path, store: Store) -> None:
        """With encoding = "gbk" a database written in GBK maps like a UTF-8 one."""
        sample = make_department_db(tmp_path, penalties=20)
        conn = sqlite3.connect(sample.path)
        names = dict(conn.execute("SELECT id, xdr_mc FROM xzcf").fetchall())
        conn.close()
        _convert_to_gbk(sample.path)
        async with opened(tmp_path, url=f"sqlite:///{sample.path}", table="xzcf", encoding="gbk") as source:
            page = await source.fetch(None, 100)
        assert {int(r.data["id"]): r.data["xdr_mc"] for r in page.rows} == names
        assert all(not r.problems for r in page.rows)

    def test_unknown_encoding_is_a_config_problem(self, tmp_path: Path) -> None:
        """An encoding name Python does not know is refused with its TOML path."""
        from adapters.sql.source import SqlSource
        from tests.adapters.test_sql_source import context

        source, problems = SqlSource.from_settings({"url": "sqlite:///x.db", "table": "xzcf", "encoding": "gbk2"},
                                                   context(tmp_path))
        assert source is None and [p.path for p in problems] == ["sources.s1.encoding"]
        assert build is not None
