"""Mapping files are reloaded on change; a broken edit is refused and the version in force stays."""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

import pytest

from gateway.config import load_config
from gateway.daemon import Gateway
from gateway.store import open_store
from tests.support.helpers import MAPPINGS, make_department_db, write_config


def _copy_mappings(tmp_path: Path) -> Path:
    target = tmp_path / "mappings"
    shutil.copytree(MAPPINGS, target)
    return target


def _bump(path: Path, text: str) -> None:
    """Rewrite a file with an mtime newer than any mapping file's: a mapping's version is the newest mtime of it
    and its includes, and a checkout may have given the including file a later mtime than this one (file
    systems with coarse clocks would hide the edit too)."""
    stamp = max(path.stat().st_mtime_ns, time.time_ns()) + 1_000_000_000
    path.write_text(text, encoding="utf-8")
    os.utime(path, ns=(stamp, stamp))


@pytest.fixture
async def gateway(tmp_path: Path):  # type: ignore[no-untyped-def]
    mappings = _copy_mappings(tmp_path)
    make_department_db(tmp_path, penalties=5)
    path = write_config(tmp_path, url="http://127.0.0.1:9/api/v1/upload", db=tmp_path / "department.db", token="t")
    path.write_text(path.read_text(encoding="utf-8").replace(str(MAPPINGS.as_posix()), mappings.as_posix()),
                    encoding="utf-8")
    config = load_config(path)
    store = await open_store(config.store_url())
    async with Gateway(config, store) as gw:
        yield gw, mappings
    await store.aclose()


class TestReload:
    async def test_changed_code_table_takes_effect(self, gateway) -> None:  # type: ignore[no-untyped-def]
        """Adding a local code to a code table is picked up without a restart."""
        gw, mappings = gateway
        codes = mappings / "codes" / "department-codes.toml"
        intake = next(iter(gw.intakes.values()))
        old = intake.mappings["penalty"]
        text = codes.read_text(encoding="utf-8")
        _bump(codes, text.replace('"3" = "个体工商户"', '"3" = "个体工商户"\n"8" = "自然人"'))
        await gw.reload_mappings()
        fresh = intake.mappings["penalty"]
        assert fresh is not old and fresh.version > old.version
        table = fresh.converters[[n for n, _ in fresh.converters].index("subject_category")][1]
        assert table({"xdr_lb": "8"}, None) == "自然人"

    async def test_broken_edit_is_refused_and_old_mapping_stays(self, gateway, caplog) -> None:  # type: ignore[no-untyped-def]
        """Invalid TOML leaves the compiled mapping in force and logs the problem with the file."""
        gw, mappings = gateway
        file = mappings / "platform-2019-penalty.toml"
        worker = next(iter(gw.workers.values()))
        old = worker.mappings["penalty"]
        _bump(file, file.read_text(encoding="utf-8") + "\n[fields.CF_BAD\n")
        with caplog.at_level(logging.ERROR, logger="gateway.daemon"):
            await gw.reload_mappings()
        assert worker.mappings["penalty"] is old
        assert any("mapping refused" in r.getMessage() and str(file) in str(getattr(r, "file", ""))
                   for r in caplog.records)

    async def test_option_of_the_wrong_type_is_refused_once(self, gateway, caplog) -> None:  # type: ignore[no-untyped-def]
        """`date_format = 42` in a reload: refused with its TOML path, logged once, no traceback (issue 17, 10)."""
        gw, mappings = gateway
        file = mappings / "department-penalty.toml"
        intake = next(iter(gw.intakes.values()))
        old = intake.mappings["penalty"]
        text = file.read_text(encoding="utf-8")
        _bump(file, text.replace('date_format = ["%Y/%m/%d", "%Y-%m-%d"]', "date_format = 42", 1))
        with caplog.at_level(logging.ERROR, logger="gateway.daemon"):
            await gw.reload_mappings()
            await gw.reload_mappings()
        assert intake.mappings["penalty"] is old
        refused = [r for r in caplog.records if "mapping refused" in r.getMessage()]
        assert len(refused) == 1 and not any(r.exc_info for r in caplog.records)
        assert any("fields.decision_date.date_format" in p for p in getattr(refused[0], "problems", []))
