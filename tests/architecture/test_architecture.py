"""Tests of the code layout rules in design.md: one direction of dependencies, each big library behind one module.

The rules are checked on the source (the AST of every module, imports inside functions included), so
a lazy import cannot slip past; the adapter registry is checked through importlib.metadata.
"""

from __future__ import annotations

import ast
import fnmatch
from importlib.metadata import entry_points
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GATEWAY = sorted((ROOT / "gateway").rglob("*.py"))
ADAPTERS = sorted((ROOT / "adapters").rglob("*.py"))


def rel(path: Path) -> str:
    """``path`` relative to its top folder (gateway/ or adapters/), e.g. ``store/outbox.py``."""
    return path.relative_to(path.parents[len(path.relative_to(ROOT).parts) - 2]).as_posix()

# library → the gateway/ modules (file name patterns) allowed to import it
BEHIND_ONE_MODULE = {
    "sqlalchemy": ("store/*.py", "sandbox/national.py"),  # the store; the national side of the 前置库 (simulated)
    "apscheduler": ("scheduler.py",),
    "tenacity": ("pipeline/delivery.py",),
    "aiohttp": ("sandbox/*.py", "web/*.py", "cli/remote.py", "inbound/client.py"),  # servers, clients
    "cryptography": ("sealing/base.py", "sealing/cms.py", "sealing/sm.py", "sealing/pki.py", "sealing/xmldsig.py"),
    "asn1crypto": ("sealing/base.py", "sealing/cms.py", "sealing/sm.py", "sealing/pki.py"),
    "pysmx": ("sealing/sm.py",),
    "signxml": ("sealing/xmldsig.py",),
    "lxml": ("sealing/xmldsig.py", "sealing/xmlsafe.py"),
    "chinese_calendar": ("domain/calendar.py",),
}


def imported_modules(path: Path) -> set[str]:
    """Every absolute module name ``path`` imports, anywhere in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def imported_names(path: Path, package: str) -> set[tuple[str, str]]:
    """(module, name) pairs of ``from <package>… import name`` in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return {(node.module, alias.name) for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0
            and node.module.split(".")[0] == package for alias in node.names}


def top_level(names: set[str]) -> set[str]:
    return {name.split(".")[0] for name in names}


class TestImportScanner:
    def test_finds_imports_inside_functions(self, tmp_path: Path) -> None:
        """The scanner sees lazy imports in function bodies and `from x.y import z`."""
        module = tmp_path / "m.py"
        module.write_text("import os\n\ndef f():\n    from adapters.sql.source import SqlSource\n"
                          "    import aiohttp.web\n", encoding="utf-8")
        assert top_level(imported_modules(module)) == {"os", "adapters", "aiohttp"}

    def test_there_are_modules_to_scan(self) -> None:
        """gateway/ and adapters/ have modules, so the rules below are not vacuous."""
        assert len(GATEWAY) >= 10 and len(ADAPTERS) >= 2


class TestDependencyDirection:
    @pytest.mark.parametrize("path", GATEWAY, ids=rel)
    def test_gateway_never_imports_adapters(self, path: Path) -> None:
        """No module of gateway/ imports adapters/ (adapters depend on gateway, not the reverse)."""
        assert "adapters" not in top_level(imported_modules(path))

    @pytest.mark.parametrize("path", ADAPTERS, ids=rel)
    def test_adapters_use_only_the_public_surface(self, path: Path) -> None:
        """Adapters import no private (underscore) names from gateway."""
        private = {(module, name) for module, name in imported_names(path, "gateway") if name.startswith("_")}
        assert private == set()

    @pytest.mark.parametrize("path", ADAPTERS, ids=rel)
    def test_adapters_do_not_import_the_engine_or_store(self, path: Path) -> None:
        """The core owns the lifecycle: adapters do not reach into the engine, daemon or store."""
        core = ("gateway.pipeline", "gateway.daemon", "gateway.store")
        assert {m for m in imported_modules(path) if m.startswith(core)} == set()


class TestLibrariesBehindOneModule:
    @pytest.mark.parametrize(("library", "allowed"), BEHIND_ONE_MODULE.items(), ids=list(BEHIND_ONE_MODULE))
    def test_library_imported_only_by_its_module(self, library: str, allowed: tuple[str, ...]) -> None:
        """Within gateway/, each big library is imported only by the module(s) that wrap it."""
        offenders = [rel(p) for p in GATEWAY if library in top_level(imported_modules(p))
                     and not any(fnmatch.fnmatch(rel(p), pattern) for pattern in allowed)]
        assert offenders == []

    @pytest.mark.parametrize(("library", "allowed"), BEHIND_ONE_MODULE.items(), ids=list(BEHIND_ONE_MODULE))
    def test_wrapping_module_exists_and_uses_the_library(self, library: str, allowed: tuple[str, ...]) -> None:
        """The rule names real modules: at least one allowed module does import the library."""
        users = [rel(p) for p in GATEWAY if library in top_level(imported_modules(p))
                 and any(fnmatch.fnmatch(rel(p), pattern) for pattern in allowed)]
        assert users


class TestEntryPoints:
    @pytest.mark.parametrize(("group", "name"), [("credit_gateway.sources", "sql"),
                                                 ("credit_gateway.sinks", "credit_platform")])
    def test_first_party_adapters_are_registered(self, group: str, name: str) -> None:
        """Our adapters are registered by entry points, like a third party's."""
        eps = {ep.name: ep for ep in entry_points(group=group)}
        assert name in eps
        assert eps[name].value.startswith("adapters.")

    @pytest.mark.parametrize(("group", "name"), [("credit_gateway.sources", "sql"),
                                                 ("credit_gateway.sinks", "credit_platform")])
    def test_entry_points_load_an_adapter_factory(self, group: str, name: str) -> None:
        """Each entry point loads a class with `from_settings`."""
        ep = next(ep for ep in entry_points(group=group) if ep.name == name)
        assert callable(getattr(ep.load(), "from_settings", None))


class TestTestingKit:
    KIT = sorted((ROOT / "gateway" / "testing").glob("*.py"))
    ABOVE = ("gateway.pipeline", "gateway.config", "gateway.daemon", "gateway.cli", "gateway.web",
             "gateway.operations", "gateway.demo", "gateway.inbound.service")

    def test_kit_exists(self) -> None:
        """The kit's modules are there, so the rule below is not vacuous."""
        assert {p.name for p in self.KIT} >= {"__init__.py", "contract.py", "plugin.py", "department_db.py"}

    @pytest.mark.parametrize("path", KIT, ids=rel)
    def test_kit_stays_below_the_pipeline(self, path: Path) -> None:
        """gateway.testing (a side package) uses the kernel, domain, store and sandbox; never the layers above."""
        assert {m for m in imported_modules(path) if m.startswith(self.ABOVE)} == set()
