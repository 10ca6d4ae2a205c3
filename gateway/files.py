"""Files only the gateway's own user may read: private keys, the store, evidence files, the spool directory.

They hold private keys, every full ID number and the subject-key secret, so they are written 0600 (directories
0700) whatever the umask, and ``credit-gateway check`` warns about keys and tokens that others can read.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` readable by its owner only (an existing file is narrowed to 0600 first)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE)
    with os.fdopen(fd, "wb") as file:
        os.fchmod(fd, PRIVATE_FILE)  # O_CREAT's mode applies only to a new file
        file.write(data)


def make_private_dir(path: Path) -> None:
    """Create ``path`` (and parents) as 0700; a directory that already exists is left as it is."""
    path.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)


def touch_private(path: Path) -> None:
    """Make sure ``path`` exists and is 0600 (SQLite gives its -wal and -shm files the database file's mode)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, PRIVATE_FILE)
    try:
        os.fchmod(fd, PRIVATE_FILE)
    finally:
        os.close(fd)


def exposure(path: Path) -> str:
    """'' when only the owner can read ``path``, else what is wrong ('readable by group and others (0644)')."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return ""
    who = [name for bit, name in ((stat.S_IRGRP, "group"), (stat.S_IROTH, "others")) if mode & bit]
    return f"readable by {' and '.join(who)} ({mode:04o})" if who else ""
