"""Credit-platform sink: the city/provincial public credit platform's JSON upload API.

Modelled on the Suzhou 数据上报接口 (domain.md §9): a batch names its catalogue (``tableCode``), the
department (``departmentCode``) and carries the records; the answer gives totals, per-record results
with error codes, and a receipt. HTTP and aiohttp failures are translated here into the gateway's
error tree (adapters.platform.http): timeouts, dropped connections, 404, 429 and 5xx are retryable (honouring
``Retry-After``); 401/403/409/413 and envelope-level error codes are permanent for that batch.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ClassVar, Self

import orjson

from adapters.platform.body import upload_body
from adapters.platform.http import BearerSession, bearer_settings, status_error, token_credentials
from gateway.adapter import AdapterContext, BodyEncoder, Credential, OutgoingBatch, Receipt, RecordResult, TargetRecord
from gateway.errors import PermanentError, Problem, RetryableError
from gateway.settings import setting


@dataclass(frozen=True)
class CreditPlatformSettings:
    url: str = setting(check="url", help="the upload endpoint, e.g. https://credit.example.gov.cn/api/v1/upload")
    token_env: str = setting("", help="environment variable holding the API token")
    token_file: str = setting("", help="file holding the API token (first line)")
    department_code: str = setting("", help="departmentCode sent with each batch (default: gateway.department_code)")
    table_version: str = setting("2019", help="tableVersionId sent with each batch")
    timeout_s: float = setting(60.0, check="positive", help="total time for one request")
    max_body_bytes: int = setting(16 * 1024 * 1024, check="positive", help="refuse to send larger batches")


class CreditPlatformSink:
    """Delivers JSON batches to the platform's upload API."""

    Settings: ClassVar[type] = CreditPlatformSettings  # its TOML table, documented in docs/configuration.md

    def __init__(self, settings: CreditPlatformSettings, http: BearerSession, department_code: str,
                 name: str) -> None:
        self.settings = settings
        self.name = name
        self._http = http
        self._department = department_code
        self.secrets = (http.token,)

    @classmethod
    def from_settings(cls, raw: Mapping[str, Any],
                      ctx: AdapterContext) -> tuple[CreditPlatformSink | None, list[Problem]]:
        built, problems = bearer_settings(CreditPlatformSettings, raw, ctx)
        if built is None:
            return None, problems
        settings, http = built
        return cls(settings, http, settings.department_code or ctx.department_code, ctx.name), []

    async def __aenter__(self) -> Self:
        await self._http.open()
        return self

    async def __aexit__(self, t: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self._http.aclose()

    def credential_sources(self) -> list[Credential]:
        return token_credentials(self.settings)

    def encode(self, batch_id: str, dataset: str, table_code: str, records: Sequence[TargetRecord]) -> bytes:
        return upload_body(self._department, self.settings.table_version, batch_id, dataset, table_code, records)

    def batch_encoder(self) -> BodyEncoder:
        """``encode`` as a picklable function: large batches are encoded in a worker process."""
        return functools.partial(upload_body, self._department, self.settings.table_version)

    async def deliver(self, batch: OutgoingBatch) -> Receipt:
        if len(batch.body) > self.settings.max_body_bytes:
            raise PermanentError(f"batch is {len(batch.body)} bytes, over max_body_bytes")
        headers = {"Content-Type": batch.content_type, "Idempotency-Key": batch.id}
        status, answer_headers, raw = await self._http.request("POST", self.settings.url, f"target {self.name}",
                                                               data=batch.body, headers=headers)
        payload = _parse(raw, status)
        if status == 200:
            return _receipt(batch, payload)
        message = f"HTTP {status} {payload.get('errorCode', '')} {payload.get('errorMsg', '')}".strip()
        raise status_error(status, message, answer_headers.get("Retry-After"))


def _parse(raw: bytes, status: int) -> dict[str, Any]:
    try:
        payload = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError:
        if status == 200:
            raise RetryableError("the platform answered 200 with a body that is not JSON") from None
        return {"errorMsg": raw[:200].decode("utf-8", "replace")}
    return payload if isinstance(payload, dict) else {}


def _receipt(batch: OutgoingBatch, payload: dict[str, Any]) -> Receipt:
    if str(payload.get("errorCode")) != "200":
        raise PermanentError(f"platform error {payload.get('errorCode')}: {payload.get('errorMsg')}")
    receipt = payload.get("receipt") or {}
    if receipt.get("batchId") not in (None, batch.id):
        raise RetryableError(f"receipt names batch {receipt.get('batchId')!r}, expected {batch.id!r}")
    digest = receipt.get("bodySha256")
    if digest is not None and digest != hashlib.sha256(batch.body).hexdigest():
        raise RetryableError("receipt digest does not match the body we sent")
    results = [RecordResult(str(r.get("recordKey")), int(r.get("version", 0)), str(r.get("status")),
                            str(r.get("errorCode") or ""), str(r.get("errorMsg") or ""))
               for r in payload.get("results") or [] if isinstance(r, dict)]
    return Receipt(str(receipt.get("receiptId") or ""), results, payload)
