"""The file-drop adapters: batches written atomically with a manifest, once per batch id, in UTF-8 or GBK;
complete files read from an inbox with a cursor, malformed ones rejected naming file and line."""

from __future__ import annotations

import csv
import hashlib
import io
import os
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import orjson
import pytest

from adapters.file_drop import FileDropSink, FileDropSource
from gateway.adapter import AdapterContext, OutgoingBatch, TargetRecord
from gateway.config import load_config
from gateway.daemon import Gateway
from gateway.errors import PermanentError, RetryableError
from gateway.store import open_store
from gateway.testing import config_text
from tests.support.helpers import MAPPINGS

DEPT_CODE = "11320500014117422Q"


def _ctx(tmp_path: Path, where: str) -> AdapterContext:
    return AdapterContext(where.split(".")[-1], where, tmp_path, DEPT_CODE, "苏州市市场监督管理局")


def make_sink(tmp_path: Path, **raw: Any) -> FileDropSink:
    sink, problems = FileDropSink.from_settings({"directory": "outbox", **raw}, _ctx(tmp_path, "targets.dept"))
    assert problems == [] and sink is not None
    return sink


def make_source(tmp_path: Path, **raw: Any) -> FileDropSource:
    source, problems = FileDropSource.from_settings({"inbox": "inbox", **raw}, _ctx(tmp_path, "sources.fb"))
    assert problems == [] and source is not None
    return source


def records(n: int = 3, extra: dict[str, Any] | None = None) -> list[TargetRecord]:
    return [TargetRecord(f"AJ-{i}", 1, "upsert", {"ajbh": f"AJ-{i}", "ztmc": f"苏州某某有限公司{i}",
                                                  "zjhm": "11010519491231002X", **(extra or {})})
            for i in range(n)]


def batch(sink: FileDropSink, recs: list[TargetRecord], batch_id: str = "b-1") -> OutgoingBatch:
    return OutgoingBatch(batch_id, "sanction_case", sink.encode(batch_id, "sanction_case", "LHJC_AJ", recs), len(recs))


def visible(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# ---------------------------------------------------------------- sink

class TestSink:
    async def test_jsonl_file_with_manifest(self, tmp_path: Path) -> None:
        """A batch becomes one JSON Lines file and a manifest whose count and SHA-256 describe that file."""
        sink = make_sink(tmp_path)
        async with sink:
            receipt = await sink.deliver(batch(sink, records(3)))
        out = tmp_path / "outbox"
        assert visible(out) == ["LHJC_AJ_b-1.jsonl", "LHJC_AJ_b-1.manifest.json"]  # no temporary files left
        data = (out / "LHJC_AJ_b-1.jsonl").read_bytes()
        manifest = orjson.loads((out / "LHJC_AJ_b-1.manifest.json").read_bytes())
        assert manifest["records"] == 3 and manifest["sha256"] == hashlib.sha256(data).hexdigest()
        lines = [orjson.loads(line) for line in data.splitlines()]
        assert [(r["_key"], r["_version"], r["_operation"]) for r in lines] == [(f"AJ-{i}", 1, "upsert")
                                                                              for i in range(3)]
        assert lines[0]["ztmc"] == "苏州某某有限公司0"
        assert [r.status for r in receipt.results] == ["accepted"] * 3
        assert receipt.receipt_id == "LHJC_AJ_b-1.manifest.json"

    async def test_csv_in_gbk(self, tmp_path: Path) -> None:
        """CSV in GBK: a header with the meta columns, Chinese values readable as GBK (and not as UTF-8)."""
        sink = make_sink(tmp_path, format="csv", encoding="gbk")
        async with sink:
            await sink.deliver(batch(sink, records(2, {"bz": "逗号,和\"引号\""})))
        data = (tmp_path / "outbox" / "LHJC_AJ_b-1.csv").read_bytes()
        with pytest.raises(UnicodeDecodeError):
            data.decode("utf-8")
        rows = list(csv.DictReader(io.StringIO(data.decode("gbk"))))
        assert list(rows[0])[:3] == ["_key", "_version", "_operation"]
        assert [r["ztmc"] for r in rows] == ["苏州某某有限公司0", "苏州某某有限公司1"]
        assert rows[1]["bz"] == "逗号,和\"引号\""

    async def test_character_outside_the_encoding_rejects_that_record(self, tmp_path: Path) -> None:
        """A value GBK cannot hold rejects its record, naming the field; the others are written."""
        sink = make_sink(tmp_path, format="csv", encoding="gbk")
        recs = records(3)
        recs[1] = TargetRecord("AJ-1", 1, "upsert", {"ajbh": "AJ-1", "ztmc": "表情😀公司"})
        async with sink:
            receipt = await sink.deliver(batch(sink, recs))
        assert [r.status for r in receipt.results] == ["accepted", "rejected", "accepted"]
        assert receipt.results[1].code == "encoding" and receipt.results[1].message.startswith("ztmc:")
        manifest = orjson.loads((tmp_path / "outbox" / "LHJC_AJ_b-1.manifest.json").read_bytes())
        rows = list(csv.DictReader(io.StringIO((tmp_path / "outbox" / "LHJC_AJ_b-1.csv").read_bytes().decode("gbk"))))
        assert manifest["records"] == 2 and [r["_key"] for r in rows] == ["AJ-0", "AJ-2"]

    async def test_redelivery_writes_nothing_and_answers_duplicate(self, tmp_path: Path) -> None:
        """The same batch again (its answer was lost) is answered from the manifest; the file is untouched."""
        sink = make_sink(tmp_path)
        outgoing = batch(sink, records(2))
        async with sink:
            await sink.deliver(outgoing)
            path = tmp_path / "outbox" / "LHJC_AJ_b-1.jsonl"
            before = (path.read_bytes(), path.stat().st_mtime_ns)
            again = await sink.deliver(outgoing)
            assert [r.status for r in again.results] == ["duplicate", "duplicate"]
            assert (path.read_bytes(), path.stat().st_mtime_ns) == before
            assert len(visible(tmp_path / "outbox")) == 2
            with pytest.raises(PermanentError, match="different body"):
                await sink.deliver(batch(sink, records(1)))

    async def test_failed_write_leaves_nothing_under_the_final_name(self, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
        """A write that fails half way (fsync error) shows no data file or manifest; the retry writes both."""
        sink = make_sink(tmp_path)
        real_fsync, calls = os.fsync, []

        def failing_fsync(fd: int) -> None:
            calls.append(fd)
            if len(calls) == 1:
                raise OSError(5, "Input/output error")
            real_fsync(fd)

        monkeypatch.setattr(os, "fsync", failing_fsync)
        outgoing = batch(sink, records(2))
        async with sink:
            with pytest.raises(RetryableError, match="cannot write"):
                await sink.deliver(outgoing)
            assert visible(tmp_path / "outbox") == []  # not even the temporary file
            receipt = await sink.deliver(outgoing)
        assert [r.status for r in receipt.results] == ["accepted", "accepted"]
        assert "LHJC_AJ_b-1.manifest.json" in visible(tmp_path / "outbox")

    def test_settings_problems_name_the_path(self, tmp_path: Path) -> None:
        """Bad settings are reported with their TOML path."""
        (tmp_path / "afile").write_text("x")
        _, problems = FileDropSink.from_settings({"directory": "afile", "encoding": "klingon", "format": "xml"},
                                                 _ctx(tmp_path, "targets.dept"))
        assert {p.path for p in problems} == {"targets.dept.format"}
        _, problems = FileDropSink.from_settings({"directory": "afile", "encoding": "klingon"},
                                                 _ctx(tmp_path, "targets.dept"))
        assert {p.path for p in problems} == {"targets.dept.encoding", "targets.dept.directory"}


# ---------------------------------------------------------------- source

FEEDBACK_HEADER = "ajbh,csbm,sxbm,sxmc,jg,zxrq,zxbm,zxbmdm,dfbm"


def drop(inbox: Path, name: str, data: bytes, marker: bool = True) -> Path:
    inbox.mkdir(parents=True, exist_ok=True)
    path = inbox / name
    path.write_bytes(data)
    if marker:
        (inbox / f"{name}.done").write_bytes(b"")
    return path


def jsonl(*rows: dict[str, Any]) -> bytes:
    return b"".join(orjson.dumps(r) + b"\n" for r in rows)


async def drain(source: FileDropSource, cursor: Any = None, limit: int = 100) -> tuple[list[Any], Any]:
    """Fetch and ack until the source has nothing more, as the engine does; returns the rows and the cursor."""
    rows: list[Any] = []
    while True:
        page = await source.fetch(cursor, limit)
        if page.rows:
            rows += page.rows
            cursor = page.cursor
            await source.ack(cursor)
        if not page.more:
            return rows, cursor


class TestSourceReadiness:
    async def test_file_without_marker_is_not_read(self, tmp_path: Path) -> None:
        """A partially written file (no marker yet) is not read; once complete and marked, all of it is."""
        inbox = tmp_path / "inbox"
        full = jsonl(*({"ajbh": f"AJ-{i}", "sxbm": "S1"} for i in range(4)))
        drop(inbox, "fk-001.jsonl", full[: len(full) // 2 + 3], marker=False)  # half a file, cut mid-line
        source = make_source(tmp_path)
        rows, _ = await drain(source)
        assert rows == [] and (inbox / "fk-001.jsonl").exists()
        drop(inbox, "fk-001.jsonl", full)
        rows, _ = await drain(source)
        assert [r.data["ajbh"] for r in rows] == ["AJ-0", "AJ-1", "AJ-2", "AJ-3"]
        assert [r.key for r in rows] == ["fk-001.jsonl:1", "fk-001.jsonl:2", "fk-001.jsonl:3", "fk-001.jsonl:4"]
        assert visible(inbox) == ["done"] and visible(inbox / "done") == ["fk-001.jsonl"]

    async def test_rename_convention_skips_part_files(self, tmp_path: Path) -> None:
        """With ready = "rename", a .part file is not read; after the rename it is."""
        inbox = tmp_path / "inbox"
        row = "AJ-1,M1,S1,事项,1,2026-11-20,部门,X,320500"
        part = drop(inbox, "fk-002.csv.part", f"{FEEDBACK_HEADER}\n{row}\n".encode(), marker=False)
        source = make_source(tmp_path, ready="rename")
        assert (await drain(source))[0] == []
        part.rename(inbox / "fk-002.csv")
        rows, _ = await drain(source)
        assert [r.data["sxmc"] for r in rows] == ["事项"]


class TestSourceEncodingAndErrors:
    async def test_gbk_csv(self, tmp_path: Path) -> None:
        """A GBK CSV is read with encoding = "gbk"."""
        text = f"{FEEDBACK_HEADER}\nAJ-1,M1,S1,企业登记,已惩戒,2026-11-20,苏州市市场监督管理局,X,320500\n"
        drop(tmp_path / "inbox", "fk.csv", text.encode("gbk"))
        rows, _ = await drain(make_source(tmp_path, encoding="gbk"))
        assert rows[0].data["sxmc"] == "企业登记" and rows[0].data["zxbm"] == "苏州市市场监督管理局"

    async def test_gbk_file_read_as_utf8_is_rejected_with_a_hint(self, tmp_path: Path) -> None:
        """The wrong encoding rejects the whole file, naming file, line and byte, and suggesting GBK."""
        inbox = tmp_path / "inbox"
        text = f"{FEEDBACK_HEADER}\nAJ-1,M1,S1,事项,1,2026-11-20,部门,X,320500\n"
        drop(inbox, "fk.csv", text.encode("gbk"))
        rows, _ = await drain(make_source(tmp_path))
        error = (inbox / "rejected" / "fk.csv.error").read_text(encoding="utf-8")
        assert rows == [] and error.startswith("fk.csv line 2: not utf-8 at byte") and "gbk" in error
        assert visible(inbox / "rejected") == ["fk.csv", "fk.csv.error"]

    async def test_malformed_json_line_names_file_and_line(self, tmp_path: Path) -> None:
        """A bad line rejects its file (nothing of it is read) and the next file is read as usual."""
        inbox = tmp_path / "inbox"
        drop(inbox, "a.jsonl", jsonl({"ajbh": "AJ-1"}, {"ajbh": "AJ-2"}) + b'{"ajbh": "AJ-3",\n')
        drop(inbox, "b.jsonl", jsonl({"ajbh": "AJ-9"}))
        rows, _ = await drain(make_source(tmp_path))
        assert [r.data["ajbh"] for r in rows] == ["AJ-9"]
        assert (inbox / "rejected" / "a.jsonl.error").read_text(encoding="utf-8").startswith(
            "a.jsonl line 3: invalid JSON")

    async def test_csv_row_with_wrong_field_count(self, tmp_path: Path) -> None:
        """A CSV row with more fields than the header is named by file and line."""
        text = (f"{FEEDBACK_HEADER}\nAJ-1,M1,S1,事项,1,2026-11-20,部门,X,320500\n"
                "AJ-2,M1,S1,事项,1,extra,2026-11-20,部门,X,320500\n")
        drop(tmp_path / "inbox", "c.csv", text.encode())
        rows, _ = await drain(make_source(tmp_path))
        error = (tmp_path / "inbox" / "rejected" / "c.csv.error").read_text(encoding="utf-8")
        assert rows == [] and error == "c.csv line 3: 10 fields, the header has 9\n"

    async def test_line_separators_inside_json_strings_are_text(self, tmp_path: Path) -> None:
        """U+2028, U+2029 and U+0085 may stand unescaped inside a JSON string (text pasted from Word or a web
        page; orjson writes them so): they are part of the value, not line ends, and the file is read."""
        inbox = tmp_path / "inbox"
        values = ["已惩戒\u2028见附件", "a\u2029b\x85c"]
        drop(inbox, "e.jsonl", jsonl(*({"ajbh": f"AJ-{i}", "jg": v} for i, v in enumerate(values))))
        rows, _ = await drain(make_source(tmp_path))
        assert [(r.key, r.data["jg"]) for r in rows] == [("e.jsonl:1", values[0]), ("e.jsonl:2", values[1])]
        assert not (inbox / "rejected").exists()

    async def test_json_line_that_is_not_an_object(self, tmp_path: Path) -> None:
        """A JSON line that is an array is malformed."""
        drop(tmp_path / "inbox", "d.jsonl", b'{"ajbh": "AJ-1"}\n["AJ-2"]\n')
        await drain(make_source(tmp_path))
        error = (tmp_path / "inbox" / "rejected" / "d.jsonl.error").read_text(encoding="utf-8")
        assert error == "d.jsonl line 2: expected a JSON object, got list\n"


class TestSourceCursor:
    async def test_pages_move_the_file_only_after_the_last_ack(self, tmp_path: Path) -> None:
        """A file read in pages stays in the inbox until the page that finishes it is acknowledged."""
        inbox = tmp_path / "inbox"
        drop(inbox, "f.jsonl", jsonl(*({"n": i} for i in range(5))))
        source = make_source(tmp_path)
        first = await source.fetch(None, 2)
        second = await source.fetch(first.cursor, 2)
        third = await source.fetch(second.cursor, 2)
        assert [[r.data["n"] for r in p.rows] for p in (first, second, third)] == [[0, 1], [2, 3], [4]]
        assert third.cursor["done"] and not second.cursor["done"]
        await source.ack(second.cursor)
        assert (inbox / "f.jsonl").exists()
        after = await source.fetch(third.cursor, 2)  # read ahead: the finished file is not read again
        assert after.rows == [] and not after.more
        await source.ack(third.cursor)
        assert not (inbox / "f.jsonl").exists() and (inbox / "done" / "f.jsonl").exists()

    async def test_read_ahead_does_not_read_a_finished_file_again(self, tmp_path: Path) -> None:
        """The engine reads the next file before the previous one is acknowledged: each file is read once."""
        inbox = tmp_path / "inbox"
        for name in ("a.jsonl", "b.jsonl", "c.jsonl"):
            drop(inbox, name, jsonl({"f": name}))
        source = make_source(tmp_path)
        pages = [await source.fetch(None, 10)]
        while pages[-1].more and len(pages) < 6:  # before the fix: a, b, c, a, b, c, ...
            pages.append(await source.fetch(pages[-1].cursor, 10))
        assert [r.key for p in pages for r in p.rows] == ["a.jsonl:1", "b.jsonl:1", "c.jsonl:1"]
        for page in pages:
            await source.ack(page.cursor)
        assert visible(inbox) == ["done"] and (await source.fetch(pages[-1].cursor, 10)).rows == []

    async def test_pages_not_committed_are_read_again(self, tmp_path: Path) -> None:
        """A poll that failed after reading ahead: the next poll, from the committed cursor, reads those files."""
        inbox = tmp_path / "inbox"
        for name in ("a.jsonl", "b.jsonl"):
            drop(inbox, name, jsonl({"f": name}))
        source = make_source(tmp_path)
        first = await source.fetch(None, 10)
        await source.fetch(first.cursor, 10)  # b read ahead, then the commit of a failed
        rows, _ = await drain(source)
        assert [r.key for r in rows] == ["a.jsonl:1", "b.jsonl:1"]

    async def test_restart_between_commit_and_ack(self, tmp_path: Path) -> None:
        """The stored cursor finished a file that is still in the inbox: a new process moves it, reads nothing."""
        inbox = tmp_path / "inbox"
        drop(inbox, "f.jsonl", jsonl({"n": 1}, {"n": 2}))
        page = await make_source(tmp_path).fetch(None, 10)  # committed, then the process died before ack
        restarted = make_source(tmp_path)
        again = await restarted.fetch(page.cursor, 10)
        assert again.rows == [] and (inbox / "done" / "f.jsonl").exists() and not (inbox / "f.jsonl").exists()

    async def test_restart_in_the_middle_of_a_file(self, tmp_path: Path) -> None:
        """A stored cursor in the middle of a file resumes after the rows taken."""
        drop(tmp_path / "inbox", "f.jsonl", jsonl(*({"n": i} for i in range(4))))
        page = await make_source(tmp_path).fetch(None, 3)
        rows, _ = await drain(make_source(tmp_path), page.cursor)
        assert [r.data["n"] for r in rows] == [3]

    async def test_new_file_under_an_old_name_is_read(self, tmp_path: Path) -> None:
        """The department reuses a file name: the new file is read, done/ keeps both."""
        inbox = tmp_path / "inbox"
        source = make_source(tmp_path)
        drop(inbox, "f.jsonl", jsonl({"n": 1}))
        _, cursor = await drain(source)
        drop(inbox, "f.jsonl", jsonl({"n": 2}, {"n": 3}))
        rows, _ = await drain(source, cursor)
        assert [r.data["n"] for r in rows] == [2, 3]
        assert visible(inbox / "done") == ["f.1.jsonl", "f.jsonl"]


# ---------------------------------------------------------------- through the engine and the store

def engine_config(store_url: str) -> str:
    mappings = MAPPINGS.as_posix()
    return config_text(
        gateway={"department_code": DEPT_CODE},
        store={"url": store_url},
        daemon={"log_format": "text", "log_level": "error", "map_workers": 0, "idle_check_s": 0.05},
        sources={"feedback_files": {"type": "file_drop", "inbox": "inbox", "encoding": "gbk",
                                    "mapping": f"{mappings}/department-sanction-feedback.toml"}},
        targets={"drop": {"type": "file_drop", "directory": "outbox", "format": "csv", "encoding": "gbk",
                          "datasets": {"sanction_feedback": f"{mappings}/platform-sanction-feedback.toml"},
                          "external": False}})


class TestThroughTheGateway:
    async def test_dropped_feedback_goes_through_the_pipeline(self, tmp_path: Path, store_url: str) -> None:
        """Valid rows of a dropped GBK file are delivered as a GBK file; a bad row is quarantined as file:line."""
        rows = [f"AJ-{i},M1,S{i},行政许可申请,{'已惩戒' if i else '不知道'},2026-11-20,苏州市市场监督管理局,"
                f"{DEPT_CODE},320500" for i in range(3)]
        drop(tmp_path / "inbox", "fk-20261120.csv", (FEEDBACK_HEADER + "\n" + "\n".join(rows) + "\n").encode("gbk"))
        path = tmp_path / "credit-gateway.toml"
        path.write_text(engine_config(store_url), encoding="utf-8")
        store = await open_store(store_url)
        try:
            async with Gateway(load_config(path), store) as gw:
                assert await gw.run_until_idle(timeout_s=30)
            quarantined = await store.reports.list_quarantine("open", "mapping")
        finally:
            await store.aclose()
        assert [(q["source_key"], q["reasons"][0]["field"]) for q in quarantined] == [("fk-20261120.csv:2", "result")]
        written = next((tmp_path / "outbox").glob("*.csv")).read_bytes().decode("gbk")
        delivered = list(csv.DictReader(io.StringIO(written)))
        assert sorted(r["FK_AJBH"] for r in delivered) == ["AJ-1", "AJ-2"]
        assert {r["FK_JG"] for r in delivered} == {"已惩戒"} and {r["FK_SXMC"] for r in delivered} == {"行政许可申请"}
        assert (tmp_path / "inbox" / "done" / "fk-20261120.csv").exists()


    async def test_each_file_is_read_once_while_pages_commit(self, tmp_path: Path, store_url: str) -> None:
        """Three files in pages of two rows: every row read, committed and quarantined once (issue 17, 12)."""
        rows = [f"AJ-{i},M1,S{i},行政许可申请,{'已惩戒' if i else '不知道'},2026-11-20,苏州市市场监督管理局,"
                f"{DEPT_CODE},320500" for i in range(3)]
        for name in ("a", "b", "c"):
            text = FEEDBACK_HEADER + "\n" + "\n".join(r.replace("AJ-", f"AJ{name}-") for r in rows) + "\n"
            drop(tmp_path / "inbox", f"{name}.csv", text.encode("gbk"))
        path = tmp_path / "credit-gateway.toml"
        config = engine_config(store_url)
        path.write_text(config.replace('encoding = "gbk"\n', 'encoding = "gbk"\nbatch_size = 2\n', 1), encoding="utf-8")
        store = await open_store(store_url)
        try:
            async with Gateway(load_config(path), store) as gw:
                assert await gw.run_until_idle(timeout_s=30)
                stats = gw.intakes["feedback_files"].stats
            quarantined = await store.reports.list_quarantine("open", "mapping")
            counts = await store.reports.counts()
        finally:
            await store.aclose()
        assert (stats.rows, stats.accepted, stats.unchanged, stats.quarantined) == (9, 6, 0, 3)
        assert counts["rows_read"] == 9 and [q["hits"] for q in quarantined] == [1, 1, 1]


class TestRegistration:
    @pytest.mark.parametrize("group", ["credit_gateway.sources", "credit_gateway.sinks"])
    def test_file_drop_is_registered_in_both_groups(self, group: str) -> None:
        """`type = "file_drop"` names the source and the sink through entry points, like any adapter."""
        ep = next(ep for ep in entry_points(group=group) if ep.name == "file_drop")
        assert ep.load() is (FileDropSource if group.endswith("sources") else FileDropSink)

    def test_platform_cases_source_is_registered(self) -> None:
        """`type = "platform_cases"` names the case-feed source."""
        ep = next(ep for ep in entry_points(group="credit_gateway.sources") if ep.name == "platform_cases")
        assert callable(getattr(ep.load(), "from_settings", None))
