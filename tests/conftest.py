"""Shared fixtures: real SQLite files, real PostgreSQL and MariaDB servers, the sandbox on 127.0.0.1."""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from gateway.sandbox.server import Sandbox, SandboxConfig
from gateway.store import Store, open_store
from tests.support import mariadb_server
from tests.support.pg_server import create_database, postgres_server

TOKEN = "test-token-0123456789"
_db_counter = itertools.count()


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    if os.environ.get("CG_NO_POSTGRES") == "1":
        pytest.skip("CG_NO_POSTGRES=1: PostgreSQL variants skipped on purpose")
    with postgres_server() as url:
        yield url


@pytest.fixture(scope="session")
def mariadb_admin_url() -> Iterator[str]:
    if os.environ.get("CG_NO_MARIADB") == "1":
        pytest.skip("CG_NO_MARIADB=1: MariaDB variants skipped on purpose")
    with mariadb_server.mariadb_server() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def department_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty department database: a SQLite file, or a new database on the PostgreSQL or MariaDB server."""
    name = f"cg_dept_{os.getpid()}_{next(_db_counter)}"
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'department.db'}"
    if request.param == "postgresql":
        return create_database(request.getfixturevalue("pg_admin_url"), name)
    return mariadb_server.create_database(request.getfixturevalue("mariadb_admin_url"), name)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty store URL: a SQLite file, or a new database on the test PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    admin = request.getfixturevalue("pg_admin_url")
    return create_database(admin, f"cg_test_{os.getpid()}_{next(_db_counter)}")


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    st = await open_store(store_url)
    try:
        yield st
    finally:
        await st.aclose()


@pytest.fixture
async def sandbox(tmp_path: Path) -> AsyncIterator[Sandbox]:
    async with Sandbox(SandboxConfig(token=TOKEN, db_path=str(tmp_path / "sandbox.db"))) as sb:
        yield sb
