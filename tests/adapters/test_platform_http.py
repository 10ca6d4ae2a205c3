"""adapters.platform.http: the one place HTTP statuses and aiohttp failures become gateway errors."""

from __future__ import annotations

import datetime as dt
from email.utils import format_datetime
from pathlib import Path

import pytest

from adapters.platform.http import RETRYABLE_STATUS, http_errors, retry_after_s, status_error
from adapters.platform.upload import CreditPlatformSink
from gateway.adapter import AdapterContext, OutgoingBatch, TargetRecord
from gateway.errors import PermanentError, RetryableError
from gateway.sandbox.server import Sandbox
from gateway.testing import DEPARTMENT_CODE


class TestStatusError:
    @pytest.mark.parametrize("status", [404, 408, 429, 500, 502, 503, 504])
    def test_retryable(self, status: int) -> None:
        """Throttling, server faults and 404 (a URL, not the batch, is wrong) are retried."""
        assert isinstance(status_error(status, "x"), RetryableError)

    @pytest.mark.parametrize("status", [400, 401, 403, 409, 413, 415])
    def test_permanent(self, status: int) -> None:
        """A refused token or a refused request cannot succeed as it is."""
        error = status_error(status, "x")
        assert isinstance(error, PermanentError) and status not in RETRYABLE_STATUS

    def test_retry_after_is_kept(self) -> None:
        """The peer's Retry-After becomes retry_after_s."""
        error = status_error(503, "busy", "12")
        assert isinstance(error, RetryableError) and error.retry_after_s == 12


class TestRetryAfter:
    def test_seconds_and_dates(self) -> None:
        """Seconds are taken as they are; an HTTP date as the seconds until it; junk as unknown."""
        later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=120)
        assert retry_after_s("7") == 7
        assert 100 < (retry_after_s(format_datetime(later, usegmt=True)) or 0) <= 120
        assert retry_after_s("soon") is None and retry_after_s(None) is None
        assert retry_after_s("-5") == 0


class TestHttpErrors:
    def test_timeout_and_client_errors_become_retryable(self) -> None:
        """TimeoutError becomes RetryableError naming what and the timeout; other errors pass through."""
        with pytest.raises(RetryableError, match=r"target t: no answer within 2s"), http_errors("target t", 2.0):
            raise TimeoutError
        with pytest.raises(ValueError, match="bug"), http_errors("target t"):
            raise ValueError("bug")


async def test_upload_to_a_missing_path_is_retried(gateway_sandbox: Sandbox, tmp_path: Path) -> None:
    """A 404 from the platform leaves the batch to be retried instead of dead-lettering it."""
    (tmp_path / "token").write_text(gateway_sandbox.config.token, encoding="utf-8")
    ctx = AdapterContext("t", "targets.t", tmp_path, DEPARTMENT_CODE, "x")
    sink, problems = CreditPlatformSink.from_settings(
        {"url": gateway_sandbox.url + "/api/v1/no-such-endpoint", "token_file": "token"}, ctx)
    assert sink is not None, problems
    body = sink.encode("b-1", "penalty", "XZCF", [TargetRecord("k", 1, "upsert", {})])
    async with sink:
        with pytest.raises(RetryableError, match="HTTP 404"):
            await sink.deliver(OutgoingBatch("b-1", "penalty", body, 1))
