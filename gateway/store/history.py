"""A record's history, the changes and their confirmations, the sanction loop's rows, and where source rows went.

Read-only: what ``records show``/``records changes``, ``sanctions`` and the demo ask of the ledger. The row
types live beside their queries' helpers (gateway.store.confirmations, .sources) and, for the sanction loop,
in gateway.domain.sanctions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from sqlalchemy import and_, select

from gateway.domain.sanctions import CASES, FEEDBACK, Delivery, LedgerCase, LedgerFeedback, SanctionRows
from gateway.store import schema as s
from gateway.store.changes import known_targets
from gateway.store.confirmations import PAGE, Change, attach, deliveries
from gateway.store.database import Repository, plain
from gateway.store.sources import SourceRecord


class History(Repository):
    """What became of records and source rows, read from the ledger, the change log and the outbox."""

    async def record_history(self, dataset: str, key: str,
                             targets: Sequence[str]) -> dict[str, Any] | None:
        """A record's ledger state, its changes, its publicity period and every delivery of every version."""
        r, c, p = s.records.c, s.changes.c, s.publicity.c
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(r.version, r.operation, r.payload, r.first_seen_at, r.updated_at).where(
                and_(r.dataset == dataset, r.record_key == key)))).first()
            if row is None:
                return None
            known = sorted(set(targets) | set(await known_targets(conn)))
            changes = [plain(m) for m in await conn.execute(
                select(c.version, c.operation, c.reason, c.origin, c.at)
                .where(and_(c.dataset == dataset, c.record_key == key)).order_by(c.id))]
            period = (await conn.execute(select(s.publicity).where(
                and_(p.dataset == dataset, p.record_key == key)))).first()
            sent = (await deliveries(conn, dataset, [key], known)).get(key, [])
        return {"dataset": dataset, "record_key": key, "version": row[0], "operation": row[1],
                "payload": orjson.loads(row[2]), "first_seen_at": row[3], "updated_at": row[4], "changes": changes,
                "publicity": plain(period) if period else None, "deliveries": sent}

    async def list_changes(self, targets: Sequence[str], *, operation: str | None = None,
                           dataset: str | None = None, unconfirmed: bool = False, limit: int = 100) -> list[Change]:
        """The newest changes first, each with its deliveries (only unconfirmed ones when asked)."""
        c = s.changes.c
        out: list[Change] = []
        before: int | None = None
        async with self.engine.connect() as conn:
            known = sorted(set(targets) | set(await known_targets(conn)))
            while len(out) < limit:
                stmt = select(s.changes).order_by(c.id.desc()).limit(PAGE)
                for cond in ((c.operation == operation) if operation else None,
                             (c.dataset == dataset) if dataset else None,
                             (c.id < before) if before is not None else None):
                    stmt = stmt.where(cond) if cond is not None else stmt
                page = [Change(**plain(m)) for m in await conn.execute(stmt)]
                if not page:
                    break
                await attach(conn, page, known)
                out += [ch for ch in page if ch.unconfirmed or not unconfirmed]
                before = page[-1].id
        return out[:limit]

    async def sanction_rows(self) -> SanctionRows:
        """Every sanction case and feedback record in the ledger, and every outbox row of them."""
        r, o, rc = s.records.c, s.outbox.c, s.receipts.c
        async with self.engine.connect() as conn:
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

    async def source_records(self, dataset: str, source: str, *, operation: str | None = None,
                             version: int | None = None, limit: int = 100) -> list[SourceRecord]:
        """The first ``limit`` ledger records of a dataset from one source (oldest first), optionally only those at
        one operation and version."""
        r = s.records.c
        conds = [r.dataset == dataset, r.source == source]
        if operation is not None:
            conds.append(r.operation == operation)
        if version is not None:
            conds.append(r.version == version)
        stmt = select(r.record_key, r.source_key, r.version,
                      r.operation).where(and_(*conds)).order_by(r.id).limit(limit)
        async with self.engine.connect() as conn:
            return [SourceRecord(*row) for row in await conn.execute(stmt)]
