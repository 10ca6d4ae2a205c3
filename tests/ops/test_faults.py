"""Faults a new user hit (issue 18), each as the command-line run that showed it, as real processes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.helpers import write_config

DEAD_URL = "http://127.0.0.1:9/api/v1/upload"  # nothing listens on port 9


def gateway(workdir: Path, *args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", "-c", str(workdir / "credit-gateway.toml"), *args],
                          cwd=workdir, capture_output=True, text=True, timeout=timeout_s)


class TestCheckConnect:
    def test_a_wrong_sqlite_path_is_one_line_and_creates_nothing(self, tmp_path: Path) -> None:
        """`check --connect` with a SQLite path that does not exist: exit 2, one line naming the source and
        the path, no traceback, and no empty database file left where the department's should be."""
        (tmp_path / "spool").mkdir()
        missing = tmp_path / "department.db"
        write_config(tmp_path, url=DEAD_URL, db=missing, token="t" * 20)
        result = gateway(tmp_path, "check", "--connect")
        assert result.returncode == 2
        assert "Traceback" not in result.stderr
        lines = [line for line in result.stderr.splitlines() if "sources." in line]
        assert len(lines) == 1 and str(missing) in lines[0] and "not found" in lines[0], result.stderr
        assert not missing.exists()

    def test_a_missing_table_is_one_line(self, tmp_path: Path) -> None:
        """A database without the configured table: exit 2 and the database's own message, no traceback."""
        (tmp_path / "spool").mkdir()
        db = tmp_path / "department.db"
        db.write_bytes(b"")  # an empty file is an empty SQLite database
        write_config(tmp_path, url=DEAD_URL, db=db, token="t" * 20)
        result = gateway(tmp_path, "check", "--connect")
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert "no such table: xzcf" in result.stderr


class TestRunUntilIdle:
    def test_a_timeout_says_why(self, tmp_path: Path) -> None:
        """`run --until-idle --timeout` that runs out of time exits 1 with a line saying it timed out and
        what is left (here: nothing listens at the target, so the records stay pending)."""
        (tmp_path / "spool").mkdir()
        from tests.support.helpers import make_department_db
        sample = make_department_db(tmp_path, penalties=3)
        write_config(tmp_path, url=DEAD_URL, db=sample.path, token="t" * 20)
        result = gateway(tmp_path, "run", "--until-idle", "--timeout", "2")
        assert result.returncode == 1
        said = result.stdout + result.stderr
        assert "timed out after 2 s" in said and "still pending" in said, said
