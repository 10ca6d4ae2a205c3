"""The crash test against the 前置库 sink: the daemon (a real subprocess) is SIGKILLed twice while it writes into the
national front-end table, the department's table changes in between (edits and deletions of rows already
written), and the national side (simulated) processes the rows between runs. Afterwards: no record version was
written twice, no valid row is missing, and every key's last operation is right (``d`` for the deleted ones, the
edited content for the edited ones, after the key's ``i``).
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.sandbox.national import NationalFrontDb
from gateway.testing import DEPARTMENT_CODE
from tests.e2e.test_national_delivery import department_db, front_db
from tests.support.crash_helpers import Process, start_daemon
from tests.support.helpers import MAPPINGS

pytestmark = pytest.mark.slow
ROWS = 400
TABLE = "tr_t_jgxw_check_action"
CONFIG = """\
[gateway]
instance = "crash"
department_code = "{department}"
department_name = "苏州市市场监督管理局"
region_code = "320500"

[store]
url = "sqlite:///spool/gateway.db"

[daemon]
log_format = "json"
log_level = "warning"

[sources.jcxw]
type = "sql"
url = "sqlite:///{department_db}"
table = "jcxw"
key_columns = ["id"]
update_column = "gxsj"
mapping = "{mappings}/department-inspection.toml"
poll_interval_s = 0.2
batch_size = 40

[targets.national]
type = "national_frontdb"
url = "sqlite:///{front_db}"
region_code = "320000"
poll_s = 0.05
datasets = {{ inspection = "{mappings}/national-inspection.toml" }}
batch_size = 10
personal_ids = "full"
external = false

[targets.national.retry]
initial_s = 0.05
max_s = 0.2
"""


def query(path: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(path, timeout=30) as conn:
        found = conn.execute(sql).fetchall()
    conn.close()
    return found


def until(condition: Callable[[], bool], daemon: Process, what: str, timeout_s: float = 120) -> None:
    """Wait for a condition of the databases (checked every 50 ms) while the daemon is alive."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        daemon.check_alive()
        assert time.monotonic() < deadline, f"timed out waiting for {what}\n{daemon.tail()}"
        time.sleep(0.05)


def written(front: Path) -> int:
    return int(query(front, f"SELECT count(*) FROM {TABLE}")[0][0])  # type: ignore[call-overload]


def drain(front: Path) -> None:
    async def once() -> None:
        side = NationalFrontDb(f"sqlite:///{front}")
        try:
            await side.drain()
        finally:
            await side.aclose()

    asyncio.run(once())


class NationalSide:
    """The simulated national side, draining the front-end table every 50 ms in a thread of its own."""

    def __init__(self, front: Path) -> None:
        self.front, self.stop = front, threading.Event()
        self.thread = threading.Thread(target=self._run, name="national side", daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            drain(self.front)
            self.stop.wait(0.05)

    def __enter__(self) -> NationalSide:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(30)


def change(dept: Path, front: Path, count: int) -> tuple[set[str], set[str]]:
    """Delete ``count`` rows already written to the front-end table and edit ``count`` others: (deleted, edited)."""
    codes = [str(r[0]).split("|")[0] for r in query(front, f"SELECT DISTINCT record_unique_identity FROM {TABLE} "
                                                           "ORDER BY record_unique_identity")]
    unchanged = {str(r[0]) for r in query(dept, "SELECT xwbh FROM jcxw WHERE jcjg = '05'")}  # an edit must change
    candidates = [c for c in codes if c not in unchanged]
    deleted, edited = set(candidates[:count]), set(candidates[count:2 * count])
    with sqlite3.connect(dept, timeout=30) as conn:
        conn.executemany("UPDATE jcxw SET sczt = '1', gxsj = '2025-03-04 00:00:00' WHERE xwbh = ?",
                         [(c,) for c in deleted])
        conn.executemany("UPDATE jcxw SET jcjg = '05', gxsj = '2025-03-04 00:00:01' WHERE xwbh = ?",
                         [(c,) for c in edited])
    conn.close()
    return deleted, edited


def settled(front: Path, valid: set[str], deleted: int) -> bool:
    """Every valid key has its rows, each deleted key its d and each edited key its u, all answered."""
    keys = {str(r[0]).split("|")[0] for r in query(front, f"SELECT record_unique_identity FROM {TABLE}")}
    changed = query(front, f"SELECT count(*) FROM {TABLE} WHERE cd_operation <> 'i'")[0][0]
    waiting = query(front, f"SELECT count(*) FROM {TABLE} WHERE deal_status IS NULL")[0][0]
    return keys == valid and changed == 2 * deleted and waiting == 0


@pytest.mark.timeout(400)
def test_sigkill_loses_nothing_and_writes_nothing_twice(tmp_path: Path) -> None:
    """Two SIGKILLs mid-delivery, edits and deletions between them: each version once, every key's last op right."""
    dept, front = tmp_path / "dept.db", tmp_path / "front.db"
    rows = department_db(dept, ROWS)
    front_db(front)
    (tmp_path / "spool").mkdir()
    config = tmp_path / "credit-gateway.toml"
    config.write_text(CONFIG.format(department=DEPARTMENT_CODE, department_db=dept, front_db=front,
                                    mappings=MAPPINGS.as_posix()), encoding="utf-8")
    valid = {str(r["xwbh"]) for r in rows if "_broken" not in r}
    with NationalSide(front):
        daemon = start_daemon(tmp_path, config, 1)
        until(lambda: written(front) >= 60, daemon, "60 rows in the front-end table")
        daemon.kill()
        deleted, edited = change(dept, front, 10)

        daemon = start_daemon(tmp_path, config, 2)
        until(lambda: written(front) >= 200, daemon, "200 rows in the front-end table")
        daemon.kill()

        daemon = start_daemon(tmp_path, config, 3)
        until(lambda: settled(front, valid, len(deleted)), daemon, "every valid row written and answered", 300)
        assert daemon.terminate(30) == 0, daemon.tail()

    found = query(front, f"SELECT cd_id, record_unique_identity, cd_operation, check_result, deal_status "
                         f"FROM {TABLE} ORDER BY cd_batch, cd_time")
    assert len({r[0] for r in found}) == len(found)
    by_key: dict[str, list[tuple[object, ...]]] = {}
    for row in found:
        by_key.setdefault(str(row[1]).split("|")[0], []).append(row)
    assert set(by_key) == valid
    assert {str(r[4]) for r in found} == {"1"}, "the national side refused a row (order or content)"
    for code, history in by_key.items():
        ops = [str(r[2]) for r in history]
        assert ops[0] == "i" and "i" not in ops[1:], (code, ops)
        if code in deleted:
            assert ops[-1] == "d", (code, ops)
        elif code in edited:
            assert ops[-1] == "u" and history[-1][3] == "其他", (code, ops)
        else:
            assert ops == ["i"], (code, ops)
