"""The platform side of the credit-platform sandbox: record rules, SQLite ledger, batches, receipts.

Everything here is synchronous and runs in the sandbox's single database thread (``gateway.sandbox.server``
owns the HTTP side and the faults), so batches are serialised and every dedup decision sees every
earlier commit. Memory does not grow with the number of records held: the state lives in the SQLite
file (or ``:memory:`` for tests), written with one transaction per batch.

Tables::

    held      (table_code, record_key) -> latest accepted version, operation, data, applied_count, and
              received_count: how many times that version arrived
    received  (table_code, record_key, version) -> how many times a version not held arrived (an earlier
              version's count moves here when a newer one is accepted: a new record writes only ``held``)
    batches   idempotency key -> sha256 of the request body and the exact response bytes sent
    receipts  batch id -> receipt JSON
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
import sqlite3
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, NamedTuple

import orjson

from gateway.domain.identifiers import check_uscc
from gateway.errors import StoreError

ACCEPTED = "accepted"
DUPLICATE = "duplicate"
STALE = "stale"
NOT_HELD = "not_held"  # a bare change (version > 1) of a record the platform never received: refused, 7009
NOT_HELD_PROBLEM = ("7009", "记录不存在: 撤销、异议、撤下只能针对已接收的记录")
_OPERATIONS = frozenset({"upsert", "revoke", "object", "withdraw"})
_STATUS_MESSAGES = {ACCEPTED: "成功", DUPLICATE: "重复数据，已忽略", STALE: "版本过旧，已忽略"}

# SQLite's default limit is 999 host parameters; the table code takes one.
_CHUNK = 500

_SCHEMA = """
CREATE TABLE IF NOT EXISTS held (
    id            INTEGER PRIMARY KEY,
    table_code    TEXT    NOT NULL,
    record_key    TEXT    NOT NULL,
    version       INTEGER NOT NULL,
    operation     TEXT    NOT NULL,
    data          BLOB    NOT NULL,
    applied_count INTEGER NOT NULL,
    received_count INTEGER NOT NULL DEFAULT 0,
    UNIQUE (table_code, record_key)
);
CREATE TABLE IF NOT EXISTS received (
    table_code TEXT    NOT NULL,
    record_key TEXT    NOT NULL,
    version    INTEGER NOT NULL,
    count      INTEGER NOT NULL,
    PRIMARY KEY (table_code, record_key, version)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS batches (
    idem_key    TEXT PRIMARY KEY,
    body_sha256 TEXT NOT NULL,
    response    BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS receipts (
    batch_id TEXT PRIMARY KEY,
    receipt  BLOB NOT NULL
);
"""

_UPSERT_HELD = """
INSERT INTO held (table_code, record_key, version, operation, data, applied_count, received_count)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (table_code, record_key) DO UPDATE SET
    version = excluded.version, operation = excluded.operation, data = excluded.data,
    applied_count = held.applied_count + excluded.applied_count, received_count = excluded.received_count
"""

_SET_RECEIVED = "UPDATE held SET received_count = ? WHERE table_code = ? AND record_key = ?"

# Databases written before held.received_count: the held version's arrivals move over from received.
_MIGRATE_RECEIVED = """
ALTER TABLE held ADD COLUMN received_count INTEGER NOT NULL DEFAULT 0;
UPDATE held SET received_count = COALESCE((SELECT r.count FROM received r WHERE r.table_code = held.table_code
    AND r.record_key = held.record_key AND r.version = held.version), 0);
DELETE FROM received WHERE EXISTS (SELECT 1 FROM held h WHERE h.table_code = received.table_code
    AND h.record_key = received.record_key AND h.version = received.version);
"""

_COUNT_RECEIVED = """
INSERT INTO received (table_code, record_key, version, count) VALUES (?, ?, ?, ?)
ON CONFLICT (table_code, record_key, version) DO UPDATE SET count = received.count + excluded.count
"""

_SELECT_RECORDS = """
SELECT h.table_code, h.record_key, h.version, h.operation, h.data, h.applied_count,
       h.received_count + COALESCE(r.count, 0)
FROM held h LEFT JOIN received r
  ON r.table_code = h.table_code AND r.record_key = h.record_key AND r.version = h.version
"""


class Incoming(NamedTuple):
    """One record that passed validation, ready to be compared with what is held."""

    record_key: str
    version: int
    operation: str
    data: dict[str, Any]


def judge_version(version: int, held: int | None, bare_change: bool = False) -> str:
    """Accepted when newer than the held version, duplicate when equal, stale when older.

    A ``bare_change`` -- a revoke / object / withdraw without the whole record (required fields missing) -- of
    version 2 or later is refused (NOT_HELD) when the platform does not hold the record: there is nothing to
    change. With the whole record it is taken as a record in that state, as a version 1 revoke always is.
    """
    if held is None and bare_change and version > 1:
        return NOT_HELD
    if held is None or version > held:
        return ACCEPTED
    return DUPLICATE if version == held else STALE


class SandboxStore:
    """The sandbox platform's database: use it from one thread, one transaction per batch."""

    def __init__(self, path: str) -> None:
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA cache_size=-65536")  # 64 MiB: the held keys' index stays in memory
            self._db.execute("PRAGMA wal_autocheckpoint=10000")  # as the gateway's store (gateway.store.database)
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(held)")}
            self._db.executescript(_SCHEMA)
            if columns and "received_count" not in columns:
                self._db.executescript(f"BEGIN; {_MIGRATE_RECEIVED} COMMIT;")
        except sqlite3.Error as exc:
            raise StoreError(f"{path}: cannot open the sandbox database: {exc}") from exc

    def close(self) -> None:
        self._db.close()

    @property
    def connection(self) -> sqlite3.Connection:
        """The database connection, for platform modules that keep their own tables (e.g. sanction cases)."""
        return self._db

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Everything inside commits together or not at all."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def find_batch(self, idem_key: str) -> tuple[str, bytes] | None:
        """The body hash and response stored for an idempotency key, if it was answered."""
        row = self._db.execute(
            "SELECT body_sha256, response FROM batches WHERE idem_key = ?", (idem_key,)
        ).fetchone()
        return None if row is None else (row[0], bytes(row[1]))

    def save_batch(self, idem_key: str, body_sha256: str, response: bytes, batch_id: str, receipt: bytes) -> None:
        self._db.execute("INSERT INTO batches VALUES (?, ?, ?)", (idem_key, body_sha256, response))
        self._db.execute("INSERT OR REPLACE INTO receipts VALUES (?, ?)", (batch_id, receipt))

    def receipt(self, batch_id: str) -> bytes | None:
        row = self._db.execute("SELECT receipt FROM receipts WHERE batch_id = ?", (batch_id,)).fetchone()
        return None if row is None else bytes(row[0])

    def apply_records(self, table_code: str, items: Sequence[Incoming],
                      arrivals: Iterable[tuple[str, int]] = ()) -> tuple[list[str], int]:
        """Judge each item against the held version (in order), write the accepted ones, and count each arrival
        of a (recordKey, version) in ``arrivals``, whatever became of it.

        Returns the status of each item and how many record keys were held for the first time.
        """
        arrivals = list(arrivals)
        held = self._held_versions(table_code, {item.record_key for item in items} | {k for k, _ in arrivals})
        known = set(held)
        statuses: list[str] = []
        writes: dict[str, tuple[int, str, bytes, int]] = {}
        elsewhere: Counter[tuple[str, int]] = Counter()  # arrivals of versions not held, for the received table
        for item in items:
            bare = item.operation != "upsert" and _check_required(TABLES[table_code], item.data) is not None
            before = held.get(item.record_key)
            status = judge_version(item.version, before[0] if before else None, bare)
            statuses.append(status)
            if status == ACCEPTED:
                if before is not None and before[1]:  # the superseded version keeps its count in received
                    elsewhere[(item.record_key, before[0])] += before[1]
                held[item.record_key] = [item.version, 0]
                applied = writes[item.record_key][3] + 1 if item.record_key in writes else 1
                writes[item.record_key] = (item.version, item.operation, orjson.dumps(item.data), applied)
        recounted: set[str] = set()
        for key, version in arrivals:
            now_held = held.get(key)
            if now_held is not None and now_held[0] == version:
                now_held[1] += 1
                recounted.add(key)
            else:
                elsewhere[(key, version)] += 1
        self._db.executemany(_UPSERT_HELD, ((table_code, key, version, operation, data, applied, held[key][1])
                                            for key, (version, operation, data, applied) in writes.items()))
        self._db.executemany(_SET_RECEIVED, ((held[key][1], table_code, key) for key in recounted - writes.keys()))
        self._db.executemany(_COUNT_RECEIVED, ((table_code, k, v, n) for (k, v), n in elsewhere.items()))
        return statuses, len(writes.keys() - known)

    def _held_versions(self, table_code: str, keys: set[str]) -> dict[str, list[int]]:
        """Held version and its arrival count of each of ``keys`` that is held."""
        ordered = list(keys)
        versions: dict[str, list[int]] = {}
        for start in range(0, len(ordered), _CHUNK):
            chunk = ordered[start : start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            sql = ("SELECT record_key, version, received_count FROM held "  # noqa: S608 (only placeholders are interpolated)
                   f"WHERE table_code = ? AND record_key IN ({marks})")
            rows = self._db.execute(sql, (table_code, *chunk))
            versions.update((key, [version, count]) for key, version, count in rows)
        return versions

    def held_counts(self) -> dict[str, int]:
        rows = self._db.execute("SELECT table_code, COUNT(*) FROM held GROUP BY table_code").fetchall()
        return {code: count for code, count in rows}

    def held(self, table_code: str) -> dict[str, tuple[int, str, dict[str, Any]]]:
        rows = self._db.execute(
            "SELECT record_key, version, operation, data FROM held WHERE table_code = ?", (table_code,)
        )
        return {key: (version, op, orjson.loads(data)) for key, version, op, data in rows}

    def applied_counts(self, table_code: str) -> dict[str, int]:
        rows = self._db.execute("SELECT record_key, applied_count FROM held WHERE table_code = ?", (table_code,))
        return {key: count for key, count in rows}

    def list_records(self, table_code: str | None, limit: int, offset: int) -> list[dict[str, Any]]:
        """Held records in key order, each with its applied and received counts."""
        where = "" if table_code is None else "WHERE h.table_code = ? "
        params: tuple[Any, ...] = (limit, offset) if table_code is None else (table_code, limit, offset)
        sql = f"{_SELECT_RECORDS}{where}ORDER BY h.table_code, h.record_key LIMIT ? OFFSET ?"
        return [_record_view(row) for row in self._db.execute(sql, params)]

    def get_record(self, table_code: str, record_key: str) -> dict[str, Any] | None:
        """One held record with the arrival count of every version received, or None."""
        sql = f"{_SELECT_RECORDS}WHERE h.table_code = ? AND h.record_key = ?"
        row = self._db.execute(sql, (table_code, record_key)).fetchone()
        if row is None:
            return None
        view = _record_view(row)
        counts = self._db.execute(
            "SELECT version, count FROM received WHERE table_code = ? AND record_key = ? ORDER BY version",
            (table_code, record_key),
        )
        received = {version: count for version, count in counts}
        if view["received_count"]:  # the held version's: in held, plus any that arrived before it was accepted
            received[view["version"]] = view["received_count"]
        view["received"] = {str(version): received[version] for version in sorted(received)}
        return view

    def reset(self) -> None:
        """Forget every record, batch and receipt."""
        with self.transaction():
            for table in ("held", "received", "batches", "receipts"):
                self._db.execute(f"DELETE FROM {table}")  # noqa: S608 (fixed table names)


def _record_view(row: tuple[Any, ...]) -> dict[str, Any]:
    table_code, key, version, operation, data, applied, received = row
    return {
        "tableCode": table_code,
        "recordKey": key,
        "version": version,
        "operation": operation,
        "data": orjson.loads(data),
        "applied_count": applied,
        "received_count": received,
    }


# ---------------------------------------------------------------------------------------------------
# Per-record rules of the platform

@dataclass(frozen=True)
class TableSpec:
    """What the platform checks in the records of one 目录 (tableCode)."""

    code: str
    required: tuple[str, ...]
    max_lengths: tuple[tuple[str, int], ...]
    uscc_fields: tuple[str, ...]
    date_fields: tuple[str, ...]


def _subject_lengths(prefix: str) -> tuple[tuple[str, int], ...]:
    names = {"XDR_MC": 200, "XDR_LB": 100, "XDR_SHXYM": 18, "XDR_GSZC": 50, "XDR_ZZJG": 32, "XDR_SWDJ": 32,
             "XDR_SYDW": 120, "XDR_SHZZ": 50, "FRDB": 50, "FR_ZJLX": 64, "FR_ZJHM": 64, "XDR_ZJLX": 64,
             "XDR_ZJHM": 64, "WSH": 128}
    return tuple((f"{prefix}_{name}", length) for name, length in names.items())


TABLES: dict[str, TableSpec] = {
    "XZCF": TableSpec(
        code="XZCF",
        required=("CF_XDR_MC", "CF_XDR_LB", "CF_WSH", "CF_WFXW", "CF_SY", "CF_YJ", "CF_CFLB", "CF_NR",
                  "CF_JDRQ", "CF_CFJG", "CF_CFJGDM", "CF_SJLY", "CF_SJLYDM"),
        max_lengths=(*_subject_lengths("CF"), ("CF_CFLB", 200), ("CF_NR_ZKDX", 200), ("CF_CFJG", 200),
                     ("CF_CFJGDM", 18), ("CF_SJLY", 200), ("CF_SJLYDM", 18)),
        uscc_fields=("CF_XDR_SHXYM", "CF_CFJGDM", "CF_SJLYDM"),
        date_fields=("CF_JDRQ", "CF_YXQ", "CF_GSJZQ"),
    ),
    "XZXK": TableSpec(
        code="XZXK",
        required=("XK_XDR_MC", "XK_XDR_LB", "XK_XKWS", "XK_WSH", "XK_XKLB", "XK_NR", "XK_JDRQ", "XK_YXQZ",
                  "XK_YXQZI", "XK_XKJG", "XK_XKJGDM", "XK_LYDW", "XK_LYDWDM"),
        max_lengths=(*_subject_lengths("XK"), ("XK_XKJG", 200), ("XK_XKJGDM", 18), ("XK_LYDW", 200),
                     ("XK_LYDWDM", 18)),
        uscc_fields=("XK_XDR_SHXYM", "XK_XKJGDM", "XK_LYDWDM"),
        date_fields=("XK_JDRQ", "XK_YXQZ", "XK_YXQZI"),
    ),
}

RecordProblem = tuple[str, str]  # (errorCode, errorMsg)
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)
_uscc_reason = functools.lru_cache(maxsize=65536)(check_uscc)


@functools.lru_cache(maxsize=4096)  # a batch's dates repeat (decision days cluster): three per record
def _is_date(value: str) -> bool:
    if not _DATE.fullmatch(value):
        return False
    try:
        date.fromisoformat(value)
    except ValueError:
        return False
    return True


def _is_version(value: Any) -> bool:
    return type(value) is int and value >= 0


def _check_envelope_fields(record: dict[str, Any]) -> RecordProblem | None:
    key = record.get("recordKey")
    if not isinstance(key, str) or not key:
        return "7005", "记录主键缺失"
    if not _is_version(record.get("version")):
        return "7006", "版本号无效: version"
    operation = record.get("operation")
    if operation not in _OPERATIONS:
        return "7007", f"操作类型无效: {operation}"
    data = record.get("data")
    if not isinstance(data, dict) and not (data is None and operation != "upsert"):
        return "7008", "数据格式错误: data"
    return None


def _check_required(spec: TableSpec, data: dict[str, Any]) -> RecordProblem | None:
    for name in spec.required:
        value = data.get(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            return "7001", f"必填字段为空: {name}"
    return None


def _check_lengths(spec: TableSpec, data: dict[str, Any]) -> RecordProblem | None:
    for name, limit in spec.max_lengths:
        value = data.get(name)
        if isinstance(value, str) and len(value) > limit:
            return "7002", f"字段超长: {name} 最大长度{limit}"
    return None


def _check_codes(spec: TableSpec, data: dict[str, Any]) -> RecordProblem | None:
    for name in spec.uscc_fields:
        value = data.get(name)
        if value and (not isinstance(value, str) or _uscc_reason(value) is not None):
            return "7003", f"统一社会信用代码校验失败: {name}"
    return None


def _check_dates(spec: TableSpec, data: dict[str, Any]) -> RecordProblem | None:
    for name in spec.date_fields:
        value = data.get(name)
        if value and (not isinstance(value, str) or not _is_date(value)):
            return "7004", f"日期格式错误: {name}"
    return None


def validate_record(spec: TableSpec, record: dict[str, Any]) -> RecordProblem | None:
    """The first problem the platform finds in one record, or None when it is acceptable."""
    problem = _check_envelope_fields(record)
    if problem is not None:
        return problem
    data = record.get("data") or {}
    if record["operation"] == "upsert":
        problem = _check_required(spec, data)
    return problem or _check_lengths(spec, data) or _check_codes(spec, data) or _check_dates(spec, data)


def simulated_reject(key: str, version: int, reject_rate: float, seed: int) -> bool:
    """Deterministic in (recordKey, version, seed), so a retried batch gets the same answer."""
    if reject_rate <= 0:
        return False
    digest = hashlib.blake2b(f"{seed}|{version}|{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") < reject_rate * 2**64


# ---------------------------------------------------------------------------------------------------
# One batch, start to finish (runs in the database thread)

class _BatchError(Exception):
    """The whole batch is refused (HTTP 400) with a platform error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class _Envelope:
    batch_id: str | None
    table: TableSpec
    records: list[dict[str, Any]]


def parse_envelope(body: bytes, departments: frozenset[str]) -> _Envelope:
    """The batch's envelope, checked in the platform's order; _BatchError on a whole-batch error."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise _BatchError("5001", "JSON解析失败") from exc
    if not isinstance(payload, dict):
        raise _BatchError("6002", "数据结构体格式不正确: 应为JSON对象")
    table_code = payload.get("tableCode")
    if not isinstance(table_code, str) or not table_code:
        raise _BatchError("3001", "目录编码为空: tableCode")
    if table_code not in TABLES:
        raise _BatchError("3002", f"目录编码不存在: {table_code}")
    department = payload.get("departmentCode")
    if not isinstance(department, str) or not department:
        raise _BatchError("4001", "部门编码为空: departmentCode")
    if departments and department not in departments:
        raise _BatchError("4002", f"部门编码不存在: {department}")
    records = payload.get("records")
    if not records:
        raise _BatchError("6001", "数据结构体为空: records")
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise _BatchError("6002", "数据结构体格式不正确: records 应为对象数组")
    batch_id = payload.get("batchId")
    return _Envelope(batch_id if isinstance(batch_id, str) and batch_id else None, TABLES[table_code], records)


@dataclass
class _Verdicts:
    """Per-record results of one batch, and the valid records still to be judged against held versions."""

    results: list[dict[str, Any]] = field(default_factory=list)
    items: list[Incoming] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)  # index in results of each item
    arrivals: list[tuple[str, int]] = field(default_factory=list)
    simulated_rejects: int = 0

    def admit(self, record: dict[str, Any], position: int, reject_rate: float, seed: int) -> RecordProblem | None:
        """Take a valid record: count its arrival, then keep it for judging unless simulation rejects it."""
        key: str = record["recordKey"]
        version: int = record["version"]
        self.arrivals.append((key, version))
        if simulated_reject(key, version, reject_rate, seed):
            self.simulated_rejects += 1
            return "7099", "模拟拒收"
        self.positions.append(position)
        self.items.append(Incoming(key, version, record["operation"], record.get("data") or {}))
        return None

    def settle(self, statuses: Sequence[str]) -> None:
        """Fill in the status the store gave each kept record."""
        for position, status in zip(self.positions, statuses, strict=True):
            if status == NOT_HELD:
                code, message = NOT_HELD_PROBLEM
                self.results[position].update(status="rejected", errorCode=code, errorMsg=message)
            else:
                self.results[position].update(status=status, errorCode="200", errorMsg=_STATUS_MESSAGES[status])


RecordCheck = Callable[[dict[str, Any]], RecordProblem | None]


def judge_records(spec: TableSpec, records: Sequence[dict[str, Any]], reject_rate: float, seed: int,
                  extra: RecordCheck | None = None) -> _Verdicts:
    """Validate every record (``extra``: a table's own rule, e.g. feedback must name a known case); the valid
    ones become items for the store to judge by version."""
    verdicts = _Verdicts()
    for record in records:
        result: dict[str, Any] = {"recordKey": record.get("recordKey"), "version": record.get("version")}
        problem = validate_record(spec, record)
        if problem is None and extra is not None:
            problem = extra(record)
        if problem is None:
            problem = verdicts.admit(record, len(verdicts.results), reject_rate, seed)
        if problem is not None:
            result.update(status="rejected", errorCode=problem[0], errorMsg=problem[1])
        verdicts.results.append(result)
    return verdicts


def build_receipt(batch_id: str, body_sha256: str, platform: str, success_size: int, fail_size: int) -> dict[str, Any]:
    """The platform's receipt for one batch: the one place receipts are made (signing belongs here)."""
    received_at = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {"receiptId": f"r-{uuid.uuid4()}", "batchId": batch_id, "bodySha256": body_sha256,
            "receivedAt": received_at, "platform": platform, "successSize": success_size, "failSize": fail_size}


@dataclass(frozen=True)
class Outcome:
    """What the database thread decided about one upload request."""

    status: int
    body: bytes
    kind: str  # applied | replayed | conflicts | refused
    batch_id: str = ""
    table_code: str = ""
    counts: Mapping[str, int] = field(default_factory=dict)
    new_keys: int = 0
    simulated_rejects: int = 0


def error_body(code: str, message: str) -> bytes:
    return orjson.dumps({"errorCode": code, "errorMsg": message})


class Platform:
    """The platform's synchronous side: envelope, idempotency, record rules, dedup, receipts.

    Create, use and close it in one thread; ``reject_rate`` and ``seed`` drive simulated rejections.
    """

    def __init__(self, db_path: str, departments: Sequence[str] = (), name: str = "sandbox",
                 signer: Callable[[bytes], bytes] | None = None) -> None:
        self.store = SandboxStore(db_path)
        self._departments = frozenset(departments)
        self._name = name
        self._signer = signer  # signs receipts (detached), when the platform has credentials
        self.record_checks: dict[str, RecordCheck] = {}  # tableCode → extra rule, run in this thread

    def upload(self, body: bytes, idem_key: str | None, reject_rate: float = 0.0, seed: int = 0,
               sent_sha256: str | None = None) -> Outcome:
        """Answer one upload: refuse it, replay the stored answer, or apply it in one transaction.

        ``sent_sha256`` is the digest of the bytes as sent when they were a sealed envelope around ``body``.
        """
        try:
            envelope = parse_envelope(body, self._departments)
        except _BatchError as exc:
            return Outcome(400, error_body(exc.code, exc.message), "refused")
        key = idem_key or envelope.batch_id or f"b-{uuid.uuid4()}"
        body_sha256 = sent_sha256 or hashlib.sha256(body).hexdigest()
        with self.store.transaction():
            stored = self.store.find_batch(key)
            if stored is None:
                verdicts = judge_records(envelope.table, envelope.records, reject_rate, seed,
                                         self.record_checks.get(envelope.table.code))
                return self._apply(envelope, verdicts, key, body_sha256)
        if stored[0] != body_sha256:
            return Outcome(409, error_body("409", f"幂等键已用于不同的请求体: {key}"), "conflicts", batch_id=key)
        return Outcome(200, stored[1], "replayed", batch_id=key)

    def _apply(self, envelope: _Envelope, verdicts: _Verdicts, key: str, body_sha256: str) -> Outcome:
        table, batch_id = envelope.table.code, envelope.batch_id or key
        statuses, new_keys = self.store.apply_records(table, verdicts.items, verdicts.arrivals)
        verdicts.settle(statuses)
        counts = Counter(result["status"] for result in verdicts.results)
        total, failed = len(envelope.records), counts["rejected"]
        receipt = build_receipt(batch_id, body_sha256, self._name, total - failed, failed)
        receipt["resultsSha256"] = hashlib.sha256(orjson.dumps(verdicts.results)).hexdigest()
        answer: dict[str, Any] = {
            "errorCode": "200", "errorMsg": "成功", "batchId": batch_id, "totalSize": total,
            "successSize": total - failed, "failSize": failed, "results": verdicts.results, "receipt": receipt,
        }
        if self._signer is not None:  # the signature covers the receipt as JSON with sorted keys
            signature = self._signer(orjson.dumps(receipt, option=orjson.OPT_SORT_KEYS))
            answer["receiptSignature"] = base64.b64encode(signature).decode()
        response = orjson.dumps(answer)
        self.store.save_batch(key, body_sha256, response, batch_id, orjson.dumps(receipt))
        return Outcome(200, response, "applied", batch_id, table, counts, new_keys, verdicts.simulated_rejects)
