"""China time: the calendar day every deadline, report and date in the domain is counted in (UTC+8, no DST)."""

from __future__ import annotations

import datetime as dt

CHINA = dt.timezone(dt.timedelta(hours=8), "Asia/Shanghai")


def china_today() -> dt.date:
    return dt.datetime.now(CHINA).date()


def china_time(epoch: float) -> dt.datetime:
    """A Unix time as an aware datetime in China time."""
    return dt.datetime.fromtimestamp(epoch, CHINA)
