"""The sandbox platform pushing to a gateway's inbound channel: list snapshots, list deltas, sanction cases.

The platform does not only wait to be asked (gateway.sandbox.lists, gateway.sandbox.sanctions): it can push
to a department gateway's inbound endpoint (gateway.inbound.service), with :class:`gateway.inbound.client.InboundClient`
and the sandbox's own credentials -- sealed with its envelope profile to the gateway's certificate, signed by
its key -- and it takes a push as done only when the gateway's signed receipt verifies (signer: the gateway's
certificate the sandbox was started with, chaining to its trusted CAs).

* **list snapshot**: every entry of a list at its current version, in pages; each page says it is page N of
  snapshot S of the list (``last`` on the final one) and what the list is (version, type, membership digest,
  count). ``stop_after`` pushes only the first pages: an interrupted snapshot, for tests; ``resume`` goes on
  with it (the same snapshot id), a new call without it starts a new snapshot;
* **list delta**: the changes since the version last pushed to that gateway channel (or ``since``), upserts
  and removals (``op``: ``upsert`` / ``remove``), naming the version they start from;
* **cases**: the department's cases after the last position pushed to that channel (``LH_*`` fields and
  ``operation``), as the case feed gives them.

Records carry the platform's field names, exactly as the pull APIs give them, so a channel uses the same
inbound mappings as the pull sources (``mappings/platform-credit_list.toml``,
``mappings/platform-sanction-case.toml``). What was pushed where is remembered in memory, like the lists.

Python: ``await sandbox.push.list_snapshot(url, channel, code)``, ``list_delta(url, channel, code)``,
``cases(url, channel, department=…)``. HTTP (bearer token as for uploads)::

    POST /_sandbox/push {"url": "http://gateway:8471", "channel": "lists",
                         "what": "list_snapshot" | "list_delta" | "cases",
                         "list": "BLACK-2026", "pageSize": 500, "stopAfter": null, "resume": false,
                         "since": null, "department": "", "after": null}
      200 {"pushed": [{"batchId", "receiptId", "records", "accepted", "rejected", "snapshot", "list"}]}
      400 a bad request or nothing to push from (no such list, history gone, no credentials)
      502 the gateway refused a batch or its receipt did not verify: {"error", "message", "status", "pushed"}
"""

from __future__ import annotations

import datetime as dt
import ssl
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from gateway.domain.datasets import CREDIT_LIST, SANCTION_CASE
from gateway.domain.lists import ListState, SnapshotMark
from gateway.errors import GatewayError
from gateway.inbound.batch import MAX_RECORDS
from gateway.inbound.client import InboundClient, PushRefused
from gateway.sandbox.lists import ListPlatform, PlatformList
from gateway.sandbox.sanctions import SanctionsDesk
from gateway.sealing.target import Sealing

WHAT = ("list_snapshot", "list_delta", "cases")


class NothingToPush(GatewayError):
    """The push cannot be made from what the sandbox holds (no list, history gone, no credentials)."""


@dataclass(frozen=True)
class PushResult:
    """One batch pushed and the gateway's verified answer."""

    batch_id: str
    receipt_id: str
    records: int
    accepted: int  # the gateway's successSize (accepted or unchanged)
    rejected: int
    snapshot: SnapshotMark | None = None
    list_state: ListState | None = None
    answer: Mapping[str, Any] = field(default_factory=dict, repr=False)

    def as_json(self) -> dict[str, Any]:
        return {"batchId": self.batch_id, "receiptId": self.receipt_id, "records": self.records,
                "accepted": self.accepted, "rejected": self.rejected,
                "snapshot": self.snapshot.as_json() if self.snapshot else None,
                "list": self.list_state.as_json() if self.list_state else None}


@dataclass
class _Snapshot:
    """A snapshot being pushed: the list at one version, in pages; ``done`` pages pushed so far."""

    snapshot_id: str
    state: ListState
    pages: list[list[dict[str, Any]]]
    done: int = 0


class PushDesk:
    """Pushes from the sandbox's lists and cases; ``sealing`` is the sandbox's envelope (key, cert, gateway's)."""

    def __init__(self, lists: ListPlatform, sanctions: SanctionsDesk, sealing: Callable[[], Sealing | None],
                 in_db: Callable[..., Any]) -> None:
        self.lists, self.sanctions, self._sealing, self._in_db = lists, sanctions, sealing, in_db
        self.list_versions: dict[tuple[str, str, str], int] = {}  # (url, channel, list) → version pushed
        self.case_positions: dict[tuple[str, str], int] = {}  # (url, channel) → last case feed position pushed
        self.unfinished: dict[tuple[str, str, str], _Snapshot] = {}  # snapshots stopped part-way (stop_after)

    def client(self, url: str, channel: str, dataset: str, ssl_context: ssl.SSLContext | None = None) -> InboundClient:
        sealing = self._sealing()
        if sealing is None or not sealing.active or sealing.ours is None or sealing.peer is None:
            raise NothingToPush("the sandbox has no credentials to push with: start it with an envelope "
                                "(--envelope cms|sm --key --cert --peer-cert gateway.crt --trusted-ca)")
        return InboundClient(url, channel, dataset, sealing.profile, ours=sealing.ours, gateway=sealing.peer,
                             ssl_context=ssl_context)

    # ------------------------------------------------------------ lists

    async def list_snapshot(self, url: str, channel: str, code: str, page_size: int = 500,
                            stop_after: int | None = None, resume: bool = False,
                            ssl_context: ssl.SSLContext | None = None) -> list[PushResult]:
        """Push the whole list at its current version, ``page_size`` entries a page. ``stop_after`` pushes only
        that many pages and leaves the snapshot unfinished; ``resume`` goes on with an unfinished one."""
        key = (url, channel, code)
        snap = self.unfinished.pop(key, None) if resume else None
        if resume and snap is None:
            raise NothingToPush(f"no unfinished snapshot of {code} for {url} channel {channel}")
        if snap is None:
            snap = self._new_snapshot(code, page_size)
        client = self.client(url, channel, CREDIT_LIST.name, ssl_context)
        pushed: list[PushResult] = []
        for n in range(snap.done + 1, len(snap.pages) + 1):
            if stop_after is not None and len(pushed) >= stop_after:
                self.unfinished[key] = snap
                return pushed
            mark = SnapshotMark(code, snap.snapshot_id, n, last=n == len(snap.pages))
            pushed.append(await _send(client, snap.pages[n - 1], mark, snap.state))
            snap.done = n
        self.list_versions[key] = snap.state.version
        return pushed

    def _new_snapshot(self, code: str, page_size: int) -> _Snapshot:
        plist = self._list(code)
        if not 1 <= page_size <= MAX_RECORDS:
            raise NothingToPush(f"pageSize: 1..{MAX_RECORDS}")
        items = [{**plist.items[k], "op": "upsert"} for k in sorted(plist.items)]  # one version, copied now
        state = ListState(code, plist.version, plist.list_type, plist.digest, len(items))
        pages = [items[i:i + page_size] for i in range(0, len(items), page_size)] or [[]]
        return _Snapshot(f"s-{uuid.uuid4().hex}", state, pages)

    async def list_delta(self, url: str, channel: str, code: str, since: int | None = None,
                         ssl_context: ssl.SSLContext | None = None) -> list[PushResult]:
        """Push the changes since ``since`` (default: the version last pushed to this channel), in whole versions."""
        plist = self._list(code)
        start = since if since is not None else self.list_versions.get((url, channel, code))
        if start is None:
            raise NothingToPush(f"list {code} was never pushed to {url} channel {channel}: push a snapshot first "
                                "(or give since)")
        client = self.client(url, channel, CREDIT_LIST.name, ssl_context)
        pushed: list[PushResult] = []
        while start < plist.version:
            data = self.lists.delta(code, start, MAX_RECORDS)
            if data is None:
                raise NothingToPush(f"list {code}: the history no longer reaches back to version {start}: "
                                    "push a snapshot")
            current = data["version"] == plist.version
            state = ListState(code, int(data["version"]), plist.list_type, str(data.get("digest") or ""),
                              len(plist.items) if current else None, start)
            records = [{**change["item"], "op": change["op"]} for change in data["changes"]]
            if state.version <= start:  # nothing newer to give: the sandbox's own state is inconsistent
                raise NothingToPush(f"list {code}: no change after version {start}")
            pushed.append(await _send(client, records, None, state))
            start = self.list_versions[(url, channel, code)] = state.version
        return pushed

    def _list(self, code: str) -> PlatformList:
        plist = self.lists.lists.get(code)
        if plist is None:
            raise NothingToPush(f"no list {code} in the sandbox (publish it first)")
        return plist

    # ------------------------------------------------------------ sanction cases

    async def cases(self, url: str, channel: str, department: str = "", after: int | None = None,
                    ssl_context: ssl.SSLContext | None = None) -> list[PushResult]:
        """Push the department's cases after ``after`` (default: the last position pushed to this channel)."""
        position = after if after is not None else self.case_positions.get((url, channel), 0)
        client = self.client(url, channel, SANCTION_CASE.name, ssl_context)
        pushed: list[PushResult] = []
        while True:
            page = await self._in_db(self.sanctions.book().feed, department, position, MAX_RECORDS)
            if not page["cases"]:
                return pushed
            records = [{**case["data"], "operation": case["operation"]} for case in page["cases"]]
            pushed.append(await _send(client, records, None, None))
            position = self.case_positions[(url, channel)] = int(page["cursor"])
            if not page["more"]:
                return pushed

    # ------------------------------------------------------------ HTTP

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/_sandbox/push", self._push)

    async def _push(self, request: web.Request) -> web.Response:
        try:
            pushed = await self._dispatch(orjson.loads(await request.read()))
        except (orjson.JSONDecodeError, TypeError, ValueError, NothingToPush) as exc:
            return _json(400, {"error": "request", "message": str(exc)})
        except PushRefused as exc:
            return _json(502, {"error": exc.kind, "message": exc.message, "status": exc.status})
        except GatewayError as exc:  # the gateway could not be reached
            return _json(502, {"error": "unreachable", "message": str(exc)})
        return _json(200, {"pushed": [p.as_json() for p in pushed]})

    async def _dispatch(self, spec: Any) -> list[PushResult]:
        if not isinstance(spec, dict):
            raise TypeError("expected a JSON object")
        url, channel, what = (_text(spec, k) for k in ("url", "channel", "what"))
        if what == "cases":
            return await self.cases(url, channel, str(spec.get("department") or ""), _number(spec, "after"))
        if what not in WHAT:
            raise ValueError(f"what: one of {', '.join(WHAT)}, not {what!r}")
        code = _text(spec, "list")
        if what == "list_snapshot":
            return await self.list_snapshot(url, channel, code, _number(spec, "pageSize") or 500,
                                            _number(spec, "stopAfter"), bool(spec.get("resume")))
        return await self.list_delta(url, channel, code, _number(spec, "since"))


async def _send(client: InboundClient, records: Sequence[Mapping[str, Any]], mark: SnapshotMark | None,
                state: ListState | None) -> PushResult:
    batch = client.batch(records, sent_at=dt.datetime.now(dt.UTC), snapshot=mark, list_state=state)
    answer = await client.send(batch)  # PushRefused unless the gateway's signed receipt verifies
    receipt = answer.get("receipt") or {}
    return PushResult(batch.batch_id, str(receipt.get("receiptId", "")), len(records),
                      int(answer.get("successSize") or 0), int(answer.get("failSize") or 0), mark, state, answer)


def _text(spec: Mapping[str, Any], name: str) -> str:
    value = spec.get(name)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name}: required (a string)")
    return value


def _number(spec: Mapping[str, Any], name: str) -> int | None:
    value = spec.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name}: expected a non-negative integer, got {value!r}")
    return value


def _json(status: int, payload: Any) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(payload), content_type="application/json", charset="utf-8")
