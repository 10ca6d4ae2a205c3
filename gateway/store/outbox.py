"""The delivery half of the store: leasing outbox rows into batches, and recording what peers said.

Rows are read (:meth:`DeliveryMixin.read_candidates`), encoded without the write lock (in the daemon or a
worker process), then leased (:meth:`DeliveryMixin.lease_encoded`) in one transaction that takes them only if
each is still pending and its key has no batch in flight; otherwise nothing is written (:class:`LeaseLost`).

Per-key order holds because (1) a new version supersedes the key's still-pending row for a target at
intake, so at most one row per key and target is pending, and (2) a pending row is only leased while no
other row of its key is leased for that target. Batches keep their body and id (the idempotency key)
across retries, so a retried batch is byte-for-byte the batch the peer may already have applied.
"""

from __future__ import annotations

import contextlib
import inspect
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import LargeBinary, and_, cast, exists, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.adapter import RecordResult
from gateway.store import schema as s
from gateway.store.database import Repository, chunks, dumps
from gateway.stored import Candidate, LeasedRecord, body_digest, pack_body, unpack_body

ACK_STATUSES = frozenset({"accepted", "duplicate", "stale"})


@dataclass(frozen=True, slots=True)
class Candidates:
    """Rows read for leasing: those to encode (the payload as stored), stale rows to supersede, the last
    outbox id read."""

    rows: list[Candidate]
    stale: list[int]
    last_id: int

    @property
    def records(self) -> list[LeasedRecord]:
        return [LeasedRecord(i, key, version, op, orjson.loads(stored)) for i, key, version, op, stored in self.rows]


class LeaseLost(Exception):
    """Another sender leased some of the rows (or a newer version superseded one) since they were read."""


LEASE_TRIES = 3


def _key_leased(o: Any) -> Any:
    """A row of the same record is leased for the same target (per-key order: one batch at a time per key)."""
    busy = s.outbox.alias("busy")
    return exists().where(and_(busy.c.record_id == o.record_id, busy.c.target == o.target, busy.c.state == "leased"))


@dataclass(frozen=True, slots=True)
class Batch:
    id: str
    target: str
    dataset: str
    body: bytes
    body_sha256: str
    record_count: int
    attempts: int
    created_at: float


Outcome = RecordResult  # what the peer said about one record of a batch (key, version, status, code, message)


@dataclass(frozen=True)
class EncodedBatch:
    """What the delivery side built from leased records: the body, and records it could not encode."""

    batch_id: str
    body: bytes
    included: Sequence[LeasedRecord]
    failed: Sequence[tuple[LeasedRecord, str]] = field(default_factory=list)
    stored: tuple[bytes, str] | None = None  # pack_body(body), body_digest(body) if the encoder made them
    withheld: Sequence[int] = ()  # outbox ids not sent: the record's publicity ended (gateway.pipeline.encode.ended)


Encoder = Callable[[Sequence[LeasedRecord]], EncodedBatch | Awaitable[EncodedBatch]]


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    delivered: int
    rejected: int
    requeued: int


class Outbox(Repository):
    """Leasing and completing batches."""

    async def lease_batch(self, target: str, dataset: str, limit: int, encode: Encoder, *, claimant: str = "",
                          claim_s: float = 0.0) -> Batch | None:
        """Lease up to ``limit`` pending rows of one target and dataset into a new open batch: the rows are read,
        encoded (``encode`` may be a coroutine function: it runs without the write lock), then leased.

        The batch is claimed by ``claimant`` for ``claim_s`` seconds: no other sender takes it meanwhile.
        None when nothing is pending, or when another sender leased some of the rows first.
        """
        for _ in range(LEASE_TRIES - 1):
            with contextlib.suppress(LeaseLost):  # read again: the rows another sender took are leased now
                return await self._lease_once(target, dataset, limit, encode, claimant, claim_s)
        return await self._lease_once(target, dataset, limit, encode, claimant, claim_s)

    async def _lease_once(self, target: str, dataset: str, limit: int, encode: Encoder, claimant: str,
                          claim_s: float) -> Batch | None:
        found = await self.read_candidates(target, dataset, limit)
        encoded = None
        if found.rows:
            result = encode(found.records)
            encoded = await result if inspect.isawaitable(result) else result
        return await self.lease_encoded(target, dataset, found, encoded, claimant=claimant, claim_s=claim_s)

    async def read_candidates(self, target: str, dataset: str, limit: int, after: int = 0) -> Candidates:
        """The next pending rows of a target and dataset (outbox id above ``after``, oldest first) that may be
        leased: none of their key is leased for the target. Nothing is locked: :meth:`lease_encoded` leases
        only rows that are still pending then."""
        o, r = s.outbox.c, s.records.c
        # the payload as the UTF-8 bytes it is stored as: no text object is made for it in this process
        stored = (func.convert_to(r.payload, "UTF8") if self.dialect == "postgresql"
                  else cast(r.payload, LargeBinary))
        stmt = (select(o.id, o.record_key, o.version, r.operation, stored, r.version)
                .join(s.records, r.id == o.record_id)
                .where(and_(o.target == target, o.dataset == dataset, o.state == "pending", o.id > after,
                            ~_key_leased(o)))
                .order_by(o.id).limit(limit))
        async with self.engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        # a ledger that moved on under a pending row: its newer version has a row of its own
        stale = [row[0] for row in rows if row[5] != row[2]]
        live = [(row[0], row[1], row[2], row[3], row[4]) for row in rows if row[5] == row[2]]
        return Candidates(live, stale, rows[-1][0] if rows else after)

    async def lease_encoded(self, target: str, dataset: str, found: Candidates, encoded: EncodedBatch | None, *,
                            claimant: str = "", claim_s: float = 0.0) -> Batch | None:
        """One transaction: stale rows superseded, unencodable ones quarantined, the rest leased into a new open
        batch with its body. Rows another sender leased (or a new version superseded) since they were read
        make it lease nothing and raise :class:`LeaseLost`: the next read finds what is left."""
        now = time.time()
        async with self.tx() as conn:
            if found.stale:
                await self._set_state(conn, found.stale, "superseded", now, only_pending=True)
            if encoded is None:
                return None
            if encoded.failed:
                await self._reject_unencodable(conn, target, dataset, encoded.failed, now)
            if encoded.withheld:
                await self._set_state(conn, encoded.withheld, "withheld", now, only_pending=True)
                await conn.execute(s.events.insert().values(
                    at=now, kind="publicity.withheld", target=target, dataset=dataset, record_key="",
                    detail=dumps({"records": len(encoded.withheld), "batch": encoded.batch_id})))
            if not encoded.included:
                return None
            return await self._open_batch(conn, target, dataset, encoded, now, claimant, claim_s)

    async def _open_batch(self, conn: AsyncConnection, target: str, dataset: str, encoded: EncodedBatch,
                          now: float, claimant: str, claim_s: float) -> Batch:
        packed, digest = encoded.stored or (pack_body(encoded.body), body_digest(encoded.body))
        await conn.execute(s.batches.insert().values(
            id=encoded.batch_id, target=target, dataset=dataset, state="open", record_count=len(encoded.included),
            body=packed, body_sha256=digest, attempts=0, next_attempt_at=now + claim_s,
            claimed_by=claimant or None, created_at=now))
        o = s.outbox.c
        leased = 0
        for chunk in chunks([rec.outbox_id for rec in encoded.included]):
            result = await conn.execute(update(s.outbox).where(and_(
                o.id.in_(chunk), o.state == "pending", ~_key_leased(o))).values(
                state="leased", batch_id=encoded.batch_id, updated_at=now))
            leased += int(result.rowcount or 0)
        if leased != len(encoded.included):
            raise LeaseLost(encoded.batch_id)  # rolls the batch back: its body names rows it does not hold
        return Batch(encoded.batch_id, target, dataset, encoded.body, digest, len(encoded.included), 0, now)

    async def _reject_unencodable(self, conn: AsyncConnection, target: str, dataset: str,
                                  failed: Sequence[tuple[LeasedRecord, str]], now: float) -> None:
        await self._set_state(conn, [rec.outbox_id for rec, _ in failed], "rejected", now, only_pending=True)
        await self.db.upsert_quarantine(conn, [_target_reject(target, dataset, rec, "encode", reason, now)
                                            for rec, reason in failed])

    async def due_batches(self, target: str, limit: int, now: float | None = None,
                          exclude: Sequence[str] = ()) -> list[Batch]:
        """Open batches of a target whose next attempt is due (oldest first), except those in ``exclude``."""
        b = s.batches.c
        cond = and_(b.target == target, b.state == "open", b.next_attempt_at <= (now or time.time()))
        if exclude:
            cond = and_(cond, b.id.notin_(list(exclude)))
        async with self.engine.connect() as conn:
            return await _load_batches(conn, cond, limit)

    async def claim_due(self, target: str, limit: int, claimant: str, claim_s: float) -> list[Batch]:
        """Take open batches whose next attempt is due: each is claimed for ``claim_s`` by one sender only."""
        b = s.batches.c
        now = time.time()
        stmt = (select(b.id).where(and_(b.target == target, b.state == "open", b.next_attempt_at <= now))
                .order_by(b.created_at).limit(limit))
        if self.dialect == "postgresql":
            stmt = stmt.with_for_update(skip_locked=True)
        async with self.tx() as conn:
            ids = [row[0] for row in await conn.execute(stmt)]
            if not ids:
                return []
            await conn.execute(update(s.batches).where(b.id.in_(ids)).values(
                next_attempt_at=now + claim_s, claimed_by=claimant))
            return await _load_batches(conn, b.id.in_(ids), len(ids))

    async def release_claims(self, instance: str) -> int:
        """At start-up: batches an earlier run of this instance had claimed are due again now."""
        b = s.batches.c
        async with self.tx() as conn:
            result = await conn.execute(update(s.batches).where(and_(
                b.state == "open", b.claimed_by.startswith(instance + ":", autoescape=True)))
                .values(next_attempt_at=time.time()))  # autoescape: "_" and "%" in a name are not wildcards
        return int(result.rowcount or 0)

    async def next_due_at(self, target: str) -> float | None:
        b = s.batches.c
        async with self.engine.connect() as conn:
            value = (await conn.execute(select(func.min(b.next_attempt_at)).where(
                and_(b.target == target, b.state == "open")))).scalar()
        return float(value) if value is not None else None

    async def complete_batch(self, batch: Batch, outcomes: Sequence[Outcome], receipt: dict[str, Any],
                             receipt_id: str, duration_ms: float) -> DeliveryResult:
        """Record the peer's answer: acknowledged rows delivered, rejected rows quarantined, receipt kept."""
        now = time.time()
        async with self.tx() as conn:
            if not await self._still_open(conn, batch.id):
                return DeliveryResult(0, 0, 0)  # another sender recorded this batch's answer first
            rows = await self._batch_rows(conn, batch.id)
            result = await self._apply_outcomes(conn, batch, rows, outcomes, now)
            await conn.execute(update(s.batches).where(s.batches.c.id == batch.id).values(
                state="done", completed_at=now, attempts=s.batches.c.attempts + 1, last_error=None))
            await conn.execute(s.receipts.insert().values(
                batch_id=batch.id, target=batch.target, receipt_id=receipt_id, received_at=now,
                accepted=result.delivered, rejected=result.rejected, body=dumps(receipt)))
            await conn.execute(s.attempts.insert().values(
                batch_id=batch.id, at=now, outcome="ok", duration_ms=duration_ms,
                detail=f"delivered {result.delivered}, rejected {result.rejected}, requeued {result.requeued}"))
        return result

    async def _still_open(self, conn: AsyncConnection, batch_id: str) -> bool:
        stmt = select(s.batches.c.state).where(s.batches.c.id == batch_id)
        if self.dialect == "postgresql":
            stmt = stmt.with_for_update()
        return (await conn.execute(stmt)).scalar() == "open"

    async def _batch_rows(self, conn: AsyncConnection, batch_id: str) -> dict[tuple[str, int], int]:
        """The rows a batch still holds: (key, version) → outbox id."""
        o = s.outbox.c
        rows = await conn.execute(select(o.record_key, o.version, o.id).where(
            and_(o.batch_id == batch_id, o.state == "leased")))
        return {(key, version): outbox_id for key, version, outbox_id in rows}

    async def _payloads(self, conn: AsyncConnection, dataset: str, keys: Sequence[str]) -> dict[str, Any]:
        """Canonical payloads of some keys (only needed for the few records a peer rejects)."""
        r = s.records.c
        found: dict[str, Any] = {}
        for chunk in chunks(list(keys)):
            rows = await conn.execute(select(r.record_key, r.payload).where(
                and_(r.dataset == dataset, r.record_key.in_(chunk))))
            found.update({row[0]: orjson.loads(row[1]) for row in rows})
        return found

    async def _apply_outcomes(self, conn: AsyncConnection, batch: Batch, rows: dict[tuple[str, int], int],
                              outcomes: Sequence[Outcome], now: float) -> DeliveryResult:
        acknowledged = 0
        bad: list[tuple[int, Outcome]] = []
        for out in outcomes:
            outbox_id = rows.pop((out.key, out.version), None)
            if outbox_id is None:
                continue
            if out.status in ACK_STATUSES:
                acknowledged += 1
            else:
                bad.append((outbox_id, out))
        o = s.outbox.c
        if bad:
            await self._set_state(conn, [outbox_id for outbox_id, _ in bad], "rejected", now)
            payloads = await self._payloads(conn, batch.dataset, [out.key for _, out in bad])
            await self.db.upsert_quarantine(conn, [_target_reject(
                batch.target, batch.dataset, LeasedRecord(outbox_id, out.key, out.version, "",
                                                          payloads.get(out.key, {})),
                out.code, out.message, now) for outbox_id, out in bad])
        if rows:  # the peer said nothing about these: send them again in a later batch
            await self._set_state(conn, list(rows.values()), "pending", now, batch_id=None)
        if acknowledged:  # everything still leased in this batch now is acknowledged
            await conn.execute(update(s.outbox).where(and_(o.batch_id == batch.id, o.state == "leased"))
                               .values(state="delivered", updated_at=now))
        return DeliveryResult(acknowledged, len(bad), len(rows))

    async def _set_state(self, conn: AsyncConnection, ids: Sequence[int], state: str, now: float,
                         only_pending: bool = False, **extra: Any) -> None:
        o = s.outbox.c
        for chunk in chunks(list(ids)):
            cond = and_(o.id.in_(chunk), o.state == "pending") if only_pending else o.id.in_(chunk)
            await conn.execute(update(s.outbox).where(cond).values(state=state, updated_at=now, **extra))

    async def fail_attempt(self, batch: Batch, error: str, next_attempt_at: float, dead: bool,
                           duration_ms: float) -> None:
        """Record a failed attempt; a dead batch moves its rows to the dead letters."""
        now = time.time()
        async with self.tx() as conn:
            b = s.batches.c
            if not await self._still_open(conn, batch.id):
                return  # answered meanwhile (by another sender): a late failure must not reopen it
            await conn.execute(update(s.batches).where(b.id == batch.id).values(
                state="dead" if dead else "open", attempts=b.attempts + 1, next_attempt_at=next_attempt_at,
                last_error=error[:2000], completed_at=now if dead else None))
            if dead:
                o = s.outbox.c
                await conn.execute(update(s.outbox).where(and_(o.batch_id == batch.id, o.state == "leased"))
                                   .values(state="dead", updated_at=now))
                await conn.execute(s.events.insert().values(
                    at=now, kind="dead_letter", target=batch.target, dataset=batch.dataset,
                    record_key="", detail=dumps({"batch": batch.id, "error": error[:500]})))
            await conn.execute(s.attempts.insert().values(
                batch_id=batch.id, at=now, outcome="dead" if dead else "retry", detail=error[:2000],
                duration_ms=duration_ms))


async def _load_batches(conn: AsyncConnection, cond: Any, limit: int) -> list[Batch]:
    """Batches matching ``cond``, oldest first, with their bodies as sent."""
    b = s.batches.c
    rows = (await conn.execute(
        select(b.id, b.target, b.dataset, b.body, b.body_sha256, b.record_count, b.attempts, b.created_at)
        .where(cond).order_by(b.created_at).limit(limit))).all()
    return [Batch(r[0], r[1], r[2], unpack_body(r[3]), r[4], r[5], r[6], r[7]) for r in rows]


def _target_reject(target: str, dataset: str, rec: LeasedRecord, code: str, message: str,
                   now: float) -> dict[str, Any]:
    return {"qkey": f"t|{target}|{dataset}|{rec.record_key}", "stage": "target", "source": "", "source_key": "",
            "target": target, "dataset": dataset, "record_key": rec.record_key,
            "reasons": dumps([{"field": "", "code": code, "message": message, "version": rec.version}]),
            "raw": dumps(rec.payload), "state": "open", "hits": 1, "created_at": now, "updated_at": now}
