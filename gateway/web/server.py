"""The daemon's HTTP listeners: the inbound endpoint and the admin API, each started only when configured."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from gateway.config import Config
from gateway.errors import GatewayError
from gateway.inbound.service import InboundService
from gateway.store import Store
from gateway.web.admin import AdminServer
from gateway.web.inbound import InboundServer


class WebServers:
    """What :func:`start_web` started; ``aclose`` stops listening (in-flight requests get a few seconds)."""

    def __init__(self) -> None:
        self.stack = contextlib.AsyncExitStack()
        self.inbound: InboundServer | None = None
        self.admin: AdminServer | None = None

    def mapping_tables(self) -> list[dict[str, Any]]:
        """The inbound channels' mappings (channel → mapping), for the daemon's mapping reload."""
        return [] if self.inbound is None else [self.inbound.service.mappings]

    async def aclose(self) -> None:
        await self.stack.aclose()


async def start_web(config: Config, store: Store, on_commit: Callable[[], None] = lambda: None) -> WebServers:
    """Listen as configured; a port that cannot be bound is a GatewayError naming the section."""
    servers = WebServers()
    try:
        if config.inbound is not None:
            service = InboundService(config.inbound, store, config.routes(), receiver=config.gateway.department_code,
                                     on_commit=on_commit)
            servers.inbound = await _listen(servers, InboundServer(config.inbound, service), "inbound",
                                            config.inbound.settings.host, config.inbound.settings.port)
        if config.admin is not None:
            admin = AdminServer(config, config.admin, store, adapters_open=True)  # the daemon's adapters are open
            servers.admin = await _listen(servers, admin, "admin",
                                          config.admin.settings.host, config.admin.settings.port)
    except BaseException:
        await servers.aclose()
        raise
    return servers


async def _listen(servers: WebServers, server: Any, section: str, host: str, port: int) -> Any:
    try:
        return await servers.stack.enter_async_context(server)
    except OSError as exc:
        raise GatewayError(f"[{section}] cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
