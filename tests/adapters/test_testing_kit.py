"""The fakes and the config writer of gateway.testing, and the pytest plugin's fixtures."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from gateway.adapter import OutgoingBatch, Sink, Source, SourceRow, TargetRecord
from gateway.config import load_config
from gateway.errors import PermanentError, RetryableError
from gateway.sandbox.server import Sandbox
from gateway.store import Store
from gateway.testing import DEPARTMENT_CODE, FlakySink, MemorySink, MemorySource, RaisingSink, config_text
from gateway.testing.department_db import SampleResult

ROOT = Path(__file__).resolve().parents[2]
RECORDS = [TargetRecord("a", 1, "upsert", {"n": 1}), TargetRecord("b", 2, "upsert", {"n": 2})]


def rows(*keys: str) -> list[SourceRow]:
    return [SourceRow(k, {"k": k}) for k in keys]


def batch(sink: Sink) -> OutgoingBatch:
    return OutgoingBatch("b-1", "penalty", sink.encode("b-1", "penalty", "XZCF", RECORDS), len(RECORDS))


class TestMemorySource:
    async def test_pages_split_at_limit_and_end(self) -> None:
        """Fetch gives at most ``limit`` rows, walks every page, then says there is no more."""
        source = MemorySource([rows("a", "b", "c"), [], rows("d")])
        assert isinstance(source, Source)
        seen, cursor, more = [], None, True
        async with source:
            while more:
                page = await source.fetch(cursor, 2)
                assert len(page.rows) <= 2
                seen += [r.key for r in page.rows]
                cursor, more = page.cursor, page.more
        assert seen == ["a", "b", "c", "d"]
        assert (await source.fetch(cursor, 2)).rows == []

    async def test_records_acks(self) -> None:
        """Every ack's cursor is kept, in order."""
        source = MemorySource([rows("a")])
        page = await source.fetch(None, 5)
        await source.ack(page.cursor)
        assert source.acked == [page.cursor]


class TestMemorySink:
    async def test_answers_each_record(self) -> None:
        """Records are accepted unless ``results`` names another status for their key."""
        sink = MemorySink(results={"b": "rejected"})
        assert isinstance(sink, Sink)
        receipt = await sink.deliver(batch(sink))
        assert [(r.key, r.status) for r in receipt.results] == [("a", "accepted"), ("b", "rejected")]
        assert [r["key"] for r in sink.delivered()] == ["a", "b"]

    def test_encode_is_deterministic(self) -> None:
        """The same records give the same body."""
        sink = MemorySink()
        assert sink.encode("x", "penalty", "XZCF", RECORDS) == sink.encode("x", "penalty", "XZCF", list(RECORDS))


class TestFlakySink:
    async def test_fails_then_delivers(self) -> None:
        """The first ``fail_times`` deliveries raise the error; later ones reach the inner sink."""
        inner = MemorySink()
        sink = FlakySink(inner, fail_times=2)
        for _ in range(2):
            with pytest.raises(RetryableError):
                await sink.deliver(batch(sink))
        await sink.deliver(batch(sink))
        assert (sink.calls, len(inner.batches)) == (3, 1)

    async def test_raises_the_given_error(self) -> None:
        """An error instance is raised as it is."""
        sink = FlakySink(MemorySink(), fail_times=1, error=PermanentError("no"))
        with pytest.raises(PermanentError, match="no"):
            await sink.deliver(batch(sink))

    async def test_raising_sink_leaks_a_runtime_error(self) -> None:
        """RaisingSink plays an adapter bug: a RuntimeError, outside gateway.errors."""
        sink = RaisingSink(MemorySink(), failures=1)
        with pytest.raises(RuntimeError):
            await sink.deliver(batch(sink))


class TestConfigText:
    def test_gateway_is_filled_in_and_tables_nest(self) -> None:
        """[gateway] gets a department; named tables become [section.name], other tables inline."""
        text = config_text(targets={"t": {"type": "file_drop", "datasets": {"penalty": "m.toml"}}},
                           daemon={"log_level": "error"})
        doc = tomllib.loads(text)
        assert doc["gateway"]["department_code"] == DEPARTMENT_CODE
        assert doc["targets"]["t"] == {"type": "file_drop", "datasets": {"penalty": "m.toml"}}
        assert "[targets.t]" in text and doc["daemon"] == {"log_level": "error"}

    def test_loads_as_a_gateway_config(self, tmp_path: Path) -> None:
        """A config written with config_text is one load_config accepts."""
        mappings = (ROOT / "mappings").as_posix()
        path = tmp_path / "gateway.toml"
        path.write_text(config_text(
            gateway={"department_name": "测试局"},
            store={"url": "sqlite:///store.db"},
            sources={"drop": {"type": "file_drop", "inbox": "inbox",
                              "mapping": f"{mappings}/department-sanction-feedback.toml"}},
            targets={"out": {"type": "file_drop", "directory": "outbox", "external": False,
                             "datasets": {"sanction_feedback": f"{mappings}/platform-sanction-feedback.toml"}}}),
            encoding="utf-8")
        config = load_config(path)
        assert config.gateway.department_name == "测试局"
        assert list(config.targets) == ["out"]


class TestPlugin:
    async def test_fixtures(self, gateway_sandbox: Sandbox, gateway_store: Store, department_db: SampleResult) -> None:
        """The plugin's fixtures give a running sandbox, an open store and a filled department database."""
        assert gateway_sandbox.url.startswith("http://127.0.0.1:")
        assert await gateway_store.reports.target_status() == []
        assert department_db.penalties == 20 and department_db.path.exists()

    def test_registered_for_pytest(self) -> None:
        """pytest loads the plugin through its pytest11 entry point (warnings as errors)."""
        done = subprocess.run([sys.executable, "-m", "pytest", "-W", "error", "--fixtures", "-p", "no:cacheprovider",
                               str(Path(__file__))], capture_output=True, text=True, cwd=ROOT, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "gateway_sandbox" in done.stdout and "department_db" in done.stdout
