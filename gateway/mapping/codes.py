"""Code tables of a mapping file: local codes to standard ones, optionally with effective dates."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.errors import Problem
from gateway.mapping.steps import MappingError

# ---------------------------------------------------------------- code tables

@dataclass(frozen=True, slots=True)
class CodeEntry:
    value: str
    valid_from: dt.date | None = None
    valid_until: dt.date | None = None

    def effective(self, on: dt.date | None) -> bool:
        if on is None:
            return self.valid_until is None
        return (self.valid_from is None or self.valid_from <= on) and (
            self.valid_until is None or on <= self.valid_until)


@dataclass(frozen=True)
class CodeTable:
    """Local code → standard value, optionally with effective dates (several entries per code)."""

    name: str
    entries: Mapping[str, tuple[CodeEntry, ...]]
    unknown: str = "reject"  # reject | keep

    def lookup(self, code: Any, on: dt.date | None = None) -> str:
        key = str(code).strip()
        candidates = self.entries.get(key)
        if not candidates:
            if self.unknown == "keep":
                return key
            raise MappingError(f"unknown code {key!r} (code table {self.name})")
        for entry in candidates:
            if entry.effective(on):
                return entry.value
        when = on.isoformat() if on else "today"
        raise MappingError(f"code {key!r} is not in effect on {when} (code table {self.name})")


def parse_code_table(name: str, raw: Any, where: str, problems: list[Problem]) -> CodeTable | None:
    if not isinstance(raw, dict):
        problems.append(Problem(where, "a code table must be a table of code = value"))
        return None
    unknown = raw.get("_unknown", "reject")
    if unknown not in ("reject", "keep"):
        problems.append(Problem(f"{where}._unknown", "must be 'reject' or 'keep'"))
    entries: dict[str, tuple[CodeEntry, ...]] = {}
    for code, value in raw.items():
        if code == "_unknown":
            continue
        parsed = _parse_code_value(value, f"{where}.{code}", problems)
        if parsed:
            entries[str(code)] = parsed
    return CodeTable(name, entries, unknown)


def _parse_code_value(value: Any, where: str, problems: list[Problem]) -> tuple[CodeEntry, ...]:
    if isinstance(value, str):
        return (CodeEntry(value),)
    if isinstance(value, list) and all(isinstance(v, dict) for v in value):
        out = []
        for i, item in enumerate(value):
            if not isinstance(item.get("value"), str):
                problems.append(Problem(f"{where}[{i}].value", "missing value"))
                continue
            out.append(CodeEntry(item["value"], _opt_date(item.get("from"), f"{where}[{i}].from", problems),
                                 _opt_date(item.get("until"), f"{where}[{i}].until", problems)))
        return tuple(out)
    problems.append(Problem(where, 'expected "value" or a list of {value, from, until}'))
    return ()


def _opt_date(v: Any, where: str, problems: list[Problem]) -> dt.date | None:
    if v is None or (isinstance(v, dt.date) and not isinstance(v, dt.datetime)):
        return v
    problems.append(Problem(where, "expected a TOML date (YYYY-MM-DD, unquoted, no time)"))
    return None


