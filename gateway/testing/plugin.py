"""The gateway's pytest plugin (entry point ``pytest11``: ``credit_gateway``), for adapter authors' test suites.

Fixtures, each fresh per test and named with a ``gateway_`` prefix or a noun no test suite of ours uses, so
they do not shadow a project's own ``store`` or ``sandbox``:

* ``gateway_sandbox``: the credit-platform sandbox on 127.0.0.1 (a free port); its token is
  ``gateway_sandbox.config.token`` and faults are injected with ``gateway_sandbox.set_faults(Faults(...))``;
* ``gateway_store``: a gateway store in a SQLite file under ``tmp_path``, migrated;
* ``department_db``: a small sample department database (SQLite, tables ``xzcf`` and ``xzxk``), as a
  :class:`~gateway.testing.department_db.SampleResult`.

The async fixtures are ``pytest_asyncio`` fixtures, so they work in its strict mode too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from gateway.sandbox.server import Sandbox, SandboxConfig
from gateway.store import Store, open_store
from gateway.testing.department_db import SampleResult, SampleSpec, create_department_db

SANDBOX_TOKEN = "gateway-testing-token-0123456789"  # noqa: S105 (a test sandbox's token, on loopback)


@pytest_asyncio.fixture
async def gateway_sandbox(tmp_path: Path) -> AsyncIterator[Sandbox]:
    """The credit-platform sandbox, listening on 127.0.0.1 for this test."""
    config = SandboxConfig(token=SANDBOX_TOKEN, db_path=str(tmp_path / "gateway-sandbox.db"))
    async with Sandbox(config) as sandbox:
        yield sandbox


@pytest_asyncio.fixture
async def gateway_store(tmp_path: Path) -> AsyncIterator[Store]:
    """A migrated gateway store in a SQLite file under ``tmp_path``."""
    store = await open_store(f"sqlite:///{tmp_path / 'gateway-store.db'}")
    try:
        yield store
    finally:
        await store.aclose()


@pytest.fixture
def department_db(tmp_path: Path) -> SampleResult:
    """A sample department database: 20 penalties and 20 licences, none broken."""
    spec = SampleSpec(licences=20, penalties=20, invalid_fraction=0.0)
    return create_department_db(tmp_path / "department.db", spec)
