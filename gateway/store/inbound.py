"""The inbound half of the store: nonces, accepted batches and our receipts, in one transaction with the intake.

A pushed batch is accepted in one transaction: its nonce is recorded (a nonce already there is a replay), its
batch id looked up (a retry with the same records gets the stored answer; different records are a conflict),
then the records go through the same intake as any source's, and the batch is stored with our signed answer.
A refusal rolls everything back, so nothing of a refused batch is stored, not even its nonce.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import and_, delete, func, select

from gateway.adapter import SnapshotPage
from gateway.domain.lists import ListState, SnapshotMark
from gateway.errors import GatewayError
from gateway.records import LedgerEntry
from gateway.store import schema as s
from gateway.store.database import Database, Repository
from gateway.store.inbound_lists import list_cursor, receipt_of, snapshot_of, snapshot_problem
from gateway.store.intake import IntakeLedger, IntakeResult
from gateway.stored import Reject, pack_body, unpack_body

# Given the ledger entries that made a new version, returns our answer (with the signed receipt).
AnswerMaker = Callable[[Sequence[tuple[LedgerEntry, int]]], Awaitable[dict[str, Any]]]


class InboundConflict(GatewayError):
    """A batch id that was accepted before came again with different records."""


@dataclass(frozen=True)
class Arrival:
    """A verified batch, mapped and ready for the intake."""

    channel: str
    source: str
    batch_id: str
    dataset: str
    nonce: str
    signer: str
    content_sha256: str
    body: bytes  # as received
    body_sha256: str
    accepted: Sequence[LedgerEntry]
    rejects: Sequence[Reject]
    rows: int
    snapshot: SnapshotMark | None = None  # a page of a full snapshot (gateway.store.inbound_lists)
    list_state: ListState | None = None  # what the sender says the credit list is after this batch

    def snapshot_page(self) -> SnapshotPage | None:
        mark = self.snapshot
        return None if mark is None else SnapshotPage(self.dataset, mark.scope, mark.snapshot_id, mark.last)


@dataclass(frozen=True)
class Accepted:
    """What became of an arrival: ``replay`` (nonce seen: nothing done), ``repeat`` (the stored answer of an
    earlier delivery of the same batch), or ``new`` (taken in now)."""

    kind: str
    answer: dict[str, Any] | None = None
    intake: IntakeResult | None = None


class InboundLog(Repository):
    """Nonces, inbound batches and their receipts; the reads behind ``credit-gateway inbound``."""

    def __init__(self, db: Database, intake: IntakeLedger) -> None:
        super().__init__(db)
        self.intake = intake

    async def accept_inbound(self, arrival: Arrival, routes: Mapping[str, Sequence[str]], now: float,
                             retention_s: float, make_answer: AnswerMaker) -> Accepted:
        """One transaction: nonce, idempotency, intake, our answer; :class:`InboundConflict` rolls it back."""
        async with self.tx() as conn:
            n = s.inbound_nonces.c
            await conn.execute(delete(s.inbound_nonces).where(n.seen_at < now - retention_s))
            stmt = self._insert(s.inbound_nonces).values(channel=arrival.channel, nonce=arrival.nonce,
                                                          batch_id=arrival.batch_id, seen_at=now)
            inserted = (await conn.execute(stmt.on_conflict_do_nothing().returning(n.nonce))).first()
            if inserted is None:
                return Accepted("replay")
            stored = await self._inbound_row(conn, arrival.channel, arrival.batch_id)
            if stored is not None:
                if stored["content_sha256"] != arrival.content_sha256:
                    raise InboundConflict(f"batch {arrival.batch_id} was accepted before with different records")
                return Accepted("repeat", orjson.loads(stored["answer"]))
            cursor, problem = await list_cursor(conn, arrival.source, {"batchId": arrival.batch_id, "at": now},
                                                arrival.list_state, arrival.snapshot)
            if problem is None and arrival.snapshot is not None:
                problem = await snapshot_problem(conn, arrival.channel, arrival.batch_id, arrival.snapshot, now)
            if problem is not None:
                raise InboundConflict(problem)
            result, changed = await self.intake.intake_in(conn, arrival.source, arrival.accepted, arrival.rejects,
                                                          cursor,
                                                   routes, arrival.rows, arrival.snapshot_page())
            answer = await make_answer(changed)
            await conn.execute(s.inbound_batches.insert().values(
                channel=arrival.channel, batch_id=arrival.batch_id, dataset=arrival.dataset, signer=arrival.signer,
                content_sha256=arrival.content_sha256, body_sha256=arrival.body_sha256,
                body=pack_body(arrival.body), received_at=now, records=arrival.rows, accepted=result.accepted,
                unchanged=result.unchanged, rejected=result.quarantined, answer=orjson.dumps(answer).decode()))
        return Accepted("new", answer, result)

    async def _inbound_row(self, conn: Any, channel: str, batch_id: str) -> dict[str, Any] | None:
        b = s.inbound_batches.c
        row = (await conn.execute(select(s.inbound_batches).where(
            and_(b.channel == channel, b.batch_id == batch_id)))).first()
        return {str(k): v for k, v in row._mapping.items()} if row is not None else None

    async def list_inbound(self, channel: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """Inbound batches, newest first (without bodies and answers)."""
        b = s.inbound_batches.c
        stmt = select(b.channel, b.batch_id, b.dataset, b.signer, b.received_at, b.records, b.accepted, b.unchanged,
                      b.rejected, b.content_sha256).order_by(b.received_at.desc(), b.id.desc()).limit(limit)
        if channel:
            stmt = stmt.where(b.channel == channel)
        async with self.engine.connect() as conn:
            return [{str(k): v for k, v in row._mapping.items()} for row in await conn.execute(stmt)]

    async def show_inbound(self, channel: str, batch_id: str) -> dict[str, Any] | None:
        """One inbound batch: our answer (parsed) and the body as received."""
        async with self.engine.connect() as conn:
            row = await self._inbound_row(conn, channel, batch_id)
        if row is None:
            return None
        row["answer"] = orjson.loads(row["answer"])
        row["body"] = unpack_body(row["body"])
        return row

    async def nonce_count(self) -> int:
        """Nonces held (for tests and status)."""
        async with self.engine.connect() as conn:
            return int((await conn.execute(select(func.count()).select_from(s.inbound_nonces))).scalar() or 0)

    async def prune_nonces(self, retention_s: float, now: float | None = None) -> int:
        """Forget nonces older than the retention period; returns how many went."""
        cutoff = (time.time() if now is None else now) - retention_s
        async with self.tx() as conn:
            result = await conn.execute(delete(s.inbound_nonces).where(s.inbound_nonces.c.seen_at < cutoff))
        return int(result.rowcount or 0)

    async def batches(self, channel: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """Received batches, newest first: channel, batch id, signer, counts, our receipt id, snapshot page."""
        b, p = s.inbound_batches.c, s.inbound_snapshot_pages.c
        stmt = (select(b.channel, b.batch_id, b.dataset, b.signer, b.received_at, b.records, b.accepted, b.unchanged,
                       b.rejected, b.answer, p.scope, p.snapshot_id, p.page, p.last)
                .outerjoin(s.inbound_snapshot_pages, and_(p.channel == b.channel, p.batch_id == b.batch_id))
                .order_by(b.received_at.desc(), b.id.desc()).limit(limit))
        if channel:
            stmt = stmt.where(b.channel == channel)
        async with self.engine.connect() as conn:
            rows = [dict(row._mapping) for row in await conn.execute(stmt)]
        out = []
        for row in rows:
            answer = str(row.pop("answer"))
            snapshot = snapshot_of(*(row.pop(k) for k in ("scope", "snapshot_id", "page", "last")))
            out.append({str(k): v for k, v in row.items()} | receipt_of(answer) | {"snapshot": snapshot})
        return out

    async def batch_snapshot(self, channel: str, batch_id: str) -> dict[str, Any] | None:
        """The snapshot page a received batch was (scope, id, page, last), or None."""
        p = s.inbound_snapshot_pages.c
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(p.scope, p.snapshot_id, p.page, p.last).where(and_(
                p.channel == channel, p.batch_id == batch_id)))).first()
        return snapshot_of(*row) if row is not None else None

    async def channels_of(self, batch_id: str) -> list[str]:
        """The channels that received a batch with this id (a batch id is unique per channel)."""
        b = s.inbound_batches.c
        async with self.engine.connect() as conn:
            return [row[0] for row in await conn.execute(
                select(b.channel).where(b.batch_id == batch_id).order_by(b.channel))]

    async def answer_text(self, channel: str, batch_id: str) -> str | None:
        """Our answer to a batch exactly as stored (the evidence file keeps these bytes)."""
        b = s.inbound_batches.c
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(b.answer).where(and_(b.channel == channel,
                                                                  b.batch_id == batch_id)))).first()
        return str(row[0]) if row is not None else None
