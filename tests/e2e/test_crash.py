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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.clock import china_today
from gateway.testing.department_db import SampleSpec, create_department_db
from tests.support.crash_helpers import (
    ORPHAN_GRACE_S,
    SOURCES,
    Process,
    expected_state,
    readonly,
    source_heads,
    wait_until,
)
from tests.support.processes import (
    TABLES,
    WAIT_S,
    DaemonRun,
    Outcome,
    brief,
    check_arrivals,
    check_gateway,
    check_platform,
    committed_then_lost,
    event_is,
    report,
    running_events,
    sandbox_applied,
)


class CrashRun(DaemonRun):
    """The crash test's kill points and scenario."""

    # ------------------------------------------------------------ kill points

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
              f"held {len(outcome.held)}; sandbox {json.dumps(brief(outcome.stats))}")
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
