"""The daemon as a real process: its log stays one JSON object a line after a SIGKILL, and a SIGTERM at any point
of its start-up stops it with exit status 0 (issue 17, 13).

Nothing waits on a fixed sleep for synchronisation: the tests wait for a log event, for the kernel to show the
process catching SIGTERM (/proc/PID/status), or for a process to end. The only sleeps choose *when* during
start-up a SIGTERM arrives; the outcome must not depend on it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import time
from pathlib import Path

import psutil
import pytest

from gateway.testing.department_db import SampleSpec, create_department_db
from tests.support.crash_helpers import MAPPINGS, Process, python_cmd, start_daemon, wait_until, write_config

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc/PID/status")


def workdir(tmp_path: Path, map_workers: int = 1) -> Path:
    """A config whose target is nowhere (127.0.0.1:9): start-up, intake and the worker pool are what runs."""
    create_department_db(tmp_path / "department.db", SampleSpec(licences=20, penalties=20))
    token = tmp_path / "sandbox.token"
    token.write_text("t0123456789abcdef\n", encoding="utf-8")
    config = write_config(tmp_path / "credit-gateway.toml", store=tmp_path / "store.db",
                          department=tmp_path / "department.db", url="http://127.0.0.1:9/api/v1/upload",
                          token_file=token)
    text = config.read_text(encoding="utf-8")
    config.write_text(text.replace("[daemon]\n", f"[daemon]\nmap_workers = {map_workers}\n", 1), encoding="utf-8")
    return config


def catches_sigterm(pid: int) -> bool:
    """True once the process has a handler for SIGTERM (SigCgt in /proc/PID/status)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text(encoding="ascii")
    except OSError:
        return False
    caught = next(line for line in status.splitlines() if line.startswith("SigCgt:")).split()[1]
    return bool(int(caught, 16) & (1 << (signal.SIGTERM - 1)))


def assert_json_lines(log: Path) -> None:
    lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    bad = [line for line in lines if not _is_object(line)]
    assert not bad, f"{len(bad)} of {len(lines)} lines are not JSON objects: {bad[:5]}"


def _is_object(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


class TestLogAfterSigkill:
    def test_a_killed_daemon_leaves_only_json_lines(self, tmp_path: Path) -> None:
        """SIGKILL while the worker pool runs: Python's resource tracker, left alone, would print its leaked-
        semaphore warnings as plain text into the daemon's log; every line stays a JSON object."""
        daemon = start_daemon(tmp_path, workdir(tmp_path, map_workers=2), 1)
        try:
            daemon.wait_event(lambda e: e.get("event") == "gateway started", 120, "the start")
            children = psutil.Process(daemon.pid).children(recursive=True)
            assert any("resource_tracker" in " ".join(c.cmdline()) for c in children), "no resource tracker"
        finally:
            daemon.kill()  # reaps it and every child, then reads the log to its end (the tracker's too)
        assert_json_lines(daemon.log_path)


class TestSigtermDuringStartUp:
    @pytest.mark.parametrize("delay_s", [0.0, 0.3, 1.0])
    def test_exit_status_0_wherever_it_arrives(self, tmp_path: Path, delay_s: float) -> None:
        """From the moment the process catches SIGTERM (before the command line's imports), a SIGTERM ends it
        with status 0 and a JSON log, whether it arrives while importing, loading or starting."""
        config = workdir(tmp_path)
        daemon = Process("daemon", python_cmd("-m", "gateway", "-c", str(config), "run"), tmp_path,
                         tmp_path / "daemon.log")
        try:
            wait_until(lambda: catches_sigterm(daemon.pid) or not daemon.running(), 60, "a SIGTERM handler",
                       interval_s=0.005)
            assert not (tmp_path / "store.db").exists(), "SIGTERM is caught only once start-up is under way"
            time.sleep(delay_s)  # where in start-up it arrives; not a synchronisation
            os.kill(daemon.pid, signal.SIGTERM)
            code = daemon.reap(120)
        finally:
            daemon.kill()
        assert code == 0, daemon.tail()
        assert_json_lines(daemon.log_path)


class TestBadInputWhileRunning:
    def test_the_daemon_keeps_running_through_bad_rows_and_a_broken_mapping_edit(self, tmp_path: Path) -> None:
        """Rows with NUL, ESC and a 5,000-character name are quarantined one by one and a mapping edit of the wrong
        type is refused, while the daemon (a real process) keeps running with a JSON log and stops with 0."""
        shutil.copytree(MAPPINGS, tmp_path / "mappings")
        config = workdir(tmp_path)
        text = config.read_text(encoding="utf-8").replace(MAPPINGS.as_posix(), (tmp_path / "mappings").as_posix())
        config.write_text(text.replace("[daemon]\n", "[daemon]\nreload_check_s = 0.2\n", 1), encoding="utf-8")
        bad = {1: "苏州\x00测试有限公司", 2: "\x1b[2J某公司", 3: "名" * 5000}
        with sqlite3.connect(tmp_path / "department.db") as conn:
            for row_id, name in bad.items():
                conn.execute("UPDATE xzcf SET xdr_mc = ? WHERE id = ?", (name, row_id))
        daemon = start_daemon(tmp_path, config, 1)
        try:
            quarantined = {str(i) for i in bad}
            daemon.wait_event(lambda e: e.get("event") == "row quarantined" and e.get("row") in quarantined
                              and quarantined.discard(e["row"]) is None and not quarantined, 120,
                              "the three bad rows quarantined")
            mapping = tmp_path / "mappings" / "department-penalty.toml"
            mapping.write_text(mapping.read_text(encoding="utf-8").replace(
                'date_format = ["%Y/%m/%d", "%Y-%m-%d"]', "date_format = 42", 1), encoding="utf-8")
            _, refused = daemon.wait_event(lambda e: e.get("event", "").startswith("mapping refused"), 60,
                                           "the broken mapping refused")
            assert any("fields.decision_date.date_format" in p for p in refused["problems"])
            daemon.check_alive()
            code = daemon.terminate(60)
        finally:
            daemon.kill()
        assert code == 0
        assert_json_lines(daemon.log_path)
        reasons = " ".join(e.get("reasons", "") for e in daemon.matching(lambda e: e.get("event") == "row quarantined"))
        assert "U+0000 at position 3" in reasons and "U+001B at position 1" in reasons and "5000 characters" in reasons
