"""``credit-gateway datasets``: the canonical datasets and their fields, as a mapping author needs them.

``datasets`` lists the datasets; ``datasets show NAME`` prints one dataset's fields (name, label, standard
identifier, required, type or code table), ``--json`` for scripts. The same rows make the generated table in
docs/mappings.md (:mod:`gateway.cli.docs`), so the page and the command cannot disagree.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from typing import Any

import orjson

from gateway.domain.datasets import DATASETS, Dataset, FieldSpec
from gateway.operations import table_lines

# A standard identifier in a label: an upper-case token such as CF_WSH, XK_XDR_MC, DFBM or TYSHXYDM.
_IDENTIFIER = re.compile(r"(?<![\w/])[A-Z][A-Z0-9]+(?:_[A-Z0-9]+)*(?![\w/])")
FIELD_COLUMNS = ("field", "label", "identifier", "required", "type")


def add_parser(sub: Any, config_arg: Callable[[argparse.ArgumentParser], None]) -> None:
    """No config needed: the datasets are the gateway's own (``config_arg`` is taken for the common signature)."""
    p = sub.add_parser("datasets", help="the canonical datasets and their fields (for writing mappings)")
    _json_arg(p)
    s = p.add_subparsers(dest="datasets_command")
    _json_arg(s.add_parser("list", help="every dataset with its natural key (the default)"))
    show = s.add_parser("show", help="one dataset's fields: name, label, standard identifier, required, type")
    show.add_argument("dataset", choices=sorted(DATASETS))
    _json_arg(show)


def _json_arg(p: argparse.ArgumentParser) -> None:
    """``--json`` before or after the sub-command (``datasets --json``, ``datasets show penalty --json``)."""
    p.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON, for scripts")


def cmd_datasets(args: argparse.Namespace) -> int:
    if getattr(args, "datasets_command", None) == "show":
        dataset = DATASETS[args.dataset]
        if getattr(args, "json", False):
            print(orjson.dumps(dataset_json(dataset), option=orjson.OPT_INDENT_2).decode())
        else:
            print(f"{dataset.name}: {dataset.label}; key {' + '.join(dataset.key_fields)}; "
                  f"dated by {dataset.date_field}")
            for line in table_lines(field_rows(dataset), FIELD_COLUMNS):
                print(line.rstrip())
        return 0
    if getattr(args, "json", False):
        print(orjson.dumps([_summary(d) for d in DATASETS.values()], option=orjson.OPT_INDENT_2).decode())
        return 0
    for line in table_lines([_summary(d) for d in DATASETS.values()], ("dataset", "label", "key", "fields")):
        print(line.rstrip())
    return 0


def _summary(dataset: Dataset) -> dict[str, Any]:
    return {"dataset": dataset.name, "label": dataset.label, "key": " + ".join(dataset.key_fields),
            "fields": len(dataset.fields)}


def split_label(label: str) -> tuple[str, str]:
    """(the label without its standard identifiers, the identifiers joined by " / ")."""
    found = _IDENTIFIER.findall(label)
    title = _IDENTIFIER.sub("", label)
    title = re.sub(r"\s+\)", ")", re.sub(r"\s+", " ", title)).strip(" /")
    return title, " / ".join(found)


def field_type(spec: FieldSpec) -> str:
    """The field's type as a mapping author reads it: its kind, length limit, check or code table."""
    if spec.kind in ("code", "list"):
        text = ("code: " if spec.kind == "code" else "list of: ") + " / ".join(spec.codes)
    elif spec.kind == "text" and spec.max_len:
        text = f"text ≤ {spec.max_len}"
    else:
        text = spec.kind
    extras = [{"uscc": "USCC check", "resident_id": "ID check"}.get(spec.check, spec.check)] if spec.check else []
    extras += ["personal ID"] if spec.personal_id else []
    return f"{text} ({', '.join(extras)})" if extras else text


def field_rows(dataset: Dataset) -> list[dict[str, Any]]:
    """One row per canonical field, in the dataset's order; key fields are marked ``key``."""
    rows = []
    for spec in dataset.fields:
        title, identifier = split_label(spec.label)
        required = "key" if spec.name in dataset.key_fields else ("yes" if spec.required else "")
        rows.append({"field": spec.name, "label": title, "identifier": identifier or "-", "required": required,
                     "type": field_type(spec)})
    return rows


def dataset_json(dataset: Dataset) -> dict[str, Any]:
    """The dataset for scripts: its fields with every static rule."""
    fields = []
    for spec in dataset.fields:
        title, identifier = split_label(spec.label)
        fields.append({"name": spec.name, "label": title, "identifier": identifier, "kind": spec.kind,
                       "required": spec.required, "key": spec.name in dataset.key_fields, "max_len": spec.max_len,
                       "codes": list(spec.codes), "check": spec.check, "personal_id": spec.personal_id})
    return {"dataset": dataset.name, "label": dataset.label, "key_fields": list(dataset.key_fields),
            "date_field": dataset.date_field, "fields": fields}
