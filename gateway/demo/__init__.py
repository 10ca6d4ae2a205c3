"""The end-to-end demo: a sample department database → the gateway → the built-in platform sandbox.

It builds everything in a working directory (sample SQLite database, API token, configuration, store),
starts the sandbox on 127.0.0.1 with a few injected faults (failed requests, dropped connections) so the
retries are visible, runs the gateway until everything valid is delivered and acknowledged, prints a
summary, and checks the sandbox holds exactly the records it should. Then four scenes follow on the same
gateway (gateway.demo.scenes): a credit list arriving, a sanction case answered, a revocation propagated and
a late record reported, each with its check. Exit 0 only when every check holds.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import shutil
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

from gateway.certs import init_dev_pki
from gateway.clock import china_today
from gateway.config import load_config
from gateway.daemon import Gateway
from gateway.demo.scenes import Stage, Verdict, create_department_tables, run_scenes
from gateway.figures import Month
from gateway.files import write_private
from gateway.logs import setup_logging
from gateway.monthly import MonthlyReport, monthly_report
from gateway.report import out, table
from gateway.sandbox.server import Faults, Sandbox, SandboxConfig
from gateway.sealing.evidence import target_evidence, verify_evidence
from gateway.sealing.target import load_sealing
from gateway.store import Store, open_store
from gateway.testing.department_db import SampleResult, SampleSpec, create_department_db
from gateway.xlsx import write_xlsx

CONFIG_TEMPLATE = """\
# Written by `credit-gateway demo`; a real deployment starts from config.example.toml.
[gateway]
instance = "demo"
department_code = "11320500014117422Q"
department_name = "苏州市市场监督管理局"
region_code = "320500"

[store]
url = "sqlite:///spool/gateway.db"

[daemon]
log_format = "text"
log_level = "error"

[lists]
reconcile_interval_s = 0             # the demo compares the lists itself (`lists status`)

[sources.department_penalties]
type = "sql"
url = "sqlite:///department.db"
table = "xzcf"
key_columns = ["id"]
update_column = "gxsj"
mapping = "{mappings}/department-penalty.toml"
poll_interval_s = 5
batch_size = 1000

[sources.department_licences]
type = "sql"
url = "sqlite:///department.db"
table = "xzxk"
key_columns = ["id"]
update_column = "gxsj"
mapping = "{mappings}/department-license.toml"
poll_interval_s = 5
batch_size = 1000

[sources.platform_lists]              # credit lists the platform publishes (signed answers)
type = "platform_lists"
url = "{base}/api/v1"
token_file = "sandbox.token"
mapping = "{mappings}/platform-credit_list.toml"
peer_cert = "certs/rsa/platform.crt"
trusted_cas = ["certs/rsa/ca.crt"]

[sources.platform_cases]              # joint-sanction cases issued to this department (signed pages)
type = "platform_cases"
url = "{base}/api/v1/sanctions/cases"
token_file = "sandbox.token"
mapping = "{mappings}/platform-sanction-case.toml"
peer_cert = "certs/rsa/platform.crt"
trusted_cas = ["certs/rsa/ca.crt"]

[sources.department_feedback]         # what the department did about each case (its own table)
type = "sql"
url = "sqlite:///department.db"
table = "lhjc_fk"
key_columns = ["id"]
update_column = "gxsj"
mapping = "{mappings}/department-sanction-feedback.toml"

[targets.sandbox]
type = "credit_platform"
url = "{base}/api/v1/upload"
token_file = "sandbox.token"
datasets = {{ penalty = "{mappings}/platform-2019-penalty.toml", license = "{mappings}/platform-2019-license.toml", \
sanction_feedback = "{mappings}/platform-sanction-feedback.toml" }}
batch_size = 250
max_in_flight = 2
personal_ids = "mask"
external = true

[targets.sandbox.envelope]            # batches sealed with CMS (signed, AES-256 encrypted); receipts signed
profile = "cms"
key = "certs/rsa/gateway.key"
cert = "certs/rsa/gateway.crt"
peer_cert = "certs/rsa/platform.crt"
trusted_cas = ["certs/rsa/ca.crt"]

[targets.sandbox.retry]
initial_s = 0.1
max_s = 2.0
jitter_s = 0.1
max_attempts = 30

[targets.sandbox.circuit]
failure_threshold = 8
reset_s = 0.5

[targets.department]                  # the department's own database: credit lists and sanction cases
type = "sql"
url = "sqlite:///department.db"
datasets = {{ credit_list = "{mappings}/department-credit_list.toml", \
sanction_case = "{mappings}/department-sanction-case.toml" }}
personal_ids = "full"                 # government-internal: enforcement needs full ID numbers
external = false

[targets.department.tables.credit_list]
table = "dept_credit_list"
key_columns = ["record_key"]

[targets.department.tables.sanction_case]
table = "lhjc_aj"
key_columns = ["ajbh"]

[targets.archive]                     # an internal archive of penalties (2019 columns), a second penalty target
type = "sql"
url = "sqlite:///archive.db"
datasets = {{ penalty = "{mappings}/platform-2019-penalty.toml" }}
external = false

[targets.archive.tables.penalty]
table = "xzcf_archive"
key_columns = ["CF_WSH", "CF_CFJGDM"]

[admin]                               # the admin API and the dashboard (`credit-gateway dashboard`)
port = 8470
[admin.tokens.dashboard]
role = "read"
token_file = "dashboard.token"
"""

DEMO_FAULTS = Faults(error_rate=0.15, drop_rate=0.05, reject_rate=0.005, seed=7)


def mappings_dir() -> Path:
    """The mapping files shipped beside the package (the repository's mappings/)."""
    return Path(__file__).resolve().parents[2] / "mappings"


def prepare(workdir: Path, licences: int, penalties: int) -> tuple[SampleResult, str]:
    """Recreate the demo directory with a sample database and a token; returns the sample and token."""
    if workdir.exists():
        shutil.rmtree(workdir)
    (workdir / "spool").mkdir(parents=True)
    sample = create_department_db(workdir / "department.db", SampleSpec(licences=licences, penalties=penalties))
    token = secrets.token_urlsafe(24)
    write_private(workdir / "sandbox.token", (token + "\n").encode())
    write_private(workdir / "dashboard.token", (secrets.token_urlsafe(24) + "\n").encode())
    init_dev_pki(workdir / "certs", ["rsa"])  # a development CA, the gateway's and the platform's certificates
    create_department_tables(workdir / "department.db", workdir / "archive.db",
                             mappings_dir() / "platform-2019-penalty.toml")
    return sample, token


def write_config(workdir: Path, base: str) -> Path:
    """The demo's configuration; ``base`` is the sandbox's address (upload, list and case APIs below it)."""
    path = workdir / "credit-gateway.toml"
    path.write_text(CONFIG_TEMPLATE.format(base=base, mappings=mappings_dir().as_posix()), encoding="utf-8")
    return path


def run_demo(workdir: Path, licences: int = 1500, penalties: int = 1500) -> int:
    workdir = workdir.resolve()
    out(f"credit-gateway demo in {workdir}")
    sample, token = prepare(workdir, licences, penalties)
    out(f"  sample department database: {sample.licences} licences, {sample.penalties} penalties "
        f"({sum(len(v) for v in sample.invalid.values())} deliberately invalid rows)")
    return asyncio.run(_demo(workdir, sample, token))


async def _demo(workdir: Path, sample: SampleResult, token: str) -> int:
    pki = workdir / "certs" / "rsa"
    sealing, _problems = load_sealing({"profile": "cms", "key": "platform.key", "cert": "platform.crt",
                                       "peer_cert": "gateway.crt", "trusted_cas": ["ca.crt"]}, "sandbox", pki)
    cfg = SandboxConfig(token=token, db_path=str(workdir / "sandbox.db"), faults=DEMO_FAULTS, sealing=sealing)
    async with Sandbox(cfg) as sandbox:
        out(f"  platform sandbox on {sandbox.url} (injecting: 15% failed requests, 5% dropped connections, "
            "0.5% refused records)")
        out("  batches are sealed with CMS (signed + AES-256), the sandbox signs its receipts (certs/rsa)")
        config = load_config(write_config(workdir, sandbox.url))
        setup_logging(config.daemon.log_level, config.daemon.log_format, config.secrets)
        store = await open_store(config.store_url())
        try:
            started = time.monotonic()
            async with Gateway(replace(config, admin=None), store) as gw:  # the dashboard is served afterwards
                done = await gw.run_until_idle(timeout_s=300)
                retries = sum(w.stats.retries for w in gw.workers.values())
                elapsed = time.monotonic() - started
                verdicts = [Verdict("delivered, every valid record held once",
                                    await _summary(store, sandbox, sample, retries, elapsed, done), "see Check above"),
                            Verdict("evidence verified offline", await _check_evidence(store, config, workdir),
                                    "see Evidence above")]
                sandbox.set_faults(replace(DEMO_FAULTS, reject_rate=0.0))
                out()
                out("Then the platform and the department move on (the sandbox still fails 15% of requests and "
                    "drops 5% of connections, but refuses no records on purpose any more):")
                verdicts += await run_scenes(Stage(gw, sandbox, store, config, workdir, sample))
            report = await monthly_report(store, config, Month.of(china_today()))
        finally:
            await store.aclose()
    ok = _verdicts(verdicts, time.monotonic() - started)
    _next_steps(workdir)
    _dashboard(workdir, report)
    return 0 if ok else 1


def _verdicts(verdicts: list[Verdict], elapsed: float) -> bool:
    out()
    out(f"Checks (the gateway ran {elapsed:.1f}s in all)")
    for v in verdicts:
        out(f"  {v.line()}")
    return all(v.ok for v in verdicts)


async def _summary(store: Store, sandbox: Sandbox, sample: SampleResult, retries: int, elapsed: float,
                   done: bool) -> bool:
    counts = await store.reports.counts()
    status = {row["target"]: row for row in await store.reports.target_status()}.get("sandbox", {})
    mapping_q = await store.reports.list_quarantine("open", "mapping", limit=100_000)
    target_q = await store.reports.list_quarantine("open", "target", limit=100_000)
    stats = sandbox.stats()
    batches = await store.reports.list_batches("sandbox", "done", limit=1_000_000)
    out()
    out(f"Summary ({elapsed:.1f}s)")
    table([
        {"step": "read from the department database", "records": counts["rows_read"]},
        {"step": "quarantined by the gateway (reasons below)", "records": len(mapping_q)},
        {"step": "delivered to the platform sandbox", "records": status.get("delivered", 0)
         + status.get("rejected", 0)},
        {"step": "acknowledged (signed-off by receipt)", "records": status.get("delivered", 0)},
        {"step": "rejected by the platform (quarantined)", "records": len(target_q)},
        {"step": "withheld: publicity period already over", "records": status.get("withheld", 0)},
        {"step": "failed (dead letters)", "records": status.get("dead", 0)},
        {"step": "still pending", "records": status.get("backlog", 0)},
    ], ["step", "records"])
    out(f"  {len(batches)} batches with receipts; {retries} retries after injected faults; "
        f"sandbox counted {stats['faults_injected']}")
    _reasons(mapping_q, target_q)
    return _verify(sandbox, sample, status, done, len(target_q))


async def _check_evidence(store: Store, config: Any, workdir: Path) -> bool:
    """Export one delivered batch's evidence and check it offline, as a platform operator would."""
    done = await store.reports.list_batches("sandbox", "done", limit=1)
    if not done:
        return False
    batch = await store.reports.show_batch(done[0]["id"])
    if batch is None:
        return False
    sealing = config.targets["sandbox"].sealing
    path = workdir / "evidence.zip"
    write_private(path, target_evidence(batch, sealing))
    verdict = verify_evidence(path, [(workdir / "certs" / "rsa" / "ca.crt").read_bytes()])
    out(f"Evidence: batch {verdict.batch_id} → {path.name}: "
        + ("sent bytes, results and the platform's receipt signature verified" if verdict.ok else
           "NOT verified: " + "; ".join(n for n, passed, _ in verdict.checks if not passed)))
    return verdict.ok


def _reasons(mapping_q: list[dict[str, Any]], target_q: list[dict[str, Any]]) -> None:
    out()
    out("Quarantine reasons")
    counter: Counter[str] = Counter()
    for entry in mapping_q:
        for r in entry["reasons"]:
            counter[f"gateway   {r['field']}: {_shape(r['message'])}"] += 1
    for entry in target_q:
        for r in entry["reasons"]:
            counter[f"platform  {r.get('code')}: {_shape(r['message'])}"] += 1
    for reason, n in counter.most_common(12):
        out(f"  {n:5}  {reason}")


def _shape(message: str) -> str:
    """A reason without the row-specific values, so equal reasons group together."""
    message = re.sub(r"^(USCC|ID) [0-9A-Za-z*]+: ", r"\1: ", message)
    message = re.sub(r"should be \w, not \w", "is wrong", message)
    message = re.sub(r"\d{4}-\d{2}-\d{2}", "<date>", message)
    return re.sub(r"^\d+ characters, at most", "longer than", message)


def _verify(sandbox: Sandbox, sample: SampleResult, status: dict[str, Any], done: bool, refused: int) -> bool:
    """Every valid row is held by the sandbox exactly once, except those the platform refused and penalties
    whose publicity period was over before they were first read (a public platform never gets those)."""
    # Over-long names ("platform_reject" rows) are caught by the gateway's own length check already.
    valid = sum(len(sample.valid_ids(t)) - _kind_count(sample, t, "platform_reject") for t in ("xzcf", "xzxk"))
    held = {code: len(sandbox.held(code)) for code in ("XZCF", "XZXK")}
    twice = sum(1 for code in held for n in sandbox.applied_counts(code).values() if n != 1)
    withheld = status.get("withheld", 0)
    ok = (done and sum(held.values()) + refused + withheld == valid and twice == 0
          and not status.get("dead") and not status.get("backlog"))
    out()
    out(f"Check: {valid} valid rows; the sandbox holds {held['XZCF']} penalties + {held['XZXK']} licences, "
        f"refused {refused}, withheld {withheld}; records applied more than once: {twice} → "
        + ("OK" if ok else "MISMATCH"))
    return ok


def _kind_count(sample: SampleResult, table_name: str, kind: str) -> int:
    return sum(1 for k in sample.invalid.get(table_name, {}).values() if k == kind)


def _dashboard(workdir: Path, report: MonthlyReport) -> None:
    """Write this month's report and say how to open the dashboard."""
    path = workdir / f"monthly-{report.month}.xlsx"
    write_xlsx(report, path)
    cfg = workdir / "credit-gateway.toml"
    out()
    out(f"Monthly report for {report.month}: {path} ({len(report.sheets)} sheets with charts; "
        f"`credit-gateway -c {cfg} report monthly --month {report.month} --xlsx FILE` makes it again)")
    out(f"Dashboard: .venv/bin/credit-gateway -c {cfg} dashboard, then open http://127.0.0.1:8470/dashboard "
        f"and log in with the token in {workdir / 'dashboard.token'}")


def _next_steps(workdir: Path) -> None:
    cfg = workdir / "credit-gateway.toml"
    out()
    out("Where to look next")
    for cmd, what in (("status", "backlog, delivered, dead letters per target"),
                      ("quarantine list", "every rejected row with its reasons"),
                      ("spool list", "batches, attempts and receipts"),
                      ("spool show BATCH --body", "one batch: attempts, receipt, body"),
                      ("timeliness", "on time / late / at risk (7 working days)"),
                      ("lists status", "credit lists: version and digest at the platform, ledger, department"),
                      ("lists conflicts", "red entries held back by a black-list entry"),
                      ("sanctions", "joint-sanction cases: open, answered, overdue"),
                      ("records changes", "revocations and who confirmed them"),
                      ("certs list", "keys and certificates in use, with expiry")):
        out(f"  .venv/bin/credit-gateway -c {cfg} {cmd:26} # {what}")
    out(f"  .venv/bin/credit-gateway verify {workdir / 'evidence.zip'} --trusted-ca {workdir / 'certs/rsa/ca.crt'}")
