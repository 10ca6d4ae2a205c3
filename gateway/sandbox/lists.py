"""The platform's credit lists in the sandbox: catalogue, full snapshots, deltas, and a control to publish.

Each list (红名单 / 严重失信主体名单 / 重点关注名单) has a code, a type, a version that grows with every
publication, and a digest of its membership (:func:`gateway.domain.lists.membership_digest`: SHA-256 over the
sorted subject identifiers, USCC or ID number). Items use the platform's field names (``MDBM`` list code,
``MDLX`` list type, ``ZTLB``, ``ZTMC``, ``TYSHXYDM``, ``ZJLX``, ``ZJHM``, ``FDDBR``, ``LRSY``, ``RDWH``,
``RDDW``, ``RDRQ``, ``YXQZ``, ``YCRQ``, ``YCYY``); ``mappings/platform-credit_list.toml`` maps them. State
lives in memory: the sandbox is for tests and the demo.

Protocol (bearer token as for uploads; answers ``{"errorCode": "200", "data": {...}, "signature": "…"}``,
the signature -- present when the sandbox has receipt credentials -- is a detached signature over ``data``
as JSON with sorted keys, exactly like a receipt's)::

    GET  /api/v1/lists                          {"lists": [{listCode, listType, version, digest, count}]}
    GET  /api/v1/lists/{code}/snapshot?offset=&limit=&version=
         {listCode, listType, version, digest, total, offset, items, more}
         409 snapshot_moved: ``version`` was given and the list has moved on (start the snapshot again)
    GET  /api/v1/lists/{code}/delta?since=V&limit=
         {listCode, listType, fromVersion, version, digest, changes: [{op: upsert|remove, item}], more}
         whole versions per page; ``digest`` is the membership digest when ``version`` is the current one
         410 gone: the history no longer reaches back to ``since`` (take a snapshot)
    POST /_sandbox/lists/{code}/publish   {"listType", "upsert": [items], "remove": [subject ids]}
    POST /_sandbox/lists/{code}/compact   forget the delta history (the next delta answers 410)

The sandbox also takes credit lists *uploaded* to it, as a partner region's platform would: table ``XYMD``
(``mappings/partner-credit_list.toml``), with the same field names, through the ordinary upload API.
"""

from __future__ import annotations

import base64
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from gateway.domain.datasets import LIST_TYPES
from gateway.domain.lists import membership_digest
from gateway.sandbox.platform import TABLES, TableSpec
from gateway.sealing.target import receipt_bytes

Signer = Callable[[bytes], bytes]
MAX_PAGE = 5000
PARTNER_TABLE = "XYMD"  # credit lists uploaded to a partner region (mappings/partner-credit_list.toml)

TABLES[PARTNER_TABLE] = TableSpec(
    code=PARTNER_TABLE,
    required=("MDBM", "MDLX", "ZTLB", "ZTMC", "LRSY", "RDWH", "RDDW", "RDRQ"),
    max_lengths=(("MDBM", 64), ("ZTMC", 200), ("TYSHXYDM", 18), ("ZJHM", 64), ("FDDBR", 50), ("LRSY", 4000),
                 ("RDWH", 128), ("RDDW", 200), ("YCYY", 500), ("DFBM", 6)),
    uscc_fields=("TYSHXYDM",),
    date_fields=("RDRQ", "YXQZ", "YCRQ"),
)


def subject_of(item: Mapping[str, Any]) -> str:
    """The subject identifier of a platform item: USCC, or the ID number of a natural person."""
    return str(item.get("TYSHXYDM") or item.get("ZJHM") or "")


@dataclass
class PlatformList:
    code: str
    list_type: str
    version: int = 0
    items: dict[str, dict[str, Any]] = field(default_factory=dict)  # subject → item
    history: list[tuple[int, str, dict[str, Any]]] = field(default_factory=list)  # (version, op, item)
    history_from: int = 0  # deltas since a version below this cannot be answered

    @property
    def digest(self) -> str:
        return membership_digest(self.items)

    def summary(self) -> dict[str, Any]:
        return {"listCode": self.code, "listType": self.list_type, "version": self.version, "digest": self.digest,
                "count": len(self.items)}


class ListPlatform:
    """The lists the platform publishes (use from the sandbox's event loop)."""

    def __init__(self) -> None:
        self.lists: dict[str, PlatformList] = {}
        self.served: Counter[str] = Counter()  # answers given: catalogue, snapshot, delta, gone, moved

    def publish(self, code: str, list_type: str, upsert: Sequence[Mapping[str, Any]] = (),
                remove: Sequence[str] = (), removal: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """One publication: new or changed entries, and subjects taken off the list; the version grows by one.

        ``removal`` adds fields to the removed items as the platform reports them (e.g. YCRQ, YCYY).
        """
        if list_type not in LIST_TYPES:
            raise ValueError(f"unknown list type {list_type!r}; known: {', '.join(LIST_TYPES)}")
        plist = self.lists.setdefault(code, PlatformList(code, list_type))
        version = plist.version + 1
        changes: list[tuple[int, str, dict[str, Any]]] = []
        for raw in upsert:
            item = {**raw, "MDBM": code, "MDLX": plist.list_type}
            subject = subject_of(item)
            if not subject:
                raise ValueError(f"item without TYSHXYDM or ZJHM: {raw!r}")
            plist.items[subject] = item
            changes.append((version, "upsert", item))
        for subject in remove:
            old = plist.items.pop(subject, None)
            if old is not None:
                changes.append((version, "remove", {**old, **(removal or {})}))
        if changes:
            plist.version = version
            plist.history += changes
        return plist.summary()

    def drop(self, code: str) -> None:
        """The platform stops publishing a list: it leaves the catalogue (its subjects are off it)."""
        del self.lists[code]

    def compact(self, code: str) -> None:
        """Forget the delta history: a client behind the current version must take a snapshot."""
        plist = self.lists[code]
        plist.history.clear()
        plist.history_from = plist.version

    def catalogue(self) -> dict[str, Any]:
        return {"lists": [p.summary() for p in sorted(self.lists.values(), key=lambda p: p.code)]}

    def snapshot(self, code: str, offset: int, limit: int, version: int | None) -> dict[str, Any] | None:
        """One page of the list in subject order; None when ``version`` is given and no longer current."""
        plist = self.lists[code]
        if version is not None and version != plist.version:
            return None
        subjects = sorted(plist.items)
        page = [plist.items[k] for k in subjects[offset:offset + limit]]
        return {**plist.summary(), "total": len(subjects), "offset": offset, "items": page,
                "more": offset + limit < len(subjects)}

    def delta(self, code: str, since: int, limit: int) -> dict[str, Any] | None:
        """Changes after ``since``, whole versions at a time; None when the history does not reach back."""
        plist = self.lists[code]
        if since < plist.history_from:
            return None
        changes: list[dict[str, Any]] = []
        reached = since
        for version, op, item in plist.history:
            if version <= since:
                continue
            if version != reached and len(changes) >= limit:
                break
            changes.append({"op": op, "item": item})
            reached = version
        reached = max(reached, since)
        digest = plist.digest if reached == plist.version else None  # only the current membership is known
        return {"listCode": code, "listType": plist.list_type, "fromVersion": since, "version": reached,
                "digest": digest, "changes": changes, "more": reached < plist.version}


# ---------------------------------------------------------------------------------------------------
# HTTP

def _answer(data: Mapping[str, Any], signer: Signer | None) -> web.Response:
    body: dict[str, Any] = {"errorCode": "200", "errorMsg": "成功", "data": data}
    if signer is not None:
        body["signature"] = base64.b64encode(signer(receipt_bytes(data))).decode()
    return web.Response(status=200, body=orjson.dumps(body), content_type="application/json", charset="utf-8")


def _fail(status: int, code: str, message: str, **extra: Any) -> web.Response:
    return web.Response(status=status, body=orjson.dumps({"errorCode": code, "errorMsg": message, **extra}),
                        content_type="application/json", charset="utf-8")


def _int(request: web.Request, name: str, default: int | None, maximum: int) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    value = int(raw)
    if not 0 <= value <= maximum:
        raise ValueError(name)
    return value


class _Routes:
    """The HTTP handlers of the list endpoints."""

    def __init__(self, platform: ListPlatform, signer: Signer | None) -> None:
        self.platform, self.signer = platform, signer

    def _unknown(self, request: web.Request) -> web.Response | None:
        code = request.match_info["code"]
        return None if code in self.platform.lists else _fail(404, "404", f"名单不存在: {code}")

    async def catalogue(self, _request: web.Request) -> web.Response:
        self.platform.served["catalogue"] += 1
        return _answer(self.platform.catalogue(), self.signer)

    async def snapshot(self, request: web.Request) -> web.Response:
        if (missing := self._unknown(request)) is not None:
            return missing
        code = request.match_info["code"]
        try:
            offset = _int(request, "offset", 0, 1 << 31) or 0
            limit = _int(request, "limit", 500, MAX_PAGE) or 500
            version = _int(request, "version", None, 1 << 62)
        except ValueError as exc:
            return _fail(400, "400", f"参数无效: {exc}")
        page = self.platform.snapshot(code, offset, limit, version)
        self.platform.served["snapshot" if page is not None else "moved"] += 1
        if page is None:
            return _fail(409, "snapshot_moved", "名单已更新，请重新获取快照", version=self.platform.lists[code].version)
        return _answer(page, self.signer)

    async def delta(self, request: web.Request) -> web.Response:
        if (missing := self._unknown(request)) is not None:
            return missing
        code = request.match_info["code"]
        try:
            since = _int(request, "since", None, 1 << 62)
            limit = _int(request, "limit", 500, MAX_PAGE) or 500
        except ValueError as exc:
            return _fail(400, "400", f"参数无效: {exc}")
        if since is None or since > self.platform.lists[code].version:
            return _fail(400, "400", "since 缺失或超过当前版本")
        page = self.platform.delta(code, since, limit)
        self.platform.served["delta" if page is not None else "gone"] += 1
        if page is None:
            return _fail(410, "gone", "增量历史已不可用，请重新获取快照", oldest=self.platform.lists[code].history_from)
        return _answer(page, self.signer)

    async def publish(self, request: web.Request) -> web.Response:
        try:
            body = orjson.loads(await request.read())
            result = self.platform.publish(request.match_info["code"], str(body.get("listType", "")),
                                           body.get("upsert") or [], [str(x) for x in body.get("remove") or []],
                                           body.get("removal"))
        except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError) as exc:
            return _fail(400, "400", f"请求无效: {exc}")
        return web.json_response(result)

    async def compact(self, request: web.Request) -> web.Response:
        if (missing := self._unknown(request)) is not None:
            return missing
        code = request.match_info["code"]
        self.platform.compact(code)
        return web.json_response({"ok": True, "historyFrom": self.platform.lists[code].history_from})


def add_list_routes(app: web.Application, platform: ListPlatform, signer: Signer | None) -> None:
    """Register the list endpoints on the sandbox's application (the sandbox's token middleware applies)."""
    routes = _Routes(platform, signer)
    app.router.add_get("/api/v1/lists", routes.catalogue)
    app.router.add_get("/api/v1/lists/{code}/snapshot", routes.snapshot)
    app.router.add_get("/api/v1/lists/{code}/delta", routes.delta)
    app.router.add_post("/_sandbox/lists/{code}/publish", routes.publish)
    app.router.add_post("/_sandbox/lists/{code}/compact", routes.compact)
