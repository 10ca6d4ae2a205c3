"""Two real processes, the daemon and the sandbox platform, and the checks of what they hold afterwards.

Shared by the end-to-end suites that kill and freeze them (tests/e2e/test_crash.py, tests/e2e/test_faults.py):
:class:`DaemonRun` sets up a department database, the sandbox (with faults) and the daemon's config, starts and
SIGKILLs daemon runs, changes the source, and collects an :class:`Outcome`; the ``check_*`` functions say what
is wrong with it. Nothing here waits on a fixed sleep (tests/support/crash_helpers.py).
"""

from __future__ import annotations

import json
import random
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.certs import init_dev_pki
from gateway.clock import china_today
from gateway.testing.department_db import SampleSpec, apply_changes, create_department_db, insert_rows
from tests.support.crash_helpers import (
    CONTENT_FIELD,
    STATUS_CODE,
    STATUS_FIELD,
    TABLE_CODE,
    Expected,
    Process,
    SandboxClient,
    StoreView,
    child_env,
    expected_state,
    python_cmd,
    read_sandbox_db,
    start_daemon,
    start_sandbox,
    wait_until,
    write_config,
)

TOKEN = "crash-test-token-0123456789abcdef"
FAULTS = {"--error-rate": "0.1", "--drop-rate": "0.1", "--fail-after-commit-rate": "0.05", "--delay": "0.005",
          "--seed": "11"}
LICENCES = PENALTIES = 10_000
WAIT_S = 240.0  # any single wait; generous for a loaded 2-core machine
TABLES = ("xzcf", "xzxk")


def event_is(name: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e.get("event") == name


def sandbox_applied(event: dict[str, Any]) -> bool:
    """The sandbox's log line for an upload it applied (not a replay): ``batch <id> table=…``."""
    line = str(event.get("event", ""))
    return " gateway.sandbox: batch b-" in line and " table=" in line  # logger gateway.sandbox (server.py)


def committed_then_lost(event: dict[str, Any]) -> bool:
    """A retry whose failure came after the sandbox committed: a dropped connection or a 500, not a 503."""
    return event.get("event") == "batch will be retried" and "HTTP 503" not in str(event.get("error", ""))



class DaemonRun:
    """The sandbox, the department database and the daemon runs of one end-to-end run."""

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        self.department = workdir / "department.db"
        self.store = StoreView(workdir / "spool" / "gateway.db")
        self.config = workdir / "credit-gateway.toml"
        self.processes: list[Process] = []
        self.daemons: list[Process] = []
        self.kills: list[dict[str, Any]] = []
        self.rng = random.Random(20260301)
        self.seed = 500
        self.sandbox: Process | None = None
        self.client: SandboxClient | None = None
        self.total = 0
        self.followed: dict[str, dict[str, Any]] = {}  # batch id -> what was known of it at a kill
        self.final_exit: int | None = None
        self._sandbox_args: tuple[Path, dict[str, str], Path | None, str] = (Path(), {}, None, "none")

    # ------------------------------------------------------------ set-up and processes

    def setup(self, licences: int = LICENCES, penalties: int = PENALTIES,
              faults: dict[str, str] | None = None, profile: str = "none", source_extra: str = "") -> None:
        (self.dir / "spool").mkdir()
        pki = None
        if profile != "none":  # a development CA, the gateway's and the platform's keys (cms: RSA, sm: SM2)
            pki = init_dev_pki(self.dir / "certs", ["sm2" if profile == "sm" else "rsa"])[0]
        create_department_db(self.department, SampleSpec(licences=licences, penalties=penalties))
        token_file = self.dir / "sandbox.token"
        token_file.write_text(TOKEN + "\n", encoding="utf-8")
        self._sandbox_args = (token_file, FAULTS if faults is None else faults, pki, profile)
        url = self.start_sandbox()
        self.client = SandboxClient(url, TOKEN)
        write_config(self.config, store=self.store.path, department=self.department,
                     url=url + "/api/v1/upload", token_file=token_file, pki=pki, profile=profile,
                     source_extra=source_extra)
        self.total = len(expected_state(self.department, china_today()).valid)

    def start_sandbox(self, port: int = 0) -> str:
        """Start the sandbox (on ``port``: a restart keeps its predecessor's) and its database; its URL."""
        token_file, faults, pki, profile = self._sandbox_args
        ready = self.dir / "sandbox.url"
        ready.unlink(missing_ok=True)
        self.sandbox = start_sandbox(self.dir, token_file, self.dir / "sandbox.db", ready, faults, pki, profile,
                                     port)
        self.processes.append(self.sandbox)
        sandbox = self.sandbox
        return wait_until(lambda: ready.read_text().strip() if ready.exists() else None, 60,
                          "the sandbox's ready file", alive=sandbox.check_alive)

    def start(self) -> Process:
        daemon = start_daemon(self.dir, self.config, len(self.daemons) + 1)
        self.processes.append(daemon)
        self.daemons.append(daemon)
        return daemon

    def stop_all(self) -> None:
        """Kill whatever is still running (the test failed half-way), each by its own pid."""
        for proc in self.processes:
            proc.kill()  # also ends, by pid, any children it left behind

    def sandbox_client(self) -> SandboxClient:
        assert self.client is not None
        return self.client

    def accepted(self) -> int:
        return int(self.sandbox_client().stats()["accepted"])

    # ------------------------------------------------------------ kill points

    def kill(self, daemon: Process, point: str, **detail: Any) -> None:
        daemon.kill()
        assert daemon.proc.returncode == -9, f"{daemon.name} was not the one to end it: {daemon.proc.returncode}"
        entry = {"run": len(self.daemons), "point": point, **detail, "store": self.store.snapshot(),
                 "sandbox": brief(self.sandbox_client().stats()), "orphans": daemon.orphans}
        self.kills.append(entry)
        print(f"SIGKILL {entry['run']}: {point} {json.dumps(detail, ensure_ascii=False)}\n"
              f"    left alive by the killed daemon: {daemon.orphans or 'nothing'}\n"
              f"    store   {json.dumps(entry['store'], ensure_ascii=False)}\n"
              f"    sandbox {json.dumps(entry['sandbox'])}")

    def follow(self, batch_id: str) -> None:
        """Note what the platform and the gateway know of a batch at a kill; checked again at the end."""
        receipt = self.sandbox_client().receipt(batch_id)
        state = self.store.batch(batch_id)
        print(f"    batch {batch_id}: platform receipt {receipt and receipt['receiptId']}; gateway {state}")
        assert receipt is not None, f"the sandbox has no receipt for {batch_id}, yet it applied it"
        assert state is not None, f"the gateway store has no batch {batch_id}, yet it was sent"
        self.followed[batch_id] = {"receipt_id": receipt["receiptId"], "gateway_at_kill": state}

    # ------------------------------------------------------------ source changes

    def pick(self, ids: Iterable[int], count: int, avoid: Iterable[int] = ()) -> list[int]:
        pool = sorted(set(ids) - set(avoid))
        return sorted(self.rng.sample(pool, min(count, len(pool))))

    def change(self, table: str, ids: list[int], change: str) -> list[int]:
        if ids:
            apply_changes(self.department, table=table, ids=ids, change=change)
        print(f"    source: {change} {len(ids)} {table} rows")
        return ids

    def insert(self, table: str, count: int) -> list[int]:
        self.seed += 1
        ids = insert_rows(self.department, table=table, count=count, seed=self.seed)
        print(f"    source: inserted {count} {table} rows")
        return ids


    def status_json(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(python_cmd("-m", "gateway", "-c", str(self.config), "status", "--json"),
                              cwd=self.dir, env=child_env(), capture_output=True, text=True, timeout=120,
                              check=False)

    def collect(self) -> Outcome:
        """Everything the checks need, read once the final run has stopped (the sandbox is stopped last)."""
        return collect(self)


@dataclass
class Outcome:
    run: Any  # a DaemonRun, or the two-instance test's run
    expected: Expected
    held: dict[tuple[str, str], dict[str, Any]]
    stats: dict[str, Any]
    status: subprocess.CompletedProcess[str]
    sandbox_exit: int
    followed: dict[str, dict[str, Any] | None]  # batch id -> its gateway state at the end


def collect(run: Any) -> Outcome:
    """What a run's checks need, read once its daemons stopped (the sandbox is stopped last): the expected state,
    what the sandbox holds and counted, ``status --json`` and the followed batches (a DaemonRun or TwoInstances)."""
    client = run.sandbox_client()
    expected = expected_state(run.department, china_today())
    stats = client.stats()
    held = {(dataset, key): row for dataset, code in TABLE_CODE.items() for key, row in client.records(code).items()}
    status = run.status_json()
    assert run.sandbox is not None
    sandbox_exit = run.sandbox.terminate(60)
    return Outcome(run, expected, held, stats, status, sandbox_exit,
                   {batch_id: run.store.batch(batch_id) for batch_id in run.followed})


def brief(stats: dict[str, Any]) -> dict[str, Any]:
    keys = ("requests", "batches", "accepted", "duplicate", "stale", "replayed", "conflicts", "held")
    return {k: stats[k] for k in keys} | {"faults": stats["faults_injected"]}


# ---------------------------------------------------------------- checks

def check_gateway(run: DaemonRun, expected: Expected) -> list[str]:
    """The gateway's own store: nothing pending or dead, the ledger equals the source, invalid rows quarantined."""
    problems: list[str] = []
    snap = run.store.snapshot()
    for state in ("pending", "leased", "dead", "rejected"):
        if snap["outbox"].get(state):
            problems.append(f"gateway outbox has {snap['outbox'][state]} {state} rows")
    for state in ("open", "dead"):
        if snap["batches"].get(state):
            problems.append(f"gateway has {snap['batches'][state]} {state} batches")
    problems += [f"platform refused {ds} {key}: {reasons}" for ds, key, reasons in run.store.target_quarantine()]
    ledger = run.store.ledger()
    problems += [f"valid row missing from the ledger: {k}" for k in sorted(expected.valid.keys() - ledger.keys())]
    problems += [f"ledger holds a key no valid row has: {k}" for k in sorted(ledger.keys() - expected.valid.keys())]
    for key in sorted(expected.valid.keys() & ledger.keys()):
        want, have = expected.valid[key], ledger[key]
        if (want["content_hash"], want["operation"]) != (have["content_hash"], have["operation"]):
            problems.append(f"ledger {key} v{have['version']} is not the source's latest state "
                            f"({have['operation']} vs {want['operation']}, row {want['source_key']})")
    quarantined = run.store.mapping_quarantine()
    problems += [f"invalid row not quarantined: {r}" for r in sorted(expected.invalid - quarantined)]
    problems += [f"valid row left in quarantine: {r}" for r in sorted(quarantined - expected.invalid)]
    return problems


def check_platform(run: DaemonRun, expected: Expected, held: dict[tuple[str, str], dict[str, Any]]) -> list[str]:
    """The platform holds every valid record once, at the ledger's version, with the right state and content."""
    problems: list[str] = []
    ledger = run.store.ledger()
    accepts = run.store.receipt_accepts()
    outbox = run.store.outbox_by_key()
    problems += [f"valid record missing at the platform: {k} (row {expected.valid[k]['source_key']}, "
                 f"outbox {outbox.get(k)})" for k in sorted(expected.valid.keys() - held.keys())]
    problems += [f"platform holds a record no valid row has: {k}" for k in sorted(held.keys() - expected.valid.keys())]
    for key in sorted(expected.valid.keys() & held.keys()):
        want, row, version = expected.valid[key], held[key], ledger.get(key, {}).get("version")
        code = TABLE_CODE[key[0]]
        if row["version"] != version:
            problems.append(f"{key}: platform holds v{row['version']}, the ledger is at v{version}")
        if row["operation"] != want["operation"] or row["data"].get(STATUS_FIELD[code]) != STATUS_CODE[
                want["operation"]]:
            problems.append(f"{key}: platform state {row['operation']}/{row['data'].get(STATUS_FIELD[code])}, "
                            f"source says {want['operation']}")
        if row["data"].get(CONTENT_FIELD[code]) != want["content"]:
            problems.append(f"{key}: platform content is not the latest edit (row {want['source_key']})")
        if not 1 <= row["applied_count"] <= row["version"]:
            problems.append(f"{key}: applied {row['applied_count']} times, held version {row['version']}")
        if row["applied_count"] != accepts[(code, key[1])]:
            problems.append(f"{key}: the platform applied it {row['applied_count']} times, the gateway's "
                            f"receipts acknowledge {accepts[(code, key[1])]} applications")
    return problems


def check_arrivals(sandbox_db: Path, stats: dict[str, Any]) -> list[str]:
    """Each (key, version) reached the platform in one batch only (retries reuse the batch and its key)."""
    problems: list[str] = []
    held, received = read_sandbox_db(sandbox_db)
    for (table, key, version), count in sorted(received.items()):
        if count != 1:
            problems.append(f"{table} {key} v{version} arrived in {count} different batches")
        if (table, key) in held and version > held[(table, key)][0]:
            problems.append(f"{table} {key} v{version} arrived but the platform holds v{held[(table, key)][0]}")
    for name in ("duplicate", "stale", "conflicts", "refused", "rejected"):
        if stats[name]:
            problems.append(f"sandbox counted {stats[name]} {name}")
    return problems


def report(problems: list[str], what: str) -> str:
    shown = "\n  ".join(problems[:40])
    more = f"\n  … and {len(problems) - 40} more" if len(problems) > 40 else ""
    return f"{len(problems)} problem(s) with {what}:\n  {shown}{more}"




def running_events(daemon: Process) -> list[dict[str, Any]]:
    """The daemon's log lines up to the start of a graceful stop (a stop is checked by its own test)."""
    events = daemon.matching(lambda _e: True)
    for i, event in enumerate(events):
        if event.get("event") == "stopping: finishing in-flight work":
            return events[:i]
    return events
