"""The mapping compiler: TOML loading (encodings, includes, code tables) and the plans of inbound and outbound
fields. Every problem names the file and the TOML path; :func:`load` collects them all before raising."""

from __future__ import annotations

import dataclasses
import datetime as dt
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from gateway.domain.datasets import Dataset, FieldSpec, get_dataset
from gateway.errors import ConfigError, Problem
from gateway.mapping.codes import CodeTable, parse_code_table
from gateway.mapping.model import (
    DEFAULT_DATE_FORMATS,
    FIELD_KEYS,
    SPECIAL_FIELDS,
    Converter,
    FieldPlan,
    InboundMapping,
    OperationPlan,
    OutboundMapping,
)
from gateway.mapping.options import OPERATION_OPTIONS, check_text, checked_options
from gateway.mapping.steps import (
    TRANSFORMS,
    UNITS,
    DatedStep,
    MappingError,
    Step,
    date_parser,
    plain_text,
    strip_step,
    to_decimal,
)
from gateway.records import Operation

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






def _date_formats(raw: dict[str, Any]) -> list[str]:
    formats = raw.get("date_format", DEFAULT_DATE_FORMATS)
    return [formats] if isinstance(formats, str) else list(formats)


def _inbound_kind_step(spec: FieldSpec, raw: dict[str, Any], ctx: _Ctx) -> DatedStep:
    table = ctx.code_table(raw)
    if spec.kind == "date":
        parse = date_parser(_date_formats(raw))
        return lambda v, on: parse(v)
    if spec.kind == "decimal":
        unit_name = raw.get("unit", "none")
        if unit_name not in UNITS:
            ctx.problem("unit", f"unknown unit {unit_name!r}; allowed: {', '.join(UNITS)}")
        return _amount_step(UNITS.get(unit_name, Decimal(1)))
    if spec.kind == "list":
        return _list_step(str(raw.get("split", ";；,，、")), table)
    if table is not None:  # a code mapped to "" leaves the field empty (e.g. no withdraw_reason for 正常)
        return lambda v, on: table.lookup(plain_text(v), on) or None
    return lambda v, on: plain_text(v)


def _amount_step(factor: Decimal) -> DatedStep:
    def amount(v: Any, on: dt.date | None) -> Decimal:
        value = to_decimal(v)
        if value < 0:  # the source's value, not what the unit would make of it
            raise MappingError(f"negative amount {v!r}: expected zero or more")
        return (value * factor).normalize() if factor != 1 else value

    return amount


def _list_step(separators: str, table: CodeTable | None) -> DatedStep:
    def split(v: Any, on: dt.date | None) -> list[str]:
        items = v if isinstance(v, list) else _split_any(plain_text(v), separators)
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
    if isinstance(column, str) and steps == [strip_step]:
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
        return table.lookup(plain_text(value).strip(), on) if table else plain_text(value).strip()

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
        parsed = parse_code_table(name, table, f"{where}.{name}", problems)
        if parsed:
            out[name] = parsed
    return out


Mapping_ = InboundMapping | OutboundMapping


def load(path: str | Path) -> Mapping_:
    """Load and compile one mapping file (interpreted fields only: gateway.mapping.load_mapping adds the generated
    function); raise ConfigError listing every problem with its TOML path."""
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
    return dataclasses.replace(compiled, version=mapping_version(path))


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
        unknown = set(raw) - FIELD_KEYS
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
        if isinstance(src, str) and src not in specs and src not in SPECIAL_FIELDS:
            ctx.problem("from",
                        f"{src!r} is not a field of dataset {dataset.name} nor one of {', '.join(SPECIAL_FIELDS)}")
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
