"""Platform credit lists source: full snapshots first, then deltas, per list, from the platform's list API.

The platform publishes each list (红名单 / 严重失信主体名单 / 重点关注名单) with a version and a
membership digest (gateway/sandbox/lists.py documents the protocol). For every list in the catalogue:

* never seen, or the platform answers ``410 gone`` to a delta (its history no longer reaches back): take a
  **snapshot**, page by page at one version (``409 snapshot_moved`` mid-way: start it again). Each page is
  marked as part of the snapshot (:class:`gateway.adapter.SnapshotPage`), so the engine withdraws the
  list's subjects that no page named once the last page is committed;
* behind the announced version: ask for the **delta** since the applied version; ``upsert`` changes become
  rows with ``op = "upsert"``, ``remove`` changes rows with ``op = "remove"`` (the inbound mapping turns
  that into a withdraw).

The cursor, saved with each page in the intake transaction, is
``{"versions": {code: applied version}, "announced": {code: {listType, version, digest, count}},
"snapshot": {list, id, version, offset} | null}``; `credit-gateway lists status` reads it.

When ``peer_cert`` is set, every answer must carry the platform's detached signature over its ``data``
(JSON, sorted keys; the same form as signed receipts) by that certificate, chaining to ``trusted_cas``;
an unsigned or badly signed answer is refused and nothing of it is taken.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, ClassVar, Self
from urllib.parse import quote

import orjson

from adapters.platform.http import BearerSession, bearer_settings, peer_credentials, status_error, token_credentials
from gateway.adapter import AdapterContext, Credential, SnapshotPage, SourceBatch, SourceRow
from gateway.domain.datasets import CREDIT_LIST
from gateway.errors import PermanentError, Problem, RetryableError
from gateway.sealing.base import EnvelopeError
from gateway.sealing.target import SignedAnswers, load_signed_answers
from gateway.settings import setting

MAX_RESTARTS = 3  # a list that moves on under every snapshot attempt: try again at the next poll

log = logging.getLogger("adapters.platform_lists")


@dataclass(frozen=True)
class PlatformListsSettings:
    url: str = setting(check="url", help="the platform's API base, e.g. https://credit.example.gov.cn/api/v1")
    token_env: str = setting("", help="environment variable holding the API token")
    token_file: str = setting("", help="file holding the API token (first line)")
    lists: list[str] = setting([], help="list codes to take (default: every list in the catalogue)")
    timeout_s: float = setting(60.0, check="positive", help="total time for one request")
    peer_cert: str = setting("", help="the platform's certificate: answers must be signed by it")
    trusted_cas: list[str] = setting([], help="CA certificates that may issue the platform's certificate")
    require_signed: bool = setting(True, help="with peer_cert: refuse answers without a valid signature")
    retire_dropped: bool = setting(True, help="a list the platform no longer announces (in a catalogue that "
                                              "still lists others) is retired: all its entries withdrawn")


@dataclass
class _Cursor:
    versions: dict[str, int] = field(default_factory=dict)
    announced: dict[str, dict[str, Any]] = field(default_factory=dict)
    snapshot: dict[str, Any] | None = None

    @classmethod
    def load(cls, raw: Any) -> _Cursor:
        if not isinstance(raw, dict):
            return cls()
        snap = raw.get("snapshot")
        return cls(dict(raw.get("versions") or {}), dict(raw.get("announced") or {}),
                   dict(snap) if isinstance(snap, dict) else None)

    def dump(self) -> dict[str, Any]:
        return {"versions": dict(self.versions), "announced": dict(self.announced),
                "snapshot": dict(self.snapshot) if self.snapshot else None}


class _Gone(Exception):
    """The platform cannot answer a delta (410) or a snapshot moved on (409)."""


class PlatformListsSource:
    """Reads credit lists from the platform's list API."""

    Settings: ClassVar[type] = PlatformListsSettings  # its TOML table, documented in docs/configuration.md

    def __init__(self, settings: PlatformListsSettings, http: BearerSession, ctx: AdapterContext,
                 peer: SignedAnswers | None) -> None:
        self.settings, self.name, self._base = settings, ctx.name, ctx.base_dir
        self._http = http
        self._peer = peer
        self.secrets = (http.token,)

    @classmethod
    def from_settings(cls, raw: Mapping[str, Any],
                      ctx: AdapterContext) -> tuple[PlatformListsSource | None, list[Problem]]:
        built, problems = bearer_settings(PlatformListsSettings, raw, ctx)
        if built is None:
            return None, problems
        settings, http = built
        peer, problems = load_signed_answers(settings.peer_cert, settings.trusted_cas, ctx.path, ctx.base_dir)
        return (cls(settings, http, ctx, peer), []) if not problems else (None, problems)

    async def __aenter__(self) -> Self:
        await self._http.open()
        return self

    async def __aexit__(self, t: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self._http.aclose()

    def credential_sources(self) -> list[Credential]:
        s = self.settings
        return token_credentials(s) + peer_credentials(s.peer_cert, s.trusted_cas, self._base)

    async def ack(self, cursor: Any) -> None:
        """Nothing to do: the cursor lives in the gateway's store, committed with the rows."""

    # ------------------------------------------------------------ fetch

    async def fetch(self, cursor: Any, limit: int) -> SourceBatch:
        state = _Cursor.load(cursor)
        catalogue = await self._get("/lists")
        wanted = set(self.settings.lists)
        state.announced = {str(c["listCode"]): {"listType": c.get("listType"), "version": int(c["version"]),
                                                "digest": c.get("digest"), "count": c.get("count")}
                           for c in catalogue.get("lists") or [] if not wanted or c.get("listCode") in wanted}
        if state.snapshot is not None:
            return await self._snapshot_page(state, limit)
        if (retired := self._dropped(state, catalogue)) is not None:
            return retired
        for code in sorted(state.announced):
            applied = state.versions.get(code)
            if applied is None:
                state.snapshot = _new_snapshot(code)
                return await self._snapshot_page(state, limit)
            if applied < state.announced[code]["version"]:
                try:
                    return await self._delta_page(state, code, applied, limit)
                except _Gone:
                    state.snapshot = _new_snapshot(code)
                    return await self._snapshot_page(state, limit)
        return SourceBatch([], state.dump(), False)

    def _dropped(self, state: _Cursor, catalogue: Mapping[str, Any]) -> SourceBatch | None:
        """A list taken before that the platform's catalogue no longer names is retired: an empty, final
        snapshot page, so every entry of it is withdrawn (at the department too). An empty catalogue retires
        nothing: that is more likely a fault at the platform than every list ending at once."""
        listed = {str(c.get("listCode")) for c in catalogue.get("lists") or []}
        if not self.settings.retire_dropped or not listed:
            if state.versions and not listed:
                log.warning("list catalogue is empty; keeping every list taken so far", extra={"source": self.name})
            return None
        for code in sorted(set(state.versions) - listed):
            del state.versions[code]
            log.warning("list retired by the platform: withdrawing its entries",
                        extra={"source": self.name, "list": code})
            return SourceBatch([], state.dump(), True, snapshot=SnapshotPage(CREDIT_LIST.name, code,
                                                                             f"retired-{uuid.uuid4().hex}", final=True))
        return None

    async def _snapshot_page(self, state: _Cursor, limit: int) -> SourceBatch:
        snap = state.snapshot
        assert snap is not None
        code = str(snap["list"])
        for _ in range(MAX_RESTARTS):
            query = {"offset": str(snap["offset"]), "limit": str(limit)}
            if snap.get("version") is not None:
                query["version"] = str(snap["version"])
            try:
                data = await self._get(f"/lists/{quote(code, safe='')}/snapshot", query)
                break
            except _Gone:  # the list moved on mid-snapshot: start again (the sweep waits for a whole one)
                snap = state.snapshot = _new_snapshot(code)
        else:
            raise RetryableError(f"list {code} changed under {MAX_RESTARTS} snapshot attempts; trying again later")
        items = data.get("items") or []
        rows = [_row(code, item, "upsert") for item in items]
        more = bool(data.get("more"))
        page = SnapshotPage(CREDIT_LIST.name, code, str(snap["id"]), final=not more)
        if more:
            state.snapshot = {**snap, "version": int(data["version"]), "offset": int(snap["offset"]) + len(items)}
        else:
            state.versions[code], state.snapshot = int(data["version"]), None
        return SourceBatch(rows, state.dump(), True, snapshot=page)

    async def _delta_page(self, state: _Cursor, code: str, since: int, limit: int) -> SourceBatch:
        data = await self._get(f"/lists/{quote(code, safe='')}/delta", {"since": str(since), "limit": str(limit)})
        rows = [_row(code, change.get("item") or {}, str(change.get("op"))) for change in data.get("changes") or []]
        state.versions[code] = int(data["version"])
        return SourceBatch(rows, state.dump(), True)

    # ------------------------------------------------------------ HTTP

    async def _get(self, path: str, query: Mapping[str, str] | None = None) -> dict[str, Any]:
        url = self.settings.url.rstrip("/") + path
        status, headers, raw = await self._http.request("GET", url, url, params=query)
        body = _parse(raw, url, status)
        if status in (409, 410):
            raise _Gone(str(body.get("errorMsg")))
        if status != 200:
            message = f"{url}: HTTP {status} {body.get('errorCode', '')} {body.get('errorMsg', '')}".strip()
            raise status_error(status, message, headers.get("Retry-After"))
        data = body.get("data")
        if not isinstance(data, dict):
            raise RetryableError(f"{url}: the answer has no data object")
        self._verify(data, body.get("signature"), url)
        return data

    def _verify(self, data: Mapping[str, Any], signature: Any, url: str) -> None:
        """The platform's signature over the answer's data, when a peer certificate is configured."""
        if self._peer is None:
            return
        if not signature:
            if self.settings.require_signed:
                raise PermanentError(f"{url}: list answer refused: it is not signed")
            return
        try:
            self._peer.verify(data, str(signature))
        except EnvelopeError as exc:
            raise PermanentError(f"{url}: list answer refused: {exc}") from exc

def _new_snapshot(code: str) -> dict[str, Any]:
    return {"list": code, "id": f"s-{uuid.uuid4().hex}", "version": None, "offset": 0}


def _row(code: str, item: Mapping[str, Any], op: str) -> SourceRow:
    subject = str(item.get("TYSHXYDM") or item.get("ZJHM") or "")
    return SourceRow(f"{code}/{subject}", {**item, "op": op})


def _parse(raw: bytes, url: str, status: int) -> dict[str, Any]:
    try:
        body = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError:
        if status != 200:  # e.g. a proxy's HTML error page: the status decides
            return {"errorMsg": raw[:200].decode("utf-8", "replace")}
        raise RetryableError(f"{url}: the answer is not JSON") from None
    return body if isinstance(body, dict) else {}

