"""Platform-cases source: joint-sanction (联合奖惩) cases the credit platform issues to this department.

The platform keeps a feed of cases per implementing department, each at a position (``seq``); this source
asks for the cases after the stored cursor (``GET <url>?departmentCode=&after=&limit=``) and yields one row
per case: the platform's fields (``LH_*``) plus ``operation`` (``upsert``, or ``revoke`` when the platform
withdrew the case). The cursor is the last position taken, saved by the engine with the rows.

Every page carries a manifest (department, ``after``, ``cursor``, count and the SHA-256 of the cases) that the
platform signs like a receipt. With ``peer_cert`` and ``trusted_cas`` set, a page is taken only when the
signature checks, chains to a trusted CA and is made by the platform's certificate, and the manifest matches
the page and the request; otherwise nothing is taken and the poll fails with the reason.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ClassVar, Self

import orjson

from adapters.platform.http import BearerSession, bearer_settings, peer_credentials, status_error, token_credentials
from gateway.adapter import AdapterContext, Credential, SourceBatch, SourceRow
from gateway.errors import PermanentError, Problem
from gateway.sealing.base import EnvelopeError
from gateway.sealing.target import SignedAnswers, load_signed_answers
from gateway.settings import setting


@dataclass(frozen=True)
class PlatformCasesSettings:
    url: str = setting(check="url", help="the case feed, e.g. https://credit.example.gov.cn/api/v1/sanctions/cases")
    token_env: str = setting("", help="environment variable holding the API token")
    token_file: str = setting("", help="file holding the API token (first line)")
    department_code: str = setting("", help="departmentCode to ask for (default: gateway.department_code)")
    timeout_s: float = setting(60.0, check="positive", help="total time for one request")
    peer_cert: str = setting("", help="the platform's certificate (PEM): pages must be signed by it")
    trusted_cas: list[str] = setting([], help="CA certificates that may issue the platform's certificate")
    require_signature: bool = setting(True, help="refuse unsigned pages (needs peer_cert and trusted_cas)")


class PlatformCasesSource:
    """Pulls sanction cases from the platform's feed, after the stored cursor."""

    Settings: ClassVar[type] = PlatformCasesSettings  # its TOML table, documented in docs/configuration.md

    def __init__(self, settings: PlatformCasesSettings, http: BearerSession, department: str,
                 trust: SignedAnswers | None, ctx: AdapterContext) -> None:
        self.settings, self.name, self._base = settings, ctx.name, ctx.base_dir
        self._http, self._department, self._trust = http, department, trust
        self.secrets = (http.token,)

    @classmethod
    def from_settings(cls, raw: Mapping[str, Any],
                      ctx: AdapterContext) -> tuple[PlatformCasesSource | None, list[Problem]]:
        built, problems = bearer_settings(PlatformCasesSettings, raw, ctx)
        if built is None:
            return None, problems
        settings, http = built
        trust, problems = _load_trust(settings, ctx)
        if problems:
            return None, problems
        return cls(settings, http, settings.department_code or ctx.department_code, trust, ctx), []

    async def __aenter__(self) -> Self:
        await self._http.open()
        return self

    async def __aexit__(self, t: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self._http.aclose()

    def credential_sources(self) -> list[Credential]:
        s = self.settings
        return token_credentials(s) + peer_credentials(s.peer_cert, s.trusted_cas, self._base)

    async def fetch(self, cursor: Any, limit: int) -> SourceBatch:
        after = int(cursor or 0)
        answer = await self._get(after, limit)
        cases = answer.get("cases")
        if not isinstance(cases, list) or not all(isinstance(c, dict) for c in cases):
            raise PermanentError(f"source {self.name}: the feed's cases are not a list of objects")
        self._check_manifest(answer, cases, after)
        rows = [SourceRow(str(c.get("caseId") or ""), {**(c.get("data") or {}), "operation": c.get("operation")})
                for c in cases]
        next_cursor = int(answer.get("cursor") or after) if cases else after
        return SourceBatch(rows, next_cursor, bool(answer.get("more")) and bool(cases))

    async def ack(self, cursor: Any) -> None:
        """Nothing to do: the cursor lives in the gateway's store, committed with the rows."""

    async def _get(self, after: int, limit: int) -> dict[str, Any]:
        params = {"departmentCode": self._department, "after": str(after), "limit": str(limit)}
        status, headers, raw = await self._http.request("GET", self.settings.url, f"source {self.name}",
                                                        params=params)
        try:
            answer = orjson.loads(raw)
        except orjson.JSONDecodeError:
            answer = {"errorMsg": raw[:200].decode("utf-8", "replace")}
        if status != 200 or not isinstance(answer, dict) or str(answer.get("errorCode")) != "200":
            detail = answer.get("errorMsg", "") if isinstance(answer, dict) else ""
            message = f"source {self.name}: case feed answered HTTP {status}: {detail}"
            raise status_error(status, message, headers.get("Retry-After"))
        return answer

    def _check_manifest(self, answer: Mapping[str, Any], cases: list[Any], after: int) -> None:
        """The page is the one asked for and, when trust is configured, signed by the platform."""
        manifest = answer.get("manifest")
        signature = answer.get("manifestSignature")
        if self._trust is None:
            return
        if not isinstance(manifest, dict) or not signature:
            if self.settings.require_signature:
                raise PermanentError(f"source {self.name}: the case feed page is not signed")
            return
        try:
            self._trust.verify(manifest, str(signature))
        except EnvelopeError as exc:
            raise PermanentError(f"source {self.name}: case feed signature refused: {exc}") from exc
        expected = {"departmentCode": self._department, "after": after, "count": len(cases),
                    "casesSha256": hashlib.sha256(orjson.dumps(cases)).hexdigest(), "cursor": answer.get("cursor")}
        wrong = [k for k, v in expected.items() if manifest.get(k) != v]
        if wrong:
            raise PermanentError(f"source {self.name}: the signed manifest does not match the page "
                                 f"({', '.join(wrong)})")


def _load_trust(settings: PlatformCasesSettings, ctx: AdapterContext) -> tuple[SignedAnswers | None, list[Problem]]:
    if not settings.peer_cert and not settings.trusted_cas and settings.require_signature:
        return None, [Problem(f"{ctx.path}.peer_cert", "required to check the feed's signature "
                                                       "(or set require_signature = false)")]
    return load_signed_answers(settings.peer_cert, settings.trusted_cas, ctx.path, ctx.base_dir)
