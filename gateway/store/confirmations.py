"""Who confirmed a change: every version of a record at every target, with its receipt or rejection.

:func:`record_history` (``credit-gateway records show``) and :func:`list_changes` (``records changes``) join the
change log ``cg_changes`` (:mod:`gateway.store.changes`) with the outbox rows of each version and the receipts
of their batches: per target pending, delivered (the receipt's id and time) or rejected (the target's code
and reason, from the target quarantine).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import and_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.store import schema as s
from gateway.store.database import chunks

PAGE = 500
# outbox states after which a version needs nothing more at a target: acknowledged, replaced by a later version,
# or not sent on purpose (publicity over)
SETTLED = ("delivered", "superseded", "withheld")
# why a public target was not sent a version (gateway.pipeline.encode.ended)
WITHHELD_REASON = "publicity period over before it was sent: not published"


@dataclass
class Delivery:
    """One version of a record at one target."""

    target: str
    version: int
    state: str  # pending | leased | delivered | rejected | dead | superseded | replayed | withheld
    at: float
    receipt_id: str = ""
    received_at: float | None = None
    reason: str = ""  # the target's code and message for a rejected version; why one was withheld

    def as_json(self) -> dict[str, Any]:
        return {"target": self.target, "version": self.version, "state": self.state, "at": self.at,
                "receipt_id": self.receipt_id or None, "received_at": self.received_at, "reason": self.reason or None}


@dataclass
class Change:
    """A revocation, objection or withdrawal (repair, end of publicity) and the targets that confirmed it."""

    id: int
    dataset: str
    record_key: str
    version: int
    operation: str
    reason: str
    origin: str
    at: float
    deliveries: list[Delivery] = field(default_factory=list)

    def _in_state(self, state: str) -> int:
        return sum(1 for d in self.deliveries if d.state == state)

    @property
    def confirmed(self) -> int:
        return self._in_state("delivered")

    @property
    def superseded(self) -> int:
        return self._in_state("superseded")

    @property
    def withheld(self) -> int:
        """Targets not sent this version on purpose: public ones, after the record's publicity ended."""
        return self._in_state("withheld")

    @property
    def unconfirmed(self) -> bool:
        return any(d.state not in SETTLED for d in self.deliveries)

    def summary(self) -> str:
        text = f"confirmed {self.confirmed} of {len(self.deliveries)} target(s)"
        text += f", {self.superseded} superseded by a later version" if self.superseded else ""
        return text + (f", {self.withheld} withheld (publicity ended)" if self.withheld else "")

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "dataset": self.dataset, "record_key": self.record_key, "version": self.version,
                "operation": self.operation, "reason": self.reason or None, "origin": self.origin, "at": self.at,
                "targets": len(self.deliveries), "confirmed": self.confirmed, "superseded": self.superseded,
                "withheld": self.withheld,
                "deliveries": [d.as_json() for d in self.deliveries]}


async def deliveries(conn: AsyncConnection, dataset: str, keys: Sequence[str],
                     targets: Sequence[str]) -> dict[str, list[Delivery]]:
    """key → every outbox row of the key at the given targets, with its receipt or rejection reason."""
    o, rc = s.outbox.c, s.receipts.c
    found: dict[str, list[Delivery]] = {}
    if not targets:
        return found
    for chunk in chunks(sorted(set(keys))):
        rows = await conn.execute(
            select(o.record_key, o.target, o.version, o.state, o.updated_at, rc.receipt_id, rc.received_at)
            .select_from(s.outbox.outerjoin(s.receipts, rc.batch_id == o.batch_id))
            .where(and_(s.outbox_of_keys(dataset, chunk), o.target.in_(list(targets))))
            .order_by(o.id))
        for key, target, version, state, at, receipt_id, received_at in rows:
            found.setdefault(key, []).append(Delivery(target, version, state, at, receipt_id or "", received_at,
                                                      WITHHELD_REASON if state == "withheld" else ""))
    await _rejection_reasons(conn, dataset, found)
    return found


async def _rejection_reasons(conn: AsyncConnection, dataset: str, found: Mapping[str, list[Delivery]]) -> None:
    """The target's code and message for rejected versions (kept in the target quarantine)."""
    wanted = {f"t|{d.target}|{dataset}|{key}": key for key, ds in found.items() for d in ds if d.state == "rejected"}
    q = s.quarantine.c
    for chunk in chunks(sorted(wanted)):
        for qkey, reasons in await conn.execute(select(q.qkey, q.reasons).where(q.qkey.in_(list(chunk)))):
            target = qkey.split("|")[1]
            for r in orjson.loads(reasons):
                for d in found[wanted[qkey]]:
                    if d.target == target and d.state == "rejected" and r.get("version") in (None, d.version):
                        d.reason = f"{r.get('code') or ''} {r.get('message') or ''}".strip()


async def attach(conn: AsyncConnection, page: Sequence[Change], targets: Sequence[str]) -> None:
    by_dataset: dict[str, list[Change]] = {}
    for ch in page:
        by_dataset.setdefault(ch.dataset, []).append(ch)
    for dataset, items in by_dataset.items():
        sent = await deliveries(conn, dataset, [ch.record_key for ch in items], targets)
        for ch in items:
            ch.deliveries = [d for d in sent.get(ch.record_key, []) if d.version == ch.version]
