"""Credit-list keys without ID numbers: keyed pseudonyms, the store's secret, and lists shared with a partner
region over a cms-sealed external route (the sandbox plays the partner), on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import hmac
import io
import logging
import pickle
import zipfile
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import update

from gateway.config import Config, load_config
from gateway.daemon import Gateway
from gateway.domain.datasets import BLACK_LIST, CREDIT_LIST, PENALTY, RED_LIST
from gateway.domain.identifiers import mask_id
from gateway.domain.subject_keys import META_NAME, KeySecret, KeySecretMissing, is_pseudonym, record_key
from gateway.errors import StoreError
from gateway.jobs import conflicts, reconcile
from gateway.logs import redact
from gateway.mapping import InboundMapping, load_mapping
from gateway.pipeline.workers import MapPool
from gateway.sandbox.lists import PARTNER_TABLE
from gateway.sandbox.server import Sandbox, SandboxConfig
from gateway.sealing.evidence import build_evidence
from gateway.sealing.target import Sealing, load_sealing
from gateway.store import Store, open_store
from gateway.store import schema as s
from tests.conftest import TOKEN
from tests.support.helpers import MAPPINGS, select_rows
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
from tests.support.pki import CA, Issued, make_ca

RED, BLACK = "RED-2026", "BLACK-2026"
RAW = bytes(range(32))
TODAY = dt.date(2026, 11, 21)
LABEL = b"credit-gateway subject id v1\x00"  # the documented HMAC input: label + ID number (upper case)


def expected_pseudonym(raw: bytes, id_no: str) -> str:
    """The pseudonym computed here, independently of gateway.domain.subject_keys: p + 32 hex digits of HMAC-SHA256."""
    return "p" + hmac.new(raw, LABEL + id_no.encode(), hashlib.sha256).hexdigest()[:32]


async def stored_secret(store: Store) -> bytes:
    rows = await select_rows(store, s.meta, s.meta.c.name == META_NAME, order=s.meta.c.name)
    assert len(rows) == 1
    return base64.b64decode(rows[0]["value"])


class TestKeySecret:
    def test_pseudonym_is_the_documented_hmac(self) -> None:
        """p + the first 32 hex digits of HMAC-SHA256(secret, label + ID number)."""
        number = resident_id(1)
        assert KeySecret(RAW).pseudonym(number) == expected_pseudonym(RAW, number)
        assert is_pseudonym(KeySecret(RAW).pseudonym(number))

    def test_same_number_same_pseudonym_other_number_or_secret_other_one(self) -> None:
        """Stable for one subject (also with a lower-case x or spaces), distinct across subjects and secrets."""
        secret = KeySecret(RAW)
        number = "11010519491231002X"
        assert secret.pseudonym(number) == secret.pseudonym(" 11010519491231002x ")
        assert len({secret.pseudonym(resident_id(n)) for n in range(200)}) == 200
        assert KeySecret(bytes(32)).pseudonym(number) != secret.pseudonym(number)

    def test_the_secret_never_shows(self, caplog: pytest.LogCaptureFixture) -> None:
        """repr, str, f-strings and log calls give a fingerprint only; JSON refuses it; pickling keeps it working."""
        secret = KeySecret(RAW)
        with caplog.at_level(logging.INFO):
            logging.getLogger("test").info("secret %s", secret, extra={"secret": secret})
        shown = [repr(secret), str(secret), f"{secret}", caplog.text, str(vars(caplog.records[0]))]
        for text in shown:
            assert RAW.hex() not in text and base64.b64encode(RAW).decode() not in text and "\\x00\\x01" not in text
            assert secret.fingerprint in text
        with pytest.raises(TypeError):
            orjson.dumps({"secret": secret})
        copy = pickle.loads(pickle.dumps(secret))  # how mapping worker processes get it
        assert copy.pseudonym(resident_id(3)) == secret.pseudonym(resident_id(3))

    def test_a_short_or_damaged_secret_is_refused(self) -> None:
        """Fewer than 16 bytes, or a cg_meta value that is not base64, is an error, not a weak key."""
        with pytest.raises(ValueError, match="16 bytes"):
            KeySecret(b"short")
        with pytest.raises(ValueError, match=f"cg_meta.{META_NAME} is damaged"):
            KeySecret.from_stored("not base64!")

    def test_the_log_redactor_never_cuts_into_a_pseudonym(self) -> None:
        """A pseudonym is one alphanumeric token: the ID-number pattern cannot match inside it."""
        secret = KeySecret.generate()
        keys = [f"{RED}||{secret.pseudonym(resident_id(n % 1000))}" for n in range(3000)]
        assert [redact(k) for k in keys] == keys


class TestRecordKeys:
    def test_a_person_key_carries_the_pseudonym_an_organisation_key_its_uscc(self) -> None:
        """Only ID numbers are replaced; the list code and USCC stay as they are."""
        secret = KeySecret(RAW)
        person = {"list_code": RED, "id_no": resident_id(1)}
        both = {"list_code": RED, "uscc": uscc(2), "id_no": resident_id(2)}
        assert record_key(CREDIT_LIST, person, secret) == f"{RED}||{expected_pseudonym(RAW, resident_id(1))}"
        assert record_key(CREDIT_LIST, both, secret) == f"{RED}|{uscc(2)}|{expected_pseudonym(RAW, resident_id(2))}"
        assert record_key(CREDIT_LIST, {"list_code": RED, "uscc": uscc(1)}, secret) == f"{RED}|{uscc(1)}|"

    def test_without_the_secret_there_is_no_key_rather_than_the_number(self) -> None:
        """Mapping a list entry without the store's secret fails; datasets without personal keys need none."""
        mapping = load_mapping(MAPPINGS / "platform-credit_list.toml")
        assert isinstance(mapping, InboundMapping)
        item = {**person_item(1), "MDBM": RED, "MDLX": RED_LIST, "op": "upsert"}
        with pytest.raises(KeySecretMissing, match="key secret"):
            mapping.map_row(item, TODAY)
        mapped = mapping.map_row(item, TODAY, secret=KeySecret(RAW))
        assert mapped.record is not None and resident_id(1) not in mapped.key
        assert record_key(PENALTY, {"decision_no": "X1", "authority_code": uscc(1)}, None) == f"X1|{uscc(1)}"

    def test_a_rejected_entry_is_keyed_the_same_way(self) -> None:
        """A list entry that fails validation still gets the pseudonym in the key quarantine shows."""
        mapping = load_mapping(MAPPINGS / "platform-credit_list.toml")
        assert isinstance(mapping, InboundMapping)
        bad = {**person_item(1), "MDBM": RED, "MDLX": "不存在的名单", "op": "upsert"}
        mapped = mapping.map_row(bad, TODAY, secret=KeySecret(RAW))
        assert mapped.record is None and mapped.key == f"{RED}||{expected_pseudonym(RAW, resident_id(1))}"


    async def test_mapping_worker_processes_key_the_same_way(self) -> None:
        """A page mapped in a worker process (the secret pickled to it) gets the keys the daemon would make."""
        mapping = load_mapping(MAPPINGS / "platform-credit_list.toml")
        assert isinstance(mapping, InboundMapping)
        rows = [(str(n), {**person_item(n), "MDBM": RED, "MDLX": RED_LIST, "op": "upsert"}, ()) for n in range(3)]
        pool = MapPool(1, min_rows=1)
        try:
            accepted, rejects = await pool.map(mapping, "lists", rows, TODAY, KeySecret(RAW))
        finally:
            pool.close()
        assert not rejects
        assert [e.key for e in accepted] == [f"{RED}||{expected_pseudonym(RAW, resident_id(n))}" for n in range(3)]


class TestStoreSecret:
    async def test_made_once_kept_across_restarts_and_instances(self, store_url: str) -> None:
        """Two instances that start together on a fresh store agree; a restart finds the same secret."""
        first, second = await open_store(store_url), await open_store(store_url)
        try:
            a, b = await asyncio.gather(first.key_secret(), second.key_secret())
            raw = await stored_secret(first)
        finally:
            await first.aclose()
            await second.aclose()
        assert a.fingerprint == b.fingerprint and len(raw) == 32
        assert a.pseudonym(resident_id(5)) == b.pseudonym(resident_id(5)) == expected_pseudonym(raw, resident_id(5))
        again = await open_store(store_url)
        try:
            assert (await again.key_secret()).pseudonym(resident_id(5)) == a.pseudonym(resident_id(5))
        finally:
            await again.aclose()

    async def test_a_damaged_secret_is_a_store_error(self, store: Store, store_url: str) -> None:
        """A cg_meta value that is not the secret stops the gateway with a clear message, not with new keys."""
        await store.key_secret()
        async with store.db.tx() as conn:
            await conn.execute(update(s.meta).where(s.meta.c.name == META_NAME).values(value="%%%"))
        fresh = await open_store(store_url)
        try:
            with pytest.raises(StoreError, match="damaged"):
                await fresh.key_secret()
        finally:
            await fresh.aclose()


# ---------------------------------------------------------------- a partner region over a sealed external route

PARTNER = """
[targets.partner]
type = "credit_platform"
url = "{url}"
token_file = "sandbox.token"
datasets = {{ credit_list = "{mappings}/partner-credit_list.toml" }}
batch_size = 50

[targets.partner.retry]
initial_s = 0.05
max_s = 0.2
jitter_s = 0.01

[targets.partner.envelope]
profile = "cms"
key = "{key}"
cert = "{cert}"
peer_cert = "{peer}"
trusted_cas = ["{ca}"]
"""


def partner_config(tmp_path: Path, sandbox: Sandbox, store_url: str, dept: Path, ca: CA, gateway: Issued,
                   platform: Issued) -> Config:
    """The list config (platform source, department table) plus a partner target: external (the default),
    personal_ids = mask (the default), cms-sealed."""
    config = list_config(tmp_path, url=sandbox.url, store_url=store_url, dept=dept)
    with config.path.open("a", encoding="utf-8") as f:
        f.write(PARTNER.format(url=sandbox.upload_url, mappings=MAPPINGS.as_posix(), key=gateway.key_path,
                               cert=gateway.cert_path, peer=platform.cert_path, ca=ca.root.cert_path))
    return load_config(config.path)


@pytest.fixture
def pki(tmp_path: Path) -> tuple[CA, Issued, Issued]:
    ca = make_ca(tmp_path / "pki", "rsa")
    return ca, ca.issue("gateway"), ca.issue("platform")


@pytest.fixture
def partner_sealing(pki: tuple[CA, Issued, Issued]) -> Sealing:
    """The partner's side of the seal: opens what we send, signs its receipts."""
    ca, gateway, platform = pki
    raw = {"profile": "cms", "key": str(platform.key_path), "cert": str(platform.cert_path),
           "peer_cert": str(gateway.cert_path), "trusted_cas": [str(ca.root.cert_path)]}
    sealing, problems = load_sealing(raw, "sandbox.envelope", Path("/"))
    assert problems == [] and sealing is not None
    return sealing


@pytest.fixture
async def partner(tmp_path: Path, partner_sealing: Sealing) -> Any:
    sandbox = Sandbox(SandboxConfig(token=TOKEN, db_path=str(tmp_path / "sandbox.db"), sealing=partner_sealing))
    await sandbox.start()
    yield sandbox
    await sandbox.aclose()


def text_of(value: Any) -> str:
    return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


async def run(config: Config, store: Store) -> None:
    async with Gateway(config, store) as gw:
        assert await gw.run_until_idle(timeout_s=30)


class TestPartnerRoute:
    async def test_a_person_reaches_the_partner_masked_and_keyed_by_pseudonym(
            self, tmp_path: Path, partner: Sandbox, partner_sealing: Sealing, store: Store, store_url: str,
            pki: tuple[CA, Issued, Issued], caplog: pytest.LogCaptureFixture) -> None:
        """The partner holds the person under the pseudonym key with the ID masked; the full number is in nothing
        that was sent (opened body, recordKey), in the partner's batches, receipts and evidence, or in any log
        record; the department's own table has it in its column, under the same key."""
        dept = make_dept_db(tmp_path / "department.db")
        config = partner_config(tmp_path, partner, store_url, dept, *pki)
        number = resident_id(1)
        partner.lists.publish(RED, RED_LIST, [org_item(1), person_item(1)])
        with caplog.at_level(logging.DEBUG, logger="gateway"), caplog.at_level(logging.DEBUG, logger="adapters"):
            await run(config, store)
        pseudonym = expected_pseudonym(await stored_secret(store), number)
        person_key = f"{RED}||{pseudonym}"

        held = partner.held(PARTNER_TABLE)
        assert set(held) == {f"{RED}|{uscc(1)}|", person_key}
        assert held[person_key][2]["ZJHM"] == mask_id(number) and held[person_key][2]["ZTMC"] == "张1"
        assert number not in text_of(held)
        assert dept_rows(dept)[person_key]["id_no"] == number  # internal, personal_ids = "full"

        batches = await store.reports.list_batches("partner")
        assert batches and {b["state"] for b in batches} == {"done"}
        for row in batches:
            batch = await store.reports.show_batch(row["id"])
            assert batch is not None
            opened = partner_sealing.open(batch["body_bytes"]).body  # what the partner decrypts
            records = orjson.loads(opened)["records"]
            assert person_key in {r["recordKey"] for r in records}
            assert number.encode() not in opened and number.encode() not in batch["body_bytes"]
            assert number not in text_of({k: v for k, v in batch.items() if k != "body_bytes"})
            evidence = zipfile.ZipFile(io.BytesIO(build_evidence(batch, "application/pkcs7-mime", "cms")))
            assert all(number.encode() not in evidence.read(name) for name in evidence.namelist())
        receipts = await select_rows(store, s.receipts, s.receipts.c.target == "partner", order=s.receipts.c.id)
        assert receipts and number not in text_of(receipts)
        logged = [text_of({**vars(r), "message": r.getMessage()}) for r in caplog.records]
        assert logged and not any(number in line for line in logged)  # before redaction, not just after it

    async def test_same_key_after_a_restart_on_a_second_store_instance(
            self, tmp_path: Path, partner: Sandbox, store: Store, store_url: str,
            pki: tuple[CA, Issued, Issued]) -> None:
        """A change to a listed person, taken in by a fresh Store instance after a restart, updates the same key."""
        dept = make_dept_db(tmp_path / "department.db")
        config = partner_config(tmp_path, partner, store_url, dept, *pki)
        partner.lists.publish(RED, RED_LIST, [person_item(1)])
        await run(config, store)
        (first_key,) = partner.held(PARTNER_TABLE)
        await store.aclose()

        partner.lists.publish(RED, RED_LIST, [person_item(1, LRSY="事由已更正")])
        second = await open_store(store_url)
        try:
            await run(load_config(config.path), second)
        finally:
            await second.aclose()
        held = partner.held(PARTNER_TABLE)
        assert list(held) == [first_key] and held[first_key][0] == 2 and held[first_key][2]["LRSY"] == "事由已更正"
        assert set(dept_rows(dept)) == {first_key}

    async def test_conflicts_and_reconciliation_by_pseudonymised_key(
            self, tmp_path: Path, partner: Sandbox, store: Store, store_url: str,
            pki: tuple[CA, Issued, Issued]) -> None:
        """A black-listed person's red entry is held back from both targets; a person's row deleted at the
        department is found by its key and sent again."""
        dept = make_dept_db(tmp_path / "department.db")
        config = partner_config(tmp_path, partner, store_url, dept, *pki)
        partner.lists.publish(BLACK, BLACK_LIST, [person_item(2)])
        partner.lists.publish(RED, RED_LIST, [person_item(2), person_item(3)])
        await run(config, store)
        secret = await store.key_secret()
        p2, p3 = secret.pseudonym(resident_id(2)), secret.pseudonym(resident_id(3))
        red2, red3, black2 = f"{RED}||{p2}", f"{RED}||{p3}", f"{BLACK}||{p2}"
        assert [(c.red_key, c.black_key) for c in await conflicts(store)] == [(red2, black2)]
        assert set(partner.held(PARTNER_TABLE)) == set(dept_rows(dept)) == {black2, red3}

        dept_sql(dept, ("DELETE FROM dept_credit_list WHERE record_key = ?", [red3]))
        repairs = await reconcile(config, store)
        assert sum(r.requeued for r in repairs) == 1
        await run(config, store)
        assert dept_rows(dept)[red3]["id_no"] == resident_id(3)
