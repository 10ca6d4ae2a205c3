"""The CLI's client for the admin API (``--admin-url``): one request per call, errors as GatewayError.

The token comes from ``--token-file`` or the ``CG_ADMIN_TOKEN`` environment variable, never from the command
line (it would show in ``ps`` and shell history), and is never printed. Over HTTPS, ``--admin-ca`` is the CA
to trust for the server's certificate, and ``--admin-cert`` / ``--admin-key`` (or ``CG_ADMIN_CERT`` /
``CG_ADMIN_KEY``) the client certificate an API with ``[admin] client_ca`` asks for.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from gateway.errors import ConfigError, GatewayError, Problem

TOKEN_ENV = "CG_ADMIN_TOKEN"  # noqa: S105 - the name of the variable, not a token
CERT_ENV, KEY_ENV = "CG_ADMIN_CERT", "CG_ADMIN_KEY"


def read_token(token_file: str | None) -> str:
    """The admin token from a file (first line) or ``CG_ADMIN_TOKEN``; ConfigError when there is none."""
    if token_file:
        try:
            token = Path(token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError([Problem("--token-file", f"cannot read {token_file}: {exc.strerror}")]) from None
        if not token:
            raise ConfigError([Problem("--token-file", f"{token_file} is empty")])
        return token
    token = os.environ.get(TOKEN_ENV, "")
    if not token:
        raise ConfigError([Problem("--token-file", f"give --token-file or set {TOKEN_ENV} for --admin-url")])
    return token


def client_cert_files(cert_file: str | None, key_file: str | None) -> tuple[str, str] | None:
    """``--admin-cert`` and ``--admin-key`` (or ``CG_ADMIN_CERT`` / ``CG_ADMIN_KEY``): both or neither."""
    cert, key = cert_file or os.environ.get(CERT_ENV, ""), key_file or os.environ.get(KEY_ENV, "")
    if bool(cert) != bool(key):
        missing = "--admin-key" if cert else "--admin-cert"
        raise ConfigError([Problem(missing, "a client certificate needs both --admin-cert and --admin-key "
                                            f"(or {CERT_ENV} and {KEY_ENV})")])
    return (cert, key) if cert else None


def client_context(ca_file: str | None, client_cert: tuple[str, str] | None) -> ssl.SSLContext:
    """TLS to the admin API: the server checked against ``ca_file`` (else the system's CAs); our certificate
    presented when given. An unreadable file or a key that does not match is a ConfigError naming the option."""
    try:
        context = ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError([Problem("--admin-ca", f"cannot use {ca_file}: {exc}")]) from None
    if client_cert is not None:
        try:
            context.load_cert_chain(*client_cert)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError([Problem("--admin-cert", f"cannot use {client_cert[0]} with {client_cert[1]}: "
                                                       f"{exc}")]) from None
    return context


class AdminClient:
    """GET and POST JSON to an admin API at ``url`` with a bearer token."""

    def __init__(self, url: str, token: str, ca_file: str | None = None, timeout_s: float = 30.0,
                 client_cert: tuple[str, str] | None = None) -> None:
        self.url, self._token, self.timeout_s = url.rstrip("/"), token, timeout_s
        self._ssl: ssl.SSLContext | bool = True
        if ca_file or client_cert:
            self._ssl = client_context(ca_file, client_cert)
        self._with_cert = client_cert is not None

    async def get(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        query = {k: str(v) for k, v in (params or {}).items() if v is not None and v is not False}
        return await self._request("GET", path, params=query)

    async def post(self, path: str, body: Mapping[str, Any]) -> Any:
        return await self._request("POST", path, data=orjson.dumps(dict(body)))

    async def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {self._token}", "Content-Type": "application/json"}
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s)) as session, \
                    session.request(method, f"{self.url}/api/v1{path}", headers=headers, ssl=self._ssl,
                                    **kwargs) as response:
                raw, status = await response.read(), response.status
        except (TimeoutError, aiohttp.ClientError, ssl.SSLError) as exc:
            hint = ""
            if (self.url.startswith("https:") and not self._with_cert
                    and isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientOSError)):
                hint = (" (an admin API with mutual TLS drops a client without a certificate from its client_ca: "
                        "give --admin-cert and --admin-key)")
            raise GatewayError(f"admin API {self.url}: {type(exc).__name__}: {exc}{hint}") from exc
        try:
            answer = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise GatewayError(f"admin API {self.url}: HTTP {status}, not JSON") from None
        if status != 200:
            message = answer.get("message") if isinstance(answer, dict) else answer
            raise GatewayError(f"admin API {self.url}{path}: HTTP {status}: {message}")
        return answer
