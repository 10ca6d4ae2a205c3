"""The durable store: intake, ledger, quarantine, outbox, batches, attempts, receipts, events.

SQLAlchemy 2 (async) sits behind this module and nowhere else. The embedded default is a SQLite file
under ``spool/`` (WAL, ``BEGIN IMMEDIATE`` writes); PostgreSQL works the same way through asyncpg, and
leasing uses ``FOR UPDATE SKIP LOCKED`` there. Every public coroutine is one transaction, so a crash
at any point leaves the store either before or after it. No transaction spans network I/O.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import operator
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import orjson
from sqlalchemy import Table, and_, bindparam, event, func, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from gateway.adapter import SnapshotPage
from gateway.errors import StoreError
from gateway.files import make_private_dir, touch_private
from gateway.records import LedgerEntry, Record
from gateway.store import changes as store_changes
from gateway.store import schema as s
from gateway.stored import Reject

if TYPE_CHECKING:
    from gateway.store.composed import Store

log = logging.getLogger("gateway.store")
T = TypeVar("T")
C = TypeVar("C")
MIGRATION_LOCK = 0x63675F736368656D  # PostgreSQL advisory lock key held while the schema is created ("cg_schem")
CHUNK = 500  # keys per IN (...) list: well under SQLite's and asyncpg's parameter limits


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def _chunks(items: Sequence[Any], size: int = CHUNK) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


class WatermarkMoved(StoreError):
    """Another instance committed the source since this page was read from it: the page is not committed."""


ANY_WATERMARK: Any = object()  # ``read_from`` default: commit whatever the source's watermark is now


@dataclass(frozen=True, slots=True)
class IntakeResult:
    accepted: int  # new versions written to the ledger
    unchanged: int  # same content as the current version: nothing to send
    quarantined: int
    enqueued: Mapping[str, int]  # target -> outbox rows added


def _async_url(url: str) -> str:
    parsed = make_url(url)
    driver = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg"}.get(parsed.drivername)
    return parsed.set(drivername=driver).render_as_string(hide_password=False) if driver else url


def _translated(fn: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    @functools.wraps(fn)
    async def call(*args: Any, **kwargs: Any) -> T:
        try:
            return await fn(*args, **kwargs)
        except SQLAlchemyError as exc:
            orig = getattr(exc, "orig", None)
            detail = str(orig) if orig is not None else str(exc).splitlines()[0]
            raise StoreError(f"store: {fn.__name__} failed: {type(exc).__name__}: {detail}") from exc
        except OSError as exc:
            raise StoreError(f"store: {fn.__name__} failed: {exc}") from exc

    return call


def translate_errors(cls: type[C]) -> type[C]:
    """Class decorator: database and OS errors of every public coroutine become StoreError (the daemon's
    loops catch GatewayError; a raw SQLAlchemy error would escape them)."""
    for name, member in list(vars(cls).items()):
        if not name.startswith("_") and inspect.iscoroutinefunction(member):
            setattr(cls, name, _translated(member))
    return cls


@translate_errors
class StoreBase:
    """Engine, lifecycle and intake; see :class:`Store` for the whole surface."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self._insert = postgresql.insert if self.dialect == "postgresql" else sqlite.insert

    # ------------------------------------------------------------ lifecycle

    async def aclose(self) -> None:
        await self.engine.dispose()

    async def migrate(self) -> int:
        """Create or upgrade the schema; returns the schema version now in force.

        On PostgreSQL a transaction-level advisory lock makes instances that start together on a new store
        take turns: concurrent CREATE TABLEs of one table fail, even with IF NOT EXISTS."""
        try:
            async with self.tx() as conn:
                if self.dialect == "postgresql":
                    await conn.execute(select(func.pg_advisory_xact_lock(MIGRATION_LOCK)))
                await conn.run_sync(s.metadata.create_all)
                row = (await conn.execute(select(s.meta.c.value).where(s.meta.c.name == "schema_version"))).first()
                if row is None:
                    await conn.execute(s.meta.insert().values(name="schema_version", value=str(s.SCHEMA_VERSION)))
                elif int(row[0]) > s.SCHEMA_VERSION:
                    raise StoreError(f"store schema {row[0]} is newer than this gateway ({s.SCHEMA_VERSION})")
                elif int(row[0]) < s.SCHEMA_VERSION:
                    await _upgrade(conn, int(row[0]))
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot prepare the store: {exc}") from exc
        return s.SCHEMA_VERSION

    async def bulk_insert(self, conn: AsyncConnection, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
        """INSERT many rows through the driver's executemany: the hot path skips per-row statement processing."""
        columns = list(rows[0])
        marks = (", ".join("?" for _ in columns) if self.engine.dialect.paramstyle == "qmark"
                 else ", ".join(f"${i}" for i in range(1, len(columns) + 1)))
        sql = f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({marks})"  # noqa: S608 - our own names
        values = operator.itemgetter(*columns)  # a tuple per row, in C (one column would give a bare value)
        params = [values(row) for row in rows] if len(columns) > 1 else [(row[columns[0]],) for row in rows]
        await conn.exec_driver_sql(sql, params)

    @contextlib.asynccontextmanager
    async def tx(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction (``async with store.tx() as conn``). On SQLite it takes the write lock when it
        begins (``BEGIN IMMEDIATE``), so it never deadlocks upgrading a read lock; reads elsewhere use plain
        connections with deferred transactions and never hold the daemon's writes up."""
        async with self.engine.connect() as conn:
            conn = await conn.execution_options(cg_write=True)
            async with conn.begin():
                yield conn

    # ------------------------------------------------------------ watermarks and intake

    async def load_cursor(self, source: str) -> Any:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(s.watermarks.c.cursor).where(s.watermarks.c.source == source))).first()
        return orjson.loads(row[0]) if row else None

    async def commit_intake(self, source: str, accepted: Sequence[Record | LedgerEntry], rejects: Sequence[Reject],
                            cursor: Any, routes: Mapping[str, Sequence[str]], rows: int,
                            snapshot: SnapshotPage | None = None, read_from: Any = ANY_WATERMARK) -> IntakeResult:
        """One transaction: ledger versions, outbox rows per routed target, quarantine, cursor, intake log.

        A page of a full ``snapshot`` also notes its keys; its final page withdraws the scope's unnamed keys.
        With ``read_from`` (the cursor the page was read from) it raises :class:`WatermarkMoved` instead when the
        source's watermark is no longer that cursor.
        """
        async with self.tx() as conn:
            result, _changed = await self.intake_in(conn, source, accepted, rejects, cursor, routes, rows, snapshot,
                                                    read_from)
        return result

    async def intake_in(self, conn: AsyncConnection, source: str, accepted: Sequence[Record | LedgerEntry],
                        rejects: Sequence[Reject], cursor: Any, routes: Mapping[str, Sequence[str]],
                        rows: int, snapshot: SnapshotPage | None = None, read_from: Any = ANY_WATERMARK
                        ) -> tuple[IntakeResult, list[tuple[LedgerEntry, int]]]:
        """:meth:`commit_intake` inside the caller's transaction (the inbound endpoint adds its nonce and
        receipt to it); also returns the ledger entries that made a new version, with that version."""
        now = time.time()
        if cursor is not None and read_from is not ANY_WATERMARK:
            await self._check_watermark(conn, source, read_from)
        ids: dict[tuple[str, str], int] = {}
        changed, unchanged = await self._write_ledger(conn, accepted, now, ids)
        if snapshot is not None:
            changed += await self._snapshot_page(conn, source, snapshot, accepted, rejects, now)
        enqueued = await self._enqueue(conn, changed, routes, now, ids)
        await self._ledger_changed(conn, changed, now)
        await self._quarantine_rejects(conn, rejects, now)
        keys = [item.source_key for item in accepted]
        await self._resolve_mapping_quarantine(conn, source, keys, now)
        if cursor is not None:  # None: a replay from quarantine, the source position is unchanged
            await self._save_cursor(conn, source, cursor, now)
        await conn.execute(s.intake.insert().values(
            source=source, at=now, rows=rows, accepted=len(changed), unchanged=unchanged,
            quarantined=len(rejects), cursor=_json(cursor)))
        return IntakeResult(len(changed), unchanged, len(rejects), enqueued), changed

    async def _check_watermark(self, conn: AsyncConnection, source: str, read_from: Any) -> None:
        """Commit a page only if the source's watermark is still the cursor it was read from.

        Several instances poll the same source. One whose page was read before another committed newer rows
        would otherwise write older contents of edited rows as their newest versions and move the watermark
        back; once the other commits a later page, those edits sit behind the watermark and are never read
        again. On PostgreSQL the watermark row is locked first (created if missing), so the intakes of one
        source commit one at a time, and always before the ledger rows they lock."""
        w = s.watermarks.c
        stmt = select(w.cursor).where(w.source == source)
        if self.dialect == "postgresql":
            await conn.execute(self._insert(s.watermarks).values(source=source, cursor="null", updated_at=0.0)
                               .on_conflict_do_nothing(index_elements=["source"]))
            stmt = stmt.with_for_update()
        row = (await conn.execute(stmt)).first()
        now_at = orjson.loads(row[0]) if row else None
        if now_at != orjson.loads(_json(read_from)):
            raise WatermarkMoved(f"source {source}: the watermark moved from {read_from!r} to {now_at!r} "
                                 f"since this page was read")

    async def _snapshot_page(self, conn: AsyncConnection, source: str, snapshot: SnapshotPage,
                             accepted: Sequence[Record | LedgerEntry], rejects: Sequence[Reject],
                             now: float) -> list[tuple[LedgerEntry, int]]:
        """Hook (gateway.store.lists): note a snapshot page's keys; on its final page, withdraw the others."""
        return []

    async def _ledger_changed(self, conn: AsyncConnection, changed: Sequence[tuple[LedgerEntry, int]],
                              now: float) -> None:
        """Hook, inside the intake transaction after the outbox rows are queued (gateway.store.lists: lists)."""

    async def _existing(self, conn: AsyncConnection, dataset: str,
                        keys: Sequence[str]) -> dict[str, tuple[int, int, str]]:
        """Current id, version and content hash of ``keys``. On PostgreSQL the rows are locked (in key order)
        until the transaction ends, so another instance's intake or the publicity job cannot write a version
        of the same key in between (SQLite's write transactions are serial anyway)."""
        found: dict[str, tuple[int, int, str]] = {}
        r = s.records.c
        for chunk in _chunks(sorted(set(keys))):
            stmt = select(r.record_key, r.id, r.version, r.content_hash).where(
                and_(r.dataset == dataset, r.record_key.in_(chunk))).order_by(r.record_key)
            if self.dialect == "postgresql":
                stmt = stmt.with_for_update(of=s.records)
            rows = await conn.execute(stmt)
            found.update({row[0]: (row[1], row[2], row[3]) for row in rows})
        return found

    async def _write_ledger(self, conn: AsyncConnection, accepted: Sequence[Record | LedgerEntry], now: float,
                            ids: dict[tuple[str, str], int] | None = None) -> tuple[list[tuple[LedgerEntry, int]], int]:
        """Write the new versions of ``accepted`` (unchanged contents are skipped). ``ids`` gets the ledger row id
        of each key written, where known without another query (:meth:`_enqueue` looks up the others)."""
        changed: list[tuple[LedgerEntry, int]] = []
        unchanged = 0
        by_dataset: dict[str, list[LedgerEntry]] = {}
        for item in accepted:
            entry = item.entry() if isinstance(item, Record) else item
            by_dataset.setdefault(entry.dataset, []).append(entry)
        for dataset, entries in by_dataset.items():
            existing = await self._existing(conn, dataset, [e.key for e in entries])
            upd_rows: dict[str, dict[str, Any]] = {}
            versions: dict[str, dict[str, Any]] = {}
            for e in entries:
                current = existing.get(e.key)
                if current is not None and current[2] == e.digest:
                    unchanged += 1
                    continue
                version = (current[1] if current else 0) + 1
                existing[e.key] = (current[0] if current else 0, version, e.digest)
                row = _ledger_row(e, version, now)
                if current is not None and current[0]:
                    upd_rows[e.key] = {**row, "b_id": current[0]}
                else:
                    versions[e.key] = row  # a key seen twice in one batch keeps its last state
                changed.append((e, version))
            inserts = list(versions.values())
            await self._flush_ledger(conn, inserts, list(upd_rows.values()))
            if ids is not None:
                ids.update({(dataset, key): row["b_id"] for key, row in upd_rows.items()})
                ids.update({(dataset, row["record_key"]): row["id"] for row in inserts if "id" in row})
        return changed, unchanged

    async def _flush_ledger(self, conn: AsyncConnection, inserts: list[dict[str, Any]],
                            updates: list[dict[str, Any]]) -> None:
        if inserts:
            for row in inserts:
                row["first_seen_at"] = row["updated_at"]
            if self.dialect == "sqlite":
                # SQLite's write transactions are serial, so the rows get the ids SQLite itself would give them
                # (the largest + 1, 2, ...), and the outbox rows need not look them up again by key (a second
                # probe of the key index per record: 6 us per record at 300k rows).
                top = (await conn.execute(select(func.max(s.records.c.id)))).scalar() or 0
                for record_id, row in enumerate(inserts, top + 1):
                    row["id"] = record_id
            await self.bulk_insert(conn, s.records, inserts)
        if updates:
            r = s.records.c
            stmt = update(s.records).where(r.id == bindparam("b_id")).values(
                version=bindparam("version"), operation=bindparam("operation"),
                content_hash=bindparam("content_hash"), payload=bindparam("payload"),
                source=bindparam("source"), source_key=bindparam("source_key"),
                decision_date=bindparam("decision_date"), updated_at=bindparam("updated_at"))
            await conn.execute(stmt, updates)

    async def _enqueue(self, conn: AsyncConnection, changed: Sequence[tuple[LedgerEntry, int]],
                       routes: Mapping[str, Sequence[str]], now: float,
                       known: Mapping[tuple[str, str], int] | None = None) -> dict[str, int]:
        counts: dict[str, int] = {}
        rows: list[dict[str, Any]] = []
        superseded: list[dict[str, Any]] = []
        latest = {(e.dataset, e.key): (e, v) for e, v in changed}  # a key changed twice in a batch: its last state
        # A change of a key sent before goes to the targets that hold it, routed or not (gateway.store.changes).
        plan = await store_changes.plan_targets(conn, list(latest.values()), routes, now)
        ids = dict(known or {})
        if missing := [key for key in latest if key not in ids]:
            ids.update(await self._record_ids(conn, missing))
        for e, version in latest.values():
            record_id = ids[(e.dataset, e.key)]
            for target in plan.get((e.dataset, e.key), routes.get(e.dataset, ())):
                rows.append({"target": target, "dataset": e.dataset, "record_key": e.key, "record_id": record_id,
                             "version": version, "state": "pending", "enqueued_at": now, "updated_at": now})
                if version > 1:
                    superseded.append({"b_t": target, "b_r": record_id})
                counts[target] = counts.get(target, 0) + 1
        if superseded:
            o = s.outbox.c
            await conn.execute(update(s.outbox).where(and_(
                o.record_id == bindparam("b_r"), o.target == bindparam("b_t"), o.state == "pending"))
                .values(state="superseded", updated_at=now), superseded)
        if rows:
            await self.bulk_insert(conn, s.outbox, rows)
        return counts

    async def _record_ids(self, conn: AsyncConnection, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], int]:
        """The ledger row id of each (dataset, key) (every one of them is in the ledger by now)."""
        r = s.records.c
        by_dataset: dict[str, list[str]] = {}
        for dataset, key in keys:
            by_dataset.setdefault(dataset, []).append(key)
        ids: dict[tuple[str, str], int] = {}
        for dataset, names in by_dataset.items():
            for chunk in _chunks(names):
                rows = await conn.execute(select(r.record_key, r.id).where(
                    and_(r.dataset == dataset, r.record_key.in_(chunk))))
                ids.update({(dataset, key): record_id for key, record_id in rows})
        return ids

    async def _quarantine_rejects(self, conn: AsyncConnection, rejects: Sequence[Reject], now: float) -> None:
        rows = [{
            "qkey": f"m|{rj.source}|{rj.source_key}", "stage": "mapping", "source": rj.source,
            "source_key": rj.source_key, "target": "", "dataset": rj.dataset, "record_key": rj.record_key,
            "reasons": _json([{"field": p.path, "message": p.message} for p in rj.problems]),
            "raw": _json(rj.raw), "state": "open", "hits": 1, "created_at": now, "updated_at": now,
        } for rj in rejects]
        await self.upsert_quarantine(conn, rows)

    async def upsert_quarantine(self, conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
        if not rows:
            return
        stmt = self._insert(s.quarantine)
        stmt = stmt.on_conflict_do_update(index_elements=["qkey"], set_={
            "reasons": stmt.excluded.reasons, "raw": stmt.excluded.raw, "state": "open",
            "record_key": stmt.excluded.record_key, "hits": s.quarantine.c.hits + 1,
            "updated_at": stmt.excluded.updated_at})
        await conn.execute(stmt, list(rows))
        await conn.execute(s.events.insert(), [{
            "at": row["updated_at"], "kind": f"quarantine.{row['stage']}", "target": row["target"],
            "dataset": row["dataset"], "record_key": row["record_key"] or row["source_key"],
            "detail": row["reasons"]} for row in rows])

    async def _resolve_mapping_quarantine(self, conn: AsyncConnection, source: str, source_keys: Sequence[str],
                                          now: float) -> None:
        q = s.quarantine.c
        # The rows are found by their unique qkey. Written as `state = 'open'`, the state test offered SQLite the
        # (state, stage) index instead, and without statistics it took it: every page then walked all open
        # entries once per chunk (measured: 11 µs per accepted row with 20,000 rows open at 1M rows).
        # coalesce() over the state keeps that index out of the plan; the state is NOT NULL, so it is the same test.
        still_open = func.coalesce(q.state, "") == "open"
        for chunk in _chunks([f"m|{source}|{k}" for k in source_keys]):
            await conn.execute(update(s.quarantine).where(and_(q.qkey.in_(chunk), still_open))
                               .values(state="resolved", updated_at=now))

    async def _save_cursor(self, conn: AsyncConnection, source: str, cursor: Any, now: float) -> None:
        stmt = self._insert(s.watermarks).values(source=source, cursor=_json(cursor), updated_at=now)
        await conn.execute(stmt.on_conflict_do_update(
            index_elements=["source"], set_={"cursor": stmt.excluded.cursor, "updated_at": now}))


async def _upgrade(conn: AsyncConnection, version: int) -> None:
    """Bring a store written by an earlier gateway up to this schema version, step by step, in the migration's
    transaction (create_all has already added new tables; these steps change existing ones)."""
    for step in range(version + 1, s.SCHEMA_VERSION + 1):
        for statement in _UPGRADES[step]:
            await conn.execute(text(statement))
        log.info("store schema upgraded", extra={"version": step})
    await conn.execute(update(s.meta).where(s.meta.c.name == "schema_version").values(value=str(s.SCHEMA_VERSION)))


_UPGRADES: dict[int, tuple[str, ...]] = {
    2: ("ALTER TABLE cg_outbox ADD COLUMN record_id INTEGER",
        "UPDATE cg_outbox SET record_id = (SELECT r.id FROM cg_records r "
        "WHERE r.dataset = cg_outbox.dataset AND r.record_key = cg_outbox.record_key)",
        "CREATE INDEX ix_outbox_record ON cg_outbox (record_id, target)",
        "DROP INDEX ix_outbox_key"),
}


def _ledger_row(e: LedgerEntry, version: int, now: float) -> dict[str, Any]:
    return {"dataset": e.dataset, "record_key": e.key, "version": version, "operation": e.operation,
            "content_hash": e.digest, "payload": e.body.decode(), "source": e.source, "source_key": e.source_key,
            "decision_date": e.decision_date, "updated_at": now}


def _sqlite_pragmas(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves, below
        cur = dbapi_conn.cursor()
        # wal_autocheckpoint: a checkpoint copies each page once however often it changed since the last one;
        # at the default (1,000 pages) one intake page's transaction already passes it, so the index pages
        # every transaction touches were copied after each of them (10,000 pages: a WAL of up to ~40 MB).
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=30000", "foreign_keys=ON",
                       "cache_size=-65536", "temp_store=MEMORY", "wal_autocheckpoint=10000"):
            cur.execute(f"PRAGMA {pragma}")
        cur.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        write = conn.get_execution_options().get("cg_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def _make_parent(url: str) -> None:
    """The embedded store lives in a directory (spool/ by default) that may not exist yet: it is made 0700, and
    the database file 0600 before SQLite opens it (its -wal and -shm files take the database file's mode). It
    holds every full ID number and the subject-key secret."""
    database = make_url(url).database
    if database and database != ":memory:" and not database.startswith("file:"):
        path = Path(database)
        try:
            make_private_dir(path.parent)
            for file in (path, *(path.with_name(path.name + end) for end in ("-wal", "-shm"))):
                if file == path or file.exists():
                    touch_private(file)
        except OSError as exc:
            raise StoreError(f"store.url: cannot create {path}: {exc.strerror}") from exc


async def open_store(url: str, *, migrate: bool = True) -> Store:
    """Open (and by default create or migrate) the store at ``url`` (sqlite:///… or postgresql://…)."""
    full = _async_url(url)
    kwargs: dict[str, Any] = {}
    if full.startswith("sqlite"):
        kwargs = {"pool_size": 1, "max_overflow": 0, "pool_timeout": 120}
        _make_parent(full)
    try:
        engine = create_async_engine(full, **kwargs)
    except (SQLAlchemyError, ImportError, ValueError) as exc:
        raise StoreError(f"store.url {url!r}: {exc}") from exc
    if engine.dialect.name == "sqlite":
        _sqlite_pragmas(engine)
    from gateway.store.composed import Store  # the full surface: intake + delivery + operations

    store = Store(engine)
    if migrate:
        try:
            await store.migrate()
        except BaseException:
            await engine.dispose()
            raise
    return store


