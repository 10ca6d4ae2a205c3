"""The whitelisted steps a mapping field may name, and the date parsers: plain functions, chosen at compile time."""

from __future__ import annotations

import datetime as dt
import unicodedata
from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

RowValue = Any
Step = Callable[[Any], Any]
DatedStep = Callable[[Any, "dt.date | None"], Any]


class MappingError(ValueError):
    """A value could not be converted; the message is the reason, the caller adds the field."""


# ---------------------------------------------------------------- whitelisted steps

def strip_step(v: Any) -> Any:
    return v.strip() if isinstance(v, str) else v


def _halfwidth(v: Any) -> Any:
    return unicodedata.normalize("NFKC", v) if isinstance(v, str) else v


def _collapse(v: Any) -> Any:
    return " ".join(v.split()) if isinstance(v, str) else v


def _no_spaces(v: Any) -> Any:
    return "".join(v.split()) if isinstance(v, str) else v


TRANSFORMS: Mapping[str, Step] = {
    "strip": strip_step,
    "upper": lambda v: v.upper() if isinstance(v, str) else v,
    "lower": lambda v: v.lower() if isinstance(v, str) else v,
    "halfwidth": _halfwidth,  # 全角 → 半角 (NFKC), e.g. "９１３２…" → "9132…"
    "collapse_spaces": _collapse,
    "remove_spaces": _no_spaces,
}

UNITS: Mapping[str, Decimal] = {
    "yuan_to_wan": Decimal("0.0001"),  # 元 → 万元 (the 2019 standard's CF_NR_FK unit)
    "wan_to_yuan": Decimal(10000),
    "fen_to_yuan": Decimal("0.01"),
    "none": Decimal(1),
}


def to_decimal(v: Any) -> Decimal:
    if isinstance(v, Decimal) and v.is_finite():
        return v
    if isinstance(v, bool):
        raise MappingError(f"expected a number, got {v!r}")
    try:
        value = Decimal(str(v).replace(",", "").strip())
    except InvalidOperation:
        raise MappingError(f"expected a number, got {v!r}") from None
    if not value.is_finite():
        raise MappingError(f"expected a finite number, got {v!r}")
    return value


_FAST_FORMATS = {"%Y-%m-%d": "-", "%Y/%m/%d": "/", "%Y.%m.%d": "."}


class _NoSuchDate(ValueError):
    """A text in a date format's shape that names no day (2026/02/30)."""


def _fast_date(text: str, sep: str) -> dt.date | None:
    """YYYY<sep>MM<sep>DD without strptime (the common case, several times faster); None if no match. A month
    of 1-12 and a day of 1-31 are the format's shape (as strptime's %m and %d): _NoSuchDate if no such day."""
    parts = text.split(sep)
    if len(parts) != 3 or len(parts[0]) != 4 or not all(p.isdigit() and p.isascii() for p in parts):
        return None
    try:
        return dt.date(int(parts[0]), int(parts[1]), int(parts[2]))
    except (ValueError, OverflowError):  # a month of twenty digits overflows before it is out of range
        if len(parts[1]) <= 2 and len(parts[2]) <= 2 and 1 <= int(parts[1]) <= 12 and 1 <= int(parts[2]) <= 31:
            raise _NoSuchDate(text) from None
        return None


def date_parser(formats: list[str]) -> Step:
    def parse(v: Any) -> dt.date:
        if isinstance(v, dt.datetime):
            return v.date()
        if isinstance(v, dt.date):
            return v
        text = str(v).strip()
        no_such_day = False
        for fmt in formats:
            try:
                day = _parse_date(text, fmt)
            except _NoSuchDate:
                no_such_day = True
                continue
            if day is not None:
                return day
        if no_such_day:
            raise MappingError(f"no such date: {text!r} (format {' or '.join(formats)})")
        raise MappingError(f"{text!r} does not match date format {' or '.join(formats)}")

    return parse


def _parse_date(text: str, fmt: str) -> dt.date | None:
    """The day ``text`` names in ``fmt``; None if it is not in the format's shape, _NoSuchDate if no such day."""
    sep = _FAST_FORMATS.get(fmt)
    if sep is not None:
        return _fast_date(text, sep)
    try:
        return dt.datetime.strptime(text, fmt).date()  # noqa: DTZ007 - a calendar date, no zone
    except ValueError as exc:  # "time data … does not match format …", else the shape matched: no such day
        if str(exc).startswith(("time data", "unconverted data")):
            return None
        raise _NoSuchDate(text) from None


def plain_text(v: Any) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)
