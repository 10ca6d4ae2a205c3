"""The allocator tuning of the daemon, its workers and the sandbox (gateway.tuning.tune_process): buffers of
megabytes, made and freed over and over by the main thread and by other threads, reuse the process's memory
instead of fresh pages.

Each case runs in its own interpreter (the tuning is process-wide) and counts the minor page faults of a loop
that makes and fills an 8 MiB buffer forty times: a fresh mapping would fault in all 2,048 of its pages each
time, about 80,000 faults.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = (8 << 20) // 4096
ROUNDS = 40

LOOP = textwrap.dedent(f"""
    import json, resource, sys, threading
    sys.path.insert(0, {str(ROOT)!r})
    from gateway.tuning import tune_process
    if sys.argv[1] == "tuned":
        tune_process()

    def churn(out, name):
        bytes(8 << 20)  # the first one may take fresh pages
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range({ROUNDS}):
            buffer = bytearray(8 << 20)  # zero-filled: every page is written
            buffer[-1] = 1
            del buffer
        out[name] = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    faults = {{}}
    churn(faults, "main")
    thread = threading.Thread(target=churn, args=(faults, "thread"))
    thread.start()
    thread.join()
    print(json.dumps(faults))
""")


def _faults(mode: str) -> dict[str, int]:
    done = subprocess.run([sys.executable, "-c", LOOP, mode], capture_output=True, text=True, timeout=60, check=True)
    return dict(json.loads(done.stdout))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_megabyte_buffers_reuse_memory_in_every_thread() -> None:
    faults = _faults("tuned")
    # About one buffer's pages per thread (measured: 2,014 of 2,048; the first round grows the heap), nowhere
    # near one buffer per round (measured before the tuning: 81,960).
    assert faults["main"] < 2 * PAGES, faults
    assert faults["thread"] < 2 * PAGES, faults


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_the_loop_measures_faults() -> None:
    """The same loop with the buffers mapped afresh each time (what the tuning replaced) faults every page of
    every round: the count above would catch a tuning that does not take effect."""
    loop = LOOP.replace("if sys.argv[1] == \"tuned\":\n    tune_process()",
                        "import ctypes\nctypes.CDLL(None).mallopt(-3, 1 << 20)")
    assert loop != LOOP
    done = subprocess.run([sys.executable, "-c", loop, "mapped"], capture_output=True, text=True, timeout=60,
                          check=True)
    faults = json.loads(done.stdout)
    assert faults["main"] > ROUNDS * PAGES * 0.9, faults
