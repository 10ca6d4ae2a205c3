"""Tests for the `credit-gateway` command line, run as a real process (`python -m gateway …`).

A work directory holds a small department database (SQLite, the local column names of
mappings/department-penalty.toml), a copy of mappings/, a token file and a config. The platform is the
sandbox, started as its own process (`python -m gateway.sandbox`); the gateway delivers to it over
HTTP on 127.0.0.1. Waits are bounded polls on a file or on a command's exit code, never fixed sleeps.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

import orjson
import pytest

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "cli-test-token-5d2e"
ORGAN_USCC = "11230500001755309F"
COMPANY_USCC = "91230500MA1B3N1N2M"
UNKNOWN_CATEGORY = "8"  # not in codes.subject_category of mappings/codes/department-codes.toml
COLUMNS = ("cfjdswh", "xdr_mc", "xdr_lb", "tyshxydm", "fddbr", "fddbr_zjlx", "fddbr_zjhm", "zjlx", "zjhm",
           "wfxwlx", "wfss", "cfyj", "cflb", "cfnr", "fkje", "mswfsd", "zkdxzz", "jdrq", "cfyxq", "gsjzq", "cfjg",
           "cfjgdm", "ly", "sxyzcd", "zt", "bz")


def department_row(n: int, **changes: Any) -> dict[str, Any]:
    """A valid 行政处罚 row of the sample department, in its local columns and codes."""
    row: dict[str, Any] = {
        "cfjdswh": f"苏市监罚〔2024〕{n}号", "xdr_mc": f"苏州示例{n}号科技有限公司", "xdr_lb": "1",
        "tyshxydm": COMPANY_USCC, "fddbr": "张三", "wfxwlx": "未按规定公示年度报告", "wfss": "未按期公示年度报告",
        "cfyj": "《企业信息公示暂行条例》第十八条", "cflb": "03", "cfnr": f"罚款{1000 * n}元", "fkje": str(1000 * n),
        "jdrq": f"2024/03/{n:02d}", "cfyxq": "2024/09/30", "cfjg": "苏州市市场监督管理局", "cfjgdm": ORGAN_USCC,
        "zt": "0",
    }
    row.update(changes)
    return row


ROWS = [department_row(1), department_row(2), department_row(3), department_row(4, xdr_lb=UNKNOWN_CATEGORY)]
VALID = [r for r in ROWS if r["xdr_lb"] != UNKNOWN_CATEGORY]
BAD = [r for r in ROWS if r["xdr_lb"] == UNKNOWN_CATEGORY]

CONFIG = """\
[gateway]
instance = "cli-test"
department_code = "11320500014117422K"
department_name = "苏州市市场监督管理局"

[store]
url = "sqlite:///spool/gateway.db"

[calendar]                            # a stand-in for next year's schedule: `health` fails 30 days before the end
holidays = [2027-01-01]
covered_until = 2027-12-31

[daemon]
log_format = "json"
log_level = "info"
heartbeat_s = 0.2
idle_check_s = 0.2
shutdown_grace_s = 5

[sources.dept]
type = "sql"
url = "sqlite:///department.db"
table = "xzcf"
key_columns = ["id"]
update_column = "gxsj"
mapping = "mappings/department-penalty.toml"
poll_interval_s = 1

[targets.sandbox]
type = "credit_platform"
url = "{url}/api/v1/upload"
token_file = "sandbox.token"
datasets = {{ penalty = "mappings/platform-2019-penalty.toml" }}
external = false                     # the test sandbox link is unsealed

[targets.sandbox.retry]
initial_s = 0.1
max_s = 1.0
jitter_s = 0.05
"""


# ---------------------------------------------------------------- helpers

def cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `python -m gateway ARGS` and return the finished process (bounded by a timeout)."""
    environment = {k: v for k, v in os.environ.items() if k not in ("CG_CONFIG", "CG_SANDBOX_TOKEN")}
    environment.update(env or {})
    return subprocess.run([sys.executable, "-m", "gateway", *args], cwd=cwd, env=environment, capture_output=True,
                          text=True, encoding="utf-8", timeout=120, check=False)


def gw(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m gateway -c WORKDIR/credit-gateway.toml ARGS`."""
    return cli("-c", str(workdir / "credit-gateway.toml"), *args, cwd=workdir)


def write_department_db(path: Path, rows: list[dict[str, Any]]) -> None:
    conn = sqlite3.connect(path)
    try:
        conn.execute(f"CREATE TABLE xzcf (id INTEGER PRIMARY KEY, {', '.join(c + ' TEXT' for c in COLUMNS)}, "
                     "gxsj TEXT NOT NULL)")
        for n, row in enumerate(rows, start=1):
            names = ["id", *row, "gxsj"]
            conn.execute(f"INSERT INTO xzcf ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})",
                         [n, *row.values(), f"2024-04-01 00:00:{n:02d}.000000"])
        conn.commit()
    finally:
        conn.close()


def prepare_workdir(workdir: Path) -> None:
    """Mapping copies, spool directory, token file and department database (no config yet)."""
    shutil.copytree(ROOT / "mappings", workdir / "mappings")
    (workdir / "spool").mkdir()
    (workdir / "sandbox.token").write_text(TOKEN + "\n", encoding="utf-8")
    write_department_db(workdir / "department.db", ROWS)


def write_config(workdir: Path, url: str) -> Path:
    path = workdir / "credit-gateway.toml"
    path.write_text(CONFIG.format(url=url), encoding="utf-8")
    return path


def wait_until(condition: Callable[[], bool], process: subprocess.Popen[Any], what: str, timeout_s: float = 30) -> None:
    """Poll ``condition`` until true; each pause is a bounded wait on ``process``, which must stay alive."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        try:
            code = process.wait(timeout=0.05)
        except subprocess.TimeoutExpired:
            continue
        raise AssertionError(f"{what}: the process exited with {code} first")
    raise AssertionError(f"{what}: not within {timeout_s:g}s")


def stop(process: subprocess.Popen[Any], *streams: IO[Any]) -> int:
    """SIGTERM, bounded wait (kill as a last resort), close the output files; the exit code."""
    try:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
            raise
    finally:
        for stream in streams:
            stream.close()


class SandboxProcess:
    """`python -m gateway.sandbox` serving on a free port until stopped."""

    def __init__(self, workdir: Path) -> None:
        self.ready = workdir / "sandbox.ready"
        self.log = (workdir / "sandbox.log").open("w", encoding="utf-8")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gateway.sandbox", "--port", "0", "--ready-file", str(self.ready),
             "--token-file", str(workdir / "sandbox.token"), "--db", str(workdir / "sandbox.db")],
            cwd=workdir, stdout=self.log, stderr=subprocess.STDOUT)
        try:
            wait_until(lambda: self.ready.exists() and bool(self.ready.read_text().strip()), self.process,
                       "sandbox ready file")
        except BaseException:
            self.stop()
            raise
        self.url = self.ready.read_text().strip()

    def stop(self) -> None:
        stop(self.process, self.log)


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    """A prepared work directory with a running sandbox and a config pointing at it."""
    prepare_workdir(tmp_path)
    sandbox = SandboxProcess(tmp_path)
    write_config(tmp_path, sandbox.url)
    try:
        yield tmp_path
    finally:
        sandbox.stop()


@pytest.fixture(scope="module")
def delivered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, subprocess.CompletedProcess[str]]]:
    """A work directory after `run --until-idle`: valid rows delivered, the bad one quarantined."""
    path = tmp_path_factory.mktemp("delivered")
    prepare_workdir(path)
    sandbox = SandboxProcess(path)
    write_config(path, sandbox.url)
    try:
        yield path, gw(path, "run", "--until-idle", "--timeout", "60")
    finally:
        sandbox.stop()


def parse_table(text: str) -> list[dict[str, str]]:
    """Rows of an aligned text table (columns separated by two or more spaces)."""
    lines = [line for line in text.splitlines() if line.strip()]
    header_at = next(i for i, line in enumerate(lines) if re.match(r"^(target|id|source)\s{2,}", line))
    header = re.split(r"\s{2,}", lines[header_at].strip())
    rows = []
    for line in lines[header_at + 1:]:
        cells = re.split(r"\s{2,}", line.strip())
        if len(cells) != len(header):
            break
        rows.append(dict(zip(header, cells, strict=True)))
    return rows


def key_of(row: dict[str, Any]) -> str:
    return f"{row['cfjdswh']}|{row['cfjgdm']}"


def add_code(codes_file: Path, table: str, code: str, value: str) -> None:
    """Add ``code = value`` to ``[codes.TABLE]`` of a code-table file, as ops would by hand."""
    text = codes_file.read_text(encoding="utf-8")
    head = f"[codes.{table}]"
    assert head in text
    start = text.index(head)
    line_end = text.index("\n", start)
    codes_file.write_text(text[:line_end + 1] + f'"{code}" = "{value}"\n' + text[line_end + 1:], encoding="utf-8")


# ---------------------------------------------------------------- check

class TestCheck:
    def test_good_config(self, tmp_path: Path) -> None:
        """`check` exits 0 on a good config and names its sources and targets."""
        prepare_workdir(tmp_path)
        path = write_config(tmp_path, "http://127.0.0.1:9")
        result = cli("-c", str(path), "check", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert f"{path}: OK" in result.stdout
        assert "dept" in result.stdout and "sandbox" in result.stdout

    def test_config_from_environment_variable(self, tmp_path: Path) -> None:
        """Without -c, $CG_CONFIG names the config file."""
        prepare_workdir(tmp_path)
        path = write_config(tmp_path, "http://127.0.0.1:9")
        result = cli("check", cwd=ROOT, env={"CG_CONFIG": str(path)})
        assert result.returncode == 0, result.stderr
        assert str(path) in result.stdout

    def test_bad_config_lists_every_problem_with_its_path(self, tmp_path: Path) -> None:
        """`check` exits 2 and prints every problem on its own line, with its TOML path."""
        prepare_workdir(tmp_path)
        path = write_config(tmp_path, "ftp://127.0.0.1:9")
        text = path.read_text(encoding="utf-8")
        path.write_text("[bogus]\nx = 1\n" + text.replace("heartbeat_s = 0.2", "heartbeat_s = 0.2\nmax_concurency = 2")
                        .replace("poll_interval_s = 1", 'poll_interval_s = "often"'), encoding="utf-8")
        result = cli("-c", str(path), "check", cwd=tmp_path)
        assert result.returncode == 2
        for where in ("bogus", "daemon.max_concurency", "targets.sandbox.url", "sources.dept.poll_interval_s"):
            assert re.search(rf"^\s+- {re.escape(where)}: ", result.stderr, re.MULTILINE), where
        assert str(path) in result.stderr
        assert "Traceback" not in result.stderr

    def test_store_password_is_not_printed(self, tmp_path: Path) -> None:
        """`check` shows the store URL without its password, and so does a store error of another command."""
        prepare_workdir(tmp_path)
        path = write_config(tmp_path, "http://127.0.0.1:9")
        path.write_text(path.read_text(encoding="utf-8").replace(
            "sqlite:///spool/gateway.db", "postgresql://gw:pw-5e1f9@127.0.0.1:9/gw"), encoding="utf-8")
        checked = cli("-c", str(path), "check", cwd=tmp_path)
        assert checked.returncode == 0, checked.stderr
        assert "pw-5e1f9" not in checked.stdout and "postgresql://gw:***@127.0.0.1:9/gw" in checked.stdout
        status = cli("-c", str(path), "status", cwd=tmp_path)
        assert status.returncode == 1 and "pw-5e1f9" not in status.stdout + status.stderr, status.stderr

    def test_missing_config_file(self, tmp_path: Path) -> None:
        """A config file that does not exist is a configuration error (exit 2) naming it."""
        result = cli("-c", str(tmp_path / "absent.toml"), "check", cwd=tmp_path)
        assert result.returncode == 2
        assert "absent.toml" in result.stderr and "not found" in result.stderr


# ---------------------------------------------------------------- mapping test

def write_sample(path: Path, rows: list[dict[str, Any]], encoding: str = "utf-8") -> Path:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    path.write_bytes(buffer.getvalue().encode(encoding))
    return path


def mapping_test(sample: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return cli("mapping", "test", "mappings/department-penalty.toml", "--sample", str(sample), "--today", "2024-06-01",
               *extra, cwd=ROOT)


def json_lines(text: str) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in text.splitlines() if line.startswith("{")]


    def test_a_source_without_lookback_is_warned_about(self, tmp_path: Path) -> None:
        """`check` warns of `lookback_s = 0` (late commits then wait for the audit); the default gets no warning."""
        prepare_workdir(tmp_path)
        path = write_config(tmp_path, "http://127.0.0.1:9")
        assert "lookback_s" not in cli("-c", str(path), "check", cwd=tmp_path).stdout
        path.write_text(path.read_text(encoding="utf-8").replace('update_column = "gxsj"\n',
                                                                 'update_column = "gxsj"\nlookback_s = 0\n'))
        result = cli("-c", str(path), "check", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert "warning  sources.dept.lookback_s = 0: a row committed with a gxsj at or before the watermark" \
            in result.stdout


class TestSourcesAudit:
    def test_audit_recovers_a_late_commit_and_status_shows_it(
            self, delivered: tuple[Path, subprocess.CompletedProcess[str]], tmp_path: Path) -> None:
        """`sources audit` takes in an edit dated a month behind the watermark; `status` and `--json` count it."""
        workdir = tmp_path / "work"
        shutil.copytree(delivered[0], workdir)
        with contextlib.closing(sqlite3.connect(workdir / "department.db")) as conn, conn:
            conn.execute("UPDATE xzcf SET fkje = '777700', gxsj = '2024-03-01 00:00:00.000000' WHERE id = 1")
        first = gw(workdir, "sources", "audit", "--json")
        assert first.returncode == 0, first.stderr
        [found] = orjson.loads(first.stdout)
        assert (found["source"], found["rows"], found["reread"], found["recovered"]) == ("dept", 1, 1, 1)
        again = gw(workdir, "sources", "audit", "--source", "dept")
        assert again.returncode == 0, again.stderr
        assert [(r["re-read"], r["recovered"]) for r in parse_table(again.stdout)] == [("0", "0")]
        status = gw(workdir, "status")
        assert "source dept: look-back found 0 late row(s); audited" in status.stdout
        assert "(1 by all audits)" in status.stdout
        audits = orjson.loads(gw(workdir, "status", "--json").stdout)["audits"]
        assert (audits["dept"]["recovered"], audits["dept"]["recovered_total"]) == (0, 1)
        backlog = next(r for r in parse_table(status.stdout) if r["target"] == "sandbox")["backlog"]
        assert backlog == "1"

    def test_an_unknown_source_is_a_config_error(self, delivered: tuple[Path, subprocess.CompletedProcess[str]]
                                                ) -> None:
        """`sources audit --source NAME` names the sources there are."""
        result = gw(delivered[0], "sources", "audit", "--source", "nope")
        assert result.returncode == 2
        assert "no source 'nope'; sources: dept" in result.stderr


class TestMappingTest:
    def test_good_rows_print_mapped_json(self, tmp_path: Path) -> None:
        """Each good row prints one JSON line with its line number, key and canonical fields; exit 0."""
        sample = write_sample(tmp_path / "rows.csv", VALID)
        result = mapping_test(sample)
        assert result.returncode == 0, result.stdout + result.stderr
        lines = json_lines(result.stdout)
        assert [line["line"] for line in lines] == list(range(2, 2 + len(VALID)))
        for line, row in zip(lines, VALID, strict=True):
            assert line["key"] == key_of(row)
            assert line["operation"] == "upsert"
            assert Decimal(line["fields"]["fine_wan"]) == Decimal(row["fkje"]) / 10000
            assert line["fields"]["decision_no"] == row["cfjdswh"]

    def test_bad_rows_print_line_field_message(self, tmp_path: Path) -> None:
        """A bad row prints `line N: field: message` for each problem and the command exits 1."""
        rows = [VALID[0], department_row(9, jdrq="2024-13-01", tyshxydm=COMPANY_USCC[:-1] + "X"), VALID[1]]
        result = mapping_test(write_sample(tmp_path / "rows.csv", rows))
        assert result.returncode == 1
        bad_line = 3  # header is line 1, rows[1] is line 3
        assert re.search(rf"^line {bad_line}: decision_date: .*2024-13-01", result.stdout, re.MULTILINE)
        assert re.search(rf"^line {bad_line}: uscc: ", result.stdout, re.MULTILINE)
        assert [line["line"] for line in json_lines(result.stdout)] == [2, 4]

    @pytest.mark.parametrize("number", ["110105194912310021", "11010519491231OO2X", "110105491231002",
                                        "1101051949123100210", "110105 19491231 002X"])
    def test_a_malformed_id_number_is_masked_in_the_problem(self, tmp_path: Path, number: str) -> None:
        """Wrong check character, letter O, 15 or 19 digits, spaces: the problem shows it masked (issue 17, 7)."""
        person = department_row(9, xdr_lb="2", xdr_mc="王五", tyshxydm="", fddbr="", zjlx="01", zjhm=number)
        result = mapping_test(write_sample(tmp_path / "rows.csv", [person]))
        assert result.returncode == 1 and re.search(r"^line 2: id_no: ID ", result.stdout, re.MULTILINE)
        assert number not in result.stdout and number[6:14] not in result.stdout

    def test_a_passport_number_of_a_valid_row_is_masked(self, tmp_path: Path) -> None:
        """A valid row's ID fields are printed masked too, whatever their shape (a passport number)."""
        person = department_row(9, xdr_lb="2", xdr_mc="John Smith", tyshxydm="", fddbr="", zjlx="02",
                                zjhm="E12345678")
        result = mapping_test(write_sample(tmp_path / "rows.csv", [person]))
        assert result.returncode == 0, result.stdout
        assert json_lines(result.stdout)[0]["fields"]["id_no"] == "E1*****78" and "E12345678" not in result.stdout

    def test_unknown_code_is_reported_with_its_table(self, tmp_path: Path) -> None:
        """The quarantined kind of row (unknown 类别 code) shows the code table in the message."""
        result = mapping_test(write_sample(tmp_path / "rows.csv", BAD))
        assert result.returncode == 1
        assert re.search(r"^line 2: subject_category: .*subject_category", result.stdout, re.MULTILINE)

    def test_gbk_csv_gives_a_clear_error(self, tmp_path: Path) -> None:
        """A GBK file read as UTF-8 names the file, line and byte, and suggests --encoding gbk (exit 2)."""
        sample = write_sample(tmp_path / "rows-gbk.csv", VALID, encoding="gbk")
        data = sample.read_bytes()
        first = data.index(VALID[0]["cfjdswh"][0].encode("gbk"))
        result = mapping_test(sample)
        assert result.returncode == 2
        assert "rows-gbk.csv" in result.stderr
        assert "line 2" in result.stderr
        assert f"byte {first}" in result.stderr
        assert "--encoding gbk" in result.stderr
        assert "Traceback" not in result.stderr

    def test_gbk_csv_with_encoding_option(self, tmp_path: Path) -> None:
        """With --encoding gbk, the GBK file maps exactly like its UTF-8 twin."""
        utf8 = mapping_test(write_sample(tmp_path / "rows.csv", ROWS))
        gbk = mapping_test(write_sample(tmp_path / "rows-gbk.csv", ROWS, encoding="gbk"), "--encoding", "gbk")
        assert gbk.returncode == utf8.returncode == 1
        assert gbk.stdout == utf8.stdout
        assert len(json_lines(gbk.stdout)) == len(VALID)

    def test_today_option_decides_what_is_in_the_future(self, tmp_path: Path) -> None:
        """--today is the validation date: a decision on 2024-06-02 is in the future on 2024-06-01 only."""
        sample = write_sample(tmp_path / "rows.csv", [department_row(1, jdrq="2024/06/02")])
        assert mapping_test(sample).returncode == 1
        later = cli("mapping", "test", "mappings/department-penalty.toml", "--sample", str(sample), "--today",
                    "2024-06-02", cwd=ROOT)
        assert later.returncode == 0, later.stdout

    def test_line_numbers_count_multi_line_cells(self, tmp_path: Path) -> None:
        """A quoted cell spanning two lines shifts the next row: errors name the file line where the row is."""
        rows = [department_row(1, wfss="未按期公示\n年度报告"), department_row(2, jdrq="2024-13-01")]
        sample = write_sample(tmp_path / "rows.csv", rows)
        physical = sample.read_text(encoding="utf-8").splitlines()
        bad_line = next(i for i, line in enumerate(physical, start=1) if "2024-13-01" in line)
        result = mapping_test(sample)
        assert re.search(rf"^line {bad_line}: decision_date: ", result.stdout, re.MULTILINE), result.stdout


# ---------------------------------------------------------------- store commands

class TestStoreCommands:
    def test_run_until_idle_succeeds(self, delivered: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
        """`run --until-idle` drains the source, delivers everything and exits 0."""
        _, run = delivered
        assert run.returncode == 0, run.stderr

    def test_status(self, delivered: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
        """`status` shows the rows read and, per target, what was delivered and what is left."""
        workdir, _ = delivered
        result = gw(workdir, "status")
        assert result.returncode == 0, result.stderr
        assert f"rows read {len(ROWS)}" in result.stdout
        row = next(r for r in parse_table(result.stdout) if r["target"] == "sandbox")
        assert (int(row["delivered"]), int(row["backlog"]), int(row["dead"])) == (len(VALID), 0, 0)

    def test_status_json(self, delivered: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
        """`status --json` prints the same figures as JSON."""
        workdir, _ = delivered
        result = gw(workdir, "status", "--json")
        assert result.returncode == 0, result.stderr
        status = orjson.loads(result.stdout)
        target = next(t for t in status["targets"] if t["target"] == "sandbox")
        assert (target["delivered"], target["backlog"]) == (len(VALID), 0)
        assert status["counts"]["rows_read"] == len(ROWS)

    def test_spool_list(self, delivered: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
        """`spool list` shows done batches that together carry every valid row."""
        workdir, _ = delivered
        result = gw(workdir, "spool", "list")
        assert result.returncode == 0, result.stderr
        batches = parse_table(result.stdout)
        assert batches and all(b["target"] == "sandbox" and b["state"] == "done" for b in batches)
        assert sum(int(b["record_count"]) for b in batches) == len(VALID)

    def test_spool_show(self, delivered: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
        """`spool show BATCH` prints the batch with its receipt; an unknown batch exits 1."""
        workdir, _ = delivered
        batch = parse_table(gw(workdir, "spool", "list").stdout)[0]["id"]
        shown = gw(workdir, "spool", "show", batch)
        assert shown.returncode == 0, shown.stderr
        assert batch in shown.stdout and "receipt:" in shown.stdout
        assert gw(workdir, "spool", "show", "b-nosuchbatch").returncode == 1

    def test_quarantine_list(self, delivered: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
        """`quarantine list` shows the bad row with its key and the reason naming field and code."""
        workdir, _ = delivered
        result = gw(workdir, "quarantine", "list")
        assert result.returncode == 0, result.stderr
        entries = parse_table(result.stdout)
        assert [e["key"] for e in entries] == [key_of(r) for r in BAD]
        assert entries[0]["stage"] == "mapping" and entries[0]["where"] == "dept"
        assert "subject_category" in entries[0]["reasons"] and f"'{UNKNOWN_CATEGORY}'" in entries[0]["reasons"]

    def test_quarantine_show(self, delivered: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
        """`quarantine show ID` prints the entry as JSON, with the raw source row kept for replay."""
        workdir, _ = delivered
        entry = parse_table(gw(workdir, "quarantine", "list").stdout)[0]["id"]
        result = gw(workdir, "quarantine", "show", entry)
        assert result.returncode == 0, result.stderr
        shown = orjson.loads(result.stdout)
        assert shown["raw"]["xdr_lb"] == UNKNOWN_CATEGORY
        assert shown["raw"]["cfjdswh"] == BAD[0]["cfjdswh"]

    def test_store_directory_missing(self, workdir: Path) -> None:
        """Without spool/, either `run` creates the store directory or `check` already refuses store.url."""
        shutil.rmtree(workdir / "spool")
        check = gw(workdir, "check")
        run = gw(workdir, "run", "--until-idle", "--timeout", "60")
        assert run.returncode == 0 or (check.returncode == 2 and "store.url" in check.stderr), \
            f"check exit {check.returncode}, run exit {run.returncode}: {run.stderr.strip()}"

    def test_health_when_the_daemon_never_ran(self, delivered: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
        """`health` exits 1 and says so when no daemon of this instance ever ran."""
        workdir, _ = delivered
        result = gw(workdir, "health")
        assert result.returncode == 1
        assert "cli-test" in result.stdout and "never run" in result.stdout


# ---------------------------------------------------------------- quarantine replay

class TestQuarantineReplay:
    def test_replay_without_a_fix_keeps_the_entry(self, workdir: Path) -> None:
        """Replaying before the mapping is fixed fails again (exit 1) and the entry stays open."""
        assert gw(workdir, "run", "--until-idle", "--timeout", "60").returncode == 0
        result = gw(workdir, "quarantine", "replay", "--all")
        assert result.returncode == 1
        assert [e["key"] for e in parse_table(gw(workdir, "quarantine", "list").stdout)] == [key_of(r) for r in BAD]

    def test_replay_after_fixing_the_code_table(self, workdir: Path) -> None:
        """After ops add code '8' to the code table, replay re-maps the stored row: resolved, queued, delivered."""
        assert gw(workdir, "run", "--until-idle", "--timeout", "60").returncode == 0
        entry = parse_table(gw(workdir, "quarantine", "list").stdout)[0]["id"]
        add_code(workdir / "mappings" / "codes" / "department-codes.toml", "subject_category", UNKNOWN_CATEGORY,
                 "法人及非法人组织")
        replay = gw(workdir, "quarantine", "replay", "--all")
        assert replay.returncode == 0, replay.stdout + replay.stderr
        assert parse_table(gw(workdir, "quarantine", "list").stdout) == []
        resolved = parse_table(gw(workdir, "quarantine", "list", "--state", "resolved").stdout)
        assert [e["id"] for e in resolved] == [entry]
        queued = next(r for r in parse_table(gw(workdir, "status").stdout) if r["target"] == "sandbox")
        assert int(queued["backlog"]) == len(BAD)
        assert gw(workdir, "run", "--until-idle", "--timeout", "60").returncode == 0
        done = next(r for r in parse_table(gw(workdir, "status").stdout) if r["target"] == "sandbox")
        assert (int(done["delivered"]), int(done["backlog"])) == (len(ROWS), 0)


# ---------------------------------------------------------------- the daemon

class TestVersion:
    def test_version(self, tmp_path: Path) -> None:
        """`credit-gateway --version` prints the installed version, with no config needed."""
        from importlib.metadata import version
        done = cli("--version", cwd=tmp_path)
        assert (done.returncode, done.stdout.strip()) == (0, f"credit-gateway {version('credit-gateway')}")


class TestDaemon:
    def test_runs_until_sigterm_with_json_logs(self, workdir: Path) -> None:
        """`run` is healthy while it runs, stops on SIGTERM with exit 0, and logs JSON lines."""
        log_path = workdir / "daemon.log"
        log = log_path.open("w", encoding="utf-8")
        daemon = subprocess.Popen([sys.executable, "-m", "gateway", "-c", str(workdir / "credit-gateway.toml"), "run"],
                                  cwd=workdir, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until(lambda: gw(workdir, "health").returncode == 0, daemon, "health", timeout_s=60)
        finally:
            code = stop(daemon, log)
        assert code == 0, log_path.read_text(encoding="utf-8")
        lines = [line for line in log_path.read_text(encoding="utf-8").splitlines() if line.strip()]
        events = [orjson.loads(line) for line in lines]  # every line is one JSON object
        names = [e["event"] for e in events]
        assert "gateway started" in names and names[-1] == "gateway stopped"
        assert all({"ts", "level", "logger", "event"} <= e.keys() for e in events)
        after = gw(workdir, "health")
        assert after.returncode == 1
        assert "stopped" in after.stdout


    def test_a_second_daemon_on_the_same_store_is_refused(self, workdir: Path) -> None:
        """While one daemon runs on a SQLite store, a second `run` (or `run --until-idle`) exits 1 at once naming the
        running one's PID; after the first stops (even killed) the store can be taken again."""
        log = (workdir / "daemon.log").open("w", encoding="utf-8")
        first = subprocess.Popen([sys.executable, "-m", "gateway", "-c", str(workdir / "credit-gateway.toml"), "run"],
                                 cwd=workdir, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until(lambda: gw(workdir, "health").returncode == 0, first, "health", timeout_s=60)
            for args in (["run"], ["run", "--until-idle", "--timeout", "30"]):
                second = gw(workdir, *args)
                assert second.returncode == 1, second.stdout + second.stderr
                assert f"another gateway (pid {first.pid}) is running on the store" in second.stderr
        finally:
            first.kill()  # SIGKILL: the kernel releases the lock with the process
            first.wait(timeout=30)
            log.close()
        again = gw(workdir, "run", "--until-idle", "--timeout", "60")
        assert again.returncode == 0, again.stdout + again.stderr


class TestSighup:
    def test_reload_good_and_bad(self, workdir: Path) -> None:
        """SIGHUP with a broken configuration is refused (logged, the daemon goes on as it was); with a good one the
        pipeline restarts on it in the same process (here: a new instance name, whose heartbeat then appears)."""
        config = workdir / "credit-gateway.toml"
        good = config.read_text(encoding="utf-8")
        log_path = workdir / "daemon.log"
        log = log_path.open("w", encoding="utf-8")
        daemon = subprocess.Popen([sys.executable, "-m", "gateway", "-c", str(config), "run"],
                                  cwd=workdir, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until(lambda: gw(workdir, "health").returncode == 0, daemon, "health", timeout_s=60)
            config.write_text(good.replace('table = "xzcf"', 'table = "x; drop"'), encoding="utf-8")
            daemon.send_signal(signal.SIGHUP)
            wait_until(lambda: "reload refused" in log_path.read_text(encoding="utf-8"), daemon, "the refusal")
            assert "sources.dept.table" in log_path.read_text(encoding="utf-8")
            config.write_text(good, encoding="utf-8")
            assert gw(workdir, "health").returncode == 0  # still the same daemon, still running
            config.write_text(good.replace('instance = "cli-test"', 'instance = "cli-test-reloaded"'),
                              encoding="utf-8")
            daemon.send_signal(signal.SIGHUP)
            wait_until(lambda: "configuration reloaded" in log_path.read_text(encoding="utf-8"), daemon, "the reload")
            wait_until(lambda: gw(workdir, "health").returncode == 0, daemon, "health after the reload", timeout_s=60)
            assert daemon.poll() is None
        finally:
            code = stop(daemon, log)
        assert code == 0, log_path.read_text(encoding="utf-8")


class TestBrokenMappingEdit:
    def test_read_only_commands_survive_a_broken_mapping(self, workdir: Path) -> None:
        """After a broken edit of a mapping file the running daemon keeps its version; `health` still says healthy
        and the read-only commands still answer (exit 0, with a warning naming the file); `check` still fails."""
        log_path = workdir / "daemon.log"
        log = log_path.open("w", encoding="utf-8")
        config = workdir / "credit-gateway.toml"
        config.write_text(config.read_text(encoding="utf-8").replace("shutdown_grace_s = 5",
                                                                     "shutdown_grace_s = 5\nreload_check_s = 0.2"),
                          encoding="utf-8")
        daemon = subprocess.Popen([sys.executable, "-m", "gateway", "-c", str(config), "run"],
                                  cwd=workdir, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until(lambda: gw(workdir, "health").returncode == 0, daemon, "health", timeout_s=60)
            mapping = workdir / "mappings" / "department-penalty.toml"
            mapping.write_text(mapping.read_text(encoding="utf-8") + "\n[fields.bogus\n", encoding="utf-8")
            wait_until(lambda: "mapping refused" in log_path.read_text(encoding="utf-8"), daemon, "the refusal")
            health = gw(workdir, "health")
            assert health.returncode == 0 and "healthy" in health.stdout, health.stdout + health.stderr
            for command in (["status"], ["status", "--json"], ["quarantine", "list"], ["records", "changes"],
                            ["spool", "list"], ["timeliness"], ["sanctions"], ["publicity"], ["certs", "list"],
                            ["lists", "conflicts"]):
                done = gw(workdir, *command)
                assert done.returncode == 0, (command, done.stderr)
                assert "warning: sources.dept.mapping" in done.stderr and "department-penalty.toml" in done.stderr
            assert gw(workdir, "check").returncode == 2
            assert gw(workdir, "quarantine", "replay", "--all").returncode == 2  # maps rows: needs every mapping
        finally:
            code = stop(daemon, log)
        assert code == 0, log_path.read_text(encoding="utf-8")
