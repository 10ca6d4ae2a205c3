"""The store's side of full snapshots and credit lists: snapshot sweeps, list entries by subject, red/black holds.

The intake ledger (gateway.store.intake) calls two methods here, inside the intake transaction:

* :meth:`ListBook.sweep_snapshot` notes the keys of a snapshot page (``cg_snapshot_seen``); on the final page, every key
  of the scope that is still listed in the ledger but was named by no page of this snapshot gets a new
  ledger version with operation ``withdraw`` (same content,
                                              written by the intake ledger), queued like any other change. Pages and the
  sweep are separate transactions, so a snapshot survives restarts: its marks and cursor are durable.
* :meth:`ListBook.after_change` keeps ``cg_list_entries`` (list, type, subject, listed?) for every changed
  ``credit_list`` key and re-checks the subjects it touched: a red-list entry whose subject (same USCC or
  ID number) is on a black list is *held*: its queued outbox rows are parked in state ``held`` (never
  leased, not backlog) until the black entry is withdrawn, when they become ``pending`` again. Holding in
  the intake transaction means no sender can lease the red entry between its arrival and the check.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import and_, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.adapter import SnapshotPage
from gateway.domain.datasets import BLACK_LIST, CREDIT_LIST, RED_LIST, get_dataset
from gateway.records import LedgerEntry, Operation, Record, from_payload, make_key
from gateway.store import schema as s
from gateway.store.database import Repository, chunks, dumps
from gateway.stored import LeasedRecord, Reject

log = logging.getLogger("gateway.lists")
HELD = "held"  # outbox state of a red-list entry held back by a black-list conflict


@dataclass(frozen=True, slots=True)
class ListEntry:
    """One credit-list key as ``cg_list_entries`` has it."""

    record_key: str
    list_code: str
    list_type: str
    subject: str
    active: bool
    held: bool
    held_by: str | None


def scope_prefix(scope: str) -> str:
    """Ledger keys of a scope start with this (the scope is the first natural-key part)."""
    return make_key(scope) + "|"


def _entry_row(entry: LedgerEntry, now: float) -> dict[str, Any]:
    payload = orjson.loads(entry.body)
    return {"record_key": entry.key, "list_code": str(payload.get("list_code", "")),
            "list_type": str(payload.get("list_type", "")),
            "subject": str(payload.get("uscc") or payload.get("id_no") or ""),
            "active": 0 if entry.operation == Operation.WITHDRAW.value else 1, "held": 0, "held_by": None,
            "updated_at": now}


def _as_entry(row: Any) -> ListEntry:
    return ListEntry(row.record_key, row.list_code, row.list_type, row.subject, bool(row.active), bool(row.held),
                     row.held_by)


class ListBook(Repository):
    """Snapshot sweeps, list entries and red/black holds (see the module docstring)."""

    # ------------------------------------------------------------ snapshots

    async def sweep_snapshot(self, conn: AsyncConnection, source: str, snapshot: SnapshotPage,
                             accepted: Sequence[Record | LedgerEntry], rejects: Sequence[Reject]) -> list[LedgerEntry]:
        """Note the keys of a snapshot page; on its final page, return the withdrawals of the scope's listed keys
        that no page named (the intake ledger writes them) and forget the pages' keys."""
        prefix = scope_prefix(snapshot.scope)
        # A row the mapping refused still names a listed subject: it must not be swept away for being invalid.
        keys = {item.key for item in accepted if item.dataset == snapshot.dataset}
        keys |= {rj.record_key for rj in rejects if rj.dataset == snapshot.dataset and rj.record_key}
        marks = [{"source": source, "scope": snapshot.scope, "record_key": k, "snapshot_id": snapshot.snapshot_id}
                 for k in sorted(keys) if k.startswith(prefix)]
        if marks:
            stmt = self._insert(s.snapshot_seen)
            await conn.execute(stmt.on_conflict_do_update(
                index_elements=["source", "scope", "record_key"], set_={"snapshot_id": stmt.excluded.snapshot_id}),
                marks)
        if not snapshot.final:
            return []
        gone = await self._unnamed(conn, source, snapshot, prefix)
        seen = s.snapshot_seen.c
        await conn.execute(s.snapshot_seen.delete().where(and_(seen.source == source, seen.scope == snapshot.scope)))
        return gone

    async def _unnamed(self, conn: AsyncConnection, source: str, snapshot: SnapshotPage,
                       prefix: str) -> list[LedgerEntry]:
        """Withdraw states for the scope's listed keys that no page of this snapshot named."""
        r, seen = s.records.c, s.snapshot_seen.c
        named = (select(seen.record_key).where(and_(
            seen.source == source, seen.scope == snapshot.scope, seen.snapshot_id == snapshot.snapshot_id,
            seen.record_key == r.record_key)).exists())
        rows = await conn.execute(select(r.record_key, r.payload, r.source, r.source_key).where(and_(
            r.dataset == snapshot.dataset, func.substr(r.record_key, 1, len(prefix)) == prefix,
            r.operation != Operation.WITHDRAW.value, ~named)))
        kinds = {f.name: f.kind for f in get_dataset(snapshot.dataset).fields}
        return [Record(snapshot.dataset, key, Operation.WITHDRAW, from_payload(kinds, orjson.loads(payload)),
                       src, src_key).entry() for key, payload, src, src_key in rows]

    # ------------------------------------------------------------ list entries and holds

    async def after_change(self, conn: AsyncConnection, changed: Sequence[tuple[LedgerEntry, int]],
                           now: float) -> None:
        """Inside the intake transaction, after the outbox rows are queued: list entries and red/black holds."""
        rows = {e.key: _entry_row(e, now) for e, _ in changed if e.dataset == CREDIT_LIST.name}
        if not rows:
            return
        le = s.list_entries.c
        stmt = self._insert(s.list_entries)
        await conn.execute(stmt.on_conflict_do_update(index_elements=["record_key"], set_={
            "list_code": stmt.excluded.list_code, "list_type": stmt.excluded.list_type,
            "subject": stmt.excluded.subject, "active": stmt.excluded.active,
            "updated_at": stmt.excluded.updated_at}), list(rows.values()))
        subjects = sorted({row["subject"] for row in rows.values() if row["subject"]})
        entries: list[ListEntry] = []
        for chunk in chunks(subjects):
            entries += [_as_entry(row) for row in await conn.execute(
                select(s.list_entries).where(le.subject.in_(chunk)))]
        await self._check_conflicts(conn, entries, now)

    async def _check_conflicts(self, conn: AsyncConnection, entries: Iterable[ListEntry], now: float) -> None:
        by_subject: dict[str, list[ListEntry]] = {}
        for entry in entries:
            by_subject.setdefault(entry.subject, []).append(entry)
        for group in by_subject.values():
            blacks = sorted(e.record_key for e in group if e.active and e.list_type == BLACK_LIST)
            for red in (e for e in group if e.list_type == RED_LIST):
                if red.active and blacks:
                    await self._hold(conn, red, blacks[0], now)
                elif red.held:
                    await self._release(conn, red, now)

    async def _hold(self, conn: AsyncConnection, red: ListEntry, black_key: str, now: float) -> None:
        """Park the red entry's queued rows (also a version queued in this very transaction)."""
        o, le = s.outbox.c, s.list_entries.c
        await conn.execute(update(s.outbox).where(and_(
            s.outbox_of_key(CREDIT_LIST.name, red.record_key), o.state == "pending"))
            .values(state=HELD, updated_at=now))
        if red.held and red.held_by == black_key:
            return
        await conn.execute(update(s.list_entries).where(le.record_key == red.record_key)
                           .values(held=1, held_by=black_key))
        detail = {"red": red.record_key, "black": black_key}  # the keys name the subject; its ID number stays out
        await conn.execute(s.events.insert().values(at=now, kind="lists.conflict", target="", dataset=CREDIT_LIST.name,
                                                    record_key=red.record_key, detail=dumps(detail)))
        log.warning("red-list entry held back: its subject is on a black list", extra={
            "key": red.record_key, "black": black_key, "list": red.list_code})

    async def _release(self, conn: AsyncConnection, red: ListEntry, now: float) -> None:
        o, le = s.outbox.c, s.list_entries.c
        await conn.execute(update(s.outbox).where(and_(
            s.outbox_of_key(CREDIT_LIST.name, red.record_key), o.state == HELD))
            .values(state="pending", updated_at=now))
        await conn.execute(update(s.list_entries).where(le.record_key == red.record_key)
                           .values(held=0, held_by=None))
        detail = {"red": red.record_key, "black": red.held_by}
        await conn.execute(s.events.insert().values(at=now, kind="lists.released", target="", dataset=CREDIT_LIST.name,
                                                    record_key=red.record_key, detail=dumps(detail)))
        log.info("red-list entry released: no black-list entry holds it back any more", extra={
            "key": red.record_key, "list": red.list_code})

    # ------------------------------------------------------------ reading lists

    async def list_entries(self, list_code: str | None = None) -> list[ListEntry]:
        le = s.list_entries.c
        stmt = select(s.list_entries).order_by(le.list_code, le.record_key)
        if list_code is not None:
            stmt = stmt.where(le.list_code == list_code)
        async with self.engine.connect() as conn:
            return [_as_entry(row) for row in await conn.execute(stmt)]

    async def list_records(self, list_code: str) -> list[LeasedRecord]:
        """The ledger's current state of every key of a list (outbox_id 0: not leased, for comparisons)."""
        r, le = s.records.c, s.list_entries.c
        stmt = (select(r.record_key, r.version, r.operation, r.payload)
                .join(s.list_entries, le.record_key == r.record_key)
                .where(and_(r.dataset == CREDIT_LIST.name, le.list_code == list_code)).order_by(r.record_key))
        async with self.engine.connect() as conn:
            return [LeasedRecord(0, key, version, op, orjson.loads(payload))
                    for key, version, op, payload in await conn.execute(stmt)]

    async def ledger_payloads(self, dataset: str, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        r = s.records.c
        found: dict[str, dict[str, Any]] = {}
        async with self.engine.connect() as conn:
            for chunk in chunks(sorted(set(keys))):
                rows = await conn.execute(select(r.record_key, r.payload).where(
                    and_(r.dataset == dataset, r.record_key.in_(chunk))))
                found.update({key: orjson.loads(payload) for key, payload in rows})
        return found

    async def delivered_versions(self, dataset: str, keys: Sequence[str]) -> dict[tuple[str, str], int]:
        """(target, key) → the newest version a target acknowledged (to tell what a held entry already reached)."""
        o = s.outbox.c
        found: dict[tuple[str, str], int] = {}
        async with self.engine.connect() as conn:
            for chunk in chunks(sorted(set(keys))):
                rows = await conn.execute(select(o.target, o.record_key, func.max(o.version)).where(and_(
                    s.outbox_of_keys(dataset, chunk), o.state == "delivered"))
                    .group_by(o.target, o.record_key))
                found.update({(t, k): int(v) for t, k, v in rows})
        return found

    async def queued_keys(self, target: str, dataset: str, keys: Sequence[str]) -> set[str]:
        """Keys with a row waiting or in flight for a target (a comparison would race with them)."""
        o = s.outbox.c
        busy: set[str] = set()
        async with self.engine.connect() as conn:
            for chunk in chunks(sorted(set(keys))):
                busy.update(row[0] for row in await conn.execute(select(o.record_key).where(and_(
                    s.outbox_of_keys(dataset, chunk), o.target == target, o.state.in_(("pending", "leased"))))))
        return busy

    # ------------------------------------------------------------ repair

    async def requeue_for_repair(self, target: str, dataset: str, keys: Sequence[str], reason: str) -> int:
        """Queue the ledger's current version of ``keys`` for ``target`` again, even if it was delivered.

        Keys already waiting or in flight for the target, red entries held back, and keys whose current version
        the target refused or that went to the dead letters (quarantine and ``spool replay`` deal with those:
        sending them again on every pass would only repeat the refusal) are left alone.
        """
        if not keys:
            return 0
        now = time.time()
        o, r, le = s.outbox.c, s.records.c, s.list_entries.c
        queued = 0
        async with self.tx() as conn:
            for chunk in chunks(sorted(set(keys))):
                busy = {row[0] for row in await conn.execute(select(o.record_key).where(and_(
                    s.outbox_of_keys(dataset, chunk), o.target == target, o.state.in_(("pending", "leased", HELD)))))}
                held = {row[0] for row in await conn.execute(select(le.record_key).where(and_(
                    le.record_key.in_(chunk), le.held == 1)))}
                refused = {(row[0], row[1]) for row in await conn.execute(select(o.record_key, o.version).where(and_(
                    s.outbox_of_keys(dataset, chunk), o.target == target, o.state.in_(("rejected", "dead")))))}
                current = await conn.execute(select(r.record_key, r.id, r.version).where(and_(
                    r.dataset == dataset, r.record_key.in_(chunk))))
                rows = [{"target": target, "dataset": dataset, "record_key": key, "record_id": record_id,
                         "version": version, "state": "pending", "enqueued_at": now, "updated_at": now}
                        for key, record_id, version in current
                        if key not in busy and key not in held and (key, version) not in refused]
                if rows:
                    await conn.execute(s.outbox.insert(), rows)
                    queued += len(rows)
            if queued:
                await conn.execute(s.events.insert().values(
                    at=now, kind="lists.repair", target=target, dataset=dataset, record_key="",
                    detail=dumps({"queued": queued, "reason": reason})))
        return queued
