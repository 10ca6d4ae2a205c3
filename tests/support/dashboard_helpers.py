"""A prepared scenario for the dashboard and the monthly report: a small demo run (deliveries with receipts,
quarantine with reasons, credit lists with a red/black conflict, a sanction case answered, late records, natural
persons' ID numbers), its configuration with an [admin] section, and the admin listener in a thread of its own
(selenium's calls block; the server must keep answering while they wait)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.config import load_config
from gateway.demo import run_demo
from gateway.domain.identifiers import id_check_char
from gateway.store import open_store
from gateway.web.admin import AdminServer

READ_TOKEN = "dashboard-read-token-0123456789"
SMALL = {"licences": 40, "penalties": 40}
ID_NUMBER = re.compile(r"(?<![0-9A-Za-z])\d{17}[\dXx](?![0-9A-Za-z])")


@dataclass(frozen=True)
class Scenario:
    workdir: Path
    config: Path
    db: Path  # the store (SQLite)
    department: Path  # the department's database, with the raw ID numbers

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        with contextlib.closing(sqlite3.connect(self.db)) as conn:
            return conn.execute(sql, params).fetchall()

    def raw_ids(self) -> set[str]:
        """Every resident ID number in the department's source rows."""
        with contextlib.closing(sqlite3.connect(self.department)) as conn:
            found = set()
            for table in ("xzcf", "xzxk"):
                for row in conn.execute(f"SELECT * FROM {table}"):
                    found |= {v for v in row if isinstance(v, str) and ID_NUMBER.fullmatch(v)}
            return found


def unmasked_ids(text: str) -> list[str]:
    """18-character resident ID numbers with a valid check character, as they would appear unmasked."""
    return [m for m in ID_NUMBER.findall(text) if id_check_char(m[:17]) == m[17].upper()]


def make_scenario(directory: Path) -> Scenario:
    workdir = directory / "demo-run"
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        code = run_demo(workdir, **SMALL)
    assert code == 0, printed.getvalue()
    token = workdir / "admin-read.token"
    token.write_text(READ_TOKEN + "\n", encoding="utf-8")
    token.chmod(0o600)
    config = workdir / "credit-gateway.toml"
    text = config.read_text(encoding="utf-8")
    text = re.sub(r"\n\[admin\].*?(?=\n\[(?!admin)|\Z)", "\n", text, flags=re.S)  # the demo's own [admin], if any
    config.write_text(text + '\n[admin]\nport = 0\n[admin.tokens.drc]\nrole = "read"\n'
                             'token_file = "admin-read.token"\n', encoding="utf-8")
    return Scenario(workdir, config, workdir / "spool" / "gateway.db", workdir / "department.db")


class ServerThread:
    """The admin listener (API and dashboard) over the scenario's store, on 127.0.0.1 in its own event loop."""

    def __init__(self, config: Path) -> None:
        self.config, self.url = config, ""
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)

    def __enter__(self) -> ServerThread:
        self._thread.start()
        if not self._ready.wait(30):
            raise TimeoutError("the admin listener did not start")
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(15)

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported to the test by __enter__
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        config = load_config(self.config)
        assert config.admin is not None
        store = await open_store(config.store_url())
        try:
            async with AdminServer(config, config.admin, store) as server:
                self.url, self._loop, self._stop = server.url, asyncio.get_running_loop(), asyncio.Event()
                self._ready.set()
                await self._stop.wait()
        finally:
            await store.aclose()


@contextlib.contextmanager
def serving(config: Path) -> Iterator[ServerThread]:
    with ServerThread(config) as server:
        yield server
