"""End-to-end benchmark: SQLite department table → gateway → platform sandbox on 127.0.0.1.

``make bench`` runs, each in a fresh process so peak memory is the gateway's own:

* throughput at 100,000 and 1,000,000 penalty rows (mapping, validation, store, delivery, receipts):
  records per second from the first poll to the last receipt, and the gateway process's peak RSS;
* latency for a trickle of changes: rows committed one at a time at the source while the daemon runs;
  for each, the time from its source commit to its receipt being stored (p50 / p99);
* the envelope profiles: the first size again with batches signed and encrypted (``cms``: RSA-2048 +
  AES-256; ``sm``: SM2 + SM3 + SM4) and receipts signed and verified, as a share of the unsealed rate;
  and per profile, batch seals, receipt signatures and verifications per second on one core.

The sandbox runs as a separate process (it is "the platform", on the other core). Sizes can be changed
with ``--sizes 100000,1000000``, the trickle with ``--trickle N``, the profiles with ``--profiles cms,sm``.
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
TUNING = {"source_batch": 4000, "target_batch": 2000, "in_flight": 5}
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
external = false
{envelope}"""

ENVELOPE = """
[targets.platform.envelope]
profile = "{profile}"
key = "{pki}/gateway.key"
cert = "{pki}/gateway.crt"
peer_cert = "{pki}/platform.crt"
trusted_cas = ["{pki}/ca.crt"]
"""
PKI_KIND = {"cms": "rsa", "sm": "sm2"}


@contextlib.contextmanager
def sandbox_process(workdir: Path, token: str, profile: str = "none") -> Iterator[str]:
    ready = workdir / "sandbox.url"
    (workdir / "sandbox.tok").write_text(token, encoding="utf-8")
    sealing: list[str] = []
    if profile != "none":
        pki = workdir / "certs" / PKI_KIND[profile]
        sealing = ["--envelope", profile, "--key", str(pki / "platform.key"), "--cert", str(pki / "platform.crt"),
                   "--peer-cert", str(pki / "gateway.crt"), "--trusted-ca", str(pki / "ca.crt")]
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.sandbox", "--port", "0", "--token-file", str(workdir / "sandbox.tok"),
         "--db", str(workdir / "sandbox.db"), "--ready-file", str(ready), *sealing],
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


def prepare(workdir: Path, rows: int, url: str, token: str, poll: float, profile: str = "none") -> Path:
    from gateway.testing.department_db import SampleSpec, create_department_db

    (workdir / "spool").mkdir(parents=True, exist_ok=True)
    if rows:
        create_department_db(workdir / "department.db", SampleSpec(licences=0, penalties=rows))
    (workdir / "sandbox.token").write_text(token, encoding="utf-8")
    path = workdir / "config.toml"
    envelope = "" if profile == "none" else ENVELOPE.format(
        profile=profile, pki=(workdir / "certs" / PKI_KIND[profile]).as_posix())
    path.write_text(CONFIG.format(mappings=(ROOT / "mappings").as_posix(), url=url, poll=poll, envelope=envelope,
                                  **TUNING), encoding="utf-8")
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
        counts = await store.reports.counts()
    finally:
        await store.aclose()
    return {"done": done, "rows": counts["rows_read"], "delivered": stats.delivered, "batches": stats.batches,
            "seconds": elapsed, "rss_mb": peak_rss_mb(), "rss_before_mb": rss_before}


def run_one(rows: int, profile: str = "none") -> dict[str, Any]:
    from gateway.certs import init_dev_pki

    workdir = WORK / f"throughput-{rows}-{profile}"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    token = secrets.token_urlsafe(16)
    if profile != "none":
        init_dev_pki(workdir / "certs", [PKI_KIND[profile]])
    # Build the department database in a child process so its memory is not counted as the gateway's.
    subprocess.run([sys.executable, "-m", "gateway.testing.department_db", str(workdir / "department.db"),
                    "--licences", "0", "--penalties", str(rows)], check=True, stdout=subprocess.DEVNULL)
    with sandbox_process(workdir, token, profile) as url:
        config = prepare(workdir, 0, url, token, poll=5.0, profile=profile)
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
    from gateway.store import open_store
    from gateway.testing.department_db import insert_rows

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
            await _wait_delivered(config_path.parent / "spool" / "gateway.db", committed)
            gw.stopping.set()
            await runner
    finally:
        await store.aclose()
    return _latencies(config_path.parent / "spool" / "gateway.db", committed)


async def _wait_delivered(store_db: Path, committed: dict[int, float]) -> None:
    """Until every trickled row has a stored receipt (the sample's own first row does not count)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if len(await asyncio.to_thread(_latencies, store_db, committed)) >= len(committed):
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


# ---------------------------------------------------------------- signatures per second, per profile

def _rate(fn: Any, min_s: float = 2.0) -> float:
    """Calls per second of ``fn`` over at least ``min_s`` seconds (after one warm-up call)."""
    fn()
    count, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < min_s:
        fn()
        count += 1
    return count / elapsed


def signing_rates(profile: str) -> dict[str, float]:
    """Seals of a 1,000-record batch body, receipt signatures and verifications per second, on one core."""
    from gateway.sealing import get_profile
    from gateway.sealing.base import Credentials, Peer
    from gateway.sealing.pki import make_ca
    from gateway.sealing.signatures import sign_detached, verify_detached

    workdir = WORK / f"signing-{profile}"
    shutil.rmtree(workdir, ignore_errors=True)
    ca = make_ca(workdir, PKI_KIND[profile])
    ours, theirs = ca.issue("gateway"), ca.issue("platform")
    me, peer = Credentials(ours.key_pem, ours.cert_pem), Peer(theirs.cert_pem, (ca.root.cert_pem,))
    record = {"CF_WSH": "苏市监罚〔2026〕1号", "CF_XDR_MC": "苏州某某科技有限公司", "CF_SY": "违反产品质量法" * 20}
    body = json.dumps([dict(record, n=i) for i in range(1000)], ensure_ascii=False).encode()
    receipt = json.dumps({"batchId": "b" * 32, "accepted": 1000, "resultsSha256": "0" * 64}).encode()
    signature = sign_detached(receipt, me)
    env = get_profile(profile)
    rates = {"batch_kb": len(body) / 1024,
             "seals_per_s": _rate(lambda: env.seal(body, me, peer)),
             "signatures_per_s": _rate(lambda: sign_detached(receipt, me)),
             "verifications_per_s": _rate(lambda: verify_detached(receipt, signature, (ca.root.cert_pem,)))}
    shutil.rmtree(workdir, ignore_errors=True)
    return rates


def interpreter() -> str:
    """Which CPython runs the benchmark (and the sandbox): its build moves the figures by 10-20 % (benchmark.md)."""
    maps = Path("/proc/self/maps")
    shared = maps.exists() and "libpython" in maps.read_text(encoding="utf-8", errors="replace")
    return (f"Python {sys.version.split()[0]} at {os.path.realpath(sys.executable)} "
            f"(libpython {'shared' if shared else 'linked in'})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--trickle", type=int, default=200, help="changes in the latency run")
    parser.add_argument("--rate", type=float, default=20.0, help="changes per second in the latency run")
    parser.add_argument("--profiles", default="cms,sm", help="envelope profiles to compare with unsealed")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(asyncio.run(_throughput(Path(args.child)))))
        return 0
    print(f"credit-gateway benchmark on {os.cpu_count()} cores, {interpreter()}")
    print(f"{'rows':>10} {'seconds':>9} {'records/s':>10} {'peak RSS MB':>12}  batches")
    ok = True
    sizes = [int(s) for s in args.sizes.split(",") if s]
    unsealed: dict[int, float] = {}
    for size in sizes:
        r = run_one(size)
        ok &= bool(r["done"])
        unsealed[size] = r["delivered"] / r["seconds"]
        print(f"{r['rows']:>10} {r['seconds']:>9.1f} {unsealed[size]:>10.0f} {r['rss_mb']:>12.0f}  "
              f"{r['batches']} (delivered {r['delivered']}, done={r['done']})", flush=True)
    profiles = [p for p in args.profiles.split(",") if p]
    if profiles and sizes:
        print(f"\nsealed batches, signed receipts ({sizes[0]} rows; share of the unsealed rate)")
        print(f"{'profile':>10} {'seconds':>9} {'records/s':>10} {'peak RSS MB':>12}  share")
        for profile in profiles:
            r = run_one(sizes[0], profile)
            ok &= bool(r["done"])
            rate = r["delivered"] / r["seconds"]
            print(f"{profile:>10} {r['seconds']:>9.1f} {rate:>10.0f} {r['rss_mb']:>12.0f}  "
                  f"{rate / unsealed[sizes[0]]:.0%} (delivered {r['delivered']}, done={r['done']})", flush=True)
        print(f"\n{'profile':>10} {'seal 1000-record batch/s':>25} {'signatures/s':>13} {'verifications/s':>16}")
        for profile in profiles:
            g = signing_rates(profile)
            print(f"{profile:>10} {g['seals_per_s']:>17.1f} ({g['batch_kb']:.0f} KB) {g['signatures_per_s']:>13.0f} "
                  f"{g['verifications_per_s']:>16.0f}", flush=True)
    if args.trickle:
        t = run_trickle(args.trickle, args.rate)
        print(f"latency, source commit → receipt stored, {t['changes']} changes at {args.rate:g}/s "
              f"(poll interval 0.1 s): p50 {t['p50_ms']:.0f} ms, p99 {t['p99_ms']:.0f} ms, max {t['max_ms']:.0f} ms")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
