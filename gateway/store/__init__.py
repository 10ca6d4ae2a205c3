"""The durable store: one database, composed of the repositories that own its parts.

Each consumer states the part it needs: the intake takes :class:`IntakeLedger`, a target's worker the
:class:`Outbox`, the admin API :class:`Reports`. The parts that run inside one another's transactions are
wired here, where it can be seen: the intake ledger calls the list book (snapshot sweeps, list entries and
red/black holds) and the inbound log calls the intake ledger (a pushed batch is taken in like a source's page).
SQLAlchemy is imported by this package and nowhere else.
"""

from __future__ import annotations

from gateway.domain.subject_keys import KeySecret
from gateway.store.audits import SourceAudits
from gateway.store.database import Database, connect
from gateway.store.history import History
from gateway.store.inbound import InboundLog
from gateway.store.intake import IntakeLedger
from gateway.store.lists import ListBook
from gateway.store.outbox import Outbox
from gateway.store.publicity import PublicityBook
from gateway.store.reports import Reports

__all__ = [
    "History",
    "InboundLog",
    "IntakeLedger",
    "ListBook",
    "Outbox",
    "PublicityBook",
    "Reports",
    "SourceAudits",
    "Store",
    "open_store",
]


class Store:
    """All durable state of one gateway (or several, on PostgreSQL), by part."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.lists = ListBook(db)
        self.intake = IntakeLedger(db, self.lists)
        self.outbox = Outbox(db)
        self.inbound = InboundLog(db, self.intake)
        self.publicity = PublicityBook(db)
        self.reports = Reports(db)
        self.history = History(db)
        self.audits = SourceAudits(db)

    async def key_secret(self) -> KeySecret:
        """The store-wide secret behind the ID-number pseudonyms in record keys (gateway.domain.subject_keys)."""
        return await self.db.key_secret()

    async def migrate(self) -> int:
        return await self.db.migrate()

    async def aclose(self) -> None:
        await self.db.aclose()


async def open_store(url: str, *, migrate: bool = True) -> Store:
    """Open (and by default create or migrate) the store at ``url`` (sqlite:///… or postgresql://…)."""
    return Store(await connect(url, migrate=migrate))
