"""The types of a mapping file's options, checked before anything is compiled from them.

TOML gives any option any type: ``date_format = 42`` is valid TOML. Each option of a field table (and of
``[operation]``) is checked here against what the compiler expects; a wrong one is a problem at its TOML path
(``fields.decision_date.date_format: expected …``) and is left out, so the rest of the file is still compiled
and every problem is reported together, never a traceback.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any

from gateway.errors import Problem
from gateway.text import control_reason

MAX_DECIMALS = 18  # the 2019 standard's amounts are decimal(18,6)


def _text(v: Any) -> bool:
    return isinstance(v, str)


def _name(v: Any) -> bool:
    return isinstance(v, str) and v != ""


def _names(v: Any) -> bool:
    return _name(v) or (isinstance(v, list) and all(_name(i) for i in v))


def _formats(v: Any) -> bool:
    return _name(v) or (isinstance(v, list) and v != [] and all(_name(i) for i in v))


def _scalar(v: Any) -> bool:
    """A constant: text without control characters (TOML can write "\\u0000"), a number, a boolean, a date."""
    return (isinstance(v, str) and control_reason(v, free_text=True) is None) or isinstance(v, int | float | dt.date)


def _value(v: Any) -> bool:
    return _scalar(v) or (isinstance(v, list) and all(_scalar(i) for i in v))


def _decimals(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_DECIMALS


Check = Callable[[Any], bool]

FIELD_OPTIONS: Mapping[str, tuple[Check, str]] = {
    "from": (_name, "a column or field name (text)"),
    "value": (_value, "a constant: text without control characters, a number, a boolean or a date (or a list)"),
    "default": (_value, "a constant: text without control characters, a number, a boolean or a date (or a list)"),
    "transform": (_names, 'a step name or a list of them, e.g. ["strip", "halfwidth"]'),
    "date_format": (_formats, 'a date format such as "%Y-%m-%d", or a non-empty list of them'),
    "unit": (_name, "a unit name (text)"),
    "split": (_name, 'the separator characters (non-empty text), e.g. ",，;；"'),
    "join": (_text, 'the separator (text), e.g. ";"'),
    "codes": (_name, "the name of a code table (text)"),
    "required": (lambda v: isinstance(v, bool), "true or false"),
    "decimals": (_decimals, f"a whole number of decimal places, 0 to {MAX_DECIMALS}"),
    "description": (_text, "text"),
}
OPERATION_OPTIONS: Mapping[str, tuple[Check, str]] = {
    "from": FIELD_OPTIONS["from"],
    "value": FIELD_OPTIONS["value"],
    "codes": FIELD_OPTIONS["codes"],
    "default": (_name, "an operation (text)"),
}


def checked_options(raw: dict[str, Any], where: str, problems: list[Problem],
                    options: Mapping[str, tuple[Check, str]] = FIELD_OPTIONS) -> dict[str, Any]:
    """``raw`` without the options of a wrong type, each of them a problem at ``where.option``."""
    out = {}
    for key, value in raw.items():
        check = options.get(key)
        if check is not None and not check[0](value):
            problems.append(Problem(f"{where}.{key}", f"expected {check[1]}, got {_shown(value)}"))
            continue
        out[key] = value
    return out


def check_text(head: Mapping[str, Any], key: str, where: str, problems: list[Problem]) -> None:
    """An optional text option of a head table (e.g. ``mapping.table_version``)."""
    if key in head and not isinstance(head[key], str):
        problems.append(Problem(f"{where}.{key}", f"expected text, got {_shown(head[key])}"))


def _shown(value: Any) -> str:
    kinds = {str: "text", dict: "a table", list: "a list", bool: "a boolean", int: "a number", float: "a number"}
    kind = kinds.get(type(value))
    text = repr(value)
    return f"{kind or type(value).__name__} {text if len(text) <= 40 else text[:40] + '…'}"
