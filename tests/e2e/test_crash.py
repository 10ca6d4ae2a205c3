"""The crash test: the daemon as a real subprocess, killed with SIGKILL at several points, loses nothing.

The sandbox platform runs as its own process for the whole test (it is "the platform": never killed)
and injects faults: failed requests, and batches it commits and then answers with a dropped connection
or a 500, so the gateway cannot know they arrived. The daemon syncs 20,000 department records into it
and is killed at points chosen from what it and the sandbox report (never from elapsed time):

1. right after its first ``intake committed`` line (intake half done, nothing sent);
2. when the sandbox has accepted 25 % of the records;
3. right after a ``batch will be retried`` line for a batch the sandbox committed but whose answer was
   lost (a drop or a 500 after commit): the platform holds it, the gateway does not know;
4. at 50 %, after changing source rows while the daemon runs;
5. at 75 %;
6. the moment the sandbox logs that it applied a batch, before its answer reaches the gateway.

Between kills the department database changes like a real one (edits of delivered rows, so new
versions; revocations, objections, repairs; new rows). After the last restart the daemon runs until its
watermarks reach the end of both source tables and nothing is pending, then stops on SIGTERM with exit 0.
Then: the platform holds every valid record exactly once at the ledger's current version and state,
every application the platform made is accounted for by exactly one stored receipt, no version arrived
in two different batches, and every invalid row sits in the gateway's quarantine. Also checked: no
error lines while running, a SIGKILLed daemon leaves no process behind (its mapping worker pool), and
``credit-gateway status --json`` reads the store afterwards. The scenario runs twice (a module fixture,
about a minute each): unsealed, and with the ``cms`` profile (batches signed and encrypted, receipts signed
and verified); each property is its own test so one failure does not hide the others.

A separate test sends SIGTERM in the middle of an intake: the running poll finishes, exit 0, no error
lines, and the saved cursor covers exactly the rows in the ledger and quarantine.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import subprocess
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.certs import init_dev_pki
from gateway.clock import china_today
from gateway.testing.department_db import SampleSpec, apply_changes, create_department_db, insert_rows
from tests.support.crash_helpers import (
    CONTENT_FIELD,
    ORPHAN_GRACE_S,
    SOURCES,
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
    readonly,
    source_heads,
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
    return "gateway.sandbox: batch b-" in line and " table=" in line


def committed_then_lost(event: dict[str, Any]) -> bool:
    """A retry whose failure came after the sandbox committed: a dropped connection or a 500, not a 503."""
    return event.get("event") == "batch will be retried" and "HTTP 503" not in str(event.get("error", ""))


class CrashRun:
    """The sandbox, the department database and the daemon runs of one crash test."""

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

    # ------------------------------------------------------------ set-up and processes

    def setup(self, licences: int = LICENCES, penalties: int = PENALTIES,
              faults: dict[str, str] | None = None, profile: str = "none") -> None:
        (self.dir / "spool").mkdir()
        pki = None
        if profile != "none":  # a development CA, the gateway's and the platform's keys (cms: RSA, sm: SM2)
            pki = init_dev_pki(self.dir / "certs", ["sm2" if profile == "sm" else "rsa"])[0]
        create_department_db(self.department, SampleSpec(licences=licences, penalties=penalties))
        token_file = self.dir / "sandbox.token"
        token_file.write_text(TOKEN + "\n", encoding="utf-8")
        ready = self.dir / "sandbox.url"
        self.sandbox = start_sandbox(self.dir, token_file, self.dir / "sandbox.db", ready,
                                     FAULTS if faults is None else faults, pki, profile)
        self.processes.append(self.sandbox)
        url = wait_until(lambda: ready.read_text().strip() if ready.exists() else None, 60,
                         "the sandbox's ready file", alive=self.sandbox.check_alive)
        self.client = SandboxClient(url, TOKEN)
        write_config(self.config, store=self.store.path, department=self.department,
                     url=url + "/api/v1/upload", token_file=token_file, pki=pki, profile=profile)
        self.total = len(expected_state(self.department, china_today()).valid)

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
                 "sandbox": _brief(self.sandbox_client().stats()), "orphans": daemon.orphans}
        self.kills.append(entry)
        print(f"SIGKILL {entry['run']}: {point} {json.dumps(detail, ensure_ascii=False)}\n"
              f"    left alive by the killed daemon: {daemon.orphans or 'nothing'}\n"
              f"    store   {json.dumps(entry['store'], ensure_ascii=False)}\n"
              f"    sandbox {json.dumps(entry['sandbox'])}")

    def not_finished(self) -> None:
        """Fail fast when the daemon has delivered everything before the awaited kill point came."""
        if not self.store.exists():
            return
        snap = self.store.snapshot()
        if snap["backlog"] == 0 and not snap["batches"].get("open") and snap["cursors"] == source_heads(
                self.department):
            raise AssertionError(f"the daemon finished before the kill point was reached: {snap}")

    def kill_at_fraction(self, daemon: Process, fraction: float) -> None:
        """SIGKILL once the sandbox has accepted ``fraction`` of the records (and this run has added some)."""
        threshold = max(int(fraction * self.total), self.accepted() + 200)
        def still_going() -> None:
            daemon.check_alive()
            self.not_finished()

        wait_until(lambda: self.accepted() >= threshold, WAIT_S, f"{threshold} accepted records", 0.05,
                   alive=still_going)
        self.kill(daemon, f"sandbox accepted >= {fraction:.0%} of {self.total} records", threshold=threshold)

    def kill_after_lost_answer(self, daemon: Process) -> None:
        """SIGKILL right after a retry was scheduled for a batch the sandbox committed (answer lost)."""
        _index, event = daemon.wait_event(committed_then_lost, WAIT_S, "a retry of a committed batch",
                                          also=self.not_finished)
        self.kill(daemon, "right after 'batch will be retried' for a batch the platform committed",
                  batch=event["batch"], error=event.get("error"), attempt=event.get("attempt"))
        self.follow(event["batch"])

    def kill_after_platform_applied(self, daemon: Process) -> None:
        """SIGKILL the moment the sandbox logs that it applied a batch: its answer is still on the way."""
        assert self.sandbox is not None
        _index, line = self.sandbox.wait_event(sandbox_applied, WAIT_S, "the sandbox applying a batch",
                                               start=len(self.sandbox.events), also=daemon.check_alive)
        daemon.kill()  # first, before anything else; kill() below only records the state
        batch_id = str(line["event"]).split(" batch ", 1)[1].split()[0]
        self.kill(daemon, "the moment the sandbox logged it applied a batch", batch=batch_id)
        self.follow(batch_id)

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

    # ------------------------------------------------------------ the scenario

    def scenario(self) -> None:
        """Six SIGKILLs with source changes between them, then a clean final run.

        The daemon delivers penalties before licences, so licences are changed after they are delivered
        later in the scenario (from the 75 % kill on) the way penalties are early on.
        """
        edited: dict[str, list[int]] = {}

        daemon = self.start()
        daemon.wait_event(event_is("intake committed"), WAIT_S, "the first intake commit")
        self.kill(daemon, "right after the first 'intake committed' line")
        for table in TABLES:
            self.insert(table, 40)

        self.kill_at_fraction(self.start(), 0.25)
        delivered = self.store.delivered_rows()
        edited["xzcf"] = self.change("xzcf", self.pick(delivered["xzcf"], 300), "edit")
        self.change("xzcf", self.pick(delivered["xzcf"], 60, edited["xzcf"]), "revoke")
        self.insert("xzxk", 100)

        self.kill_after_lost_answer(self.start())
        delivered = self.store.delivered_rows()
        valid = expected_state(self.department, china_today())
        self.change("xzcf", self.pick(edited["xzcf"], 100), "edit")  # a later version of delivered edits
        for table in TABLES:  # rows not delivered yet: their pending version is superseded
            self.change(table, self.pick(valid.valid_ids(table), 150, delivered[table]), "edit")

        daemon = self.start()
        daemon.wait_event(event_is("intake committed"), WAIT_S, "the intake of the changed rows")
        self.change("xzcf", self.pick(self.store.delivered_rows()["xzcf"], 100), "edit")  # while it runs
        self.kill_at_fraction(daemon, 0.50)

        self.kill_at_fraction(self.start(), 0.75)
        delivered = self.store.delivered_rows()
        edited["xzxk"] = self.change("xzxk", self.pick(delivered["xzxk"], 300), "edit")
        self.change("xzxk", self.pick(delivered["xzxk"], 20, edited["xzxk"]), "object")
        self.change("xzxk", self.pick(delivered["xzxk"], 20, edited["xzxk"]), "repair")
        self.change("xzcf", self.pick(delivered["xzcf"], 30), "revoke")
        for table in TABLES:
            self.insert(table, 30)

        self.kill_after_platform_applied(self.start())
        self.change("xzxk", self.pick(edited["xzxk"], 100), "edit")
        self.change("xzxk", self.pick(edited["xzxk"], 40), "revoke")
        self.change("xzcf", self.pick(edited["xzcf"], 20), "repair")

        self.finish(self.start())

    def finish(self, daemon: Process) -> None:
        """Run until the watermarks reach the source's end and nothing is pending; then SIGTERM, exit 0."""
        def caught_up() -> dict[str, Any] | None:
            heads = source_heads(self.department)
            snap = self.store.snapshot()
            done = snap["cursors"] == heads and snap["backlog"] == 0 and not snap["batches"].get("open")
            return snap if done else None

        snap = wait_until(caught_up, 2 * WAIT_S, "the final run to deliver everything", 0.25,
                          alive=daemon.check_alive)
        print(f"final run caught up: {json.dumps(snap, ensure_ascii=False)}")
        self.final_exit = daemon.terminate(60)

    def status_json(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(python_cmd("-m", "gateway", "-c", str(self.config), "status", "--json"),
                              cwd=self.dir, env=child_env(), capture_output=True, text=True, timeout=120,
                              check=False)

    def collect(self) -> Outcome:
        """Everything the checks need, read once the final run has stopped (the sandbox is stopped last)."""
        client = self.sandbox_client()
        expected = expected_state(self.department, china_today())
        stats = client.stats()
        held = {(dataset, key): row for dataset, code in TABLE_CODE.items()
                for key, row in client.records(code).items()}
        status = self.status_json()
        assert self.sandbox is not None
        sandbox_exit = self.sandbox.terminate(60)
        return Outcome(self, expected, held, stats, status, sandbox_exit,
                       {batch_id: self.store.batch(batch_id) for batch_id in self.followed})


@dataclass
class Outcome:
    run: CrashRun
    expected: Expected
    held: dict[tuple[str, str], dict[str, Any]]
    stats: dict[str, Any]
    status: subprocess.CompletedProcess[str]
    sandbox_exit: int
    followed: dict[str, dict[str, Any] | None]  # batch id -> its gateway state at the end


def _brief(stats: dict[str, Any]) -> dict[str, Any]:
    keys = ("requests", "batches", "accepted", "duplicate", "stale", "replayed", "conflicts", "held")
    return {k: stats[k] for k in keys} | {"faults": stats["faults_injected"]}


# ---------------------------------------------------------------- checks

def check_gateway(run: CrashRun, expected: Expected) -> list[str]:
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


def check_platform(run: CrashRun, expected: Expected, held: dict[tuple[str, str], dict[str, Any]]) -> list[str]:
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


# ---------------------------------------------------------------- the tests

@pytest.fixture(scope="module", params=["none", "cms"])
def crashed(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outcome]:
    """The whole scenario, run once per envelope profile (unsealed; CMS signed and encrypted batches with signed
    receipts) for the checks below; every process is ended even if it fails."""
    run = CrashRun(tmp_path_factory.mktemp(f"crash-{request.param}"))
    try:
        run.setup(profile=request.param)
        run.scenario()
        outcome = run.collect()
        print(f"valid records {len(outcome.expected.valid)}, invalid rows {len(outcome.expected.invalid)}, "
              f"held {len(outcome.held)}; sandbox {json.dumps(_brief(outcome.stats))}")
        yield outcome
    finally:
        run.stop_all()


@pytest.mark.slow
@pytest.mark.timeout(600)
class TestSigkillDuringSync:
    """20,000 records through a faulty platform, six SIGKILLs, source changes in between, a clean stop."""

    def test_the_daemon_was_killed_at_every_point_and_stopped_cleanly_at_the_end(self, crashed: Outcome) -> None:
        """At least four SIGKILLs happened, two of them with a batch applied but unanswered; SIGTERM exits 0."""
        run = crashed.run
        assert len(run.kills) >= 4 and len(run.followed) >= 2, run.kills
        final = run.daemons[-1]
        assert run.final_exit == 0, f"the daemon exited {run.final_exit} on SIGTERM; log tail:\n{final.tail()}"
        assert final.matching(event_is("gateway stopped")), "no 'gateway stopped' line after SIGTERM"
        assert crashed.sandbox_exit == 0
        assert crashed.stats["faults_injected"]["drop"] and crashed.stats["faults_injected"]["fail_after_commit"]

    def test_the_platform_holds_every_valid_record_once_at_its_latest_version(self, crashed: Outcome) -> None:
        """Held keys = valid keys; version = ledger version; state and content = the source's latest."""
        assert not crashed.expected.collisions, crashed.expected.collisions
        problems = check_platform(crashed.run, crashed.expected, crashed.held)
        assert not problems, report(problems, "what the platform holds")

    def test_no_record_version_reaches_the_platform_in_two_batches(self, crashed: Outcome) -> None:
        """Retries reuse their batch and idempotency key: no duplicate, stale or conflicting arrival."""
        problems = check_arrivals(crashed.run.dir / "sandbox.db", crashed.stats)
        assert not problems, report(problems, "arrivals at the platform")

    def test_the_gateway_store_is_drained_and_matches_the_source(self, crashed: Outcome) -> None:
        """Nothing pending, open or dead; the ledger is the source's latest state; invalid rows quarantined."""
        problems = check_gateway(crashed.run, crashed.expected)
        assert not problems, report(problems, "the gateway's store")

    def test_batches_applied_before_a_kill_keep_the_platforms_first_receipt(self, crashed: Outcome) -> None:
        """A batch the platform applied before a kill is resent under its key and gets the stored answer."""
        for batch_id, at_kill in crashed.run.followed.items():
            now = crashed.followed[batch_id]
            assert now is not None and now["state"] == "done", f"{batch_id}: {now}"
            assert now["receipt_id"] == at_kill["receipt_id"], (
                f"batch {batch_id}: the gateway kept receipt {now['receipt_id']}, the platform issued "
                f"{at_kill['receipt_id']} when it applied it (gateway at the kill: {at_kill['gateway_at_kill']})")

    def test_the_daemon_logs_no_errors_while_running(self, crashed: Outcome) -> None:
        """No error lines (poll failed, delivery step failed, untranslated adapter exceptions) before a stop."""
        errors = [e for d in crashed.run.daemons for e in running_events(d) if e.get("level") in ("error", "critical")]
        assert not errors, f"{len(errors)} error line(s) in the daemon logs, e.g. {errors[:3]}"

    def test_a_killed_daemon_leaves_no_process_behind(self, crashed: Outcome) -> None:
        """Children of a SIGKILLed daemon (worker pools) exit by themselves within a few seconds."""
        orphans = {d.name: d.orphans for d in crashed.run.daemons if d.orphans}
        assert not orphans, (f"{len(orphans)} of {len(crashed.run.kills)} SIGKILLed daemons left processes alive "
                             f"for more than {ORPHAN_GRACE_S:g}s (the test killed them by pid): {orphans}")

    def test_status_json_shows_the_drained_store(self, crashed: Outcome) -> None:
        """``credit-gateway status --json`` on the store after the crashes: no backlog, no dead letters."""
        result = crashed.status
        assert result.returncode == 0, f"`credit-gateway status --json` failed:\n{result.stderr[-1500:]}"
        target = {t["target"]: t for t in json.loads(result.stdout)["targets"]}["sandbox"]
        assert (target["backlog"], target["dead"], target["rejected"]) == (0, 0, 0), target


def running_events(daemon: Process) -> list[dict[str, Any]]:
    """The daemon's log lines up to the start of a graceful stop (a stop is checked by its own test)."""
    events = daemon.matching(lambda _e: True)
    for i, event in enumerate(events):
        if event.get("event") == "stopping: finishing in-flight work":
            return events[:i]
    return events


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_sigterm_during_intake_lets_the_running_poll_finish(tmp_path: Path) -> None:
    """SIGTERM while a poll is mid-way through 20,000 rows: exit 0, no error lines, cursor and rows agree."""
    run = CrashRun(tmp_path)
    try:
        run.setup(faults={})
        daemon = run.start()
        daemon.wait_event(event_is("intake committed"), WAIT_S, "the first intake commit")
        code = daemon.terminate(60)
        stopping = daemon.matching(event_is("stopping: finishing in-flight work"))
        events = daemon.matching(lambda _e: True)
        after = events[events.index(stopping[0]):] if stopping else []
        errors = [e for e in after if e.get("level") in ("error", "critical")]
        assert code == 0, daemon.tail()
        assert not errors, f"graceful stop logged {len(errors)} error(s): {errors[:2]}"
        assert daemon.matching(event_is("gateway stopped"))
        problems = check_intake_consistency(run)
        assert not problems, report(problems, "the intake after a graceful stop")
    finally:
        run.stop_all()


def check_intake_consistency(run: CrashRun) -> list[str]:
    """For each source, the rows at or before its saved cursor are exactly the rows in the ledger or quarantine."""
    problems: list[str] = []
    snap = run.store.snapshot()
    expected = expected_state(run.department, china_today())
    ledger = {(v["source"], v["source_key"]) for v in run.store.ledger().values()}
    taken = ledger | run.store.mapping_quarantine()
    for source, (table, *_rest) in SOURCES.items():
        cursor = snap["cursors"].get(source)
        with readonly(run.department) as conn:
            rows = {str(r[0]) for r in conn.execute(
                f"SELECT id FROM {table} WHERE gxsj < ? OR (gxsj = ? AND id <= ?)",
                (cursor[0], cursor[0], cursor[1]))} if cursor else set()
        have = {key for src, key in taken if src == source}
        if rows != have:
            problems.append(f"{source}: cursor {cursor} covers {len(rows)} rows, the store took {len(have)} "
                            f"(e.g. missing {sorted(rows - have)[:5]}, beyond {sorted(have - rows)[:5]})")
    valid_rows = {(v["source"], v["source_key"]) for v in expected.valid.values()}
    problems += [f"ledger holds row {row}, which is not valid" for row in sorted(ledger - valid_rows)[:5]]
    return problems


def test_expected_state_follows_the_real_mapping(tmp_path: Path) -> None:
    """The crash test's oracle maps rows with the real mappings: the sample's broken rows are the rejected ones."""
    today = dt.date(2026, 3, 1)
    sample = create_department_db(tmp_path / "d.db", SampleSpec(licences=300, penalties=300, today=today))
    expected = expected_state(tmp_path / "d.db", today)
    names = {table: source for source, (table, *_r) in SOURCES.items()}
    broken = {(names[table], str(i)) for table, rows in sample.invalid.items() for i in rows}
    assert expected.invalid == broken
    assert len(expected.valid) == 600 - len(broken)
    assert not expected.collisions
