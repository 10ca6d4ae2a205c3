"""前置库 sink: writes supervision actions into the national 互联网+监管 system's front-end tables.

The department's front-end database (SQLite, PostgreSQL; the SQL is SQLAlchemy Core and dialect-neutral) holds
one table per action type (DDL in ``mappings/national/ddl``). For each record of a batch, in one transaction:

* the envelope: ``cd_id`` (department code + digest of the record key and version: the same version always gets
  the same id), ``cd_time``, ``cd_source`` (province region code + department code), ``cd_batch`` (YYYYMMDD and
  the day's sequence, kept in ``cg_national_sequence`` so it continues across restarts and starts at 1 each day;
  ``cg_national_batches`` remembers it per gateway batch, so a retried batch keeps its number), ``cd_operation``
  (``d`` for a withdraw or revoke, ``u`` when the key has a row the national side did not reject, else ``i``)
  and ``record_unique_identity`` (the record key);
* idempotent: a ``cd_id`` already there is not written again, so a retried batch adds no row; the engine never
  has two batches of one key in flight, so ``u``/``d`` follow the key's ``i`` in order.

Then it reads back what the national side wrote into ``deal_status`` / ``deal_message``: ``1`` processed (the
record's receipt), ``2`` rejected (quarantined with the national reason). While rows are still waiting, the batch
is answered with :class:`AwaitingAnswer` (``retry_after_s = poll_s``): not a failure of the link; the engine asks
again, which writes nothing and reads the answers again.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import re
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ClassVar, Self

import orjson
from sqlalchemy import Column, Integer, MetaData, String, Table, column, insert, inspect, select, table, update
from sqlalchemy.exc import ArgumentError, DataError, IntegrityError, NoSuchTableError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.types import DateTime

from adapters.national.ddl import ENVELOPE, READ_BACK
from adapters.sql.sink import ValueProblem, _bind, _Column, _message, _python_type, _sqlite_transactions, _typed
from adapters.sql.url import database_url, password_credentials, url_secrets
from gateway.adapter import AdapterContext, Credential, OutgoingBatch, Receipt, RecordResult, TargetRecord
from gateway.clock import CHINA
from gateway.domain.regions import is_province
from gateway.errors import AwaitingAnswer, ConfigError, PermanentError, Problem, RetryableError
from gateway.settings import parse_settings, setting

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
PROCESSED, REJECTED = "1", "2"
DELETING = frozenset({"withdraw", "revoke"})
ENVELOPE_COLUMNS = frozenset(name for name, _kind, _note in (*ENVELOPE, *READ_BACK))

_meta = MetaData()
SEQUENCE = Table("cg_national_sequence", _meta, Column("batch_day", String(8), primary_key=True),
                 Column("last_sequence", Integer, nullable=False))
BATCHES = Table("cg_national_batches", _meta, Column("batch_id", String(64), primary_key=True),
                Column("cd_batch", String(13), nullable=False), Column("dataset", String(32), nullable=False),
                Column("written_at", DateTime, nullable=False))


@dataclass(frozen=True)
class FrontDbSettings:
    url: str = setting(help="the front-end database: sqlite:///path or postgresql://user@host/db")
    region_code: str = setting(help="the province's GB/T 2260 code (e.g. 320000): first part of cd_source")
    password_env: str = setting("", help="environment variable holding the database password")
    department_code: str = setting("", help="second part of cd_source (default: the instance's department code)")
    tables: dict[str, str] = setting({}, help="dataset → front-end table (default: the outbound mapping's table_code)")
    poll_s: float = setting(60.0, help="while the national side has not processed a batch's rows, ask again after")


@dataclass(frozen=True)
class _Front:
    """One front-end table: its name and columns (mapped column name → column)."""

    name: str
    columns: Mapping[str, _Column]


class NationalFrontDbSink:
    """Writes records into the national front-end tables and reads back the national side's answers."""

    Settings: ClassVar[type] = FrontDbSettings

    def __init__(self, settings: FrontDbSettings, url: str, source: str, name: str,
                 fields: Mapping[str, Sequence[str]]) -> None:
        self.settings, self.name, self._url, self.source = settings, name, url, source
        self._fields = {dataset: tuple(f.lower() for f in names) for dataset, names in fields.items()}
        self._engine: AsyncEngine | None = None
        self._tables: dict[str, _Front] = {}
        self._sqlite = url.startswith("sqlite")
        self.secrets = url_secrets(url)
        self.now: Callable[[], dt.datetime] = lambda: dt.datetime.now(CHINA)  # cd_time and cd_batch's day

    def credential_sources(self) -> list[Credential]:
        return password_credentials(self.settings.password_env)

    @classmethod
    def from_settings(cls, raw: Mapping[str, Any], ctx: AdapterContext) -> tuple[Self | None, list[Problem]]:
        settings, problems = parse_settings(FrontDbSettings, raw, ctx.path, ctx.common_keys)
        if settings is None:
            return None, problems
        if not is_province(settings.region_code):
            problems.append(Problem(f"{ctx.path}.region_code", f"{settings.region_code!r} is not a province-level "
                                                               "GB/T 2260 code (xx0000)"))
        department = settings.department_code or ctx.department_code
        if not department or len(settings.region_code + department) > 32:
            problems.append(Problem(f"{ctx.path}.department_code", "needed (at most 26 characters): cd_source"))
        for dataset, name in settings.tables.items():
            if not _IDENT.match(name):
                problems.append(Problem(f"{ctx.path}.tables.{dataset}", f"not a plain name: {name!r}"))
        url, problem = database_url(settings.url, settings.password_env, ctx)
        if problem:
            problems.append(problem)
        if problems:
            return None, problems
        return cls(settings, url, settings.region_code + department, ctx.name, ctx.fields), []

    async def __aenter__(self) -> Self:
        try:
            self._engine = create_async_engine(self._url)
        except (ArgumentError, ImportError) as exc:
            raise ConfigError([Problem("url", str(exc))], f"target {self.name}") from exc
        if self._sqlite:
            _sqlite_transactions(self._engine)
        return self

    async def __aexit__(self, t: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None
        self._tables.clear()

    # ------------------------------------------------------------ encode, deliver

    def encode(self, batch_id: str, dataset: str, table_code: str, records: Sequence[TargetRecord]) -> bytes:
        return orjson.dumps({"batchId": batch_id, "dataset": dataset, "table": table_code, "records": [
            {"recordKey": r.key, "version": r.version, "operation": r.operation, "fields": r.fields}
            for r in records]})

    async def deliver(self, batch: OutgoingBatch) -> Receipt:
        try:
            body = orjson.loads(batch.body)
        except orjson.JSONDecodeError as exc:
            raise PermanentError(f"batch {batch.id} is not the JSON this sink encodes: {exc}") from exc
        dataset = str(body.get("dataset", batch.dataset))
        records = list(body.get("records") or [])
        try:
            front = await self._table(dataset, str(body.get("table") or ""))
            async with self._connect(write=True) as conn, conn.begin():
                cd_batch = await self._cd_batch(conn, batch.id, dataset)
                refused = {}
                for rec in records:
                    problem = await self._write(conn, front, cd_batch, rec)
                    if problem is not None:
                        refused[self.cd_id(rec)] = problem
            answers = await self._answers(front, [self.cd_id(r) for r in records])
        except SQLAlchemyError as exc:  # nothing of the batch landed, or the read-back failed: both safe to retry
            raise RetryableError(f"target {self.name} ({dataset}): {_message(exc)}") from exc
        except OSError as exc:
            raise RetryableError(f"target {self.name} ({dataset}): {exc}") from exc
        return self._receipt(batch, cd_batch, records, refused, answers)

    def _receipt(self, batch: OutgoingBatch, cd_batch: str, records: Sequence[Mapping[str, Any]],
                 refused: Mapping[str, str], answers: Mapping[str, tuple[str, str]]) -> Receipt:
        results, waiting = [], 0
        for rec in records:
            key, version, cd_id = str(rec.get("recordKey")), int(rec.get("version") or 0), self.cd_id(rec)
            status, message = answers.get(cd_id, ("", ""))
            if cd_id in refused:
                results.append(RecordResult(key, version, "rejected", "DB", refused[cd_id]))
            elif status == PROCESSED:
                results.append(RecordResult(key, version, "accepted"))
            elif status == REJECTED:
                results.append(RecordResult(key, version, "rejected", "NATIONAL", message or "rejected"))
            else:
                waiting += 1
        if waiting:
            raise AwaitingAnswer(f"target {self.name}: {waiting} of {len(records)} rows of cd_batch {cd_batch} "
                                 "not yet processed by the national system", retry_after_s=self.settings.poll_s)
        receipt_id = f"national-{batch.id}"
        receipt = {"receiptId": receipt_id, "batchId": batch.id, "cdBatch": cd_batch, "local": True,
                   "signed": False, "bodySha256": hashlib.sha256(batch.body).hexdigest(), "cdSource": self.source,
                   "accepted": sum(r.status == "accepted" for r in results),
                   "rejected": sum(r.status == "rejected" for r in results)}
        raw = {"receipt": receipt, "results": [{"recordKey": r.key, "version": r.version, "status": r.status,
                                                "errorCode": r.code, "errorMsg": r.message} for r in results]}
        return Receipt(receipt_id, results, raw)

    def cd_id(self, rec: Mapping[str, Any]) -> str:
        """The row id of one record version: department code + 40 hex digits of its key and version."""
        digest = hashlib.sha256(f"{rec.get('recordKey')}\x00{rec.get('version')}".encode()).hexdigest()[:40]
        return f"{self.source[6:]}{digest}"[-64:]

    async def _cd_batch(self, conn: AsyncConnection, batch_id: str, dataset: str) -> str:
        """The batch's cd_batch: the one it was given before, or the day's next sequence number."""
        known = (await conn.execute(select(BATCHES.c.cd_batch).where(BATCHES.c.batch_id == batch_id))).scalar()
        if known is not None:
            return str(known)
        now = self.now()
        day = now.strftime("%Y%m%d")
        seq = SEQUENCE.c
        # FOR UPDATE: two gateways on one front-end database never take the same number (SQLite: the write lock)
        last = (await conn.execute(select(seq.last_sequence).where(seq.batch_day == day).with_for_update())).scalar()
        if last is None:
            await conn.execute(insert(SEQUENCE).values(batch_day=day, last_sequence=1))
        else:
            await conn.execute(update(SEQUENCE).where(seq.batch_day == day).values(last_sequence=last + 1))
        cd_batch = f"{day}{(last or 0) + 1:05d}"
        await conn.execute(insert(BATCHES).values(batch_id=batch_id, cd_batch=cd_batch, dataset=dataset,
                                                  written_at=now.replace(tzinfo=None)))
        return cd_batch

    async def _write(self, conn: AsyncConnection, front: _Front, cd_batch: str, rec: Mapping[str, Any]) -> str | None:
        """Insert one record's row unless its cd_id is there; the database's refusal as a message."""
        cd_id, key = self.cd_id(rec), str(rec.get("recordKey"))
        tbl = table(front.name, column("cd_id"), column("record_unique_identity"), column("deal_status"))
        if (await conn.execute(select(tbl.c.cd_id).where(tbl.c.cd_id == cd_id))).first() is not None:
            return None
        # a row of the key the national side did not reject: this one updates it (after a rejection: insert again)
        kept = tbl.c.deal_status.is_(None) | (tbl.c.deal_status != REJECTED)
        seen = (await conn.execute(select(tbl.c.cd_id).where((tbl.c.record_unique_identity == key) & kept)
                                   .limit(1))).first()
        operation = "d" if rec.get("operation") in DELETING else ("u" if seen else "i")
        try:
            fields = {str(k).lower(): v for k, v in (rec.get("fields") or {}).items()}
            values = {col.name: _bind(_typed(value, col), self._sqlite) for name, col in front.columns.items()
                      if (value := fields.get(name)) is not None}
        except ValueProblem as exc:
            return str(exc)
        values |= {"cd_id": cd_id, "cd_time": _bind(self.now().replace(tzinfo=None), self._sqlite),
                   "cd_source": self.source, "cd_batch": cd_batch, "cd_operation": operation,
                   "record_unique_identity": key}
        try:
            async with conn.begin_nested():
                await conn.execute(insert(table(front.name, *(column(c) for c in values))).values(values))
        except (IntegrityError, DataError) as exc:
            return _message(exc)
        return None

    async def _answers(self, front: _Front, cd_ids: Sequence[str]) -> dict[str, tuple[str, str]]:
        """cd_id → (deal_status, deal_message) as the national side left them."""
        tbl = table(front.name, column("cd_id"), column("deal_status"), column("deal_message"))
        found: dict[str, tuple[str, str]] = {}
        async with self._connect() as conn:
            for start in range(0, len(cd_ids), 500):
                chunk = cd_ids[start:start + 500]
                for cd_id, status, message in await conn.execute(
                        select(tbl.c.cd_id, tbl.c.deal_status, tbl.c.deal_message).where(tbl.c.cd_id.in_(chunk))):
                    found[str(cd_id)] = (str(status or "").strip(), str(message or ""))
        return found

    # ------------------------------------------------------------ the tables

    async def _table(self, dataset: str, table_code: str) -> _Front:
        """The dataset's front-end table, reflected once; the sink's own tables created when missing."""
        name = self.settings.tables.get(dataset) or table_code
        if name in self._tables:
            return self._tables[name]
        if not _IDENT.match(name):
            raise PermanentError(f"target {self.name}: no front-end table for dataset {dataset} ({name!r})")
        try:
            async with self._connect(write=True) as conn, conn.begin():
                await conn.run_sync(_meta.create_all)
                found = await conn.run_sync(lambda c: inspect(c).get_columns(name))
        except NoSuchTableError:
            raise PermanentError(f"target {self.name}: front-end table {name} not found "
                                 "(mappings/national/ddl has its DDL)") from None
        by_lower = {str(c["name"]).lower(): _Column(str(c["name"]), _python_type(c["type"])) for c in found}
        missing = sorted(ENVELOPE_COLUMNS - by_lower.keys())
        if missing:
            raise PermanentError(f"target {self.name}: table {name} lacks the envelope column(s) {', '.join(missing)}")
        missing = [f for f in self._fields.get(dataset, ()) if f not in by_lower]
        if missing:
            raise PermanentError(f"target {self.name}: table {name} lacks column(s) {', '.join(missing)} "
                                 "that the mapping writes")
        columns = {n: col for n, col in by_lower.items() if n not in ENVELOPE_COLUMNS}
        self._tables[name] = front = _Front(name, columns)
        return front

    @contextlib.asynccontextmanager
    async def _connect(self, write: bool = False) -> AsyncIterator[AsyncConnection]:
        if self._engine is None:
            raise RuntimeError("sink used outside `async with`")
        async with self._engine.connect() as conn:
            yield await conn.execution_options(cg_write=True) if write else conn
