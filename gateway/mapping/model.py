"""Compiled mappings: :class:`InboundMapping` (a source row to a canonical record) and :class:`OutboundMapping`
(a canonical record to a target's record), built of plain functions by gateway.mapping.compile."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from gateway.domain.datasets import Dataset, FieldSpec, validate
from gateway.domain.subject_keys import KeySecret, record_key
from gateway.errors import Problem
from gateway.mapping.codes import CodeTable
from gateway.mapping.steps import DatedStep, MappingError, plain_text
from gateway.records import FieldValue, LedgerEntry, Operation, Record, ledger_entry, to_json_value

# ---------------------------------------------------------------- compiled mappings

Converter = Callable[[Mapping[str, Any], "dt.date | None"], Any]
SPECIAL_FIELDS = ("@operation", "@key", "@version", "@dataset")
FIELD_KEYS = {"from", "value", "default", "transform", "date_format", "unit", "split", "join", "codes",
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


REPLACED = "\ufffd"  # what a decoder puts where bytes were not text in its encoding
REPLACED_REASON = ("contains U+FFFD, a character that stands for bytes that could not be decoded: the source's "
                   "text is not in its configured encoding; fix the row at the source or set the source's encoding")


def replaced_text(fields: Mapping[str, Any]) -> list[Problem]:
    """A problem per field holding a replacement character: text decoded with replacement never leaves."""
    if not any(REPLACED in v for v in fields.values() if v.__class__ is str):
        return []
    return [Problem(name, REPLACED_REASON) for name, v in fields.items() if isinstance(v, str) and REPLACED in v]


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
            replaced = replaced_text(fields)
            found = dedupe([*found, *replaced]) if replaced else found
            if found:
                return MappedRow(None, found, key)
            return MappedRow(Record(self.dataset.name, key, op, fields, source, source_key), [], key)
        fields, problems = self._convert(row)
        operation = self.row_operation(row, _as_date(fields.get(self.dataset.date_field)), problems)
        problems += self._conditions(fields)
        problems += validate(self.dataset, fields, today)
        problems += replaced_text(fields)
        key = record_key(self.dataset, fields, secret)
        if problems:
            return MappedRow(None, dedupe(problems), key)
        return MappedRow(Record(self.dataset.name, key, operation, fields, source, source_key), [], key)

    def map_entry(self, row: Mapping[str, Any], today: dt.date, source: str = "", source_key: str = "", *,
                  secret: KeySecret | None = None) -> tuple[LedgerEntry | None, list[Problem], str]:
        """:meth:`map_row` for the pipeline: the ledger entry of a valid row (no Record in between), else its
        problems; and the key either way."""
        if self.fast is None:
            mapped = self.map_row(row, today, source, source_key, secret=secret)
            return (mapped.record.entry() if mapped.record else None), mapped.problems, mapped.key
        fields, op, problems, key = self.fast(row, today, secret)
        replaced = replaced_text(fields)
        problems = dedupe([*problems, *replaced]) if replaced else problems
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
                fields[name] = plain_text(value)
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


def dedupe(problems: list[Problem]) -> list[Problem]:
    seen: dict[str, Problem] = {}
    for p in problems:
        seen.setdefault(p.path, p)
    return list(seen.values())


