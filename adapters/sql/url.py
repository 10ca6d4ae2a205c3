"""Database URLs for the SQL adapters: a SQLAlchemy URL from the config, made async, with its password."""

from __future__ import annotations

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from gateway.adapter import AdapterContext, Credential
from gateway.errors import Problem
from gateway.settings import read_secret, resolve_sqlite_url

DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg"}


def database_url(raw_url: str, password_env: str, ctx: AdapterContext) -> tuple[str, Problem | None]:
    """``sqlite:///relative.db`` resolved against the config's folder, ``postgresql://…`` with the password
    from ``password_env``; the async driver of each. A problem names ``ctx.path``.url (or .password)."""
    try:
        url = make_url(resolve_sqlite_url(raw_url, ctx.base_dir))
        url = make_url(resolve_sqlite_url(raw_url, ctx.base_dir))
    except ArgumentError:
        return "", Problem(f"{ctx.path}.url", f"not a database URL: {raw_url!r}")
    driver = DRIVERS.get(url.drivername, url.drivername)
    if driver not in DRIVERS.values():
        return "", Problem(f"{ctx.path}.url", f"unsupported database {url.drivername!r}; use sqlite or postgresql")
    if password_env:
        password, problem = read_secret(password_env, None, f"{ctx.path}.password", ctx.base_dir)
        if problem:
            return "", problem
        url = url.set(password=password)
    return url.set(drivername=driver).render_as_string(hide_password=False), None


def url_secrets(url: str) -> tuple[str, ...]:
    """The password in a database URL, to be redacted from logs."""
    password = make_url(url).password
    return (str(password),) if password else ()


def password_credentials(password_env: str) -> list[Credential]:
    """Where the database password comes from, for ``credit-gateway certs list``."""
    return [Credential("password_env", "password", f"environment variable {password_env}")] if password_env else []
