"""DDL of the national 互联网+监管 front-end (前置库) tables, from the outbound mappings and the canonical field table.

One table per action type (``mappings/national-*.toml``: its ``table_code`` names the table, its fields the
columns), plus the envelope the national side reads (``cd_id`` … ``cd_operation``, ``record_unique_identity``),
the columns it writes back (``deal_status``, ``deal_message``, ``deal_time``) and the sink's own two tables.
Types are the portable subset (VARCHAR, DATE, DECIMAL, TIMESTAMP, INTEGER) that SQLite, PostgreSQL, MariaDB and
Oracle all take. ``python -m adapters.national.ddl DIR`` rewrites the shipped files (``mappings/national/ddl``).
"""

from __future__ import annotations

import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path

from gateway.domain.datasets import get_dataset
from gateway.domain.fields import Dataset, FieldSpec

ENVELOPE = (
    ("cd_id", "VARCHAR(64) NOT NULL PRIMARY KEY", "主键（部门编码主键）: department code + digest of key and version"),
    ("cd_time", "TIMESTAMP NOT NULL", "插入时间"),
    ("cd_source", "VARCHAR(32) NOT NULL", "来源: 省份区划代码 + 部门编码"),
    ("cd_batch", "VARCHAR(13) NOT NULL", "批次号: YYYYMMDD + 5-digit sequence of the day"),
    ("cd_operation", "CHAR(1) NOT NULL", "i insert / u update / d delete"),
    ("record_unique_identity", "VARCHAR(256) NOT NULL", "记录唯一标识: the gateway's record key"),
)
READ_BACK = (
    ("deal_status", "VARCHAR(2)", "written by the national side: NULL/0 waiting, 1 processed, 2 rejected"),
    ("deal_message", "VARCHAR(2000)", "written by the national side: why a row was rejected"),
    ("deal_time", "TIMESTAMP", "written by the national side: when it processed the row"),
)
SINK_TABLES = """\
-- The national_frontdb sink's own bookkeeping (created by the sink when missing).
CREATE TABLE cg_national_sequence (
    batch_day VARCHAR(8) NOT NULL PRIMARY KEY,   -- YYYYMMDD (China time)
    last_sequence INTEGER NOT NULL               -- the day's last cd_batch sequence
);
CREATE TABLE cg_national_batches (
    batch_id VARCHAR(64) NOT NULL PRIMARY KEY,   -- the gateway's batch id (a retried batch keeps its cd_batch)
    cd_batch VARCHAR(13) NOT NULL,
    dataset VARCHAR(32) NOT NULL,
    written_at TIMESTAMP NOT NULL
);
"""


def column_type(spec: FieldSpec) -> str:
    """The portable SQL type of one canonical field."""
    if spec.kind == "date":
        return "DATE"
    if spec.kind == "decimal":
        return "DECIMAL(18,2)"
    if spec.kind == "list":
        return "VARCHAR(500)"
    if spec.kind == "code":
        return "VARCHAR(100)"
    return f"VARCHAR({spec.max_len or 4000})"


def table_ddl(table: str, dataset: Dataset, columns: Sequence[tuple[str, str]]) -> str:
    """``CREATE TABLE`` of one action type: ``columns`` are (national column, canonical field) pairs."""
    specs = dataset.by_name()
    lines = [f"    {name} {kind}, -- {note}" for name, kind, note in ENVELOPE]
    lines += [f"    {column} {column_type(specs[field])}, -- {specs[field].label.split(' ')[0]}"
              for column, field in columns]
    lines += [f"    {name} {kind}, -- {note}" for name, kind, note in READ_BACK]
    lines[-1] = lines[-1].replace(", --", "  --", 1)
    index = f"CREATE INDEX ix_{table}_identity ON {table} (record_unique_identity);\n"
    status = f"CREATE INDEX ix_{table}_status ON {table} (cd_batch, deal_status);\n"
    return (f"-- {dataset.label} ({dataset.name}): the national 互联网+监管 front-end table, generated from "
            f"mappings/national-{dataset.name.replace('_', '-')}.toml\n"
            f"CREATE TABLE {table} (\n" + "\n".join(lines) + "\n);\n" + index + status)


def read_outbound(path: Path) -> tuple[str, Dataset, list[tuple[str, str]]]:
    """An outbound national mapping's table, dataset and (column, canonical field) pairs, read as plain TOML."""
    doc = tomllib.loads(path.read_text(encoding="utf-8"))
    head = doc["mapping"]
    columns = [(column, str(raw["from"])) for column, raw in doc.get("fields", {}).items()]
    return str(head["table_code"]), get_dataset(str(head["dataset"])), columns


def write_ddl(directory: Path, mappings_dir: Path) -> list[Path]:
    """Write one file per action type and the sink's tables; the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for path in sorted(mappings_dir.glob("national-*.toml")):
        table, dataset, columns = read_outbound(path)
        out = directory / f"{table}.sql"
        out.write_text(table_ddl(table, dataset, columns), encoding="utf-8")
        written.append(out)
    sink = directory / "cg_national_sink.sql"
    sink.write_text(SINK_TABLES, encoding="utf-8")
    return [*written, sink]


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    root = Path(__file__).resolve().parents[2] / "mappings"
    for path in write_ddl(Path(args[0]) if args else root / "national" / "ddl", root):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
