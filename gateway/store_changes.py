"""Changes of published records go to every target that holds them, and the ledger shows who confirmed.

A change of a record (same natural key: 文书号 + 机关) is a new version of that key, never a new record.
:func:`plan_targets` runs inside the intake transaction (called from ``Store._enqueue``) and decides, for each
key that already had a version, which targets get the new one:

* an ``upsert`` (a correction) goes to the targets routed for its dataset and to every target that holds the
  record or has it queued, routed or not (a target whose route was narrowed to ``changes_only``, or whose
  earlier version is still queued);
* a ``revoke`` / ``object`` / ``withdraw`` goes to the targets that hold the record (delivered, or in a batch
  being sent), routed or not; a target that never received it gets nothing — its queued earlier version is
  superseded, since there is nothing to take back;
* a target that already got the gateway's own withdrawal at the end of the publicity period
  (:mod:`gateway.store_publicity`) gets no ``upsert`` or ``object`` of that record again (it would publish it).

It also logs every ``revoke`` / ``object`` / ``withdraw`` version in ``cg_changes``, which
:mod:`gateway.store_confirmations` joins with the outbox rows and receipts of each version. This module only
needs the schema: the store imports it, not the other way round.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson
from sqlalchemy import and_, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway import schema as s
from gateway.records import LedgerEntry

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
        idle: list[tuple[str, str]] = []
        for e, _version in items:
            targets, nothing = _targets_for(e.operation, routed, held.get(e.key, {}), ended.get(e.key, set()))
            plan[(dataset, e.key)] = targets
            idle += [(t, e.key) for t in nothing]
        await _supersede(conn, dataset, idle, now)
    return plan


def _targets_for(operation: str, routed: Sequence[str], held: Mapping[str, set[str]],
                 ended: set[str]) -> tuple[list[str], list[str]]:
    """(targets that get this version, targets whose queued earlier version is dropped without a successor)."""
    holding = {t for t, states in held.items() if states & HOLDS}
    queued = {t for t, states in held.items() if "pending" in states} - holding
    skip = set() if operation in KEEPS_ITS_COPY else ended
    if operation == "upsert":
        return sorted((set(routed) | holding | queued) - skip), []
    return sorted(holding - skip), sorted(queued)


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
                  targets: Sequence[str]) -> dict[str, dict[str, set[str]]]:
    """key → target → the states of its live outbox rows (pending, leased, delivered)."""
    found: dict[str, dict[str, set[str]]] = {}
    if not targets:
        return found
    o = s.outbox.c
    for chunk in _chunks(sorted(set(keys))):
        rows = await conn.execute(select(o.record_key, o.target, o.state).where(and_(
            o.target.in_(list(targets)), o.dataset == dataset, o.record_key.in_(list(chunk)),
            o.state.in_(("pending", "leased", "delivered")))))  # target first: ix_outbox_key
        for key, target, state in rows:
            found.setdefault(key, {}).setdefault(target, set()).add(state)
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


async def _supersede(conn: AsyncConnection, dataset: str, pairs: Sequence[tuple[str, str]], now: float) -> None:
    o = s.outbox.c
    for target, key in pairs:
        await conn.execute(update(s.outbox).where(and_(
            o.target == target, o.dataset == dataset, o.record_key == key, o.state == "pending"))
            .values(state="superseded", updated_at=now))
