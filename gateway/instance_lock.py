"""One daemon per SQLite store: a lock file beside the database, held while the daemon (or a one-shot run) lives.

Two daemons on one SQLite file would both poll, lease and deliver; SQLite's own locking keeps the file intact but
not the work apart. The lock is ``flock`` on ``<store>.lock`` (released by the kernel when the process ends, even
by SIGKILL: no stale lock to clean up), and the file names the holder's PID so the refusal can say who runs.
PostgreSQL stores are made for several instances (docs/instances.md) and take no lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from gateway.errors import GatewayError

SQLITE_PREFIX = "sqlite:///"


class StoreInUse(GatewayError):
    """Another gateway process holds this SQLite store."""


def sqlite_file(url: str) -> Path | None:
    """The database file of a ``sqlite:///`` store URL (already made absolute), else None."""
    if not url.startswith(SQLITE_PREFIX) or ":memory:" in url:
        return None
    return Path(url[len(SQLITE_PREFIX):].split("?", 1)[0])


@contextlib.contextmanager
def store_lock(url: str) -> Iterator[Path | None]:
    """Hold the store's lock for the ``with`` block; StoreInUse naming the running PID when another holds it."""
    database = sqlite_file(url)
    if database is None:
        yield None
        return
    path = database.with_name(database.name + ".lock")
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise StoreInUse(f"another gateway (pid {holder}) is running on the store {database}; "
                             f"stop it first, or give this one its own store.url") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield path
    finally:
        os.close(fd)  # closing the descriptor releases the lock
