"""The built-in credit-platform sandbox: a real aiohttp server that behaves like the city/provincial
public credit platform's upload API (modelled on the Suzhou 数据上报接口: tableCode / departmentCode /
body; answer errorCode / errorMsg / totalSize / successSize / failSize).

Protocol (JSON over HTTP; every endpoint but ``/healthz`` needs ``Authorization: Bearer <token>``,
else 401 ``{"errorCode": "401", ...}``)::

    POST /api/v1/upload          Content-Type: application/json (else 415), Idempotency-Key: <batchId>
        {"batchId", "tableCode": "XZCF"|"XZXK", "departmentCode", "tableVersionId",
         "records": [{"recordKey", "version", "operation": upsert|revoke|object|withdraw, "data": {...}}]}
      400 whole-batch errors, no results: 5001 JSON解析失败; 3001/3002 tableCode empty/unknown;
          4001/4002 departmentCode empty/not registered; 6001 records empty; 6002 not a list/object
      413 body over max_body_bytes;  409 an Idempotency-Key (or batchId) reused with a different body
      200 {"errorCode": "200", "errorMsg": "成功", "batchId", "totalSize", "successSize", "failSize",
           "results": [{"recordKey", "version", "status", "errorCode", "errorMsg"}], "receipt": {...}}
    GET  /api/v1/receipts/{batchId}    the stored receipt
    GET|POST /_sandbox/faults    read / change the injected faults (POST takes any Faults fields)
    GET  /_sandbox/stats         counters since start, held records per table, faults injected
    GET  /_sandbox/records?tableCode=&limit=&offset=   held records with applied/received counts
    GET  /_sandbox/records/{tableCode}/{recordKey}     one held record (recordKey URL-encoded)
    POST /_sandbox/reset         forget records, batches, receipts and counters (faults stay)
    GET  /api/v1/sanctions/cases, POST /_sandbox/sanctions/cases, GET /_sandbox/sanctions
                                 joint-sanction cases and their feedback (table LHJC_FK): gateway.sandbox.sanctions
    POST /_sandbox/push          push a list snapshot or delta, or cases, to a gateway's inbound channel
                                 (gateway.sandbox.push)
    GET  /healthz                {"ok": true}

Record status: ``accepted`` (newer than the held version: applied), ``duplicate`` (same version: not
stored again), ``stale`` (older: ignored) -- all three count as success -- or ``rejected`` with
errorCode 7001 必填字段为空 (upsert only), 7002 字段超长, 7003 统一社会信用代码校验失败, 7004 日期格式错误
(YYYY-MM-DD), 7005 记录主键缺失, 7006 版本号无效, 7007 操作类型无效, 7008 数据格式错误, 7099 模拟拒收,
7009 记录不存在 (a revoke/object/withdraw of version 2 or later without the whole record, for a record the
platform does not hold).
A replayed batch gets the stored response byte for byte and applies nothing. Field lengths are the
observed ones of domain.md §1.2; XK_* use the same lengths as their CF_* counterparts.

Faults (``Faults``; set at start, by ``Sandbox.set_faults`` or ``POST /_sandbox/faults``) act on uploads
only, in this order: delay, error (before anything), timeout (hang, then close unanswered), then after
the commit drop (close unanswered), fail-after-commit (500) or garble (200 with an HTML page, not JSON). The
last three also hit replayed answers, so a client meets them on retries too. Random draws come from
``random.Random(seed)``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import logging
import math
import os
import random
import signal
import sys
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, TypeVar

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from gateway.errors import ConfigError, Problem
from gateway.sandbox.lists import ListPlatform, add_list_routes
from gateway.sandbox.platform import TABLES, Outcome, Platform, SandboxStore, error_body
from gateway.sandbox.push import PushDesk
from gateway.sandbox.sanctions import SanctionsDesk
from gateway.sealing.base import Credentials, EnvelopeError
from gateway.sealing.signatures import sign_detached
from gateway.sealing.target import Sealing, load_sealing
from gateway.tuning import tune_process

log = logging.getLogger("gateway.sandbox")

T = TypeVar("T")

_RATES = ("error_rate", "reject_rate", "timeout_rate", "drop_rate", "fail_after_commit_rate", "garble_rate")
_STAT_NAMES = ("batches", "requests", "records_received", "accepted", "duplicate", "stale", "rejected",
               "replayed", "conflicts", "refused")
_FAULT_NAMES = ("delay", "error", "timeout", "drop", "fail_after_commit", "garble", "reject")


@dataclass(frozen=True)
class Faults:
    """Faults injected on demand; the defaults inject none. Rates are fractions (0..1) of requests."""

    error_rate: float = 0.0  # answered error_status before doing anything
    error_status: int = 503
    retry_after_s: float | None = None  # sent as Retry-After on 429/503 fault answers
    reject_rate: float = 0.0  # valid records refused with 7099, decided from recordKey+version+seed
    timeout_rate: float = 0.0  # hang for timeout_s, then close without answering
    timeout_s: float = 60.0
    delay_s: float = 0.0  # every upload waits this long first
    drop_rate: float = 0.0  # commit the batch, then close without answering
    fail_after_commit_rate: float = 0.0  # commit the batch, then answer 500
    garble_rate: float = 0.0  # commit the batch, then answer 200 with a body that is not JSON (a proxy's page)
    seed: int = 0

    def __post_init__(self) -> None:
        problems = [Problem(name, "expected a fraction from 0 to 1") for name in _RATES
                    if not 0 <= getattr(self, name) <= 1]
        if not (self.error_status == 429 or 500 <= self.error_status <= 599):
            problems.append(Problem("error_status", "expected 429 or a 5xx status"))
        for name in ("timeout_s", "delay_s", "retry_after_s"):
            value = getattr(self, name)
            if value is not None and value < 0:
                problems.append(Problem(name, "expected a non-negative number of seconds"))
        if problems:
            raise ConfigError(problems, source="sandbox faults")


def faults_from_json(base: Faults, changes: Mapping[str, Any]) -> Faults:
    """``base`` with the fields named in ``changes`` (a JSON object) replaced; ConfigError names bad ones."""
    names = [f.name for f in fields(Faults)]
    problems: list[Problem] = []
    values: dict[str, Any] = {}
    for name, value in changes.items():
        if name not in names:
            problems.append(Problem(name, f"unknown fault; known: {', '.join(names)}"))
            continue
        try:
            values[name] = _fault_value(name, value)
        except TypeError:
            problems.append(Problem(name, f"expected a number, got {value!r}"))
    if problems:
        raise ConfigError(problems, source="sandbox faults")
    return replace(base, **values)


def _fault_value(name: str, value: Any) -> int | float | None:
    """``value`` as the type of the fault field ``name``; TypeError when it is not one."""
    if value is None and name == "retry_after_s":
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(name)
    if name in ("error_status", "seed"):
        if not isinstance(value, int):
            raise TypeError(name)
        return value
    return float(value)


@dataclass(frozen=True, kw_only=True)
class SandboxConfig:
    """Everything the sandbox needs, fixed at start (faults can change at run time)."""

    host: str = "127.0.0.1"
    port: int = 0  # 0 = pick a free port
    token: str
    db_path: str = ":memory:"
    departments: tuple[str, ...] = ()  # registered department codes; empty = accept any
    platform_name: str = "sandbox"
    max_body_bytes: int = 32 * 1024 * 1024
    faults: Faults = Faults()
    sealing: Sealing | None = None  # the platform's side: its key and certificate, the gateway's as peer
    receipt_credentials: Credentials | None = None  # signs receipts (default: the sealing credentials)

    def __post_init__(self) -> None:
        problems = []
        if not self.token:
            problems.append(Problem("token", "a non-empty bearer token is required"))
        if not 0 <= self.port <= 65535:
            problems.append(Problem("port", "expected 0..65535"))
        if self.max_body_bytes <= 0:
            problems.append(Problem("max_body_bytes", "expected a positive size"))
        if problems:
            raise ConfigError(problems, source="sandbox config")


# ---------------------------------------------------------------------------------------------------
# The HTTP server

def _json(status: int, payload: Any, headers: Mapping[str, str] | None = None) -> web.Response:
    return _json_bytes(status, orjson.dumps(payload), headers)


def _json_bytes(status: int, body: bytes, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=body, content_type="application/json", charset="utf-8",
                        headers=headers)


def _error(status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    return _json_bytes(status, error_body(code, message), headers)


def _drop_connection(request: web.Request) -> web.Response:
    """Close the connection without answering; the response returned never reaches the client."""
    if request.transport is not None:
        request.transport.close()
    return web.Response(status=500)


def _query_int(request: web.Request, name: str, default: int, maximum: int) -> int:
    value = int(request.query.get(name) or default)
    if not 0 <= value <= maximum:
        raise ValueError(name)
    return value


async def _healthz(_request: web.Request) -> web.Response:
    return _json(200, {"ok": True})


class Sandbox:
    """The sandbox platform server; ``async with Sandbox(config) as sandbox:`` runs it on ``sandbox.url``."""

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self._faults = config.faults
        self._rng = random.Random(config.faults.seed)  # noqa: S311 (fault simulation, not security)
        self._stats: Counter[str] = Counter()
        self._injected: Counter[str] = Counter()
        self._held: Counter[str] = Counter()
        self._closing = asyncio.Event()
        self._executor: ThreadPoolExecutor | None = None
        self._platform: Platform | None = None
        self._runner: web.AppRunner | None = None
        self._url = ""
        self.sanctions = SanctionsDesk(self._in_db, self._in_db_now)  # 联合奖惩: cases out, feedback in
        self.lists = ListPlatform()  # credit lists the platform publishes (gateway.sandbox.lists)
        # pushes lists and cases to a gateway's inbound channel (gateway.sandbox.push)
        self.push = PushDesk(self.lists, self.sanctions, lambda: self.config.sealing, self._in_db)

    async def start(self) -> None:
        """Open the database and listen; afterwards ``url`` names the bound port."""
        if self._executor is not None:
            raise RuntimeError("sandbox already started")
        self._closing = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sandbox-db")
        try:
            config = self.config
            signer = self._receipt_signer()
            self._platform = await self._in_db(Platform, config.db_path, config.departments, config.platform_name,
                                               signer)
            self._held = Counter(await self._in_db(self._platform.store.held_counts))
            await self.sanctions.attach(self._platform, config.platform_name, signer, config.departments)
            self._runner = web.AppRunner(self._build_app(), access_log=None, shutdown_timeout=5.0)
            await self._runner.setup()
            await web.TCPSite(self._runner, self.config.host, self.config.port).start()
        except BaseException:
            await self.aclose()
            raise
        host, port = self._runner.addresses[0][:2]
        self._url = f"http://{f'[{host}]' if ':' in host else host}:{port}"

    async def aclose(self) -> None:
        """Stop listening (ending injected hangs at once), then close the database."""
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._executor is not None:
            if self._platform is not None:
                await self._in_db(self._platform.store.close)
                self._platform = None
            self._executor.shutdown(wait=True)
            self._executor = None

    async def __aenter__(self) -> Sandbox:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    @property
    def url(self) -> str:
        if not self._url:
            raise RuntimeError("sandbox not started")
        return self._url

    @property
    def upload_url(self) -> str:
        return self.url + "/api/v1/upload"

    def set_faults(self, faults: Faults) -> None:
        """Inject these faults from now on; random draws restart from ``faults.seed``."""
        self._faults = faults
        self._rng = random.Random(faults.seed)  # noqa: S311 (fault simulation, not security)

    @property
    def faults(self) -> Faults:
        return self._faults

    def stats(self) -> dict[str, Any]:
        """Counters since start (or reset), held records per table, faults injected."""
        counters: dict[str, Any] = {name: self._stats[name] for name in _STAT_NAMES}
        counters["held"] = {code: self._held[code] for code in TABLES}
        counters["faults_injected"] = {name: self._injected[name] for name in _FAULT_NAMES}
        return counters

    def held(self, table_code: str) -> dict[str, tuple[int, str, dict[str, Any]]]:
        """recordKey -> (version, operation, data) of every held record of a table (for tests)."""
        return self._in_db_now(self._store().held, table_code)

    def applied_counts(self, table_code: str) -> dict[str, int]:
        """recordKey -> how many times a version of it was applied (accepted)."""
        return self._in_db_now(self._store().applied_counts, table_code)

    def _receipt_signer(self) -> Callable[[bytes], bytes] | None:
        sealing = self.config.sealing
        ours = self.config.receipt_credentials or (sealing.ours if sealing is not None and sealing.active else None)
        if ours is None:
            return None
        return lambda data: sign_detached(data, ours)

    def _platform_(self) -> Platform:
        if self._platform is None:
            raise RuntimeError("sandbox not started")
        return self._platform

    def _store(self) -> SandboxStore:
        return self._platform_().store

    async def _in_db(self, fn: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            raise RuntimeError("sandbox not started")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _in_db_now(self, fn: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            raise RuntimeError("sandbox not started")
        return self._executor.submit(fn, *args).result()

    def _build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._require_token], client_max_size=self.config.max_body_bytes)
        app.router.add_get("/healthz", _healthz)
        app.router.add_post("/api/v1/upload", self._upload)
        app.router.add_get("/api/v1/receipts/{batchId}", self._get_receipt)
        app.router.add_get("/_sandbox/faults", self._get_faults)
        app.router.add_post("/_sandbox/faults", self._post_faults)
        app.router.add_get("/_sandbox/stats", self._get_stats)
        app.router.add_get("/_sandbox/records", self._list_records)
        app.router.add_get("/_sandbox/records/{tableCode}/{recordKey:.+}", self._get_record)
        app.router.add_post("/_sandbox/reset", self._reset)
        self.sanctions.add_routes(app)
        add_list_routes(app, self.lists, self._receipt_signer())
        self.push.add_routes(app)
        return app

    @web.middleware
    async def _require_token(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        good = scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self.config.token.encode())
        if good or request.path == "/healthz":
            return await handler(request)
        return _error(401, "401", "认证失败: 缺少或错误的访问令牌", {"WWW-Authenticate": "Bearer"})

    async def _upload(self, request: web.Request) -> web.StreamResponse:
        self._stats["requests"] += 1
        answer = await self._inject_before(request) or self._check_headers(request)
        if answer is not None:
            return answer
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return self._too_large()
        faults, key = self._faults, request.headers.get("Idempotency-Key")
        sent_sha256 = None
        sealing = self.config.sealing
        if sealing is not None and sealing.active:
            sent_sha256 = hashlib.sha256(body).hexdigest()
            try:
                body = await self._in_db(self._open_sealed, body)
            except EnvelopeError as exc:
                self._stats["refused"] += 1
                return _error(400, "8001", f"信封校验失败: {exc}")
        outcome = await self._in_db(self._platform_().upload, body, key, faults.reject_rate, faults.seed,
                                    sent_sha256)
        self._note(outcome)
        return self._inject_after(request, outcome) or _json_bytes(outcome.status, outcome.body)

    def _open_sealed(self, sealed: bytes) -> bytes:
        sealing = self.config.sealing
        if sealing is None:
            raise EnvelopeError("the sandbox has no credentials to open envelopes")
        return sealing.open(sealed).body

    def _check_headers(self, request: web.Request) -> web.Response | None:
        sealing = self.config.sealing
        expected = sealing.content_type if sealing is not None else "application/json"
        if request.content_type != expected:
            return _error(415, "415", f"Content-Type 必须为 {expected}")
        length = request.content_length
        if length is not None and length > self.config.max_body_bytes:
            return self._too_large()
        return None

    def _too_large(self) -> web.Response:
        return _error(413, "413", f"请求体超过 {self.config.max_body_bytes} 字节")

    def _note(self, outcome: Outcome) -> None:
        """Count and log one answered upload (never the token or record data)."""
        if outcome.kind != "applied":
            self._stats[outcome.kind] += 1
            log.info("batch %s %s (HTTP %d)", outcome.batch_id or "-", outcome.kind, outcome.status)
            return
        self._stats["batches"] += 1
        self._stats["records_received"] += sum(outcome.counts.values())
        self._stats.update(outcome.counts)
        self._held[outcome.table_code] += outcome.new_keys
        self._injected["reject"] += outcome.simulated_rejects
        log.info("batch %s table=%s total=%d accepted=%d duplicate=%d stale=%d rejected=%d",
                 outcome.batch_id, outcome.table_code, sum(outcome.counts.values()), outcome.counts.get("accepted", 0),
                 outcome.counts.get("duplicate", 0), outcome.counts.get("stale", 0), outcome.counts.get("rejected", 0))

    def _draw(self, rate: float) -> bool:
        return rate > 0 and (rate >= 1 or self._rng.random() < rate)

    async def _pause(self, seconds: float) -> None:
        """Wait ``seconds``, or less if the sandbox is closing."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), seconds)

    async def _inject_before(self, request: web.Request) -> web.Response | None:
        faults = self._faults
        if faults.delay_s > 0:
            self._injected["delay"] += 1
            await self._pause(faults.delay_s)
        if self._draw(faults.error_rate):
            self._injected["error"] += 1
            headers = {}
            if faults.retry_after_s is not None and faults.error_status in (429, 503):
                headers["Retry-After"] = str(math.ceil(faults.retry_after_s))
            return _error(faults.error_status, "500", "平台繁忙，请稍后重试(模拟故障)", headers)
        if self._draw(faults.timeout_rate):
            self._injected["timeout"] += 1
            await self._pause(faults.timeout_s)
            return _drop_connection(request)
        return None

    def _inject_after(self, request: web.Request, outcome: Outcome) -> web.Response | None:
        if outcome.status != 200:
            return None
        if self._draw(self._faults.drop_rate):
            self._injected["drop"] += 1
            return _drop_connection(request)
        if self._draw(self._faults.fail_after_commit_rate):
            self._injected["fail_after_commit"] += 1
            return _error(500, "500", "平台内部错误(模拟故障)")
        if self._draw(self._faults.garble_rate):
            self._injected["garble"] += 1
            return web.Response(status=200, text="<html><body>网关维护中</body></html>", content_type="text/html")
        return None

    async def _get_receipt(self, request: web.Request) -> web.Response:
        receipt = await self._in_db(self._store().receipt, request.match_info["batchId"])
        if receipt is None:
            return _error(404, "404", f"回执不存在: {request.match_info['batchId']}")
        return _json_bytes(200, receipt)

    async def _get_faults(self, _request: web.Request) -> web.Response:
        return _json(200, asdict(self._faults))

    async def _post_faults(self, request: web.Request) -> web.Response:
        try:
            changes = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return _error(400, "400", "JSON解析失败")
        if not isinstance(changes, dict):
            return _error(400, "400", "expected a JSON object of Faults fields")
        try:
            self.set_faults(faults_from_json(self._faults, changes))
        except ConfigError as exc:
            return _error(400, "400", str(exc))
        return _json(200, asdict(self._faults))

    async def _get_stats(self, _request: web.Request) -> web.Response:
        return _json(200, self.stats())

    async def _list_records(self, request: web.Request) -> web.Response:
        try:
            limit = _query_int(request, "limit", 100, 10_000)
            offset = _query_int(request, "offset", 0, sys.maxsize)
        except ValueError:
            return _error(400, "400", "limit/offset 应为非负整数 (limit ≤ 10000)")
        table = request.query.get("tableCode") or None
        return _json(200, await self._in_db(self._store().list_records, table, limit, offset))

    async def _get_record(self, request: web.Request) -> web.Response:
        table, key = request.match_info["tableCode"], request.match_info["recordKey"]
        record = await self._in_db(self._store().get_record, table, key)
        if record is None:
            return _error(404, "404", f"记录不存在: {table}/{key}")
        return _json(200, record)

    async def _reset(self, _request: web.Request) -> web.Response:
        await self._in_db(self._store().reset)
        await self.sanctions.reset()
        self._stats.clear()
        self._injected.clear()
        self._held.clear()
        return _json(200, {"ok": True})


# ---------------------------------------------------------------------------------------------------
# Running it as a process

def run_sandbox(config: SandboxConfig, ready_file: str | None = None) -> None:
    """Serve until SIGTERM/SIGINT; announce the URL on stdout and, atomically, in ``ready_file``. The process is
    tuned as the daemon's (gateway.tuning): measured, the collector and fresh pages took a sixth of its CPU."""
    tune_process()
    asyncio.run(_serve(config, ready_file))


async def _serve(config: SandboxConfig, ready_file: str | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with Sandbox(config) as sandbox:
        print(f"sandbox listening on {sandbox.url}", flush=True)
        if ready_file:
            _write_ready_file(ready_file, sandbox.url)
        await stop.wait()
        log.info("sandbox stopping")


def _write_ready_file(path: str, url: str) -> None:
    """Write then rename, so a reader never sees a half-written URL."""
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "w", encoding="utf-8") as handle:
        handle.write(url + "\n")
    os.replace(temporary, path)


_FAULT_FLAGS: tuple[tuple[str, str, Callable[[str], Any], str], ...] = (
    ("--error-rate", "error_rate", float, "fraction of uploads answered --error-status at once"),
    ("--error-status", "error_status", int, "status of injected errors (default 503)"),
    ("--retry-after", "retry_after_s", float, "Retry-After seconds on injected 429/503"),
    ("--reject-rate", "reject_rate", float, "fraction of valid records rejected with 7099"),
    ("--timeout-rate", "timeout_rate", float, "fraction of uploads that hang, then close unanswered"),
    ("--timeout", "timeout_s", float, "how long a hang lasts in seconds (default 60)"),
    ("--delay", "delay_s", float, "seconds every upload is delayed"),
    ("--drop-rate", "drop_rate", float, "fraction of uploads committed, then closed unanswered"),
    ("--fail-after-commit-rate", "fail_after_commit_rate", float, "fraction of uploads committed, then answered 500"),
    ("--seed", "seed", int, "seed of the random draws (default 0)"),
)


def build_arg_parser(parser: argparse.ArgumentParser) -> None:
    """Add the sandbox's command-line options (``credit-gateway sandbox``, ``python -m gateway.sandbox``)."""
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="address to listen on (default %(default)s)")
    add("--port", type=int, default=0, help="port; 0 picks a free one (default)")
    token = parser.add_mutually_exclusive_group()
    token.add_argument("--token", help="bearer token clients must send (prefer --token-file or CG_SANDBOX_TOKEN)")
    token.add_argument("--token-file", help="file holding the bearer token")
    add("--db", default=":memory:", help="SQLite file for held records (default: in memory)")
    add("--department", action="append", default=None, help="registered department code (repeatable; none = any)")
    add("--name", default="sandbox", help="platform name written in receipts")
    add("--ready-file", help="once listening, write the URL into this file (atomically)")
    env = parser.add_argument_group("envelope (sealed uploads, signed receipts)")
    env.add_argument("--envelope", default="none", help="profile the gateway seals with: cms | sm | none")
    env.add_argument("--key", help="the platform's private key (PEM)")
    env.add_argument("--cert", help="the platform's certificate (PEM)")
    env.add_argument("--peer-cert", help="the gateway's certificate (PEM)")
    env.add_argument("--trusted-ca", action="append", default=None, help="CA certificate (repeatable)")
    faults = parser.add_argument_group("faults")
    for flag, name, kind, help_text in _FAULT_FLAGS:
        metavar = "RATE" if name.endswith("_rate") else "SECONDS" if name.endswith("_s") else None
        faults.add_argument(flag, dest=name, type=kind, default=None, metavar=metavar, help=help_text)


def config_from_args(args: argparse.Namespace) -> SandboxConfig:
    """The config the options describe; one ConfigError naming every bad option (token, fault values)."""
    problems: list[Problem] = []
    token, faults = "", Faults()
    try:
        token = _token_from_args(args)
    except ConfigError as exc:
        problems += exc.problems
    try:
        given = {name: getattr(args, name) for _, name, _, _ in _FAULT_FLAGS}
        faults = Faults(**{name: value for name, value in given.items() if value is not None})
    except ConfigError as exc:
        flags = {name: flag for flag, name, _, _ in _FAULT_FLAGS}
        problems += [Problem(flags.get(p.path, p.path), p.message) for p in exc.problems]
    sealing, found = _sealing_from_args(args)
    problems += found
    if problems:
        raise ConfigError(problems, source="sandbox options")
    return SandboxConfig(host=args.host, port=args.port, token=token, db_path=args.db,
                         departments=tuple(args.department or ()), platform_name=args.name, faults=faults,
                         sealing=sealing)


def _sealing_from_args(args: argparse.Namespace) -> tuple[Sealing | None, list[Problem]]:
    profile = getattr(args, "envelope", "none") or "none"
    if profile == "none":
        return None, []
    raw = {"profile": profile, "key": args.key or "", "cert": args.cert or "", "peer_cert": args.peer_cert or "",
           "trusted_cas": list(args.trusted_ca or [])}
    sealing, problems = load_sealing(raw, "--envelope", Path.cwd())
    flags = {"key": "--key", "cert": "--cert", "peer_cert": "--peer-cert", "trusted_cas": "--trusted-ca"}
    return sealing, [Problem(flags.get(p.path.split(".")[-1].split("[")[0], p.path), p.message) for p in problems]


def _token_from_args(args: argparse.Namespace) -> str:
    if args.token:
        return str(args.token)
    if args.token_file:
        try:
            with open(args.token_file, encoding="utf-8") as handle:
                return handle.read().strip()
        except OSError as exc:
            raise ConfigError([Problem("--token-file", f"cannot read: {exc}")]) from exc
    token = os.environ.get("CG_SANDBOX_TOKEN", "")
    if not token:
        raise ConfigError([Problem("--token", "required (or --token-file, or CG_SANDBOX_TOKEN)")])
    return token


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway.sandbox", description="credit-platform sandbox")
    build_arg_parser(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = config_from_args(args)
    except ConfigError as exc:
        parser.error(str(exc))
    run_sandbox(config, args.ready_file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
