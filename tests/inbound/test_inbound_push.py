"""The platform pushes lists and sanction cases to the gateway's inbound endpoint (instead of being asked).

Everything is real: the sandbox (a real aiohttp server) seals batches with CMS to the gateway's certificate and
signs them with its own key; the gateway's inbound endpoint (started as the daemon starts it) opens them and
answers with its signed receipt, which the sandbox verifies; the SQL sink writes into a real SQLite department
table; the store is SQLite and PostgreSQL. Pages of a snapshot are pushed one request at a time, so the tests
also push them out of order, twice, from a superseded snapshot and with a missing page.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import re
import stat
import zipfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from sqlalchemy import select

from gateway.cli import main
from gateway.clock import china_today
from gateway.config import Config, load_config
from gateway.daemon import Gateway
from gateway.domain.calendar import WorkCalendar
from gateway.domain.datasets import BLACK_LIST, RED_LIST
from gateway.domain.lists import ListState, SnapshotMark
from gateway.domain.sanctions import OPEN, sanctions_report
from gateway.domain.subject_keys import KeySecret
from gateway.inbound.batch import BatchError, batch_json, batch_xml, parse_batch
from gateway.inbound.client import InboundClient
from gateway.jobs import ListView, conflicts, list_status
from gateway.sandbox.server import Sandbox, SandboxConfig
from gateway.sealing.target import load_sealing
from gateway.store import Store, open_store
from gateway.store import schema as s
from gateway.web.server import start_web
from tests.conftest import TOKEN
from tests.pipeline.test_sanctions import case
from tests.support.helpers import MAPPINGS, ledger
from tests.support.inbound_helpers import counts
from tests.support.list_helpers import dept_rows, make_dept_db, org_item, person_item, resident_id, uscc
from tests.support.pki import CA, make_ca

DEPT = "11320500014117422Q"
BLACK, RED = "BLACK-2026", "RED-2026"
CASE_ORG = case("LH-2026-0101", "苏州某某科技有限公司", uscc="91320500MA1MABCD0P")

CONFIG = """\
[gateway]
department_code = "{dept}"
department_name = "苏州市市场监督管理局"
region_code = "320500"

[store]
url = "{store_url}"

[daemon]
log_format = "text"
log_level = "error"
map_workers = 0
idle_check_s = 0.05

[lists]
reconcile_interval_s = 0

[sources.platform_cases]
type = "platform_cases"
url = "{sandbox}/api/v1/sanctions/cases"
token_file = "sandbox.token"
peer_cert = "{pki}/platform.crt"
trusted_cas = ["{pki}/ca.crt"]
mapping = "{mappings}/platform-sanction-case.toml"

[targets.department]
type = "sql"
url = "sqlite:///{dept_db}"
datasets = {{ credit_list = "{mappings}/department-credit_list.toml" }}
personal_ids = "full"
external = false

[targets.department.retry]
initial_s = 0.05
max_s = 0.2
jitter_s = 0.01

[targets.department.tables.credit_list]
table = "dept_credit_list"
key_columns = ["record_key"]

[targets.casedesk]
type = "file_drop"
directory = "dept/outbox"
datasets = {{ sanction_case = "{mappings}/department-sanction-case.toml" }}
personal_ids = "full"
external = false

[inbound]
port = 0

[inbound.channels.lists]
mapping = "{mappings}/platform-credit_list.toml"
profile = "cms"
key = "{pki}/gateway.key"
cert = "{pki}/gateway.crt"
trusted_cas = ["{pki}/ca.crt"]
peer_certs = ["{pki}/platform.crt"]
snapshots = true

[inbound.channels.cases]
mapping = "{mappings}/platform-sanction-case.toml"
profile = "cms"
key = "{pki}/gateway.key"
cert = "{pki}/gateway.crt"
trusted_cas = ["{pki}/ca.crt"]
peer_certs = ["{pki}/platform.crt"]
"""


@dataclass
class World:
    path: Path
    config: Config
    store: Store
    sandbox: Sandbox
    url: str  # the gateway's inbound endpoint
    dept: Path
    ca: CA

    async def deliver(self) -> None:
        """Poll the sources and deliver everything queued (the endpoint keeps listening meanwhile)."""
        async with Gateway(self.config, self.store) as gw:
            assert await gw.run_until_idle(timeout_s=30)

    async def views(self) -> dict[str, ListView]:
        return {v.list_code: v for v in await list_status(self.config, self.store)}


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CA:
    authority = make_ca(tmp_path_factory.mktemp("pki"), "rsa")
    authority.issue("gateway")
    authority.issue("platform")
    return authority


def _sandbox_config(ca: CA, directory: Path) -> SandboxConfig:
    """The platform's side: its own key and certificate, the gateway's certificate to seal to."""
    pki = ca.directory
    raw = {"profile": "cms", "key": str(pki / "platform.key"), "cert": str(pki / "platform.crt"),
           "peer_cert": str(pki / "gateway.crt"), "trusted_cas": [str(ca.root.cert_path)]}
    sealing, problems = load_sealing(raw, "sandbox.envelope", Path("/"))
    assert problems == []
    return SandboxConfig(token=TOKEN, db_path=str(directory / "sandbox.db"), departments=(DEPT,), sealing=sealing)


@pytest.fixture
async def world(tmp_path: Path, store_url: str, ca: CA) -> AsyncIterator[World]:
    dept = make_dept_db(tmp_path / "department.db")
    (tmp_path / "sandbox.token").write_text(TOKEN + "\n", encoding="utf-8")
    async with Sandbox(_sandbox_config(ca, tmp_path)) as sandbox:
        path = tmp_path / "credit-gateway.toml"
        path.write_text(CONFIG.format(dept=DEPT, store_url=store_url, sandbox=sandbox.url, pki=ca.directory.as_posix(),
                                      mappings=MAPPINGS.as_posix(), dept_db=dept.as_posix()), encoding="utf-8")
        config = load_config(path)
        store = await open_store(config.store_url())
        try:
            servers = await start_web(config, store)  # the inbound endpoint, as the daemon starts it
            try:
                assert servers.inbound is not None
                yield World(path, config, store, sandbox, servers.inbound.url, dept, ca)
            finally:
                await servers.aclose()
        finally:
            await store.aclose()


def key(code: str, n: int = 0, person: int = 0, secret: KeySecret | None = None) -> str:
    """An entry's record key: organisation ``n``'s USCC, or the pseudonym of person ``person``'s ID number."""
    if n:
        return f"{code}|{uscc(n)}|"
    assert secret is not None
    return f"{code}||{secret.pseudonym(resident_id(person))}"


def assert_converged(found: dict[str, ListView]) -> None:
    """The pushing platform's version and digest = the ledger's; every target holds what the ledger says."""
    for v in found.values():
        assert v.platform_version is not None and v.platform_version == v.applied_version, v
        assert v.ledger_digest == v.platform_digest and v.ledger_count == v.platform_count, v
        assert v.targets, v
        for t in v.targets:
            assert t.in_sync and t.digest == t.expected_digest and not t.error, t


def item(n: int, code: str = BLACK, list_type: str = BLACK_LIST) -> dict[str, Any]:
    """An entry as the platform pushes it (its field names, with ``op``)."""
    return {**org_item(n), "MDBM": code, "MDLX": list_type, "op": "upsert"}


async def cli(*argv: str) -> int:
    """The command line, as ops run it (in a thread: it runs its own event loop)."""
    return await asyncio.to_thread(main, list(argv))


# ---------------------------------------------------------------- lists: snapshot, interrupted snapshot, delta


async def test_pushed_snapshots_and_delta_reach_the_department(world: World) -> None:
    """Two-page black-list snapshot → ledger → SQL sink; the next snapshot lacks one subject: withdrawn only when
    its last page arrives (not while it is interrupted); a delta adds one; at every end the digests agree."""
    sb, url = world.sandbox, world.url
    sb.lists.publish(BLACK, BLACK_LIST, [org_item(1), org_item(2), org_item(3), person_item(4)])
    pushed = await sb.push.list_snapshot(url, "lists", BLACK, page_size=2)
    assert [(p.snapshot.page, p.snapshot.last) for p in pushed if p.snapshot] == [(1, False), (2, True)]
    assert [(p.records, p.accepted, p.rejected) for p in pushed] == [(2, 2, 0), (2, 2, 0)]
    await world.deliver()
    secret = await world.store.key_secret()
    rows = dept_rows(world.dept)
    assert set(rows) == {key(BLACK, 1), key(BLACK, 2), key(BLACK, 3), key(BLACK, person=4, secret=secret)}
    assert rows[key(BLACK, person=4, secret=secret)]["id_no"] == resident_id(4)  # internal route: full ID number
    assert_converged(await world.views())

    sb.lists.publish(BLACK, BLACK_LIST, remove=[uscc(2)])  # version 2: three subjects, two pages
    first = await sb.push.list_snapshot(url, "lists", BLACK, page_size=2, stop_after=1)
    assert len(first) == 1 and first[0].snapshot is not None and not first[0].snapshot.last
    assert (await ledger(world.store))[key(BLACK, 2)]["operation"] == "upsert"  # interrupted: nothing withdrawn
    behind = (await world.views())[BLACK]
    assert (behind.platform_version, behind.applied_version) == (2, 1)
    assert behind.ledger_digest != behind.platform_digest and behind.ledger_count == 4
    rest = await sb.push.list_snapshot(url, "lists", BLACK, resume=True)
    assert rest[0].snapshot is not None and rest[0].snapshot.last
    assert rest[0].snapshot.snapshot_id == first[0].snapshot.snapshot_id
    held = await ledger(world.store)
    assert (held[key(BLACK, 2)]["operation"], held[key(BLACK, 2)]["version"]) == ("withdraw", 2)
    assert {held[k]["version"] for k in (key(BLACK, 1), key(BLACK, 3), key(BLACK, person=4, secret=secret))} == {1}
    await world.deliver()
    assert set(dept_rows(world.dept)) == {key(BLACK, 1), key(BLACK, 3), key(BLACK, person=4, secret=secret)}
    assert_converged(await world.views())

    sb.lists.publish(BLACK, BLACK_LIST, [org_item(5)])
    delta = await sb.push.list_delta(url, "lists", BLACK)
    assert [(d.snapshot, d.list_state.from_version if d.list_state else None, d.accepted) for d in delta] == [
        (None, 2, 1)]
    await world.deliver()
    assert key(BLACK, 5) in dept_rows(world.dept)
    found = await world.views()
    assert_converged(found)
    assert (found[BLACK].platform_version, found[BLACK].ledger_count) == (3, 4)


async def test_pushed_red_entry_of_a_black_subject_is_held(world: World) -> None:
    """The red/black check runs in the intake transaction of a pushed snapshot as it does for a pulled one."""
    sb = world.sandbox
    sb.lists.publish(BLACK, BLACK_LIST, [org_item(1)])
    sb.lists.publish(RED, RED_LIST, [org_item(1), org_item(2)])
    await sb.push.list_snapshot(world.url, "lists", BLACK)
    await sb.push.list_snapshot(world.url, "lists", RED)
    await world.deliver()
    found = await conflicts(world.store)
    assert [(c.red_key, c.black_key) for c in found] == [(key(RED, 1), key(BLACK, 1))]
    assert set(dept_rows(world.dept)) == {key(BLACK, 1), key(RED, 2)}
    views = await world.views()
    assert views[RED].held == 1
    assert_converged(views)


# ---------------------------------------------------------------- what the channel refuses


async def test_snapshot_pages_out_of_order_twice_superseded(world: World) -> None:
    """A last page before the others, a page twice, a page of a superseded snapshot and a delta that does not
    follow the applied version are refused with 409, leaving the store as it was; a record of another list in
    a snapshot page is refused by itself."""
    client = world.sandbox.push.client(world.url, "lists", "credit_list")
    state = ListState(BLACK, 1, BLACK_LIST)

    def page(n: int, last: bool, snapshot: str, *items: dict[str, Any]) -> Any:
        return client.batch(list(items), snapshot=SnapshotMark(BLACK, snapshot, n, last), list_state=state)

    last_first = page(2, True, "s-a", item(2))
    before = await counts(world.store)
    refused = await client.push(last_first)
    assert (refused.status, refused.answer["error"]) == (409, "conflict")
    assert "missing page(s) 1" in refused.answer["message"] and "nothing was withdrawn" in refused.answer["message"]
    assert await counts(world.store) == before
    answer = await client.send(page(1, False, "s-a", item(1), item(3, RED, RED_LIST)))
    assert [r["status"] for r in answer["results"]] == ["accepted", "rejected"]
    assert answer["results"][1]["errors"][0]["field"] == "snapshot.scope"
    await client.send(InboundClient.retry(last_first))  # now complete: taken
    again = await client.push(page(1, False, "s-a", item(1)))
    assert again.status == 409 and "is complete" in again.answer["message"]

    await client.send(page(1, False, "s-b", item(1)))
    twice = await client.push(page(1, False, "s-b", item(1)))
    assert twice.status == 409 and "page 1 of snapshot s-b" in twice.answer["message"]
    await client.send(page(1, False, "s-c", item(1)))  # a newer snapshot starts: s-b is superseded
    before = await counts(world.store)
    stale = await client.push(page(2, True, "s-b", item(1)))
    assert stale.status == 409 and "superseded by snapshot s-c" in stale.answer["message"]
    assert await counts(world.store) == before
    held = await ledger(world.store)
    assert {k: r["operation"] for k, r in held.items()} == {key(BLACK, 1): "upsert", key(BLACK, 2): "upsert"}

    gap = client.batch([item(4)], list_state=ListState(BLACK, 5, BLACK_LIST, from_version=3))
    refused = await client.push(gap)
    assert refused.status == 409 and "starts at version 3, but version 1 is applied" in refused.answer["message"]


async def test_snapshot_needs_a_channel_that_takes_them(world: World) -> None:
    """The cases channel is not configured with snapshots = true: a snapshot page is refused (400)."""
    client = world.sandbox.push.client(world.url, "cases", "sanction_case")
    refused = await client.push(client.batch([{**CASE_ORG, "operation": "upsert"}],
                                             snapshot=SnapshotMark("LH", "s-1", 1, True)))
    assert (refused.status, refused.answer["error"]) == (400, "batch")
    assert "does not take full snapshots" in refused.answer["message"]
    assert await counts(world.store, [s.records, s.inbound_nonces]) == {"cg_records": 0, "cg_inbound_nonces": 0}


# ---------------------------------------------------------------- sanction cases


async def test_pushed_case_lands_like_a_pulled_one(world: World) -> None:
    """A case pushed by the platform is the same ledger record the case feed gives (the pull finds it
    unchanged), reaches the department, and the sanctions report follows it as open; a replay is refused."""
    sb = world.sandbox
    sb.sanctions.issue([CASE_ORG], department=DEPT)
    pushed = await sb.push.cases(world.url, "cases", department=DEPT)
    assert [(p.records, p.accepted) for p in pushed] == [(1, 1)]
    assert await sb.push.cases(world.url, "cases", department=DEPT) == []  # nothing new after that position
    held = await ledger(world.store)
    assert [(r["source"], r["version"]) for r in held.values()] == [("inbound.cases", 1)]

    await world.deliver()  # the platform_cases source pulls the same case; the department gets it once
    held = await ledger(world.store)
    assert [r["version"] for r in held.values()] == [1]
    async with world.store.db.engine.connect() as conn:
        pulled = (await conn.execute(select(s.intake.c.accepted, s.intake.c.unchanged).where(
            s.intake.c.source == "platform_cases", s.intake.c.rows > 0))).all()
    assert [tuple(r) for r in pulled] == [(0, 1)]
    report = await sanctions_report(world.store.history, WorkCalendar(), today=china_today(), due_working_days=10)
    (status,) = report.cases
    assert (status.case_id, status.state) == ("LH-2026-0101", OPEN)
    assert status.pushed is not None and status.pushed.target == "casedesk"

    client = sb.push.client(world.url, "cases", "sanction_case")
    sealed = client.seal(client.batch([{**CASE_ORG, "operation": "upsert"}]))
    assert (await client.post(sealed)).status == 200
    before = await counts(world.store)
    replay = await client.post(sealed)
    assert (replay.status, replay.answer["error"]) == (409, "replay")
    assert await counts(world.store) == before


# ---------------------------------------------------------------- the control endpoint and the CLI


async def _control(world: World, spec: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as session, session.post(
            f"{world.sandbox.url}/_sandbox/push", data=orjson.dumps(spec),
            headers={"Authorization": f"Bearer {TOKEN}"}) as response:
        return response.status, orjson.loads(await response.read())


async def test_control_endpoint_and_inbound_commands(world: World, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """POST /_sandbox/push drives a push; `inbound list` and `inbound show` show the batches with our receipt,
    and `inbound show --receipt` writes evidence that `verify` checks offline (and that fails when altered)."""
    world.sandbox.lists.publish(BLACK, BLACK_LIST, [org_item(1), org_item(2), org_item(3)])
    status, answer = await _control(world, {"url": world.url, "channel": "lists", "what": "list_snapshot",
                                            "list": BLACK, "pageSize": 2})
    assert status == 200 and [p["snapshot"]["page"] for p in answer["pushed"]] == [1, 2]
    status, bad = await _control(world, {"url": world.url, "channel": "lists", "what": "everything"})
    assert status == 400 and "what: one of" in bad["message"]
    status, refused = await _control(world, {"url": world.url, "channel": "cases", "what": "list_snapshot",
                                             "list": BLACK})
    assert (status, refused["status"], refused["error"]) == (502, 400, "batch")
    last = answer["pushed"][1]

    capsys.readouterr()
    assert await cli("-c", str(world.path), "inbound", "list", "--channel", "lists") == 0
    text = capsys.readouterr().out
    assert last["batchId"] in text and last["receiptId"] in text and f"{BLACK} " in text and "p2 last" in text
    assert await cli("-c", str(world.path), "inbound", "list", "--json") == 0
    listed = orjson.loads(capsys.readouterr().out)["batches"]
    assert [(b["batch_id"], b["accepted"], b["signer"].startswith("CN=platform")) for b in listed] == [
        (p["batchId"], p["accepted"], True) for p in reversed(answer["pushed"])]

    assert await cli("-c", str(world.path), "inbound", "show", last["batchId"]) == 0
    shown = capsys.readouterr().out
    assert f"our receipt:    {last['receiptId']}" in shown and "signed by us as " + DEPT in shown
    assert "records: accepted 1" in shown
    evidence = tmp_path / "inbound.zip"
    assert await cli("-c", str(world.path), "inbound", "show", last["batchId"], "--receipt", str(evidence)) == 0
    gateway_subject = "CN=gateway,O=credit-gateway development,C=CN"
    verify = ("verify", str(evidence), "--trusted-ca", str(world.ca.root.cert_path), "--signer", gateway_subject)
    capsys.readouterr()
    assert await cli(*verify) == 0
    assert "NOT" not in capsys.readouterr().out
    assert stat.S_IMODE(evidence.stat().st_mode) == 0o600
    assert await cli(*verify[:4]) == 0  # without --signer: the file names us as the receipt's signer
    assert f"ok   receipt signer ({gateway_subject} (us))" in capsys.readouterr().out
    _alter(evidence, "sent.bin")
    assert await cli(*verify) == 1
    assert "FAIL receipt digest equals the body sent" in capsys.readouterr().out
    assert await cli("-c", str(world.path), "inbound", "show", "b-nothing") == 1
    capsys.readouterr()
    assert await cli("-c", str(world.path), "check") == 0
    checked = capsys.readouterr().out
    assert "inbound  lists (cms) → credit_list, full snapshots from CN=platform" in checked
    assert "inbound  cases (cms) → sanction_case from CN=platform" in checked


def _alter(path: Path, member: str) -> None:
    with zipfile.ZipFile(path) as z:
        parts = {name: z.read(name) for name in z.namelist()}
    parts[member] = parts[member][:-1] + bytes([parts[member][-1] ^ 1])
    with zipfile.ZipFile(path, "w") as z:
        for name, data in parts.items():
            z.writestr(name, data)


# ---------------------------------------------------------------- the batch format (no store)


def _batch(**heads: Any) -> Any:
    client = InboundClient("http://127.0.0.1:9", "lists", "credit_list", "none")
    return client.batch([item(1)], sent_at=dt.datetime(2026, 11, 21, tzinfo=dt.UTC), nonce="n" * 20, **heads)


def test_heads_round_trip_in_json_and_xml_and_are_digested() -> None:
    """Snapshot and list heads survive JSON and XML alike, enter contentSha256, and a batch without them is
    digested exactly as before they existed."""
    mark, state = SnapshotMark(BLACK, "s-1", 2, True), ListState(BLACK, 7, BLACK_LIST, "a" * 64, 3)
    batch = _batch(snapshot=mark, list_state=state)
    for body in (batch_json(batch), batch_xml(batch)):
        parsed = parse_batch(body)
        assert (parsed.snapshot, parsed.list_state) == (mark, state)
    plain = _batch()
    assert parse_batch(batch_json(plain)).snapshot is None
    legacy = hashlib.sha256(orjson.dumps({"channel": "lists", "dataset": "credit_list", "records": [item(1)]},
                                         option=orjson.OPT_SORT_KEYS)).hexdigest()
    assert plain.content_sha256() == legacy
    assert len({plain.content_sha256(), batch.content_sha256(), _batch(snapshot=mark).content_sha256()}) == 3


@pytest.mark.parametrize(("heads", "message"), [
    ({"snapshot": {"scope": BLACK, "id": "s-1", "page": 0, "last": True}}, "snapshot.page: expected an integer ≥ 1"),
    ({"snapshot": {"scope": BLACK, "id": "s-1", "page": 1, "last": "yes"}}, "snapshot.last: expected true or false"),
    ({"snapshot": {"scope": "", "id": "s-1", "page": 1, "last": True}}, "snapshot.scope: required"),
    ({"snapshot": {"scope": BLACK, "id": "s-1", "page": 1, "last": True, "x": 1}}, "snapshot.x: unknown"),
    ({"list": {"code": BLACK, "version": 1, "digest": "abc"}}, "list.digest: the membership digest"),
    ({"list": {"code": "OTHER", "version": 1}, "snapshot": {"scope": BLACK, "id": "s", "page": 1, "last": True}},
     "list.code: 'OTHER' is not the snapshot's scope"),
    ({"snapshot": {"scope": "BLACK\u00002026", "id": "s-1", "page": 1, "last": True}},
     "snapshot.scope: control character U+0000 at position 6"),  # a key part: stored and shown (issue 17, 4)
    ({"list": {"code": BLACK, "version": 1, "type": "\u001b[2J"}}, "list.type: control character U+001B"),
])
def test_bad_heads_are_named(heads: dict[str, Any], message: str) -> None:
    doc = {**orjson.loads(batch_json(_batch())), **heads}
    with pytest.raises(BatchError, match=re.escape(message)):
        parse_batch(orjson.dumps(doc))


def test_an_empty_page_is_a_snapshot_only() -> None:
    """An emptied list is pushed as one empty last page; a plain batch still needs records."""
    doc = orjson.loads(batch_json(_batch(snapshot=SnapshotMark(BLACK, "s-1", 1, True))))
    assert parse_batch(orjson.dumps({**doc, "records": []})).records == []
    doc.pop("snapshot")
    with pytest.raises(BatchError, match="only a snapshot page may be empty"):
        parse_batch(orjson.dumps({**doc, "records": []}))

