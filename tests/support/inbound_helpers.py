"""Helpers for the inbound endpoint and admin API tests: configs, a running endpoint, clients, store counts.

Everything is real: the config is a TOML file read by the real loader, the endpoint a real aiohttp server on
127.0.0.1 (HTTPS with real certificates where a test asks), the PKI made by :mod:`tests.support.pki`.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from gateway.config import Config, load_config
from gateway.inbound.client import InboundClient
from gateway.inbound.service import InboundService
from gateway.mapping import InboundMapping
from gateway.sealing.base import Credentials, Peer
from gateway.store import Store, open_store
from gateway.store import schema as s
from gateway.web.inbound import InboundServer
from tests.support.helpers import DEPARTMENT_CODE, MAPPINGS, make_department_db, penalty_mapping, read_rows
from tests.support.pki import CA, Issued, make_ca

CONFIG = """\
[gateway]
department_code = "{department}"
department_name = "苏州市市场监督管理局"

[store]
url = "{store_url}"

[daemon]
log_format = "text"
log_level = "error"
shutdown_grace_s = 2
idle_check_s = 0.05

[targets.platform]
type = "credit_platform"
url = "http://127.0.0.1:9/api/v1/upload"
token_file = "sandbox.token"
datasets = {{ penalty = "{mappings}/platform-2019-penalty.toml" }}
external = false
"""

INBOUND = """
[inbound]
port = 0
max_body_bytes = {max_body_bytes}
{inbound_extra}
[inbound.channels.platform]
mapping = "{mappings}/department-penalty.toml"
profile = "{profile}"
key = "{key}"
cert = "{cert}"
trusted_cas = ["{ca}"]
peer_certs = ["{peer}"]
{channel_extra}
"""

TABLES = (s.records, s.outbox, s.quarantine, s.intake, s.inbound_batches, s.inbound_nonces)


@dataclass(frozen=True)
class Pki:
    ca: CA
    gateway: Issued  # our key: opens envelopes, signs receipts (and serves TLS: SAN 127.0.0.1)
    platform: Issued  # the partner allowed to push


def make_pki(directory: Path, kind: str) -> Pki:
    ca = make_ca(directory, kind)
    hosts = ("127.0.0.1", "localhost") if kind != "sm2" else ()
    return Pki(ca, ca.issue("gateway", hosts=hosts), ca.issue("platform"))


def write_config(directory: Path, store_url: str, pki: Pki | None, profile: str = "cms", *,
                 max_body_bytes: int = 1_000_000, inbound_extra: str = "", channel_extra: str = "",
                 extra: str = "") -> Path:
    """A gateway config with one target and, given a PKI, an inbound channel ``platform`` (penalties)."""
    (directory / "sandbox.token").write_text("test-token-0123456789\n", encoding="utf-8")
    text = CONFIG.format(department=DEPARTMENT_CODE, store_url=store_url, mappings=MAPPINGS.as_posix())
    if pki is not None:
        text += INBOUND.format(max_body_bytes=max_body_bytes, inbound_extra=inbound_extra, profile=profile,
                               mappings=MAPPINGS.as_posix(), key=pki.gateway.key_path, cert=pki.gateway.cert_path,
                               ca=pki.ca.root.cert_path, peer=pki.platform.cert_path, channel_extra=channel_extra)
    path = directory / "credit-gateway.toml"
    path.write_text(text + extra, encoding="utf-8")
    return path


@contextlib.asynccontextmanager
async def endpoint(path: Path) -> AsyncIterator[tuple[Config, Store, InboundServer]]:
    """The inbound endpoint of the config at ``path``, listening on 127.0.0.1, and its store."""
    config = load_config(path)
    assert config.inbound is not None
    store = await open_store(config.store_url())
    try:
        service = InboundService(config.inbound, store, config.routes(), receiver=DEPARTMENT_CODE)
        async with InboundServer(config.inbound, service) as server:
            yield config, store, server
    finally:
        await store.aclose()


def client(url: str, pki: Pki, profile: str, sender: Issued | None = None,
           ssl_context: ssl.SSLContext | None = None, xml: bool = False) -> InboundClient:
    """A partner's client: signs as ``sender`` (default: the platform), encrypts to the gateway."""
    who = sender or pki.platform
    return InboundClient(url, "platform", "penalty", profile, ours=Credentials(who.key_pem, who.cert_pem),
                         gateway=Peer(pki.gateway.cert_pem, (pki.ca.root.cert_pem,)), ssl_context=ssl_context,
                         xml=xml)


def sample_rows(directory: Path, n: int, seed: int = 7) -> list[dict[str, Any]]:
    """``n`` department penalty rows that the mapping accepts (the partner's field names and values)."""
    db = make_department_db(directory, penalties=n * 3, seed=seed, name=f"partner-{seed}.db")
    mapping: InboundMapping = penalty_mapping()
    from gateway.clock import china_today

    rows = [r for r in read_rows(db.path) if mapping.map_row(r, china_today()).record is not None]
    assert len(rows) >= n
    return rows[:n]


def bad_row(row: dict[str, Any]) -> dict[str, Any]:
    """A row the mapping refuses: its decision date is not a date."""
    return {**row, "cfjdswh": row["cfjdswh"] + "-bad", "jdrq": "not a date"}


async def counts(store: Store, tables: Sequence[Any] = TABLES) -> dict[str, int]:
    """Rows per table: what a refused batch must leave untouched."""
    async with store.db.engine.connect() as conn:
        return {t.name: int((await conn.execute(select(func.count()).select_from(t))).scalar() or 0) for t in tables}


NOTHING = {t.name: 0 for t in TABLES}
