"""Formatted files (格式文件导入) for history loads: one XML file per action type and batch, checked by our XSD.

``mappings/xsd/<dataset>.xsd`` is written from the field tables (:func:`schema_text`; ``python -m
adapters.national.xmlfile`` rewrites the shipped files): a root ``SupervisionBatch`` (attributes ``action``,
``batchId``, ``cdSource``, ``count``) holding one ``Record`` (attributes ``seq`` and ``key``) per record, whose
children are the national columns in field order: required ones must be there and not empty; codes are
enumerations, 监管事项目录编码 14 digits, 检查实施清单编码 18 USCC characters then 1–5, 行政区划代码 6 digits, dates
``xs:date``, amounts non-negative decimals. An enveloped ``ds:Signature`` may close the root.

:func:`drop_history_file` writes a batch with lxml's incremental writer (one record in memory at a time) to a
staging file, checks it with ``xmlschema`` record by record as it streams the file back, signs it with the ``xmldsig``
profile and moves it into the drop directory; an invalid file is deleted and never dropped, and
:class:`XmlInvalid` names each record (its key and position) and element at fault.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

import xmlschema
from lxml import etree  # type: ignore[import-untyped]

from gateway.domain.datasets import get_dataset
from gateway.domain.fields import Dataset, FieldSpec
from gateway.domain.supervision import NATIONAL_TABLES, national_column
from gateway.errors import PermanentError
from gateway.sealing.base import Credentials, Peer
from gateway.sealing.xmldsig import XmlDsigProfile

XSD_DIR = Path(__file__).resolve().parents[2] / "mappings" / "xsd"
ROOT, RECORD = "SupervisionBatch", "Record"
USCC_CHARS = "0-9A-HJ-NP-RTUWXY"  # GB 32100: no I, O, S, V, Z
PATTERNS = {"item_code": r"\d{14}", "check_icode": f"[{USCC_CHARS}]{{18}}[1-5][0-9A-Za-z]{{0,31}}",
            "region": r"\d{6}"}


class XmlInvalid(PermanentError):
    """A batch's XML file does not satisfy the XSD: ``problems`` name each record and element."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("; ".join(problems[:20]) + (f" (+{len(problems) - 20} more)" if len(problems) > 20 else ""))
        self.problems = list(problems)


# ---------------------------------------------------------------- the schema

def _simple_type(spec: FieldSpec) -> str:
    """The xs:simpleType (restriction) of one field's element."""
    if spec.kind == "date":
        return '<xs:restriction base="xs:date"/>'
    if spec.kind == "decimal":
        return '<xs:restriction base="xs:decimal"><xs:minInclusive value="0"/></xs:restriction>'
    facets = [f'<xs:minLength value="{1 if spec.required else 0}"/>']
    if spec.kind == "code" and "其他" in spec.codes:  # "其他-…" carries a detail: a pattern, not an enumeration
        choices = "|".join(re.escape(code) for code in spec.codes if code != "其他")
        facets = [f"<xs:pattern value={quoteattr(f'({choices}|其他(-.+)?)')}/>"]
    elif spec.kind == "code":
        facets = [f"<xs:enumeration value={quoteattr(code)}/>" for code in spec.codes]
    elif spec.check in PATTERNS:
        facets.append(f"<xs:pattern value={quoteattr(PATTERNS[spec.check])}/>")
    if spec.max_len and spec.kind != "code":
        facets.append(f'<xs:maxLength value="{spec.max_len}"/>')
    return '<xs:restriction base="xs:string">' + "".join(facets) + "</xs:restriction>"


def _element(spec: FieldSpec) -> str:
    optional = "" if spec.required else ' minOccurs="0"'
    return (f'              <xs:element name="{national_column(spec)}"{optional}><xs:annotation><xs:documentation>'
            f"{escape(spec.label.split(' ')[0])}</xs:documentation></xs:annotation>"
            f"<xs:simpleType>{_simple_type(spec)}</xs:simpleType></xs:element>")


def schema_text(dataset: Dataset) -> str:
    """The XSD of one action type's files."""
    elements = "\n".join(_element(f) for f in dataset.fields)
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<!-- {dataset.label} ({dataset.name}): formatted file for the national 互联网+监管 system (history loads).
     Generated from gateway/domain/supervision.py by python -m adapters.national.xmlfile. -->
<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" elementFormDefault="unqualified">
  <xs:element name="{ROOT}">
    <xs:complexType>
      <xs:sequence>
        <xs:element name="{RECORD}" maxOccurs="unbounded">
          <xs:complexType>
            <xs:sequence>
{elements}
            </xs:sequence>
            <xs:attribute name="seq" type="xs:positiveInteger" use="required"/>
            <xs:attribute name="key" type="xs:string" use="required"/>
          </xs:complexType>
        </xs:element>
        <xs:any namespace="http://www.w3.org/2000/09/xmldsig#" processContents="skip" minOccurs="0"/>
      </xs:sequence>
      <xs:attribute name="action" type="xs:string" fixed="{dataset.name}" use="required"/>
      <xs:attribute name="batchId" type="xs:string" use="required"/>
      <xs:attribute name="cdSource" type="xs:string" use="required"/>
      <xs:attribute name="count" type="xs:nonNegativeInteger" use="required"/>
    </xs:complexType>
  </xs:element>
</xs:schema>
"""


_SCHEMAS: dict[str, xmlschema.XMLSchema] = {}


def load_schema(dataset: str, directory: Path = XSD_DIR) -> xmlschema.XMLSchema:
    """The shipped XSD of ``dataset``, compiled once."""
    path = directory / f"{dataset}.xsd"
    key = str(path)
    if key not in _SCHEMAS:
        _SCHEMAS[key] = xmlschema.XMLSchema(str(path))
    return _SCHEMAS[key]


# ---------------------------------------------------------------- writing and checking

def write_xml(path: Path, dataset: Dataset, batch_id: str, source: str,
              records: Iterable[tuple[str, Mapping[str, Any]]], count: int) -> None:
    """Stream ``count`` records ((key, national column → value)) into ``path``: one record in memory at a time."""
    columns = [national_column(f) for f in dataset.fields]
    attrs = {"action": dataset.name, "batchId": batch_id, "cdSource": source, "count": str(count)}
    with etree.xmlfile(str(path), encoding="UTF-8") as xf:
        xf.write_declaration()
        with xf.element(ROOT, attrs):
            for seq, (key, fields) in enumerate(records, start=1):
                record = etree.Element(RECORD, seq=str(seq), key=key)
                for name in columns:
                    value = fields.get(name)
                    if value is not None:
                        etree.SubElement(record, name).text = _text(value)
                xf.write(record)


def _text(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


DS_SIGNATURE = "{http://www.w3.org/2000/09/xmldsig#}Signature"


def check_xml(path: Path, dataset: str, keys: Sequence[str] = (), directory: Path = XSD_DIR) -> list[str]:
    """Every XSD violation of the file, each naming the record (key and position) and the element.

    The file is read as a stream: each ``Record`` is checked by xmlschema against the XSD's ``Record``
    declaration as it ends, then dropped, so memory stays flat however long the file; the root's attributes and
    children are checked against the same XSD's rules on the way."""
    root_decl: Any = load_schema(dataset, directory).elements[ROOT]
    record_decl = root_decl.type.content[0]  # the Record declaration of the root's sequence
    problems: list[str] = []
    seq = 0
    events = etree.iterparse(str(path), events=("start", "end"), resolve_entities=False, no_network=True,
                             load_dtd=False, remove_comments=True)
    root: Any = None
    for event, elem in events:
        if root is None:
            root = elem
            problems += _root_problems(root_decl, elem, dataset)
            continue
        if event != "end" or elem.getparent() is not root:
            continue
        if elem.tag == RECORD:
            seq += 1
            key = elem.get("key") or (keys[seq - 1] if seq <= len(keys) else "?")
            problems += [_described(error, key, seq) for error in record_decl.iter_errors(elem)]
        elif elem.tag != DS_SIGNATURE:
            problems.append(f"{ROOT}: unexpected element {elem.tag!r}")
        elem.clear()
        while elem.getprevious() is not None:
            del root[0]
    if root is not None and seq == 0:
        problems.append(f"{ROOT}: no {RECORD}")
    if root is not None and root.get("count") != str(seq):
        problems.append(f"{ROOT}: count {root.get('count')!r} but {seq} records")
    return problems


def _root_problems(decl: Any, root: Any, dataset: str) -> list[str]:
    if root.tag != ROOT:
        return [f"root element {root.tag!r}, expected {ROOT}"]
    problems = [f"{ROOT}: attribute {name} missing" for name in ("action", "batchId", "cdSource", "count")
                if not root.get(name)]
    if root.get("action") not in (None, dataset):
        problems.append(f"{ROOT}: action {root.get('action')!r}, expected {dataset!r}")
    return problems


def _described(error: Any, key: str, seq: int) -> str:
    """One xmlschema error as 'record KEY (#n), element NAME: reason'."""
    reason = str(error.reason or error.message).strip().splitlines()[0]
    last = str(error.path or "").rstrip("/").rsplit("/", 1)[-1]
    element = _element_in(reason) or (last if last and last != RECORD else RECORD)
    return f"record {key} (#{seq}), element {element}: {reason}"


def _element_in(reason: str) -> str | None:
    """The element a 'missing child' reason names (``Tag 'x' expected``)."""
    found = re.search(r"[Tt]ag (?:\()?'([A-Za-z_][A-Za-z0-9_]*)'\)? expected", reason)
    return found.group(1) if found else None


def drop_history_file(directory: Path, dataset: str, batch_id: str, source: str,
                      records: Sequence[tuple[str, Mapping[str, Any]]], ours: Credentials, peer: Peer,
                      xsd_dir: Path = XSD_DIR) -> Path:
    """Write, check, sign and drop one batch's file (``<table>_<batch_id>.xml``); XmlInvalid if it is not valid."""
    spec = get_dataset(dataset)
    staging = directory / ".staging"
    staging.mkdir(parents=True, exist_ok=True)
    name = f"{NATIONAL_TABLES[dataset]}_{batch_id}.xml"
    draft = staging / name
    try:
        write_xml(draft, spec, batch_id, source, records, len(records))
        problems = check_xml(draft, dataset, [key for key, _ in records], xsd_dir)
        if problems:
            raise XmlInvalid(problems)
        signed = XmlDsigProfile().seal(draft.read_bytes(), ours, peer)
        draft.write_bytes(signed)
        final = directory / name
        os.replace(draft, final)
        return final
    finally:
        draft.unlink(missing_ok=True)


def write_schemas(directory: Path = XSD_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for dataset in NATIONAL_TABLES:
        path = directory / f"{dataset}.xsd"
        path.write_text(schema_text(get_dataset(dataset)), encoding="utf-8")
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    for path in write_schemas(Path(args[0]) if args else XSD_DIR):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
