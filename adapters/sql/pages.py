"""Reading one page of a SQL source: the query after a cursor, and the rows as a batch.

Shared by :class:`adapters.sql.source.SqlSource` (which runs the query through SQLAlchemy in the daemon) and
:class:`SqlitePageReader`, which a mapping worker (pipeline.workers) runs itself on a SQLite file while a backlog
is drained. This module imports no database library beyond ``sqlite3``, so a worker starts without
SQLAlchemy.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from gateway.adapter import SourceBatch, SourceRow
from gateway.errors import Problem, RetryableError
from gateway.text import escape_controls


@dataclass(frozen=True, slots=True)
class QuerySpec:
    """What a page read needs to know of the source, picklable (for :class:`SqlitePageReader`)."""

    name: str
    source_sql: str  # the table as a SELECT, or the configured query
    cols: tuple[str, ...]  # the update column, then the key columns
    key_columns: tuple[str, ...]
    lookback_s: float
    encoding: str
    always_bytes: bool  # TEXT is read as bytes and decoded with ``encoding`` (SQLite, not UTF-8)
    lookback_numbers: bool = True  # the window also applies to a numeric update column (set explicitly)


def select_page(spec: QuerySpec, cursor: Any, limit: int, draining: bool) -> tuple[str, dict[str, Any]]:
    cols = spec.cols
    order = ", ".join(cols)
    present = f"{cols[0]} IS NOT NULL"  # rows without an update value cannot be placed: see null_rows()
    if not cursor:
        return (f"SELECT * FROM ({spec.source_sql}) AS src WHERE {present} ORDER BY {order} LIMIT :limit",  # noqa: S608
                {"limit": limit})
    params: dict[str, Any] = {"limit": limit}
    params.update({f"c{i}": _typed(v) for i, v in enumerate(cursor)})
    if spec.lookback_s and not draining and (spec.lookback_numbers or not _number(cursor[0])):
        params["c0"] = _minus(_typed(cursor[0]), spec.lookback_s)
        where = f"{cols[0]} >= :c0"
    else:
        where = _after(cols)
    return (f"SELECT * FROM ({spec.source_sql}) AS src WHERE {present} AND ({where}) "  # noqa: S608
            f"ORDER BY {order} LIMIT :limit", params)


def audit_bound(spec: QuerySpec, cursor: Any) -> Any:
    """The newest update value the source audit compares: the watermark less the look-back window (rows after it
    are the polls' to read)."""
    value = _typed(cursor[0])
    if spec.lookback_s and (spec.lookback_numbers or not _number(cursor[0])):
        return _minus(value, spec.lookback_s)
    return value


def page_batch(spec: QuerySpec, rows: list[dict[str, Any]], cursor: Any, limit: int, as_bytes: bool,
               window: bool = False) -> SourceBatch:
    """The batch of the rows a page query returned (read as bytes: decoded here, row by row). ``window``: the
    query re-read the look-back window, and the rows at or before ``cursor`` are noted (SourceBatch.behind)."""
    if not rows:
        return SourceBatch([], cursor, False)
    out = [_decoded(spec, r) for r in rows] if as_bytes else [SourceRow(row_key(spec, r), r) for r in rows]
    update = spec.cols[0]
    marks = {row.key: mark(row.data[update]) for row in out}
    behind = _behind(spec, out, cursor) if window and cursor else frozenset()
    return SourceBatch(out, [_jsonable(rows[-1][c]) for c in spec.cols], len(rows) >= limit, marks=marks,
                       behind=behind)


def _behind(spec: QuerySpec, rows: list[SourceRow], cursor: Any) -> frozenset[str]:
    at = tuple(_typed(v) for v in cursor)
    try:
        return frozenset(r.key for r in rows if tuple(r.data[c] for c in spec.cols) <= at)
    except TypeError:  # values the database gives in another type than the cursor holds: nothing is noted
        return frozenset()


def mark(value: Any) -> str:
    """A row's update value as the ledger keeps it (SourceBatch.marks): the same text however it was read."""
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    return str(value)


def _number(value: Any) -> bool:
    return (isinstance(value, int | float) and not isinstance(value, bool)) or (
        isinstance(value, dict) and "decimal" in value)


def row_key(spec: QuerySpec, row: Mapping[str, Any]) -> str:
    """The row's key columns as one text; a control character in one is written as an escape (it is stored)."""
    return escape_controls("/".join(str(row[c]) for c in spec.key_columns))


def _decoded(spec: QuerySpec, row: dict[str, Any]) -> SourceRow:
    """TEXT read as bytes (SQLite) decoded with the source's encoding; undecodable columns are problems."""
    problems = []
    for column, value in row.items():
        if isinstance(value, bytes):
            try:
                row[column] = value.decode(spec.encoding)
            except UnicodeDecodeError as exc:
                row[column] = value.decode(spec.encoding, "replace")
                problems.append(Problem(column, _decode_reason(value, spec.encoding, exc)))
    return SourceRow(row_key(spec, row), row, tuple(problems))


# A mapping worker's connections to the SQLite sources it reads, by file (a worker has one thread).
_CONNECTIONS: dict[str, sqlite3.Connection] = {}


@dataclass(frozen=True, slots=True)
class SqlitePageReader:
    """One page read of a SQLite source after the first of a poll, synchronous and picklable
    (:meth:`SqlSource.page_reader`): the batch :meth:`SqlSource.fetch` would give, with the same query, the
    same reading of text that is not UTF-8 (as bytes, decoded row by row) and retryable errors that name the
    source."""

    spec: QuerySpec
    database: str

    def __call__(self, cursor: Any, limit: int) -> SourceBatch:
        sql, params = select_page(self.spec, cursor, limit, draining=True)
        as_bytes = self.spec.always_bytes
        try:
            try:
                rows = self._query(sql, params, as_bytes)
            except sqlite3.OperationalError as exc:
                if "decode" not in str(exc):
                    raise
                as_bytes = True
                rows = self._query(sql, params, as_bytes)
        except sqlite3.Error as exc:
            stale = _CONNECTIONS.pop(self.database, None)
            if stale is not None:
                stale.close()
            raise RetryableError(f"source {self.spec.name}: {type(exc).__name__}: {exc}") from None
        return page_batch(self.spec, rows, cursor, limit, as_bytes)

    def _query(self, sql: str, params: dict[str, Any], as_bytes: bool) -> list[dict[str, Any]]:
        conn = _CONNECTIONS.get(self.database)
        if conn is None:
            if not Path(self.database).is_file():  # sqlite3 would make an empty database there
                raise sqlite3.OperationalError(f"unable to open database file {self.database}")
            conn = _CONNECTIONS[self.database] = sqlite3.connect(self.database, isolation_level=None)
        conn.text_factory = bytes if as_bytes else str
        result = conn.execute(sql, params)
        keys = [d[0] for d in result.description]
        return [dict(zip(keys, row, strict=True)) for row in result.fetchall()]


def _decode_reason(value: bytes, encoding: str, exc: UnicodeDecodeError) -> str:
    hint = ""
    if encoding.replace("-", "").lower() == "utf8":
        try:
            value.decode("gb18030")
            hint = ' (it decodes as GBK: set encoding = "gbk" for this source if the whole database is GBK)'
        except UnicodeDecodeError:
            pass
    return f"not {encoding} at byte {exc.start}: {value[max(0, exc.start - 4):exc.start + 4]!r}{hint}"


def _after(cols: Sequence[str]) -> str:
    """(c0, c1, …) > (:c0, :c1, …) spelled out, for databases without row-value comparison.

    The leading ``c0 >= :c0`` is implied by the rest, but it lets the planner start an index range at the
    watermark: without it SQLite walks the (update column, key) index from its first entry on every page, so a
    full read of a large table costs time quadratic in its rows."""
    terms = []
    for i in range(len(cols)):
        eq = [f"{cols[j]} = :c{j}" for j in range(i)]
        terms.append("(" + " AND ".join([*eq, f"{cols[i]} > :c{i}"]) + ")")
    return f"{cols[0]} >= :c0 AND (" + " OR ".join(terms) + ")"


def _jsonable(value: Any) -> Any:
    """A cursor value for the store (JSON), tagged so it is bound back with its own type (asyncpg insists)."""
    if isinstance(value, dt.datetime):
        return {"datetime": value.isoformat()}
    if isinstance(value, dt.date):
        return {"date": value.isoformat()}
    if isinstance(value, Decimal):
        return {"decimal": str(value)}
    return value


def _typed(value: Any) -> Any:
    if not (isinstance(value, dict) and len(value) == 1):
        return value
    kind, text = next(iter(value.items()))
    if kind == "datetime":
        return dt.datetime.fromisoformat(text)
    if kind == "date":
        return dt.date.fromisoformat(text)
    return Decimal(text) if kind == "decimal" else value


def _minus(value: Any, seconds: float) -> Any:
    """The watermark moved back by the look-back window (datetimes, ISO text timestamps, or numbers)."""
    if isinstance(value, int | float | Decimal):
        return value - type(value)(seconds) if isinstance(value, Decimal) else value - seconds
    if isinstance(value, dt.datetime):
        return value - dt.timedelta(seconds=seconds)
    parsed = dt.datetime.fromisoformat(str(value))
    text = (parsed - dt.timedelta(seconds=seconds)).isoformat(sep=" ")
    return text
