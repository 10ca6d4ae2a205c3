"""`credit-gateway lists status|reconcile|conflicts`, the list line of `status`, the daemon's reconciliation job,
and the `[lists]` settings: on a real sandbox, store (SQLite and PostgreSQL) and SQLite department table."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from gateway import report
from gateway.cli import build_parser
from gateway.cli.lists import cmd_lists
from gateway.config import Config, load_config
from gateway.daemon import Gateway
from gateway.domain.datasets import BLACK_LIST, RED_LIST
from gateway.errors import ConfigError
from gateway.sandbox.server import Sandbox
from gateway.store import Store
from gateway.store import schema as s
from gateway.testing import config_text
from tests.support.helpers import select_rows
from tests.support.list_helpers import (
    dept_rows,
    dept_sql,
    list_config,
    make_dept_db,
    org_item,
    person_item,
    resident_id,
    uscc,
)

RED, BLACK = "RED-2026", "BLACK-2026"


async def lists_cli(config: Config, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    args = build_parser().parse_args(["-c", str(config.path), "lists", *argv])
    code = await cmd_lists(args)
    return code, capsys.readouterr().out


@pytest.fixture
async def prepared(tmp_path: Path, sandbox: Sandbox, store: Store, store_url: str) -> tuple[Config, Path]:
    """Two lists delivered to the department, one red/black conflict held, one row edited at the department."""
    dept = make_dept_db(tmp_path / "department.db")
    config = list_config(tmp_path, url=sandbox.url, store_url=store_url, dept=dept)
    sandbox.lists.publish(BLACK, BLACK_LIST, [org_item(1), person_item(2)])
    sandbox.lists.publish(RED, RED_LIST, [org_item(1), org_item(3), org_item(4)])
    async with Gateway(config, store) as gw:
        assert await gw.run_until_idle(timeout_s=30)
    dept_sql(dept, ("UPDATE dept_credit_list SET reason = 'edited' WHERE record_key = ?", [f"{RED}|{uscc(3)}|"]))
    return config, dept


async def test_status_reconcile_conflicts(prepared: tuple[Config, Path], store: Store,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    config, dept = prepared
    code, text = await lists_cli(config, capsys, "status")
    assert code == 1 and "drift: 1 changed" in text and "red/black conflicts held back: 1" in text
    assert "= platform, 1 held" in text
    code, text = await lists_cli(config, capsys, "status", "--json")
    doc = orjson.loads(text)
    red = next(v for v in doc["lists"] if v["list_code"] == RED)
    assert red["ledger"]["matches_platform"] and red["ledger"]["held"] == 1 and doc["conflicts"] == 1
    assert (red["targets"][0]["changed"], red["targets"][0]["in_sync"]) == (1, False)

    queued_before = len(await select_rows(store, s.outbox, order=s.outbox.c.id))
    code, text = await lists_cli(config, capsys, "reconcile", "--dry-run")
    assert code == 0 and "would re-send" in text
    assert len(await select_rows(store, s.outbox, order=s.outbox.c.id)) == queued_before
    code, text = await lists_cli(config, capsys, "reconcile", "--json")
    assert {r["list_code"]: r["requeued"] for r in orjson.loads(text)} == {BLACK: 0, RED: 1}
    async with Gateway(config, store) as gw:
        assert await gw.run_until_idle(timeout_s=30)
    assert dept_rows(dept)[f"{RED}|{uscc(3)}|"]["reason"] == "事由3"
    code, text = await lists_cli(config, capsys, "status")
    assert code == 0 and "drift" not in text and text.count("= ledger") == 2

    code, text = await lists_cli(config, capsys, "conflicts")
    assert f"red    {RED}|{uscc(1)}|" in text and f"black  {BLACK}|{uscc(1)}|" in text
    assert "subject_name=苏州测试企业1有限公司" in text
    await report.print_status(store)
    assert "credit lists: 2 list(s), 5 entries listed, 1 red/black conflict(s) held back" in capsys.readouterr().out


async def test_person_ids_are_masked_in_conflicts(tmp_path: Path, sandbox: Sandbox, store: Store, store_url: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    config = list_config(tmp_path, url=sandbox.url, store_url=store_url, dept=make_dept_db(tmp_path / "d.db"))
    sandbox.lists.publish(BLACK, BLACK_LIST, [person_item(7)])
    sandbox.lists.publish(RED, RED_LIST, [person_item(7)])
    async with Gateway(config, store) as gw:
        assert await gw.run_until_idle(timeout_s=30)
    for argv in (["conflicts"], ["conflicts", "--json"]):
        code, text = await lists_cli(config, capsys, *argv)
        assert code == 0 and resident_id(7)[-4:] in text and resident_id(7) not in text


async def test_daemon_job_repairs_with_the_adapters_it_has_open(prepared: tuple[Config, Path], store: Store) -> None:
    """The scheduled job uses the running gateway's adapters and wakes the workers."""
    config, dept = prepared
    dept_sql(dept, ("DELETE FROM dept_credit_list WHERE record_key = ?", [f"{BLACK}|{uscc(1)}|"]))
    async with Gateway(config, store) as gw:
        await gw.reconcile_lists()
        assert await gw.run_until_idle(timeout_s=30)
        await gw.reconcile_lists()  # in sync now: nothing more is queued
    rows = dept_rows(dept)
    assert rows[f"{BLACK}|{uscc(1)}|"]["subject_name"] == "苏州测试企业1有限公司"
    assert rows[f"{RED}|{uscc(3)}|"]["reason"] == "事由3"
    repairs = [e for e in await store.reports.events(kind="lists.repair")]
    assert sorted(orjson.loads(e["detail"])["queued"] for e in repairs) == [1, 1]


def test_lists_settings(tmp_path: Path) -> None:
    (tmp_path / "t").write_text("token\n", encoding="utf-8")
    path = tmp_path / "c.toml"
    path.write_text(config_text(lists={"reconcile_interval_s": 60, "discard_unknwon": False}), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"lists\.discard_unknwon: unknown setting; did you mean discard_unknown"):
        load_config(path)
    path.write_text(config_text(lists={"reconcile_interval_s": 60}), encoding="utf-8")
    config = load_config(path)
    assert (config.lists.reconcile_interval_s, config.lists.discard_unknown) == (60.0, True)
