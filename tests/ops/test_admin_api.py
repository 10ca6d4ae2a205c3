"""The admin API: tokens and roles, masked answers, the CLI through it, and its configuration problems."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from gateway.cli import main
from gateway.cli.remote import client_context
from gateway.config import Config, load_config
from gateway.errors import ConfigError
from gateway.store import Store, open_store
from gateway.web.admin import AdminServer
from tests.support.helpers import make_department_db, read_rows, to_record, to_reject
from tests.support.inbound_helpers import make_pki, write_config
from tests.support.pki import make_ca

READ_TOKEN = "read-token-0123456789abcdef"
OPERATOR_TOKEN = "operator-token-0123456789abcdef"


def _admin_toml(directory: Path, extra: str = "") -> str:
    (directory / "read.token").write_text(READ_TOKEN + "\n", encoding="utf-8")
    (directory / "operator.token").write_text(OPERATOR_TOKEN + "\n", encoding="utf-8")
    return ('\n[admin]\nport = 0\n' + extra +
            '[admin.tokens.dashboard]\nrole = "read"\ntoken_file = "read.token"\n'
            '[admin.tokens.ops]\nrole = "operator"\ntoken_file = "operator.token"\n')


def _rows_with_ids(directory: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Sample penalty rows of natural persons (with ID numbers): valid ones, and invalid ones."""
    db = make_department_db(directory, penalties=120, invalid_fraction=0.3, natural=0.9)
    valid, invalid = [], []
    for row in read_rows(db.path):
        if not row.get("zjhm") or len(str(row["zjhm"])) != 18:
            continue
        try:
            to_record(row)
            valid.append(row)
        except AssertionError:
            invalid.append(row)
    return valid[:5], invalid[:3]


@contextlib.asynccontextmanager
async def admin_api(tmp_path: Path, store_url: str) -> AsyncIterator[tuple[Config, Store, str, Path]]:
    """A store holding a few ledger records and quarantined rows with ID numbers, and its admin API."""
    path = write_config(tmp_path, store_url, None, extra=_admin_toml(tmp_path))
    config = load_config(path)
    assert config.admin is not None
    store = await open_store(config.store_url())
    valid, invalid = _rows_with_ids(tmp_path)
    await store.intake.commit_intake("department_penalties", [to_record(r) for r in valid],
                              [to_reject(r) for r in invalid], None, config.routes(), len(valid) + len(invalid))
    try:
        async with AdminServer(config, config.admin, store) as server:
            yield config, store, server.url, path
    finally:
        await store.aclose()


async def _call(url: str, method: str, path: str, token: str | None = None,
                body: Any = None) -> tuple[int, Any, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as session, session.request(
            method, f"{url}/api/v1{path}", headers=headers, data=orjson.dumps(body) if body is not None else None
    ) as response:
        return response.status, await response.json(), response.headers


class TestTokens:
    async def test_missing_and_wrong_token(self, tmp_path: Path, store_url: str) -> None:
        """No token or an unknown one: 401 with WWW-Authenticate, and the answer names no token."""
        async with admin_api(tmp_path, store_url) as (_config, _store, url, _path):
            for token in (None, "not-a-configured-token-at-all", READ_TOKEN[:-1]):
                status, answer, headers = await _call(url, "GET", "/status", token)
                assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
                assert answer["error"] == "unauthorized"

    async def test_read_token_reads_but_cannot_act(self, tmp_path: Path) -> None:
        async with admin_api(tmp_path, f"sqlite:///{tmp_path / 's.db'}") as (_config, store, url, _path):
            status, answer, _ = await _call(url, "GET", "/status", READ_TOKEN)
            assert status == 200 and answer["lines"][0].startswith("rows read 8;")
            status, answer, _ = await _call(url, "POST", "/quarantine/resolve", READ_TOKEN, {"all": True})
            assert status == 403 and "needs operator" in answer["message"]
            status, answer, _ = await _call(url, "POST", "/spool/retry", READ_TOKEN, {"all": True})
            assert status == 403
            assert len(await store.reports.list_quarantine()) == 3  # nothing was resolved

    async def test_operator_token_acts(self, tmp_path: Path, store_url: str) -> None:
        async with admin_api(tmp_path, store_url) as (_config, store, url, _path):
            entries = await store.reports.list_quarantine()
            status, answer, _ = await _call(url, "POST", "/quarantine/resolve", OPERATOR_TOKEN,
                                            {"ids": [entries[0]["id"]]})
            assert (status, answer) == (200, {"resolved": 1})
            assert len(await store.reports.list_quarantine()) == 2
            status, answer, _ = await _call(url, "POST", "/quarantine/replay", OPERATOR_TOKEN, {"all": True})
            assert status == 200 and (answer["fixed"], answer["still"]) == (0, 2)
            status, answer, _ = await _call(url, "POST", "/spool/retry", OPERATOR_TOKEN, {"target": "platform"})
            assert (status, answer) == (200, {"batches": 0})
            status, answer, _ = await _call(url, "POST", "/spool/retry", OPERATOR_TOKEN, {})
            assert status == 400 and "exactly one of" in answer["message"]


class TestMasking:
    async def test_no_personal_id_number_in_any_answer(self, tmp_path: Path) -> None:
        """Quarantined rows and ledger payloads hold ID numbers; every answer has them masked."""
        (tmp_path / "rows").mkdir()
        valid, invalid = _rows_with_ids(tmp_path / "rows")
        numbers = {str(r["zjhm"]) for r in valid + invalid}
        async with admin_api(tmp_path, f"sqlite:///{tmp_path / 's.db'}") as (_config, store, url, _path):
            texts = []
            for path in ("/status", "/quarantine", "/spool", "/timeliness"):
                status, answer, _ = await _call(url, "GET", path, READ_TOKEN)
                assert status == 200
                texts.append(orjson.dumps(answer).decode())
            entry = (await store.reports.list_quarantine())[0]
            status, shown, _ = await _call(url, "GET", f"/quarantine/{entry['id']}", READ_TOKEN)
            texts.append(orjson.dumps(shown).decode())
        assert entry["raw"]["zjhm"] in numbers  # the store holds the number...
        assert shown["raw"]["zjhm"] == entry["raw"]["zjhm"][:6] + "********" + entry["raw"]["zjhm"][14:]
        assert not any(n in text for n in numbers for text in texts)  # ...no answer does


def _cli(*argv: str) -> int:
    return main(list(argv))


def _normal(text: str) -> str:
    """Ages ("5s", "1.2m") move while a test runs; everything else must be identical."""
    return re.sub(r"\b\d+(\.\d)?[smhd]\b", "AGE", text)


class TestCli:
    async def test_status_and_lists_through_the_api_print_the_same(self, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
        """``status``, ``quarantine list`` and ``spool list`` print the same locally and with --admin-url."""
        async with admin_api(tmp_path, f"sqlite:///{tmp_path / 's.db'}") as (_config, _store, url, path):
            remote = ["--admin-url", url, "--token-file", str(tmp_path / "read.token")]
            printed = {}
            for command in (["status"], ["quarantine", "list"], ["spool", "list"]):
                assert await asyncio.to_thread(_cli, "-c", str(path), *command) == 0
                printed[command[0]] = local = capsys.readouterr().out
                assert await asyncio.to_thread(_cli, command[0], *remote, *command[1:]) == 0
                assert _normal(capsys.readouterr().out) == _normal(local)
        assert printed["status"].startswith("rows read 8;") and "platform" in printed["status"]
        assert len(printed["quarantine"].splitlines()) == 4  # a header and the three quarantined rows

    async def test_bad_token_is_a_clear_error(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        (tmp_path / "wrong.token").write_text("wrong-token-0123456789abcdef\n")
        async with admin_api(tmp_path, f"sqlite:///{tmp_path / 's.db'}") as (_config, _store, url, _path):
            code = await asyncio.to_thread(_cli, "status", "--admin-url", url, "--token-file",
                                           str(tmp_path / "wrong.token"))
        err = capsys.readouterr().err
        assert code == 1 and "HTTP 401" in err and "wrong-token" not in err

    def test_certs_list_shows_tokens_and_inbound_credentials(self, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
        pki = make_pki(tmp_path / "pki", "rsa")
        tls = f'tls_cert = "{pki.gateway.cert_path}"\ntls_key = "{pki.gateway.key_path}"\n'
        path = write_config(tmp_path, f"sqlite:///{tmp_path / 's.db'}", pki, inbound_extra=tls,
                            extra=_admin_toml(tmp_path))
        assert _cli("-c", str(path), "certs", "list") == 0
        out = capsys.readouterr().out
        for where in ("admin.tokens.dashboard.token_file", "admin.tokens.ops.token_file", "inbound.tls_cert",
                      "inbound.channels.platform.cert", "inbound.channels.platform.peer_certs[0]",
                      "inbound.channels.platform.trusted_cas[0]"):
            assert where in out
        assert "role operator" in out and OPERATOR_TOKEN not in out and READ_TOKEN not in out


def _handshake(context: ssl.SSLContext, url: str) -> bytes:
    """GET /livez over a raw TLS socket: the first bytes of the answer, b"" when the server drops us."""
    port = int(url.rsplit(":", 1)[1])
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
                context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            tls.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
            return tls.recv(100)
    except (ssl.SSLError, ConnectionError):
        return b""


class TestMutualTls:
    """``[admin] client_ca``: a client needs a certificate from that CA for the TLS handshake, and a token."""

    @staticmethod
    @contextlib.asynccontextmanager
    async def _api(tmp_path: Path) -> AsyncIterator[tuple[Any, str]]:
        pki = make_pki(tmp_path / "pki", "rsa")
        tls = (f'tls_cert = "{pki.gateway.cert_path}"\ntls_key = "{pki.gateway.key_path}"\n'
               f'client_ca = "{pki.ca.root.cert_path}"\n')
        config = load_config(write_config(tmp_path, f"sqlite:///{tmp_path / 's.db'}", None,
                                          extra=_admin_toml(tmp_path, tls)))
        assert config.admin is not None and config.admin.tls is not None and config.admin.tls.client_ca
        store = await open_store(config.store_url())
        try:
            async with AdminServer(config, config.admin, store) as server:
                yield pki, server.url
        finally:
            await store.aclose()

    async def test_the_cli_presents_its_certificate(self, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                    caplog: pytest.LogCaptureFixture) -> None:
        """With --admin-cert/--admin-key from the CA the CLI works; without them, or with only one, it stops
        with a clear error; an operator action is logged with the token's name and the certificate's subject."""
        async with self._api(tmp_path) as (pki, url):
            assert url.startswith("https://127.0.0.1:")
            desk = pki.ca.issue("ops-desk")
            base = ["--admin-url", url, "--admin-ca", str(pki.ca.root.cert_path)]
            mine = ["--admin-cert", str(desk.cert_path), "--admin-key", str(desk.key_path)]
            read = ["--token-file", str(tmp_path / "read.token")]
            assert await asyncio.to_thread(_cli, "status", *base, *read, *mine) == 0
            assert capsys.readouterr().out.startswith("rows read 0;")

            assert await asyncio.to_thread(_cli, "status", *base, *read) == 1
            err = capsys.readouterr().err
            assert f"admin API {url}" in err and "give --admin-cert and --admin-key" in err and READ_TOKEN not in err
            assert await asyncio.to_thread(_cli, "status", *base, *read, *mine[:2]) == 2  # a usage error
            assert "--admin-key: a client certificate needs both --admin-cert and --admin-key" in \
                   capsys.readouterr().err

            operator = ["--token-file", str(tmp_path / "operator.token")]
            with caplog.at_level(logging.INFO, logger="gateway.admin"):
                assert await asyncio.to_thread(_cli, "spool", *base, *operator, *mine, "retry", "--all") == 0
            [action] = [r for r in caplog.records if r.getMessage() == "admin action"]
            assert action.__dict__["token"] == "ops" and "CN=ops-desk" in action.__dict__["client"]

    async def test_the_handshake_needs_a_certificate_from_the_ca(self, tmp_path: Path) -> None:
        """No certificate, or one from another CA: the server drops the handshake before any HTTP; one from the
        CA gets an answer. A certificate is not a token: without one the API still answers 401."""
        async with self._api(tmp_path) as (pki, url):
            ca = str(pki.ca.root.cert_path)
            stranger = make_ca(tmp_path / "other", "rsa").issue("stranger")
            desk = pki.ca.issue("ops-desk")
            assert await asyncio.to_thread(_handshake, client_context(ca, None), url) == b""
            assert await asyncio.to_thread(
                _handshake, client_context(ca, (str(stranger.cert_path), str(stranger.key_path))), url) == b""
            with_desk = client_context(ca, (str(desk.cert_path), str(desk.key_path)))
            assert (await asyncio.to_thread(_handshake, with_desk, url)).startswith(b"HTTP/1.1 200")
            async with aiohttp.ClientSession() as session, session.get(f"{url}/api/v1/status", ssl=with_desk) as r:
                assert r.status == 401
            async with aiohttp.ClientSession() as session, session.get(
                    f"{url}/api/v1/status", ssl=with_desk, headers={"Authorization": f"Bearer {READ_TOKEN}"}) as r:
                assert r.status == 200

    def test_client_ca_needs_tls(self, tmp_path: Path) -> None:
        path = write_config(tmp_path, f"sqlite:///{tmp_path / 's.db'}", None,
                            extra=_admin_toml(tmp_path, 'client_ca = "ca.crt"\n'))
        with pytest.raises(ConfigError) as caught:
            load_config(path)
        assert "admin.client_ca: mutual TLS needs tls_cert and tls_key too" in str(caught.value)

    def test_certs_list_shows_the_client_ca(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        pki = make_pki(tmp_path / "pki", "rsa")
        tls = (f'tls_cert = "{pki.gateway.cert_path}"\ntls_key = "{pki.gateway.key_path}"\n'
               f'client_ca = "{pki.ca.root.cert_path}"\n')
        path = write_config(tmp_path, f"sqlite:///{tmp_path / 's.db'}", None, extra=_admin_toml(tmp_path, tls))
        assert _cli("-c", str(path), "certs", "list") == 0
        out = capsys.readouterr().out
        assert "admin.tls_cert" in out and "admin.client_ca" in out


class TestConfig:
    def _problems(self, tmp_path: Path, admin: str) -> str:
        path = write_config(tmp_path, f"sqlite:///{tmp_path / 's.db'}", None, extra=admin)
        with pytest.raises(ConfigError) as caught:
            load_config(path)
        return str(caught.value)

    def test_token_problems(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        (tmp_path / "short.token").write_text("short\n")
        monkeypatch.delenv("CG_TEST_NO_SUCH_TOKEN", raising=False)
        text = self._problems(tmp_path, '\n[admin]\n[admin.tokens.a]\nrole = "admin"\ntoken_file = "short.token"\n'
                                        '[admin.tokens.b]\nrole = "read"\ntoken_env = "CG_TEST_NO_SUCH_TOKEN"\n'
                                        '[admin.tokens.c]\nrole = "read"\ntoken = "in-the-config-0123456789"\n')
        assert "admin.tokens.a.role: expected read or operator, got 'admin'" in text
        assert "admin.tokens.a.token_file: the token has 5 characters; use at least 16" in text
        assert "admin.tokens.b.token_env: environment variable CG_TEST_NO_SUCH_TOKEN is not set" in text
        assert "admin.tokens.c.token: unknown setting" in text
        assert "in-the-config" not in text.replace("admin.tokens.c.token", "")

    def test_open_listener_needs_tls(self, tmp_path: Path) -> None:
        text = self._problems(tmp_path, _admin_toml(tmp_path, 'host = "0.0.0.0"\n'))
        assert "admin.host: 0.0.0.0 is not a loopback address" in text

    def test_no_tokens(self, tmp_path: Path) -> None:
        assert "admin.tokens: at least one" in self._problems(tmp_path, "\n[admin]\nport = 8472\n")


async def test_inbound_receipts_are_shown(tmp_path: Path) -> None:
    """A pushed batch and our signed answer to it can be listed and shown through the API."""
    from tests.support.inbound_helpers import client, endpoint, sample_rows

    pki = make_pki(tmp_path / "pki", "rsa")
    path = write_config(tmp_path, f"sqlite:///{tmp_path / 's.db'}", pki, extra=_admin_toml(tmp_path))
    async with endpoint(path) as (config, store, server):
        answer = await client(server.url, pki, "cms").send(sample_rows(tmp_path, 2))
        assert config.admin is not None
        async with AdminServer(config, config.admin, store) as admin:
            status, listed, _ = await _call(admin.url, "GET", "/inbound", READ_TOKEN)
            assert status == 200 and [b["batch_id"] for b in listed] == [answer["batchId"]]
            status, shown, _ = await _call(admin.url, "GET", f"/inbound/platform/{answer['batchId']}", READ_TOKEN)
            assert status == 200 and shown["answer"]["receiptSignature"] == answer["receiptSignature"]
            status, _missing, _ = await _call(admin.url, "GET", "/inbound/platform/b-none", READ_TOKEN)
            assert status == 404
