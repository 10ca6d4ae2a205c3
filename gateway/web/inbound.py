"""The inbound HTTP endpoint (aiohttp): ``POST /inbound/{channel}`` in front of :class:`InboundService`.

Before a body byte is read: the channel must exist (404), the Content-Type must be its profile's (415), and
a declared Content-Length must be within ``max_body_bytes`` (413). The body is then read in chunks with a hard
limit (413 as soon as it is passed; nothing more is buffered) and a deadline (408 after ``read_timeout_s``); a
connection whose request headers do not arrive within ``read_timeout_s`` is closed (aiohttp's keep-alive timer,
which also runs from the moment a connection opens): a slow client cannot hold connections and handlers open.
With TLS configured the endpoint speaks HTTPS, and with ``client_ca`` a client without a certificate from that
CA is refused by the TLS handshake itself.

Answers are JSON: 200 with our answer (results, signed receipt), or ``{"error": kind, "message": …}``.
Every refusal is logged with its reason (the body never is).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
from aiohttp import web

from gateway.errors import GatewayError
from gateway.inbound.service import InboundRefused, InboundService
from gateway.sealing.base import certificate_subject
from gateway.web.config import InboundConfig

log = logging.getLogger("gateway.inbound")
CHUNK = 64 * 1024


def json_response(status: int, payload: Any, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(payload), content_type="application/json",
                        charset="utf-8", headers=headers)


def tls_subject(request: web.Request) -> str | None:
    """The subject of the client's TLS certificate (mutual TLS), or None."""
    ssl_object = request.transport.get_extra_info("ssl_object") if request.transport is not None else None
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    return certificate_subject(der) if der else None


def check_content_type(request: web.Request, service: InboundService, name: str) -> None:
    """The channel exists (404) and the Content-Type is its profile's (415)."""
    channel = service.channel(name)
    if request.content_type not in channel.content_types:
        raise InboundRefused(415, "content_type", f"channel {name} takes Content-Type "
                                                  f"{' or '.join(channel.content_types)}, "
                                                  f"not {request.content_type or 'none'}")


async def read_bounded(request: web.Request, limit: int, timeout_s: float | None = None) -> bytes:
    """The request body, refused (413) as soon as it passes ``limit`` bytes, or (408) when it has not all
    arrived ``timeout_s`` seconds after the handler started reading it."""
    if request.content_length is not None and request.content_length > limit:
        raise InboundRefused(413, "too_large", f"the body is {request.content_length} bytes; at most {limit}")
    parts: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.content.iter_chunked(CHUNK):
                size += len(chunk)
                if size > limit:
                    raise InboundRefused(413, "too_large", f"the body is over {limit} bytes")
                parts.append(chunk)
    except TimeoutError:
        raise InboundRefused(408, "timeout", f"the body did not arrive within {timeout_s:g} s "
                                             f"({size} bytes came)") from None
    return b"".join(parts)


class InboundServer:
    """``async with InboundServer(config, service) as server:`` listens on ``server.url``."""

    def __init__(self, config: InboundConfig, service: InboundService) -> None:
        self.config, self.service = config, service
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def __aenter__(self) -> InboundServer:
        app = web.Application(client_max_size=self.config.settings.max_body_bytes)
        app.router.add_post("/inbound/{channel}", self._push)
        app.router.add_get("/healthz", self._healthz)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=5.0,
                                     keepalive_timeout=self.config.settings.read_timeout_s)
        await self._runner.setup()
        settings, tls = self.config.settings, self.config.tls
        ssl_context = tls.server_context() if tls is not None else None
        try:
            await web.TCPSite(self._runner, settings.host, settings.port, ssl_context=ssl_context).start()
        except OSError:
            await self._runner.cleanup()
            raise
        host, port = self._runner.addresses[0][:2]
        self.url = f"{'https' if tls else 'http'}://{f'[{host}]' if ':' in host else host}:{port}"
        log.info("inbound endpoint listening", extra={"url": self.url, "channels": list(self.config.channels),
                                                      "mutual_tls": bool(tls and tls.client_ca)})
        return self

    async def __aexit__(self, *_exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _healthz(self, _request: web.Request) -> web.Response:
        return json_response(200, {"ok": True})

    async def _push(self, request: web.Request) -> web.Response:
        name = request.match_info["channel"]
        peer = None
        try:
            peer = tls_subject(request)
            check_content_type(request, self.service, name)
            settings = self.config.settings
            body = await read_bounded(request, settings.max_body_bytes, settings.read_timeout_s)
            return json_response(200, await self.service.receive(name, body, peer))
        except InboundRefused as refused:
            log.warning("inbound batch refused", extra={"channel": name, "status": refused.status,
                                                        "reason": refused.kind, "detail": refused.detail,
                                                        "tls_client": peer, "remote": request.remote})
            headers = {"Connection": "close"} if refused.status in (408, 413) else None
            return json_response(refused.status, refused.body(), headers)
        except GatewayError as exc:  # the store failed: nothing was accepted, the sender may retry
            log.error("inbound batch not stored", extra={"channel": name, "error": str(exc)})
            return json_response(503, {"error": "unavailable", "message": "the gateway cannot store batches now; "
                                                                          "retry later"}, {"Retry-After": "30"})
