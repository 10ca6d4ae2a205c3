"""The layer table (tests/architecture/layers.py, docs/architecture.md) and the import graph's shape, checked on
the source: imports inside functions count, and so do imports under ``if TYPE_CHECKING``."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

import gateway
from tests.architecture.graph import ROOT, Edge, cycles, edges, graph, tree_modules
from tests.architecture.layers import SANDBOX, TESTING, allowed, layer_of, matches

MODULES = tree_modules()
EDGES = [edge for path in MODULES.values() for edge in edges(path, MODULES)]


def _where(edge: Edge) -> str:
    kind = " (typing only)" if edge.typing_only else " (inside a function)" if edge.lazy else ""
    return f"{edge.source} imports {edge.target} at line {edge.line}{kind}"


class TestLayers:
    def test_every_gateway_module_has_a_place(self) -> None:
        """Each module of gateway/ is in a layer or in a side package (sandbox, testing)."""
        homeless = [name for name in MODULES if name.startswith("gateway") and layer_of(name) is None
                    and not matches(name, SANDBOX) and not matches(name, TESTING)]
        assert homeless == []

    def test_no_import_goes_up_or_sideways(self) -> None:
        """Every import of the tree is allowed by the layer table (imports inside functions included)."""
        assert [_where(e) for e in EDGES if not allowed(e.source, e.target)] == []

    def test_the_rule_catches_an_upward_import(self) -> None:
        """The rule is not vacuous: the store may not import the pipeline, nor the domain the store."""
        assert not allowed("gateway.store.outbox", "gateway.pipeline.delivery")
        assert not allowed("gateway.domain.timeliness", "gateway.store")
        assert not allowed("gateway.sandbox.server", "gateway.store")
        assert not allowed("adapters.sql.source", "gateway.pipeline.workers")
        assert allowed("gateway.pipeline.delivery", "gateway.store")

    def test_the_graph_is_read(self) -> None:
        """The scanner sees the tree's imports (so the checks above are not vacuous)."""
        assert len(MODULES) >= 90 and len(EDGES) >= 300


class TestCycles:
    def test_no_import_cycles(self) -> None:
        """No two modules import each other, directly or through others (runtime imports, lazy ones included)."""
        assert cycles(graph()) == []

    def test_no_cycles_through_type_only_imports_either(self) -> None:
        """Type-only imports do not hide a cycle either."""
        assert cycles(graph(include_typing=True)) == []

    def test_the_cycle_finder_finds_one(self) -> None:
        """A two-module loop and a three-module loop are found; a chain is not."""
        found = cycles({"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"e"}, "e": {"c"}, "x": {"y"}, "y": set()})
        assert sorted(found) == [["a", "b"], ["c", "d", "e"]]


class TestWorkerImports:
    @pytest.mark.parametrize("module", ["gateway.pipeline.workers", "adapters.sql.pages", "adapters.platform.body"])
    def test_worker_side_modules_load_no_heavy_library(self, module: str) -> None:
        """A spawned worker's modules load no SQLAlchemy, aiohttp, signxml or lxml (it starts in about 0.2 s)."""
        code = textwrap.dedent(f"""
            import sys, {module}
            heavy = sorted(m for m in ("sqlalchemy", "aiohttp", "signxml", "lxml") if m in sys.modules)
            print(",".join(heavy))
        """)
        run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
        assert run.stdout.strip() == ""

    def test_the_check_sees_a_heavy_import(self) -> None:
        """The same probe reports SQLAlchemy when the store is imported (so it can fail)."""
        code = "import sys, gateway.store; print('sqlalchemy' in sys.modules)"
        run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
        assert run.stdout.strip() == "True"

    def test_sandbox_loads_no_store(self) -> None:
        """The sandbox, a platform simulator, imports neither the store nor SQLAlchemy."""
        code = ("import sys, gateway.sandbox.server; print(sorted(m for m in sys.modules "
                "if m.startswith(('sqlalchemy', 'gateway.store', 'gateway.pipeline'))))")
        run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
        assert run.stdout.strip() == "[]"


class TestPublicApi:
    def test_all_is_pinned(self) -> None:
        """gateway.__all__ is the adapter API; changing it is a decision, made here."""
        assert gateway.__all__ == [
            "SINK_GROUP", "SOURCE_GROUP", "AdapterContext", "AdapterError", "AdapterFactory", "BatchEncoding",
            "BodyEncoder", "ColumnListing", "ConfigError", "Credential", "Credentialed", "GatewayError", "Holdings",
            "OutgoingBatch", "PageReader", "PageReading", "PermanentError", "Problem", "Receipt", "RecordResult",
            "RejectedError", "RetryableError", "Sink", "SnapshotPage", "Source", "SourceBatch", "SourceRow",
            "StoreError", "TargetRecord", "ValidationError", "describe", "load_adapter", "parse_settings",
            "read_secret", "read_token", "resolve_sqlite_url", "setting",
        ]

    def test_every_exported_name_exists(self) -> None:
        """Each name in __all__ is importable from gateway."""
        assert [name for name in gateway.__all__ if not hasattr(gateway, name)] == []

    def test_gateway_package_is_light(self) -> None:
        """Importing gateway loads only the kernel (adapter, errors, settings): no third-party library."""
        code = ("import sys, gateway; print(sorted({m.split('.')[0] for m in sys.modules} "
                "& {'sqlalchemy', 'aiohttp', 'cryptography', 'lxml', 'orjson'}))")
        run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
        assert run.stdout.strip() == "[]"
