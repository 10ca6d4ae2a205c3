"""Revocation, objection and repair of published records: the change reaches every target that holds the
record, as a new version of the same key, and the ledger shows which targets confirmed it.

Real parts throughout: a sample department database (SQLite), the gateway with its SQL source, three
sandbox platforms on 127.0.0.1 each with its own database, and the store on SQLite and PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import orjson
import pytest

from gateway.clock import china_today
from gateway.domain.publicity import DEFAULT_RULES, period_of
from gateway.store import Store
from gateway.testing.department_db import apply_changes, insert_rows
from tests.support.helpers import make_department_db, outbox, read_rows, receipts, to_record
from tests.support.rules_helpers import (
    TABLE,
    deliver,
    key_of,
    pick_row,
    platforms,
    run_cli,
    set_decision,
    write_rules_config,
)

THREE = ("province", "city", "partner")
STATUS = {"upsert": "0", "revoke": "1", "object": "2", "withdraw": "3"}


def held(sandboxes: dict[str, object], key: str) -> dict[str, tuple[int, str, str]]:
    """Per platform: (version, operation, CF_ZT) of the record it holds."""
    out = {}
    for name, sb in sandboxes.items():
        found = sb.held(TABLE).get(key)  # type: ignore[attr-defined]
        out[name] = (found[0], found[1], found[2].get("CF_ZT")) if found else None
    return out


async def receipt_ids(store: Store) -> dict[str, set[str]]:
    """target → the receipt ids stored for it."""
    ids: dict[str, set[str]] = {}
    for r in await receipts(store):
        ids.setdefault(r["target"], set()).add(r["receipt_id"])
    return ids


@pytest.mark.parametrize("change", ["revoke", "object"])
class TestChangeReachesEveryTarget:
    async def test_three_of_three_confirm(self, tmp_path: Path, store_url: str, store: Store, change: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
        """A revocation (objection) goes as version 2 of the same key to all three targets; each confirms it,
        and `records show` / `records changes` say so with the targets' receipts."""
        sample = make_department_db(tmp_path, penalties=12)
        row = pick_row(sample.path)
        key = key_of(row)
        async with platforms(tmp_path, THREE) as sandboxes:
            config = write_rules_config(tmp_path, store_url, sample.path, sandboxes)
            await deliver(config, store)
            assert set(held(sandboxes, key).values()) == {(1, "upsert", "0")}
            keys_before = {name: set(sb.held(TABLE)) for name, sb in sandboxes.items()}
            apply_changes(sample.path, table="xzcf", ids=[row["id"]], change=change)
            await deliver(config, store)
            assert held(sandboxes, key) == dict.fromkeys(THREE, (2, change, STATUS[change]))
            assert {name: set(sb.held(TABLE)) for name, sb in sandboxes.items()} == keys_before  # no new record

        rows = [r for r in await outbox(store, key) if r["version"] == 2]
        assert sorted((r["target"], r["state"]) for r in rows) == sorted((t, "delivered") for t in THREE)
        changes = [c for c in await store.history.list_changes(list(config.targets)) if c.record_key == key]
        assert [(c.version, c.operation, c.confirmed, len(c.deliveries)) for c in changes] == [(2, change, 3, 3)]
        stored = await receipt_ids(store)
        assert all(d.receipt_id in stored[d.target] for d in changes[0].deliveries)

        code, text = await run_cli(capsys, config, "records", "changes")
        assert code == 0 and "confirmed 3 of 3 target(s)" in text and key in text
        code, text = await run_cli(capsys, config, "records", "show", "penalty", key)
        lines = [line.split() for line in text.splitlines() if line.startswith("2 ")]
        assert code == 0 and sorted(parts[2] for parts in lines) == sorted(THREE)
        assert all(parts[1] == change and parts[3] == "delivered" and parts[4] in stored[parts[2]]
                   for parts in lines)
        code, text = await run_cli(capsys, config, "records", "changes", "--unconfirmed", "--json")
        assert code == 0 and orjson.loads(text) == []


class TestUnroutedHolder:
    async def test_a_target_no_longer_routed_still_gets_the_revocation(
            self, tmp_path: Path, store_url: str, store: Store) -> None:
        """A target that received the record and is now `changes_only` gets the revocation, not new records."""
        sample = make_department_db(tmp_path, penalties=10)
        row = pick_row(sample.path)
        key = key_of(row)
        async with platforms(tmp_path, THREE) as sandboxes:
            config = write_rules_config(tmp_path, store_url, sample.path, sandboxes)
            await deliver(config, store)
            narrowed = write_rules_config(tmp_path, store_url, sample.path, sandboxes, changes_only=["partner"],
                                          name="narrowed.toml")
            assert "partner" not in narrowed.routes()["penalty"]
            new_ids = insert_rows(sample.path, table="xzcf", count=3, seed=7)
            apply_changes(sample.path, table="xzcf", ids=[row["id"]], change="revoke")
            await deliver(narrowed, store)
            assert held(sandboxes, key) == dict.fromkeys(THREE, (2, "revoke", "1"))
            new_keys = {to_record(r).key for r in read_rows(sample.path, ids=new_ids)}
            assert new_keys <= set(sandboxes["province"].held(TABLE)) and new_keys <= set(sandboxes["city"].held(TABLE))
            assert not new_keys & set(sandboxes["partner"].held(TABLE))
        changes = await store.history.list_changes(list(narrowed.targets), operation="revoke")
        assert [(c.confirmed, len(c.deliveries)) for c in changes if c.record_key == key] == [(3, 3)]

    async def test_a_target_added_later_gets_the_record_as_it_now_is(
            self, tmp_path: Path, store_url: str, store: Store) -> None:
        """A routed target that missed version 1 gets version 2, the whole record in its revoked state, which
        the platform takes (it refuses only a bare change of a record it does not hold)."""
        sample = make_department_db(tmp_path, penalties=8)
        row = pick_row(sample.path)
        key = key_of(row)
        async with platforms(tmp_path, THREE) as sandboxes:
            first = write_rules_config(tmp_path, store_url, sample.path, {n: sandboxes[n] for n in THREE[:2]})
            await deliver(first, store)
            apply_changes(sample.path, table="xzcf", ids=[row["id"]], change="revoke")
            everyone = write_rules_config(tmp_path, store_url, sample.path, sandboxes, name="three.toml")
            await deliver(everyone, store)
            assert held(sandboxes, key) == dict.fromkeys(THREE, (2, "revoke", "1"))
        assert await store.reports.list_quarantine("open", "target") == []


class TestRepair:
    async def test_repair_waits_for_the_minimum_period(self, tmp_path: Path, store_url: str, store: Store,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
        """A repair before the minimum period ends is quarantined with the rule and the date, nothing is sent;
        the same repair on the day the period ends goes to all three targets."""
        sample = make_department_db(tmp_path, penalties=10)
        row = set_decision(sample.path, pick_row(sample.path)["id"], china_today() - dt.timedelta(days=400),
                           domain="特种设备")
        key = key_of(row)
        period = period_of(DEFAULT_RULES, "penalty", to_record(row).payload())
        assert "特种设备" in period.min_rule and period.min_end
        assert period.min_end > row_decision(row) + dt.timedelta(days=364)
        async with platforms(tmp_path, THREE) as sandboxes:
            config = write_rules_config(tmp_path, store_url, sample.path, sandboxes)
            await deliver(config, store)
            before = len(await outbox(store))

            apply_changes(sample.path, table="xzcf", ids=[row["id"]], change="repair")
            await deliver(config, store, today=period.min_end - dt.timedelta(days=1))
            assert held(sandboxes, key) == dict.fromkeys(THREE, (1, "upsert", "0"))
            assert len(await outbox(store)) == before
            [entry] = await store.reports.list_quarantine("open", "mapping")
            reason = entry["reasons"][0]["message"]
            assert entry["source_key"] == str(row["id"]) and entry["record_key"] == key
            assert "特种设备" in reason and str(period.min_end) in reason and "信用修复" in reason
            _code, text = await run_cli(capsys, config, "records", "show", "penalty", key)
            assert "version 1, upsert" in text

            apply_changes(sample.path, table="xzcf", ids=[row["id"]], change="touch")  # read again, on the day
            await deliver(config, store, today=period.min_end)
            assert held(sandboxes, key) == dict.fromkeys(THREE, (2, "withdraw", "3"))
        assert await store.reports.list_quarantine("open", "mapping") == []
        [change] = [c for c in await store.history.list_changes(list(config.targets)) if c.record_key == key]
        assert (change.version, change.operation, change.reason, change.confirmed) == (2, "withdraw", "信用修复", 3)


def row_decision(row: dict[str, object]) -> dt.date:
    return dt.datetime.strptime(str(row["jdrq"]), "%Y/%m/%d").date()


class TestRepairReplay:
    async def test_replay_before_the_minimum_is_refused_again(self, tmp_path: Path, store_url: str, store: Store,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
        """`quarantine replay` of a refused repair applies the same rule: still refused, still nothing sent."""
        sample = make_department_db(tmp_path, penalties=6)
        row = set_decision(sample.path, pick_row(sample.path)["id"], china_today() - dt.timedelta(days=10))
        async with platforms(tmp_path, THREE[:1]) as sandboxes:
            config = write_rules_config(tmp_path, store_url, sample.path, sandboxes)
            await deliver(config, store)
            apply_changes(sample.path, table="xzcf", ids=[row["id"]], change="repair")
            await deliver(config, store)
            before = len(await outbox(store))
            code, text = await run_cli(capsys, config, "quarantine", "replay", "--all")
            assert code == 1 and "0 row(s) now valid" in text
            assert sandboxes["province"].held(TABLE)[key_of(row)][:2] == (1, "upsert")
        assert len(await outbox(store)) == before
        [entry] = await store.reports.list_quarantine("open", "mapping")
        assert entry["hits"] == 2 and "minimum publicity period ends" in entry["reasons"][0]["message"]
