"""The operations half of the store: status, spool and quarantine inspection, retry and replay."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import JSON, and_, case, cast, func, insert, select, text, type_coerce, update
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.store import schema as s
from gateway.store.database import Repository, chunks, dumps
from gateway.stored import unpack_body

OPEN_STATES = ("pending", "leased")
PAGE = 5000  # ledger rows fetched at a time when a report streams the ledger


def _rows(result: Any) -> list[dict[str, Any]]:
    return [{str(k): v for k, v in row._mapping.items()} for row in result]  # plain str keys for JSON


class Reports(Repository):
    """Status, events, heartbeats, timeliness rows, the spool and the quarantine, for operators and reports."""

    # ------------------------------------------------------------ status

    async def target_status(self) -> list[dict[str, Any]]:
        """Per target: backlog, oldest pending age, delivered, rejected, dead letters, withheld (a public target's
        records whose publicity had ended: gateway.pipeline.encode.ended), open and retrying batches, last success."""
        o, b, rc = s.outbox.c, s.batches.c, s.receipts.c
        async with self.engine.connect() as conn:
            backlog = _rows(await conn.execute(select(
                o.target, func.sum(case((o.state.in_(OPEN_STATES), 1), else_=0)).label("backlog"),
                func.sum(case((o.state == "dead", 1), else_=0)).label("dead"),
                func.sum(case((o.state == "delivered", 1), else_=0)).label("delivered"),
                func.sum(case((o.state == "rejected", 1), else_=0)).label("rejected"),
                func.sum(case((o.state == "withheld", 1), else_=0)).label("withheld"),
                func.min(case((o.state.in_(OPEN_STATES), o.enqueued_at), else_=None)).label("oldest"),
            ).group_by(o.target)))
            batches = {r["target"]: r for r in _rows(await conn.execute(select(
                b.target, func.count().label("open_batches"),
                func.sum(case((b.attempts > 0, 1), else_=0)).label("retrying"),
                func.max(b.last_error).label("last_error"),
            ).where(b.state == "open").group_by(b.target)))}
            last = {r["target"]: r["last"] for r in _rows(await conn.execute(
                select(rc.target, func.max(rc.received_at).label("last")).group_by(rc.target)))}
        now = time.time()
        for row in backlog:
            extra = batches.get(row["target"], {})
            row.update(open_batches=extra.get("open_batches", 0), retrying=extra.get("retrying") or 0,
                       last_error=extra.get("last_error"), last_success=last.get(row["target"]),
                       oldest_pending_s=(now - row["oldest"]) if row["oldest"] else None)
            for key in ("backlog", "dead", "delivered", "rejected", "withheld"):
                row[key] = int(row[key] or 0)
        return backlog

    async def has_backlog(self, targets: Sequence[str]) -> bool:
        """Anything pending or in an open batch for these targets (cheap: two indexed look-ups)."""
        o, b = s.outbox.c, s.batches.c
        async with self.engine.connect() as conn:
            for target in targets:
                pending = select(o.id).where(and_(o.target == target, o.state == "pending")).limit(1)
                if (await conn.execute(pending)).first() is not None:
                    return True
                open_batch = select(b.id).where(and_(b.target == target, b.state == "open")).limit(1)
                if (await conn.execute(open_batch)).first() is not None:
                    return True
        return False

    async def counts(self) -> dict[str, Any]:
        """Ledger size per dataset and open quarantine per stage."""
        r, q = s.records.c, s.quarantine.c
        async with self.engine.connect() as conn:
            ledger = {row[0]: row[1] for row in await conn.execute(
                select(r.dataset, func.count()).group_by(r.dataset))}
            quarantine = {row[0]: row[1] for row in await conn.execute(
                select(q.stage, func.count()).where(q.state == "open").group_by(q.stage))}
            intake = (await conn.execute(select(func.coalesce(func.sum(s.intake.c.rows), 0)))).scalar()
        return {"ledger": ledger, "quarantine": quarantine, "rows_read": int(intake or 0)}

    async def beat(self, instance: str, pid: int, started_at: float, state: dict[str, Any]) -> None:
        stmt = self._insert(s.heartbeats).values(instance=instance, pid=pid, started_at=started_at,
                                                 beat_at=time.time(), state=dumps(state))
        async with self.tx() as conn:
            await conn.execute(stmt.on_conflict_do_update(index_elements=["instance"], set_={
                "pid": pid, "started_at": started_at, "beat_at": stmt.excluded.beat_at, "state": stmt.excluded.state}))

    async def source_counts(self) -> dict[str, dict[str, int]]:
        """Per source: rows read and rows quarantined at intake, over the store's whole history (/metrics)."""
        i = s.intake.c
        async with self.engine.connect() as conn:
            rows = await conn.execute(select(i.source, func.sum(i.rows), func.sum(i.quarantined)).group_by(i.source))
            return {row[0]: {"read": int(row[1] or 0), "quarantined": int(row[2] or 0)} for row in rows}

    async def quarantine_reasons(self) -> list[dict[str, Any]]:
        """Quarantine entries per (source, stage, state, reason): a reason is its code, else the field it names."""
        q = s.quarantine.c
        counts: dict[tuple[str, str, str, str], int] = {}
        async with self.engine.connect() as conn:
            result = await conn.stream(select(q.source, q.stage, q.state, q.reasons))
            async for source, stage, state, reasons in result:
                for reason in {_reason_label(r) for r in orjson.loads(reasons) or [{}]}:
                    key = (source, stage, state, reason)
                    counts[key] = counts.get(key, 0) + 1
        return [{"source": k[0], "stage": k[1], "state": k[2], "reason": k[3], "entries": n}
                for k, n in sorted(counts.items())]

    async def failed_attempts(self) -> dict[str, int]:
        """Per target: delivery attempts that failed (retried or given up), over the store's history."""
        a, b = s.attempts.c, s.batches.c
        async with self.engine.connect() as conn:
            rows = await conn.execute(select(b.target, func.count()).select_from(
                s.attempts.join(s.batches, a.batch_id == b.id)).where(a.outcome != "ok").group_by(b.target))
            return {row[0]: int(row[1]) for row in rows}

    async def size_bytes(self) -> int:
        """The store's size on disk: the SQLite file and its WAL, or the PostgreSQL database."""
        if self.dialect == "postgresql":
            async with self.engine.connect() as conn:
                return int((await conn.execute(text("SELECT pg_database_size(current_database())"))).scalar() or 0)
        database = self.engine.url.database or ""
        files = [Path(database + suffix) for suffix in ("", "-wal")] if database and database != ":memory:" else []
        return sum(f.stat().st_size for f in files if f.exists())

    async def probe_write(self) -> None:
        """Write a row and roll it back: raises when the store cannot be written (read-only, locked, disk gone)."""
        async with self.engine.connect() as conn:
            conn = await conn.execution_options(cg_write=True)
            trans = await conn.begin()
            try:
                await conn.execute(insert(s.heartbeats).values(instance="(health probe)", pid=0, started_at=0.0,
                                                               beat_at=0.0, state="{}"))
            finally:
                await trans.rollback()

    async def heartbeats(self) -> list[dict[str, Any]]:
        async with self.engine.connect() as conn:
            rows = _rows(await conn.execute(select(s.heartbeats)))
        for row in rows:
            row["state"] = orjson.loads(row["state"])
        return rows

    async def events(self, limit: int = 50, kind: str | None = None) -> list[dict[str, Any]]:
        e = s.events.c
        stmt = select(s.events).order_by(e.id.desc()).limit(limit)
        if kind:
            stmt = stmt.where(e.kind.like(f"{kind}%"))
        async with self.engine.connect() as conn:
            return _rows(await conn.execute(stmt))

    # ------------------------------------------------------------ timeliness

    async def timeliness_rows(self, deadline: Callable[[str | None], float | None],
                              datasets: Sequence[str] | None = None,
                              target: str | None = None) -> list[tuple[Any, ...]]:
        """Per department and decision date: (dataset, authority, decision_date, records, delivered, in time).

        A record is delivered once a receipt acknowledged a version of it (to any target, or to ``target``),
        in time when its first receipt is earlier than ``deadline(decision_date)`` (epoch seconds; None: not
        known), asked once per distinct date. ``authority`` is the payload's deciding body. The ledger is
        streamed a page at a time and counted here: memory holds the groups, not the records (a GROUP BY
        would make SQLite sort every record in memory, as the store keeps temp_store=MEMORY).
        """
        groups: dict[tuple[Any, Any, Any], list[int]] = {}
        deadlines: dict[str | None, float | None] = {}
        async with self.engine.connect() as conn:
            stmt = await self._timeliness_select(conn, datasets, target)
            result = await conn.stream(stmt.execution_options(yield_per=PAGE))
            async for page in result.partitions():
                for dataset, authority, decision, first_at, _key in page:
                    counts = groups.setdefault((dataset, authority, decision), [0, 0, 0])
                    counts[0] += 1
                    if first_at is None:
                        continue
                    if decision not in deadlines:
                        deadlines[decision] = deadline(decision)
                    counts[1] += 1
                    if (due_at := deadlines[decision]) is not None and first_at < due_at:
                        counts[2] += 1
        return [(*key, *counts) for key, counts in groups.items()]

    async def timeliness_keys(self, dates: Sequence[str], datasets: Sequence[str] | None = None,
                              target: str | None = None) -> list[tuple[Any, ...]]:
        """The records decided on ``dates``: (dataset, authority, decision_date, first receipt or None, key)."""
        found: list[tuple[Any, ...]] = []
        async with self.engine.connect() as conn:
            stmt = await self._timeliness_select(conn, datasets, target)
            for chunk in chunks(list(dates)):
                found += [tuple(row) for row in await conn.execute(stmt.where(s.records.c.decision_date.in_(chunk)))]
        return found

    async def _timeliness_select(self, conn: AsyncConnection, datasets: Sequence[str] | None,
                                 target: str | None) -> Any:
        """Each record with its authority and the time of its first receipt (an indexed look-up per record)."""
        o, rc, r = s.outbox.c, s.receipts.c, s.records.c
        targets = [target] if target else list((await conn.execute(select(rc.target).distinct())).scalars())
        first = (select(func.min(rc.received_at)).select_from(s.outbox).join(s.receipts, rc.batch_id == o.batch_id)
                 .where(and_(o.record_id == r.id, o.target.in_(targets), o.state == "delivered"))
                 .scalar_subquery())
        payload = type_coerce(r.payload, JSON) if self.dialect == "sqlite" else cast(r.payload, JSON)
        stmt = select(r.dataset, payload["authority"].as_string(), r.decision_date, first, r.record_key)
        return stmt.where(r.dataset.in_(list(datasets))) if datasets is not None else stmt

    # ------------------------------------------------------------ spool

    async def list_batches(self, target: str | None = None, state: str | None = None,
                           limit: int = 50) -> list[dict[str, Any]]:
        b = s.batches.c
        stmt = select(b.id, b.target, b.dataset, b.state, b.record_count, b.attempts, b.next_attempt_at,
                      b.last_error, b.created_at, b.completed_at).order_by(b.created_at.desc()).limit(limit)
        if target:
            stmt = stmt.where(b.target == target)
        if state:
            stmt = stmt.where(b.state == state)
        async with self.engine.connect() as conn:
            return _rows(await conn.execute(stmt))

    async def show_batch(self, batch_id: str) -> dict[str, Any] | None:
        """A batch with its attempts, receipt, records and body."""
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(s.batches).where(s.batches.c.id == batch_id))).first()
            if row is None:
                return None
            batch = dict(row._mapping)
            batch["body_bytes"] = unpack_body(batch["body"])
            try:
                batch["body"] = batch["body_bytes"].decode()
            except UnicodeDecodeError:  # a sealed envelope (DER): not text
                batch["body"] = f"<{len(batch['body_bytes'])} bytes, sealed>"
            batch["attempt_log"] = _rows(await conn.execute(
                select(s.attempts).where(s.attempts.c.batch_id == batch_id).order_by(s.attempts.c.id)))
            receipt = (await conn.execute(select(s.receipts).where(s.receipts.c.batch_id == batch_id))).first()
            batch["receipt"] = dict(receipt._mapping) if receipt else None
            batch["records"] = _rows(await conn.execute(
                select(s.outbox.c.record_key, s.outbox.c.version, s.outbox.c.state)
                .where(s.outbox.c.batch_id == batch_id).order_by(s.outbox.c.id)))
        return batch

    async def retry_now(self, batch_id: str | None = None, target: str | None = None) -> int:
        """Make open batches due now (the daemon picks them up within a second)."""
        b = s.batches.c
        cond = b.state == "open"
        cond = and_(cond, b.id == batch_id) if batch_id else cond
        cond = and_(cond, b.target == target) if target else cond
        async with self.tx() as conn:
            result = await conn.execute(update(s.batches).where(cond).values(next_attempt_at=time.time()))
        return int(result.rowcount or 0)

    async def replay_dead(self, batch_id: str | None = None, target: str | None = None) -> int:
        """Queue the current version of every dead-lettered key again; returns how many were queued."""
        o, b = s.outbox.c, s.batches.c
        cond = o.state == "dead"
        cond = and_(cond, o.batch_id == batch_id) if batch_id else cond
        cond = and_(cond, o.target == target) if target else cond
        now = time.time()
        async with self.tx() as conn:
            dead = (await conn.execute(select(o.id, o.target, o.dataset, o.record_key, o.batch_id)
                                       .where(cond))).all()
            queued = 0
            for tgt, ds, key in sorted({(row[1], row[2], row[3]) for row in dead}):
                queued += await self._requeue_key(conn, tgt, ds, key, now)
            for chunk in chunks([row[0] for row in dead]):
                await conn.execute(update(s.outbox).where(o.id.in_(chunk)).values(state="replayed", updated_at=now))
            for chunk in chunks(sorted({row[4] for row in dead if row[4]})):
                await conn.execute(update(s.batches).where(and_(b.id.in_(chunk), b.state == "dead"))
                                   .values(state="replayed"))
        return queued

    async def _requeue_key(self, conn: AsyncConnection, target: str, dataset: str, key: str, now: float) -> int:
        """Queue the ledger's current version of a key for a target unless it is queued or delivered."""
        o, r = s.outbox.c, s.records.c
        found = (await conn.execute(select(r.id, r.version).where(
            and_(r.dataset == dataset, r.record_key == key)))).first()
        if found is None:
            return 0
        record_id, current = found
        busy = (await conn.execute(select(func.count()).where(and_(
            o.record_id == record_id, o.target == target, o.version >= current,
            o.state.in_(("pending", "leased", "delivered")))))).scalar()
        if busy:
            return 0
        await conn.execute(s.outbox.insert().values(
            target=target, dataset=dataset, record_key=key, record_id=record_id, version=current, state="pending",
            enqueued_at=now, updated_at=now))
        return 1

    # ------------------------------------------------------------ quarantine

    async def list_quarantine(self, state: str | None = "open", stage: str | None = None,
                              limit: int = 100, ids: Sequence[int] = ()) -> list[dict[str, Any]]:
        q = s.quarantine.c
        stmt = select(s.quarantine).order_by(q.id).limit(limit)
        if state:
            stmt = stmt.where(q.state == state)
        if stage:
            stmt = stmt.where(q.stage == stage)
        if ids:
            stmt = stmt.where(q.id.in_(list(ids)))
        async with self.engine.connect() as conn:
            rows = _rows(await conn.execute(stmt))
        for row in rows:
            row["reasons"], row["raw"] = orjson.loads(row["reasons"]), orjson.loads(row["raw"])
        return rows

    async def requeue_rejected(self, entries: Sequence[dict[str, Any]]) -> int:
        """Send the current version of target-rejected records again and resolve their entries."""
        now = time.time()
        queued = 0
        async with self.tx() as conn:
            for e in entries:
                queued += await self._requeue_key(conn, e["target"], e["dataset"], e["record_key"], now)
            await self._resolve(conn, [e["id"] for e in entries], now)
        return queued

    async def resolve_quarantine(self, ids: Sequence[int]) -> None:
        async with self.tx() as conn:
            await self._resolve(conn, ids, time.time())

    async def _resolve(self, conn: AsyncConnection, ids: Sequence[int], now: float) -> None:
        for chunk in chunks(list(ids)):
            await conn.execute(update(s.quarantine).where(s.quarantine.c.id.in_(chunk))
                               .values(state="resolved", updated_at=now))


    # ------------------------------------------------------------ the dashboard and the monthly report

    async def receipts_between(self, since: float, until: float) -> list[dict[str, Any]]:
        """Every receipt stored in [since, until): target, dataset, when, records accepted and rejected."""
        rc, b = s.receipts.c, s.batches.c
        stmt = (select(rc.target, b.dataset, rc.received_at, rc.accepted, rc.rejected)
                .select_from(s.receipts.join(s.batches, b.id == rc.batch_id))
                .where(and_(rc.received_at >= since, rc.received_at < until)).order_by(rc.received_at))
        async with self.engine.connect() as conn:
            return _rows(await conn.execute(stmt))

    async def source_status(self) -> list[dict[str, Any]]:
        """Per source: the last poll that read rows, rows read, accepted and quarantined in all."""
        i = s.intake.c
        stmt = select(i.source, func.max(i.at).label("last_poll"), func.sum(i.rows).label("rows"),
                      func.sum(i.accepted).label("accepted"),
                      func.sum(i.quarantined).label("quarantined")).group_by(i.source).order_by(i.source)
        async with self.engine.connect() as conn:
            rows = _rows(await conn.execute(stmt))
        for row in rows:
            for key in ("rows", "accepted", "quarantined"):
                row[key] = int(row[key] or 0)
        return rows

    async def find_events(self, *, target: str | None = None, dataset: str | None = None, key: str | None = None,
                          since: float | None = None, until: float | None = None,
                          limit: int = 200) -> list[dict[str, Any]]:
        """The sync log (cg_events), newest first, filtered by target, dataset, record key and time."""
        e = s.events.c
        stmt = select(s.events).order_by(e.id.desc()).limit(limit)
        for cond in ((e.target == target) if target else None, (e.dataset == dataset) if dataset else None,
                     (e.record_key == key) if key else None, (e.at >= since) if since is not None else None,
                     (e.at < until) if until is not None else None):
            stmt = stmt.where(cond) if cond is not None else stmt
        async with self.engine.connect() as conn:
            return _rows(await conn.execute(stmt))

    async def record_origin(self, dataset: str, key: str) -> dict[str, Any] | None:
        """Where a ledger record came from: its source, the source row's key and its quarantine entries."""
        r, q = s.records.c, s.quarantine.c
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(r.source, r.source_key, r.decision_date).where(
                and_(r.dataset == dataset, r.record_key == key)))).first()
            if row is None:
                return None
            entries = _rows(await conn.execute(select(q.id, q.stage, q.target, q.state, q.reasons).where(
                and_(q.dataset == dataset, q.record_key == key)).order_by(q.id)))
        for entry in entries:
            entry["reasons"] = orjson.loads(entry["reasons"])
        return {"source": row[0], "source_key": row[1], "decision_date": row[2], "quarantine": entries}

def _reason_label(reason: Any) -> str:
    """A quarantine reason as a metric label: its code, else its field (messages carry values: unbounded)."""
    if not isinstance(reason, dict):
        return "unknown"
    return str(reason.get("code") or (f"field:{reason['field']}" if reason.get("field") else "unknown"))
