"""Health that tells the truth: gateway.health on a real store, /healthz and /livez on the admin listener, and
`credit-gateway health` as a process (each reason named, answered fast)."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from gateway.certs import calendar_expiry
from gateway.clock import CHINA
from gateway.config import load_config
from gateway.domain.calendar import WorkCalendar
from gateway.health import HealthLimits, health_problems
from gateway.store import Store, open_store
from gateway.web.admin import AdminServer
from tests.ops.test_admin_api import READ_TOKEN, _admin_toml
from tests.support.helpers import SOURCE, failed_batch, make_department_db
from tests.support.inbound_helpers import write_config
from tests.support.list_helpers import async_url
from tests.support.pg_server import create_database

INSTANCE = "health-test"
LIMITS = HealthLimits(max_heartbeat_age_s=60.0, alert_days=30.0)
FAR = [{"kind": "calendar", "what": "working-day calendar", "until": "2027-12-31", "days_left": 380.0}]


def running(**extra: Any) -> dict[str, Any]:
    """A heartbeat state of a healthy daemon on this host (this test's own process), with ``extra`` on top."""
    return {"state": "running", "host": socket.gethostname(), "targets": {}, "sources": {}, "expiries": FAR,
            **extra}


async def beat(store: Store, state: dict[str, Any], pid: int | None = None) -> None:
    await store.reports.beat(INSTANCE, pid or os.getpid(), time.time(), state)


@pytest.fixture
def sqlite_store(gateway_store: Store) -> Store:
    return gateway_store  # gateway.testing's fixture: a migrated store in a SQLite file


class TestReasons:
    async def test_a_healthy_daemon_is_ready(self, sqlite_store: Store) -> None:
        """A fresh heartbeat from a live process with nothing wrong: no problems."""
        await beat(sqlite_store, running())
        assert await health_problems(sqlite_store, INSTANCE, LIMITS) == []

    async def test_never_ran(self, sqlite_store: Store) -> None:
        assert await health_problems(sqlite_store, INSTANCE, LIMITS) == [f"instance {INSTANCE} has never run"]

    async def test_the_process_is_gone(self, sqlite_store: Store) -> None:
        """A heartbeat that still says running, from a process that has exited (killed: no `stopped` beat)."""
        gone = await asyncio.to_thread(subprocess.run, [sys.executable, "-c", "pass"], timeout=30)
        gone_pid = await asyncio.to_thread(_exited_pid)
        assert gone.returncode == 0
        await beat(sqlite_store, running(), pid=gone_pid)
        [problem] = await health_problems(sqlite_store, INSTANCE, LIMITS)
        assert f"process (pid {gone_pid}) is gone" in problem

    async def test_a_stale_heartbeat(self, sqlite_store: Store) -> None:
        await beat(sqlite_store, running())
        [problem] = await health_problems(sqlite_store, INSTANCE, HealthLimits(max_heartbeat_age_s=-1.0))
        assert "last heartbeat was" in problem

    async def test_a_source_that_failed_its_last_polls(self, sqlite_store: Store) -> None:
        """Failed polls below the threshold are tolerated; at it, health fails with the source's last error."""
        src = {"failed_polls": 2, "unhealthy_after": 3, "last_error": "source dept: connection refused"}
        await beat(sqlite_store, running(sources={"dept": src}))
        assert await health_problems(sqlite_store, INSTANCE, LIMITS) == []
        await beat(sqlite_store, running(sources={"dept": {**src, "failed_polls": 3}}))
        assert await health_problems(sqlite_store, INSTANCE, LIMITS) == [
            "source dept: its last 3 polls failed: source dept: connection refused"]

    async def test_an_open_circuit(self, sqlite_store: Store) -> None:
        target = {"circuit": "open", "last_error": "HTTP 503", "blocked": None, "in_flight": 0}
        await beat(sqlite_store, running(targets={"province": target}))
        assert await health_problems(sqlite_store, INSTANCE, LIMITS) == [
            "target province: circuit open after failed deliveries: HTTP 503"]

    async def test_dead_letters(self, sqlite_store: Store, tmp_path: Path) -> None:
        """A batch given up on leaves dead letters: health names the target and the count."""
        records = await failed_batch(sqlite_store, tmp_path, "HTTP 401", dead=True)
        await beat(sqlite_store, running())
        [problem] = await health_problems(sqlite_store, INSTANCE, LIMITS)
        assert problem.startswith(f"target province: {records} dead letter(s)")

    async def test_certificate_and_calendar_inside_their_window(self, sqlite_store: Store) -> None:
        """A certificate or the calendar within alert_days of its end fails health, with what and when."""
        now = dt.datetime(2026, 12, 7, 12, tzinfo=CHINA)
        calendar = calendar_expiry(WorkCalendar(), now)  # chinesecalendar 1.11: the end of 2026
        assert calendar["until"] == "2026-12-31" and 24 < calendar["days_left"] < 25
        cert = {"kind": "certificate", "what": "targets.p.envelope.cert: CN=gw", "until": "2027-03-01",
                "days_left": 84.0}
        await beat(sqlite_store, running(expiries=[cert, calendar]))
        problems = await health_problems(sqlite_store, INSTANCE, LIMITS)
        assert len(problems) == 1 and "working-day calendar" in problems[0]
        assert "expires within 30 days: ends 2026-12-31 (24 days left)" in problems[0]
        problems = await health_problems(sqlite_store, INSTANCE, HealthLimits(alert_days=90))
        assert "targets.p.envelope.cert: CN=gw ends 2027-03-01 (84 days left)" in problems

    async def test_calendar_override_moves_the_end(self) -> None:
        """A [calendar] table for next year moves the calendar's end to its covered_until."""
        calendar = WorkCalendar([dt.date(2027, 1, 1)], [], dt.date(2027, 12, 31))
        found = calendar_expiry(calendar, dt.datetime(2026, 12, 7, tzinfo=CHINA))
        assert found["until"] == "2027-12-31" and found["days_left"] > 380

    @pytest.fixture
    def pg_url(self, pg_admin_url: str) -> str:
        return create_database(pg_admin_url, f"cg_health_{os.getpid()}")

    async def test_a_store_that_cannot_be_written(self, pg_url: str) -> None:
        """A store that is read-only (PostgreSQL default_transaction_read_only) fails health, saying so."""
        url = pg_url
        store = await open_store(url)
        try:
            await beat(store, running())
            assert await health_problems(store, INSTANCE, LIMITS) == []
            engine = create_async_engine(async_url(url))
            async with engine.begin() as conn:
                await conn.execute(text(f"ALTER DATABASE cg_health_{os.getpid()} SET default_transaction_read_only "
                                        "= on"))
            await engine.dispose()
            await store.aclose()
            store = await open_store(url, migrate=False)
            [problem] = await health_problems(store, INSTANCE, LIMITS)
            assert problem.startswith("store cannot be written:") and "read-only" in problem
        finally:
            await store.aclose()


def _exited_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=30)
    return child.pid


class TestProbes:
    async def test_healthz_tells_why_and_livez_only_lives(self, tmp_path: Path) -> None:
        """/healthz answers 503 with every reason until the daemon beats, then 200; /livez is 200 throughout.
        Neither needs a token."""
        config = load_config(write_config(tmp_path, f"sqlite:///{tmp_path / 's.db'}", None,
                                          extra=_admin_toml(tmp_path, "")))
        store = await open_store(config.store_url())
        try:
            async with AdminServer(config, config.admin, store) as server, aiohttp.ClientSession() as http:
                async with http.get(server.url + "/healthz") as resp:
                    assert resp.status == 503
                    body = await resp.json()
                assert body["ok"] is False and body["problems"] == [
                    f"instance {config.gateway.instance} has never run"]
                async with http.get(server.url + "/livez") as resp:
                    assert (resp.status, await resp.json()) == (200, {"ok": True})
                await store.reports.beat(config.gateway.instance, os.getpid(), time.time(), running())
                async with http.get(server.url + "/healthz") as resp:
                    assert (resp.status, await resp.json()) == (200, {"ok": True, "problems": []})
                async with http.get(server.url + "/api/v1/status") as resp:
                    assert resp.status == 401  # the rest still needs a token
                headers = {"Authorization": f"Bearer {READ_TOKEN}"}
                async with http.get(server.url + "/api/v1/status", headers=headers) as resp:
                    assert resp.status == 200
        finally:
            await store.aclose()


class TestCommand:
    async def test_health_prints_each_reason_and_answers_fast(self, tmp_path: Path) -> None:
        """`credit-gateway health` prints one `unhealthy:` line per reason, exit 1; 0 and `healthy` when ready;
        each run takes well under a second beyond starting Python."""
        path = write_config(tmp_path, f"sqlite:///{tmp_path / 's.db'}", None)
        config = load_config(path)
        store = await open_store(config.store_url())
        try:
            target = {"circuit": "open", "last_error": "HTTP 503", "blocked": None}
            src = {"failed_polls": 5, "unhealthy_after": 3, "last_error": "timeout"}
            await store.reports.beat(config.gateway.instance, os.getpid(), time.time(),
                                     running(targets={"t": target}, sources={"s": src}))
        finally:
            await store.aclose()
        sick = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "gateway", "-c", str(path), "health"],
                                       capture_output=True, text=True, timeout=60)
        assert sick.returncode == 1
        assert sick.stdout.splitlines() == ["unhealthy: source s: its last 5 polls failed: timeout",
                                            "unhealthy: target t: circuit open after failed deliveries: HTTP 503"]

    async def test_health_imports_nothing_heavy(self, tmp_path: Path) -> None:
        """`health` answers without importing the configuration, adapters, mappings, sealing or the daemon (they
        took most of its second), and its store work is a few milliseconds."""
        path = write_config(tmp_path, f"sqlite:///{tmp_path / 's.db'}", None)
        probe = ("import sys, time; from gateway.cli import main; t = time.monotonic(); "
                 f"code = main(['-c', {str(path)!r}, 'health']); took = time.monotonic() - t; "
                 "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('adapters', 'pysmx', 'lxml', 'signxml') "
                 "or m in ('gateway.config', 'gateway.daemon', 'gateway.mapping', 'gateway.sealing', 'gateway.certs', "
                 "'gateway.operations', 'gateway.pipeline')); print(code, heavy, round(took, 3))")
        done = await asyncio.to_thread(subprocess.run, [sys.executable, "-c", probe], capture_output=True, text=True,
                                       timeout=60)
        last = done.stdout.splitlines()[-1]
        assert last.startswith("1 []"), done.stdout + done.stderr  # exit 1 (never ran), no heavy module
        assert float(last.rsplit(" ", 1)[1]) < 0.5, last  # open the store, probe a write, read two tables


class TestDaemonReports:
    async def test_failed_polls_reach_health_and_clear_on_success(self, tmp_path: Path) -> None:
        """The daemon counts a source's failed polls in a row into its heartbeat: health fails at the configured
        count with the source's error, and is ready again after one good poll. Its expiries are in the beat."""
        from gateway.daemon import Gateway
        from tests.support.helpers import write_config as write_gateway_config

        sample = make_department_db(tmp_path, penalties=3)
        (tmp_path / "spool").mkdir(exist_ok=True)
        path = write_gateway_config(tmp_path, url="http://127.0.0.1:9/api/v1/upload", db=sample.path, token="t" * 20)
        path.write_text(path.read_text(encoding="utf-8").replace("heartbeat_s = 5", "heartbeat_s = 5\n"
                                                                 "unhealthy_after_failed_polls = 2"), "utf-8")
        config = load_config(path)
        store = await open_store(config.store_url())
        moved = sample.path.with_suffix(".away")
        try:
            async with Gateway(config, store) as gw:
                poll = gw._poller(gw.intakes[SOURCE])
                sample.path.rename(moved)  # the department's database is gone
                for failed in (1, 2):
                    await poll()
                    await gw.beat()
                    problems = await health_problems(store, config.gateway.instance, LIMITS)
                    sick = [p for p in problems if p.startswith(f"source {SOURCE}:")]
                    assert len(sick) == failed - 1, problems
                assert "its last 2 polls failed" in sick[0]
                moved.rename(sample.path)
                await poll()
                await gw.beat()
                problems = await health_problems(store, config.gateway.instance, LIMITS)
                assert not [p for p in problems if p.startswith("source")], problems
                [beat_row] = await store.reports.heartbeats()
                kinds = {e["kind"] for e in beat_row["state"]["expiries"]}
                assert "calendar" in kinds
                assert beat_row["state"]["sources"][SOURCE]["last_success_at"] is not None
        finally:
            await store.aclose()
