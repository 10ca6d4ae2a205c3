"""The inbound endpoint: real servers on 127.0.0.1, real envelopes (cms, sm, xmldsig), real TLS.

A pushed batch that verifies lands in the ledger and the outbox like any source's rows and is answered with
our signed receipt; every refused one gets a clear error and leaves the store exactly as it was.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import socket
import ssl
import time
from pathlib import Path

import orjson
import pytest

from gateway.config import load_config
from gateway.daemon import Gateway
from gateway.errors import ConfigError, GatewayError
from gateway.inbound.batch import as_xml_text, batch_json, batch_xml
from gateway.inbound.client import InboundClient, PushRefused
from gateway.sealing import get_profile
from gateway.sealing.base import Credentials
from gateway.sealing.signatures import verify_detached
from gateway.sealing.target import receipt_bytes
from gateway.store import open_store
from gateway.store import schema as s
from tests.sealing.test_xmlsafe import BILLION_LAUGHS, external_entity
from tests.support.helpers import ledger, outbox, select_rows, wait_for
from tests.support.inbound_helpers import (
    NOTHING,
    Pki,
    bad_row,
    client,
    counts,
    endpoint,
    make_pki,
    sample_rows,
    write_config,
)

NOW = dt.datetime.now(dt.UTC)
KINDS = {"cms": "rsa", "sm": "sm2", "xmldsig": "rsa"}


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'store.db'}"


@pytest.fixture(scope="module")
def rsa_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki-rsa"), "rsa")


# ---------------------------------------------------------------- accepted batches


@pytest.mark.parametrize("profile", ["cms", "sm", "xmldsig"])
async def test_push_lands_in_ledger_and_outbox(tmp_path: Path, store_url: str, profile: str) -> None:
    """Valid records become ledger versions with outbox rows, the bad one is quarantined with its reason, and
    the answer carries our receipt, signed by the gateway's key, naming the batch and every record's result."""
    pki = make_pki(tmp_path / "pki", KINDS[profile])
    rows = sample_rows(tmp_path, 4)
    async with endpoint(write_config(tmp_path, store_url, pki, profile)) as (_config, store, server):
        partner = client(server.url, pki, profile)
        batch = partner.batch([*rows, bad_row(rows[0])])
        answer = await partner.send(batch)  # raises unless the receipt verifies
        held = await ledger(store)
        queued = await outbox(store, target="platform")
        quarantined = await store.reports.list_quarantine()
        stored = await store.inbound.show_inbound("platform", batch.batch_id)
    assert [r["status"] for r in answer["results"]] == ["accepted"] * 4 + ["rejected"]
    assert answer["results"][4]["errors"][0]["field"] == "decision_date"
    assert len(held) == 4 and {r["source"] for r in held.values()} == {"inbound.platform"}
    assert sorted(r["record_key"] for r in queued) == sorted(held) and {r["state"] for r in queued} == {"pending"}
    assert len(quarantined) == 1 and quarantined[0]["source"] == "inbound.platform"
    assert quarantined[0]["reasons"][0]["field"] == "decision_date"
    receipt = answer["receipt"]
    sent = as_xml_text(batch) if partner.sends_xml else batch  # XML carries every value as text
    assert receipt["batchId"] == batch.batch_id and receipt["contentSha256"] == sent.content_sha256()
    assert (receipt["successSize"], receipt["failSize"]) == (4, 1)
    assert stored is not None and stored["answer"] == answer and stored["signer"].startswith("CN=platform")
    opened = verify_detached(receipt_bytes(receipt), base64.b64decode(answer["receiptSignature"]),
                             (pki.ca.root.cert_pem,))
    assert opened.signer_subject.startswith("CN=gateway")


async def test_same_records_again_are_unchanged(tmp_path: Path, rsa_pki: Pki) -> None:
    """A second batch with the same records changes nothing in the ledger: each is reported unchanged."""
    rows = sample_rows(tmp_path, 3)
    async with endpoint(write_config(tmp_path, sqlite_url(tmp_path), rsa_pki)) as (_config, store, server):
        partner = client(server.url, rsa_pki, "cms")
        await partner.send(rows)
        answer = await partner.send(rows)
        assert [r["status"] for r in answer["results"]] == ["unchanged"] * 3
        assert (await counts(store))["cg_records"] == 3 and len(await outbox(store)) == 3


# ---------------------------------------------------------------- idempotency and replays (both stores)


async def test_retry_with_fresh_nonce_gets_the_original_receipt(tmp_path: Path, store_url: str,
                                                                rsa_pki: Pki) -> None:
    """The same batch id and records with a fresh nonce: the stored answer, nothing applied twice."""
    rows = sample_rows(tmp_path, 3)
    async with endpoint(write_config(tmp_path, store_url, rsa_pki)) as (_config, store, server):
        partner = client(server.url, rsa_pki, "cms")
        batch = partner.batch(rows)
        first = await partner.send(batch)
        before = await counts(store)
        again = await partner.send(InboundClient.retry(batch))
        after = await counts(store)
    assert again == first  # receipt id, results and signature: the original answer
    assert after == {**before, "cg_inbound_nonces": before["cg_inbound_nonces"] + 1}


async def test_same_batch_id_other_records_is_a_conflict(tmp_path: Path, store_url: str, rsa_pki: Pki) -> None:
    """The same batch id with different records is refused with 409, and nothing of it is stored."""
    rows = sample_rows(tmp_path, 3)
    async with endpoint(write_config(tmp_path, store_url, rsa_pki)) as (_config, store, server):
        partner = client(server.url, rsa_pki, "cms")
        batch = partner.batch(rows[:2])
        await partner.send(batch)
        before = await counts(store)
        pushed = await partner.push(partner.batch(rows, batch_id=batch.batch_id))
        assert (pushed.status, pushed.answer["error"]) == (409, "conflict")
        assert "accepted before with different records" in pushed.answer["message"]
        assert await counts(store) == before


async def test_replayed_nonce_is_refused(tmp_path: Path, store_url: str, rsa_pki: Pki) -> None:
    """The very same sealed request sent twice: the second is a replay (409) and changes nothing."""
    rows = sample_rows(tmp_path, 2)
    async with endpoint(write_config(tmp_path, store_url, rsa_pki)) as (_config, store, server):
        partner = client(server.url, rsa_pki, "cms")
        sealed = partner.seal(partner.batch(rows))
        assert (await partner.post(sealed)).status == 200
        before = await counts(store)
        replay = await partner.post(sealed)
        assert (replay.status, replay.answer["error"]) == (409, "replay")
        assert "was used before" in replay.answer["message"]
        assert await counts(store) == before


async def test_old_nonces_are_pruned(tmp_path: Path, rsa_pki: Pki) -> None:
    """Nonces older than the retention period are forgotten; newer ones stay."""
    rows = sample_rows(tmp_path, 1)
    async with endpoint(write_config(tmp_path, sqlite_url(tmp_path), rsa_pki)) as (_config, store, server):
        await client(server.url, rsa_pki, "cms").send(rows)
        assert await store.inbound.prune_nonces(900) == 0 and await store.inbound.nonce_count() == 1
        assert await store.inbound.prune_nonces(900,
                                                now=time.time() + 901) == 1 and await store.inbound.nonce_count() == 0


# ---------------------------------------------------------------- refusals: nothing stored


async def _refused(tmp_path: Path, pki: Pki, body: bytes, content_type: str | None = None, profile: str = "cms",
                   **config: object) -> tuple[int, dict[str, str]]:
    """POST ``body`` to a fresh endpoint; return the status and answer after checking nothing was stored."""
    path = write_config(tmp_path, sqlite_url(tmp_path), pki, profile, **config)  # type: ignore[arg-type]
    async with endpoint(path) as (_config, store, server):
        pushed = await client(server.url, pki, profile).post(body, content_type)
        assert await counts(store) == NOTHING
    return pushed.status, pushed.answer


def _sealed_at(pki: Pki, signer_key: bytes, signer_cert: bytes, rows: list[dict[str, object]],
               when: dt.datetime, profile: str = "cms") -> bytes:
    """A batch sealed as if at ``when`` (so a certificate valid then but not now can sign it)."""
    partner = client("http://unused", pki, profile)
    body = batch_json(partner.batch(rows))
    return get_profile(profile).seal(body, Credentials(signer_key, signer_cert), partner.gateway,  # type: ignore
                                     now=when)


class TestRefusals:
    async def test_tampered_payload(self, tmp_path: Path, rsa_pki: Pki) -> None:
        """One flipped byte in the envelope: 400 with the one answer every unopenable envelope gets."""
        partner = client("http://unused", rsa_pki, "cms")
        sealed = bytearray(partner.seal(partner.batch(sample_rows(tmp_path, 2))))
        sealed[len(sealed) // 2] ^= 0x01
        status, answer = await _refused(tmp_path, rsa_pki, bytes(sealed))
        assert (status, answer["error"]) == (400, "envelope")
        assert "cannot be opened" in answer["message"]

    async def test_tampered_xml_signature(self, tmp_path: Path, rsa_pki: Pki) -> None:
        """An xmldsig batch whose content was edited after signing does not verify."""
        partner = client("http://unused", rsa_pki, "xmldsig")
        sealed = partner.seal(partner.batch(sample_rows(tmp_path, 2)))
        tampered = sealed.replace(b'name="fkje">', b'name="fkje">9', 1)
        assert tampered != sealed
        status, answer = await _refused(tmp_path, rsa_pki, tampered, profile="xmldsig")
        assert (status, answer["error"]) == (400, "envelope")

    async def test_wrong_signer(self, tmp_path: Path, rsa_pki: Pki) -> None:
        """A valid certificate from the trusted CA, but not an allowed peer: 403 naming the signer."""
        intruder = rsa_pki.ca.issue("intruder")
        body = _sealed_at(rsa_pki, intruder.key_pem, intruder.cert_pem, sample_rows(tmp_path, 1), NOW)
        status, answer = await _refused(tmp_path, rsa_pki, body)
        assert (status, answer["error"]) == (403, "certificate")
        assert "wrong signer" in answer["message"] and "CN=intruder" in answer["message"]

    async def test_expired_certificate(self, tmp_path: Path, rsa_pki: Pki) -> None:
        """The allowed peer's name, but an expired certificate: 403 saying when it expired."""
        old = rsa_pki.ca.issue("platform-old", common_name="platform", not_before=NOW - dt.timedelta(days=400),
                               not_after=NOW - dt.timedelta(days=1))
        body = _sealed_at(rsa_pki, old.key_pem, old.cert_pem, sample_rows(tmp_path, 1), NOW - dt.timedelta(days=10))
        status, answer = await _refused(tmp_path, rsa_pki, body)
        assert (status, answer["error"]) == (403, "certificate") and "expired at" in answer["message"]

    async def test_not_yet_valid_certificate(self, tmp_path: Path, rsa_pki: Pki) -> None:
        future = rsa_pki.ca.issue("platform-new", common_name="platform", not_before=NOW + dt.timedelta(days=1),
                                  not_after=NOW + dt.timedelta(days=300))
        body = _sealed_at(rsa_pki, future.key_pem, future.cert_pem, sample_rows(tmp_path, 1),
                          NOW + dt.timedelta(days=2))
        status, answer = await _refused(tmp_path, rsa_pki, body)
        assert (status, answer["error"]) == (403, "certificate") and "not yet valid" in answer["message"]

    async def test_unknown_ca(self, tmp_path: Path, rsa_pki: Pki) -> None:
        """The peer's name on a certificate from a CA nobody trusts: 403."""
        rogue = make_pki(tmp_path / "rogue", "rsa").platform  # CN=platform, other CA
        body = _sealed_at(rsa_pki, rogue.key_pem, rogue.cert_pem, sample_rows(tmp_path, 1), NOW)
        status, answer = await _refused(tmp_path, rsa_pki, body)
        assert (status, answer["error"]) == (403, "certificate")
        assert "not issued by a trusted CA" in answer["message"]

    @pytest.mark.parametrize("skew", [dt.timedelta(hours=-1), dt.timedelta(minutes=10)])
    async def test_stale_or_future_timestamp(self, tmp_path: Path, rsa_pki: Pki, skew: dt.timedelta) -> None:
        """A batch sent an hour ago or ten minutes ahead of now (not of when the module was imported) is stale."""
        partner = client("http://unused", rsa_pki, "cms")
        body = partner.seal(partner.batch(sample_rows(tmp_path, 1), sent_at=dt.datetime.now(dt.UTC) + skew))
        status, answer = await _refused(tmp_path, rsa_pki, body)
        assert (status, answer["error"]) == (400, "stale") and "the window is ±300 s" in answer["message"]

    async def test_batch_for_another_channel(self, tmp_path: Path, rsa_pki: Pki) -> None:
        """A batch signed for another channel cannot be pushed here."""
        partner = client("http://unused", rsa_pki, "cms")
        other = InboundClient("http://unused", "elsewhere", "penalty", "cms", partner.ours, partner.gateway)
        status, answer = await _refused(tmp_path, rsa_pki, other.seal(other.batch(sample_rows(tmp_path, 1))))
        assert (status, answer["error"]) == (400, "batch") and "'elsewhere'" in answer["message"]

    async def test_oversized_body(self, tmp_path: Path, rsa_pki: Pki) -> None:
        """A declared Content-Length over the limit is refused before the body is read."""
        status, answer = await _refused(tmp_path, rsa_pki, b"x" * 5000, max_body_bytes=4000)
        assert (status, answer["error"]) == (413, "too_large") and "at most 4000" in answer["message"]

    async def test_oversized_chunked_body(self, tmp_path: Path, rsa_pki: Pki) -> None:
        """Without a Content-Length the body is read up to the limit and refused there."""
        async def chunks():  # type: ignore[no-untyped-def]
            for _ in range(5):
                yield b"x" * 1000

        path = write_config(tmp_path, sqlite_url(tmp_path), rsa_pki, max_body_bytes=4000)
        async with endpoint(path) as (_config, store, server):
            import aiohttp

            async with aiohttp.ClientSession() as session, session.post(
                    f"{server.url}/inbound/platform", data=chunks(),
                    headers={"Content-Type": "application/pkcs7-mime"}) as response:
                assert response.status == 413 and "over 4000" in (await response.json())["message"]
            assert await counts(store) == NOTHING

    async def test_wrong_content_type(self, tmp_path: Path, rsa_pki: Pki) -> None:
        status, answer = await _refused(tmp_path, rsa_pki, b"{}", "application/json")
        assert (status, answer["error"]) == (415, "content_type")
        assert "application/pkcs7-mime" in answer["message"]

    async def test_unknown_channel(self, tmp_path: Path, rsa_pki: Pki) -> None:
        async with endpoint(write_config(tmp_path, sqlite_url(tmp_path), rsa_pki)) as (_config, _store, server):
            partner = client(server.url, rsa_pki, "cms")
            other = InboundClient(server.url, "nope", "penalty", "cms", partner.ours, partner.gateway)
            pushed = await other.post(b"x")
        assert (pushed.status, pushed.answer["error"]) == (404, "channel")

    @pytest.mark.parametrize("name", ["doctype", "external entity", "billion laughs"])
    async def test_hostile_xml(self, tmp_path: Path, rsa_pki: Pki, name: str) -> None:
        """XML with a DTD, an external entity or nested entities is refused before anything else."""
        body = {"doctype": b'<?xml version="1.0"?><!DOCTYPE batch><batch/>',
                "external entity": external_entity("file:///etc/passwd"), "billion laughs": BILLION_LAUGHS}[name]
        status, answer = await _refused(tmp_path, rsa_pki, body, profile="xmldsig")
        assert (status, answer["error"]) == (400, "xml") and "DTD" in answer["message"]

    async def test_hostile_xml_inside_an_envelope(self, tmp_path: Path, rsa_pki: Pki) -> None:
        """A DTD inside a correctly signed CMS envelope is refused too (the content is parsed safely)."""
        partner = client("http://unused", rsa_pki, "cms")
        inner = batch_xml(partner.batch(sample_rows(tmp_path, 1))).replace(
            b"?>", b'?><!DOCTYPE batch [<!ENTITY x SYSTEM "file:///etc/passwd">]>', 1)
        sealed = get_profile("cms").seal(inner, partner.ours, partner.gateway)  # type: ignore[arg-type]
        status, answer = await _refused(tmp_path, rsa_pki, sealed)
        assert (status, answer["error"]) == (400, "batch") and "DTD" in answer["message"]


async def test_tampered_receipt_is_refused_by_the_client(tmp_path: Path, rsa_pki: Pki) -> None:
    """The client's check: a receipt whose results were changed after signing does not verify."""
    async with endpoint(write_config(tmp_path, sqlite_url(tmp_path), rsa_pki)) as (_config, _store, server):
        partner = client(server.url, rsa_pki, "cms")
        batch = partner.batch(sample_rows(tmp_path, 2))
        pushed = await partner.push(batch)
    answer = orjson.loads(orjson.dumps(pushed.answer))
    answer["results"][0]["status"] = "rejected"
    with pytest.raises(PushRefused, match="results do not match"):
        partner.verify(answer, batch)


# ---------------------------------------------------------------- mutual TLS


def _tls_extra(pki: Pki) -> str:
    return (f'tls_cert = "{pki.gateway.cert_path}"\ntls_key = "{pki.gateway.key_path}"\n'
            f'client_ca = "{pki.ca.root.cert_path}"\n')


def _client_tls(pki: Pki, cert: object | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca.root.cert_path))
    if cert is not None:
        context.load_cert_chain(cert.cert_path, cert.key_path)  # type: ignore[attr-defined]
    return context


def _handshake(context: ssl.SSLContext, port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        return tls.recv(100)


class TestMutualTls:
    async def test_client_certificate_accepted(self, tmp_path: Path, rsa_pki: Pki) -> None:
        """Over HTTPS with the partner's client certificate, a push goes through."""
        path = write_config(tmp_path, sqlite_url(tmp_path), rsa_pki, inbound_extra=_tls_extra(rsa_pki))
        async with endpoint(path) as (_config, store, server):
            assert server.url.startswith("https://127.0.0.1:")
            partner = client(server.url, rsa_pki, "cms", ssl_context=_client_tls(rsa_pki, rsa_pki.platform))
            await partner.send(sample_rows(tmp_path, 2))
            assert (await counts(store))["cg_records"] == 2

    async def test_no_client_certificate_is_refused_by_tls(self, tmp_path: Path, rsa_pki: Pki) -> None:
        """Without a client certificate the TLS handshake fails: no HTTP answer, nothing stored."""
        path = write_config(tmp_path, sqlite_url(tmp_path), rsa_pki, inbound_extra=_tls_extra(rsa_pki))
        async with endpoint(path) as (_config, store, server):
            partner = client(server.url, rsa_pki, "cms", ssl_context=_client_tls(rsa_pki, None))
            with pytest.raises(GatewayError, match="cannot push"):
                await partner.push(partner.batch(sample_rows(tmp_path, 1)))
            # at the socket level: without a certificate the server drops the connection before any HTTP answer
            port = int(server.url.rsplit(":", 1)[1])
            assert await asyncio.to_thread(_handshake, _client_tls(rsa_pki, None), port) == b""
            answered = await asyncio.to_thread(_handshake, _client_tls(rsa_pki, rsa_pki.platform), port)
            assert answered.startswith(b"HTTP/1.1 200")
            assert await counts(store) == NOTHING

    async def test_tls_client_not_an_allowed_peer(self, tmp_path: Path, rsa_pki: Pki) -> None:
        """A client certificate from the CA whose subject may not push: 403, nothing stored."""
        path = write_config(tmp_path, sqlite_url(tmp_path), rsa_pki, inbound_extra=_tls_extra(rsa_pki))
        intruder = rsa_pki.ca.issue("tls-intruder")
        async with endpoint(path) as (_config, store, server):
            partner = client(server.url, rsa_pki, "cms", ssl_context=_client_tls(rsa_pki, intruder))
            pushed = await partner.push(partner.batch(sample_rows(tmp_path, 1)))
            assert (pushed.status, pushed.answer["error"]) == (403, "peer")
            assert await counts(store) == NOTHING


# ---------------------------------------------------------------- the daemon runs it


async def test_daemon_starts_and_stops_the_endpoint(tmp_path: Path, rsa_pki: Pki) -> None:
    """``run`` listens when [inbound] is configured; a pushed batch is in the store; stopping closes the port."""
    config = load_config(write_config(tmp_path, sqlite_url(tmp_path), rsa_pki))
    store = await open_store(config.store_url())
    try:
        async with Gateway(config, store) as gw:
            task = asyncio.create_task(gw.run())
            await wait_for(lambda: gw.web.inbound is not None, what="the inbound endpoint")
            assert gw.web.inbound is not None
            url = gw.web.inbound.url
            answer = await client(url, rsa_pki, "cms").send(sample_rows(tmp_path, 2))
            gw.stopping.set()
            await asyncio.wait_for(task, 30)
        with pytest.raises(GatewayError):
            await client(url, rsa_pki, "cms").send(sample_rows(tmp_path, 1))
        rows = await select_rows(store, s.inbound_batches, order=s.inbound_batches.c.id)
        assert [r["batch_id"] for r in rows] == [answer["batchId"]]
    finally:
        await store.aclose()


# ---------------------------------------------------------------- configuration problems


class TestConfig:
    def _problems(self, tmp_path: Path, pki: Pki | None, **kwargs: object) -> str:
        with pytest.raises(ConfigError) as caught:
            load_config(write_config(tmp_path, sqlite_url(tmp_path), pki, **kwargs))  # type: ignore[arg-type]
        return str(caught.value)

    def test_bad_inbound_settings(self, tmp_path: Path, rsa_pki: Pki) -> None:
        text = self._problems(tmp_path, rsa_pki, inbound_extra="timestamp_window_s = 600\nnonce_retention_s = 60\n"
                                                               "client_ca = \"ca.crt\"\n")
        assert "inbound.nonce_retention_s: must be at least twice timestamp_window_s (1200)" in text
        assert "inbound.client_ca: mutual TLS needs tls_cert and tls_key too" in text
        text = self._problems(tmp_path, rsa_pki, inbound_extra="prot = 1\n")
        assert "inbound.prot: unknown setting; did you mean port?" in text

    def test_bad_channel(self, tmp_path: Path, rsa_pki: Pki) -> None:
        text = self._problems(tmp_path, rsa_pki, channel_extra='peers = ["not a subject"]\ndataset = "license"\n')
        assert "inbound.channels.platform.peers[0]: not an RFC 4514 subject" in text
        assert "inbound.channels.platform.dataset: " in text and "maps dataset penalty, not license" in text

    def test_profile_none_needs_internal_link_and_mutual_tls(self, tmp_path: Path, rsa_pki: Pki) -> None:
        text = self._problems(tmp_path, rsa_pki, profile="none")
        assert "inbound.channels.platform.profile: profile none is refused on an external channel" in text
        assert "inbound.channels.platform.profile: profile none needs mutual TLS" in text

    def test_missing_files_and_tls_key(self, tmp_path: Path, rsa_pki: Pki) -> None:
        path = write_config(tmp_path, sqlite_url(tmp_path), rsa_pki,
                            inbound_extra=f'tls_cert = "{rsa_pki.gateway.cert_path}"\n')
        path.write_text(path.read_text().replace(str(rsa_pki.platform.cert_path), "missing.crt"))
        with pytest.raises(ConfigError) as caught:
            load_config(path)
        text = str(caught.value)
        assert "inbound.tls_key: tls_cert and tls_key go together" in text
        assert "inbound.channels.platform.peer_certs[0]: cannot read" in text

    def test_tls_key_not_matching_certificate(self, tmp_path: Path, rsa_pki: Pki) -> None:
        text = self._problems(tmp_path, rsa_pki, inbound_extra=f'tls_cert = "{rsa_pki.gateway.cert_path}"\n'
                                                               f'tls_key = "{rsa_pki.platform.key_path}"\n')
        assert "inbound.tls_cert: cannot use" in text
