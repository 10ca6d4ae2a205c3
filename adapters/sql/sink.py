"""SQL sink: writes a target's records into tables of the department's own database (SQLite or PostgreSQL).

Each dataset the target receives goes to one table (``[targets.NAME.tables.DATASET]``); the outbound
mapping names the columns, ``key_columns`` say which of them identify a row. Per record, in one
transaction per batch:

* ``upsert`` (and ``revoke``/``object``, whose meaning the mapping carries into columns): UPDATE the row
  with these key values, every mapped column set (a field the record no longer has becomes NULL); INSERT
  it when there was none;
* ``withdraw``: DELETE the row (``on_withdraw = "delete"``), or update it with ``status_column`` set to
  ``withdrawn_value`` (``on_withdraw = "mark"``; upserts then set ``active_value``).

Each record runs in its own savepoint: a row the database refuses (a constraint, a value that does not fit
its column) is answered ``rejected`` with the database's message and the rest of the batch still lands.
Replaying a batch writes the same values again: idempotent. The receipt is local and says so: the commit
of the transaction is the proof, and the receipt names the database, the table, the batch and the
SHA-256 of the body. Columns are matched by name without regard to case (the table is reflected), and
values are converted to the column's type (ISO dates, decimals, integers) before they are bound.

The sink can also read a table back (:class:`gateway.adapter.Holdings`): rows of one scope as identity (the
key columns) → digest of the mapped columns, with values rendered the same way on both sides, so the gateway
can compare what the department holds with its ledger and re-send only what differs.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from types import TracebackType
from typing import Any, ClassVar, Self

import orjson
from sqlalchemy import and_, column, delete, event, insert, inspect, select, table, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import (
    ArgumentError,
    DataError,
    IntegrityError,
    NoSuchTableError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from adapters.sql.url import database_url, password_credentials, pin_session, url_secrets
from gateway.adapter import AdapterContext, Credential, OutgoingBatch, Receipt, RecordResult, TargetRecord
from gateway.errors import ConfigError, PermanentError, Problem, RetryableError
from gateway.settings import parse_settings, setting
from gateway.text import control_reason

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class SqlSinkSettings:
    url: str = setting(help="sqlite:///path, postgresql://, mysql:// or mariadb://user@host/db (password via "
                                 "password_env; docs/databases.md)")
    password_env: str = setting("", help="environment variable holding the database password")
    tables: dict[str, Any] = setting({}, help="per dataset: [targets.NAME.tables.DATASET] (table, key_columns, …)")


@dataclass(frozen=True)
class TableSettings:
    table: str = setting(help="the department's table for this dataset")
    key_columns: list[str] = setting(help="mapped columns that identify a row (upserts and deletes match on them)")
    schema: str = setting("", help="its schema (PostgreSQL), if not the connection's default")
    on_withdraw: str = setting("delete", choices=("delete", "mark"), help="delete the row, or mark it withdrawn")
    status_column: str = setting("", help="on_withdraw = mark: column set to withdrawn_value / active_value")
    active_value: str = setting("1", help="status_column value of a listed (upserted) row")
    withdrawn_value: str = setting("0", help="status_column value of a withdrawn row")


@dataclass(frozen=True)
class _Column:
    name: str  # as the database spells it
    kind: type | None  # the Python type of its SQL type (None: unknown, kept as text)


@dataclass(frozen=True)
class _Table:
    settings: TableSettings
    columns: Mapping[str, _Column]  # mapped field name → column
    status: _Column | None

    @property
    def keys(self) -> list[str]:
        return list(self.settings.key_columns)


class ValueProblem(ValueError):
    """A value that cannot be converted to its column's type; the message names the column."""


class SqlSink:
    """Upserts and deletes records in the department's tables."""

    Settings: ClassVar[type] = SqlSinkSettings  # its TOML table, documented in docs/configuration.md
    Subsettings: ClassVar[Mapping[str, type]] = {"tables.DATASET": TableSettings}

    def __init__(self, settings: SqlSinkSettings, tables: Mapping[str, TableSettings],
                 fields: Mapping[str, Sequence[str]], url: str, name: str) -> None:
        self.settings, self.name = settings, name
        self._table_settings, self._fields = dict(tables), {ds: tuple(f) for ds, f in fields.items()}
        self._url = url
        self._engine: AsyncEngine | None = None
        self._tables: dict[str, _Table] = {}
        self._sqlite = url.startswith("sqlite")
        self.secrets = url_secrets(url)

    def credential_sources(self) -> list[Credential]:
        return password_credentials(self.settings.password_env)

    @classmethod
    def from_settings(cls, raw: Mapping[str, Any], ctx: AdapterContext) -> tuple[SqlSink | None, list[Problem]]:
        settings, problems = parse_settings(SqlSinkSettings, raw, ctx.path, ctx.common_keys)
        if settings is None:
            return None, problems
        tables: dict[str, TableSettings] = {}
        for dataset, fields in ctx.fields.items():
            where = f"{ctx.path}.tables.{dataset}"
            sub = settings.tables.get(dataset)
            if not isinstance(sub, dict):
                problems.append(Problem(where, "required: the table this dataset is written to ([…tables.DATASET])"))
                continue
            parsed, found = parse_settings(TableSettings, sub, where)
            if parsed is not None:
                found = _check_table(parsed, fields, where)
                if not found:
                    tables[dataset] = parsed
            problems += found
        problems += [Problem(f"{ctx.path}.tables.{ds}", "the target does not receive this dataset")
                     for ds in settings.tables if ds not in ctx.fields]
        url, problem = database_url(settings.url, settings.password_env, ctx)
        if problem:
            problems.append(problem)
        return (cls(settings, tables, ctx.fields, url, ctx.name), []) if not problems else (None, problems)

    async def __aenter__(self) -> Self:
        try:
            self._engine = create_async_engine(self._url)
        except (ArgumentError, ImportError) as exc:
            raise ConfigError([Problem("url", str(exc))], f"target {self.name}") from exc
        if self._sqlite:
            _sqlite_transactions(self._engine)
        pin_session(self._engine)
        return self

    async def __aexit__(self, t: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None
        self._tables.clear()

    # ------------------------------------------------------------ writing

    def encode(self, batch_id: str, dataset: str, table_code: str, records: Sequence[TargetRecord]) -> bytes:
        return orjson.dumps({"batchId": batch_id, "dataset": dataset, "records": [
            {"recordKey": r.key, "version": r.version, "operation": r.operation, "fields": r.fields}
            for r in records]})

    async def deliver(self, batch: OutgoingBatch) -> Receipt:
        try:
            body = orjson.loads(batch.body)
        except orjson.JSONDecodeError as exc:
            raise PermanentError(f"batch {batch.id} is not the JSON this sink encodes: {exc}") from exc
        dataset = str(body.get("dataset", batch.dataset))
        try:
            info = await self._table(dataset)
            async with self._connect(write=True) as conn, conn.begin():
                results = [await self._apply(conn, info, rec) for rec in body.get("records") or []]
        except SQLAlchemyError as exc:  # the connection or the transaction failed: nothing of the batch landed
            raise RetryableError(f"{self._where(info_table=dataset)}: {_message(exc)}") from exc
        except OSError as exc:
            raise RetryableError(f"{self._where(info_table=dataset)}: {exc}") from exc
        accepted = sum(1 for r in results if r.status == "accepted")
        receipt_id = f"sql-{batch.id}"
        receipt = {"receiptId": receipt_id, "batchId": batch.id, "local": True, "signed": False,
                   "bodySha256": hashlib.sha256(batch.body).hexdigest(),
                   "committedAt": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
                   "database": self._safe_url(), "table": self._qualified(info.settings),
                   "accepted": accepted, "rejected": len(results) - accepted}
        raw = {"receipt": receipt, "results": [{"recordKey": r.key, "version": r.version, "status": r.status,
                                                "errorCode": r.code, "errorMsg": r.message} for r in results]}
        return Receipt(receipt_id, results, raw)

    async def _apply(self, conn: AsyncConnection, info: _Table, rec: Mapping[str, Any]) -> RecordResult:
        key, version, operation = str(rec.get("recordKey")), int(rec.get("version") or 0), str(rec.get("operation"))
        try:
            values = self._values(info, rec.get("fields") or {}, operation)
            where = self._key_clause(info, values)
            async with conn.begin_nested():
                await self._write(conn, info, values, where, operation)
        except ValueProblem as exc:
            return RecordResult(key, version, "rejected", "VALUE", str(exc))
        except (IntegrityError, DataError, OperationalError) as exc:  # the database refused this row: the rest land
            if not _row_refused(exc):
                raise
            return RecordResult(key, version, "rejected", "DB", _message(exc))
        return RecordResult(key, version, "accepted")

    async def _write(self, conn: AsyncConnection, info: _Table, values: dict[str, Any], where: Any,
                     operation: str) -> None:
        tbl = _sql_table(info, values)
        if operation == "withdraw" and info.settings.on_withdraw == "delete":
            await conn.execute(delete(tbl).where(where))
            return
        bound = {c: _bind(v, self._sqlite) for c, v in values.items()}
        result = await conn.execute(update(tbl).where(where).values(bound))
        if not result.rowcount:
            await conn.execute(insert(tbl).values(bound))

    def _values(self, info: _Table, fields: Mapping[str, Any], operation: str) -> dict[str, Any]:
        """Every mapped column (real name → typed value; absent fields are NULL), plus the status column."""
        out = {col.name: _typed(fields.get(name), col) for name, col in info.columns.items()}
        if info.status is not None:
            s = info.settings
            out[info.status.name] = _typed(s.withdrawn_value if operation == "withdraw" else s.active_value,
                                           info.status)
        return out

    def _key_clause(self, info: _Table, values: Mapping[str, Any]) -> Any:
        names = [info.columns[k].name for k in info.keys]
        empty = [k for k, n in zip(info.keys, names, strict=True) if values.get(n) is None]
        if empty:
            raise ValueProblem(f"key column(s) {', '.join(empty)} empty: the row cannot be identified")
        return and_(*(column(n) == _bind(values[n], self._sqlite) for n in names))

    # ------------------------------------------------------------ reading back (Holdings)

    async def expected(self, dataset: str, records: Sequence[TargetRecord]) -> list[tuple[str, str | None]]:
        info = await self._table(dataset)
        out: list[tuple[str, str | None]] = []
        for rec in records:
            try:
                values = self._values(info, rec.fields, rec.operation)
            except ValueProblem:
                # It can never match: drift of the key's own row (an earlier version the table may still hold,
                # which must not look like a row the gateway never sent and be discarded).
                keys = {info.columns[k].name: _typed(rec.fields.get(k), info.columns[k], strict=False)
                        for k in info.keys}
                out.append((self._identity(info, keys), "unwritable"))
                continue
            identity = self._identity(info, values)
            gone = rec.operation == "withdraw" and info.settings.on_withdraw == "delete"
            out.append((identity, None if gone else _digest(info, values)))
        return out

    async def held(self, dataset: str, scope: Mapping[str, Any]) -> Mapping[str, str]:
        info = await self._table(dataset)
        columns = [c for c in info.columns.values()] + ([info.status] if info.status else [])
        conds = []
        for name, value in scope.items():
            col = info.columns.get(name)
            if col is None:
                raise PermanentError(f"{self._where(dataset)}: scope field {name!r} is not a mapped column")
            conds.append(column(col.name) == _bind(_typed(value, col), self._sqlite))
        stmt: Any = select(*(column(c.name) for c in columns)).select_from(_sql_table(info, {}))
        if conds:
            stmt = stmt.where(and_(*conds))
        try:
            async with self._connect() as conn:
                rows = (await conn.execute(stmt)).all()
        except SQLAlchemyError as exc:
            raise RetryableError(f"{self._where(dataset)}: {_message(exc)}") from exc
        found: dict[str, str] = {}
        for row in rows:
            values = {c.name: _typed(v, c, strict=False) for c, v in zip(columns, row, strict=True)}
            found[self._identity(info, values)] = _digest(info, values)
        return found

    async def discard(self, dataset: str, identities: Sequence[str]) -> int:
        info = await self._table(dataset)
        names = [info.columns[k].name for k in info.keys]
        removed = 0
        try:
            async with self._connect(write=True) as conn, conn.begin():
                for identity in identities:
                    parts = orjson.loads(identity)
                    where = and_(*(column(n) == _bind(v, self._sqlite) for n, v in zip(names, parts, strict=True)))
                    result = await conn.execute(delete(_sql_table(info, {})).where(where))
                    removed += int(result.rowcount or 0)
        except SQLAlchemyError as exc:
            raise RetryableError(f"{self._where(dataset)}: {_message(exc)}") from exc
        return removed

    def _identity(self, info: _Table, values: Mapping[str, Any]) -> str:
        return orjson.dumps([_render(values.get(info.columns[k].name)) for k in info.keys]).decode()

    # ------------------------------------------------------------ the table

    async def _table(self, dataset: str) -> _Table:
        """The dataset's table, reflected once: real column names and types of the mapped fields."""
        if dataset in self._tables:
            return self._tables[dataset]
        settings = self._table_settings.get(dataset)
        if settings is None:
            raise PermanentError(f"target {self.name}: no table configured for dataset {dataset}")
        try:
            async with self._connect() as conn:
                found = await conn.run_sync(lambda c: inspect(c).get_columns(settings.table, settings.schema or None))
        except NoSuchTableError:
            raise PermanentError(f"{self._where(dataset)}: table {self._qualified(settings)} not found") from None
        except SQLAlchemyError as exc:
            raise RetryableError(f"{self._where(dataset)}: {_message(exc)}") from exc
        except OSError as exc:  # refused, unreachable
            raise RetryableError(f"{self._where(dataset)}: {exc}") from exc
        by_lower = {str(c["name"]).lower(): _Column(str(c["name"]), _python_type(c["type"])) for c in found}
        missing = [f for f in self._fields.get(dataset, ()) if f.lower() not in by_lower]
        if settings.status_column and settings.status_column.lower() not in by_lower:
            missing.append(settings.status_column)
        if missing:
            raise PermanentError(f"{self._where(dataset)}: table {self._qualified(settings)} lacks column(s) "
                                 f"{', '.join(missing)} that the mapping writes")
        columns = {f: by_lower[f.lower()] for f in self._fields.get(dataset, ())}
        status = by_lower[settings.status_column.lower()] if settings.status_column else None
        self._tables[dataset] = info = _Table(settings, columns, status)
        return info

    @contextlib.asynccontextmanager
    async def _connect(self, write: bool = False) -> AsyncIterator[AsyncConnection]:
        """A connection; on SQLite a writing one takes the write lock when its transaction begins."""
        if self._engine is None:
            raise RuntimeError("sink used outside `async with`")
        async with self._engine.connect() as conn:
            yield await conn.execution_options(cg_write=True) if write else conn

    def _safe_url(self) -> str:
        return make_url(self._url).render_as_string(hide_password=True)

    def _qualified(self, settings: TableSettings) -> str:
        return f"{settings.schema}.{settings.table}" if settings.schema else settings.table

    def _where(self, dataset: str = "", info_table: str = "") -> str:
        return f"target {self.name} ({dataset or info_table})"


def _sqlite_transactions(engine: AsyncEngine) -> None:
    """pysqlite's own transaction handling breaks SAVEPOINTs: issue BEGIN ourselves (IMMEDIATE for writes)."""

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("cg_write") else "BEGIN")


def _sql_table(info: _Table, values: Mapping[str, Any]) -> Any:
    names = {c.name for c in info.columns.values()} | set(values)
    if info.status is not None:
        names.add(info.status.name)
    return table(info.settings.table, *(column(n) for n in sorted(names)), schema=info.settings.schema or None)


# ---------------------------------------------------------------- values

def _python_type(sql_type: Any) -> type | None:
    try:
        kind = sql_type.python_type
    except NotImplementedError:
        return None
    return kind if isinstance(kind, type) else None


def _typed(value: Any, col: _Column, strict: bool = True) -> Any:
    """``value`` as its column's Python type (None for empty); ValueProblem names the column when it cannot be."""
    if value is None or value == "":
        return None
    kind = col.kind
    try:
        if kind is dt.datetime:
            return value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))
        if kind is dt.date:
            if isinstance(value, dt.datetime):
                return value.date()
            return value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value))
        if kind is Decimal:
            return Decimal(repr(value) if isinstance(value, float) else str(value))
        if kind is int and not isinstance(value, bool):
            return int(value)
        if kind is float:
            return float(value)
    except (ValueError, TypeError, InvalidOperation):
        if not strict:
            return value
        raise ValueProblem(f"{col.name}: {value!r} does not fit the column's type ({kind.__name__ if kind else '?'})"
                           ) from None
    text = value if isinstance(value, str) or kind is not str else str(value)
    if strict and isinstance(text, str) and (reason := control_reason(text, free_text=True)):
        raise ValueProblem(f"{col.name}: {reason}")  # PostgreSQL cannot store NUL; none of them belongs there
    return text


def _bind(value: Any, sqlite: bool) -> Any:
    """What the driver gets: SQLite keeps dates as ISO text and decimals as text (its affinity converts them)."""
    if sqlite and isinstance(value, dt.date | Decimal):
        return value.isoformat() if isinstance(value, dt.date) else str(value)
    return value


def _render(value: Any) -> str | None:
    """One canonical text per value, whatever the driver returned (date, Decimal, float, int or text)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, float):
        value = Decimal(repr(value))
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    return str(value)


def _digest(info: _Table, values: Mapping[str, Any]) -> str:
    rendered = {c: r for c, v in sorted(values.items()) if (r := _render(v)) is not None}
    return hashlib.sha256(orjson.dumps(rendered, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]


# MySQL/MariaDB error numbers that refuse one row but are raised as OperationalError by the driver: a CHECK
# constraint (MariaDB 4025, MySQL 3819), a value out of range or of the wrong kind in strict mode.
_MYSQL_ROW_ERRORS = frozenset({4025, 3819, 1264, 1265, 1292, 1366, 1406})


def _row_refused(exc: SQLAlchemyError) -> bool:
    """Whether the database refused this row alone (the transaction goes on), not the connection failing."""
    if isinstance(exc, IntegrityError | DataError):
        return True
    args: tuple[Any, ...] = getattr(getattr(exc, "orig", None), "args", ())
    return bool(args) and args[0] in _MYSQL_ROW_ERRORS


def _message(exc: SQLAlchemyError) -> str:
    orig = getattr(exc, "orig", None)
    return (str(orig) if orig is not None else str(exc)).strip().splitlines()[0][:500]


# ---------------------------------------------------------------- settings

def _check_table(settings: TableSettings, fields: Sequence[str], where: str) -> list[Problem]:
    problems = []
    names = [settings.table, *([settings.schema] if settings.schema else [])]
    problems += [Problem(f"{where}.table", f"not a plain name: {n!r}") for n in names if not _IDENT.match(n)]
    if not settings.key_columns:
        problems.append(Problem(f"{where}.key_columns", "at least one key column is needed"))
    for i, key in enumerate(settings.key_columns):
        if key not in fields:
            problems.append(Problem(f"{where}.key_columns[{i}]", f"{key!r} is not a field of the outbound mapping "
                                                                 f"({', '.join(fields)})"))
    bad = [f for f in fields if not _IDENT.match(f)]
    if bad:
        problems.append(Problem(where, f"mapped field(s) {', '.join(bad)} are not plain column names"))
    if settings.on_withdraw == "mark" and not settings.status_column:
        problems.append(Problem(f"{where}.status_column", 'required with on_withdraw = "mark"'))
    if settings.status_column and not _IDENT.match(settings.status_column):
        problems.append(Problem(f"{where}.status_column", f"not a plain name: {settings.status_column!r}"))
    if settings.status_column in fields:
        problems.append(Problem(f"{where}.status_column", "is also a field of the mapping: use another column"))
    return problems


