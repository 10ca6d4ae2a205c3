"""The conformance kit (gateway.testing.contract) applied to every registered adapter, as a third party would."""

from __future__ import annotations

import sqlite3
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, ClassVar

import orjson
import pytest

from gateway.adapter import SINK_GROUP, SOURCE_GROUP
from gateway.domain.datasets import RED_LIST
from gateway.sandbox.server import Sandbox
from gateway.testing import DEPARTMENT_CODE
from gateway.testing.contract import SinkContract, SourceContract, free_port
from gateway.testing.department_db import SampleResult

ROWS = 8  # more than 2 * SourceContract.limit

# ---------------------------------------------------------------- sources


class TestSqlSourceContract(SourceContract):
    adapter_type = "sql"

    @pytest.fixture
    def source_settings(self, department_db: SampleResult) -> dict[str, Any]:
        # lookback_s = 0: the contract compares plain pages (a poll's first page re-reads the look-back window)
        return {"url": f"sqlite:///{department_db.path}", "table": "xzcf", "lookback_s": 0}

    def unreachable_settings(self, tmp_path: Path) -> dict[str, Any]:
        return {"url": f"postgresql://cg@127.0.0.1:{free_port()}/nowhere", "table": "xzcf"}


class TestFileDropSourceContract(SourceContract):
    adapter_type = "file_drop"

    @pytest.fixture
    def source_settings(self, tmp_path: Path) -> dict[str, Any]:
        inbox = tmp_path / "inbox"
        inbox.mkdir()
        lines = b"".join(orjson.dumps({"id": str(n), "name": f"row {n}"}) + b"\n" for n in range(ROWS))
        (inbox / "rows.jsonl").write_bytes(lines)
        (inbox / "rows.jsonl.done").write_bytes(b"")
        return {"inbox": "inbox"}


class TestPlatformCasesSourceContract(SourceContract):
    adapter_type = "platform_cases"

    @pytest.fixture
    def source_settings(self, gateway_sandbox: Sandbox, tmp_path: Path) -> dict[str, Any]:
        gateway_sandbox.sanctions.issue([{"LH_AJBH": f"LH-2026-{n:04d}", "LH_ZTMC": f"企业{n}"} for n in range(ROWS)],
                                        department=DEPARTMENT_CODE)
        return platform_settings(gateway_sandbox, tmp_path, "/api/v1/sanctions/cases", require_signature=False)

    def unreachable_settings(self, tmp_path: Path) -> dict[str, Any]:
        return {"url": f"http://127.0.0.1:{free_port()}/cases", "token_file": str(token_file(tmp_path, "t")),
                "require_signature": False}


class TestPlatformListsSourceContract(SourceContract):
    adapter_type = "platform_lists"

    @pytest.fixture
    def source_settings(self, gateway_sandbox: Sandbox, tmp_path: Path) -> dict[str, Any]:
        gateway_sandbox.lists.publish("RED-2026", RED_LIST, [{"TYSHXYDM": f"9132050000000{n:04d}X", "ZTMC": f"企业{n}"}
                                                             for n in range(ROWS)])
        return platform_settings(gateway_sandbox, tmp_path, "/api/v1")

    def unreachable_settings(self, tmp_path: Path) -> dict[str, Any]:
        return {"url": f"http://127.0.0.1:{free_port()}/api/v1", "token_file": str(token_file(tmp_path, "t"))}


def token_file(tmp_path: Path, token: str) -> Path:
    path = tmp_path / "token"
    path.write_text(token + "\n", encoding="utf-8")
    return path


def platform_settings(sandbox: Sandbox, tmp_path: Path, path: str, **more: Any) -> dict[str, Any]:
    return {"url": sandbox.url + path, "token_file": str(token_file(tmp_path, sandbox.config.token)), **more}


# ---------------------------------------------------------------- sinks


class TestCreditPlatformSinkContract(SinkContract):
    adapter_type = "credit_platform"
    settings: ClassVar[dict[str, Any]] = {"url": "http://127.0.0.1:9/api/v1/upload", "token_env": "CG_CONTRACT_TOKEN"}

    @pytest.fixture
    def sink_settings(self, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
        monkeypatch.setenv("CG_CONTRACT_TOKEN", "contract-token")
        return dict(self.settings)

    def http_settings(self, url: str, token_file: Path, timeout_s: float) -> dict[str, Any]:
        return {"url": url + "/api/v1/upload", "token_file": str(token_file), "timeout_s": timeout_s}


class TestFileDropSinkContract(SinkContract):
    adapter_type = "file_drop"
    settings: ClassVar[dict[str, Any]] = {"directory": "outbox"}


class TestSqlSinkContract(SinkContract):
    adapter_type = "sql"
    fields: ClassVar[dict[str, tuple[str, ...]]] = {"penalty": ("name", "amount")}

    @pytest.fixture
    def sink_settings(self, tmp_path: Path) -> dict[str, Any]:
        with sqlite3.connect(tmp_path / "dept.db") as conn:
            conn.execute("CREATE TABLE penalties (name TEXT PRIMARY KEY, amount INTEGER)")
        conn.close()
        return {"url": f"sqlite:///{tmp_path / 'dept.db'}", "tables": tables()}

    def unreachable_settings(self, tmp_path: Path) -> dict[str, Any]:
        return {"url": f"postgresql://cg@127.0.0.1:{free_port()}/nowhere", "tables": tables()}


class TestNationalFrontDbSinkContract(SinkContract):
    adapter_type = "national_frontdb"
    fields: ClassVar[dict[str, tuple[str, ...]]] = {"penalty": ("name", "amount")}

    @pytest.fixture
    def sink_settings(self, tmp_path: Path) -> dict[str, Any]:
        return {"url": f"sqlite:///{tmp_path / 'front.db'}", "region_code": "320000"}

    def unreachable_settings(self, tmp_path: Path) -> dict[str, Any]:
        return {"url": f"postgresql://cg@127.0.0.1:{free_port()}/nowhere", "region_code": "320000"}


def tables() -> dict[str, Any]:
    return {"penalty": {"table": "penalties", "key_columns": ["name"]}}


# ---------------------------------------------------------------- every registered adapter has its contract

CONTRACTS = {(SOURCE_GROUP, c.adapter_type) for c in (TestSqlSourceContract, TestFileDropSourceContract,
                                                      TestPlatformCasesSourceContract, TestPlatformListsSourceContract)}
CONTRACTS |= {(SINK_GROUP, c.adapter_type) for c in (TestCreditPlatformSinkContract, TestFileDropSinkContract,
                                                     TestSqlSinkContract, TestNationalFrontDbSinkContract)}


def test_every_first_party_adapter_has_a_contract() -> None:
    """Each adapter registered by this package (entry point under adapters.) is under its contract here."""
    registered = {(group, ep.name) for group in (SOURCE_GROUP, SINK_GROUP) for ep in entry_points(group=group)
                  if ep.value.startswith("adapters.")}
    assert len(registered) == 8
    assert registered == CONTRACTS
