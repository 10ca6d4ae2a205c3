"""GB/T 2260 行政区划代码: the shipped table (``gbt2260.csv`` beside this module) and the check of a 6-digit code.

The table holds province, prefecture and county codes, current and abolished (a history load carries codes of
their time), compiled from python-stdnum's ``cn/loc.dat`` (itself from the zh.wikipedia lists of the codes):
not the 民政部's official list, which cannot be fetched here. ``load_regions(path)`` reads a replacement with
the same columns.
"""

from __future__ import annotations

import csv
import functools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

REGIONS_CSV = Path(__file__).with_name("gbt2260.csv")


@dataclass(frozen=True, slots=True)
class Region:
    """One code of the table: its name and, where known, the years it came into and went out of use."""

    code: str
    name: str
    since: int | None
    until: int | None  # None: still in use


def _year(text: str) -> int | None:
    return int(text) if text.strip() else None


def load_regions(path: Path = REGIONS_CSV) -> Mapping[str, Region]:
    """The table at ``path``: code → region (lines starting with ``#`` are comments)."""
    with path.open(encoding="utf-8", newline="") as handle:
        lines = (line for line in handle if not line.startswith("#"))
        return {row["code"]: Region(row["code"], row["name"], _year(row["since"]), _year(row["until"]))
                for row in csv.DictReader(lines)}


@functools.cache
def shipped_regions() -> Mapping[str, Region]:
    """The shipped table, read once."""
    return load_regions()


def check_region(code: str) -> str | None:
    """None when ``code`` is a 6-digit code of the shipped GB/T 2260 table, else a short reason."""
    if len(code) != 6 or not code.isascii() or not code.isdigit():
        return f"{code!r} is not a 6-digit GB/T 2260 code"
    if code not in shipped_regions():
        return f"{code} is not in the GB/T 2260 table"
    return None


def is_province(code: str) -> bool:
    """A province-level code (``xx0000``) of the table."""
    return code.endswith("0000") and code in shipped_regions()
