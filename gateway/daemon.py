"""The daemon: builds the pipeline from the config, runs it, and stops it cleanly.

SIGTERM and SIGINT set a stop event: scheduling stops, running polls finish their commit, workers stop
leasing and wait up to ``shutdown_grace_s`` for in-flight sends (whatever is cut off is resent after the
restart under the same idempotency key). ``run_until_idle`` is the same machinery for the demo, tests
and one-shot runs: poll every source until drained and deliver until no backlog is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.adapter import Auditing
from gateway.certs import expiries, expiry_warnings, key_problems
from gateway.clock import china_today
from gateway.config import Config, load_config
from gateway.domain.calendar import WorkCalendar
from gateway.domain.publicity import stamped
from gateway.errors import ConfigError, GatewayError
from gateway.instance_lock import store_lock
from gateway.jobs import list_targets, reconcile, repair_screen, run_publicity
from gateway.mapping import load_mapping, mapping_version
from gateway.monthly import due_month, monthly_report
from gateway.pipeline.audit import audit_source
from gateway.pipeline.delivery import TargetWorker
from gateway.pipeline.intake import Intake
from gateway.pipeline.workers import MapPool
from gateway.scheduler import Scheduler
from gateway.store import Store, open_store
from gateway.store.publicity import JobResult
from gateway.tuning import tune_process
from gateway.web.server import WebServers, start_web
from gateway.xlsx import write_xlsx

log = logging.getLogger("gateway.daemon")
EXPIRY_REFRESH_S = 3600.0


@dataclass
class PollRecord:
    """A source's recent polls: failures in a row, the last error and the last success (epoch seconds)."""

    failed_polls: int = 0
    last_error: str | None = None
    last_error_at: float | None = None
    last_success_at: float | None = None

    def failed(self, error: str) -> None:
        self.failed_polls += 1
        self.last_error, self.last_error_at = error, time.time()

    def succeeded(self) -> None:
        self.failed_polls, self.last_success_at = 0, time.time()


class Gateway:
    """Sources, targets and the store of one running gateway."""

    def __init__(self, config: Config, store: Store, today: Callable[[], dt.date] = china_today) -> None:
        self.config, self.store, self.today = config, store, today
        d = config.daemon
        self.sem = asyncio.Semaphore(d.max_concurrency)
        self.pool = MapPool(d.map_workers)
        self.workers = {name: TargetWorker(t, store, self.sem, d.adapter_timeout_s, d.idle_check_s,
                                           config.gateway.instance, pool=self.pool)
                        for name, t in config.targets.items()}
        routes = config.routes()
        tune_process()
        self.intakes = {name: Intake(s, store, routes, self.sem, d.adapter_timeout_s, self._wake_all, today,
                                     pool=self.pool) for name, s in config.sources.items()}
        self._publication_rules()
        self.stopping = asyncio.Event()
        self._refused: dict[str, int] = {}  # mapping file → version that failed to compile
        self.started_at = time.time()
        self._stack = contextlib.AsyncExitStack()
        self.web = WebServers()  # the inbound endpoint and the admin API, when configured (started by run)
        self.polls = {name: PollRecord() for name in self.intakes}  # for the heartbeat: health and status
        self._expiries: tuple[float, list[dict[str, Any]]] = (0.0, [])

    def _publication_rules(self) -> None:
        """The repair check at intake, the computed 公示截止期 on the way out, and nothing past its publicity period
        sent to a public target (gateway.domain.publicity)."""
        rules = self.config.publicity
        if not rules.enabled:
            return
        for intake in self.intakes.values():
            intake.screens.append(repair_screen(self.store, rules))
        for worker in self.workers.values():
            worker.today = self.today
            if rules.set_publicity_end:
                worker.derive = functools.partial(stamped, rules)
            if worker.cfg.public:  # what has ended is not published there, even when first read after its end
                worker.publicity = rules

    async def run_publicity(self) -> JobResult:
        """The publicity job once, as of ``today()``: periods up to date, due withdrawals queued."""
        result = await run_publicity(self.store, self.config, self.today())
        if result.withdrawn:
            self._wake_all()
        return result

    async def write_monthly_report(self, today: dt.date | None = None) -> Path | None:
        """Last month's report into ``[reports] monthly_dir`` once it is due (the first working day of a month),
        unless it is there already; returns the file written."""
        today = today or china_today()
        month = due_month(today, WorkCalendar.from_settings(self.config.calendar))
        if month is None:
            return None
        path = self.config.path.parent / self.config.reports.monthly_dir / f"monthly-{month}.xlsx"
        if path.exists():
            return None
        path.parent.mkdir(parents=True, exist_ok=True)
        report = await monthly_report(self.store, self.config, month, today, adapters_open=True)
        await asyncio.to_thread(write_xlsx, report, path)
        log.info("monthly report written", extra={"month": str(month), "path": str(path)})
        return path

    async def _monthly_report_job(self) -> None:
        try:
            await self.write_monthly_report()
        except (GatewayError, OSError) as exc:  # CalendarError is a GatewayError: no schedule for this month yet
            log.error("monthly report failed", extra={"error": str(exc)})

    async def _publicity_job(self) -> None:
        try:
            await self.run_publicity()
        except GatewayError as exc:
            log.error("publicity job failed", extra={"error": str(exc)})

    def _wake_all(self) -> None:
        for worker in self.workers.values():
            worker.wake()

    async def __aenter__(self) -> Gateway:
        # the worker processes start (and compile the mapping files) while the store and adapters open
        self.pool.warm([(m.path, m.version) for i in self.intakes.values() for m in i.mappings.values()]
                       + [(m.path, m.version) for w in self.workers.values() for m in w.mappings.values()])
        released = await self.store.outbox.release_claims(self.config.gateway.instance)
        if released:
            log.info("batches of an earlier run are due again", extra={"batches": released})
        for src in self.config.sources.values():
            await self._stack.enter_async_context(src.adapter)
        for tgt in self.config.targets.values():
            await self._stack.enter_async_context(tgt.adapter)
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self._stack.aclose()
        finally:
            await asyncio.to_thread(self.pool.close)

    # ------------------------------------------------------------ daemon

    async def run(self) -> None:
        """Run until ``stopping`` is set, then shut down gracefully."""
        scheduler = Scheduler()
        for name, intake in self.intakes.items():
            scheduler.every(f"poll:{name}", self.config.sources[name].poll_interval_s, self._poller(intake))
            if (every := self.config.sources[name].audit_interval_s) > 0 and isinstance(intake.cfg.adapter, Auditing):
                scheduler.every(f"audit:{name}", every, self._auditor(intake), first_in_s=min(every, 60.0))
        scheduler.every("heartbeat", self.config.daemon.heartbeat_s, self.beat)
        scheduler.every("reload", self.config.daemon.reload_check_s, self.reload_mappings)
        if self.config.lists.reconcile_interval_s > 0 and list_targets(self.config):
            scheduler.every("lists:reconcile", self.config.lists.reconcile_interval_s, self.reconcile_lists)
        if self.config.publicity.enabled:
            scheduler.every("publicity", self.config.publicity.check_s, self._publicity_job)
        if self.config.reports.monthly_dir:
            scheduler.every("reports:monthly", self.config.reports.check_s, self._monthly_report_job)
        scheduler.start()
        workers = [asyncio.create_task(w.run(self.stopping), name=f"worker {n}") for n, w in self.workers.items()]
        try:
            self.web = await start_web(self.config, self.store, self._wake_all)
        except BaseException:
            self.stopping.set()
            await self._shutdown(scheduler, workers)
            raise
        log.info("gateway started", extra={"sources": list(self.intakes), "targets": list(self.workers),
                                           "pid": os.getpid()})
        for warning in expiry_warnings(self.config):
            log.warning("certificate expiring", extra={"certificate": warning})
        await self.stopping.wait()
        log.info("stopping: finishing in-flight work", extra={"grace_s": self.config.daemon.shutdown_grace_s})
        await self._shutdown(scheduler, workers)

    async def _shutdown(self, scheduler: Scheduler, workers: list[asyncio.Task[None]]) -> None:
        grace = self.config.daemon.shutdown_grace_s
        await self.web.aclose()  # stop taking pushes first: what was accepted is committed
        await scheduler.aclose(grace)
        await asyncio.gather(*workers, return_exceptions=True)
        await asyncio.gather(*(w.drain_inflight(grace) for w in self.workers.values()))
        with contextlib.suppress(GatewayError):
            await self.beat(state="stopped")
        log.info("gateway stopped")

    def _poller(self, intake: Intake) -> Callable[[], Any]:
        record = self.polls[intake.cfg.name]

        async def poll() -> None:
            if self.stopping.is_set():
                return
            try:
                await intake.poll()
            except GatewayError as exc:
                record.failed(str(exc))
                log.error("poll failed", extra={"source": intake.cfg.name, "error": str(exc),
                                                "failed_in_a_row": record.failed_polls})
            else:
                record.succeeded()

        return poll

    def _auditor(self, intake: Intake) -> Callable[[], Any]:
        async def audit() -> None:
            if self.stopping.is_set():
                return
            try:
                await audit_source(intake)
            except GatewayError as exc:
                log.error("source audit failed", extra={"source": intake.cfg.name, "error": str(exc)})

        return audit

    async def reload_mappings(self) -> None:
        """Recompile mapping files that changed; a broken one is refused and the one in force stays."""
        tables: list[dict[str, Any]] = [i.mappings for i in self.intakes.values()]
        tables += [w.mappings for w in self.workers.values()]
        tables += self.web.mapping_tables()
        for table in tables:
            for dataset, mapping in list(table.items()):
                fresh = self._reloaded(mapping)
                if fresh is not None:
                    table[dataset] = fresh

    def _reloaded(self, mapping: Any) -> Any:
        version = mapping_version(mapping.path)
        if version in (mapping.version, self._refused.get(mapping.path)):
            return None
        try:
            fresh = load_mapping(mapping.path)
        except ConfigError as exc:
            self._refused[mapping.path] = version
            log.error("mapping refused; the previous version stays in force",
                      extra={"file": mapping.path, "problems": [str(p) for p in exc.problems]})
            return None
        if type(fresh) is not type(mapping) or fresh.dataset is not mapping.dataset:
            log.error("mapping refused: its kind or dataset changed; restart to apply", extra={"file": mapping.path})
            self._refused[mapping.path] = version
            return None
        log.info("mapping reloaded", extra={"file": mapping.path})
        return fresh

    async def reconcile_lists(self) -> None:
        """Compare list targets with the ledger and queue only the difference (gateway.domain.lists)."""
        if self.stopping.is_set():
            return
        try:
            repairs = await reconcile(self.config, self.store, adapters_open=True)
        except GatewayError as exc:
            log.error("list reconciliation failed", extra={"error": str(exc)})
            return
        if any(r.requeued for r in repairs):
            self._wake_all()

    async def beat(self, state: str = "running") -> None:
        """Record that this daemon is alive, with what only it knows (gateway.health reads it)."""
        circuits = {n: {"circuit": w.circuit.state, "in_flight": len(w.inflight), "last_error": w.last_error,
                        "blocked": w.blocked} for n, w in self.workers.items()}
        after = self.config.daemon.unhealthy_after_failed_polls
        sources = {n: {**vars(p), "unhealthy_after": after} for n, p in self.polls.items()}
        await self.store.reports.beat(self.config.gateway.instance, os.getpid(), self.started_at, {
            "state": state, "host": socket.gethostname(), "targets": circuits, "sources": sources,
            "expiries": await self.expiries()})

    async def expiries(self) -> list[dict[str, Any]]:
        """Days left per certificate and for the calendar, read again at most hourly (certificate files)."""
        at, found = self._expiries
        if time.monotonic() - at > EXPIRY_REFRESH_S or not found:
            found = await asyncio.to_thread(expiries, self.config)
            self._expiries = (time.monotonic(), found)
        return found

    # ------------------------------------------------------------ one-shot

    async def run_until_idle(self, timeout_s: float = 600.0, check_s: float = 0.05) -> bool:
        """Poll every source until drained while delivering; return when no backlog is left (False on timeout)."""
        deadline = time.monotonic() + timeout_s
        stop = asyncio.Event()
        workers = [asyncio.create_task(w.run(stop), name=f"worker {n}") for n, w in self.workers.items()]
        try:
            for intake in self.intakes.values():
                await asyncio.wait_for(intake.poll(), max(0.0, deadline - time.monotonic()))
            while time.monotonic() < deadline:
                if not any(w.inflight for w in self.workers.values()) and not await self.store.reports.has_backlog(
                        list(self.workers)):
                    return True
                await asyncio.sleep(check_s)  # a progress check, not synchronisation: workers wake on events
        except TimeoutError:
            pass
        finally:
            stop.set()
            await asyncio.gather(*workers, return_exceptions=True)
            await asyncio.gather(*(w.drain_inflight(self.config.daemon.shutdown_grace_s)
                                   for w in self.workers.values()))
        return False


async def serve(config: Config) -> int:
    """The daemon's main coroutine: take the signals over, take the store's lock (SQLite: one daemon per store),
    open the store, and run until stopped. A SIGTERM or SIGINT during the start-up lets it finish (the store
    opened, the pool started) and stops the daemon before it reads anything. SIGHUP reloads: the configuration
    file (and every mapping) is loaded and checked again; when it passes, the running gateway stops as on SIGTERM
    (in-flight work finishes) and one built from the new configuration starts on the same store; when it fails,
    the error is logged and the running one goes on."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    with store_lock(config.store_url()):
        store = await open_store(config.store_url())
        try:
            current: Config | None = config
            while current is not None and not stop.is_set():
                current = await _run_until_signal(current, store, stop)
        finally:
            await store.aclose()
    return 0


async def _run_until_signal(config: Config, store: Store, stop: asyncio.Event) -> Config | None:
    """Run one gateway until SIGTERM/SIGINT (None: ``stop`` is set) or an accepted SIGHUP reload (the new
    configuration). Between two gateways, and while one starts, the signals set ``stop``."""
    reloaded: list[Config] = []
    tasks: set[asyncio.Task[None]] = set()  # the loop keeps only weak references to tasks

    def on_hangup() -> None:
        task = asyncio.ensure_future(_reload(config, gw, reloaded))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async with Gateway(config, store) as gw:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, gw.stopping.set)
        if stop.is_set():
            gw.stopping.set()
        loop.add_signal_handler(signal.SIGHUP, on_hangup)
        try:
            if stop.is_set():
                log.info("stopped during start-up")
                return None
            await gw.run()
            if not reloaded:
                stop.set()
        finally:
            loop.remove_signal_handler(signal.SIGHUP)
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
    return reloaded[-1] if reloaded else None


async def _reload(config: Config, gw: Gateway, accepted: list[Config]) -> None:
    """Load and check the configuration again; stop the running gateway only when the new one passes."""
    log.info("reloading the configuration", extra={"file": str(config.path)})
    try:
        fresh = await asyncio.to_thread(load_config, config.path)
        problems = [str(p) for p in await asyncio.to_thread(key_problems, fresh)]
        if fresh.store_url() != config.store_url():
            problems.append("store.url: changed; restart the daemon to move to another store")
    except ConfigError as exc:
        problems = [str(p) for p in exc.problems] or [str(exc)]
    if problems:
        log.error("reload refused; the running configuration stays", extra={"file": str(config.path),
                                                                            "problems": problems})
        return
    accepted.append(fresh)
    log.info("configuration reloaded: restarting the pipeline", extra={"file": str(config.path)})
    gw.stopping.set()
