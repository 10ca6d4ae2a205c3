"""The platform adapters' one translation point for HTTP: the bearer session, aiohttp's errors, the statuses.

The upload sink, the case feed and the list API talk to the same platform, so they share one answer to
"what does this failure mean":

* no answer in time, a refused, reset or dropped connection, bad HTTP: :class:`RetryableError`
  (:func:`http_errors`);
* a status in :data:`RETRYABLE_STATUS` (429 and 5xx, honouring ``Retry-After``): :class:`RetryableError`;
  any other non-200 status: :class:`PermanentError` (:func:`status_error`).

**404 is retryable.** A 404 names the URL, not the request: a platform route missing during a redeploy, a
proxy in front of it not yet configured, a list withdrawn between the catalogue and its snapshot (the next
poll reads the new catalogue), or a wrong ``url`` in the config. None of them is cured by dead-lettering the
batch: retrying (under the engine's backoff and circuit breaker) keeps the batches in the outbox until the URL
answers again, and ``status`` shows the failing target. Before, the upload sink dead-lettered on 404 and the
list source retried; the list source was right. 401/403 (our token is refused), 400, 409 and 413 (this
request is refused) stay permanent.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

import aiohttp

from gateway.adapter import AdapterContext, Credential
from gateway.errors import AdapterError, PermanentError, Problem, RetryableError
from gateway.settings import parse_settings, read_token

RETRYABLE_STATUS = frozenset({404, 408, 425, 429, 500, 502, 503, 504})


class TokenSettings(Protocol):
    """The settings every platform adapter has: where its token comes from and how long a request may take."""

    @property
    def token_env(self) -> str: ...

    @property
    def token_file(self) -> str: ...

    @property
    def timeout_s(self) -> float: ...


S = TypeVar("S", bound=TokenSettings)


@contextmanager
def http_errors(what: str, timeout_s: float | None = None) -> Iterator[None]:
    """Translate what aiohttp raises inside the block into :class:`RetryableError` naming ``what``."""
    try:
        yield
    except TimeoutError as exc:
        within = f"within {timeout_s:g}s" if timeout_s is not None else "in time"
        raise RetryableError(f"{what}: no answer {within}") from exc
    except aiohttp.ClientError as exc:  # refused, reset, dropped, bad HTTP: all worth a retry
        raise RetryableError(f"{what}: {type(exc).__name__}: {exc}") from exc


def status_error(status: int, msg: str, retry_after: str | None = None) -> AdapterError:
    """The error for a non-200 answer: retryable (with the peer's ``Retry-After``) or permanent."""
    if status in RETRYABLE_STATUS:
        return RetryableError(msg, retry_after_s=retry_after_s(retry_after))
    return PermanentError(msg)


def retry_after_s(value: str | None) -> float | None:
    """A ``Retry-After`` header (seconds or an HTTP date) as seconds from now; None when absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class BearerSession:
    """A bearer token and the aiohttp session an adapter opens in ``async with`` and closes after it."""

    def __init__(self, token: str, timeout_s: float) -> None:
        self.token = token
        self.timeout_s = timeout_s
        self._session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        """A new session (``async with`` may be entered again after it was left)."""
        await self.aclose()
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        self._session = aiohttp.ClientSession(timeout=timeout, raise_for_status=False)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(self, method: str, url: str, what: str, *, headers: Mapping[str, str] | None = None,
                      **kwargs: Any) -> tuple[int, dict[str, str], bytes]:
        """(status, headers, body) of one request with the token; aiohttp's failures as RetryableError."""
        if self._session is None:
            raise RuntimeError(f"{what}: adapter used outside `async with`")
        sent = {"Authorization": f"Bearer {self.token}", **(headers or {})}
        with http_errors(what, self.timeout_s):
            async with self._session.request(method, url, headers=sent, **kwargs) as resp:
                return resp.status, dict(resp.headers), await resp.read()


def bearer_settings(cls: type[S], raw: Mapping[str, Any],
                    ctx: AdapterContext) -> tuple[tuple[S, BearerSession] | None, list[Problem]]:
    """The adapter's settings and a session with its token, or the problems (every one, with its TOML path)."""
    settings, problems = parse_settings(cls, raw, ctx.path, ctx.common_keys)
    if settings is None:
        return None, problems
    token, problem = read_token(settings.token_env, settings.token_file, ctx.path, ctx.base_dir)
    if problem or token is None:
        return None, [problem] if problem else []
    return (settings, BearerSession(token, settings.timeout_s)), []


def token_credentials(settings: TokenSettings) -> list[Credential]:
    """Where the token comes from, for ``credit-gateway certs list``."""
    if settings.token_env:
        return [Credential("token_env", "token", f"environment variable {settings.token_env}")]
    return [Credential("token_file", "token", f"file {settings.token_file}")] if settings.token_file else []


def peer_credentials(peer_cert: str, trusted_cas: list[str], base: Path) -> list[Credential]:
    """The platform's certificate and the CAs that may issue it, as files relative to ``base``."""
    named = [("peer_cert", peer_cert)] if peer_cert else []
    named += [(f"trusted_cas[{i}]", ca) for i, ca in enumerate(trusted_cas)]
    return [Credential(setting, "certificate", f"file {file}", base / file) for setting, file in named]
