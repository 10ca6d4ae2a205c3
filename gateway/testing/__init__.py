"""The adapter test kit: fakes, a config writer, and (in :mod:`gateway.testing.contract`) conformance tests.

Shipped with the gateway for adapter authors, like httpx's ``MockTransport`` and structlog's ``testing``:

* :class:`MemorySource`: a source over pages held in memory, recording what the engine acked;
* :class:`MemorySink`: a sink that keeps the batches it is given and answers every record;
* :class:`FlakySink`: wraps a sink; its first ``fail_times`` deliveries raise ``error``;
* :class:`RaisingSink`: a :class:`FlakySink` that raises an exception no adapter should leak (RuntimeError);
* :func:`config_text`: a TOML configuration from keyword sections, with a ``[gateway]`` filled in.

The pytest fixtures (``gateway_sandbox``, ``gateway_store``, ``department_db``) come with the package as the
pytest plugin :mod:`gateway.testing.plugin`; the sample department database is :mod:`gateway.testing.department_db`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Self

from gateway.adapter import OutgoingBatch, Receipt, RecordResult, Sink, SourceBatch, SourceRow, TargetRecord
from gateway.errors import RetryableError

__all__ = ["FlakySink", "MemorySink", "MemorySource", "RaisingSink", "config_text"]

DEPARTMENT_CODE = "11320500014117422K"  # a valid 统一社会信用代码 (苏州市市场监督管理局)
DEPARTMENT_NAME = "苏州市市场监督管理局"


class MemorySource:
    """A source over ``pages`` of rows; the cursor is ``[page, offset]``. ``acked`` lists every ack's cursor."""

    def __init__(self, pages: Sequence[Sequence[SourceRow]]) -> None:
        self.pages = [list(page) for page in pages]
        self.acked: list[Any] = []
        self.opened = 0

    async def __aenter__(self) -> Self:
        self.opened += 1
        return self

    async def __aexit__(self, t: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        return None

    async def fetch(self, cursor: Any, limit: int) -> SourceBatch:
        page, offset = cursor if cursor is not None else (0, 0)
        while page < len(self.pages) and offset >= len(self.pages[page]):
            page, offset = page + 1, 0
        if page >= len(self.pages):
            return SourceBatch([], [page, offset], more=False)
        rows = self.pages[page][offset:offset + limit]
        after = [page, offset + len(rows)]
        more = after[1] < len(self.pages[page]) or any(self.pages[page + 1:])
        return SourceBatch(rows, after, more)

    async def ack(self, cursor: Any) -> None:
        self.acked.append(cursor)


class MemorySink:
    """Keeps every batch it is given (``batches``) and answers each record ``accepted``, or the status
    ``results`` names for its key (``accepted``, ``duplicate``, ``stale`` or ``rejected``)."""

    def __init__(self, results: Mapping[str, str] | None = None) -> None:
        self.results = dict(results or {})
        self.batches: list[OutgoingBatch] = []

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, t: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        return None

    def encode(self, batch_id: str, dataset: str, table_code: str, records: Sequence[TargetRecord]) -> bytes:
        body = {"batchId": batch_id, "dataset": dataset, "tableCode": table_code,
                "records": [{"key": r.key, "version": r.version, "operation": r.operation, "fields": r.fields}
                            for r in records]}
        return json.dumps(body, ensure_ascii=False, sort_keys=True, default=str).encode()

    async def deliver(self, batch: OutgoingBatch) -> Receipt:
        self.batches.append(batch)
        records = json.loads(batch.body)["records"]
        results = [RecordResult(r["key"], r["version"], self.results.get(r["key"], "accepted"),
                                "MEM" if self.results.get(r["key"]) == "rejected" else "") for r in records]
        return Receipt(f"memory-{batch.id}", results, {"batchId": batch.id})

    def delivered(self) -> list[dict[str, Any]]:
        """Every record delivered so far, in order (as encoded)."""
        return [record for batch in self.batches for record in json.loads(batch.body)["records"]]


class FlakySink:
    """Wraps ``inner``; its first ``fail_times`` deliveries raise ``error`` (a class is called with a message)."""

    def __init__(self, inner: Sink, fail_times: int,
                 error: type[BaseException] | BaseException = RetryableError) -> None:
        self.inner, self.fail_times, self.error = inner, fail_times, error
        self.calls = 0

    async def __aenter__(self) -> Self:
        await self.inner.__aenter__()
        return self

    async def __aexit__(self, t: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.inner.__aexit__(t, e, tb)

    def encode(self, batch_id: str, dataset: str, table_code: str, records: Sequence[TargetRecord]) -> bytes:
        return self.inner.encode(batch_id, dataset, table_code, records)

    async def deliver(self, batch: OutgoingBatch) -> Receipt:
        self.calls += 1
        if self.calls > self.fail_times:
            return await self.inner.deliver(batch)
        if isinstance(self.error, type):
            raise self.error(f"injected failure {self.calls} of {self.fail_times}")
        raise self.error


class RaisingSink(FlakySink):
    """Wraps ``inner``; its first ``failures`` deliveries raise a RuntimeError, as an adapter bug would."""

    def __init__(self, inner: Sink, failures: int) -> None:
        super().__init__(inner, failures, RuntimeError("adapter bug: connection state corrupted"))


def config_text(**sections: Mapping[str, Any]) -> str:
    """A TOML configuration: ``[gateway]`` with a department filled in (override any key), then ``sections`` in
    order. A section whose values are all tables is written as its sub-tables (``targets={"t": {...}}`` gives
    ``[targets.t]``); any other table value is written inline (``datasets = { penalty = "…" }``)."""
    gateway = {"department_code": DEPARTMENT_CODE, "department_name": DEPARTMENT_NAME, **sections.pop("gateway", {})}
    lines: list[str] = []
    for name, table in {"gateway": gateway, **sections}.items():
        named = table if table and all(isinstance(v, Mapping) for v in table.values()) else {"": table}
        for sub, values in named.items():
            lines += [f"[{name}.{_key(sub)}]" if sub else f"[{name}]"]
            lines += [f"{_key(k)} = {_value(v)}" for k, v in values.items()] + [""]
    return "\n".join(lines)


def _key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() and key.isascii() else json.dumps(key)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"no TOML form for {type(value).__name__}: {value!r}")
