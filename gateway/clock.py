"""China time: the calendar day every deadline, report and date in the domain is counted in (UTC+8, no DST)."""

from __future__ import annotations

import datetime as dt

CHINA = dt.timezone(dt.timedelta(hours=8), "Asia/Shanghai")


def china_today() -> dt.date:
    return dt.datetime.now(CHINA).date()


def china_time(epoch: float) -> dt.datetime:
    """A Unix time as an aware datetime in China time."""
    return dt.datetime.fromtimestamp(epoch, CHINA)


def age(seconds: float | None) -> str:
    """A duration for people: 42s, 3.5m, 2.0h, 1.5d (``-`` for none)."""
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"
