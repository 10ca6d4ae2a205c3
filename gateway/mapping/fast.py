"""Inbound mappings compiled to Python source: one straight-line function per mapping file.

:class:`~gateway.mapping.InboundMapping` interprets a row field by field: a closure per field, a dict lookup
per step, the dataset's checks dispatched by kind. That overhead, not the work, was most of a row's CPU.
:func:`compile_fast` writes the mapping and the dataset's validation out as the source of one function —
every field inline, locals instead of dict lookups, the common cases (a column, stripped, plain text with a
length limit; a code from a table; a date; an amount) in a few lines — and compiles it once per file.
Whatever it does not write out (constants, lists, dated codes, values of unexpected types, every error) it
hands to the interpreted field's own function, so every mapping keeps working and every result is the
interpreted path's. That path stays as the reference (:meth:`InboundMapping.reference`) the tests compare
this one against, row by row.

Mapping files are edited by ops, so nothing from them — column, field or code names, defaults, code values —
is ever written into the source: it holds our own templates, integers from the dataset definitions, and names
made up here (``col3``, ``name7``, ``ref7``) that refer to the values in the namespace the function runs in.
Nothing in a mapping file is evaluated; it stays data. ``python -m gateway.mapping FILE`` prints the source of
a file's function with the values its names stand for.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import linecache
import unicodedata
from collections.abc import Callable, Iterator, Mapping
from decimal import Decimal
from typing import Any

from gateway.domain.datasets import (
    CHECKED_ID_TYPES,
    _check_value,
    _uscc_reason,
    compiled_rules,
    describe_rule,
)
from gateway.domain.identifiers import check_resident_id
from gateway.domain.subject_keys import record_key
from gateway.errors import Problem
from gateway.mapping.codes import CodeTable
from gateway.mapping.model import FastMap, FieldPlan, InboundMapping, dedupe
from gateway.mapping.steps import DatedStep, MappingError, plain_text
from gateway.records import Operation
from gateway.text import control_reason, is_free_text

_DATE_CACHE = 4096  # distinct date texts remembered per date format list (a few years of days)

def _all_in(allowed: frozenset[str], items: list[Any]) -> bool:
    """Every item of a list is an allowed code (False: let _check_value say which are not)."""
    try:
        return allowed.issuperset(items)
    except TypeError:  # unhashable items: the reference says what is wrong with them
        return False


# What every generated function may use, by these fixed names.
_HELPERS: Mapping[str, Any] = {
    "Problem": Problem, "MappingError": MappingError, "Decimal": Decimal, "DATE": dt.date, "EMPTY": (None, "", []),
    "OPERATIONS": {op.value: op for op in Operation}, "UPSERT": Operation.UPSERT, "plain": plain_text,
    "normalize": unicodedata.normalize, "check_value": _check_value, "uscc_reason": _uscc_reason,
    "check_resident_id": check_resident_id, "CHECKED_ID_TYPES": CHECKED_ID_TYPES, "record_key": record_key,
    "dedupe": dedupe, "all_in": _all_in, "control_reason": control_reason,
}

# Transform steps on a value known to be exactly ``str`` (each keeps it one): what TRANSFORMS does to it.
_STEPS: Mapping[str, str] = {
    "strip": "v = v.strip()",
    "upper": "v = v.upper()",
    "lower": "v = v.lower()",
    "halfwidth": 'v = v if v.isascii() else normalize("NFKC", v)',  # ASCII is NFKC-stable
    "collapse_spaces": 'v = " ".join(v.split())',
    "remove_spaces": 'v = "".join(v.split())',
}


def compile_fast(mapping: InboundMapping) -> FastMap:
    """The generated function of an inbound mapping: ``(row, today, secret) → (fields, operation, problems,
    key)``, problems deduplicated as :meth:`InboundMapping.map_row` reports them (empty when valid)."""
    source, namespace = _generate(mapping)
    filename = f"<fastmap {mapping.path}>"
    code = compile(source, filename, "exec")
    exec(code, namespace)  # noqa: S102 - our template; every value from the mapping file is in the namespace
    linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)  # tracebacks
    function: FastMap = namespace["map_row"]
    return function


def generated_source(mapping: InboundMapping) -> str:
    """The source :func:`compile_fast` compiles for ``mapping``, then what each of its names stands for."""
    source, namespace = _generate(mapping)
    legend = [f"# {name} = {_shown(value)}" for name, value in namespace.items() if name not in _HELPERS]
    return source + "\n# ---- names in the namespace\n" + "\n".join(legend) + "\n"


def _shown(value: Any) -> str:
    """One line for the legend, the same in every process (no addresses, sets sorted)."""
    if callable(value) and hasattr(value, "__qualname__"):
        text = f"<{getattr(value, '__module__', '')}.{value.__qualname__}>"
    else:
        text = " ".join(repr(sorted(value) if isinstance(value, frozenset) else value).splitlines())
    return text if len(text) <= 160 else text[:160] + "…"


# ---------------------------------------------------------------- the writer


class _Source:
    """Lines of generated source, and the namespace the names in them refer to."""

    def __init__(self, field_names: list[str]) -> None:
        self.lines: list[str] = []
        self.namespace: dict[str, Any] = dict(_HELPERS)
        self.depth = 0
        self._locals = {name: f"f{i}" for i, name in enumerate(field_names)}
        self._shared: dict[tuple[str, Any], str] = {}  # (prefix, value) → name

    def add(self, *lines: str) -> None:
        self.lines += ["    " * self.depth + line for line in lines]

    @contextlib.contextmanager
    def block(self, header: str) -> Iterator[None]:
        self.add(header)
        self.depth += 1
        yield
        self.depth -= 1

    def bind(self, name: str, value: Any) -> str:
        """Put ``value`` in the namespace under ``name`` (one of ours: a prefix and a number)."""
        if self.namespace.get(name, _NOT_CONSTANT) is value:
            return name
        if not name.isidentifier() or name in self.namespace:
            raise ValueError(f"generated name {name!r} is taken or invalid")
        self.namespace[name] = value
        return name

    def shared(self, prefix: str, value: str) -> str:
        """A name for a text used in several places (a column read twice), numbered by first use."""
        key = (prefix, value)
        if key not in self._shared:
            self._shared[key] = self.bind(f"{prefix}{sum(k[0] == prefix for k in self._shared)}", value)
        return self._shared[key]

    def date_reader(self, formats: tuple[str, ...], convert: DatedStep) -> tuple[str, str]:
        """Names of the cache and the reader of dates in ``formats`` (shared by the fields that use them)."""
        key = ("dates", formats)
        if key not in self._shared:
            cache: dict[str, dt.date] = {}
            self._shared[key] = self.bind(f"dates{sum(k[0] == 'dates' for k in self._shared)}", cache)
            self.bind(f"read_{self._shared[key]}", _date_reader(convert, cache))
        return self._shared[key], f"read_{self._shared[key]}"

    def label(self, field: str) -> str:
        """The name of a dataset field's name (``name3`` beside ``f3``), for problems and the fields dict."""
        local = self._locals.get(field)
        if local is None:
            return self.shared("label", field)
        name = f"name{local[1:]}"
        return name if self.namespace.get(name) == field else self.bind(name, field)

    def local(self, field: str) -> str:
        """The local variable holding a dataset field (None when absent); ``None`` for a name the dataset lacks."""
        return self._locals.get(field, "None")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _generate(mapping: InboundMapping) -> tuple[str, dict[str, Any]]:
    dataset = mapping.dataset
    src = _Source([f.name for f in dataset.fields])
    src.bind("DATASET", dataset)
    order = [name for name, _ in mapping.plain] + [plan.name for plan in mapping.plans]
    with src.block("def map_row(row, today, secret):"):
        src.add("get = row.get", "P = []", "on = None",
                " = ".join([*(src.local(f.name) for f in dataset.fields), "None"]))
        for name, column in mapping.plain:
            _plain_field(src, name, column)
        for plan in mapping.plans:
            _converted_field(src, plan, plan.name == dataset.date_field)
        src.add("fields = {}")
        for name in order:
            src.add(f"if {src.local(name)} is not None:", f"    fields[{src.label(name)}] = {src.local(name)}")
        _operation(src, mapping)
        _conditions(src, mapping)
        _validation(src, mapping, order)
        _key(src, mapping)
        src.add("return fields, op, (dedupe(P) if P else P), key")
    return src.text(), src.namespace


# ---------------------------------------------------------------- fields


def _plain_field(src: _Source, name: str, column: str) -> None:
    """A text column copied stripped (InboundMapping.plain)."""
    f = src.local(name)
    src.add(f"v = get({src.shared('col', column)})")
    with src.block("if v.__class__ is str:"):
        src.add("v = v.strip()", "if v:", f"    {f} = v")
    src.add("elif v is not None:", f"    {f} = plain(v)")


def _converted_field(src: _Source, plan: FieldPlan, is_date_field: bool) -> None:
    """One converter: exact ``str`` values inline, anything else through the field's reference function."""
    f, i = src.local(plan.name), src.local(plan.name)[1:]
    constant = _constant(plan)
    if constant is not _NOT_CONSTANT:
        if constant is not None:
            src.add(f"{f} = {src.bind(f'const{i}', constant)}  # a constant")
        return
    name, ref = src.label(plan.name), src.bind(f"ref{i}", plan.run)
    with src.block("try:"):
        if plan.column is None:
            src.add(f"{f} = {ref}(row, on)")
        else:
            _read_column(src, plan, f, i, ref)
    with src.block("except MappingError as exc:"):
        src.add(f"P.append(Problem({name}, str(exc)))")
    if is_date_field:
        src.add(f"if isinstance({f}, DATE):", f"    on = {f}")


def _read_column(src: _Source, plan: FieldPlan, f: str, i: str, ref: str) -> None:
    src.add(f"v = get({src.shared('col', plan.column or '')})")
    with src.block("if v.__class__ is str:"):
        src.add(*(_STEPS[step] for step in plan.steps))
        with src.block("if v:"):
            _convert_text(src, plan, f, i)
        if plan.default is not None:  # empty: the default, converted by the reference
            src.add("else:", f"    {f} = {ref}(row, on)")
    if plan.spec.kind == "decimal":
        with src.block("elif v.__class__ is float or v.__class__ is int:"):
            src.add("d = Decimal(str(v))")
            amount = f"(d * {src.bind(f'factor{i}', plan.factor)}).normalize()" if plan.factor != 1 else "d"
            src.add(f"{f} = {amount} if d.is_finite() and d >= 0 else {src.bind(f'conv{i}', plan.convert)}(v, on)")
    src.add("elif v is not None:" if plan.default is None else "else:", f"    {f} = {ref}(row, on)")


def _convert_text(src: _Source, plan: FieldPlan, f: str, i: str) -> None:
    """A non-empty text after the transform steps: what the field's kind step makes of it."""
    kind = plan.spec.kind
    if kind in ("text", "code") and plan.table is None:
        src.add(f"{f} = v")
    elif kind in ("text", "code") and plan.table is not None:  # a code mapped to "" leaves the field empty
        codes = src.bind(f"codes{i}", _simple_codes(plan.table))
        convert = src.bind(f"conv{i}", plan.convert)
        src.add(f"x = {codes}.get(v)", f"{f} = (x or None) if x is not None else {convert}(v, on)")
    elif kind == "date":  # dates are never false
        cache, read = src.date_reader(plan.formats, plan.convert)
        src.add(f"{f} = {cache}.get(v) or {read}(v)")
    else:
        src.add(f"{f} = {src.bind(f'conv{i}', plan.convert)}(v, on)")


_NOT_CONSTANT = object()


def _constant(plan: FieldPlan) -> Any:
    """The value of a ``value = …`` text field, the same on every row (the date plays no part without a code
    table); _NOT_CONSTANT for anything else."""
    if plan.column is not None or plan.spec.kind not in ("text", "code") or plan.table is not None:
        return _NOT_CONSTANT
    try:
        value = plan.run({}, None)
    except MappingError:
        return _NOT_CONSTANT
    return value if value is None or isinstance(value, str) else _NOT_CONSTANT


def _simple_codes(table: CodeTable) -> dict[str, str]:
    """Codes whose first entry holds on every date: what ``table.lookup`` returns for them, whatever the date."""
    return {code: entries[0].value for code, entries in table.entries.items()
            if entries and entries[0].valid_from is None and entries[0].valid_until is None}


def _date_reader(convert: DatedStep, cache: dict[str, dt.date]) -> Callable[[str], dt.date]:
    """The reference date parser for a text, remembering what it returned (a date depends only on the text)."""

    def read(text: str) -> dt.date:
        day: dt.date = convert(text, None)
        if len(cache) >= _DATE_CACHE:
            cache.clear()
        cache[text] = day
        return day

    return read


# ---------------------------------------------------------------- operation, conditions, key


def _operation(src: _Source, mapping: InboundMapping) -> None:
    """The row's operation: a code looked up inline, anything else through the mapping's own reading."""
    plan = mapping.operation_plan
    if plan is None:
        src.add("op = UPSERT")
        return
    src.bind("operation", mapping.row_operation)
    if plan.column is None:
        src.add("op = operation(row, on, P)")
        return
    src.add("op = None", f"v = get({src.shared('col', plan.column)})")
    with src.block("if v.__class__ is str:"):
        src.add("v = v.strip()")
        with src.block("if v:"):
            if plan.table is None:
                src.add("op = OPERATIONS.get(v)")
            else:
                src.add(f"x = {src.bind('operation_codes', _simple_codes(plan.table))}.get(v)",
                        "if x is not None:", "    op = OPERATIONS.get(x)")
        default = _OPERATIONS.get(plan.default)
        if default is not None:
            src.add("else:", f"    op = {src.bind('operation_default', default)}")
    src.add("if op is None:", "    op = operation(row, on, P)")


_OPERATIONS: Mapping[str, Operation] = _HELPERS["OPERATIONS"]


def _conditions(src: _Source, mapping: InboundMapping) -> None:
    """``required`` and ``required_if`` of the mapping file."""
    for n, (name, when, values) in enumerate(mapping.conditions):
        f, label = src.local(name), src.label(name)
        with src.block(f"if {f} in EMPTY:"):
            if when == "@always":
                src.add(f'P.append(Problem({label}, "required by the mapping"))')
            else:
                w, when_label = src.local(when), src.label(when)
                src.add(f"if {w} in {src.bind(f'when_values{n}', values)}:",
                        f'    P.append(Problem({label}, f"required when {{{when_label}}} is {{{w}}}"))')


def _key(src: _Source, mapping: InboundMapping) -> None:
    dataset = mapping.dataset
    if dataset.pseudonymised_key:
        src.add("key = record_key(DATASET, fields, secret)")
        return
    parts = [f'str({src.local(name)} or "").replace("|", "/")' for name in dataset.key_fields]
    src.add("key = " + ' + "|" + '.join(parts) if parts else 'key = ""')


# ---------------------------------------------------------------- validation (gateway.domain.datasets.validate)


def _validation(src: _Source, mapping: InboundMapping, order: list[str]) -> None:
    rules = compiled_rules(mapping.dataset)
    for name in rules.required:
        src.add(f"if {src.local(name)} in EMPTY:",
                f'    P.append(Problem({src.label(name)}, "required field is empty"))')
    for name in order:  # the order validate() meets them in the fields
        _field_check(src, rules.specs[name], rules.plain_text.get(name))
    for n, check in enumerate(rules.cross):
        _cross_check(src, n, check)


def _field_check(src: _Source, spec: Any, limit: int | None) -> None:
    """One field's own check; _check_value (the reference) for whatever is not written out here."""
    f, label = src.local(spec.name), src.label(spec.name)
    fallback = (f"p = check_value({src.bind(f'spec{f[1:]}', spec)}, {f}, today)", "if p is not None:",
                "    P.append(p)")
    present = f'{f} is not None and not ({f} == "" or {f} == [])'
    if limit is not None:  # text without a check: its length and its characters
        if type(limit) is not int:
            raise TypeError(f"{spec.name}: max_len must be an int")
        with src.block(f"if {f}.__class__ is str:"):
            if limit > 0:
                src.add(*_too_long(f, label, limit), f"elif not {f}.isprintable():")
            else:
                src.add(f"if not {f}.isprintable():")
            src.add(f"    r = control_reason({f}, {is_free_text(limit)!r})", "    if r:",
                    f"        P.append(Problem({label}, r))")
        with src.block(f"elif {present}:"):
            src.add(*fallback)
    elif spec.kind == "text" and spec.check == "uscc" and type(spec.max_len) is int:
        reason = (f"r = None if {f}.isprintable() else control_reason({f})", f"r = r or uscc_reason({f})", "if r:",
                  f"    P.append(Problem({label}, r))")
        with src.block(f"if {present}:"):
            with src.block(f"if {f}.__class__ is str:"):
                if spec.max_len:  # too long, or else the code's own check
                    src.add(*_too_long(f, label, spec.max_len), "else:", *(f"    {line}" for line in reason))
                else:
                    src.add(*reason)
            with src.block("else:"):
                src.add(*fallback)
    else:
        with src.block(f"if {present} and not ({_valid(src, spec, f)}):"):
            src.add(*fallback)


def _too_long(f: str, label: str, limit: int) -> tuple[str, str]:
    """The length check of a text field (``limit``: an int from the dataset definition)."""
    return (f"if len({f}) > {limit}:", f'    P.append(Problem({label}, f"{{len({f})}} characters, at most {limit}"))')


def _valid(src: _Source, spec: Any, f: str) -> str:
    """An expression true only where _check_value finds nothing wrong (False: always ask it)."""
    if spec.kind == "date":
        return f"{f}.__class__ is DATE"
    if spec.kind == "decimal":
        return f"{f}.__class__ is Decimal and {f}.is_finite() and {f} >= 0"
    if spec.kind == "code" and not spec.max_len and not spec.check:
        return f"{f}.__class__ is str and {f} in {src.bind(f'allowed{f[1:]}', frozenset(spec.codes))}"
    if spec.kind == "list":
        return f"{f}.__class__ is list and all_in({src.bind(f'allowed{f[1:]}', frozenset(spec.codes))}, {f})"
    return "False"


def _cross_check(src: _Source, n: int, check: Callable[..., Any]) -> None:
    """A cross-field rule written out from its description; any other checker is called with the fields."""
    kind, *args = describe_rule(check) or ("",)
    if kind == "required_for":
        name, categories, message = args
        f, cat, label = src.local(name), src.local("subject_category"), src.label(name)
        text = src.bind(f"message{n}", message) if message else f'f"required for {{{cat}}}"'
        src.add(f"if {cat} in {src.bind(f'categories{n}', categories)} and not {f}:",
                f"    P.append(Problem({label}, {text}))")
    elif kind == "id_number":
        kind_field, number_field = args
        f, label = src.local(number_field), src.label(number_field)
        src.add(f"if {f} and {src.local(kind_field)} in CHECKED_ID_TYPES:",
                f"    r = check_resident_id(str({f}), today=today)",
                "    if r:", f"        P.append(Problem({label}, r))")
    elif kind == "future_date":
        f, label = src.local(args[0]), src.label(args[0])
        src.add(f"if isinstance({f}, DATE) and {f} > today:",
                f'    P.append(Problem({label}, f"{{{f}.isoformat()}} is in the future"))')
    elif kind == "not_before":
        f, e, label = src.local(args[0]), src.local(args[1]), src.label(args[0])
        src.add(f"if isinstance({f}, DATE) and isinstance({e}, DATE) and {f} < {e}:",
                f'    P.append(Problem({label}, f"{{{f}.isoformat()}} is before {{{src.label(args[1])}}} '
                f'{{{e}.isoformat()}}"))')
    else:
        src.add(f"p = {src.bind(f'check{n}', check)}(fields, today)", "if p is not None:", "    P.append(p)")
