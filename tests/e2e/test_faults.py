"""The fault-injection suite: the daemon and the sandbox as real processes, a writer committing to the source the
whole time, and faults at randomised points (issue 17, "Keep them fixed").

A writer thread commits to the department's SQLite database throughout: new rows several to one update time,
edits of several rows in one transaction (one update time), two edits of a row in one transaction time (the
second at the first's update time), and late commits -- edits whose update time is older than the gateway's
watermark: inside the look-back window (``lookback_s`` unset: SQLite's default, 10 s), at the watermark itself
with a lower key, and two minutes behind it, beyond the window. Meanwhile, for ``CHAOS_S`` seconds, faults are
chosen at random: SIGKILL of the daemon right after an intake commit, during an intake (a random moment after a
commit, while the next pages are read), during a send (the moment the sandbox applied a batch) and at start-up;
SIGKILL of the sandbox (restarted on its port a moment later); the daemon frozen with SIGSTOP for a few seconds.
The sandbox also fails requests by itself (errors, dropped connections, failures after commit).

Then the writer stops, the daemon runs until its watermarks reach the sources' ends, nothing is pending and each
source was audited after the last write; SIGTERM. The checks: every valid row is held by the platform once, at its
latest content and the ledger's version; no version arrived in two batches; the store matches the source; and
the late commits beyond the look-back were recovered by the source audit and counted (``status --json``:
recovered rows equal the late commits beyond the window, exactly). The run prints its kills, rows and time.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import signal
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from gateway.clock import china_today
from gateway.testing.department_db import same_gxsj_rows
from gateway.testing.rows import EDIT_COLUMN, format_gxsj, utcnow
from tests.support.crash_helpers import SOURCES, Process, expected_state, readonly, source_heads, wait_until
from tests.support.processes import (
    TABLES,
    WAIT_S,
    DaemonRun,
    Outcome,
    check_arrivals,
    check_gateway,
    check_platform,
    event_is,
    report,
    running_events,
    sandbox_applied,
)

CHAOS_S = float(os.environ.get("CG_FAULTS_CHAOS_S", "60"))  # how long faults are injected
ROWS = 600  # per table, before the writer starts
AUDIT_S = 3.0
LOOKBACK_S = 10.0  # SQLite's default look-back (adapters.sql.source.DEFAULT_LOOKBACK_S): not set in the config
BEYOND_S = 120.0  # late commits beyond the window: this far behind the watermark
FAULTS = {"--error-rate": "0.05", "--drop-rate": "0.05", "--fail-after-commit-rate": "0.03", "--delay": "0.002"}
FAULT_KINDS = ("right after an intake commit", "during an intake", "during a send", "at start-up", "sandbox SIGKILL",
               "daemon SIGSTOP/SIGCONT")
TABLE_SOURCE = {table: source for source, (table, *_rest) in SOURCES.items()}


# ---------------------------------------------------------------- the writer

@dataclass
class Writes:
    """What the writer committed, by kind; ``beyond``: (table, id) of late commits beyond the look-back."""

    kinds: Counter[str] = field(default_factory=Counter)
    rows: Counter[str] = field(default_factory=Counter)
    beyond: set[tuple[str, int]] = field(default_factory=set)


class Writer(threading.Thread):
    """Commits to the department database until stopped: the row shapes of the module docstring."""

    def __init__(self, department: Path, store: Path, rng: random.Random) -> None:
        super().__init__(name="source writer", daemon=True)
        self.department, self.store, self.rng = department, store, rng
        self.stop = threading.Event()
        self.writes = Writes()
        self.error: BaseException | None = None
        self.contents: dict[tuple[str, int], str] = {}  # valid rows with content to edit: their original text
        self.reserved: dict[str, list[int]] = {}  # per table: rows kept for one late commit beyond the window each
        self.edits = 0

    def prepare(self) -> None:
        """Split the valid rows with content: a fifth kept for late commits beyond the window, the rest edited."""
        expected = expected_state(self.department, china_today())
        with readonly(self.department) as conn:
            for table in TABLES:
                ids = expected.valid_ids(table)
                col = EDIT_COLUMN[table]
                rows = dict(conn.execute(f"SELECT id, {col} FROM {table}").fetchall())
                usable = [i for i in ids if rows.get(i)]
                self.rng.shuffle(usable)
                cut = len(usable) // 5
                self.reserved[table] = usable[:cut]
                self.contents.update({(table, i): rows[i] for i in usable})

    def run(self) -> None:
        try:
            with sqlite3.connect(self.department, timeout=60, isolation_level=None) as conn:
                while not self.stop.is_set():
                    self.step(conn, self.rng.choice(TABLES))
                    self.stop.wait(self.rng.uniform(0.02, 0.08))  # the pace of a busy department, not a wait
        except BaseException as exc:
            self.error = exc

    def step(self, conn: sqlite3.Connection, table: str) -> None:
        roll = self.rng.random()
        if roll < 0.25:
            count = self.rng.randint(2, 6)
            same_gxsj_rows(self.department, table=table, count=count, gxsj=utcnow())
            self.note("inserted, several to one update time", count)
        elif roll < 0.45:
            ids = self.editable(table, self.rng.randint(2, 5))
            self.edit(conn, table, ids, format_gxsj(utcnow()))
            self.note("edited, several to one update time", len(ids))
        elif roll < 0.60:
            [row_id] = self.editable(table, 1)
            stamp = format_gxsj(utcnow())
            self.edit(conn, table, [row_id], stamp)
            self.edit(conn, table, [row_id], stamp)  # a second edit at the same update time
            self.note("edited twice at one update time", 1)
        elif roll < 0.92:
            self.late_inside(conn, table)
        else:
            self.late_beyond(conn, table)

    def watermark(self, table: str) -> tuple[dt.datetime, int] | None:
        if not self.store.exists():
            return None
        with readonly(self.store) as conn:
            row = conn.execute("SELECT cursor FROM cg_watermarks WHERE source = ?", (TABLE_SOURCE[table],)).fetchone()
        cursor = json.loads(row[0]) if row else None
        if not cursor:
            return None
        return dt.datetime.fromisoformat(cursor[0]).replace(tzinfo=dt.UTC), int(cursor[1])

    def late_inside(self, conn: sqlite3.Connection, table: str) -> None:
        """An edit behind the watermark but inside the window however far the next poll moves it: at the
        watermark's update time with a lower key, or up to 5 s before it (not more than 6 s before now)."""
        mark = self.watermark(table)
        floor = utcnow() - dt.timedelta(seconds=LOOKBACK_S - 4)
        if mark is None or mark[0] <= floor:
            return  # the daemon is behind (killed or frozen): no update time is both late and safely inside
        if self.rng.random() < 0.4:
            lower = [i for i in self.editable(table, 8) if i < mark[1]]
            if lower:
                self.edit(conn, table, lower[:1], format_gxsj(mark[0]))
                self.note("late: at the watermark's update time, lower key", 1)
            return
        back = self.rng.uniform(0.0, min(5.0, (mark[0] - floor).total_seconds()))
        [row_id] = self.editable(table, 1)
        self.edit(conn, table, [row_id], format_gxsj(mark[0] - dt.timedelta(seconds=back)))
        self.note("late: inside the look-back", 1)

    def late_beyond(self, conn: sqlite3.Connection, table: str) -> None:
        """An edit two minutes behind the watermark, of a row no other write touches: the audit's to find."""
        mark = self.watermark(table)
        if mark is None or not self.reserved[table]:
            return
        row_id = self.reserved[table].pop()
        self.edit(conn, table, [row_id], format_gxsj(mark[0] - dt.timedelta(seconds=BEYOND_S)))
        self.writes.beyond.add((table, row_id))
        self.note("late: beyond the look-back", 1)

    def editable(self, table: str, count: int) -> list[int]:
        reserved = set(self.reserved[table])
        pool = [i for (t, i) in self.contents if t == table and i not in reserved
                and (t, i) not in self.writes.beyond]
        return self.rng.sample(pool, min(count, len(pool)))

    def edit(self, conn: sqlite3.Connection, table: str, ids: list[int], stamp: str) -> None:
        """One transaction: each row's content gets a new suffix, and every row the update time ``stamp``."""
        col = EDIT_COLUMN[table]
        conn.execute("BEGIN IMMEDIATE")
        for row_id in ids:
            self.edits += 1
            text = f"{self.contents[(table, row_id)]}（第{self.edits}次更正）"
            conn.execute(f"UPDATE {table} SET {col} = ?, gxsj = ? WHERE id = ?", (text, stamp, row_id))
        conn.execute("COMMIT")

    def note(self, kind: str, rows: int) -> None:
        self.writes.kinds[kind] += 1
        self.writes.rows[kind] += rows


# ---------------------------------------------------------------- faults

class FaultRun(DaemonRun):
    """The faults, chosen at random while the writer writes."""

    def __init__(self, workdir: Path, seed: int) -> None:
        super().__init__(workdir)
        self.rng = random.Random(seed)
        self.faults: Counter[str] = Counter()
        self.writer = Writer(self.department, self.store.path, random.Random(seed + 1))
        self.daemon: Process | None = None
        self.recovered = 0

    def live_daemon(self) -> Process:
        if self.daemon is None or not self.daemon.running():
            self.daemon = self.start()
        return self.daemon

    def chaos(self, seconds: float) -> None:
        """Faults for ``seconds``, from a shuffled deck of every kind (so each strikes, in a random order), at
        least one deck."""
        end = time.monotonic() + seconds
        faults = [self.kill_after_commit, self.kill_during_intake, self.kill_during_send, self.kill_at_start_up,
                  self.kill_sandbox, self.freeze]
        deck: list[Any] = []
        while time.monotonic() < end or deck:
            if self.writer.error is not None:
                raise AssertionError(f"the writer failed: {self.writer.error!r}")
            if not deck:
                deck = self.rng.sample(faults, len(faults))
            deck.pop()()

    def sigkill(self, daemon: Process, point: str) -> None:
        daemon.kill()
        assert daemon.proc.returncode == -9, f"{daemon.name} ended by itself: {daemon.proc.returncode}\n{daemon.tail()}"
        self.faults[point] += 1
        self.kills.append({"run": len(self.daemons), "point": point})

    def kill_after_commit(self) -> None:
        daemon = self.live_daemon()
        daemon.wait_event(event_is("intake committed"), WAIT_S, "an intake commit", start=len(daemon.events))
        self.sigkill(daemon, "right after an intake commit")

    def kill_during_intake(self) -> None:
        """A random moment up to 0.3 s after a commit: the next pages are being read, mapped or committed."""
        daemon = self.live_daemon()
        daemon.wait_event(event_is("intake committed"), WAIT_S, "an intake commit", start=len(daemon.events))
        self.writer.stop.wait(self.rng.uniform(0.0, 0.3))  # the randomised kill point, not a wait for a state
        self.sigkill(daemon, "during an intake")

    def kill_during_send(self) -> None:
        daemon = self.live_daemon()
        assert self.sandbox is not None
        sandbox = self.sandbox
        sandbox.wait_event(sandbox_applied, WAIT_S, "the sandbox applying a batch", start=len(sandbox.events),
                           also=daemon.check_alive)
        self.sigkill(daemon, "during a send")  # the platform applied the batch, its answer is on the way

    def kill_at_start_up(self) -> None:
        """A fresh daemon killed at its first log line, or up to 0.5 s later (opening the store, the adapters,
        its worker process, the first poll)."""
        if self.daemon is not None and self.daemon.running():
            self.sigkill(self.daemon, "at a random moment")
        daemon = self.live_daemon()
        daemon.wait_event(lambda _e: True, WAIT_S, "the first log line")
        self.writer.stop.wait(self.rng.uniform(0.0, 0.5))  # the randomised kill point
        self.sigkill(daemon, "at start-up")

    def kill_sandbox(self) -> None:
        """SIGKILL the platform; it comes back on its port 0.2-2 s later (the daemon retries meanwhile)."""
        self.live_daemon()
        assert self.sandbox is not None and self.client is not None
        self.sandbox.kill()
        self.faults["sandbox SIGKILL"] += 1
        self.writer.stop.wait(self.rng.uniform(0.2, 2.0))  # how long the platform is down: the fault itself
        port = urlsplit(self.client.url).port or 0
        self.client.url = self.start_sandbox(port)

    def freeze(self) -> None:
        """SIGSTOP the daemon for 1-4 s (sends time out at the sandbox's end, the writer goes on), SIGCONT."""
        daemon = self.live_daemon()
        os.kill(daemon.pid, signal.SIGSTOP)
        try:
            self.writer.stop.wait(self.rng.uniform(1.0, 4.0))  # the length of the freeze: the fault itself
        finally:
            os.kill(daemon.pid, signal.SIGCONT)
        self.faults["daemon SIGSTOP/SIGCONT"] += 1

    def settle(self, written_until: float) -> None:
        """Run until the watermarks reach the sources' ends, each source was audited after the last write and
        nothing is pending; then SIGTERM (exit 0)."""
        daemon = self.live_daemon()

        def settled() -> dict[str, Any] | None:
            snap = self.store.snapshot()
            with readonly(self.store.path) as conn:
                audited = dict(conn.execute("SELECT source, max(at) FROM cg_source_audits GROUP BY source"))
            fresh = all(audited.get(s, 0.0) > written_until for s in SOURCES)
            done = (fresh and snap["cursors"] == source_heads(self.department) and snap["backlog"] == 0
                    and not snap["batches"].get("open"))
            return snap if done else None

        wait_until(settled, WAIT_S, "the last run to take every row in and deliver it", 0.25,
                   alive=daemon.check_alive)
        self.final_exit = daemon.terminate(60)


@dataclass
class FaultOutcome:
    run: FaultRun
    outcome: Outcome
    status: dict[str, Any]
    seconds: float


@pytest.fixture(scope="module")
def faulted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultOutcome]:
    """One run of the suite (seed from $CG_FAULTS_SEED, else random and printed); every process is ended."""
    seed = int(os.environ.get("CG_FAULTS_SEED", str(random.SystemRandom().randrange(1_000_000))))
    started = time.monotonic()
    run = FaultRun(tmp_path_factory.mktemp("faults"), seed)
    try:
        run.setup(licences=ROWS, penalties=ROWS, faults={**FAULTS, "--seed": str(seed)},
                  source_extra=f"audit_interval_s = {AUDIT_S}\n")
        run.writer.prepare()
        run.live_daemon().wait_event(event_is("intake committed"), WAIT_S, "the first intake commit")
        run.writer.start()  # the store and its watermarks exist now
        run.chaos(CHAOS_S)
        run.writer.stop.set()
        run.writer.join(60)
        written_until = time.time()
        assert run.writer.error is None, f"the writer failed: {run.writer.error!r}"
        run.settle(written_until)
        outcome = run.collect()
        status = json.loads(outcome.status.stdout) if outcome.status.returncode == 0 else {}
        seconds = time.monotonic() - started
        writes = run.writer.writes
        print(f"\nfault suite, seed {seed}: {seconds:.0f} s; {sum(run.faults.values())} faults, "
              f"{len(run.kills)} SIGKILLs of the daemon over {len(run.daemons)} runs")
        for kind, count in sorted(run.faults.items()):
            print(f"  {count:4d}  {kind}")
        print(f"rows: {2 * ROWS} at the start; {sum(writes.rows.values())} written in {sum(writes.kinds.values())} "
              f"commits while faults were on")
        for kind, count in sorted(writes.rows.items()):
            print(f"  {count:4d}  {kind} ({writes.kinds[kind]} commits)")
        print(f"late commits found (status --json): {status.get('late_commits')}; "
              f"valid records held {len(outcome.held)}")
        yield FaultOutcome(run, outcome, status, seconds)
    finally:
        run.writer.stop.set()
        run.stop_all()


@pytest.mark.slow
@pytest.mark.timeout(300)
class TestFaults:
    """A writer, random SIGKILLs, a killed platform and a frozen daemon: nothing lost, stale or applied twice."""

    def test_every_kind_of_fault_and_write_happened(self, faulted: FaultOutcome) -> None:
        """Each fault struck at least once, the writer wrote every row shape, and the last stop was clean."""
        run = faulted.run
        assert set(FAULT_KINDS) <= set(run.faults), run.faults
        assert len(run.writer.writes.kinds) == 6 and run.writer.writes.beyond, run.writer.writes.kinds
        assert run.final_exit == 0, run.daemons[-1].tail()
        assert faulted.seconds < 300

    def test_the_platform_holds_every_valid_row_once_at_its_latest_content(self, faulted: FaultOutcome) -> None:
        """Held keys = valid keys; version = the ledger's; state and content = the source's latest."""
        outcome = faulted.outcome
        assert not outcome.expected.collisions, outcome.expected.collisions
        problems = check_platform(faulted.run, outcome.expected, outcome.held)
        assert not problems, report(problems, "what the platform holds")

    def test_no_version_reaches_the_platform_in_two_batches(self, faulted: FaultOutcome) -> None:
        """Retries reuse their batch and idempotency key, across daemon and platform restarts."""
        problems = check_arrivals(faulted.run.dir / "sandbox.db", faulted.outcome.stats)
        assert not problems, report(problems, "arrivals at the platform")

    def test_the_store_is_drained_and_matches_the_source(self, faulted: FaultOutcome) -> None:
        """Nothing pending, open or dead; the ledger is the source's latest state; invalid rows quarantined."""
        problems = check_gateway(faulted.run, faulted.outcome.expected)
        assert not problems, report(problems, "the gateway's store")

    def test_late_commits_beyond_the_lookback_are_recovered_by_the_audit_and_counted(
            self, faulted: FaultOutcome) -> None:
        """`status --json` counts exactly the late commits beyond the window as recovered, per source."""
        beyond = Counter(TABLE_SOURCE[table] for table, _id in faulted.run.writer.writes.beyond)
        audits = faulted.status["audits"]
        assert {s: audits[s]["recovered_total"] for s in SOURCES} == {s: beyond[s] for s in SOURCES}

    def test_late_commits_inside_the_lookback_are_found_by_it_and_counted(self, faulted: FaultOutcome) -> None:
        """`status --json` counts late commits the look-back window took in: some, never more than were written."""
        kinds = faulted.run.writer.writes.rows
        written = (kinds["late: inside the look-back"] + kinds["late: at the watermark's update time, lower key"]
                   + kinds["edited twice at one update time"])  # the second edit is late when the first was taken
        found = sum(s["late"] for s in faulted.status["late_commits"].values())
        assert 0 < found <= written, (found, written)

    def test_the_daemon_logs_no_errors_while_running(self, faulted: FaultOutcome) -> None:
        """No error lines (poll failed, delivery step failed, source audit failed) before a stop."""
        errors = [e for d in faulted.run.daemons for e in running_events(d) if e.get("level") in ("error", "critical")]
        assert not errors, f"{len(errors)} error line(s) in the daemon logs, e.g. {errors[:3]}"
