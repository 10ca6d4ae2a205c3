"""Helpers for the crash test: real subprocesses (daemon, sandbox), their logs, and read-only store views.

Nothing here synchronises on fixed sleeps: every wait polls a condition (a log line, a counter, a
store query) with a deadline, and every process started is ended by its own pid.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import psutil

from gateway.mapping import InboundMapping, load_mapping

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]
MAPPINGS = ROOT / "mappings"
# source name in the config -> (department table, inbound mapping file, dataset, target table code)
SOURCES: Mapping[str, tuple[str, str, str, str]] = {
    "department_penalties": ("xzcf", "department-penalty.toml", "penalty", "XZCF"),
    "department_licences": ("xzxk", "department-license.toml", "license", "XZXK"),
}
TABLE_CODE = {dataset: code for _t, _m, dataset, code in SOURCES.values()}
STATUS_FIELD = {"XZCF": "CF_ZT", "XZXK": "XK_ZT"}
CONTENT_FIELD = {"XZCF": "CF_NR", "XZXK": "XK_NR"}
STATUS_CODE = {"upsert": "0", "revoke": "1", "object": "2", "withdraw": "3"}

CONFIG = """\
[gateway]
instance = "crash-test"
department_code = "11320500014117422K"
department_name = "苏州市市场监督管理局"
region_code = "320500"

[store]
url = "sqlite:///{store}"

[daemon]
log_format = "json"
log_level = "info"
heartbeat_s = 1
idle_check_s = 0.2
shutdown_grace_s = 30
adapter_timeout_s = 60

# The expected state here is the mapped source; the publication rules (a repair refused before the minimum
# period, the withdrawal when publicity ends) are tested in test_publicity.py and test_propagation.py.
[publicity]
enabled = false

[sources.department_penalties]
type = "sql"
url = "sqlite:///{department}"
table = "xzcf"
key_columns = ["id"]
update_column = "gxsj"
mapping = "{mappings}/department-penalty.toml"
poll_interval_s = 0.2
batch_size = 1000
{source_extra}
[sources.department_licences]
type = "sql"
url = "sqlite:///{department}"
table = "xzxk"
key_columns = ["id"]
update_column = "gxsj"
mapping = "{mappings}/department-license.toml"
poll_interval_s = 0.2
batch_size = 1000
{source_extra}
[targets.sandbox]
type = "credit_platform"
url = "{url}"
token_file = "{token_file}"
datasets = {{ penalty = "{mappings}/platform-2019-penalty.toml", license = "{mappings}/platform-2019-license.toml" }}
batch_size = 200
max_in_flight = 2
personal_ids = "mask"
external = {external}
{envelope}
[targets.sandbox.retry]
initial_s = 0.05
max_s = 0.5
jitter_s = 0.05
max_attempts = 40

[targets.sandbox.circuit]
failure_threshold = 8
reset_s = 0.2
"""


def write_config(path: Path, *, store: Path, department: Path, url: str, token_file: Path,
                 pki: Path | None = None, profile: str = "none", source_extra: str = "") -> Path:
    """The daemon's config; with a profile other than none the target seals with the PKI in ``pki``.
    ``source_extra``: more settings for both source tables (TOML lines)."""
    envelope = ""
    if profile != "none" and pki is not None:
        envelope = (f'\n[targets.sandbox.envelope]\nprofile = "{profile}"\nkey = "{pki}/gateway.key"\n'
                    f'cert = "{pki}/gateway.crt"\npeer_cert = "{pki}/platform.crt"\ntrusted_cas = ["{pki}/ca.crt"]\n')
    path.write_text(CONFIG.format(store=store.as_posix(), department=department.as_posix(), url=url,
                                  token_file=token_file.as_posix(), mappings=MAPPINGS.as_posix(),
                                  external="true" if envelope else "false", envelope=envelope,
                                  source_extra=source_extra),
                    encoding="utf-8")
    return path


def wait_until(check: Callable[[], T | None], timeout_s: float, what: str, interval_s: float = 0.1,
               alive: Callable[[], None] | None = None) -> T:
    """Poll ``check`` until it returns something other than None/False; AssertionError after the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value is not None and value is not False:
            return value
        if alive is not None:
            alive()
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g}s waiting for {what}")
        time.sleep(interval_s)


def python_cmd(*args: str) -> list[str]:
    return [sys.executable, *args]


MARK = "CG_CRASH_TEST_PROCESS"  # set in each started process's environment, inherited by its children
ORPHAN_GRACE_S = 5.0  # how long children of a killed process get to notice and exit by themselves


def child_env(mark: str = "") -> dict[str, str]:
    env = dict(os.environ)
    if mark:
        env[MARK] = mark
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


# ---------------------------------------------------------------- processes

class Process:
    """One subprocess whose merged stdout/stderr is read by a thread into a log file and parsed lines.

    Every process it starts, and their children, carry a unique marker in their environment, so children
    left behind by a killed process (worker pools) are found and ended by pid.
    """

    def __init__(self, name: str, cmd: Sequence[str], cwd: Path, log_path: Path) -> None:
        self.name, self.log_path = name, log_path
        self.mark = f"{name}/{uuid.uuid4().hex}"
        self.events: list[dict[str, Any]] = []
        self.orphans: list[str] = []  # command lines of children still alive after the process died
        self.cond = threading.Condition()
        self.proc = subprocess.Popen(list(cmd), cwd=cwd, env=child_env(self.mark), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.pid = self.proc.pid
        self._reader = threading.Thread(target=self._read, name=f"read {name}", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        with self.proc.stdout as stream, open(self.log_path, "ab") as log:
            for raw in stream:
                log.write(raw)
                log.flush()
                line = raw.decode("utf-8", "replace").rstrip("\n")
                try:
                    event = json.loads(line)
                except ValueError:
                    event = None
                if not isinstance(event, dict):
                    event = {"event": line, "level": "raw"}
                with self.cond:
                    self.events.append(event)
                    self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()

    def running(self) -> bool:
        return self.proc.poll() is None

    def check_alive(self) -> None:
        if not self.running():
            raise AssertionError(f"{self.name} (pid {self.pid}) exited with {self.proc.returncode}; "
                                 f"log tail:\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text("utf-8", "replace").splitlines()[-lines:])
        return ""

    def wait_event(self, match: Callable[[dict[str, Any]], bool], timeout_s: float, what: str,
                   start: int = 0, also: Callable[[], None] | None = None) -> tuple[int, dict[str, Any]]:
        """The first event at or after index ``start`` that matches; fails on timeout or if the process ends."""
        deadline = time.monotonic() + timeout_s
        seen = start
        while True:
            with self.cond:
                while seen < len(self.events):
                    event = self.events[seen]
                    seen += 1
                    if match(event):
                        return seen - 1, event
                if self.running():
                    self.cond.wait(timeout=0.2)
            self.check_alive()
            if also is not None:
                also()
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout_s:g}s waiting for {what} in {self.name}'s log")

    def matching(self, match: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        with self.cond:
            return [e for e in self.events if match(e)]

    def kill(self) -> int:
        """SIGKILL (no clean-up at all), then reap; children it leaves behind are noted, then killed."""
        if self.running():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        return self.reap(30)

    def terminate(self, timeout_s: float) -> int:
        """SIGTERM, then wait up to ``timeout_s``; returns the exit code (the process is killed if it hangs)."""
        if self.running():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
        try:
            return self.reap(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def reap(self, timeout_s: float) -> int:
        code = self.proc.wait(timeout_s)
        self._end_leftovers()
        self._reader.join(timeout=30)
        return code

    def _leftovers(self) -> list[psutil.Process]:
        """Live processes (not zombies) carrying this process's marker: its children, now orphans."""
        found = []
        for proc in psutil.process_iter():
            with contextlib.suppress(psutil.Error):
                if proc.pid != os.getpid() and proc.environ().get(MARK) == self.mark:
                    found.append(proc)
        return found

    def _end_leftovers(self) -> None:
        deadline = time.monotonic() + ORPHAN_GRACE_S
        left = self._leftovers()
        while left and time.monotonic() < deadline:
            time.sleep(0.2)
            left = self._leftovers()
        for proc in left:
            with contextlib.suppress(psutil.Error):
                self.orphans.append(f"pid {proc.pid}: {' '.join(proc.cmdline())[:160]}")
                proc.kill()
        wait_until(lambda: not self._leftovers(), 30, f"the children of {self.name} to die")


def start_daemon(workdir: Path, config: Path, run: int) -> Process:
    return Process(f"daemon run {run}", python_cmd("-m", "gateway", "-c", str(config), "run"), workdir,
                   workdir / f"daemon-{run}.log")


def start_sandbox(workdir: Path, token_file: Path, db: Path, ready: Path, faults: Mapping[str, str],
                  pki: Path | None = None, profile: str = "none", port: int = 0) -> Process:
    """The sandbox process; with a profile it opens sealed uploads and signs receipts with the PKI in ``pki``.
    ``port``: 0 picks a free one; a restarted sandbox takes its predecessor's."""
    flags = [item for flag, value in faults.items() for item in (flag, value)]
    if profile != "none" and pki is not None:
        flags += ["--envelope", profile, "--key", f"{pki}/platform.key", "--cert", f"{pki}/platform.crt",
                  "--peer-cert", f"{pki}/gateway.crt", "--trusted-ca", f"{pki}/ca.crt"]
    cmd = python_cmd("-m", "gateway.sandbox", "--port", str(port), "--ready-file", str(ready), "--token-file",
                     str(token_file), "--db", str(db), *flags)
    return Process("sandbox", cmd, workdir, workdir / "sandbox.log")


# ---------------------------------------------------------------- the sandbox over HTTP

@dataclass
class SandboxClient:
    url: str
    token: str

    def get(self, path: str, timeout_s: float = 30) -> tuple[int, Any]:
        request = urllib.request.Request(self.url + path, headers={"Authorization": f"Bearer {self.token}"})
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, json.loads(exc.read() or b"null")

    def set_faults(self, **changes: Any) -> dict[str, Any]:
        """Change the sandbox's faults while it runs (POST /_sandbox/faults); the faults now in force."""
        request = urllib.request.Request(self.url + "/_sandbox/faults", data=json.dumps(changes).encode(),
                                         method="POST", headers={"Authorization": f"Bearer {self.token}",
                                                                 "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            body = json.loads(response.read())
        assert isinstance(body, dict), body
        return body

    def stats(self) -> dict[str, Any]:
        status, body = self.get("/_sandbox/stats")
        assert status == 200 and isinstance(body, dict), body
        return body

    def records(self, table_code: str, page: int = 5000) -> dict[str, dict[str, Any]]:
        """Every held record of a table, paging through /_sandbox/records."""
        held: dict[str, dict[str, Any]] = {}
        offset = 0
        while True:
            status, rows = self.get(f"/_sandbox/records?tableCode={table_code}&limit={page}&offset={offset}")
            assert status == 200, rows
            for row in rows:
                assert row["recordKey"] not in held, f"sandbox listed {table_code} {row['recordKey']} twice"
                held[row["recordKey"]] = row
            if len(rows) < page:
                return held
            offset += page

    def receipt(self, batch_id: str) -> dict[str, Any] | None:
        status, body = self.get(f"/api/v1/receipts/{batch_id}")
        return body if status == 200 else None


def read_sandbox_db(path: Path) -> tuple[dict[tuple[str, str], tuple[int, int]], Counter[tuple[str, str, int]]]:
    """From the sandbox's SQLite file: held (table, key) -> (version, applied_count), and arrivals per version."""
    with readonly(path) as conn:
        held = {(t, k): (v, n) for t, k, v, n in conn.execute(
            "SELECT table_code, record_key, version, applied_count FROM held")}
        received = Counter({(t, k, v): n for t, k, v, n in conn.execute(
            "SELECT table_code, record_key, version, count FROM received")})
        received.update({(t, k, v): n for t, k, v, n in conn.execute(  # arrivals of the version held
            "SELECT table_code, record_key, version, received_count FROM held WHERE received_count > 0")})
    return held, received


# ---------------------------------------------------------------- the gateway's store, read-only

@contextlib.contextmanager
def readonly(path: Path) -> Iterator[sqlite3.Connection]:
    """A read-only connection; one snapshot per ``with`` (an explicit read transaction)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=60, isolation_level=None)
    try:
        conn.execute("BEGIN")
        yield conn
        conn.execute("COMMIT")
    finally:
        conn.close()


@dataclass
class StoreView:
    """Read-only questions about the gateway's SQLite store (the daemon may be writing meanwhile)."""

    path: Path

    def exists(self) -> bool:
        return self.path.exists()

    def snapshot(self) -> dict[str, Any]:
        with readonly(self.path) as conn:
            outbox = dict(conn.execute("SELECT state, count(*) FROM cg_outbox GROUP BY state").fetchall())
            batches = dict(conn.execute("SELECT state, count(*) FROM cg_batches GROUP BY state").fetchall())
            retrying = conn.execute(
                "SELECT count(*) FROM cg_batches WHERE state = 'open' AND attempts > 0").fetchone()[0]
            ledger = dict(conn.execute("SELECT dataset, count(*) FROM cg_records GROUP BY dataset").fetchall())
            versions = dict(conn.execute("SELECT version, count(*) FROM cg_records GROUP BY version").fetchall())
            quarantine = dict(conn.execute(
                "SELECT stage, count(*) FROM cg_quarantine WHERE state = 'open' GROUP BY stage").fetchall())
            cursors = {s: json.loads(c) for s, c in conn.execute("SELECT source, cursor FROM cg_watermarks")}
        return {"outbox": outbox, "batches": batches, "open_retrying": retrying, "ledger": ledger,
                "ledger_versions": versions, "quarantine": quarantine, "cursors": cursors,
                "backlog": outbox.get("pending", 0) + outbox.get("leased", 0)}

    def delivered_rows(self) -> dict[str, list[int]]:
        """Department row ids (per table) whose current ledger version is delivered."""
        out: dict[str, list[int]] = {t: [] for t, *_ in SOURCES.values()}
        with readonly(self.path) as conn:
            rows = conn.execute(
                "SELECT r.source, r.source_key FROM cg_records r JOIN cg_outbox o ON o.dataset = r.dataset "
                "AND o.record_key = r.record_key AND o.version = r.version WHERE o.state = 'delivered' "
                "ORDER BY r.id").fetchall()
        for source, key in rows:
            out[SOURCES[source][0]].append(int(key))
        return out

    def batch(self, batch_id: str) -> dict[str, Any] | None:
        with readonly(self.path) as conn:
            conn.row_factory = sqlite3.Row
            row = conn.execute("SELECT id, state, attempts, record_count, last_error FROM cg_batches WHERE id = ?",
                               (batch_id,)).fetchone()
            receipt = conn.execute("SELECT receipt_id FROM cg_receipts WHERE batch_id = ?", (batch_id,)).fetchone()
        if row is None:
            return None
        return {**dict(row), "receipt_id": receipt[0] if receipt else None}

    def ledger(self) -> dict[tuple[str, str], dict[str, Any]]:
        with readonly(self.path) as conn:
            conn.row_factory = sqlite3.Row
            rows = conn.execute("SELECT dataset, record_key, version, operation, content_hash, source, source_key "
                                "FROM cg_records").fetchall()
        return {(r["dataset"], r["record_key"]): dict(r) for r in rows}

    def outbox_by_key(self) -> dict[tuple[str, str], list[tuple[int, str, str | None]]]:
        """(dataset, key) -> [(version, state, batch id)] in outbox order."""
        out: dict[tuple[str, str], list[tuple[int, str, str | None]]] = {}
        with readonly(self.path) as conn:
            for ds, key, version, state, batch in conn.execute(
                    "SELECT dataset, record_key, version, state, batch_id FROM cg_outbox ORDER BY id"):
                out.setdefault((ds, key), []).append((version, state, batch))
        return out

    def receipt_accepts(self) -> Counter[tuple[str, str]]:
        """(table code, key) -> how many 'accepted' results the stored receipts of done batches carry."""
        accepted: Counter[tuple[str, str]] = Counter()
        with readonly(self.path) as conn:
            for dataset, body in conn.execute(
                    "SELECT b.dataset, r.body FROM cg_receipts r JOIN cg_batches b ON b.id = r.batch_id"):
                for result in json.loads(body).get("results") or []:
                    if result.get("status") == "accepted":
                        accepted[(TABLE_CODE[dataset], result["recordKey"])] += 1
        return accepted

    def mapping_quarantine(self) -> set[tuple[str, str]]:
        with readonly(self.path) as conn:
            return set(conn.execute("SELECT source, source_key FROM cg_quarantine "
                                    "WHERE stage = 'mapping' AND state = 'open'").fetchall())

    def target_quarantine(self) -> list[tuple[str, str, str]]:
        with readonly(self.path) as conn:
            return conn.execute("SELECT dataset, record_key, reasons FROM cg_quarantine "
                                "WHERE stage = 'target' AND state = 'open'").fetchall()


# ---------------------------------------------------------------- the department database

def source_heads(department: Path) -> dict[str, list[Any]]:
    """Per source: the (gxsj, id) of the last row in watermark order, as the source's cursor would hold it."""
    heads: dict[str, list[Any]] = {}
    with readonly(department) as conn:
        for source, (table, *_rest) in SOURCES.items():
            row = conn.execute(f"SELECT gxsj, id FROM {table} ORDER BY gxsj DESC, id DESC LIMIT 1").fetchone()
            heads[source] = list(row)
    return heads


@dataclass
class Expected:
    """What the department database says the platform should hold, mapped by the real inbound mappings."""

    valid: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)  # (dataset, key) -> facts
    invalid: set[tuple[str, str]] = field(default_factory=set)  # (source, source_key)
    collisions: list[str] = field(default_factory=list)

    def valid_ids(self, table: str) -> list[int]:
        return sorted(int(v["source_key"]) for v in self.valid.values() if SOURCES[v["source"]][0] == table)


def expected_state(department: Path, today: dt.date) -> Expected:
    expected = Expected()
    with readonly(department) as conn:
        conn.row_factory = sqlite3.Row
        for source, (table, mapping_file, dataset, _code) in SOURCES.items():
            mapping = load_mapping(MAPPINGS / mapping_file)
            assert isinstance(mapping, InboundMapping)
            for row in conn.execute(f"SELECT * FROM {table} ORDER BY id"):
                source_key = str(row["id"])
                mapped = mapping.map_row(dict(row), today, source, source_key)
                if mapped.record is None:
                    expected.invalid.add((source, source_key))
                    continue
                rec = mapped.record
                if (dataset, rec.key) in expected.valid:
                    expected.collisions.append(f"{dataset} {rec.key}: rows "
                                               f"{expected.valid[(dataset, rec.key)]['source_key']} and {source_key}")
                expected.valid[(dataset, rec.key)] = {
                    "source": source, "source_key": source_key, "operation": rec.operation.value,
                    "content_hash": rec.content_hash(), "content": rec.fields.get("content")}
    return expected
