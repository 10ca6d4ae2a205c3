"""The CLI's client for the admin API (``--admin-url``): one request per call, errors as GatewayError.

The token comes from ``--token-file`` or the ``CG_ADMIN_TOKEN`` environment variable, never from the command
line (it would show in ``ps`` and shell history), and is never printed.
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


class AdminClient:
    """GET and POST JSON to an admin API at ``url`` with a bearer token."""

    def __init__(self, url: str, token: str, ca_file: str | None = None, timeout_s: float = 30.0) -> None:
        self.url, self._token, self.timeout_s = url.rstrip("/"), token, timeout_s
        self._ssl: ssl.SSLContext | bool = ssl.create_default_context(cafile=ca_file) if ca_file else True

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
            raise GatewayError(f"admin API {self.url}: {type(exc).__name__}: {exc}") from exc
        try:
            answer = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise GatewayError(f"admin API {self.url}: HTTP {status}, not JSON") from None
        if status != 200:
            message = answer.get("message") if isinstance(answer, dict) else answer
            raise GatewayError(f"admin API {self.url}{path}: HTTP {status}: {message}")
        return answer
