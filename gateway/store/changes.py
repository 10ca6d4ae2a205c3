"""Changes of published records go to every target that holds them, and the ledger shows who confirmed.

A change of a record (same natural key: 文书号 + 机关) is a new version of that key, never a new record.
:func:`plan_targets` runs inside the intake transaction (called from ``Store._enqueue``) and decides, for each
key that already had a version, which targets get the new one:

* it goes to the targets routed for its dataset, as before, and also to every target that holds the record
  (delivered, in a batch being sent, or queued) although its route no longer takes the dataset's new records
  (``changes_only``): a revocation reaches every target that received the record;
* a target that already got the gateway's own withdrawal at the end of the publicity period
  (:mod:`gateway.store.publicity`) gets no ``upsert`` or ``object`` of that record again (it would publish
  it again); a ``revoke`` or ``withdraw`` still goes there.

Every version carries the whole record, so a routed target that missed the earlier versions (added later, or
its earlier version still queued) gets the record in its current state, as every routed target does.

It also logs every ``revoke`` / ``object`` / ``withdraw`` version in ``cg_changes``, which
:mod:`gateway.store.confirmations` joins with the outbox rows and receipts of each version. This module only
needs the schema: the store imports it, not the other way round.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson
from sqlalchemy import and_, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.records import LedgerEntry
from gateway.store import schema as s

HOLDS = frozenset({"delivered", "leased"})  # the target has (or is being sent) a version of the key
KEEPS_ITS_COPY = frozenset({"revoke", "withdraw"})  # may still go where publication already ended
CHUNK = 500
_DISTINCT_TARGETS = text(  # a loose index scan (ix_batches_target_state): one index probe per target
    "WITH RECURSIVE t(target) AS (SELECT MIN(target) FROM cg_batches UNION ALL "
    "SELECT (SELECT MIN(target) FROM cg_batches WHERE target > t.target) FROM t WHERE t.target IS NOT NULL) "
    "SELECT target FROM t WHERE target IS NOT NULL")

Plan = dict[tuple[str, str], list[str]]


def _chunks(items: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), CHUNK):
        yield items[i:i + CHUNK]


# ---------------------------------------------------------------- intake: who gets a change


async def plan_targets(conn: AsyncConnection, changed: Sequence[tuple[LedgerEntry, int]],
                       routes: Mapping[str, Sequence[str]], now: float) -> Plan:
    """Targets for each changed key that had an earlier version; keys not in the plan follow ``routes``."""
    await log_changes(conn, [(e, v, _reason(e), "source") for e, v in changed if e.operation != "upsert"], now)
    by_dataset: dict[str, list[tuple[LedgerEntry, int]]] = {}
    for e, version in changed:
        if version > 1:
            by_dataset.setdefault(e.dataset, []).append((e, version))
    plan: Plan = {}
    for dataset, items in by_dataset.items():
        routed = list(routes.get(dataset, ()))
        known = sorted(set(routed) | set(await known_targets(conn)))
        keys = [e.key for e, _ in items]
        held, ended = await holders(conn, dataset, keys, known), await ended_targets(conn, dataset, keys)
        for e, _version in items:
            skip = set() if e.operation in KEEPS_ITS_COPY else ended.get(e.key, set())
            plan[(dataset, e.key)] = sorted((set(routed) | held.get(e.key, set())) - skip)
    return plan


def _reason(e: LedgerEntry) -> str:
    if e.operation != "withdraw":
        return ""
    return str(orjson.loads(e.body).get("withdraw_reason") or "")


async def log_changes(conn: AsyncConnection, rows: Sequence[tuple[LedgerEntry, int, str, str]], now: float) -> None:
    """One ``cg_changes`` row per revoke / object / withdraw version: (entry, version, reason, origin)."""
    if rows:
        await conn.execute(s.changes.insert(), [
            {"dataset": e.dataset, "record_key": e.key, "version": v, "operation": e.operation,
             "reason": reason[:64], "origin": origin, "at": now} for e, v, reason, origin in rows])


async def known_targets(conn: AsyncConnection) -> list[str]:
    """Every target that was ever sent a batch."""
    return [row[0] for row in await conn.execute(_DISTINCT_TARGETS)]


async def holders(conn: AsyncConnection, dataset: str, keys: Sequence[str],
                  targets: Sequence[str]) -> dict[str, set[str]]:
    """key → the targets with a live outbox row for it (pending, leased, delivered)."""
    found: dict[str, set[str]] = {}
    if not targets:
        return found
    o = s.outbox.c
    for chunk in _chunks(sorted(set(keys))):
        rows = await conn.execute(select(o.record_key, o.target, o.state).where(and_(
            s.outbox_of_keys(dataset, chunk), o.target.in_(list(targets)),
            o.state.in_(("pending", "leased", "delivered")))))
        for key, target, _state in rows:
            found.setdefault(key, set()).add(target)
    return found


async def ended_targets(conn: AsyncConnection, dataset: str, keys: Sequence[str]) -> dict[str, set[str]]:
    """key → the targets the gateway withdrew it from at the end of its publicity period."""
    p = s.publicity.c
    found: dict[str, set[str]] = {}
    for chunk in _chunks(sorted(set(keys))):
        rows = await conn.execute(select(p.record_key, p.withdrawn_targets).where(and_(
            p.dataset == dataset, p.record_key.in_(list(chunk)), p.withdrawn_version.is_not(None))))
        found.update({key: set(orjson.loads(targets)) for key, targets in rows})
    return found
