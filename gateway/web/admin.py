"""The admin HTTP API (aiohttp): status, spool and quarantine for the CLI, behind tokens; and the dashboard.

Every endpoint but ``/healthz`` (readiness: 200, or 503 with each reason, as ``credit-gateway health``) and
``/livez`` (liveness: the process answers) needs ``Authorization: Bearer <token>``; a missing or unknown token
gets 401 with ``WWW-Authenticate``. Tokens are compared in constant time (each configured token, every time),
never logged; the log names the token's configured name. ``read`` tokens may GET; changes (POST) need an ``operator``
token, else 403. Every answer is JSON with personal ID numbers masked (:func:`gateway.operations.mask_personal`).
With ``[admin] client_ca`` (mutual TLS) a client must also present a certificate from that CA: without one the
TLS handshake fails before any HTTP is read; the log names the certificate's subject with the token's name.

::

    GET  /api/v1/status                       text lines (as ``credit-gateway status`` prints) and the JSON report
    GET  /api/v1/timeliness?dataset=&target=&at_risk_days=&today=
    GET  /api/v1/spool?target=&state=&limit=  batches;  GET /api/v1/spool/{batch}?body=1
    POST /api/v1/spool/retry  | /replay       {"batch": ID} | {"target": T} | {"all": true}   (operator)
    GET  /api/v1/quarantine?state=&stage=&limit=;  GET /api/v1/quarantine/{id}
    POST /api/v1/quarantine/replay | /resolve {"ids": [1, 2]} | {"all": true}                 (operator)
    GET  /api/v1/inbound?channel=&limit=;  GET /api/v1/inbound/{channel}/{batch}   our receipts for pushed batches
    GET  /dashboard, /dashboard/...           the read-only dashboard (gateway.web.dashboard): its own login form
                                              taking these tokens, a session cookie, CSRF tokens on its POSTs
    GET  /metrics                             the Prometheus text format (gateway.web.metrics)
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from gateway.clock import china_today
from gateway.config import Config
from gateway.domain.calendar import WorkCalendar
from gateway.domain.timeliness import timeliness_report
from gateway.errors import GatewayError
from gateway.health import HealthLimits, health_problems
from gateway.operations import mask_personal, personal_keys, replay_entries, status_json, status_lines
from gateway.store import Store
from gateway.web.config import AdminConfig, AdminToken
from gateway.web.dashboard import Dashboard, dashboard_paths
from gateway.web.inbound import json_response, tls_subject
from gateway.web.metrics import render_metrics
from gateway.web.pages import Pages

log = logging.getLogger("gateway.admin")
PREFIX = "/api/v1"
MAX_LIMIT = 10_000
OPEN_PATHS = ("/healthz", "/livez")  # probes: no token
READ_TIMEOUT_S = 60.0  # a connection's request headers must arrive within this (aiohttp's default: an hour)


class BadRequest(GatewayError):
    """A query or body parameter is wrong; answered 400 with the message."""


def _limit(request: web.Request, default: int) -> int:
    try:
        value = int(request.query.get("limit") or default)
    except ValueError:
        raise BadRequest("limit: expected an integer") from None
    if not 1 <= value <= MAX_LIMIT:
        raise BadRequest(f"limit: expected 1..{MAX_LIMIT}")
    return value


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = orjson.loads(await request.read() or b"{}")
    except orjson.JSONDecodeError:
        raise BadRequest("the body is not JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


def _selection(body: dict[str, Any]) -> tuple[str | None, str | None]:
    """(batch, target) of a spool action; exactly one of batch, target, all."""
    given = [k for k in ("batch", "target", "all") if body.get(k)]
    if len(given) != 1:
        raise BadRequest('give exactly one of "batch", "target" or "all": true')
    return (str(body["batch"]) if body.get("batch") else None, str(body["target"]) if body.get("target") else None)


class AdminServer:
    """``async with AdminServer(config, store) as server:`` listens on ``server.url``."""

    def __init__(self, config: Config, admin: AdminConfig, store: Store, *,
                 read_timeout_s: float = READ_TIMEOUT_S, adapters_open: bool = False) -> None:
        self.config, self.admin, self.store, self.read_timeout_s = config, admin, store, read_timeout_s
        self._digests = [(hashlib.sha256(t.token.encode()).digest(), t) for t in admin.tokens]
        self._personal = personal_keys(config)
        pages = Pages(config, store, self._personal, adapters_open=adapters_open)  # in the daemon: its adapters
        self.dashboard = Dashboard(pages, self.find_token, secure=admin.tls is not None)
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def __aenter__(self) -> AdminServer:
        self._runner = web.AppRunner(self._app(), access_log=None, shutdown_timeout=5.0,
                                     keepalive_timeout=self.read_timeout_s)
        await self._runner.setup()
        tls = self.admin.tls
        settings = self.admin.settings
        try:
            await web.TCPSite(self._runner, settings.host, settings.port,
                              ssl_context=tls.server_context() if tls else None).start()
        except OSError:
            await self._runner.cleanup()
            raise
        host, port = self._runner.addresses[0][:2]
        self.url = f"{'https' if tls else 'http'}://{f'[{host}]' if ':' in host else host}:{port}"
        log.info("admin API listening", extra={"url": self.url, "tokens": [t.name for t in self.admin.tokens],
                                               "mutual_tls": bool(tls and tls.client_ca)})
        return self

    async def __aexit__(self, *_exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _app(self) -> web.Application:
        app = web.Application(middlewares=[self._auth], client_max_size=1024 * 1024)
        routes: list[tuple[str, str, Callable[[web.Request], Awaitable[Any]]]] = [
            ("GET", "/status", self._status), ("GET", "/timeliness", self._timeliness),
            ("GET", "/spool", self._spool_list), ("GET", "/spool/{batch}", self._spool_show),
            ("POST", "/spool/retry", self._spool_retry), ("POST", "/spool/replay", self._spool_replay),
            ("GET", "/quarantine", self._quarantine_list), ("GET", "/quarantine/{id}", self._quarantine_show),
            ("POST", "/quarantine/replay", self._quarantine_replay),
            ("POST", "/quarantine/resolve", self._quarantine_resolve),
            ("GET", "/inbound", self._inbound_list), ("GET", "/inbound/{channel}/{batch}", self._inbound_show),
        ]
        for method, path, handler in routes:
            app.router.add_route(method, PREFIX + path, self._answering(handler))
        app.router.add_get("/healthz", self._healthz)
        self.dashboard.add_routes(app)
        app.router.add_get("/livez", self._livez)
        app.router.add_get("/metrics", self._metrics)  # behind a token like the API (gateway.web.metrics)
        return app

    # ------------------------------------------------------------ authentication and answers

    def _token(self, request: web.Request) -> AdminToken | None:
        """The configured token the request carries."""
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        return self.find_token(given) if scheme.lower() == "bearer" else None

    def find_token(self, given: str) -> AdminToken | None:
        """The configured token ``given`` is; every token is compared, in constant time."""
        digest = hashlib.sha256(given.strip().encode()).digest()
        found = None
        for expected, token in self._digests:
            if hmac.compare_digest(digest, expected) and given.strip():
                found = token
        return found

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in OPEN_PATHS or dashboard_paths(request.path):
            return await handler(request)  # the dashboard checks its own session cookie
        token = self._token(request)
        client = tls_subject(request)  # with [admin] client_ca: the certificate the TLS handshake accepted
        if token is None:
            log.warning("admin request refused: missing or unknown token",
                        extra={"path": request.path, "remote": request.remote, "client": client})
            return json_response(401, {"error": "unauthorized", "message": "a valid bearer token is required"},
                                 {"WWW-Authenticate": 'Bearer realm="credit-gateway admin"'})
        if request.method != "GET" and token.role != "operator":
            log.warning("admin request refused: read-only token",
                        extra={"path": request.path, "token": token.name, "client": client})
            return json_response(403, {"error": "forbidden", "message": f"token {token.name} has role "
                                                                        f"{token.role}; this needs operator"})
        if request.method != "GET":
            log.info("admin action", extra={"path": request.path, "token": token.name, "client": client})
        return await handler(request)

    def _answering(self, handler: Callable[[web.Request], Awaitable[Any]]) -> Handler:
        async def answer(request: web.Request) -> web.StreamResponse:
            try:
                payload = await handler(request)
            except BadRequest as exc:
                return json_response(400, {"error": "bad_request", "message": str(exc)})
            except web.HTTPNotFound as exc:
                return json_response(404, {"error": "not_found", "message": exc.text or "not found"})
            except GatewayError as exc:
                log.error("admin request failed", extra={"path": request.path, "error": str(exc)})
                return json_response(503, {"error": "unavailable", "message": str(exc)})
            return json_response(200, mask_personal(payload, self._personal))

        return answer

    async def _healthz(self, _request: web.Request) -> web.Response:
        """Readiness: every reason this gateway is not ready (gateway.health), from its own store."""
        problems = await health_problems(self.store, self.config.gateway.instance, HealthLimits())
        return json_response(503 if problems else 200, {"ok": not problems, "problems": problems})

    async def _metrics(self, _request: web.Request) -> web.Response:
        try:
            body, content_type = await render_metrics(self.store, self.config.gateway.instance)
        except GatewayError as exc:
            log.error("metrics failed", extra={"error": str(exc)})
            return json_response(503, {"error": "unavailable", "message": str(exc)})
        response = web.Response(body=body)
        response.headers["Content-Type"] = content_type
        return response

    async def _livez(self, _request: web.Request) -> web.Response:
        """Liveness alone: the daemon's event loop answers."""
        return json_response(200, {"ok": True})

    # ------------------------------------------------------------ read

    async def _status(self, _request: web.Request) -> dict[str, Any]:
        calendar = WorkCalendar.from_settings(self.config.calendar)
        lines = await status_lines(self.store, calendar, self.config.sanctions.feedback_due_working_days)
        return {"lines": lines, **await status_json(self.store, self.config)}

    async def _timeliness(self, request: web.Request) -> dict[str, Any]:
        q = request.query
        try:
            today = dt.date.fromisoformat(q["today"]) if q.get("today") else china_today()
            at_risk = int(q.get("at_risk_days") or 2)
        except ValueError:
            raise BadRequest("today: YYYY-MM-DD; at_risk_days: an integer") from None
        report = await timeliness_report(self.store.reports, WorkCalendar.from_settings(self.config.calendar),
                                         today=today,
                                         datasets=[q["dataset"]] if q.get("dataset") else None,
                                         target=q.get("target") or None, at_risk_days=at_risk)
        return report.as_json()

    async def _spool_list(self, request: web.Request) -> list[dict[str, Any]]:
        q = request.query
        return await self.store.reports.list_batches(q.get("target") or None, q.get("state") or None, _limit(request,
                                                                                                             50))

    async def _spool_show(self, request: web.Request) -> dict[str, Any]:
        batch = await self.store.reports.show_batch(request.match_info["batch"])
        if batch is None:
            raise web.HTTPNotFound(text=f"no batch {request.match_info['batch']}")
        raw = batch.pop("body_bytes")
        body = batch.pop("body")
        if request.query.get("body") == "1":
            try:
                batch["body"] = orjson.loads(raw)
            except orjson.JSONDecodeError:
                batch["body"] = body  # sealed: "<N bytes, sealed>"
        if batch.get("receipt"):
            batch["receipt"]["body"] = orjson.loads(batch["receipt"]["body"])
        return batch

    async def _quarantine_list(self, request: web.Request) -> list[dict[str, Any]]:
        q = request.query
        return await self.store.reports.list_quarantine(q.get("state", "open") or None, q.get("stage") or None,
                                                _limit(request, 100))

    async def _quarantine_show(self, request: web.Request) -> dict[str, Any]:
        try:
            entry_id = int(request.match_info["id"])
        except ValueError:
            raise BadRequest("the quarantine id is an integer") from None
        rows = await self.store.reports.list_quarantine(None, ids=[entry_id])
        if not rows:
            raise web.HTTPNotFound(text=f"no quarantine entry {entry_id}")
        return rows[0]

    async def _inbound_list(self, request: web.Request) -> list[dict[str, Any]]:
        return await self.store.inbound.list_inbound(request.query.get("channel") or None, _limit(request, 50))

    async def _inbound_show(self, request: web.Request) -> dict[str, Any]:
        found = await self.store.inbound.show_inbound(request.match_info["channel"], request.match_info["batch"])
        if found is None:
            raise web.HTTPNotFound(text=f"no inbound batch {request.match_info['batch']}")
        found["body"] = f"<{len(found['body'])} bytes>"
        return found

    # ------------------------------------------------------------ operator

    async def _spool_retry(self, request: web.Request) -> dict[str, Any]:
        batch, target = _selection(await _json_body(request))
        return {"batches": await self.store.reports.retry_now(batch, target)}

    async def _spool_replay(self, request: web.Request) -> dict[str, Any]:
        batch, target = _selection(await _json_body(request))
        return {"records": await self.store.reports.replay_dead(batch, target)}

    async def _entries(self, request: web.Request) -> list[dict[str, Any]]:
        body = await _json_body(request)
        ids = body.get("ids") or []
        if bool(body.get("all")) == bool(ids) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
            raise BadRequest('give "ids": [integers] or "all": true')
        return await self.store.reports.list_quarantine("open", limit=1_000_000, ids=[] if body.get("all") else ids)

    async def _quarantine_replay(self, request: web.Request) -> dict[str, Any]:
        result = await replay_entries(self.store, self.config, await self._entries(request))
        return {"fixed": result.fixed, "still": result.still, "requeued": result.requeued,
                "notes": result.notes or [], "summary": result.summary()}

    async def _quarantine_resolve(self, request: web.Request) -> dict[str, Any]:
        entries = await self._entries(request)
        await self.store.reports.resolve_quarantine([e["id"] for e in entries])
        return {"resolved": len(entries)}
