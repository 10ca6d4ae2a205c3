"""Process-wide tuning of the garbage collector and the C allocator, for the processes that move records in bulk:
the daemon, its mapping workers (gateway.pipeline.workers) and the platform sandbox (gateway.sandbox.server).

It imports nothing of the gateway, so the sandbox uses it without loading the daemon's modules.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc


def tune_process() -> None:
    """The pipeline allocates millions of short-lived dicts and few cycles: the default thresholds run a
    collection every 700 allocations, about a tenth of the daemon's time. Collect less often (measured: higher
    thresholds than these let garbage pile up between full collections at a million rows), and leave
    everything loaded at start-up out of it. Then the allocator (:func:`_tune_malloc`)."""
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)
    _tune_malloc()


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8  # glibc mallopt parameters
_MMAP_THRESHOLD = 32 << 20  # the largest glibc accepts on 64-bit: every buffer of the pipeline is smaller
_TRIM_THRESHOLD = 64 << 20


def _tune_malloc() -> None:
    """Batch bodies, pages and their pickles are megabytes each, made and freed all the time by several threads.

    Measured at 100,000 rows (perf, minor faults per record):

    * glibc's defaults keep the freed megabytes in per-thread arenas and raise the mmap threshold after the
      first free: the peak RSS at 1M rows kept rising;
    * with buffers of a megabyte or more mapped and unmapped instead (the setting before), every byte of them
      was a fresh page from the kernel: 2.5 page faults per record in the daemon and 1 in the
      worker, and zeroing those pages alone took 6–7 % of the gateway's CPU;
    * with the buffers taken from the heap (threshold 32 MiB), two arenas shared by the threads, and up to
      64 MiB of free heap kept rather than returned, the faults fall to 0.5 and 0.2 per record and the CPU per
      record by 5–8 % in each process; the peak RSS at 1M rows levels off at about 240 MB, as before.

    The cost: after a large backlog the daemon keeps up to 64 MiB of free heap for the next one."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to tune
        libc = ctypes.CDLL(None)
        libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
        libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)
        libc.mallopt(_M_ARENA_MAX, 2)
