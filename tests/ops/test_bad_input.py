"""Bad input from outside, one case per way in (issue 17, "keep them fixed"): department rows, dropped files,
pushed batches, the config, mapping files and evidence files.

Each case checks three things: a clear error that names the place (file, line or row, field, position), nothing
of it stored (no ledger row, nothing at the platform), and the gateway still working (the valid input next to it
goes through; where a daemon runs as a process, it is still running and its log is still one JSON object a
line). Everything is real: SQLite department databases, the store on SQLite and PostgreSQL, the sandbox on
127.0.0.1, the CLI in-process or as a subprocess.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from gateway.cli import main
from gateway.config import Config, load_config
from gateway.daemon import Gateway
from gateway.sandbox.server import Sandbox
from gateway.store.composed import Store
from gateway.store.database import open_store
from gateway.testing.rows import SampleResult
from tests.conftest import TOKEN
from tests.support.helpers import ledger, make_department_db, read_rows, to_record, write_config

TABLE = "XZCF"


def configure(tmp_path: Path, sandbox: Sandbox, sample: SampleResult, **settings: Any) -> Config:
    return load_config(write_config(tmp_path, url=sandbox.upload_url, db=sample.path, token=TOKEN, **settings))


def set_cells(sample: SampleResult, changes: dict[int, dict[str, Any]]) -> None:
    """Overwrite cells of rows of the department table, by row id."""
    with sqlite3.connect(sample.path) as conn:
        for row_id, cells in changes.items():
            for column, value in cells.items():
                conn.execute(f"UPDATE xzcf SET {column} = ? WHERE id = ?", (value, row_id))


async def quarantine_by_row(store: Store) -> dict[str, dict[str, str]]:
    """Open mapping quarantine: source row key → {field: message}."""
    return {q["source_key"]: {r["field"]: r["message"] for r in q["reasons"]}
            for q in await store.list_quarantine("open", "mapping")}


# ---------------------------------------------------------------- rows of a department table

# (column, canonical field, a bad value, what the message must say)
BAD_CELLS = [
    ("cfjdswh", "decision_no", "苏市监罚\x00〔2026〕1号", "U+0000 at position 5"),
    ("xdr_mc", "subject_name", "苏州\x00测试有限公司", "U+0000 at position 3"),
    ("fddbr", "legal_rep", "\x1b[31m张三", "U+001B at position 1"),
    ("cfnr", "content", "罚款\x07五千元", "U+0007 at position 3"),
    ("cfjg", "authority", "苏州市\x85市场监督管理局", "U+0085 at position 4"),
    ("bz", "remarks", "x" * 4001, "4001 characters, at most 4000"),
    ("fkje", "fine_wan", "-5000", "negative amount -5000"),  # the column is REAL: -5000.0 as the source has it
    ("jdrq", "decision_date", "2026/02/30", "no such date"),
]


class TestDepartmentRows:
    async def test_bad_cells_are_quarantined_by_row_and_field_and_the_rest_delivered(
            self, tmp_path: Path, sandbox: Sandbox, store: Store) -> None:
        """Control characters, a huge field, a negative fine, no such date: each row quarantined with its field
        and position, none of them in the ledger or at the platform (PostgreSQL stores cannot even hold NUL),
        every other row delivered."""
        sample = make_department_db(tmp_path, penalties=len(BAD_CELLS) + 6, natural=0.0)
        rows = read_rows(sample.path)
        bad = {rows[i]["id"]: {column: value} for i, (column, _f, value, _m) in enumerate(BAD_CELLS)}
        set_cells(sample, bad)
        good = {to_record(r).key for r in read_rows(sample.path) if r["id"] not in bad}
        async with Gateway(configure(tmp_path, sandbox, sample), store) as gw:
            assert await gw.run_until_idle(timeout_s=60)
        found = await quarantine_by_row(store)
        for i, (_column, name, _value, message) in enumerate(BAD_CELLS):
            reasons = found[str(rows[i]["id"])]
            assert message in reasons[name], (name, reasons)
        assert set(await ledger(store)) == good
        assert set(sandbox.held(TABLE)) == good


MALFORMED_IDS = ["110105194912310021", "11010519491231OO2X", "110105491231002", "1101051949123100210",
                 "110105 19491231 002X"]


class TestMalformedIdNumbers:
    async def test_masked_in_the_log_and_in_quarantine_list_and_show(
            self, tmp_path: Path, sandbox: Sandbox, caplog: pytest.LogCaptureFixture,
            capsys: pytest.CaptureFixture[str]) -> None:
        """Wrong check character, letter O, 15 or 19 digits, spaces: the quarantined rows' ID numbers appear
        masked in the log, `quarantine list` and `quarantine show` (issue 17, 7)."""
        sample = make_department_db(tmp_path, penalties=len(MALFORMED_IDS) + 2, natural=1.0)
        rows = read_rows(sample.path)
        set_cells(sample, {rows[i]["id"]: {"zjlx": "01", "zjhm": number} for i, number in enumerate(MALFORMED_IDS)})
        path = write_config(tmp_path, url=sandbox.upload_url, db=sample.path, token=TOKEN)
        text = path.read_text(encoding="utf-8")
        path.write_text(text.replace("sqlite:///spool/gateway.db", f"sqlite:///{tmp_path / 'store.db'}"),
                        encoding="utf-8")
        config = load_config(path)
        store = await open_store(config.store_url())
        try:
            with caplog.at_level(logging.WARNING):
                async with Gateway(config, store) as gw:
                    assert await gw.run_until_idle(timeout_s=60)
            ids = [q["id"] for q in await store.list_quarantine("open", "mapping")]
        finally:
            await store.aclose()
        assert len(ids) == len(MALFORMED_IDS)
        capsys.readouterr()
        assert await asyncio.to_thread(main, ["-c", str(path), "quarantine", "list"]) == 0
        for entry in ids:
            assert await asyncio.to_thread(main, ["-c", str(path), "quarantine", "show", str(entry)]) == 0
        shown = capsys.readouterr().out + "\n".join(caplog.messages) + "\n".join(
            str(vars(r)) for r in caplog.records)
        assert "id_no: ID " in shown
        for number in MALFORMED_IDS:
            assert number not in shown and number[6:14] not in shown, number
