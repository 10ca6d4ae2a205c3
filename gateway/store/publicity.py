"""The automatic withdrawal at the end of a penalty record's publicity period, and what it reports.

:func:`run_publicity` is the daemon's scheduled job (``[publicity] check_s``), with ``today`` injected:

1. :func:`sync_periods` keeps ``cg_publicity`` up to date: the minimum and maximum end of every record of a
   dataset with rules, computed from the ledger's current version (all records again when the rules changed).
2. :func:`withdraw_due` finds records whose maximum end is ``today`` or earlier and which are still published
   (``upsert`` or ``object``), and sends a ``withdraw`` (reason 公示期满) to every public-facing target that holds
   the record (or has it queued: it then gets the record in its withdrawn state), and to no other.

The withdrawal is a new ledger version made by the gateway: its content is the published one plus
``withdraw_reason``, and it keeps the content digest of the source's state, so the unchanged source row read
again is not taken as a change. It happens once: the ledger row is updated only if its version is still the
one read (two instances on one store cannot both make it), and the record's ``handled_version`` says it is
settled. A record waits while a non-public target still has its current version queued or in flight (the new
version would supersede it there). If the department changes an expired record later, non-public targets get
the change and public ones nothing that would publish it again (:mod:`gateway.store.changes`); the next run
withdraws it from any public target that lacks the withdrawal.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.domain.datasets import EXPIRED
from gateway.domain.publicity import PUBLISHED, PublicitySettings, period_of
from gateway.records import LedgerEntry
from gateway.store import changes as store_changes
from gateway.store import schema as s
from gateway.store.confirmations import deliveries
from gateway.store.database import Repository, plain

log = logging.getLogger("gateway.publicity")
PAGE = 500
LIVE = ("pending", "leased", "delivered")  # a target holds the record, or is about to


@dataclass
class JobResult:
    dated: int = 0  # records whose period was (re)computed
    withdrawn: int = 0  # records a withdraw was made for
    sent: dict[str, int] = field(default_factory=dict)  # target → withdrawals queued
    waiting: int = 0  # due, but a non-public target still has the current version queued


# ---------------------------------------------------------------- periods


def rules_digest(settings: PublicitySettings) -> str:
    return hashlib.sha256(repr(settings.rules).encode()).hexdigest()[:32]


async def _stale_periods(conn: AsyncConnection, settings: PublicitySettings, everything: bool,
                         after: int) -> list[tuple[Any, ...]]:
    r, p = s.records.c, s.publicity.c
    stmt = (select(r.id, r.dataset, r.record_key, r.version, r.payload)
            .select_from(s.records.outerjoin(s.publicity, and_(p.dataset == r.dataset, p.record_key == r.record_key)))
            .where(and_(r.dataset.in_(sorted(settings.datasets)), r.id > after)).order_by(r.id).limit(PAGE))
    if not everything:
        stmt = stmt.where(or_(p.id.is_(None), p.version != r.version))
    return [tuple(row) for row in await conn.execute(stmt)]


def _iso(day: dt.date | None) -> str | None:
    return day.isoformat() if day else None


# ---------------------------------------------------------------- withdrawals


@dataclass(frozen=True)
class _Due:
    record_id: int
    dataset: str
    key: str
    version: int
    operation: str
    payload: str
    content_hash: str
    source: str
    source_key: str
    decision_date: str | None
    withdrawn_version: int | None
    withdrawn_targets: str


async def _due(conn: AsyncConnection, settings: PublicitySettings, today: dt.date, after: int) -> list[_Due]:
    r, p = s.records.c, s.publicity.c
    stmt = (select(r.id, r.dataset, r.record_key, r.version, r.operation, r.payload, r.content_hash, r.source,
                   r.source_key, r.decision_date, p.withdrawn_version, p.withdrawn_targets)
            .select_from(s.publicity.join(s.records, and_(r.dataset == p.dataset, r.record_key == p.record_key)))
            .where(and_(p.max_end <= today.isoformat(), r.operation.in_(PUBLISHED), r.id > after,
                        r.dataset.in_(sorted(settings.datasets)),
                        or_(p.handled_version.is_(None), p.handled_version < r.version)))
            .order_by(r.id).limit(PAGE))
    return [_Due(*tuple(row)) for row in await conn.execute(stmt)]


async def _settle(conn: AsyncConnection, item: _Due, public: Sequence[str], known: Sequence[str],
                  result: JobResult) -> None:
    rows = await _versions(conn, item, known)
    if any(state in ("pending", "leased") for target, _v, state in rows if target not in public):
        result.waiting += 1
        return
    done = set(orjson.loads(item.withdrawn_targets))
    have = {t for t, v, state in rows if t in done and item.withdrawn_version is not None
            and v >= item.withdrawn_version and state in LIVE}
    need = sorted({t for t, _v, state in rows if t in public and state in LIVE} - have)
    if not need:
        await _mark(conn, item, handled=item.version)
        return
    version = item.version + 1
    if not await _new_version(conn, item, version):
        return  # another instance (or the intake) changed the record meanwhile: the next run looks again
    await _enqueue(conn, item, version, need)
    await _mark(conn, item, handled=version, withdrawn=version, targets=sorted(done | set(need)))
    result.withdrawn += 1
    for target in need:
        result.sent[target] = result.sent.get(target, 0) + 1


async def _versions(conn: AsyncConnection, item: _Due, known: Sequence[str]) -> list[tuple[str, int, str]]:
    o = s.outbox.c
    rows = await conn.execute(select(o.target, o.version, o.state).where(and_(
        o.record_id == item.record_id, o.target.in_(list(known)))))
    return [(t, v, state) for t, v, state in rows]


async def _new_version(conn: AsyncConnection, item: _Due, version: int) -> bool:
    """The withdrawal as the ledger's next version, only if the ledger still holds the version read."""
    payload = {**orjson.loads(item.payload), "withdraw_reason": EXPIRED}
    r = s.records.c
    now = time.time()
    done = await conn.execute(update(s.records).where(and_(r.id == item.record_id, r.version == item.version))
                              .values(version=version, operation="withdraw", updated_at=now,
                                      payload=orjson.dumps(payload, option=orjson.OPT_SORT_KEYS).decode()))
    return bool(done.rowcount)


async def _enqueue(conn: AsyncConnection, item: _Due, version: int, targets: Sequence[str]) -> None:
    now = time.time()
    o = s.outbox.c
    await conn.execute(update(s.outbox).where(and_(
        o.record_id == item.record_id, o.target.in_(list(targets)), o.state == "pending"))
        .values(state="superseded", updated_at=now))
    await conn.execute(s.outbox.insert(), [
        {"target": t, "dataset": item.dataset, "record_key": item.key, "record_id": item.record_id,
         "version": version, "state": "pending", "enqueued_at": now, "updated_at": now} for t in targets])
    entry = LedgerEntry(item.dataset, item.key, "withdraw", b"", item.content_hash, item.source, item.source_key,
                        item.decision_date)
    await store_changes.log_changes(conn, [(entry, version, EXPIRED, "publicity")], now)
    await conn.execute(s.events.insert().values(
        at=now, kind="publicity.withdraw", target=",".join(targets), dataset=item.dataset, record_key=item.key,
        detail=orjson.dumps({"version": version, "reason": EXPIRED}).decode()))


async def _mark(conn: AsyncConnection, item: _Due, *, handled: int, withdrawn: int | None = None,
                targets: Sequence[str] = ()) -> None:
    p = s.publicity.c
    values: dict[str, Any] = {"handled_version": handled}
    if withdrawn is not None:
        values.update(version=withdrawn, withdrawn_version=withdrawn, withdrawn_at=time.time(),
                      withdrawn_targets=orjson.dumps(list(targets)).decode())  # same dates: no recomputing
    await conn.execute(update(s.publicity).where(and_(p.dataset == item.dataset, p.record_key == item.key))
                       .values(**values))


# ---------------------------------------------------------------- report


async def _confirmations(conn: AsyncConnection, made: list[dict[str, Any]], targets: Sequence[str]) -> None:
    known = sorted(set(targets) | set(await store_changes.known_targets(conn)))
    by_dataset: dict[str, list[dict[str, Any]]] = {}
    for row in made:
        by_dataset.setdefault(row["dataset"], []).append(row)
    for dataset, rows in by_dataset.items():
        sent = await deliveries(conn, dataset, [row["record_key"] for row in rows], known)
        for row in rows:
            mine = [d for d in sent.get(row["record_key"], []) if d.version == row["withdrawn_version"]]
            row["targets"] = {d.target: d.state for d in mine}
            row["confirmed"] = sum(1 for d in mine if d.state == "delivered")



class PublicityBook(Repository):
    """Publicity periods per record and the withdrawals due at their end (the SQL of the publicity job)."""

    async def sync_periods(self, settings: PublicitySettings) -> int:
        """Compute the period of every record whose current version has none yet (of every record after the
        rules changed); returns how many were computed."""
        digest = rules_digest(settings)
        async with self.engine.connect() as conn:
            stored = (await conn.execute(select(s.meta.c.value).where(s.meta.c.name == "publicity_rules"))).scalar()
        everything = stored != digest
        done, after = 0, 0
        while True:
            async with self.tx() as conn:
                rows = await _stale_periods(conn, settings, everything, after)
                if not rows:
                    await self._save_digest(conn, digest)
                    return done
                await self._upsert_periods(conn, settings, rows)
            done += len(rows)
            after = rows[-1][0]

    async def _upsert_periods(self, conn: AsyncConnection, settings: PublicitySettings,
                              rows: Sequence[tuple[Any, ...]]) -> None:
        now = time.time()
        values = []
        for _id, dataset, key, version, payload in rows:
            period = period_of(settings.rules, dataset, orjson.loads(payload))
            values.append({"dataset": dataset, "record_key": key, "version": version,
                           "decision_date": _iso(period.decision), "min_end": _iso(period.min_end),
                           "max_end": _iso(period.max_end), "min_rule": period.min_rule[:200],
                           "max_rule": period.max_rule[:200], "computed_at": now, "withdrawn_targets": "[]"})
        stmt = self._insert(s.publicity)
        await conn.execute(stmt.on_conflict_do_update(index_elements=["dataset", "record_key"], set_={
            name: stmt.excluded[name] for name in ("version", "decision_date", "min_end", "max_end", "min_rule",
                                                   "max_rule", "computed_at")}), values)

    async def _save_digest(self, conn: AsyncConnection, digest: str) -> None:
        stmt = self._insert(s.meta).values(name="publicity_rules", value=digest)
        await conn.execute(stmt.on_conflict_do_update(index_elements=["name"], set_={"value": digest}))

    async def withdraw_due(self, settings: PublicitySettings, public: Mapping[str, Sequence[str]],
                           targets: Sequence[str], today: dt.date, result: JobResult) -> None:
        """Withdraw every record due ``today`` from the public targets that hold it (see the module docstring)."""
        after = 0
        while True:
            async with self.tx() as conn:
                due = await _due(conn, settings, today, after)
                if not due:
                    return
                known = sorted(set(targets) | set(await store_changes.known_targets(conn)))
                for item in due:
                    await _settle(conn, item, public.get(item.dataset, ()), known, result)
            after = due[-1].record_id

    async def report(self, targets: Sequence[str], datasets: Collection[str], today: dt.date,
                               due_within_days: int, limit: int = 200) -> dict[str, Any]:
        """Upcoming withdrawals (due within the window, or due and not yet made) and the ones made, with the
        public targets that confirmed them; and how many records have no period computed yet."""
        r, p = s.records.c, s.publicity.c
        until = (today + dt.timedelta(days=due_within_days)).isoformat()
        join = s.publicity.join(s.records, and_(r.dataset == p.dataset, r.record_key == p.record_key))
        cols = (p.dataset, p.record_key, p.decision_date, p.max_end, p.max_rule, r.version, r.operation)
        async with self.engine.connect() as conn:
            upcoming = [plain(m) for m in await conn.execute(
                select(*cols).select_from(join).where(and_(
                    p.max_end <= until, r.operation.in_(PUBLISHED),
                    or_(p.handled_version.is_(None), p.handled_version < r.version))).order_by(p.max_end).limit(limit))]
            made = [plain(m) for m in await conn.execute(
                select(*cols, p.withdrawn_version, p.withdrawn_at).select_from(join)
                .where(p.withdrawn_version.is_not(None)).order_by(p.withdrawn_at.desc()).limit(limit))]
            undated = (await conn.execute(select(r.id).select_from(s.records.outerjoin(s.publicity, and_(
                p.dataset == r.dataset, p.record_key == r.record_key))).where(and_(
                    r.dataset.in_(sorted(datasets)),
                    or_(p.id.is_(None), p.version != r.version))).limit(limit + 1))).all()
            await _confirmations(conn, made, targets)
        for row in upcoming:
            row["state"] = "due" if row["max_end"] <= today.isoformat() else "upcoming"
        return {"today": today.isoformat(), "due_within_days": due_within_days, "upcoming": upcoming,
                "withdrawn": made, "undated": min(len(undated), limit), "undated_more": len(undated) > limit}

    async def published(self, keys: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        """The (dataset, key) pairs whose ledger state is published (upsert or object)."""
        r = s.records.c
        found: set[tuple[str, str]] = set()
        async with self.engine.connect() as conn:
            for dataset in {d for d, _ in keys}:
                names = [k for d, k in keys if d == dataset]
                for i in range(0, len(names), PAGE):
                    rows = await conn.execute(select(r.record_key).where(and_(
                        r.dataset == dataset, r.record_key.in_(names[i:i + PAGE]), r.operation.in_(PUBLISHED))))
                    found.update((dataset, key) for (key,) in rows)
        return found
