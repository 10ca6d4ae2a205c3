"""Mapping files: ops-editable TOML compiled once into plain functions.

Two kinds of mapping:

* ``inbound``: a source row (column → value) becomes a canonical :class:`~gateway.records.Record`.
* ``outbound``: a canonical record becomes a target's record (e.g. the 2019 ``CF_*``/``XK_*`` names).

Each ``[fields.NAME]`` table takes a source (``from = "column"`` or ``value = "constant"``), an optional
``default``, ``transform`` steps from a whitelist, ``date_format``, ``unit`` (元 ↔ 万元), ``split``/``join``
for lists, ``codes`` (a code table, optionally with effective dates), ``required`` and ``required_if``.
Nothing is evaluated: every step is a named function chosen at compile time. Every problem names the
file and the TOML path; :func:`load_mapping` collects them all before raising.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import tomllib
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from gateway.domain.datasets import Dataset, FieldSpec, get_dataset, validate
from gateway.domain.subject_keys import KeySecret, record_key
from gateway.errors import ConfigError, Problem
from gateway.mapping.options import OPERATION_OPTIONS, check_text, checked_options
from gateway.records import FieldValue, LedgerEntry, Operation, Record, ledger_entry, to_json_value

RowValue = Any
Step = Callable[[Any], Any]


class MappingError(ValueError):
    """A value could not be converted; the message is the reason, the caller adds the field."""


# ---------------------------------------------------------------- whitelisted steps

def _strip(v: Any) -> Any:
    return v.strip() if isinstance(v, str) else v


def _halfwidth(v: Any) -> Any:
    return unicodedata.normalize("NFKC", v) if isinstance(v, str) else v


def _collapse(v: Any) -> Any:
    return " ".join(v.split()) if isinstance(v, str) else v


def _no_spaces(v: Any) -> Any:
    return "".join(v.split()) if isinstance(v, str) else v


TRANSFORMS: Mapping[str, Step] = {
    "strip": _strip,
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


def _date_parser(formats: list[str]) -> Step:
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


def _parse_code_table(name: str, raw: Any, where: str, problems: list[Problem]) -> CodeTable | None:
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


# ---------------------------------------------------------------- compiled mappings

Converter = Callable[[Mapping[str, Any], "dt.date | None"], Any]
_SPECIAL = ("@operation", "@key", "@version", "@dataset")
_FIELD_KEYS = {"from", "value", "default", "transform", "date_format", "unit", "split", "join", "codes",
               "required", "required_if", "decimals", "description"}
DEFAULT_DATE_FORMATS = ["%Y-%m-%d", "%Y/%m/%d", "%Y%m%d", "%Y-%m-%d %H:%M:%S", "%Y/%m/%d %H:%M:%S"]


@dataclass(frozen=True)
class MappedRow:
    """The result of mapping one row: a record, or the problems that stop it."""

    record: Record | None
    problems: list[Problem]
    key: str = ""  # the natural key as far as it could be read, also for rejected rows


@dataclass(frozen=True)
class FieldPlan:
    """One compiled inbound field as the code generator (:mod:`gateway.mapping.fast`) sees it: what it reads, the
    transform steps by name, and the reference functions to call for anything it does not write out itself."""

    name: str
    spec: FieldSpec
    column: str | None  # None: a constant (``value``) or no source
    steps: tuple[str, ...]  # TRANSFORMS names, in order
    table: CodeTable | None
    formats: tuple[str, ...]  # date fields: the date formats, in order
    factor: Decimal  # decimal fields: the unit factor
    default: Any
    convert: DatedStep  # the kind step, applied to a non-empty value after the transform steps
    run: Converter  # the whole field (fetch, steps, default, convert): the reference


@dataclass(frozen=True)
class OperationPlan:
    """The ``[operation]`` table as the code generator sees it (None on the mapping: always upsert)."""

    column: str | None
    table: CodeTable | None
    default: str


FastMap = Callable[[Mapping[str, Any], dt.date, "KeySecret | None"],
                   tuple[dict[str, FieldValue], Operation, list[Problem], str]]


@dataclass(frozen=True)
class InboundMapping:
    """Source row → canonical record, compiled from an ``inbound`` mapping file."""

    path: str
    dataset: Dataset
    converters: tuple[tuple[str, Converter], ...]
    operation: Converter
    conditions: tuple[tuple[str, str, frozenset[str]], ...]  # (field, when-field, when-values)
    version: int = 0  # the newest mtime (ns) of the file and its includes, when it was compiled
    plain: tuple[tuple[str, str], ...] = ()  # (field, column) text copied stripped: most fields, done inline
    plans: tuple[FieldPlan, ...] = ()  # one per converter, in the same order
    operation_plan: OperationPlan | None = None
    # The whole row in one generated function (gateway.mapping.fast): fields, operation, problems, key. None: the
    # interpreted path below, which stays the reference the generated one is tested against.
    fast: FastMap | None = field(default=None, compare=False, repr=False)

    def reference(self) -> InboundMapping:
        """This mapping without its generated function: every row through the interpreted path."""
        return dataclasses.replace(self, fast=None)

    def map_row(self, row: Mapping[str, Any], today: dt.date, source: str = "", source_key: str = "", *,
                secret: KeySecret | None = None) -> MappedRow:
        """``secret``: the store's key secret, needed by datasets whose keys pseudonymise ID numbers."""
        if self.fast is not None:
            fields, op, found, key = self.fast(row, today, secret)
            if found:
                return MappedRow(None, found, key)
            return MappedRow(Record(self.dataset.name, key, op, fields, source, source_key), [], key)
        fields, problems = self._convert(row)
        operation = self.row_operation(row, _as_date(fields.get(self.dataset.date_field)), problems)
        problems += self._conditions(fields)
        problems += validate(self.dataset, fields, today)
        key = record_key(self.dataset, fields, secret)
        if problems:
            return MappedRow(None, _dedupe(problems), key)
        return MappedRow(Record(self.dataset.name, key, operation, fields, source, source_key), [], key)

    def map_entry(self, row: Mapping[str, Any], today: dt.date, source: str = "", source_key: str = "", *,
                  secret: KeySecret | None = None) -> tuple[LedgerEntry | None, list[Problem], str]:
        """:meth:`map_row` for the pipeline: the ledger entry of a valid row (no Record in between), else its
        problems; and the key either way."""
        if self.fast is None:
            mapped = self.map_row(row, today, source, source_key, secret=secret)
            return (mapped.record.entry() if mapped.record else None), mapped.problems, mapped.key
        fields, op, problems, key = self.fast(row, today, secret)
        if problems:
            return None, problems, key
        return ledger_entry(self.dataset.name, key, op.value, fields, source, source_key), [], key

    def _convert(self, row: Mapping[str, Any]) -> tuple[dict[str, FieldValue], list[Problem]]:
        fields: dict[str, FieldValue] = {}
        problems: list[Problem] = []
        on: dt.date | None = None
        for name, column in self.plain:
            value = row.get(column)
            if value.__class__ is str:
                value = value.strip()
                if value:
                    fields[name] = value
            elif value is not None:
                fields[name] = _plain(value)
        for name, convert in self.converters:
            try:
                value = convert(row, on)
            except MappingError as exc:
                problems.append(Problem(name, str(exc)))
                continue
            if value is not None:
                fields[name] = value
            if name == self.dataset.date_field and isinstance(value, dt.date):
                on = value
        return fields, problems

    def row_operation(self, row: Mapping[str, Any], on: dt.date | None, problems: list[Problem]) -> Operation:
        """The operation a row carries (``on``: its decision date, for dated codes); a problem if none."""
        try:
            return Operation(self.operation(row, on))
        except (MappingError, ValueError) as exc:
            problems.append(Problem("operation", str(exc)))
            return Operation.UPSERT

    def _conditions(self, fields: Mapping[str, FieldValue]) -> list[Problem]:
        problems = []
        for name, when, values in self.conditions:
            if fields.get(name) not in (None, "", []):
                continue
            if when == "@always":
                problems.append(Problem(name, "required by the mapping"))
            elif fields.get(when) in values:
                problems.append(Problem(name, f"required when {when} is {fields.get(when)}"))
        return problems


@dataclass(frozen=True)
class OutboundMapping:
    """Canonical record → target record, compiled from an ``outbound`` mapping file."""

    path: str
    dataset: Dataset
    table_code: str
    table_version: str
    converters: tuple[tuple[str, Converter], ...]
    version: int = 0  # the newest mtime (ns) of the file and its includes, when it was compiled
    renames: tuple[tuple[str, str], ...] = ()  # (target, canonical) fields copied as they are: the common case

    @property
    def target_fields(self) -> tuple[str, ...]:
        """Every field name this mapping can produce (a table sink's columns)."""
        return tuple(t for t, _ in self.renames) + tuple(name for name, _ in self.converters)

    def sources_of(self, canonical: str) -> tuple[str, ...]:
        """Target fields that are a plain copy of one canonical field (e.g. the column holding a list's code)."""
        return tuple(t for t, s in self.renames if s == canonical)

    def map_record(self, record: Record, fields: Mapping[str, FieldValue] | None = None) -> dict[str, Any]:
        """Target fields for one record (``fields`` overrides the record's, e.g. after masking)."""
        payload = {k: to_json_value(v) for k, v in (fields if fields is not None else record.fields).items()
                   if v is not None}
        return self.map_payload(payload, record.operation.value, record.key, record.version)

    def map_payload(self, payload: Mapping[str, Any], operation: str, key: str, version: int) -> dict[str, Any]:
        """Target fields from a canonical payload as the ledger stores it (JSON values)."""
        out: dict[str, Any] = {t: v for t, s in self.renames if (v := payload.get(s)) is not None and v != ""}
        source: dict[str, Any] = dict(payload)
        source["@operation"], source["@key"], source["@version"] = operation, key, version
        source["@dataset"] = self.dataset.name
        for name, convert in self.converters:
            value = convert(source, None)
            if value is not None and value != "":
                out[name] = value
        return out


def _as_date(v: Any) -> dt.date | None:
    return v if isinstance(v, dt.date) else None


def _dedupe(problems: list[Problem]) -> list[Problem]:
    seen: dict[str, Problem] = {}
    for p in problems:
        seen.setdefault(p.path, p)
    return list(seen.values())


# ---------------------------------------------------------------- compiler

@dataclass
class _Ctx:
    """What one field's compilation needs: where it is, the code tables, the problem list."""

    where: str
    codes: Mapping[str, CodeTable]
    problems: list[Problem]

    def problem(self, key: str, message: str) -> None:
        self.problems.append(Problem(f"{self.where}.{key}" if key else self.where, message))

    def code_table(self, raw: dict[str, Any]) -> CodeTable | None:
        name = raw.get("codes")
        if name is None:
            return None
        if name not in self.codes:
            self.problem("codes", f"unknown code table {name!r}; defined: {', '.join(sorted(self.codes)) or 'none'}")
            return None
        return self.codes[name]

    def transforms(self, raw: dict[str, Any], default: list[str]) -> list[Step]:
        names = raw.get("transform", default)
        if isinstance(names, str):
            names = [names]
        bad = [n for n in names if n not in TRANSFORMS]
        if bad:
            self.problem("transform", f"unknown step(s) {', '.join(bad)}; allowed: {', '.join(TRANSFORMS)}")
        return [TRANSFORMS[n] for n in names if n in TRANSFORMS]


def _fetcher(raw: dict[str, Any], ctx: _Ctx) -> Callable[[Mapping[str, Any]], Any]:
    if "value" in raw:
        constant = raw["value"]
        return lambda row: constant
    column = raw.get("from")
    if not isinstance(column, str) or not column:
        ctx.problem("", 'needs "from" (a column or field name) or "value" (a constant)')
        return lambda row: None
    return lambda row: row.get(column)


def _plain(v: Any) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


DatedStep = Callable[[Any, "dt.date | None"], Any]


def _date_formats(raw: dict[str, Any]) -> list[str]:
    formats = raw.get("date_format", DEFAULT_DATE_FORMATS)
    return [formats] if isinstance(formats, str) else list(formats)


def _inbound_kind_step(spec: FieldSpec, raw: dict[str, Any], ctx: _Ctx) -> DatedStep:
    table = ctx.code_table(raw)
    if spec.kind == "date":
        parse = _date_parser(_date_formats(raw))
        return lambda v, on: parse(v)
    if spec.kind == "decimal":
        unit_name = raw.get("unit", "none")
        if unit_name not in UNITS:
            ctx.problem("unit", f"unknown unit {unit_name!r}; allowed: {', '.join(UNITS)}")
        return _amount_step(UNITS.get(unit_name, Decimal(1)))
    if spec.kind == "list":
        return _list_step(str(raw.get("split", ";；,，、")), table)
    if table is not None:  # a code mapped to "" leaves the field empty (e.g. no withdraw_reason for 正常)
        return lambda v, on: table.lookup(_plain(v), on) or None
    return lambda v, on: _plain(v)


def _amount_step(factor: Decimal) -> DatedStep:
    def amount(v: Any, on: dt.date | None) -> Decimal:
        value = to_decimal(v)
        if value < 0:  # the source's value, not what the unit would make of it
            raise MappingError(f"negative amount {v!r}: expected zero or more")
        return (value * factor).normalize() if factor != 1 else value

    return amount


def _list_step(separators: str, table: CodeTable | None) -> DatedStep:
    def split(v: Any, on: dt.date | None) -> list[str]:
        items = v if isinstance(v, list) else _split_any(_plain(v), separators)
        return [table.lookup(i, on) if table else i for i in items]

    return split


def _split_any(text: str, separators: str) -> list[str]:
    for sep in separators[1:]:
        text = text.replace(sep, separators[0])
    return [part.strip() for part in text.split(separators[0]) if part.strip()]


def _compile_inbound_field(name: str, spec: FieldSpec, raw: dict[str, Any], ctx: _Ctx) -> FieldPlan:
    fetch = _fetcher(raw, ctx)  # first: compile problems keep their order
    steps = ctx.transforms(raw, ["strip"])
    convert = _inbound_kind_step(spec, raw, ctx)
    run = _inbound_converter(spec, raw, fetch, steps, convert)
    column, table = _plan_source(raw, ctx.codes)
    names = raw.get("transform", ["strip"])
    return FieldPlan(name, spec, column,
                     tuple(n for n in ([names] if isinstance(names, str) else names) if n in TRANSFORMS), table,
                     tuple(map(str, _date_formats(raw))) if spec.kind == "date" else (),
                     UNITS.get(raw.get("unit", "none"), Decimal(1)), raw.get("default"), convert, run)


def _inbound_converter(spec: FieldSpec, raw: dict[str, Any], fetch: Callable[[Mapping[str, Any]], Any],
                       steps: list[Step], convert: DatedStep) -> Converter:
    default = raw.get("default")
    column = raw.get("from") if "value" not in raw else None
    if isinstance(column, str) and steps == [_strip]:
        return _fast_inbound(column, convert, default, plain=spec.kind == "text" and "codes" not in raw)

    def run(row: Mapping[str, Any], on: dt.date | None) -> Any:
        value = fetch(row)
        for step in steps:
            value = step(value)
        if value is None or value == "":
            if default is None:
                return None
            value = default
        return convert(value, on)

    return run


def _fast_inbound(column: str, convert: DatedStep, default: Any, plain: bool) -> Converter:
    """The common case (a column, stripped, then converted) in one closure: it runs for every field of every row."""

    def run(row: Mapping[str, Any], on: dt.date | None) -> Any:
        value = row.get(column)
        if value.__class__ is str:
            value = value.strip()
            if plain and value:
                return value
        if value is None or value == "":
            if default is None:
                return None
            value = default
        return convert(value, on)

    return run


def _compile_outbound_field(raw: dict[str, Any], ctx: _Ctx, kind: str) -> Converter:
    """A converter from a canonical payload (JSON values: ISO dates, decimal strings, lists) to a target value."""
    fetch = _fetcher(raw, ctx)
    table = ctx.code_table(raw)
    steps = ctx.transforms(raw, [])
    render = _renderer(kind, str(raw.get("date_format", "%Y-%m-%d")), str(raw.get("join", ";")), raw.get("decimals"),
                       _unit(raw, ctx))
    default = raw.get("default")

    def run(record: Mapping[str, Any], on: dt.date | None) -> Any:
        value = fetch(record)
        if value is None or value == "" or value == []:
            value = default
            if value is None:
                return None
        value = render(value)
        if table is not None:
            value = table.lookup(value, on)
        for step in steps:
            value = step(value)
        return value

    return run


def _unit(raw: dict[str, Any], ctx: _Ctx) -> Decimal:
    name = raw.get("unit", "none")
    if name not in UNITS:
        ctx.problem("unit", f"unknown unit {name!r}; allowed: {', '.join(UNITS)}")
        return Decimal(1)
    return UNITS[name]


def _renderer(kind: str, date_format: str, joiner: str, decimals: Any, factor: Decimal) -> Step:
    if kind == "decimal" and factor != 1:
        places = None if decimals is None else int(decimals)
        return lambda v: _decimal_text(to_decimal(v) * factor, places)
    if kind == "date":
        if date_format == "%Y-%m-%d":
            return lambda v: v if isinstance(v, str) else _render(v, date_format, joiner, decimals)
        return lambda v: dt.date.fromisoformat(v).strftime(date_format) if isinstance(v, str) else _render(
            v, date_format, joiner, decimals)
    if kind == "decimal" and decimals is not None:
        places = int(decimals)
        return lambda v: f"{Decimal(str(v)):.{places}f}"
    return lambda v: _render(v, date_format, joiner, decimals)


def _decimal_text(value: Decimal, places: int | None) -> str:
    return f"{value:.{places}f}" if places is not None else format(value.normalize(), "f")


def _render(value: Any, date_format: str, joiner: str, decimals: Any) -> Any:
    if isinstance(value, list):
        return joiner.join(str(v) for v in value)
    if isinstance(value, dt.date):
        return value.strftime(date_format)
    if isinstance(value, Decimal):
        return f"{value:.{int(decimals)}f}" if decimals is not None else format(value.normalize(), "f")
    return value if isinstance(value, str | int) else str(value)


def _operation_converter(raw: Any, ctx: _Ctx) -> Converter:
    if raw is None:
        return lambda row, on: Operation.UPSERT.value
    if not isinstance(raw, dict):
        ctx.problem("operation", "must be a table with from/codes/default")
        return lambda row, on: Operation.UPSERT.value
    sub = _Ctx("operation", ctx.codes, ctx.problems)
    fetch, table = _fetcher(raw, sub), sub.code_table(raw)
    default = str(raw.get("default", Operation.UPSERT.value))
    if default not in Operation.__members__.values():
        sub.problem("default", f"unknown operation {default!r}; allowed: {', '.join(Operation)}")

    def run(row: Mapping[str, Any], on: dt.date | None) -> Any:
        value = fetch(row)
        if value is None or (isinstance(value, str) and not value.strip()):
            return default
        return table.lookup(_plain(value).strip(), on) if table else _plain(value).strip()

    return run


def _conditions(name: str, raw: dict[str, Any], ctx: _Ctx,
                fields: Mapping[str, FieldSpec]) -> list[tuple[str, str, frozenset[str]]]:
    cond = raw.get("required_if")
    if cond is None:
        return []
    if not isinstance(cond, dict) or not cond:
        ctx.problem("required_if", 'expected a table like { subject_category = "自然人" }')
        return []
    out = []
    for when, v in cond.items():
        if when not in fields:
            ctx.problem(f"required_if.{when}", "not a field of the dataset")
        elif isinstance(v, str) or (isinstance(v, list) and all(isinstance(i, str) for i in v)):
            out.append((name, when, frozenset([v] if isinstance(v, str) else v)))
        else:
            ctx.problem(f"required_if.{when}", "expected a value (text) or a list of them")
    return out


# ---------------------------------------------------------------- loading

def _read_toml(path: Path) -> dict[str, Any]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError([Problem("", f"cannot read: {exc.strerror}")], str(path)) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        hint = " (it looks like GBK: save it as UTF-8)" if _looks_gbk(data) else ""
        raise ConfigError([Problem("", f"not UTF-8 at byte {exc.start}{hint}")], str(path)) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([Problem("", f"invalid TOML: {exc}")], str(path)) from None


def _looks_gbk(data: bytes) -> bool:
    try:
        data.decode("gb18030")
    except UnicodeDecodeError:
        return False
    return True


def _load_code_tables(doc: dict[str, Any], path: Path, problems: list[Problem]) -> dict[str, CodeTable]:
    tables: dict[str, CodeTable] = {}
    includes = doc.get("mapping", {}).get("include", [])
    if isinstance(includes, str):
        includes = [includes]
    if not isinstance(includes, list):
        problems.append(Problem("mapping.include", "expected a list of file names"))
        includes = []
    for i, inc in enumerate(includes):
        inc_path = (path.parent / str(inc)).resolve()
        try:
            included = _read_toml(inc_path)
        except ConfigError as exc:
            problems += [Problem(f"mapping.include[{i}]", f"{inc_path}: {p}") for p in exc.problems]
            continue
        tables.update(_parse_tables(included.get("codes", {}), f"{inc_path.name}:codes", problems))
    tables.update(_parse_tables(doc.get("codes", {}), "codes", problems))
    return tables


def _parse_tables(raw: Any, where: str, problems: list[Problem]) -> dict[str, CodeTable]:
    out: dict[str, CodeTable] = {}
    for name, table in (raw or {}).items():
        parsed = _parse_code_table(name, table, f"{where}.{name}", problems)
        if parsed:
            out[name] = parsed
    return out


Mapping_ = InboundMapping | OutboundMapping


def load_mapping(path: str | Path) -> Mapping_:
    """Load and compile one mapping file; raise ConfigError listing every problem with its TOML path."""
    path = Path(path)
    doc = _read_toml(path)
    problems: list[Problem] = []
    head = doc.get("mapping")
    if not isinstance(head, dict):
        raise ConfigError([Problem("mapping", "missing [mapping] table (kind, dataset)")], str(path))
    dataset = _dataset_of(head, problems)
    codes = _load_code_tables(doc, path, problems)
    kind = head.get("kind")
    if kind not in ("inbound", "outbound"):
        problems.append(Problem("mapping.kind", "must be 'inbound' or 'outbound'"))
    if dataset is None or kind not in ("inbound", "outbound"):
        raise ConfigError(problems, str(path))
    compiled: Mapping_ = (_compile_inbound(path, doc, dataset, codes, problems) if kind == "inbound"
                          else _compile_outbound(path, doc, dataset, codes, problems))
    if problems:
        raise ConfigError(problems, str(path))
    compiled = dataclasses.replace(compiled, version=mapping_version(path))
    if isinstance(compiled, InboundMapping):
        from gateway.mapping.fast import compile_fast  # it builds on this module

        compiled = dataclasses.replace(compiled, fast=compile_fast(compiled))
    return compiled


def mapping_files(path: str | Path) -> list[Path]:
    """A mapping file and the code-table files it includes."""
    path = Path(path)
    try:
        includes = _read_toml(path).get("mapping", {}).get("include", [])
    except ConfigError:
        return [path]
    includes = [includes] if isinstance(includes, str) else includes if isinstance(includes, list) else []
    return [path, *((path.parent / str(i)).resolve() for i in includes)]


def mapping_version(path: str | Path) -> int:
    """The newest modification time (ns) of a mapping file and its includes; 0 where one is missing."""
    try:
        return max(p.stat().st_mtime_ns for p in mapping_files(path))
    except OSError:
        return 0


def _dataset_of(head: dict[str, Any], problems: list[Problem]) -> Dataset | None:
    try:
        return get_dataset(str(head.get("dataset")))
    except KeyError as exc:
        problems.append(Problem("mapping.dataset", str(exc.args[0])))
        return None


def _field_tables(doc: dict[str, Any], problems: list[Problem]) -> dict[str, dict[str, Any]]:
    fields = doc.get("fields", {})
    if not isinstance(fields, dict) or not fields:
        problems.append(Problem("fields", "no [fields.NAME] tables"))
        return {}
    out = {}
    for name, raw in fields.items():
        if not isinstance(raw, dict):
            problems.append(Problem(f"fields.{name}", "must be a table"))
            continue
        unknown = set(raw) - _FIELD_KEYS
        if unknown:
            problems.append(Problem(f"fields.{name}", f"unknown key(s) {', '.join(sorted(unknown))}"))
        out[name] = checked_options(raw, f"fields.{name}", problems)
    return out


def _compile_inbound(path: Path, doc: dict[str, Any], dataset: Dataset, codes: Mapping[str, CodeTable],
                     problems: list[Problem]) -> InboundMapping:
    specs = dataset.by_name()
    plans: list[FieldPlan] = []
    conditions: list[tuple[str, str, frozenset[str]]] = []
    plain: list[tuple[str, str]] = []
    for name, raw in _field_tables(doc, problems).items():
        ctx = _Ctx(f"fields.{name}", codes, problems)
        if name not in specs:
            ctx.problem("", f"not a field of dataset {dataset.name}; fields: {', '.join(specs)}")
            continue
        if specs[name].kind == "text" and set(raw) <= {"from", "description", "required", "required_if"} \
                and isinstance(raw.get("from"), str):
            plain.append((name, raw["from"]))
        else:
            plans.append(_compile_inbound_field(name, specs[name], raw, ctx))
        conditions += _conditions(name, raw, ctx, specs)
        if raw.get("required") is True:
            conditions.append((name, "@always", frozenset({"@always"})))
    mapped = {plan.name for plan in plans} | {name for name, _ in plain}
    missing = [f.name for f in dataset.fields if f.required and f.name not in mapped]
    if missing:
        problems.append(Problem("fields", f"required field(s) not mapped: {', '.join(missing)}"))
    plans.sort(key=lambda plan: plan.name != dataset.date_field)  # the date first: code tables use it
    raw_operation = doc.get("operation")
    if isinstance(raw_operation, dict):
        raw_operation = checked_options(raw_operation, "operation", problems, OPERATION_OPTIONS)
    operation = _operation_converter(raw_operation, _Ctx("", codes, problems))
    return InboundMapping(str(path), dataset, tuple((plan.name, plan.run) for plan in plans), operation,
                          tuple(conditions), plain=tuple(plain), plans=tuple(plans),
                          operation_plan=_operation_plan(raw_operation, codes))


def _operation_plan(raw: Any, codes: Mapping[str, CodeTable]) -> OperationPlan | None:
    """What the code generator needs of ``[operation]`` (problems with it are reported by the converter)."""
    if not isinstance(raw, dict):
        return None
    column, table = _plan_source(raw, codes)
    return OperationPlan(column, table, str(raw.get("default", Operation.UPSERT.value)))


def _plan_source(raw: dict[str, Any], codes: Mapping[str, CodeTable]) -> tuple[str | None, CodeTable | None]:
    """The column a field or ``[operation]`` reads (None: a constant or nothing) and its code table, as the
    code generator sees them."""
    column = raw.get("from") if "value" not in raw else None
    table = codes.get(raw["codes"]) if isinstance(raw.get("codes"), str) else None
    return (column if isinstance(column, str) and column else None), table


def _compile_outbound(path: Path, doc: dict[str, Any], dataset: Dataset, codes: Mapping[str, CodeTable],
                      problems: list[Problem]) -> OutboundMapping:
    head = doc["mapping"]
    specs = dataset.by_name()
    converters = []
    renames = []
    for name, raw in _field_tables(doc, problems).items():
        ctx = _Ctx(f"fields.{name}", codes, problems)
        src = raw.get("from")
        if isinstance(src, str) and src not in specs and src not in _SPECIAL:
            ctx.problem("from", f"{src!r} is not a field of dataset {dataset.name} nor one of {', '.join(_SPECIAL)}")
        kind = specs[src].kind if isinstance(src, str) and src in specs else "text"
        if isinstance(src, str) and src in specs and _is_rename(raw, kind):
            renames.append((name, src))
        else:
            converters.append((name, _compile_outbound_field(raw, ctx, kind)))
    table_code = head.get("table_code")
    if not isinstance(table_code, str) or not table_code:
        problems.append(Problem("mapping.table_code", "required for outbound mappings (e.g. XZCF)"))
    check_text(head, "table_version", "mapping", problems)
    return OutboundMapping(str(path), dataset, str(table_code), str(head.get("table_version", "")),
                           tuple(converters), renames=tuple(renames))


def _is_rename(raw: dict[str, Any], kind: str) -> bool:
    """A field whose payload value (JSON: text, ISO date, decimal string) is already the target's value."""
    if set(raw) - {"from", "description", "date_format"}:
        return False
    return kind in ("text", "code", "decimal") or (kind == "date" and raw.get("date_format", "%Y-%m-%d") == "%Y-%m-%d")


def source_columns(path: str | Path) -> set[str]:
    """The source columns an inbound mapping reads (for checking them against the source)."""
    doc = _read_toml(Path(path))
    cols = {raw["from"] for raw in doc.get("fields", {}).values() if isinstance(raw, dict) and "from" in raw}
    op = doc.get("operation", {})
    if isinstance(op, dict) and "from" in op:
        cols.add(op["from"])
    return {str(c) for c in cols}
