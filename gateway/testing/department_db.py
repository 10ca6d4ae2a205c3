"""A realistic sample department database (SQLite) for the demo, the tests, the crash test and the benchmark.

Two tables with the department's own column names (``xzcf`` 行政处罚, ``xzxk`` 行政许可), rows from
:mod:`gateway.testing.rows`, and ``gxsj``, the last-update timestamp (UTC, ``YYYY-MM-DD HH:MM:SS.ffffff``),
indexed with ``id`` for watermark reads. A configurable fraction of rows is broken on purpose, evenly over
:data:`INVALID_KINDS`, and reported in :class:`SampleResult` so tests can check the gateway quarantines exactly
those. :func:`apply_changes`, :func:`insert_rows` and :func:`same_gxsj_rows` then change the database the way a
department system does. Inserts are chunked, so memory does not grow with the row count.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import random
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from gateway.domain.identifiers import check_resident_id, check_uscc, id_check_char, is_placeholder, uscc_check_char
from gateway.testing.rows import (
    COLUMNS,
    DATE_COLUMNS,
    EDIT_COLUMN,
    FIXABLE,
    KNOWN_CFLB,
    LONG_TERM,
    PLATFORM_NAME_LIMIT,
    REAL_COLUMNS,
    TEXT_COLUMN,
    RowMaker,
    as_utc,
    format_gxsj,
    make_uscc,
    sample_calendar,
    sample_pools,
    utc_today,
    utcnow,
)

INVALID_KINDS: Final = ("bad_uscc", "placeholder_uscc", "missing_required", "future_date", "unknown_code",
                        "bad_id", "platform_reject")
CHANGES: Final = frozenset({"touch", "edit", "revoke", "object", "repair", "fix"})
_CHUNK: Final = 10_000
_STATUS: Final = {"revoke": "1", "object": "2", "repair": "3"}
_DEFAULT_SEED: Final = 2026


def _table_ddl(table: str) -> str:
    cols = ", ".join(f"{c} {'REAL' if c in REAL_COLUMNS else 'TEXT'}" for c in COLUMNS[table])
    return f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, {cols}, gxsj TEXT NOT NULL)"


def _index_ddl(table: str) -> str:
    """The (gxsj, id) index watermark reads use; created after the bulk load, which is faster."""
    return f"CREATE INDEX ix_{table}_gxsj_id ON {table} (gxsj, id)"


def _insert_sql(table: str) -> str:
    names = ("id", *COLUMNS[table], "gxsj")
    return f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"  # noqa: S608


def _check_table(table: str) -> None:
    if table not in COLUMNS:
        raise ValueError(f"unknown table {table!r}; known: {', '.join(sorted(COLUMNS))}")




# ---------------------------------------------------------------- public API


@dataclass(frozen=True)
class SampleSpec:
    """What to generate: row counts, the fraction of broken rows, the seed and the reference day."""

    licences: int = 1500
    penalties: int = 1500
    invalid_fraction: float = 0.02
    seed: int = 2026
    today: dt.date = field(default_factory=utc_today)
    natural_person_fraction: float = 0.15

    def __post_init__(self) -> None:
        if self.licences < 0 or self.penalties < 0:
            raise ValueError("row counts must not be negative")
        if not (0 <= self.invalid_fraction <= 1 and 0 <= self.natural_person_fraction <= 1):
            raise ValueError("invalid_fraction and natural_person_fraction must be between 0 and 1")


@dataclass(frozen=True)
class SampleResult:
    """Where the database is, how many rows each table has, and which rows are broken how."""

    path: Path
    licences: int
    penalties: int
    invalid: dict[str, dict[int, str]]

    def valid_ids(self, table: str) -> set[int]:
        """Ids expected to pass the gateway's validation (platform_reject rows included)."""
        _check_table(table)
        count = self.penalties if table == "xzcf" else self.licences
        broken = {i for i, kind in self.invalid.get(table, {}).items() if kind != "platform_reject"}
        return set(range(1, count + 1)) - broken


def _invalid_rows(rng: random.Random, count: int, fraction: float) -> dict[int, str]:
    """Which row ids are broken and how: round(count * fraction) ids, kinds taken in turn."""
    chosen = rng.sample(range(1, count + 1), round(count * fraction))
    return {row_id: INVALID_KINDS[i % len(INVALID_KINDS)] for i, row_id in enumerate(chosen)}


@contextlib.contextmanager
def _connect(path: Path) -> Iterator[sqlite3.Connection]:
    """A connection in autocommit mode (transactions are explicit), closed on exit."""
    conn = sqlite3.connect(path, timeout=30, isolation_level=None)
    try:
        yield conn
    finally:
        conn.close()


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _remove_db(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def _fill(conn: sqlite3.Connection, table: str, count: int, maker: RowMaker, invalid: dict[int, str]) -> None:
    """Insert rows 1..count in chunks (memory stays flat)."""
    sql = _insert_sql(table)
    for start in range(1, count + 1, _CHUNK):
        stop = min(start + _CHUNK, count + 1)
        conn.executemany(sql, [maker.row(table, i, invalid.get(i)) for i in range(start, stop)])


def create_department_db(path: Path, spec: SampleSpec | None = None) -> SampleResult:
    """Create (or replace) the department database at ``path`` and fill it as ``spec`` says."""
    spec = spec or SampleSpec()
    path = Path(path)
    _remove_db(path)
    pools, cal = sample_pools(spec.seed), sample_calendar(spec.today)
    counts = {"xzxk": spec.licences, "xzcf": spec.penalties}
    invalid: dict[str, dict[int, str]] = {}
    with _connect(path) as conn:
        # A brand-new file: no journal while loading (a WAL would hold every page twice), WAL afterwards.
        conn.execute("PRAGMA journal_mode=OFF")
        conn.execute("PRAGMA synchronous=OFF")
        with _transaction(conn):
            for table, count in counts.items():
                conn.execute(_table_ddl(table))
                maker = RowMaker(f"{spec.seed}:{table}", pools, cal, natural=spec.natural_person_fraction,
                                  by_id=False)
                invalid[table] = _invalid_rows(maker.rng, count, spec.invalid_fraction)
                _fill(conn, table, count, maker, invalid[table])
                conn.execute(_index_ddl(table))
        conn.execute("PRAGMA journal_mode=WAL")
    return SampleResult(path, spec.licences, spec.penalties, invalid)


def _append(path: Path, table: str, count: int, maker: RowMaker) -> list[int]:
    """Append ``count`` valid rows after the current maximum id, in one transaction."""
    with _connect(path) as conn, _transaction(conn):
        first = conn.execute(f"SELECT coalesce(max(id), 0) + 1 FROM {table}").fetchone()[0]  # noqa: S608
        ids = list(range(first, first + count))
        conn.executemany(_insert_sql(table), [maker.row(table, i, None) for i in ids])
    return ids


def insert_rows(path: Path, *, table: str, count: int, seed: int, today: dt.date | None = None,
                gxsj: dt.datetime | None = None) -> list[int]:
    """Append ``count`` new valid rows (recent decisions) sharing one gxsj (default now); return their ids.

    ``seed`` drives the rows; their subjects come from the default seed's population (built once per
    process), so a trickle of calls with changing seeds stays cheap.
    """
    _check_table(table)
    moment = as_utc(gxsj or utcnow())
    maker = RowMaker(f"{seed}:{table}:append", sample_pools(_DEFAULT_SEED), sample_calendar(today or moment.date()),
                      natural=SampleSpec.natural_person_fraction, by_id=True)
    maker.gxsj, maker.max_age = format_gxsj(moment), 7
    return _append(path, table, count, maker)


def same_gxsj_rows(path: Path, *, table: str, count: int, gxsj: dt.datetime) -> list[int]:
    """Insert ``count`` valid rows that all carry exactly the same gxsj (watermark-boundary tests)."""
    seed = int(as_utc(gxsj).timestamp() * 1_000_000) + count
    return insert_rows(path, table=table, count=count, seed=seed, gxsj=gxsj)


# ---------------------------------------------------------------- later changes


def _edit_sql(table: str) -> str:
    col = EDIT_COLUMN[table]
    cut = f"CASE WHEN instr({col}, '（更正于') > 0 THEN instr({col}, '（更正于') - 1 ELSE length({col}) END"
    new = f"CASE WHEN {col} = '' THEN '' ELSE substr({col}, 1, {cut}) || '（更正于' || ? || '）' END"
    return f"UPDATE {table} SET {col} = {new}, gxsj = ? WHERE id = ?"  # noqa: S608


def _simple_change(conn: sqlite3.Connection, table: str, ids: list[int], change: str, stamp: str) -> None:
    if change == "touch":
        conn.executemany(f"UPDATE {table} SET gxsj = ? WHERE id = ?", [(stamp, i) for i in ids])  # noqa: S608
    elif change == "edit":
        conn.executemany(_edit_sql(table), [(stamp, stamp, i) for i in ids])
    else:
        conn.executemany(f"UPDATE {table} SET zt = ?, gxsj = ? WHERE id = ?",  # noqa: S608
                         [(_STATUS[change], stamp, i) for i in ids])


def apply_changes(path: Path, *, table: str, ids: Iterable[int], change: str,
                  now: dt.datetime | None = None) -> None:
    """Change rows the way a department system does; every change sets gxsj to ``now`` (default: now, UTC).

    ``touch`` bumps gxsj only, ``edit`` rewrites the 处罚内容/许可内容 text, ``revoke``/``object``/``repair``
    set zt to 1/2/3, ``fix`` repairs whatever makes a row invalid. One transaction.
    """
    _check_table(table)
    if change not in CHANGES:
        raise ValueError(f"unknown change {change!r}; known: {', '.join(sorted(CHANGES))}")
    moment = as_utc(now or utcnow())
    stamp, id_list = format_gxsj(moment), list(ids)
    with _connect(path) as conn, _transaction(conn):
        if change == "fix":
            _fix_rows(conn, table, id_list, stamp, moment.date())
        else:
            _simple_change(conn, table, id_list, change, stamp)


def _fix_rows(conn: sqlite3.Connection, table: str, ids: list[int], stamp: str, today: dt.date) -> None:
    cols = FIXABLE[table]
    select = f"SELECT {', '.join(cols)} FROM {table} WHERE id = ?"  # noqa: S608
    update = f"UPDATE {table} SET {', '.join(f'{c} = ?' for c in cols)}, gxsj = ? WHERE id = ?"  # noqa: S608
    for row_id in ids:
        found = conn.execute(select, (row_id,)).fetchone()
        if found is not None:
            fixed = _repaired(dict(zip(cols, found, strict=True)), table, row_id, today)
            conn.execute(update, (*(fixed[c] for c in cols), stamp, row_id))


_Fixer = Callable[[dict[str, Any], str, int, dt.date], None]


def _repaired(row: dict[str, Any], table: str, row_id: int, today: dt.date) -> dict[str, Any]:
    """A copy of a row's fixable fields with every problem the generator can introduce repaired."""
    fixed = {c: v if v is not None else "" for c, v in row.items()}
    fixers: tuple[_Fixer, ...] = (_fix_category, _fix_codes, _fix_uscc, _fix_ids, _fix_texts, _fix_dates)
    for fixer in fixers:
        fixer(fixed, table, row_id, today)
    return fixed


def _fix_category(row: dict[str, Any], table: str, row_id: int, today: dt.date) -> None:
    """An unknown 相对人类别 is derived again from the codes the row carries."""
    if row["xdr_lb"] not in ("1", "2", "3"):
        code = row["tyshxydm"]
        row["xdr_lb"] = "3" if code.startswith("92") else "2" if not code and row["zjhm"] else "1"


def _fix_codes(row: dict[str, Any], table: str, row_id: int, today: dt.date) -> None:
    """Unknown 处罚类别 codes are dropped (the generator appends them to the real ones)."""
    if table == "xzcf":
        row["cflb"] = ",".join(c for c in row["cflb"].split(",") if c in KNOWN_CFLB) or "99"


def _fix_uscc(row: dict[str, Any], table: str, row_id: int, today: dt.date) -> None:
    """A wrong check character is recomputed; a placeholder or malformed code is replaced by a valid one."""
    code = row["tyshxydm"]
    if row["xdr_lb"] == "2" or check_uscc(code) is None:
        return
    candidate = ""
    with contextlib.suppress(ValueError):
        candidate = code[:17] + uscc_check_char(code[:17])
    if is_placeholder(code) or check_uscc(candidate) is not None:
        prefix = "92" if row["xdr_lb"] == "3" else "91"
        candidate = make_uscc(prefix, "320505", f"MA{row_id % 10**6:06d}")
    row["tyshxydm"] = candidate


def _fixed_id(number: str, today: dt.date) -> str:
    if not number or check_resident_id(number, today=today) is None:
        return number
    return number[:17] + id_check_char(number[:17])


def _fix_ids(row: dict[str, Any], table: str, row_id: int, today: dt.date) -> None:
    row["zjhm"] = _fixed_id(row["zjhm"], today)
    row["fddbr_zjhm"] = _fixed_id(row["fddbr_zjhm"], today)


def _fix_texts(row: dict[str, Any], table: str, row_id: int, today: dt.date) -> None:
    """An over-long name loses its note; an empty name or required text is filled in."""
    name = row["xdr_mc"]
    if len(name) > PLATFORM_NAME_LIMIT:
        row["xdr_mc"] = name.split("（", 1)[0][:PLATFORM_NAME_LIMIT]
    elif not name:
        pools = sample_pools(_DEFAULT_SEED)
        pool = {"2": pools.persons, "3": pools.shops}.get(row["xdr_lb"], pools.organisations)
        row["xdr_mc"] = pool[row_id % len(pool)][0]
    text = TEXT_COLUMN[table]
    if not row[text]:
        row[text] = "经查，当事人存在上述违法行为，事实清楚，证据确凿。" if table == "xzcf" else "准予许可"


def _parse_slash(value: str) -> dt.date:
    return dt.datetime.strptime(value, "%Y/%m/%d").date()  # noqa: DTZ007 - a calendar date, no time zone


def _fix_dates(row: dict[str, Any], table: str, row_id: int, today: dt.date) -> None:
    """A decision date after ``today`` moves to yesterday; the row's other dates move with it."""
    shift = (today - dt.timedelta(days=1)) - _parse_slash(row["jdrq"])
    if shift.days >= 0:
        return
    for col in DATE_COLUMNS[table]:
        if row[col] and row[col] != LONG_TERM:
            row[col] = f"{_parse_slash(row[col]) + shift:%Y/%m/%d}"


# ---------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m gateway.testing.department_db PATH [--licences N] [--penalties N] [--invalid-fraction F]
    [--seed S]``."""
    parser = argparse.ArgumentParser(prog="python -m gateway.testing.department_db",
                                     description="Create a sample department database (SQLite).")
    parser.add_argument("path", type=Path)
    parser.add_argument("--licences", type=int, default=SampleSpec.licences)
    parser.add_argument("--penalties", type=int, default=SampleSpec.penalties)
    parser.add_argument("--invalid-fraction", type=float, default=SampleSpec.invalid_fraction)
    parser.add_argument("--seed", type=int, default=SampleSpec.seed)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    result = create_department_db(args.path, SampleSpec(licences=args.licences, penalties=args.penalties,
                                                        invalid_fraction=args.invalid_fraction, seed=args.seed))
    broken = sum(len(v) for v in result.invalid.values())
    print(f"{result.path}: {result.licences} licences (xzxk), {result.penalties} penalties (xzcf), "
          f"{broken} invalid, in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
