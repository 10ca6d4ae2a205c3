"""SQL source: polls a department table (or query) for rows changed since the last watermark.

The cursor is ``(update value, key values)`` of the last row taken. Each fetch asks for rows strictly
after it in ``(update column, key columns)`` order, so rows that share an update timestamp at a batch
boundary are neither skipped nor read twice. ``lookback_s`` re-reads a window before the watermark for
rows committed late with an older update time (a long transaction, or a second edit in the watermark's second
of a second-resolution column): unset, it is the database's default (:data:`DEFAULT_LOOKBACK_S`, timestamp
columns only). Re-read rows that did not change are recognised by their mark in the ledger and not sent,
quarantined or logged again. The engine saves the cursor in the same transaction as the rows, so the watermark
only advances after the intake commit. A row committed later than the window is found by the source audit
(:meth:`SqlSource.audit_marks`, gateway.pipeline.audit); docs/sources.md says how to size the window.
"""

from __future__ import annotations

import codecs
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Self

from sqlalchemy import text
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from adapters.sql.pages import QuerySpec, SqlitePageReader, audit_bound, mark, page_batch, row_key, select_page
from adapters.sql.url import database_url, password_credentials, pin_session, url_secrets
from gateway.adapter import AdapterContext, Credential, SourceBatch
from gateway.errors import ConfigError, Problem, RetryableError
from gateway.settings import parse_settings, setting

log = logging.getLogger("adapters.sql_source")
# The look-back when ``lookback_s`` is not set, by database (docs/sources.md). SQLite has one writer at a time and
# its timestamps are text the application writes, often to the second: the window covers a second edit in the
# watermark's second and the short wait of a queued writer. PostgreSQL's now() and CURRENT_TIMESTAMP are the
# time the transaction *began*, and MySQL's are the statement's: a row commits with the start time of its
# transaction, however long that ran, so the window must cover the longest write transaction.
DEFAULT_LOOKBACK_S: Mapping[str, float] = {"sqlite": 10.0}
DEFAULT_LOOKBACK_OTHER_S = 60.0
_KEY_CHUNK = 400  # key values per re-read query of the audit
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")


@dataclass(frozen=True)
class SqlSourceSettings:
    url: str = setting(help="sqlite:///path, postgresql://, mysql:// or mariadb://user@host/db (password via "
                                 "password_env; docs/databases.md)")
    table: str = setting("", help="table to read; or give `query`")
    query: str = setting("", help="a SELECT whose columns include the key and update columns")
    key_columns: list[str] = setting(["id"], help="columns that identify a row (tie-breaker)")
    update_column: str = setting("gxsj", help="column that grows on every change (timestamp or sequence)")
    lookback_s: float | None = setting(None, help="re-read this many seconds before the watermark, for late commits; "
                                                  "unset: 10 (SQLite) or 60 (other databases) for a timestamp "
                                                  "column, 0 for a sequence; 0 turns it off (docs/sources.md)")
    password_env: str = setting("", help="environment variable holding the database password")
    encoding: str = setting("utf-8", help="text encoding of a SQLite database's TEXT columns (utf-8, gbk, gb18030)")


class SqlSource:
    """Reads changed rows from a table in (update column, key) order."""

    Settings: ClassVar[type] = SqlSourceSettings  # its TOML table, documented in docs/configuration.md

    def __init__(self, settings: SqlSourceSettings, url: str, name: str) -> None:
        self.settings = settings
        self.name = name
        self._url = url
        self._engine: AsyncEngine | None = None
        self._draining = False  # the look-back window is re-read once per poll, not on every page
        self._null_rows = 0
        self._sqlite = False
        self._spec = QuerySpec(name, self._from(), (settings.update_column, *settings.key_columns),
                               tuple(settings.key_columns), settings.lookback_s or 0.0, settings.encoding, False)
        self.secrets = url_secrets(url)

    def credential_sources(self) -> list[Credential]:
        return password_credentials(self.settings.password_env)

    @classmethod
    def from_settings(cls, raw: Mapping[str, Any], ctx: AdapterContext) -> tuple[SqlSource | None, list[Problem]]:
        settings, problems = parse_settings(SqlSourceSettings, raw, ctx.path, ctx.common_keys)
        if settings is None:
            return None, problems
        problems += _check_identifiers(settings, ctx.path)
        try:
            codecs.lookup(settings.encoding)
        except LookupError:
            problems.append(Problem(f"{ctx.path}.encoding", f"unknown encoding {settings.encoding!r}"))
        url, problem = database_url(settings.url, settings.password_env, ctx)
        if problem:
            problems.append(problem)
        return (cls(settings, url, ctx.name), []) if not problems else (None, problems)

    async def __aenter__(self) -> Self:
        try:
            self._engine = create_async_engine(self._url)
        except (ArgumentError, ImportError) as exc:
            raise ConfigError([Problem("url", str(exc))], f"source {self.name}") from exc
        pin_session(self._engine)
        # SQLite stores whatever bytes it was given. UTF-8 databases are read as text (fast, in C); a page
        # with a value that is not UTF-8 is read again as bytes and decoded here, row by row. Databases in
        # another encoding are always read as bytes.
        self._sqlite = self._engine.dialect.name == "sqlite"
        always_bytes = self._sqlite and codecs.lookup(self.settings.encoding).name != "utf-8"
        self._spec = replace(self._spec, always_bytes=always_bytes, lookback_s=self.lookback_s(),
                             lookback_numbers=self.settings.lookback_s is not None)
        return self

    async def __aexit__(self, t: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None

    def lookback_s(self) -> float:
        """The look-back window in force: the setting, or the database's default (:data:`DEFAULT_LOOKBACK_S`)."""
        if self.settings.lookback_s is not None:
            return self.settings.lookback_s
        dialect = self._engine.dialect.name if self._engine is not None else "sqlite"
        return DEFAULT_LOOKBACK_S.get(dialect, DEFAULT_LOOKBACK_OTHER_S)

    def warnings(self) -> list[str]:
        """A timestamp column read with no look-back loses late commits until the next source audit."""
        if self.settings.lookback_s != 0:
            return []
        return [f"sources.{self.name}.lookback_s = 0: a row committed with a {self.settings.update_column} at or "
                f"before the watermark (a late commit, or a second edit in the watermark's second) is found only by "
                f"the source audit; leave lookback_s unset for the default (docs/sources.md), or ignore this if "
                f"{self.settings.update_column} is a sequence"]

    async def columns(self) -> list[str]:
        """The column names the table or query yields (for checking a mapping against the source)."""
        sql = f"SELECT * FROM ({self._from()}) AS src WHERE 1 = 0"  # noqa: S608 - identifiers checked
        try:
            async with self._connect() as conn:
                result = await conn.execute(text(sql))
                return list(result.keys())
        except SQLAlchemyError as exc:
            raise RetryableError(f"source {self.name}: {_reason(exc)}") from exc
        except OSError as exc:
            raise RetryableError(f"source {self.name}: {exc}") from exc

    async def fetch(self, cursor: Any, limit: int) -> SourceBatch:
        window = not self._draining and self._spec.lookback_s > 0
        sql, params = select_page(self._spec, cursor, limit, self._draining)
        as_bytes = self._spec.always_bytes
        try:
            rows = await self._query(sql, params, as_bytes)
        except SQLAlchemyError as exc:
            if not (self._sqlite and "decode" in str(exc)):
                raise RetryableError(f"source {self.name}: {_reason(exc)}") from exc
            as_bytes = True
            rows = await self._query(sql, params, as_bytes)
        self._draining = len(rows) >= limit
        return page_batch(self._spec, rows, cursor, limit, as_bytes, window)

    def page_reader(self) -> SqlitePageReader | None:
        """:meth:`fetch` of a page after the first of a poll, as a picklable, synchronous callable that a mapping
        worker runs itself: while a backlog is drained, its rows are read, decoded and mapped there and never
        cross into the daemon. SQLite databases in a file only; other databases are read here.

        The first page of a poll is always fetched here: it re-reads the look-back window and checks for rows
        without an update value, and a trickle of changes is answered without a trip to the worker. The poll's
        last page is read by the worker, so the next poll starts afresh (with the look-back window)."""
        if not self._sqlite or self._engine is None:
            return None
        database = self._engine.url.database
        if not database or database == ":memory:" or database.startswith("file:"):
            return None
        self._draining = False
        return SqlitePageReader(self._spec, database)

    async def _query(self, sql: str, params: dict[str, Any], as_bytes: bool) -> list[dict[str, Any]]:
        try:
            async with self._connect() as conn:
                if not self._draining:
                    await self._warn_null_rows(conn)
                raw = await conn.get_raw_connection() if as_bytes else None
                if raw is not None:
                    raw.driver_connection.text_factory = bytes
                try:
                    result = await conn.execute(text(sql), params)
                    keys = list(result.keys())
                    return [dict(zip(keys, row, strict=True)) for row in result.all()]
                finally:
                    if raw is not None:
                        raw.driver_connection.text_factory = str
        except (OSError, ValueError) as exc:
            raise RetryableError(f"source {self.name}: {exc}") from exc

    async def _warn_null_rows(self, conn: Any) -> None:
        """Rows whose update column is NULL cannot be placed after the watermark: say so, once per change."""
        col = self.settings.update_column
        count = (await conn.execute(text(
            f"SELECT COUNT(*) FROM ({self._from()}) AS src WHERE {col} IS NULL"))).scalar()  # noqa: S608
        if count and count != self._null_rows:
            log.warning("rows without an update value are not read", extra={
                "source": self.name, "column": col, "rows": count})
        self._null_rows = int(count or 0)

    async def audit_marks(self, cursor: Any) -> list[tuple[str, tuple[Any, ...], str]]:
        """The key, key values and mark (update value as text) of every row behind the watermark ``cursor`` and
        its look-back window, in key order: the source audit's scan, which reads the key and update columns only.
        Nothing before the first poll."""
        if not cursor:
            return []
        keys, update = self.settings.key_columns, self.settings.update_column
        sql = (f"SELECT {', '.join(keys)}, {update} FROM ({self._from()}) AS src "  # noqa: S608 - identifiers checked
               f"WHERE {update} <= :bound ORDER BY {', '.join(keys)}")
        try:
            rows = await self._query(sql, {"bound": audit_bound(self._spec, cursor)}, False)
        except SQLAlchemyError as exc:
            raise RetryableError(f"source {self.name}: {type(exc).__name__}") from exc
        return [(row_key(self._spec, row), tuple(row[k] for k in keys), mark(row[update])) for row in rows]

    async def fetch_keys(self, keys: Sequence[tuple[Any, ...]]) -> SourceBatch:
        """The whole rows of ``keys`` (key values, as :meth:`audit_marks` gives them), marked, read as a page is."""
        rows: list[dict[str, Any]] = []
        as_bytes = self._spec.always_bytes
        cols = self.settings.key_columns
        for start in range(0, len(keys), _KEY_CHUNK):
            chunk = keys[start:start + _KEY_CHUNK]
            params = {f"k{i}_{j}": value for i, key in enumerate(chunk) for j, value in enumerate(key)}
            match = " OR ".join("(" + " AND ".join(f"{c} = :k{i}_{j}" for j, c in enumerate(cols)) + ")"
                                for i in range(len(chunk)))
            sql = f"SELECT * FROM ({self._from()}) AS src WHERE {match}"  # noqa: S608 - identifiers checked
            try:
                rows += await self._query(sql, params, as_bytes)
            except SQLAlchemyError as exc:
                if not (self._sqlite and "decode" in str(exc)):
                    raise RetryableError(f"source {self.name}: {type(exc).__name__}") from exc
                as_bytes = True
                rows += await self._query(sql, params, as_bytes)
        return page_batch(self._spec, rows, None, len(rows) + 1, as_bytes)

    async def ack(self, cursor: Any) -> None:
        """Nothing to do: the cursor lives in the gateway's store, committed with the rows."""

    # ------------------------------------------------------------ SQL

    def _connect(self) -> Any:
        if self._engine is None:
            raise RuntimeError("source used outside `async with`")
        database = self._engine.url.database
        if self._sqlite and database and database != ":memory:" and not database.startswith("file:") \
                and not Path(database).is_file():  # sqlite3 would create an empty database there
            raise RetryableError(f"source {self.name}: database file not found: {database}")
        return self._engine.connect()

    def _from(self) -> str:
        return self.settings.query or f"SELECT * FROM {self.settings.table}"  # noqa: S608 - identifier checked


def _reason(exc: SQLAlchemyError) -> str:
    """The database's own message, one line (not SQLAlchemy's SQL echo and background link)."""
    orig = getattr(exc, "orig", None)
    detail = str(orig if orig is not None else (exc.args[0] if exc.args else exc)).strip().splitlines()
    return f"{type(orig or exc).__name__}: {detail[0] if detail else ''}"


def _check_identifiers(settings: SqlSourceSettings, where: str) -> list[Problem]:
    problems = []
    if bool(settings.table) == bool(settings.query):
        problems.append(Problem(f"{where}.table", "give exactly one of `table` or `query`"))
    if settings.table and not _IDENT.match(settings.table):
        problems.append(Problem(f"{where}.table", f"not a plain table name: {settings.table!r}"))
    if settings.query and not settings.query.lstrip().lower().startswith("select"):
        problems.append(Problem(f"{where}.query", "must be a SELECT"))
    for i, col in enumerate([settings.update_column, *settings.key_columns]):
        if not _IDENT.match(col):
            problems.append(Problem(f"{where}.{'update_column' if i == 0 else 'key_columns'}",
                                    f"not a plain column name: {col!r}"))
    if not settings.key_columns:
        problems.append(Problem(f"{where}.key_columns", "at least one key column is needed"))
    return problems


