"""What the daemon's process does before anything else: a SIGTERM or SIGINT during start-up stops it cleanly.

Until :func:`gateway.daemon.serve` hands the signals to its event loop (a graceful stop), a SIGTERM raises
:class:`StoppedDuringStartUp` wherever the process is (importing, loading the config, opening the store), and the
command exits 0: nothing has been taken from a source yet, so there is nothing to finish. Without it the
default action killed the process (status 143) for the first second or two of every start. This module imports
nothing of the gateway, so ``python -m gateway`` installs the handler before the command line's imports.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType


class StoppedDuringStartUp(SystemExit):
    """SIGTERM before the daemon was running: exit status 0 (a SystemExit, so every ``finally`` still runs)."""

    def __init__(self) -> None:
        super().__init__(0)


def _stop(signum: int, frame: FrameType | None) -> None:
    raise StoppedDuringStartUp


def stop_on_sigterm() -> None:
    """From now on until the event loop takes the signal over, a SIGTERM stops the process with status 0."""
    if threading.current_thread() is threading.main_thread():  # the command line called from a thread: not ours
        signal.signal(signal.SIGTERM, _stop)


def default_sigterm() -> None:
    """Commands other than ``run``: a SIGTERM ends them as it ends any program."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
