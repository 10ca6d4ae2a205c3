"""Credit lists end to end: the sandbox platform publishes lists → the platform_lists source (snapshot, then
deltas, `gone` → snapshot again) → the store (on SQLite and PostgreSQL) → the SQL sink into a real SQLite
department table; then drift behind the gateway's back, reconciliation, and red/black conflicts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.adapter import SnapshotPage
from gateway.config import Config
from gateway.daemon import Gateway
from gateway.domain.datasets import BLACK_LIST, RED_LIST, WATCH_LIST
from gateway.domain.lists import membership_digest
from gateway.domain.subject_keys import KeySecret
from gateway.errors import PermanentError
from gateway.jobs import ListView, conflicts, list_status, reconcile
from gateway.records import Operation, Record
from gateway.sandbox.server import Sandbox, SandboxConfig
from gateway.sealing.base import Credentials
from gateway.store import Store
from gateway.store import schema as s
from tests.conftest import TOKEN
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
from tests.support.pki import make_ca

RED, BLACK, WATCH = "RED-2026", "BLACK-2026", "WATCH-2026"


def key(code: str, n: int = 0, person: int = 0, secret: KeySecret | None = None) -> str:
    """A list entry's record key: the USCC of organisation ``n``, or the pseudonym of person ``person``'s ID number
    under the store's ``secret``."""
    if n:
        return f"{code}|{uscc(n)}|"
    assert secret is not None
    return f"{code}||{secret.pseudonym(resident_id(person))}"


async def run(config: Config, store: Store) -> None:
    async with Gateway(config, store) as gw:
        assert await gw.run_until_idle(timeout_s=30)


async def views(config: Config, store: Store) -> dict[str, ListView]:
    return {v.list_code: v for v in await list_status(config, store)}


def assert_converged(found: dict[str, ListView]) -> None:
    """Platform = ledger (version and membership digest); every target holds exactly what the ledger says."""
    for v in found.values():
        assert v.platform_version == v.applied_version, v
        assert v.ledger_digest == v.platform_digest and v.ledger_count == v.platform_count, v
        for t in v.targets:
            assert t.in_sync and t.digest == t.expected_digest and not t.error, t


async def outbox_rows(store: Store) -> list[dict[str, Any]]:
    return await select_rows(store, s.outbox, order=s.outbox.c.id)


@pytest.fixture
def dept(tmp_path: Path) -> Path:
    return make_dept_db(tmp_path / "department.db")


@pytest.fixture
def config(tmp_path: Path, sandbox: Sandbox, store_url: str, dept: Path) -> Config:
    return list_config(tmp_path, url=sandbox.url, store_url=store_url, dept=dept)


class TestSnapshotDeltasDrift:
    async def test_snapshot_then_deltas_then_drift_repaired(self, sandbox: Sandbox, store: Store, config: Config,
                                                            dept: Path) -> None:
        """Lists arrive by snapshot then deltas; drift at the department is repaired by re-sending only it."""
        secret = await store.key_secret()
        sandbox.lists.publish(RED, RED_LIST, [org_item(1), org_item(2), org_item(3), person_item(1)])
        sandbox.lists.publish(BLACK, BLACK_LIST, [org_item(11), person_item(12)])
        await run(config, store)
        rows = dept_rows(dept)
        assert set(rows) == {key(RED, 1), key(RED, 2), key(RED, 3), key(RED, person=1, secret=secret),
                             key(BLACK, 11), key(BLACK, person=12, secret=secret)}
        # The key holds a pseudonym; the internal route (personal_ids = "full") has the number in its column.
        assert rows[key(RED, person=1, secret=secret)]["id_no"] == resident_id(1)
        assert sandbox.lists.served["snapshot"] == 2 and sandbox.lists.served["delta"] == 0
        assert_converged(await views(config, store))

        sandbox.lists.publish(RED, RED_LIST, [org_item(2, LRSY="事由已更正")], remove=[uscc(3)],
                              removal={"YCRQ": "2026-03-01", "YCYY": "信用修复"})
        sandbox.lists.publish(BLACK, BLACK_LIST, [org_item(13)])
        await run(config, store)
        rows = dept_rows(dept)
        assert key(RED, 3) not in rows and key(BLACK, 13) in rows
        assert rows[key(RED, 2)]["reason"] == "事由已更正" and rows[key(RED, 2)]["gateway_version"] == 2
        assert sandbox.lists.served["delta"] == 2 and sandbox.lists.served["snapshot"] == 2
        found = await views(config, store)
        assert_converged(found)
        assert found[RED].platform_version == 2 and found[RED].ledger_count == 3

        # Behind the gateway's back: an edit, a deletion, a removed subject back, a row the gateway never sent.
        dept_sql(dept, ("UPDATE dept_credit_list SET subject_name = '改名' WHERE record_key = ?", [key(RED, 1)]),
                 ("DELETE FROM dept_credit_list WHERE record_key = ?", [key(BLACK, 11)]),
                 ("INSERT INTO dept_credit_list (record_key, list_code, list_type, subject_name) VALUES (?, ?, ?, ?)",
                  [key(RED, 3), RED, RED_LIST, "已移出"]),
                 ("INSERT INTO dept_credit_list (record_key, list_code, list_type, subject_name) VALUES (?, ?, ?, ?)",
                  ["RED-2026|X|", RED, RED_LIST, "来历不明"]))
        drift = await views(config, store)
        red, black = drift[RED].targets[0], drift[BLACK].targets[0]
        assert (red.changed, red.stale, red.unknown) == ([key(RED, 1)], [key(RED, 3)], ['["RED-2026|X|"]'])
        assert black.missing == [key(BLACK, 11)] and not black.changed
        assert red.digest != red.expected_digest and black.digest != black.expected_digest
        assert drift[RED].ledger_digest == drift[RED].platform_digest  # the ledger did not drift

        before = len(await outbox_rows(store))
        repairs = {r.list_code: r for r in await reconcile(config, store)}
        assert (repairs[RED].requeued, repairs[RED].discarded, repairs[BLACK].requeued) == (2, 1, 1)
        queued = (await outbox_rows(store))[before:]
        assert sorted(r["record_key"] for r in queued) == sorted([key(RED, 1), key(RED, 3), key(BLACK, 11)])
        await run(config, store)
        rows = dept_rows(dept)
        assert rows[key(RED, 1)]["subject_name"] == "苏州测试企业1有限公司"
        assert key(RED, 3) not in rows and "RED-2026|X|" not in rows and key(BLACK, 11) in rows
        assert_converged(await views(config, store))
        assert all(r.requeued == 0 and r.discarded == 0 for r in await reconcile(config, store))

    async def test_snapshot_that_drops_a_subject_withdraws_it(self, sandbox: Sandbox, store: Store, config: Config,
                                                              dept: Path) -> None:
        """When the delta history is gone the source takes a snapshot; a subject it no longer names is withdrawn."""
        secret = await store.key_secret()
        sandbox.lists.publish(WATCH, WATCH_LIST, [org_item(1), org_item(2), person_item(3)])
        await run(config, store)
        sandbox.lists.publish(WATCH, WATCH_LIST, [org_item(4)], remove=[uscc(2)])
        sandbox.lists.compact(WATCH)  # the client at version 1 can no longer be answered with a delta
        await run(config, store)
        assert sandbox.lists.served["gone"] == 1 and sandbox.lists.served["snapshot"] == 2
        ledger = {r["record_key"]: r for r in await select_rows(store, s.records, order=s.records.c.id)}
        assert ledger[key(WATCH, 2)]["operation"] == "withdraw" and ledger[key(WATCH, 2)]["version"] == 2
        assert {k: r["version"] for k, r in ledger.items() if k != key(WATCH, 2)} == dict.fromkeys(
            [key(WATCH, 1), key(WATCH, person=3, secret=secret), key(WATCH, 4)], 1)  # unchanged: not sent again
        assert set(dept_rows(dept)) == {key(WATCH, 1), key(WATCH, person=3, secret=secret), key(WATCH, 4)}
        assert_converged(await views(config, store))

    async def test_a_list_the_platform_drops_is_retired(self, sandbox: Sandbox, store: Store, config: Config,
                                                        dept: Path) -> None:
        """A list that leaves the platform's catalogue has every entry withdrawn, at the department too; the
        other lists stay. An empty catalogue (more likely a fault) retires nothing."""
        sandbox.lists.publish(WATCH, WATCH_LIST, [org_item(1), org_item(2)])
        sandbox.lists.publish(BLACK, BLACK_LIST, [org_item(11)])
        await run(config, store)
        sandbox.lists.drop(WATCH)
        await run(config, store)
        ledger = {r["record_key"]: r for r in await select_rows(store, s.records, order=s.records.c.id)}
        assert {k: (r["operation"], r["version"]) for k, r in ledger.items()} == {
            key(WATCH, 1): ("withdraw", 2), key(WATCH, 2): ("withdraw", 2), key(BLACK, 11): ("upsert", 1)}
        assert set(dept_rows(dept)) == {key(BLACK, 11)}
        sandbox.lists.drop(BLACK)  # nothing announced at all
        await run(config, store)
        assert (await select_rows(store, s.records, s.records.c.record_key == key(BLACK, 11),
                                  order=s.records.c.id))[0]["operation"] == "upsert"
        assert set(dept_rows(dept)) == {key(BLACK, 11)}

    async def test_snapshot_over_several_pages(self, tmp_path: Path, sandbox: Sandbox, store: Store,
                                               store_url: str, dept: Path) -> None:
        """A snapshot of 7 entries in pages of 2: only the subject missing from every page is withdrawn."""
        config = list_config(tmp_path, url=sandbox.url, store_url=store_url, dept=dept, batch_size=2)
        sandbox.lists.publish(BLACK, BLACK_LIST, [org_item(n) for n in range(1, 8)])
        await run(config, store)
        sandbox.lists.publish(BLACK, BLACK_LIST, remove=[uscc(4)])
        sandbox.lists.compact(BLACK)
        await run(config, store)
        assert sandbox.lists.served["snapshot"] == 4 + 3  # 7 entries in 4 pages, then 6 in 3
        rows = dept_rows(dept)
        assert set(rows) == {key(BLACK, n) for n in (1, 2, 3, 5, 6, 7)}
        assert_converged(await views(config, store))
        assert await select_rows(store, s.snapshot_seen, order=s.snapshot_seen.c.record_key) == []


class TestRefusedByTheDepartment:
    async def test_refused_row_is_quarantined_and_not_resent_by_reconciliation(
            self, sandbox: Sandbox, store: Store, config: Config, dept: Path) -> None:
        """A row the department's database refuses carries its message to the quarantine; reconciliation reports
        it as missing but leaves it to the quarantine instead of sending it again on every pass."""
        dept_sql(dept, "CREATE TRIGGER refuse BEFORE INSERT ON dept_credit_list WHEN NEW.subject_name LIKE '%拒%' "
                       "BEGIN SELECT RAISE(ABORT, 'refused by the department'); END")
        sandbox.lists.publish(RED, RED_LIST, [org_item(1), org_item(2, ZTMC="拒收企业")])
        await run(config, store)
        assert set(dept_rows(dept)) == {key(RED, 1)}
        [entry] = await store.reports.list_quarantine("open", "target")
        assert entry["record_key"] == key(RED, 2) and "refused by the department" in entry["reasons"][0]["message"]
        [repair] = await reconcile(config, store)
        assert repair.requeued == 0
        [view] = (await views(config, store)).values()
        assert view.targets[0].missing == [key(RED, 2)]


class TestSnapshotStore:
    @staticmethod
    def entry(code: str, n: int, op: Operation = Operation.UPSERT) -> Record:
        fields = {"list_code": code, "list_type": BLACK_LIST, "subject_category": "法人及非法人组织",
                  "subject_name": f"企业{n}", "uscc": uscc(n), "reason": "r", "basis": "b", "deciding_body": "d"}
        return Record("credit_list", f"{code}|{uscc(n)}|", op, fields, "src", str(n))

    async def test_pages_restarts_and_scope(self, store: Store) -> None:
        """Only the final page sweeps; a restarted snapshot ignores the earlier attempt; other lists are untouched."""
        routes = {"credit_list": ["t"]}
        await store.intake.commit_intake("src", [self.entry("A", n) for n in (1, 2, 3)] + [self.entry("AB", 9)], [],
                                  {"p": 0}, routes, 4)
        first = SnapshotPage("credit_list", "A", "s-1", final=False)
        await store.intake.commit_intake("src", [self.entry("A", 1), self.entry("A", 2)], [], {"p": 1}, routes, 2,
                                  snapshot=first)
        retry = SnapshotPage("credit_list", "A", "s-2", final=False)  # the list moved: start again
        await store.intake.commit_intake("src", [self.entry("A", 1)], [], {"p": 2}, routes, 1, snapshot=retry)
        ledger = {r["record_key"]: r for r in await select_rows(store, s.records, order=s.records.c.id)}
        assert {r["operation"] for r in ledger.values()} == {"upsert"}  # nothing swept before the final page
        result = await store.intake.commit_intake("src", [self.entry("A", 3)], [], {"p": 3}, routes, 1,
                                           snapshot=SnapshotPage("credit_list", "A", "s-2", final=True))
        ledger = {r["record_key"]: r for r in await select_rows(store, s.records, order=s.records.c.id)}
        assert ledger[f"A|{uscc(2)}|"]["operation"] == "withdraw"  # named only by the abandoned attempt
        assert ledger[f"AB|{uscc(9)}|"]["operation"] == "upsert"  # "AB" is another list, not inside "A"
        assert result.accepted == 1 and result.enqueued == {"t": 1}
        assert await select_rows(store, s.snapshot_seen, order=s.snapshot_seen.c.record_key) == []


class TestRedBlackConflicts:
    async def test_conflict_held_reported_and_released(self, sandbox: Sandbox, store: Store, config: Config,
                                                       dept: Path) -> None:
        """A red entry whose subject is black-listed never reaches the department until the black entry goes."""
        secret = await store.key_secret()
        sandbox.lists.publish(BLACK, BLACK_LIST, [org_item(5), person_item(6)])
        await run(config, store)
        sandbox.lists.publish(RED, RED_LIST, [org_item(5), org_item(7), person_item(6)])
        await run(config, store)
        rows = dept_rows(dept)
        assert key(RED, 7) in rows and key(RED, 5) not in rows and key(RED, person=6, secret=secret) not in rows
        found = {c.red_key: c for c in await conflicts(store)}
        assert set(found) == {key(RED, 5), key(RED, person=6, secret=secret)}
        assert found[key(RED, 5)].black_key == key(BLACK, 5)
        assert found[key(RED, 5)].red["list_type"] == RED_LIST and found[key(RED, 5)].black["list_type"] == BLACK_LIST
        assert found[key(RED, person=6, secret=secret)].subject == "320505********" + resident_id(6)[-4:]  # masked
        assert found[key(RED, person=6, secret=secret)].red["id_no"].count("*") == 8
        assert found[key(RED, person=6, secret=secret)].black_key == key(BLACK, person=6, secret=secret)
        events = await store.reports.events(kind="lists.conflict")
        assert {e["record_key"] for e in events} == set(found)
        assert not any(resident_id(6) in str(e) for e in events)  # the keys name the subject, not its ID number
        held = [r for r in await outbox_rows(store) if r["state"] == "held"]
        assert {r["record_key"] for r in held} == set(found)
        status = await views(config, store)
        assert status[RED].held == 2 and status[RED].targets[0].in_sync  # held entries are not drift

        sandbox.lists.publish(RED, RED_LIST, [org_item(5, LRSY="新事由")])  # a new version while held stays held
        sandbox.lists.publish(BLACK, BLACK_LIST, remove=[uscc(5)], removal={"YCRQ": "2026-03-02", "YCYY": "期满"})
        await run(config, store)
        rows = dept_rows(dept)
        assert rows[key(RED, 5)]["reason"] == "新事由" and key(RED, person=6, secret=secret) not in rows
        assert [c.red_key for c in await conflicts(store)] == [key(RED, person=6, secret=secret)]
        assert {e["record_key"] for e in await store.reports.events(kind="lists.released")} == {key(RED, 5)}
        assert_converged(await views(config, store))

    async def test_full_width_id_number_is_the_same_subject(self, sandbox: Sandbox, store: Store, config: Config,
                                                            dept: Path) -> None:
        """A black list that writes a person's ID number in full-width characters (３２０５…, as typed in a
        Chinese input method) names the same person as the red list's ASCII number: the black entry is taken
        (not quarantined as an invalid number) under the same key, and the red entry is held back."""
        secret = await store.key_secret()
        wide = resident_id(6).translate({ord(c): ord(c) + 0xFEE0 for c in "0123456789X"})
        sandbox.lists.publish(BLACK, BLACK_LIST, [person_item(6, ZJHM=wide)])
        sandbox.lists.publish(RED, RED_LIST, [person_item(6)])
        await run(config, store)
        assert await store.reports.list_quarantine("open") == []
        rows = dept_rows(dept)
        assert key(BLACK, person=6, secret=secret) in rows and key(RED, person=6, secret=secret) not in rows
        assert rows[key(BLACK, person=6, secret=secret)]["id_no"] == resident_id(6)
        assert [c.red_key for c in await conflicts(store)] == [key(RED, person=6, secret=secret)]

    async def test_conflict_after_delivery_says_what_the_target_has(self, sandbox: Sandbox, store: Store,
                                                                    config: Config, dept: Path) -> None:
        """A red entry delivered before its subject was black-listed is reported with what each target holds."""
        sandbox.lists.publish(RED, RED_LIST, [org_item(8)])
        await run(config, store)
        sandbox.lists.publish(BLACK, BLACK_LIST, [org_item(8)])
        await run(config, store)
        [conflict] = await conflicts(store)
        assert (conflict.red_key, conflict.black_key, dict(conflict.delivered)) == (
            key(RED, 8), key(BLACK, 8), {"department": 1})
        assert membership_digest([uscc(8)]) == (await views(config, store))[BLACK].ledger_digest


class TestSignedAnswers:
    @staticmethod
    def signed_sandbox(tmp_path: Path, signer: str) -> tuple[Sandbox, str]:
        ca = make_ca(tmp_path / "pki", "rsa")
        platform, other = ca.issue("platform"), ca.issue(signer)
        sandbox = Sandbox(SandboxConfig(token=TOKEN, db_path=str(tmp_path / "sb.db"),
                                        receipt_credentials=Credentials(other.key_pem, other.cert_pem)))
        extra = f'peer_cert = "{platform.cert_path}"\ntrusted_cas = ["{ca.root.cert_path}"]'
        return sandbox, extra

    async def test_signed_lists_are_taken(self, tmp_path: Path, store: Store, store_url: str, dept: Path) -> None:
        sandbox, extra = self.signed_sandbox(tmp_path, "platform-signer")
        async with sandbox:
            sandbox.lists.publish(RED, RED_LIST, [org_item(1)])
            config = list_config(tmp_path, url=sandbox.url, store_url=store_url, dept=dept,
                                 source_extra=extra.replace("platform.crt", "platform-signer.crt"))
            await run(config, store)
        assert set(dept_rows(dept)) == {key(RED, 1)}

    @pytest.mark.parametrize("signer", ["impostor", ""])
    async def test_forged_or_unsigned_answers_are_refused(self, tmp_path: Path, store: Store, store_url: str,
                                                          dept: Path, signer: str) -> None:
        """Signed by another certificate of the same CA, or not signed at all: nothing is taken."""
        if signer:
            sandbox, extra = self.signed_sandbox(tmp_path, signer)
        else:
            _, extra = self.signed_sandbox(tmp_path, "unused")
            sandbox = Sandbox(SandboxConfig(token=TOKEN, db_path=str(tmp_path / "sb.db")))
        async with sandbox:
            sandbox.lists.publish(RED, RED_LIST, [org_item(1)])
            config = list_config(tmp_path, url=sandbox.url, store_url=store_url, dept=dept, source_extra=extra)
            async with Gateway(config, store) as gw:
                with pytest.raises(PermanentError, match="refused"):
                    await gw.intakes["platform_lists"].poll()
        assert await select_rows(store, s.records, order=s.records.c.id) == []
        assert await store.intake.load_cursor("platform_lists") is None
