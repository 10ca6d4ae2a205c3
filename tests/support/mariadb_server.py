"""A private MariaDB server for the tests: mariadb-install-db in a temporary directory, on a free 127.0.0.1 port.

Debian's ``mariadb-server`` package provides the binaries (``make test`` installs it through
``tests/ensure-deps.sh``); the system service is not used. When the tests run as root the server runs as the
``mysql`` system user the package creates (mariadbd refuses root unless told otherwise). Set
``CG_NO_MARIADB=1`` to skip the MariaDB variants explicitly.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.pg_server import _free_port

SERVER = Path("/usr/sbin/mariadbd")
INSTALL_DB = Path("/usr/bin/mariadb-install-db")
READY_TIMEOUT_S = 60.0


def mariadb_installed() -> bool:
    return SERVER.exists() and INSTALL_DB.exists()


@contextmanager
def mariadb_server() -> Iterator[str]:
    """Yields a SQLAlchemy URL (mysql://root@127.0.0.1:PORT/mysql) of a fresh server."""
    if not mariadb_installed():
        raise RuntimeError("MariaDB is not installed: run `make test` (it installs it) or set CG_NO_MARIADB=1")
    user = "mysql" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
    base = Path(tempfile.mkdtemp(prefix="cg-mariadb-"))
    data = base / "data"
    if os.geteuid() == 0:
        pw = pwd.getpwnam(user)
        os.chown(base, pw.pw_uid, pw.pw_gid)
    port = _free_port()
    # root may connect over TCP without a password: the server listens on 127.0.0.1 only and lives as long as the run
    subprocess.run([str(INSTALL_DB), f"--user={user}", f"--datadir={data}", "--auth-root-authentication-method=normal",
                    "--skip-test-db", "--skip-name-resolve"], check=True, capture_output=True, text=True)
    server = subprocess.Popen(
        [str(SERVER), "--no-defaults", f"--user={user}", f"--datadir={data}", f"--port={port}",
         "--bind-address=127.0.0.1", f"--socket={base / 'sock'}", f"--pid-file={base / 'pid'}",
         "--skip-name-resolve", "--innodb-flush-log-at-trx-commit=0", "--innodb-buffer-pool-size=32M",
         "--max-connections=200", "--character-set-server=utf8mb4", "--collation-server=utf8mb4_bin",
         f"--log-error={base / 'log'}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_ready(server, port, base / "log")
        yield f"mysql://root@127.0.0.1:{port}/mysql"
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        shutil.rmtree(base, ignore_errors=True)


def _wait_ready(server: subprocess.Popen[bytes], port: int, log: Path) -> None:
    """Until the server accepts a connection (it binds the port only once it is ready) or exits."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"mariadbd exited with {server.returncode}: {_tail(log)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                return
        except OSError:
            time.sleep(0.05)  # polling a port that is not yet bound: there is nothing to wait on
    raise RuntimeError(f"mariadbd not ready after {READY_TIMEOUT_S:.0f} s: {_tail(log)}")


def _tail(log: Path) -> str:
    try:
        return log.read_text(errors="replace")[-2000:]
    except OSError:
        return "(no log)"


def create_database(admin_url: str, name: str) -> str:
    """Create an empty database (utf8mb4) on the test server and return its URL (``name`` must be new)."""
    import asyncio

    import asyncmy  # type: ignore[import-untyped]
    from sqlalchemy.engine import make_url

    url = make_url(admin_url)

    async def create() -> None:
        conn = await asyncmy.connect(host=url.host, port=url.port, user=url.username, password=url.password or "")
        try:
            async with conn.cursor() as cur:
                await cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
        finally:
            conn.close()

    asyncio.run(create())
    return admin_url.rsplit("/", 1)[0] + "/" + name
