"""End-to-end benchmark: SQLite department table → gateway → platform sandbox on 127.0.0.1.

``make bench`` runs, each in a fresh process so peak memory is the gateway's own:

* throughput at 100,000 and 1,000,000 penalty rows (mapping, validation, store, delivery, receipts):
  records per second from the first poll to the last receipt, and the gateway process's peak RSS;
* latency for a trickle of changes: rows committed one at a time at the source while the daemon runs;
  for each, the time from its source commit to its receipt being stored (p50 / p99).

The sandbox runs as a separate process (it is "the platform", on the other core). Sizes can be changed
with ``--sizes 100000,1000000`` and the trickle with ``--trickle N``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import resource
import secrets
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
TUNING = {"source_batch": 2000, "target_batch": 1000, "in_flight": 3}
WORK = ROOT / ".bench"

CONFIG = """\
[gateway]
instance = "bench"
department_code = "11320500014117422K"
department_name = "苏州市市场监督管理局"

[store]
url = "sqlite:///spool/gateway.db"

[daemon]
log_format = "json"
log_level = "error"
max_concurrency = 8

[sources.penalties]
type = "sql"
url = "sqlite:///department.db"
table = "xzcf"
key_columns = ["id"]
update_column = "gxsj"
mapping = "{mappings}/department-penalty.toml"
poll_interval_s = {poll}
batch_size = {source_batch}

[targets.platform]
type = "credit_platform"
url = "{url}"
token_file = "sandbox.token"
datasets = {{ penalty = "{mappings}/platform-2019-penalty.toml" }}
batch_size = {target_batch}
max_in_flight = {in_flight}
personal_ids = "mask"
"""


@contextlib.contextmanager
def sandbox_process(workdir: Path, token: str) -> Iterator[str]:
    ready = workdir / "sandbox.url"
    (workdir / "sandbox.tok").write_text(token, encoding="utf-8")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.sandbox", "--port", "0", "--token-file", str(workdir / "sandbox.tok"),
         "--db", str(workdir / "sandbox.db"), "--ready-file", str(ready)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the sandbox did not start")
            time.sleep(0.05)
        yield ready.read_text(encoding="utf-8").strip() + "/api/v1/upload"
    finally:
        proc.terminate()
        proc.wait(30)


def prepare(workdir: Path, rows: int, url: str, token: str, poll: float) -> Path:
    from gateway.sampledata import SampleSpec, create_department_db

    (workdir / "spool").mkdir(parents=True, exist_ok=True)
    if rows:
        create_department_db(workdir / "department.db", SampleSpec(licences=0, penalties=rows))
    (workdir / "sandbox.token").write_text(token, encoding="utf-8")
    path = workdir / "config.toml"
    path.write_text(CONFIG.format(mappings=(ROOT / "mappings").as_posix(), url=url, poll=poll, **TUNING),
                    encoding="utf-8")
    return path


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------- one throughput run (own process)

async def _throughput(config_path: Path) -> dict[str, Any]:
    from gateway.config import load_config
    from gateway.daemon import Gateway
    from gateway.logs import setup_logging
    from gateway.store import open_store

    config = load_config(config_path)
    setup_logging(config.daemon.log_level, config.daemon.log_format, config.secrets)
    store = await open_store(config.store_url())
    rss_before = peak_rss_mb()
    try:
        started = time.perf_counter()
        async with Gateway(config, store) as gw:
            done = await gw.run_until_idle(timeout_s=3600)
            stats = gw.workers["platform"].stats
        elapsed = time.perf_counter() - started
        counts = await store.counts()
    finally:
        await store.aclose()
    return {"done": done, "rows": counts["rows_read"], "delivered": stats.delivered, "batches": stats.batches,
            "seconds": elapsed, "rss_mb": peak_rss_mb(), "rss_before_mb": rss_before}


def run_one(rows: int) -> dict[str, Any]:
    workdir = WORK / f"throughput-{rows}"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    token = secrets.token_urlsafe(16)
    # Build the department database in a child process so its memory is not counted as the gateway's.
    subprocess.run([sys.executable, "-m", "gateway.sampledata", str(workdir / "department.db"),
                    "--licences", "0", "--penalties", str(rows)], check=True, stdout=subprocess.DEVNULL)
    with sandbox_process(workdir, token) as url:
        config = prepare(workdir, 0, url, token, poll=5.0)
        out = subprocess.run([sys.executable, "-m", "tests.bench.bench_e2e", "--child", str(config)],
                             check=True, capture_output=True, text=True, cwd=ROOT)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    shutil.rmtree(workdir, ignore_errors=True)
    return result


# ---------------------------------------------------------------- latency for a trickle of changes

async def _trickle(config_path: Path, db: Path, count: int, rate_per_s: float) -> list[float]:
    from gateway.config import load_config
    from gateway.daemon import Gateway
    from gateway.logs import setup_logging
    from gateway.sampledata import insert_rows
    from gateway.store import open_store

    config = load_config(config_path)
    setup_logging(config.daemon.log_level, config.daemon.log_format, config.secrets)
    store = await open_store(config.store_url())
    committed: dict[int, float] = {}
    try:
        async with Gateway(config, store) as gw:
            runner = asyncio.create_task(gw.run())
            for i in range(count):
                ids = await asyncio.to_thread(insert_rows, db, table="xzcf", count=1, seed=10_000 + i,
                                              gxsj=dt.datetime.now(dt.UTC))
                committed[ids[0]] = time.time()
                await asyncio.sleep(1 / rate_per_s)
            await _wait_delivered(store, len(committed))
            gw.stopping.set()
            await runner
    finally:
        await store.aclose()
    return _latencies(config_path.parent / "spool" / "gateway.db", committed)


async def _wait_delivered(store: Any, expected: int) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status = await store.target_status()
        if status and status[0]["delivered"] >= expected and status[0]["backlog"] == 0:
            return
        await asyncio.sleep(0.1)
    raise RuntimeError("the trickle was not delivered in time")


def _latencies(store_db: Path, committed: dict[int, float]) -> list[float]:
    conn = sqlite3.connect(f"file:{store_db}?mode=ro", uri=True)
    rows = conn.execute("""SELECT r.source_key, rc.received_at FROM cg_outbox o
        JOIN cg_records r ON r.dataset = o.dataset AND r.record_key = o.record_key
        JOIN cg_receipts rc ON rc.batch_id = o.batch_id WHERE o.state = 'delivered'""").fetchall()
    conn.close()
    return sorted((received - committed[int(key)]) * 1000 for key, received in rows if int(key) in committed)


def run_trickle(count: int, rate: float) -> dict[str, Any]:
    workdir = WORK / "latency"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    token = secrets.token_urlsafe(16)
    with sandbox_process(workdir, token) as url:
        config = prepare(workdir, 1, url, token, poll=0.1)
        lat = asyncio.run(_trickle(config, workdir / "department.db", count, rate))
    shutil.rmtree(workdir, ignore_errors=True)
    pick = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]  # noqa: E731
    return {"changes": len(lat), "p50_ms": pick(0.5), "p99_ms": pick(0.99), "max_ms": lat[-1]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--trickle", type=int, default=200, help="changes in the latency run")
    parser.add_argument("--rate", type=float, default=20.0, help="changes per second in the latency run")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(asyncio.run(_throughput(Path(args.child)))))
        return 0
    print(f"credit-gateway benchmark on {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    print(f"{'rows':>10} {'seconds':>9} {'records/s':>10} {'peak RSS MB':>12}  batches")
    ok = True
    for size in (int(s) for s in args.sizes.split(",") if s):
        r = run_one(size)
        ok &= bool(r["done"])
        print(f"{r['rows']:>10} {r['seconds']:>9.1f} {r['delivered'] / r['seconds']:>10.0f} {r['rss_mb']:>12.0f}  "
              f"{r['batches']} (delivered {r['delivered']}, done={r['done']})", flush=True)
    if args.trickle:
        t = run_trickle(args.trickle, args.rate)
        print(f"latency, source commit → receipt stored, {t['changes']} changes at {args.rate:g}/s "
              f"(poll interval 0.1 s): p50 {t['p50_ms']:.0f} ms, p99 {t['p99_ms']:.0f} ms, max {t['max_ms']:.0f} ms")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
