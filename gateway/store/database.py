"""The database under the store: one engine, its transactions, the schema's migration, and error translation.

SQLAlchemy 2 (async) sits behind this package and nowhere else. The embedded default is a SQLite file
under ``spool/`` (WAL, ``BEGIN IMMEDIATE`` writes); PostgreSQL works the same way through asyncpg, and
leasing uses ``FOR UPDATE SKIP LOCKED`` there. Every public coroutine of a repository is one transaction, so a
crash at any point leaves the store either before or after it. No transaction spans network I/O.

:class:`Repository` is the base of the store's parts (gateway.store): each holds the :class:`Database` and gets
its public coroutines wrapped so that database and OS errors become :class:`~gateway.errors.StoreError` (the
daemon's loops catch GatewayError; a raw SQLAlchemy error would escape them).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import operator
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import orjson
from sqlalchemy import Table, event, func, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from gateway.domain.subject_keys import META_NAME, KeySecret
from gateway.errors import StoreError
from gateway.files import make_private_dir, touch_private
from gateway.store import schema as s

log = logging.getLogger("gateway.store")
T = TypeVar("T")
MIGRATION_LOCK = 0x63675F736368656D  # PostgreSQL advisory lock key held while the schema is created ("cg_schem")
CHUNK = 500  # keys per IN (...) list: well under SQLite's and asyncpg's parameter limits


def dumps(value: Any) -> str:
    """JSON text for a store column."""
    return orjson.dumps(value).decode()


def chunks(items: Sequence[Any], size: int = CHUNK) -> Iterable[Sequence[Any]]:
    """``items`` in slices small enough for one ``IN (...)`` list."""
    for i in range(0, len(items), size):
        yield items[i:i + size]


def plain(row: Any) -> dict[str, Any]:
    """A result row as a dict with plain str keys (for JSON)."""
    return {str(k): v for k, v in row._mapping.items()}


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


class Database:
    """The engine, its dialect, write transactions, the schema, and the store-wide key secret."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self.insert = postgresql.insert if self.dialect == "postgresql" else sqlite.insert
        self._key_secret: KeySecret | None = None

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


    async def key_secret(self) -> KeySecret:
        """The secret that keys the ID-number pseudonyms in record keys: made on first use by whichever instance
        comes first (the others read that one: one store, one secret), then kept for this Database's life.

        Call it outside a transaction (it may write one of its own).
        """
        if self._key_secret is None:
            m = s.meta.c
            try:
                async with self.tx() as conn:
                    stmt = self.insert(s.meta).values(name=META_NAME, value=KeySecret.new_stored())
                    await conn.execute(stmt.on_conflict_do_nothing(index_elements=["name"]))
                    stored = (await conn.execute(select(m.value).where(m.name == META_NAME))).scalar_one()
            except SQLAlchemyError as exc:
                raise StoreError(f"store: key_secret failed: {exc}") from exc
            try:
                self._key_secret = KeySecret.from_stored(stored)
            except ValueError as exc:
                raise StoreError(f"store: {exc}") from None
        return self._key_secret

    async def upsert_quarantine(self, conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
        if not rows:
            return
        stmt = self.insert(s.quarantine)
        stmt = stmt.on_conflict_do_update(index_elements=["qkey"], set_={
            "reasons": stmt.excluded.reasons, "raw": stmt.excluded.raw, "state": "open",
            "record_key": stmt.excluded.record_key, "hits": s.quarantine.c.hits + 1,
            "updated_at": stmt.excluded.updated_at})
        await conn.execute(stmt, list(rows))
        await conn.execute(s.events.insert(), [{
            "at": row["updated_at"], "kind": f"quarantine.{row['stage']}", "target": row["target"],
            "dataset": row["dataset"], "record_key": row["record_key"] or row["source_key"],
            "detail": row["reasons"]} for row in rows])



class Repository:
    """A part of the store over the shared :class:`Database`. Subclasses get every public coroutine wrapped so
    that database and OS errors become StoreError; private ones run inside those and need no wrapping."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.engine = db.engine
        self.dialect = db.dialect
        self._insert = db.insert

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name, member in list(vars(cls).items()):
            if not name.startswith("_") and inspect.iscoroutinefunction(member):
                setattr(cls, name, _translated(member))

    def tx(self) -> contextlib.AbstractAsyncContextManager[AsyncConnection]:
        return self.db.tx()


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


async def connect(url: str, *, migrate: bool = True) -> Database:
    """Open (and by default create or migrate) the database at ``url`` (sqlite:///… or postgresql://…)."""
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
    db = Database(engine)
    if migrate:
        try:
            await db.migrate()
        except BaseException:
            await engine.dispose()
            raise
    return db
