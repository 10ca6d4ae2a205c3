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
import csv
import io
import logging
import shutil
import sqlite3
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.cli import main
from gateway.config import Config, load_config
from gateway.daemon import Gateway
from gateway.sandbox.server import Sandbox
from gateway.sealing.evidence import PARTS
from gateway.store import Store, open_store
from gateway.testing.department_db import SampleResult
from tests.adapters.test_file_drop import DEPT_CODE, FEEDBACK_HEADER, drop, engine_config
from tests.conftest import TOKEN
from tests.support.helpers import MAPPINGS, ledger, make_department_db, read_rows, to_record, write_config
from tests.support.inbound_helpers import NOTHING, Pki, client, counts, endpoint, make_pki, sample_rows
from tests.support.inbound_helpers import write_config as write_inbound_config

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
            for q in await store.reports.list_quarantine("open", "mapping")}


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


PASSPORT = "E12345678"
MALFORMED_IDS = ["110105194912310021", "11010519491231OO2X", "110105491231002", "1101051949123100210",
                 "110105 19491231 002X"]


class TestMalformedIdNumbers:
    async def test_masked_in_the_log_and_in_quarantine_list_and_show(
            self, tmp_path: Path, sandbox: Sandbox, caplog: pytest.LogCaptureFixture,
            capsys: pytest.CaptureFixture[str]) -> None:
        """Wrong check character, letter O, 15 or 19 digits, spaces: the quarantined rows' ID numbers appear
        masked in the log, `quarantine list` and `quarantine show`; a valid row's passport number in `records show
        --json` (issue 17, 7)."""
        sample = make_department_db(tmp_path, penalties=len(MALFORMED_IDS) + 2, natural=1.0)
        rows = read_rows(sample.path)
        set_cells(sample, {rows[i]["id"]: {"zjlx": "01", "zjhm": number} for i, number in enumerate(MALFORMED_IDS)})
        passport = rows[len(MALFORMED_IDS)]  # a valid row whose ID number no pattern recognises
        set_cells(sample, {passport["id"]: {"zjlx": "02", "zjhm": PASSPORT}})
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
            ids = [q["id"] for q in await store.reports.list_quarantine("open", "mapping")]
        finally:
            await store.aclose()
        assert len(ids) == len(MALFORMED_IDS)
        capsys.readouterr()
        assert await asyncio.to_thread(main, ["-c", str(path), "quarantine", "list"]) == 0
        for entry in ids:
            assert await asyncio.to_thread(main, ["-c", str(path), "quarantine", "show", str(entry)]) == 0
        key = to_record(read_rows(sample.path, ids=[passport["id"]])[0]).key
        assert await asyncio.to_thread(main, ["-c", str(path), "records", "show", "penalty", key, "--json"]) == 0
        shown = capsys.readouterr().out + "\n".join(caplog.messages) + "\n".join(
            str(vars(r)) for r in caplog.records)
        assert "id_no: ID " in shown
        for number in MALFORMED_IDS:
            assert number not in shown and number[6:14] not in shown, number
        assert PASSPORT not in shown and PASSPORT[:2] + "*" * (len(PASSPORT) - 4) + PASSPORT[-2:] in shown


# ---------------------------------------------------------------- dropped files

FEEDBACK_ROW = "AJ-{n},M1,S{n},行政许可申请,已惩戒,2026-11-20,苏州市市场监督管理局,{dept},320500"


def feedback_csv(*rows: str) -> bytes:
    return (FEEDBACK_HEADER + "\n" + "\n".join(rows) + "\n").encode("utf-8")


def feedback_jsonl(*rows: dict[str, Any]) -> bytes:
    return b"".join(orjson.dumps(r) + b"\n" for r in rows)


def feedback_record(n: int, **changes: Any) -> dict[str, Any]:
    values = FEEDBACK_ROW.format(n=n, dept=DEPT_CODE).split(",")
    return {**dict(zip(FEEDBACK_HEADER.split(","), values, strict=True)), **changes}


# (file name, content, where the file went, what its .error or quarantine reason must say)
BAD_FILES = [
    ("gbk.csv", feedback_csv(FEEDBACK_ROW.format(n=1, dept=DEPT_CODE)).decode().encode("gbk"), "rejected",
     "gbk.csv line 2: not utf-8 at byte"),
    ("quote.csv", feedback_csv('AJ-2,M1,S2,"行政许可申请,已惩戒,2026-11-20,苏州市市场监督管理局,X,320500'),
     "rejected", "quote.csv line 2: 4 fields, the header has 9 (a quote is not closed where it should be)"),
    ("broken.jsonl", b'{"ajbh": "AJ-4",\n', "rejected", "broken.jsonl line 1: invalid JSON"),
]
# rows of a readable file that are quarantined: (row, source key, field, reason)
BAD_DROPPED_ROWS = [
    (feedback_record(5, sxmc="行政\x1b许可"), "rows.jsonl:1", "matter_name", "U+001B at position 3"),
    (feedback_record(6, sxmc="事" * 100_000), "rows.jsonl:2", "matter_name", "100000 characters, at most 256"),
    (feedback_record(7, zxrq="2026-02-30"), "rows.jsonl:3", "executed_date", "no such date"),
]


class TestDroppedFiles:
    async def test_bad_files_are_rejected_and_bad_rows_quarantined_by_file_line_and_field(
            self, tmp_path: Path, store: Store) -> None:
        """Wrong encoding, broken quoting, NUL, broken JSON: the file is moved to rejected/ with a .error naming
        file and line; a readable file's bad rows (control character, a huge field, no such date) are quarantined
        as file:line with the field; nothing of either is stored or delivered, and a good file next to them is."""
        inbox = tmp_path / "inbox"
        for name, data, _where, _message in BAD_FILES:
            drop(inbox, name, data)
        drop(inbox, "rows.jsonl", feedback_jsonl(*(row for row, *_ in BAD_DROPPED_ROWS), feedback_record(8)))
        drop(inbox, "nul.csv", feedback_csv(FEEDBACK_ROW.format(n=3, dept=DEPT_CODE).replace("S3", "S\x003")))
        drop(inbox, "good.csv", feedback_csv(FEEDBACK_ROW.format(n=9, dept=DEPT_CODE)))
        path = tmp_path / "credit-gateway.toml"
        config = engine_config("sqlite:///unused.db")
        path.write_text(config.replace('encoding = "gbk"', 'encoding = "utf-8"', 1), encoding="utf-8")  # the source
        async with Gateway(load_config(path), store) as gw:
            assert await gw.run_until_idle(timeout_s=60)
        for name, _data, where, message in BAD_FILES:
            assert (inbox / where / f"{name}.error").read_text(encoding="utf-8").startswith(message), name
        found = await quarantine_by_row(store)
        assert set(found) == {key for _r, key, _f, _m in BAD_DROPPED_ROWS} | {"nul.csv:2"}
        assert "U+0000 at position 2" in found["nul.csv:2"]["matter_code"]  # a CSV cell: its row, not its file
        for _row, key, name, message in BAD_DROPPED_ROWS:
            assert message in found[key][name], (key, found[key])
        delivered = {r["FK_AJBH"] for p in (tmp_path / "outbox").glob("*.csv")
                     for r in csv.DictReader(io.StringIO(p.read_bytes().decode("gbk")))}
        assert delivered == {"AJ-8", "AJ-9"}
        assert {k.split("|")[0] for k in await ledger(store)} == {"AJ-8", "AJ-9"}


# ---------------------------------------------------------------- pushed batches

@pytest.fixture(scope="module")
def rsa_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki-rsa"), "rsa")


class TestPushedBatches:
    @pytest.mark.parametrize(("body", "status", "error", "message"), [
        (b'<?xml version="1.0"?><batch batchId="b-1"><record>', 400, "xml", "line 1"),
        (b"x" * 5000, 413, "too_large", "at most 4000"),
    ], ids=["broken XML", "oversized"])
    async def test_a_broken_or_oversized_body_is_refused_and_nothing_stored(
            self, tmp_path: Path, rsa_pki: Pki, body: bytes, status: int, error: str, message: str) -> None:
        """The answer names the problem (the XML parser's line, the size limit); the store stays empty."""
        path = write_inbound_config(tmp_path, f"sqlite:///{tmp_path / 'store.db'}", rsa_pki, "xmldsig",
                                    max_body_bytes=4000)
        async with endpoint(path) as (_config, store, server):
            pushed = await client(server.url, rsa_pki, "xmldsig").post(body)
            assert await counts(store) == NOTHING
        assert (pushed.status, pushed.answer["error"]) == (status, error) and message in pushed.answer["message"]

    async def test_a_record_with_a_control_character_is_rejected_by_index_and_field(
            self, tmp_path: Path, rsa_pki: Pki) -> None:
        """A pushed record with NUL in the subject's name: rejected naming the field and position, not stored;
        the other record of the batch is accepted."""
        rows = sample_rows(tmp_path, 2)
        rows[0] = {**rows[0], "xdr_mc": "苏州\x00测试有限公司"}
        async with endpoint(write_inbound_config(tmp_path, f"sqlite:///{tmp_path / 'store.db'}", rsa_pki)) as (
                _config, store, server):
            partner = client(server.url, rsa_pki, "cms")
            pushed = await partner.push(partner.batch(rows))
            keys = set(await ledger(store))
        results = pushed.answer["results"]
        assert [r["status"] for r in results] == ["rejected", "accepted"]
        assert results[0]["errors"][0]["field"] == "subject_name"
        assert "U+0000 at position 3" in results[0]["errors"][0]["message"]
        assert keys == {results[1]["recordKey"]}


# ---------------------------------------------------------------- the config and mapping files

class TestConfigAndMappings:
    @pytest.mark.parametrize(("edit", "where"), [
        (lambda t: t + "\n[targets.platform\n", "invalid TOML"),
        (lambda t: t.replace("batch_size = 25", 'batch_size = "25"'), "targets.platform.batch_size"),
        (lambda t: t.replace("poll_interval_s = 1.0", "poll_interval_s = [1]"), "sources.department_penalties"),
        (lambda t: t.replace('log_level = "error"', "log_level = 3"), "daemon.log_level"),
    ], ids=["bad TOML", "text for a number", "list for a number", "number for a name"])
    def test_check_names_the_place_and_exits_2(self, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                               edit: Callable[[str], str], where: str) -> None:
        """`credit-gateway check` on a broken config: exit 2, the file and the TOML path, no traceback."""
        sample = make_department_db(tmp_path, penalties=2)
        path = write_config(tmp_path, url="http://127.0.0.1:9/x", db=sample.path, token=TOKEN)
        path.write_text(edit(path.read_text(encoding="utf-8")), encoding="utf-8")
        assert main(["-c", str(path), "check"]) == 2
        err = capsys.readouterr().err
        assert str(path) in err and where in err and "Traceback" not in err

    def test_a_broken_mapping_edit_names_the_file_and_field(self, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
        """A mapping option of the wrong type: `check` names the mapping file and fields.X.option."""
        shutil.copytree(MAPPINGS, tmp_path / "mappings")
        mapping = tmp_path / "mappings" / "department-penalty.toml"
        mapping.write_text(mapping.read_text(encoding="utf-8").replace(
            'date_format = ["%Y/%m/%d", "%Y-%m-%d"]', "date_format = 42", 1), encoding="utf-8")
        sample = make_department_db(tmp_path, penalties=2)
        path = write_config(tmp_path, url="http://127.0.0.1:9/x", db=sample.path, token=TOKEN)
        text = path.read_text(encoding="utf-8")
        path.write_text(text.replace(MAPPINGS.as_posix(), (tmp_path / "mappings").as_posix()), encoding="utf-8")
        assert main(["-c", str(path), "check"]) == 2
        err = capsys.readouterr().err
        assert "department-penalty.toml" in err and "fields.decision_date.date_format" in err


# ---------------------------------------------------------------- evidence files

def evidence_zip(path: Path, parts: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", method) as z:
        for name, data in parts.items():
            z.writestr(name, data)
    return path


def corrupt_deflate(path: Path) -> Path:
    """A zip whose compressed data is damaged (the directory still reads)."""
    evidence_zip(path, {name: b'{"a": "' + b"x" * 4000 + b'"}' for name in PARTS})
    data = bytearray(path.read_bytes())
    data[60:90] = b"\xff" * 30
    path.write_bytes(bytes(data))
    return path


class TestEvidenceFiles:
    @pytest.mark.parametrize(("make", "message"), [
        (lambda p: p.write_bytes(b"not a zip") or p, "not an evidence file"),
        (lambda p: p.write_bytes(evidence_zip(p, {n: b"{}" for n in PARTS}).read_bytes()[:40]) or p,
         "not an evidence file"),
        (lambda p: evidence_zip(p, {"manifest.json": b"{}"}), "missing sent.bin, answer.json, receipt.json"),
        (lambda p: evidence_zip(p, {**{n: b"{}" for n in PARTS}, "answer.json": b"{"}), "broken JSON"),
        (lambda p: evidence_zip(p, {**{n: b"{}" for n in PARTS}, "manifest.json": b"[1, 2]"}), "manifest.json"),
        (corrupt_deflate, "not an evidence file"),
    ], ids=["not a zip", "truncated", "missing parts", "broken JSON", "JSON not an object", "damaged data"])
    def test_verify_names_the_file_and_the_problem(self, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   make: Callable[[Path], Path], message: str) -> None:
        """`credit-gateway verify` on a damaged evidence file: exit 1 naming the file, no traceback."""
        path = make(tmp_path / "evidence.zip")
        assert main(["verify", str(path)]) == 1
        err = capsys.readouterr().err
        assert str(path) in err and message in err and "Traceback" not in err
