"""Conformance tests for adapters, applied in one line (like meltano's ``get_*_test_class``)::

    from gateway.testing.contract import SinkContract

    class TestMySink(SinkContract):
        adapter_type = "my_platform"          # the name under credit_gateway.sinks
        settings = {"url": "https://…", "token_env": "MY_TOKEN"}

The settings given are those of a working adapter. An adapter that needs a server or a database for that
overrides the fixture ``sink_settings`` (``source_settings``), which may use the plugin's fixtures
(``gateway_sandbox``, ``department_db``). Checks that need more say so in a hook; a hook left at its
default makes the check *skip with the reason*, never pass silently:

* :meth:`SinkContract.http_settings`: settings pointing an HTTP sink at a URL with a token file. With it,
  the platform sandbox (:class:`gateway.sandbox.server.Faults`) plays refused connections, hangs, 503 with
  ``Retry-After``, 401, 400 and a 200 that is not JSON, and the sink must answer each with the right
  :mod:`gateway.errors` class and nothing else;
* :meth:`SinkContract.unreachable_settings` / :meth:`SourceContract.unreachable_settings`: settings naming a
  database or server that cannot be reached: the adapter must raise :class:`RetryableError`;
* ``SourceContract``'s ``source_settings`` must give more than ``2 * limit`` rows, so that paging is seen.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import pickle
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, ClassVar

import pytest

from gateway.adapter import (
    SINK_GROUP,
    SOURCE_GROUP,
    AdapterContext,
    AdapterFactory,
    BatchEncoding,
    OutgoingBatch,
    PageReading,
    Sink,
    Source,
    SourceBatch,
    SourceRow,
    TargetRecord,
    load_adapter,
)
from gateway.errors import GatewayError, PermanentError, Problem, RetryableError
from gateway.sandbox.server import Faults, Sandbox, SandboxConfig
from gateway.testing import DEPARTMENT_CODE, DEPARTMENT_NAME

__all__ = ["SinkContract", "SourceContract"]

# Modules a batch encoder's or page reader's module must not load: worker processes start without them.
CLIENT_LIBRARIES = ("aiohttp", "sqlalchemy", "asyncpg", "aiosqlite", "httpx", "requests", "psycopg", "psycopg2")
UNKNOWN_KEY = "no_such_setting"
HANG_TIMEOUT_S = 0.5  # the sink's own timeout while the sandbox hangs


def free_port() -> int:
    """A port on 127.0.0.1 nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def required_settings(factory: AdapterFactory) -> list[str]:
    """The settings without a default, from the adapter's ``Settings`` dataclass."""
    return [f.name for f in dataclasses.fields(factory.Settings)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]


def imports_no_client(module: str) -> list[str]:
    """The client libraries importing ``module`` loads, found in a fresh interpreter."""
    probe = f"import sys, {module}; print(' '.join(m for m in {CLIENT_LIBRARIES!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", probe],  # noqa: S603 (our interpreter, a module name)
                          capture_output=True, text=True, check=True, timeout=60)
    return done.stdout.split()


class _Contract:
    """What both contracts check: the entry point, the role, and problems with their TOML paths."""

    adapter_type: ClassVar[str]
    settings: ClassVar[Mapping[str, Any]] = {}
    group: ClassVar[str]
    path: ClassVar[str]
    fields: ClassVar[Mapping[str, tuple[str, ...]]] = {}  # a target's datasets → the fields its mapping produces

    def factory(self) -> AdapterFactory:
        factory, problem = load_adapter(self.group, self.adapter_type, self.path)
        assert problem is None, str(problem)
        assert factory is not None
        return factory

    def context(self, base: Path) -> AdapterContext:
        return AdapterContext("contract", self.path, base, DEPARTMENT_CODE, DEPARTMENT_NAME, fields=self.fields)

    def build(self, raw: Mapping[str, Any], base: Path) -> tuple[Any, list[Problem]]:
        return self.factory().from_settings(raw, self.context(base))

    def built(self, raw: Mapping[str, Any], base: Path) -> Any:
        adapter, problems = self.build(raw, base)
        assert problems == [], [str(p) for p in problems]
        return adapter

    def test_loads_through_the_entry_point(self) -> None:
        """The adapter type is registered under its entry-point group and names a factory with Settings."""
        factory = self.factory()
        assert callable(factory.from_settings)
        assert dataclasses.is_dataclass(factory.Settings)

    def test_unknown_key_is_a_problem_with_its_path(self, adapter_settings: dict[str, Any], tmp_path: Path) -> None:
        """A misspelt setting is reported at its TOML path, and no adapter is built."""
        adapter, problems = self.build({**adapter_settings, UNKNOWN_KEY: 1}, tmp_path)
        assert adapter is None
        assert f"{self.path}.{UNKNOWN_KEY}" in [p.path for p in problems]

    def test_missing_key_is_a_problem_with_its_path(self, adapter_settings: dict[str, Any], tmp_path: Path) -> None:
        """Each required setting left out is reported at its TOML path."""
        required = required_settings(self.factory())
        if not required:
            pytest.skip(f"{self.adapter_type}: every setting has a default, so none can be missing")
        for name in required:
            adapter, problems = self.build({k: v for k, v in adapter_settings.items() if k != name}, tmp_path)
            assert adapter is None
            assert f"{self.path}.{name}" in [p.path for p in problems]

    async def test_async_with_works_twice(self, adapter_settings: dict[str, Any], tmp_path: Path) -> None:
        """The adapter can be entered, left and entered again (the daemon reopens it after a reload)."""
        adapter = self.built(adapter_settings, tmp_path)
        for _ in range(2):
            async with adapter as entered:
                assert entered is adapter


class SinkContract(_Contract):
    """Conformance tests for a sink (see the module docstring)."""

    group = SINK_GROUP
    path = "targets.contract"
    dataset: ClassVar[str] = "penalty"
    table_code: ClassVar[str] = "XZCF"
    records: ClassVar[Sequence[TargetRecord]] = (
        TargetRecord("k-1", 1, "upsert", {"name": "苏州某某科技有限公司", "amount": 1200}),
        TargetRecord("k-2", 3, "withdraw", {"name": "张某", "amount": 0}),
    )

    @pytest.fixture
    def sink_settings(self, tmp_path: Path) -> dict[str, Any]:
        """Settings of a working sink; override to point at a test server or database."""
        return dict(self.settings)

    @pytest.fixture
    def adapter_settings(self, sink_settings: dict[str, Any]) -> dict[str, Any]:
        return sink_settings

    def http_settings(self, url: str, token_file: Path, timeout_s: float) -> dict[str, Any] | None:
        """Settings sending to the platform at ``url`` (its root) with the token in ``token_file`` and
        ``timeout_s`` per request; None (the default): not an HTTP sink."""
        return None

    def unreachable_settings(self, tmp_path: Path) -> dict[str, Any] | None:
        """Settings naming a peer (database, server) that cannot be reached; None: nothing to reach."""
        return None

    def test_is_a_sink(self, sink_settings: dict[str, Any], tmp_path: Path) -> None:
        """What the factory builds is a Sink."""
        assert isinstance(self.built(sink_settings, tmp_path), Sink)

    def test_encode_is_deterministic(self, sink_settings: dict[str, Any], tmp_path: Path) -> None:
        """The same batch encodes to the same bytes (a retried batch is the same request)."""
        sink = self.built(sink_settings, tmp_path)
        first = sink.encode("b-1", self.dataset, self.table_code, self.records)
        assert isinstance(first, bytes)
        assert sink.encode("b-1", self.dataset, self.table_code, list(self.records)) == first

    def test_batch_encoder_survives_pickling(self, sink_settings: dict[str, Any], tmp_path: Path) -> None:
        """A BatchEncoding sink's encoder, pickled (as for a worker process), gives encode's bytes."""
        sink = self.encoding_sink(sink_settings, tmp_path)
        encoder = pickle.loads(pickle.dumps(sink.batch_encoder()))  # noqa: S301 (our own bytes)
        assert encoder("b-1", self.dataset, self.table_code, self.records) == \
            sink.encode("b-1", self.dataset, self.table_code, self.records)

    def test_batch_encoder_module_imports_no_client(self, sink_settings: dict[str, Any], tmp_path: Path) -> None:
        """A BatchEncoding sink's encoder lives in a module that loads no driver or HTTP client."""
        encoder = self.encoding_sink(sink_settings, tmp_path).batch_encoder()
        module = getattr(encoder, "func", encoder).__module__
        assert imports_no_client(module) == []

    def encoding_sink(self, sink_settings: dict[str, Any], tmp_path: Path) -> Any:
        sink = self.built(sink_settings, tmp_path)
        if not isinstance(sink, BatchEncoding):
            pytest.skip(f"{self.adapter_type} is not BatchEncoding: the daemon encodes its batches itself")
        return sink

    async def test_unreachable_peer_is_retryable(self, tmp_path: Path) -> None:
        """A peer that cannot be reached (for HTTP: a refused connection) gives RetryableError."""
        sink = self.built(self.unreachable_settings(tmp_path) or self.http_unreachable(tmp_path), tmp_path)
        with pytest.raises(RetryableError):
            await self.deliver(sink, self.batch(sink))

    def http_unreachable(self, tmp_path: Path) -> dict[str, Any]:
        raw = self.http_settings(f"http://127.0.0.1:{free_port()}", self.token_file(tmp_path, "t"), 5.0)
        if raw is None:
            pytest.skip(f"{self.adapter_type}: no unreachable_settings() and no http_settings(): nothing to reach")
        return raw

    @pytest.mark.parametrize(("fault", "expected"), [
        pytest.param("hang", RetryableError, id="hang"),
        pytest.param("503", RetryableError, id="503-retry-after"),
        pytest.param("401", PermanentError, id="401"),
        pytest.param("400", PermanentError, id="400"),
        pytest.param("garbled", RetryableError, id="200-not-json"),
    ])
    async def test_http_fault_gives_its_error(self, tmp_path: Path, fault: str, expected: type[GatewayError]) -> None:
        """Each HTTP fault gives its gateway.errors class, and no exception outside gateway.errors escapes."""
        if self.http_settings("http://127.0.0.1:9", tmp_path / "token", 1.0) is None:
            pytest.skip(f"{self.adapter_type} is not an HTTP sink (http_settings() gives None)")
        async with self.http_sink(tmp_path, fault) as (sink, body):
            try:
                await self.deliver(sink, self.batch(sink, body))
            except GatewayError as exc:
                assert type(exc) is expected, f"{fault}: {type(exc).__name__}: {exc}"
                if fault == "503":
                    assert getattr(exc, "retry_after_s", None) == 7
            else:
                pytest.fail(f"{fault}: deliver returned instead of raising {expected.__name__}")

    @asynccontextmanager
    async def http_sink(self, tmp_path: Path, fault: str) -> AsyncIterator[tuple[Any, bytes | None]]:
        """The sink pointed at a sandbox playing ``fault``, and the body to send (None: the sink's own)."""
        token = "contract-token-0123456789"  # noqa: S105 (a test sandbox's token, on loopback)
        faults = {"hang": Faults(timeout_rate=1.0, timeout_s=30.0),
                  "503": Faults(error_rate=1.0, error_status=503, retry_after_s=7.0),
                  "garbled": Faults(garble_rate=1.0)}.get(fault, Faults())
        config = SandboxConfig(token=token, db_path=str(tmp_path / "contract-sandbox.db"), faults=faults)
        async with Sandbox(config) as sandbox:
            raw = self.http_settings(sandbox.url, self.token_file(tmp_path, "wrong" if fault == "401" else token),
                                     HANG_TIMEOUT_S if fault == "hang" else 10.0)
            assert raw is not None
            yield self.built(raw, tmp_path), b"{not json" if fault == "400" else None

    @staticmethod
    def token_file(tmp_path: Path, token: str) -> Path:
        path = tmp_path / f"token-{token}"
        path.write_text(token + "\n", encoding="utf-8")
        return path

    def batch(self, sink: Any, body: bytes | None = None) -> OutgoingBatch:
        body = body if body is not None else sink.encode("b-1", self.dataset, self.table_code, self.records)
        return OutgoingBatch("b-1", self.dataset, body, len(self.records))

    @staticmethod
    async def deliver(sink: Any, batch: OutgoingBatch) -> Any:
        async with sink:
            return await sink.deliver(batch)


class SourceContract(_Contract):
    """Conformance tests for a source (see the module docstring)."""

    group = SOURCE_GROUP
    path = "sources.contract"
    limit: ClassVar[int] = 3
    max_pages: ClassVar[int] = 50  # a source that keeps saying "more" beyond this fails the paging checks

    @pytest.fixture
    def source_settings(self, tmp_path: Path) -> dict[str, Any]:
        """Settings of a working source with more than ``2 * limit`` rows; override to create them."""
        return dict(self.settings)

    @pytest.fixture
    def adapter_settings(self, source_settings: dict[str, Any]) -> dict[str, Any]:
        return source_settings

    def unreachable_settings(self, tmp_path: Path) -> dict[str, Any] | None:
        """Settings naming a database or server that cannot be reached; None: nothing to reach."""
        return None

    def test_is_a_source(self, source_settings: dict[str, Any], tmp_path: Path) -> None:
        """What the factory builds is a Source."""
        assert isinstance(self.built(source_settings, tmp_path), Source)

    async def test_pages_respect_limit_and_cursor_is_json(self, source_settings: dict[str, Any],
                                                          tmp_path: Path) -> None:
        """No page has more than ``limit`` rows, every cursor is JSON, and the rows span several pages."""
        pages = await self.drain(source_settings, tmp_path)
        assert all(len(p.rows) <= self.limit for p in pages)
        for page in pages:
            json.dumps(page.cursor)
        assert sum(len(p.rows) for p in pages) > 2 * self.limit, "source_settings must give > 2 * limit rows"

    async def test_no_key_repeats_on_the_next_page(self, source_settings: dict[str, Any], tmp_path: Path) -> None:
        """A key taken on one page does not come again on the page after it."""
        pages = await self.drain(source_settings, tmp_path)
        assert sum(1 for p in pages if p.rows) >= 2, "source_settings must give rows on at least two pages"
        for before, after in itertools.pairwise(pages):
            assert {r.key for r in before.rows}.isdisjoint(r.key for r in after.rows)

    async def test_ack_is_idempotent(self, source_settings: dict[str, Any], tmp_path: Path) -> None:
        """Acking the same cursor twice is harmless, and reading goes on after it."""
        source = self.built(source_settings, tmp_path)
        async with source:
            first = await source.fetch(None, self.limit)
            await source.ack(first.cursor)
            await source.ack(first.cursor)
            second = await source.fetch(json.loads(json.dumps(first.cursor)), self.limit)
        assert second.rows, "source_settings must give more than one page of rows"
        assert {r.key for r in first.rows}.isdisjoint(r.key for r in second.rows)

    async def test_page_reader_reads_what_fetch_reads(self, source_settings: dict[str, Any], tmp_path: Path) -> None:
        """A PageReading source's reader, pickled, gives the rows fetch gives after the same cursor, and its
        module loads no driver or client (a worker process reads with it)."""
        source: Source = self.built(source_settings, tmp_path)
        if not isinstance(source, PageReading):
            pytest.skip(f"{self.adapter_type} is not PageReading: the daemon fetches every page itself")
        async with source:
            first = await source.fetch(None, self.limit)
            reader = source.page_reader()
            if reader is None:
                pytest.skip(f"{self.adapter_type}: page_reader() gives None for these settings")
            reader = pickle.loads(pickle.dumps(reader))  # noqa: S301 (our own bytes)
            read = await asyncio.to_thread(reader, first.cursor, self.limit)
            fetched = await source.fetch(first.cursor, self.limit)
        assert rows_of(read) and rows_of(read) == rows_of(fetched)
        assert read.cursor == fetched.cursor
        assert imports_no_client(getattr(reader, "func", reader).__module__) == []

    async def test_unreachable_peer_is_retryable(self, tmp_path: Path) -> None:
        """A database or server that cannot be reached gives RetryableError, from entering or from fetch."""
        raw = self.unreachable_settings(tmp_path)
        if raw is None:
            pytest.skip(f"{self.adapter_type}: unreachable_settings() gives None: nothing to reach")
        source = self.built(raw, tmp_path)
        with pytest.raises(RetryableError):
            async with source:
                await source.fetch(None, self.limit)

    async def drain(self, raw: Mapping[str, Any], base: Path) -> list[SourceBatch]:
        """Pages fetched from the start until the source has no more (at most ``max_pages``)."""
        source = self.built(raw, base)
        pages: list[SourceBatch] = []
        cursor = None
        async with source:
            for _ in range(self.max_pages):
                page = await source.fetch(cursor, self.limit)
                pages.append(page)
                cursor = json.loads(json.dumps(page.cursor))  # as the store keeps it
                if not page.more:
                    return pages
        pytest.fail(f"{self.adapter_type}: still more after {self.max_pages} pages of {self.limit}")


def rows_of(batch: SourceBatch) -> list[tuple[str, dict[str, Any]]]:
    return [(r.key, dict(r.data)) for r in batch.rows if isinstance(r, SourceRow)]
