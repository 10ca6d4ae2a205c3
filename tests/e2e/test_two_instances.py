"""Two gateway instances on one PostgreSQL store, end to end: real daemons, each killed once, nothing lost or twice.

The design's provincial hub runs several instances on one PostgreSQL store. Here two ``credit-gateway run``
processes, ``hub-a`` and ``hub-b`` (the same configuration but ``[gateway] instance``), start together on a
new store, both poll the same department database (a SQLite file) and both deliver to one sandbox platform
process that fails on purpose (the crash test's faults: errors, dropped connections, batches committed and
then answered with a drop or a 500). While both run, the department edits, revokes, objects to and repairs
delivered records and adds new ones. Kill points come from what the daemons, the sandbox and the store report,
never from elapsed time:

1. past a third of the records, whichever instance first logs a retry of a batch the platform committed (its
   answer lost) is SIGKILLed; the other delivers alone, takes that batch when its retry is due and gets the
   platform's first receipt for it; then the killed one starts again;
2. past 70 %, the other instance is SIGKILLed the moment the store shows it sending a batch (claimed, not
   answered); started again, it releases the claims of its killed run at once (tried up to three times, in
   case the send ended just before the signal landed).

When the watermarks reach the end of both source tables and nothing is pending, both get SIGTERM and must
exit 0. Then the crash test's checks hold for the pair: the platform holds every valid record once at the
ledger's current version and state, each application is acknowledged by one stored receipt, no version
arrived in two batches, the ledger is the source's latest state, every invalid row was quarantined, and once;
besides: both instances delivered batches, no source watermark was ever seen moving back, both heartbeats are
in ``status --json``, no error lines in any log. Each property is its own test over one run (a module fixture,
about 30 s).

Without the intake's watermark check (store.database ``_check_watermark``) this scenario fails three ways: invalid
rows quarantined by both instances, watermarks moving back by months, and ``poll failed`` errors when both
instances insert the same new ledger key. The exact interleaving that loses an edit is in
tests/pipeline/test_shared_source.py; the focused test at the end covers instances starting together on a new store.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import signal
import subprocess
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.clock import china_today
from gateway.store import open_store
from gateway.testing.department_db import SampleSpec, apply_changes, create_department_db, insert_rows
from tests.support.crash_helpers import (
    ORPHAN_GRACE_S,
    Process,
    SandboxClient,
    child_env,
    expected_state,
    python_cmd,
    source_heads,
    start_sandbox,
    wait_until,
    write_config,
)
from tests.support.instance_helpers import PgStoreView
from tests.support.pg_server import create_database
from tests.support.processes import (
    FAULTS,
    Outcome,
    brief,
    check_arrivals,
    check_gateway,
    check_platform,
    collect,
    committed_then_lost,
    event_is,
    report,
)

TOKEN = "two-instances-token-0123456789abcdef"
INSTANCES = ("hub-a", "hub-b")
LICENCES = PENALTIES = 2500
BATCH_SIZE = 100  # smaller than the crash test's: more batches, so the two instances interleave more
WAIT_S = 120.0  # any single wait; generous for a loaded 2-core machine
# The crash test's faults; each upload held a little longer, so a kill "while sending" lands before the answer.
SANDBOX_FAULTS = {**FAULTS, "--delay": "0.05"}
_databases = itertools.count()


def instance_config(path: Path, instance: str, store_url: str, **common: Any) -> Path:
    """The crash test's daemon config with another instance name, a PostgreSQL store and smaller batches."""
    placeholder = Path("/store-url")
    write_config(path, store=placeholder, **common)
    text = path.read_text("utf-8")
    for old, new in ((f'url = "sqlite:///{placeholder.as_posix()}"', f'url = "{store_url}"'),
                     ('instance = "crash-test"', f'instance = "{instance}"'),
                     ("batch_size = 200", f"batch_size = {BATCH_SIZE}")):
        assert text.count(old) == 1, f"the crash test's config changed: {old!r} is not in it once"
        text = text.replace(old, new)
    path.write_text(text, encoding="utf-8")
    return path


def delivered_a_batch(event: dict[str, Any]) -> bool:
    return event.get("event") == "batch delivered"


class TwoInstances:
    """The sandbox, the department database, the PostgreSQL store and the runs of hub-a and hub-b."""

    def __init__(self, workdir: Path, store_url: str) -> None:
        self.dir = workdir
        self.department = workdir / "department.db"
        self.store = PgStoreView(store_url)
        self.store_url = store_url
        self.configs: dict[str, Path] = {}
        self.processes: list[Process] = []
        self.runs: list[tuple[str, Process]] = []  # (instance, process) in start order
        self.live: dict[str, Process] = {}
        self.kills: list[dict[str, Any]] = []
        self.followed: dict[str, dict[str, Any]] = {}  # batch id -> what was known of it at the kill
        self.alone: dict[str, Any] = {}  # what the survivor of the first kill did alone
        self.exits: dict[str, int] = {}
        self.rng = random.Random(20260302)
        self.seed = 700
        self.sandbox: Process | None = None
        self.client: SandboxClient | None = None
        self.total = 0

    # ------------------------------------------------------------ set-up and processes

    def setup(self) -> None:
        create_department_db(self.department, SampleSpec(licences=LICENCES, penalties=PENALTIES))
        token_file = self.dir / "sandbox.token"
        token_file.write_text(TOKEN + "\n", encoding="utf-8")
        ready = self.dir / "sandbox.url"
        self.sandbox = start_sandbox(self.dir, token_file, self.dir / "sandbox.db", ready, SANDBOX_FAULTS)
        self.processes.append(self.sandbox)
        url = wait_until(lambda: ready.read_text().strip() if ready.exists() else None, 60,
                         "the sandbox's ready file", alive=self.sandbox.check_alive)
        self.client = SandboxClient(url, TOKEN)
        for instance in INSTANCES:
            self.configs[instance] = instance_config(
                self.dir / f"{instance}.toml", instance, self.store_url, department=self.department,
                url=url + "/api/v1/upload", token_file=token_file)
        self.total = len(expected_state(self.department, china_today()).valid)

    def start(self, instance: str) -> Process:
        run = sum(1 for name, _ in self.runs if name == instance) + 1
        daemon = Process(f"{instance} run {run}", python_cmd("-m", "gateway", "-c", str(self.configs[instance]), "run"),
                         self.dir, self.dir / f"{instance}-{run}.log")
        self.processes.append(daemon)
        self.runs.append((instance, daemon))
        self.live[instance] = daemon
        return daemon

    def stop_all(self) -> None:
        """Kill whatever is still running (the test failed half-way), each by its own pid."""
        for proc in self.processes:
            proc.kill()

    def sandbox_client(self) -> SandboxClient:
        assert self.client is not None
        return self.client

    def accepted(self) -> int:
        return int(self.sandbox_client().stats()["accepted"])

    def alive(self) -> None:
        for daemon in self.live.values():
            daemon.check_alive()

    def not_finished(self) -> None:
        """Fail fast when everything was delivered before the awaited point came."""
        snap = self.store.snapshot()
        if snap["backlog"] == 0 and not snap["batches"].get("open") and snap["cursors"] == source_heads(
                self.department):
            raise AssertionError(f"the instances finished before the awaited point was reached: {snap}")

    def running_on(self) -> None:
        self.alive()
        self.not_finished()

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
        """Both start together; changes while both run; each instance killed once mid-delivery and restarted."""
        for instance in INSTANCES:  # at once, on a new store: both create its schema
            self.start(instance)
        for daemon in self.live.values():
            daemon.wait_event(event_is("gateway started"), WAIT_S, "the daemon to start")

        def both_delivering() -> bool:
            return self.accepted() >= 0.25 * self.total and all(
                d.matching(delivered_a_batch) for d in self.live.values())

        wait_until(both_delivering, WAIT_S, "a quarter of the records, with batches from both", 0.1,
                   alive=self.running_on)
        delivered = self.store.delivered_rows()
        edited = {"xzcf": self.change("xzcf", self.pick(delivered["xzcf"], 200), "edit")}
        self.change("xzcf", self.pick(delivered["xzcf"], 40, edited["xzcf"]), "revoke")
        for table in ("xzcf", "xzxk"):
            self.insert(table, 40)

        first, batch_id = self.kill_after_lost_answer(0.35)
        survivor = next(name for name in INSTANCES if name != first)
        self.carry_on_alone(survivor, batch_id, 300)
        delivered = self.store.delivered_rows()
        edited["xzxk"] = self.change("xzxk", self.pick(delivered["xzxk"], 200), "edit")
        self.change("xzxk", self.pick(delivered["xzxk"], 20, edited["xzxk"]), "object")
        self.change("xzxk", self.pick(delivered["xzxk"], 20, edited["xzxk"]), "repair")
        self.start(first).wait_event(event_is("gateway started"), WAIT_S, f"{first} to start again")

        # Uploads that take a second each, so a send is in flight when the store is looked at (a fast machine
        # would otherwise finish first), then work that cannot be done before the kill point: new rows, ten
        # batches while at most four are in flight (two instances, two each), so sends still go on for seconds
        # after the kill point. The kill point counts from before the rows: none is delivered before it is set.
        self.sandbox_client().set_faults(delay_s=1.0)
        for attempt in range(3):  # a send may end (a quick failure) before the SIGKILL lands: then again, later
            before = self.accepted()
            for table in ("xzcf", "xzxk"):
                self.insert(table, 5 * BATCH_SIZE)
            left_open = self.kill_while_sending(survivor, 0.70 + 0.05 * attempt, before)
            self.start(survivor).wait_event(event_is("gateway started"), WAIT_S, f"{survivor} to start again")
            if left_open:
                break
        self.sandbox_client().set_faults(delay_s=float(SANDBOX_FAULTS["--delay"]))
        self.change("xzcf", self.pick(edited["xzcf"], 80), "edit")  # later versions of delivered edits
        self.change("xzxk", self.pick(edited["xzxk"], 40), "revoke")
        for table in ("xzcf", "xzxk"):
            self.insert(table, 30)
        self.finish()

    def wait_accepted(self, fraction: float, before: int | None = None) -> int:
        """Wait for ``fraction`` of the records, and 100 more than ``before`` (default: those accepted now)."""
        threshold = max(int(fraction * self.total), (self.accepted() if before is None else before) + 100)
        wait_until(lambda: self.accepted() >= threshold, WAIT_S, f"{threshold} accepted records", 0.05,
                   alive=self.running_on)
        return threshold

    def kill_after_lost_answer(self, fraction: float) -> tuple[str, str]:
        """Once ``fraction`` of the records are in, SIGKILL whichever instance first logs that it will retry a batch
        the platform committed (the answer was a drop or a 500): the platform holds it, the store has it open."""
        threshold = self.wait_accepted(fraction)
        seen = {name: len(d.events) for name, d in self.live.items()}

        def lost_answer() -> tuple[str, dict[str, Any]] | None:
            for name, daemon in self.live.items():
                with daemon.cond:
                    fresh = daemon.events[seen[name]:]
                found = next((e for e in fresh if committed_then_lost(e)), None)
                if found is not None:
                    return name, found
            return None

        victim, event = wait_until(lost_answer, WAIT_S, "a retry of a batch the platform committed", 0.005,
                                   alive=self.running_on)
        self.kill(victim, f"right after it logged a retry of batch {event['batch']} the platform committed "
                          f"({event.get('error')}); >= {threshold} records in", [event["batch"]])
        return victim, str(event["batch"])

    def kill_while_sending(self, victim: str, fraction: float, before: int) -> bool:
        """Once ``fraction`` of the records and 100 more than ``before`` are in, SIGKILL ``victim`` the moment the
        store shows it sending a batch (claimed for longer than any retry delay): the claim outlives it, so only its
        restart (which releases the claims of its earlier run) or the claim's expiry lets the batch be sent again."""
        threshold = self.wait_accepted(fraction, before)
        claimed = wait_until(lambda: self.store.open_batches_claimed_by(victim, beyond_s=10.0) or None, WAIT_S,
                             f"{victim} sending a batch", 0.005, alive=self.running_on)
        self.kill(victim, f"while the store showed it sending batch(es) {', '.join(claimed)}; "
                          f">= {threshold} records in", claimed)
        held = self.store.open_batches_claimed_by(victim, beyond_s=10.0)  # claims only a restart releases early
        self.kills[-1]["held_claims"] = held
        for batch_id in sorted(set(held) - set(claimed)):  # leased between the look and the signal
            self.follow(batch_id, victim)
        return bool(held)

    def kill(self, instance: str, point: str, follow: list[str]) -> None:
        daemon = self.live.pop(instance)
        daemon.kill()
        assert daemon.proc.returncode == -9, f"{daemon.name} was not the one to end it: {daemon.proc.returncode}"
        entry = {"instance": instance, "point": point, "store": self.store.snapshot(),
                 "sandbox": brief(self.sandbox_client().stats()), "orphans": daemon.orphans}
        self.kills.append(entry)
        print(f"SIGKILL {daemon.name}: {point}\n"
              f"    left alive by the killed daemon: {daemon.orphans or 'nothing'}\n"
              f"    store   {json.dumps(entry['store'], ensure_ascii=False)}\n"
              f"    sandbox {json.dumps(entry['sandbox'])}")
        for batch_id in follow:
            self.follow(batch_id, instance)

    def follow(self, batch_id: str, killed: str) -> None:
        """Note what the platform and the store know of a batch at a kill; checked again at the end."""
        receipt = self.sandbox_client().receipt(batch_id)
        state = self.store.batch(batch_id)
        print(f"    batch {batch_id}: platform receipt {receipt and receipt['receiptId']}; gateway {state}")
        assert state is not None, f"the store has no batch {batch_id}, yet it was sent"
        self.followed[batch_id] = {"receipt_id": receipt and receipt["receiptId"], "gateway_at_kill": state,
                                   "killed": killed}

    def carry_on_alone(self, survivor: str, left_open: str, records: int) -> None:
        """The surviving instance keeps delivering (``records`` more accepted, from its batches) and finishes the
        batch the killed one left open: its retry is due, so the survivor claims and resends it."""
        daemon = self.live[survivor]
        before, batches = self.accepted(), len(daemon.matching(delivered_a_batch))
        wait_until(lambda: self.accepted() >= before + records, WAIT_S, f"{survivor} to deliver alone", 0.1,
                   alive=self.running_on)
        wait_until(lambda: (self.store.batch(left_open) or {}).get("state") == "done", WAIT_S,
                   f"{survivor} to finish batch {left_open}", 0.1, alive=self.alive)
        self.alone = {"instance": survivor, "accepted": self.accepted() - before,
                      "batches": len(daemon.matching(delivered_a_batch)) - batches,
                      "finished": self.store.batch(left_open)}
        print(f"    {survivor} alone: {self.alone}")

    def finish(self) -> None:
        """Run until the watermarks reach the source's end and nothing is pending; then SIGTERM both, exit 0."""
        def caught_up() -> dict[str, Any] | None:
            heads = source_heads(self.department)
            snap = self.store.snapshot()
            done = snap["cursors"] == heads and snap["backlog"] == 0 and not snap["batches"].get("open")
            return snap if done else None

        snap = wait_until(caught_up, 2 * WAIT_S, "both instances to deliver everything", 0.25, alive=self.alive)
        print(f"caught up: {json.dumps(snap, ensure_ascii=False)}")
        for daemon in self.live.values():  # both at once, as a deployment stops them
            os.kill(daemon.pid, signal.SIGTERM)
        # one SIGTERM each, as a deployment sends: a second one while the loop is torn down would be the default
        self.exits = {instance: daemon.reap(60) for instance, daemon in self.live.items()}

    def status_json(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(python_cmd("-m", "gateway", "-c", str(self.configs["hub-a"]), "status", "--json"),
                              cwd=self.dir, env=child_env(), capture_output=True, text=True, timeout=120,
                              check=False)

    def collect(self) -> Outcome:
        """Everything the checks need, read once both instances stopped (the sandbox is stopped last)."""
        return collect(self)


# ---------------------------------------------------------------- the scenario's tests

@pytest.fixture(scope="module")
def two(pg_admin_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outcome]:
    """The whole scenario once, for the checks below; every process is ended even if it fails."""
    url = create_database(pg_admin_url, f"cg_two_{os.getpid()}_{next(_databases)}")
    run = TwoInstances(tmp_path_factory.mktemp("two-instances"), url)
    try:
        run.setup()
        run.scenario()
        outcome = run.collect()
        print(f"valid records {len(outcome.expected.valid)}, invalid rows {len(outcome.expected.invalid)}, "
              f"held {len(outcome.held)}; sandbox {json.dumps(brief(outcome.stats))}; "
              f"batches by instance {dict(run.store.batches_by_claimant())}")
        if outcome.status.returncode == 0:
            print(f"status --json instances: {json.dumps(json.loads(outcome.status.stdout)['instances'])}")
        yield outcome
    finally:
        run.stop_all()


@pytest.mark.slow
@pytest.mark.timeout(400)
class TestTwoInstancesOneStore:
    """About 5,000 records, two daemons on one PostgreSQL store, a faulty platform, a SIGKILL each, a clean stop."""

    def test_both_delivered_each_was_killed_once_and_both_stopped_cleanly(self, two: Outcome) -> None:
        """Both instances got receipts for batches, each was SIGKILLed once and the other delivered meanwhile;
        SIGTERM at the end: both exit 0 and log that they stopped."""
        run = two.run
        assert {k["instance"] for k in run.kills} == set(INSTANCES), run.kills
        by_instance = run.store.batches_by_claimant()
        assert by_instance["hub-a"] > 0 and by_instance["hub-b"] > 0, by_instance
        assert run.alone["accepted"] > 0 and run.alone["batches"] > 0, run.alone
        assert run.exits == {"hub-a": 0, "hub-b": 0}, run.exits
        for instance, daemon in run.live.items():
            assert daemon.matching(event_is("gateway stopped")), f"{instance}: no 'gateway stopped' after SIGTERM"
        assert two.sandbox_exit == 0
        faults = two.stats["faults_injected"]
        assert faults["drop"] and faults["fail_after_commit"], faults

    def test_the_other_instance_finished_the_batch_the_killed_one_left_open(self, two: Outcome) -> None:
        """The batch whose answer the first victim lost was due for a retry: the survivor claimed it, resent it
        under its key and got the platform's first receipt (unless the victim's retry had gone out already)."""
        run = two.run
        first = run.kills[0]["instance"]
        batch_id, at_kill = next((b, f) for b, f in run.followed.items() if f["killed"] == first)
        finished = run.alone["finished"]
        assert at_kill["receipt_id"] is not None, f"the sandbox had no receipt for {batch_id}, yet it committed it"
        assert finished["state"] == "done" and finished["receipt_id"] == at_kill["receipt_id"], (finished, at_kill)
        if at_kill["gateway_at_kill"]["state"] == "open":
            assert not finished["claimed_by"].startswith(f"{first}:"), (
                f"batch {batch_id} was open when {first} died, yet {first}'s claim finished it: {finished}")

    def test_the_platform_holds_every_valid_record_once_at_its_latest_version(self, two: Outcome) -> None:
        """Held keys = valid keys; version = ledger version; state and content = the source's latest; each
        application acknowledged by one stored receipt."""
        assert not two.expected.collisions, two.expected.collisions
        problems = check_platform(two.run, two.expected, two.held)  # type: ignore[arg-type]  # its .store suffices
        assert not problems, report(problems, "what the platform holds")

    def test_no_record_version_reaches_the_platform_in_two_batches(self, two: Outcome) -> None:
        """No duplicate, stale or conflicting arrival: the two instances never sent one version twice."""
        problems = check_arrivals(two.run.dir / "sandbox.db", two.stats)
        assert not problems, report(problems, "arrivals at the platform")

    def test_the_store_is_drained_and_every_invalid_row_quarantined_once(self, two: Outcome) -> None:
        """Nothing pending, open or dead; the ledger is the source's latest state; each invalid row quarantined,
        and only once (not once per instance that read it)."""
        problems = check_gateway(two.run, two.expected)  # type: ignore[arg-type]  # its .store suffices
        hits = two.run.store.mapping_quarantine_hits()
        problems += [f"invalid row {row} quarantined {n} times" for row, n in sorted(hits.items()) if n != 1]
        assert not problems, report(problems, "the gateway's store")

    def test_no_source_watermark_ever_moved_back(self, two: Outcome) -> None:
        """Every snapshot taken while the instances ran saw each source's watermark at or past the one before."""
        assert not two.run.store.regressions, two.run.store.regressions

    def test_the_restarted_instance_released_the_claims_of_its_killed_run(self, two: Outcome) -> None:
        """The last victim died sending a batch; started again, it made its claims due at once (not after the
        claim's expiry): its log says so, and the batch is done (checked with every followed batch)."""
        last = two.run.kills[-1]
        assert last.get("held_claims"), f"every send {last['instance']} was killed in had ended first: {last}"
        released = two.run.live[last["instance"]].matching(event_is("batches of an earlier run are due again"))
        assert released and released[0]["batches"] >= len(last["held_claims"]), (released, last["held_claims"])
        assert set(last["held_claims"]) <= set(two.run.followed)  # and so done at the end (the next test)

    def test_batches_unfinished_at_a_kill_keep_the_platforms_first_receipt(self, two: Outcome) -> None:
        """Every batch a killed instance had claimed and not finished (and the one the platform had just applied)
        is done at the end; where the platform had applied it before the kill, with that first receipt."""
        assert two.run.followed
        for batch_id, at_kill in two.run.followed.items():
            now = two.followed[batch_id]
            assert now is not None and now["state"] == "done", f"{batch_id}: {now}"
            if at_kill["receipt_id"] is not None:
                assert now["receipt_id"] == at_kill["receipt_id"], (batch_id, now, at_kill)

    def test_no_error_lines_in_any_log(self, two: Outcome) -> None:
        """Neither instance logged an error, including the run that was killed and the other one meanwhile."""
        errors = [(d.name, e) for _i, d in two.run.runs for e in d.matching(lambda _e: True)
                  if e.get("level") in ("error", "critical")]
        assert not errors, f"{len(errors)} error line(s), e.g. {errors[:3]}"

    def test_the_killed_instance_leaves_no_process_behind(self, two: Outcome) -> None:
        orphans = {k["instance"]: k["orphans"] for k in two.run.kills if k["orphans"]}
        assert not orphans, f"processes alive {ORPHAN_GRACE_S:g}s after the SIGKILL (killed by pid): {orphans}"

    def test_status_json_shows_both_instances_and_the_drained_store(self, two: Outcome) -> None:
        """``status --json`` lists both heartbeats (stopped, each with its own pid) and no backlog."""
        result = two.status
        assert result.returncode == 0, f"`credit-gateway status --json` failed:\n{result.stderr[-1500:]}"
        status = json.loads(result.stdout)
        beats = {b["instance"]: b for b in status["instances"]}
        assert set(beats) == set(INSTANCES), beats
        assert {b["state"]["state"] for b in beats.values()} == {"stopped"}, beats
        assert {name: b["pid"] for name, b in beats.items()} == {name: d.pid for name, d in two.run.live.items()}
        target = {t["target"]: t for t in status["targets"]}["sandbox"]
        assert (target["backlog"], target["dead"], target["rejected"]) == (0, 0, 0), target


# ---------------------------------------------------------------- focused: starting together

async def _open_together(url: str) -> list[BaseException]:
    """Open (and so create) the store from two instances at once; the failures."""
    opened = await asyncio.gather(open_store(url), open_store(url), return_exceptions=True)
    for store in opened:
        if not isinstance(store, BaseException):
            await store.aclose()
    return [exc for exc in opened if isinstance(exc, BaseException)]


def test_instances_starting_together_on_a_new_store_both_start(pg_admin_url: str) -> None:
    """Two instances create the schema of a new PostgreSQL store at the same moment: both start (without the
    migration lock one fails on a duplicate catalogue entry of a table the other is creating)."""
    for _ in range(3):
        url = create_database(pg_admin_url, f"cg_two_{os.getpid()}_{next(_databases)}")
        failures = asyncio.run(_open_together(url))
        assert not failures, f"an instance could not open the new store: {failures[0]}"

