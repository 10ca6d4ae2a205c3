"""Security review of the inbound endpoint, the admin API and the log redactor: each test shows one defect found.

* a signed batch whose ``sentAt`` or snapshot page is out of range got a 500 (or a 503 that the sender retries
  for ever) instead of a 400 naming the field;
* a client that sends its request slowly held its connection (and, once the headers were in, a request
  handler) for an hour or more: nothing bounded how long headers and body may take (the admin API too);
* an ID number that a partner sent as a JSON number reached the admin API's answers and the log unmasked.
"""

from __future__ import annotations

import asyncio
import io
import logging
import socket
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.inbound.batch import BatchError, batch_json, batch_xml, parse_batch
from gateway.logs import Redactor, TextFormatter
from gateway.operations import mask_personal
from gateway.sealing import get_profile
from gateway.web.admin import AdminServer
from tests.ops.test_admin_api import READ_TOKEN, _admin_toml, _call
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

ID_NUMBER = 110101199003077774  # 18 digits, a valid check digit: a resident ID number as a JSON number


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki-review"), "rsa")


def _sealed(pki: Pki, doc: dict[str, Any]) -> bytes:
    """A batch document as the platform signs and seals it (cms), whatever it says."""
    partner = client("http://unused", pki, "cms")
    return get_profile("cms").seal(orjson.dumps(doc), partner.ours, partner.gateway)  # type: ignore[arg-type]


def _batch_doc(pki: Pki, rows: list[dict[str, Any]], **changes: Any) -> dict[str, Any]:
    partner = client("http://unused", pki, "cms")
    return {**orjson.loads(batch_json(partner.batch(rows))), **changes}


# ---------------------------------------------------------------- out-of-range values in a signed batch


class TestOutOfRange:
    @pytest.mark.parametrize("sent_at", ["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00"])
    def test_sent_at_outside_the_calendar_is_a_batch_error(self, sent_at: str) -> None:
        """An offset that moves sentAt past year 9999 or before year 1 raised OverflowError, not BatchError."""
        doc = {"batchId": "b-1", "channel": "c", "dataset": "penalty", "sentAt": sent_at,
               "nonce": "n" * 16, "records": [{"a": "1"}]}
        with pytest.raises(BatchError, match="sentAt"):
            parse_batch(orjson.dumps(doc))

    def test_huge_integers_in_heads_are_batch_errors(self, pki: Pki) -> None:
        """A snapshot page of 5000 digits (XML) raised ValueError; one past 32 bits would not fit the store."""
        partner = client("http://unused", pki, "cms")
        xml = batch_xml(partner.batch([{"a": "1"}])).replace(
            b"<record>", b'<snapshot scope="L" id="s-1" page="' + b"9" * 5000 + b'" last="false"/><record>', 1)
        with pytest.raises(BatchError, match=r"snapshot\.page"):
            parse_batch(xml)
        doc = orjson.loads(batch_json(partner.batch([{"a": "1"}])))
        doc["snapshot"] = {"scope": "L", "id": "s-1", "page": 2**31, "last": False}
        with pytest.raises(BatchError, match=r"snapshot\.page"):
            parse_batch(orjson.dumps(doc))
        doc["snapshot"]["page"] = 2**31 - 1
        assert parse_batch(orjson.dumps(doc)).snapshot is not None  # the largest page the store holds is fine

    async def test_signed_batch_with_sent_at_out_of_range_gets_400(self, tmp_path: Path, pki: Pki) -> None:
        body = _sealed(pki, _batch_doc(pki, sample_rows(tmp_path, 1), sentAt="9999-12-31T23:59:59-01:00"))
        async with endpoint(write_config(tmp_path, f"sqlite:///{tmp_path / 's.db'}", pki)) as (_c, store, server):
            pushed = await client(server.url, pki, "cms").post(body)
            assert (pushed.status, pushed.answer["error"]) == (400, "batch")
            assert "sentAt" in pushed.answer["message"]
            assert await counts(store) == NOTHING

    async def test_snapshot_page_past_the_store_column_gets_400(self, tmp_path: Path, store_url: str,
                                                                 pki: Pki) -> None:
        """On PostgreSQL page 2**31 failed the insert: 503 "retry later", and the sender retried for ever."""
        doc = _batch_doc(pki, [], snapshot={"scope": "L", "id": "s-1", "page": 2**31, "last": False})
        path = write_config(tmp_path, store_url, pki, channel_extra="snapshots = true")
        async with endpoint(path) as (_c, store, server):
            pushed = await client(server.url, pki, "cms").post(_sealed(pki, doc))
            assert (pushed.status, pushed.answer["error"]) == (400, "batch")
            assert "snapshot.page" in pushed.answer["message"]
            assert await counts(store) == NOTHING



# ---------------------------------------------------------------- slow clients


def _read_until_closed(port: int, request: bytes, limit_s: float) -> bytes:
    """Send ``request`` (incomplete on purpose) and read until the server closes; socket.timeout past ``limit_s``."""
    with socket.create_connection(("127.0.0.1", port), timeout=limit_s) as sock:
        sock.sendall(request)
        received = b""
        while chunk := sock.recv(4096):
            received += chunk
        return received


class TestSlowClients:
    async def test_headers_that_never_end_are_cut_off(self, tmp_path: Path, pki: Pki) -> None:
        """Half a request and then nothing: aiohttp's default kept the connection for an hour (3630 s)."""
        path = write_config(tmp_path, f"sqlite:///{tmp_path / 's.db'}", pki, inbound_extra="read_timeout_s = 0.5\n")
        async with endpoint(path) as (_c, _store, server):
            port = int(server.url.rsplit(":", 1)[1])
            partial = b"POST /inbound/platform HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/pkcs7-mime\r\n"
            assert await asyncio.to_thread(_read_until_closed, port, partial, 20.0) == b""

    async def test_a_body_that_never_ends_gets_408(self, tmp_path: Path, pki: Pki) -> None:
        """Headers, then 10 of the 1000 bytes announced: the handler waited for the rest without any limit."""
        path = write_config(tmp_path, f"sqlite:///{tmp_path / 's.db'}", pki, inbound_extra="read_timeout_s = 0.5\n")
        async with endpoint(path) as (_c, store, server):
            port = int(server.url.rsplit(":", 1)[1])
            request = (b"POST /inbound/platform HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/pkcs7-mime\r\n"
                       b"Content-Length: 1000\r\n\r\n" + b"x" * 10)
            answer = await asyncio.to_thread(_read_until_closed, port, request, 20.0)
            assert answer.startswith(b"HTTP/1.1 408")
            assert b'"error":"timeout"' in answer and b"0.5 s" in answer
            assert await counts(store) == NOTHING

    async def test_normal_pushes_are_unaffected(self, tmp_path: Path, pki: Pki) -> None:
        path = write_config(tmp_path, f"sqlite:///{tmp_path / 's.db'}", pki, inbound_extra="read_timeout_s = 30\n")
        async with endpoint(path) as (_c, store, server):
            await client(server.url, pki, "cms").send(sample_rows(tmp_path, 2))
            assert (await counts(store))["cg_records"] == 2

    async def test_admin_api_cuts_off_headers_that_never_end(self, tmp_path: Path) -> None:
        """The admin API (tokens are checked only once the headers are in) had the same hour-long default."""
        from gateway.config import load_config
        from gateway.store import open_store

        config = load_config(write_config(tmp_path, f"sqlite:///{tmp_path / 's.db'}", None,
                                          extra=_admin_toml(tmp_path)))
        assert config.admin is not None
        store = await open_store(config.store_url())
        try:
            async with AdminServer(config, config.admin, store, read_timeout_s=0.5) as admin:
                port = int(admin.url.rsplit(":", 1)[1])
                partial = b"GET /api/v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                assert await asyncio.to_thread(_read_until_closed, port, partial, 20.0) == b""
                status, _answer, _ = await _call(admin.url, "GET", "/status", READ_TOKEN)
                assert status == 200
        finally:
            await store.aclose()

    def test_read_timeout_must_be_positive(self, tmp_path: Path, pki: Pki) -> None:
        from gateway.config import load_config
        from gateway.errors import ConfigError

        path = write_config(tmp_path, f"sqlite:///{tmp_path / 's.db'}", pki, inbound_extra="read_timeout_s = 0\n")
        with pytest.raises(ConfigError, match=r"inbound\.read_timeout_s"):
            load_config(path)


# ---------------------------------------------------------------- ID numbers sent as JSON numbers


class TestNumericIdNumbers:
    async def test_quarantined_numeric_id_is_masked_by_the_admin_api(self, tmp_path: Path, pki: Pki) -> None:
        """A rejected record whose zjhm is a JSON number: the quarantine keeps it as a number, and the admin API
        answered it in full (only strings were masked)."""
        row = {**bad_row(sample_rows(tmp_path, 1)[0]), "zjhm": ID_NUMBER, "zjlx": "01"}
        path = write_config(tmp_path, f"sqlite:///{tmp_path / 's.db'}", pki, extra=_admin_toml(tmp_path))
        async with endpoint(path) as (config, store, server):
            answer = await client(server.url, pki, "cms").send([row])
            assert answer["failSize"] == 1
            held = (await store.reports.list_quarantine())[0]
            assert held["raw"]["zjhm"] == ID_NUMBER  # the store keeps what was sent
            assert config.admin is not None
            async with AdminServer(config, config.admin, store) as admin:
                texts = []
                for path_ in ("/quarantine", f"/quarantine/{held['id']}",
                              f"/inbound/platform/{answer['batchId']}"):
                    status, shown, _ = await _call(admin.url, "GET", path_, READ_TOKEN)
                    assert status == 200
                    texts.append(orjson.dumps(shown).decode())
        assert not any(str(ID_NUMBER) in text for text in texts)
        assert "110101********7774" in texts[1]

    def test_mask_personal_masks_numbers(self) -> None:
        keys = frozenset({"zjhm"})
        masked = mask_personal({"zjhm": ID_NUMBER, "other": ID_NUMBER, "count": 3, "flag": True, "ratio": 0.5},
                               keys)
        assert masked == {"zjhm": "110101********7774", "other": "110101********7774", "count": 3, "flag": True,
                          "ratio": 0.5}
        assert mask_personal({"zjhm": 12345678}, keys) == {"zjhm": "12****78"}  # a permit number, say

    def test_redactor_masks_numbers_and_objects_in_extra(self) -> None:
        """A log line's extra fields: an int, or an object rendered with str(), carried the number in full."""
        stream = io.StringIO()
        handler = logging.StreamHandler(stream)
        handler.setFormatter(TextFormatter())
        handler.addFilter(Redactor())
        logger = logging.getLogger("test.security_review")
        logger.addHandler(handler)
        logger.propagate = False
        logger.setLevel(logging.DEBUG)  # whatever level an earlier test left the root logger at
        try:
            logger.warning("row refused", extra={"id_no": ID_NUMBER, "file": Path(f"/drop/{ID_NUMBER}.csv"),
                                                 "rows": 3})
        finally:
            logger.removeHandler(handler)
        line = stream.getvalue()
        assert str(ID_NUMBER) not in line
        assert "id_no=110101********7774" in line and "/drop/110101********7774.csv" in line and "rows=3" in line

