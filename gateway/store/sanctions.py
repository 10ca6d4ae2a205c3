"""What the store knows about the joint-sanction loop: cases, feedback, and their deliveries with receipts.

Read-only queries for :mod:`gateway.domain.sanctions`. Sanction cases number in the thousands, not millions, so
the rows are read whole and grouped in Python; payloads are parsed here, once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import and_, select

from gateway.store import schema as s
from gateway.store.composed import Store

CASES = "sanction_case"
FEEDBACK = "sanction_feedback"


@dataclass(frozen=True, slots=True)
class LedgerCase:
    key: str
    operation: str
    payload: dict[str, Any]
    first_seen_at: float


@dataclass(frozen=True, slots=True)
class LedgerFeedback:
    key: str
    case_id: str
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Delivery:
    """One outbox row of a case or feedback record, with the receipt of its batch when there is one."""

    dataset: str
    key: str
    target: str
    version: int
    state: str  # pending | leased | delivered | rejected | dead | superseded | replayed | withheld
    receipt_id: str | None
    received_at: float | None


@dataclass(frozen=True)
class SanctionRows:
    cases: list[LedgerCase]
    feedback: list[LedgerFeedback]
    deliveries: list[Delivery]


async def sanction_rows(store: Store) -> SanctionRows:
    """Every sanction case and feedback record in the ledger, and every outbox row of them."""
    r, o, rc = s.records.c, s.outbox.c, s.receipts.c
    async with store.engine.connect() as conn:
        ledger = (await conn.execute(select(r.dataset, r.record_key, r.operation, r.payload, r.first_seen_at)
                                     .where(r.dataset.in_([CASES, FEEDBACK])).order_by(r.id))).all()
        rows = (await conn.execute(
            select(o.dataset, o.record_key, o.target, o.version, o.state, rc.receipt_id, rc.received_at)
            .select_from(s.outbox.outerjoin(s.receipts, and_(rc.batch_id == o.batch_id, o.state == "delivered")))
            .where(o.dataset.in_([CASES, FEEDBACK])).order_by(o.id))).all()
    cases, feedback = [], []
    for dataset, key, operation, payload, first_seen in ledger:
        fields = orjson.loads(payload)
        if dataset == CASES:
            cases.append(LedgerCase(key, operation, fields, float(first_seen)))
        else:
            feedback.append(LedgerFeedback(key, str(fields.get("case_id", "")), fields))
    deliveries = [Delivery(*row[:5], row[5], float(row[6]) if row[6] is not None else None) for row in rows]
    return SanctionRows(cases, feedback, deliveries)
