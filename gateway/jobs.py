"""The daemon's scheduled jobs and what ``lists`` and ``rules`` commands ask of them.

**Publicity** (:func:`run_publicity`, ``[publicity] check_s``): bring the periods up to date, then withdraw
what is due (gateway.store.publicity has the SQL); :func:`repair_screen` is the intake check that refuses a
repair before the minimum publicity period ends.

**Credit lists** end to end: versions and digests at every end, drift repair, red/black conflicts.

Three ends hold each list (红名单 / 严重失信主体名单 / 重点关注名单):

* the **platform** announces a version and a *membership digest* per list (SHA-256 over the sorted subject
  identifiers, USCC or ID number, one per line: :func:`membership_digest`); the list source keeps what it
  last heard in its cursor (``announced``) next to the version it has applied (``versions``);
* the **ledger** holds every entry; its membership digest over the listed (not withdrawn) entries must
  equal the platform's once the source has caught up;
* each **target** that can read back what it holds (:class:`gateway.adapter.Holdings`, e.g. the SQL sink)
  is compared *per key*: for every ledger entry the row the target should hold (identity and content
  digest, as the target computes them from the record the engine would send it) against the rows it does
  hold. The target's *content digest* is SHA-256 over its sorted ``identity digest`` lines; it must equal the
  one expected from the ledger.

:func:`reconcile` repairs drift by re-sending only the difference: changed or missing rows (and rows that
should be gone) are queued again at the ledger's current version; rows the gateway never sent are
discarded through the target. Red-list entries held back by a black-list conflict (gateway.store.lists) are
left out of the comparison: the target should not receive them while the conflict lasts.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.adapter import Holdings, SourceBatch
from gateway.config import Config
from gateway.domain.datasets import CREDIT_LIST
from gateway.domain.identifiers import mask_id
from gateway.domain.lists import content_digest, membership_digest
from gateway.domain.publicity import PublicitySettings, early_repair
from gateway.errors import GatewayError
from gateway.pipeline.config import TargetConfig
from gateway.pipeline.encode import route_record
from gateway.records import LedgerEntry
from gateway.store import Store
from gateway.store.lists import ListEntry
from gateway.store.publicity import JobResult
from gateway.stored import Reject

log = logging.getLogger("gateway.lists")
DATASET = CREDIT_LIST.name
Screen = Callable[[list[LedgerEntry], list[Reject], SourceBatch, dt.date],
                  Awaitable[tuple[list[LedgerEntry], list[Reject]]]]


# ---------------------------------------------------------------- publicity

def public_targets(config: Config) -> dict[str, list[str]]:
    """dataset → the public-facing targets that receive it (``public``, default ``external``)."""
    out: dict[str, list[str]] = {}
    for t in config.targets.values():
        for dataset in t.mappings:
            if t.public:
                out.setdefault(dataset, []).append(t.name)
    return out


async def run_publicity(store: Store, config: Config, today: dt.date) -> JobResult:
    """One run of the job: bring the periods up to date, then withdraw what is due ``today``."""
    settings = config.publicity
    result = JobResult()
    if not settings.enabled:
        return result
    result.dated = await store.publicity.sync_periods(settings)
    await store.publicity.withdraw_due(settings, public_targets(config), list(config.targets), today, result)
    if result.withdrawn or result.waiting:
        log.info("publicity withdrawals", extra={"records": result.withdrawn, "targets": result.sent,
                                                 "waiting": result.waiting, "today": today.isoformat()})
    return result


# ---------------------------------------------------------------- intake: repairs before the minimum period


def repair_screen(store: Store, settings: PublicitySettings) -> Screen:
    """The intake check (``Intake.screens``) that refuses a repair of a published record before its minimum
    publicity period ends: the row is quarantined with the rule and the date, nothing is written or sent."""

    async def screen(accepted: list[LedgerEntry], rejects: list[Reject], batch: SourceBatch,
                     today: dt.date) -> tuple[list[LedgerEntry], list[Reject]]:
        if not settings.enabled:
            return accepted, rejects
        early = {}
        for e in accepted:
            if e.operation == "withdraw" and e.dataset in settings.datasets:
                problem = early_repair(settings, e.dataset, orjson.loads(e.body), today)
                if problem is not None:
                    early[(e.dataset, e.key)] = problem
        if not early:
            return accepted, rejects
        published = await store.publicity.published(list(early))
        refused = [e for e in accepted if (e.dataset, e.key) in early and (e.dataset, e.key) in published]
        if not refused:
            return accepted, rejects
        raw = {row.key: row.data for row in batch.rows}
        for e in refused:
            log.warning("repair refused", extra={"key": e.key, "reason": early[(e.dataset, e.key)].message})
        return ([e for e in accepted if e not in refused],
                [*rejects, *(Reject(e.source, e.source_key, e.dataset, e.key, [early[(e.dataset, e.key)]],
                                    _json_safe(raw.get(e.source_key, {}))) for e in refused)])

    return screen


def _json_safe(row: Mapping[str, Any]) -> dict[str, Any]:
    """A source row as the quarantine keeps it (JSON): dates as ISO text, anything unusual as text."""
    return {k: v.isoformat() if isinstance(v, dt.date) else v if isinstance(v, str | int | float | None) else str(v)
            for k, v in row.items()}


# ---------------------------------------------------------------- the three ends

@dataclass
class TargetView:
    """One target's rows of one list compared with what the ledger says it should hold."""

    target: str
    rows: int = 0
    digest: str = ""
    expected_digest: str = ""
    changed: list[str] = field(default_factory=list)  # ledger keys whose row differs
    missing: list[str] = field(default_factory=list)  # ledger keys whose row is absent
    stale: list[str] = field(default_factory=list)  # withdrawn ledger keys whose row is still there
    queued: int = 0  # keys with a delivery under way: not judged now
    unknown: list[str] = field(default_factory=list)  # row identities the gateway never sent
    error: str = ""

    @property
    def in_sync(self) -> bool:
        return not (self.error or self.changed or self.missing or self.stale or self.unknown)

    def as_json(self) -> dict[str, Any]:
        return {"target": self.target, "rows": self.rows, "digest": self.digest,
                "expected_digest": self.expected_digest, "in_sync": self.in_sync, "changed": len(self.changed),
                "missing": len(self.missing), "stale": len(self.stale), "unknown": len(self.unknown),
                "queued": self.queued, "error": self.error}


@dataclass
class ListView:
    list_code: str
    list_type: str = ""
    platform_version: int | None = None
    platform_digest: str = ""
    platform_count: int | None = None
    applied_version: int | None = None  # what the source has taken into the ledger
    ledger_digest: str = ""
    ledger_count: int = 0
    held: int = 0
    targets: list[TargetView] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"list_code": self.list_code, "list_type": self.list_type,
                "platform": {"version": self.platform_version, "digest": self.platform_digest,
                             "count": self.platform_count},
                "ledger": {"version": self.applied_version, "digest": self.ledger_digest,
                           "count": self.ledger_count, "held": self.held,
                           "matches_platform": self.ledger_digest == self.platform_digest},
                "targets": [t.as_json() for t in self.targets]}


def announced(cursors: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Per list code, what the platform announced and the version applied, from list sources' cursors.

    A list source keeps ``{"versions": {code: V}, "announced": {code: {listType, version, digest, count}}}``
    in its cursor (adapters/platform/lists.py); other cursors are ignored.
    """
    out: dict[str, dict[str, Any]] = {}
    for cursor in cursors.values():
        if not isinstance(cursor, dict) or not isinstance(cursor.get("announced"), dict):
            continue
        versions = cursor.get("versions") or {}
        for code, info in cursor["announced"].items():
            if isinstance(info, dict):
                out[code] = {**info, "applied": versions.get(code)}
    return out


def _ledger_views(entries: Sequence[ListEntry], heard: Mapping[str, dict[str, Any]]) -> dict[str, ListView]:
    views: dict[str, ListView] = {}
    by_list: dict[str, list[ListEntry]] = {}
    for entry in entries:
        by_list.setdefault(entry.list_code, []).append(entry)
    for code in sorted(set(by_list) | set(heard)):
        rows = by_list.get(code, [])
        info = heard.get(code, {})
        listed = [e for e in rows if e.active]
        views[code] = ListView(
            code, str(info.get("listType") or (rows[0].list_type if rows else "")),
            info.get("version"), str(info.get("digest") or ""), info.get("count"), info.get("applied"),
            membership_digest(e.subject for e in listed), len(listed), sum(1 for e in listed if e.held))
    return views


def list_targets(config: Config) -> list[TargetConfig]:
    """Targets that receive credit lists and can read back what they hold."""
    return [t for t in config.targets.values() if DATASET in t.mappings and isinstance(t.adapter, Holdings)]


def holdings(target: TargetConfig) -> Holdings:
    """The target's adapter as one that can read back what it holds (reconcile_targets chose it for that)."""
    if not isinstance(target.adapter, Holdings):
        raise TypeError(f"target {target.name} cannot read back what it holds")
    return target.adapter


async def compare(store: Store, target: TargetConfig, list_code: str, held_keys: set[str]) -> TargetView:
    """One target's rows of one list against the ledger (the adapter must be open)."""
    view = TargetView(target.name)
    mapping = target.mappings[DATASET]
    columns = mapping.sources_of("list_code")
    adapter = holdings(target)
    if not columns:
        view.error = f"{mapping.path}: no field is a plain copy of list_code, so a list's rows cannot be selected"
        return view
    try:
        actual = dict(await adapter.held(DATASET, dict.fromkeys(columns, list_code)))
        records = await store.lists.list_records(list_code)
        personal = mapping.dataset.personal_id_fields
        routed = [route_record(target, mapping, personal, rec) for rec in records]
        expected = await adapter.expected(DATASET, routed)
    except GatewayError as exc:
        view.error = str(exc)
        return view
    busy = await store.lists.queued_keys(target.name, DATASET, [r.record_key for r in records])
    view.queued = len(busy)
    want: dict[str, str] = {}
    known: set[str] = set()
    for rec, (identity, digest) in zip(records, expected, strict=True):
        known.add(identity)
        if rec.record_key in held_keys or rec.record_key in busy:
            if digest is not None and identity in actual:
                want[identity] = actual[identity]  # not judged now: counted as it stands
            continue
        if digest is not None:
            want[identity] = digest
        _judge(view, rec.record_key, digest, actual.get(identity))
    view.unknown = sorted(set(actual) - known)
    view.rows, view.digest, view.expected_digest = len(actual), content_digest(actual), content_digest(want)
    return view


def _judge(view: TargetView, key: str, digest: str | None, held: str | None) -> None:
    if digest is None:
        if held is not None:
            view.stale.append(key)
    elif held is None:
        view.missing.append(key)
    elif held != digest:
        view.changed.append(key)


async def list_status(config: Config, store: Store, *, adapters_open: bool = False) -> list[ListView]:
    """Every list's version and digest at the platform, in the ledger and at each target (the target adapters
    are opened here unless ``adapters_open``: a running gateway has them open already)."""
    cursors = {name: await store.intake.load_cursor(name) for name,
               src in config.sources.items() if DATASET in src.mappings}
    for channel in (config.inbound.channels.values() if config.inbound is not None else ()):
        if channel.dataset == DATASET:  # lists pushed to us keep the same cursor form (gateway.store.inbound_lists)
            cursors[channel.source] = await store.intake.load_cursor(channel.source)
    entries = await store.lists.list_entries()
    views = _ledger_views(entries, announced(cursors))
    held = {e.record_key for e in entries if e.held}
    for target in list_targets(config):
        try:
            async with contextlib.AsyncExitStack() as stack:
                if not adapters_open:
                    await stack.enter_async_context(target.adapter)
                for view in views.values():
                    view.targets.append(await compare(store, target, view.list_code, held))
        except GatewayError as exc:
            for view in views.values():
                view.targets.append(TargetView(target.name, error=str(exc)))
    return list(views.values())


# ---------------------------------------------------------------- repair

@dataclass
class Repair:
    target: str
    list_code: str
    requeued: int = 0
    discarded: int = 0
    error: str = ""


async def reconcile_target(store: Store, target: TargetConfig, list_codes: Sequence[str], *, discard_unknown: bool,
                           dry_run: bool = False) -> list[Repair]:
    """Compare one target's lists with the ledger and queue only the difference (the adapter must be open)."""
    held = {e.record_key for e in await store.lists.list_entries() if e.held}
    repairs = []
    for code in list_codes:
        view = await compare(store, target, code, held)
        repair = Repair(target.name, code, error=view.error)
        keys = [*view.changed, *view.missing, *view.stale]
        if not view.error and not dry_run:
            repair.requeued = await store.lists.requeue_for_repair(target.name, DATASET, keys, f"drift in list {code}")
            if discard_unknown and view.unknown:
                repair.discarded = await holdings(target).discard(DATASET, view.unknown)
        else:
            repair.requeued, repair.discarded = len(keys), len(view.unknown) if discard_unknown else 0
        if keys or view.unknown:
            log.warning("list drift at a target", extra={
                "target": target.name, "list": code, "changed": len(view.changed), "missing": len(view.missing),
                "stale": len(view.stale), "unknown": len(view.unknown), "requeued": repair.requeued,
                "discarded": repair.discarded, "dry_run": dry_run})
        repairs.append(repair)
    return repairs


async def reconcile(config: Config, store: Store, *, dry_run: bool = False,
                    adapters_open: bool = False) -> list[Repair]:
    """Every list at every target that can read back what it holds (see :func:`reconcile_target`)."""
    codes = sorted({e.list_code for e in await store.lists.list_entries()})
    repairs: list[Repair] = []
    for target in list_targets(config):
        try:
            async with contextlib.AsyncExitStack() as stack:
                if not adapters_open:
                    await stack.enter_async_context(target.adapter)
                repairs += await reconcile_target(store, target, codes, discard_unknown=config.lists.discard_unknown,
                                                  dry_run=dry_run)
        except GatewayError as exc:
            log.error("list reconciliation failed", extra={"target": target.name, "error": str(exc)})
            repairs.append(Repair(target.name, "", error=str(exc)))
    return repairs


# ---------------------------------------------------------------- conflicts

@dataclass(frozen=True)
class Conflict:
    """A red-list entry held back, and the black-list entry that holds it."""

    red_key: str
    black_key: str
    subject: str  # masked when it is an ID number
    red: Mapping[str, Any]
    black: Mapping[str, Any]
    delivered: Mapping[str, int]  # target → version of the red entry it received before the conflict


async def conflicts(store: Store) -> list[Conflict]:
    entries = [e for e in await store.lists.list_entries() if e.held]
    keys = [e.record_key for e in entries] + [e.held_by or "" for e in entries]
    payloads = await store.lists.ledger_payloads(DATASET, keys)
    delivered = await store.lists.delivered_versions(DATASET, [e.record_key for e in entries])
    out = []
    for e in entries:
        red, black = payloads.get(e.record_key, {}), payloads.get(e.held_by or "", {})
        subject = e.subject if red.get("uscc") == e.subject else mask_id(e.subject)
        out.append(Conflict(e.record_key, e.held_by or "", subject, _summary(red), _summary(black),
                            {t: v for (t, k), v in delivered.items() if k == e.record_key}))
    return out


def _summary(payload: Mapping[str, Any]) -> dict[str, Any]:
    """The fields ops need to judge a conflict (ID numbers masked)."""
    keep = ("list_code", "list_type", "subject_name", "uscc", "id_no", "reason", "basis", "deciding_body",
            "listing_date", "expiry_date")
    return {k: (mask_id(str(payload[k])) if k == "id_no" else payload[k]) for k in keep if payload.get(k)}
