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


def _store_bytes(db: Path, row_id: int, column: str, raw: bytes) -> None:
    """Write bytes that are text in no encoding into a TEXT column."""
    conn = sqlite3.connect(db)
    conn.execute(f"UPDATE xzcf SET {column} = CAST(? AS TEXT) WHERE id = ?", (raw, row_id))
    conn.commit()
    conn.close()


class TestReplacedTextNeverLeaves:
    """Issue 18: a row quarantined for bytes that are not valid text kept its replaced text (U+FFFD), and
    `quarantine replay` delivered "\\ufffd\\ufffd\\ufffdbroken" with a signed receipt."""

    async def test_replay_of_an_undecodable_row_is_refused_with_the_reason(self, tmp_path: Path) -> None:
        """Replaying the entry queues nothing, keeps it open, and says why and what to do instead."""
        from gateway.config import load_config
        from gateway.daemon import Gateway
        from gateway.operations import replay_entries
        from gateway.store import open_store
        from tests.support.helpers import SOURCE, write_config

        sample = make_department_db(tmp_path, penalties=5)
        _store_bytes(sample.path, 3, "xdr_mc", b"\xff\xfe\xffbroken")  # neither UTF-8 nor GBK
        (tmp_path / "spool").mkdir()
        config = load_config(write_config(tmp_path, url="http://127.0.0.1:9/x", db=sample.path, token="t" * 20))
        store = await open_store(config.store_url())
        try:
            async with Gateway(config, store) as gw:
                await gw.intakes[SOURCE].poll()
            [entry] = await store.reports.list_quarantine("open", "mapping")
            assert "\ufffd" in entry["raw"]["xdr_mc"]  # what was kept is the replaced text
            queued = len(await outbox(store))
            result = await replay_entries(store, config, [entry])
            assert (result.fixed, result.still) == (0, 1)
            [note] = result.notes or []
            assert f"entry {entry['id']}" in note and "not utf-8" in note and "at the source" in note
            assert len(await outbox(store)) == queued
            assert [e["id"] for e in await store.reports.list_quarantine("open", "mapping")] == [entry["id"]]
        finally:
            await store.aclose()

    def test_the_mapping_refuses_replaced_characters(self, tmp_path: Path) -> None:
        """Whatever the path (intake, replay, a source that decodes with replacement itself), a mapped value
        with U+FFFD is a problem naming the field: it is never queued."""
        import datetime as dt

        from tests.support.helpers import penalty_mapping, read_rows

        mapping = penalty_mapping()
        row = read_rows(make_department_db(tmp_path, penalties=1).path)[0]
        assert mapping.map_row(row, dt.date.today()).record is not None
        for variant in (mapping, mapping.reference()):
            mapped = variant.map_row({**row, "xdr_mc": "\ufffd\ufffd\ufffdbroken"}, dt.date.today())
            assert mapped.record is None
            assert any("U+FFFD" in p.message for p in mapped.problems), mapped.problems
            entry, problems, _ = variant.map_entry({**row, "xdr_mc": "broken\ufffd"}, dt.date.today())
            assert entry is None and problems
