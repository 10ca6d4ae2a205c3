"""Database URLs for the SQL adapters: a SQLAlchemy URL from the config, made async, with its password."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.adapter import AdapterContext, Credential
from gateway.errors import Problem
from gateway.settings import read_secret, resolve_sqlite_url

# The async driver of each database (docs/databases.md). A URL may name the driver itself (mysql+asyncmy://).
DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg", "mysql": "mysql+asyncmy",
           "mariadb": "mariadb+asyncmy"}
_MYSQL = ("mysql+asyncmy", "mariadb+asyncmy")


def database_url(raw_url: str, password_env: str, ctx: AdapterContext) -> tuple[str, Problem | None]:
    """``sqlite:///relative.db`` resolved against the config's folder, ``postgresql://…``, ``mysql://…`` (or
    ``mariadb://``) with the password from ``password_env``; the async driver of each. A problem names
    ``ctx.path``.url (or .password)."""
    try:
        url = make_url(resolve_sqlite_url(raw_url, ctx.base_dir))
    except ArgumentError:
        return "", Problem(f"{ctx.path}.url", f"not a database URL: {raw_url!r}")
    driver = DRIVERS.get(url.drivername, url.drivername)
    if driver not in DRIVERS.values():
        return "", Problem(f"{ctx.path}.url", f"unsupported database {url.drivername!r}; use one of "
                                              f"{', '.join(DRIVERS)} (docs/databases.md)")
    if password_env:
        password, problem = read_secret(password_env, None, f"{ctx.path}.password", ctx.base_dir)
        if problem:
            return "", problem
        url = url.set(password=password)
    if driver in _MYSQL and "charset" not in url.query:
        url = url.update_query_dict({"charset": "utf8mb4"})  # a server's default may be latin1: Chinese needs this
    return url.set(drivername=driver).render_as_string(hide_password=False), None


def url_secrets(url: str) -> tuple[str, ...]:
    """The password in a database URL, to be redacted from logs."""
    password = make_url(url).password
    return (str(password),) if password else ()


def password_credentials(password_env: str) -> list[Credential]:
    """Where the database password comes from, for ``credit-gateway certs list``."""
    return [Credential("password_env", "password", f"environment variable {password_env}")] if password_env else []


# MySQL/MariaDB TIMESTAMP values are shown in the session's time zone, which follows the server's setting: pinned to
# China time, a watermark read before someone changes the server's time_zone still means the same instant after.
MYSQL_SESSION_TIME_ZONE = "+08:00"


def pin_session(engine: AsyncEngine) -> None:
    """Per-database session settings on every new connection (MySQL/MariaDB: the time zone)."""
    if engine.dialect.name not in ("mysql", "mariadb"):
        return

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute(f"SET time_zone = '{MYSQL_SESSION_TIME_ZONE}'")
        cur.close()
