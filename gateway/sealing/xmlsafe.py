"""The one place untrusted XML is parsed: no DTD, no entities, no network, bounded size, depth and element count.

XML from a peer can attack the parser before any signature is checked: a DOCTYPE can declare entities that
expand a few hundred bytes into gigabytes ("billion laughs"), external entities read local files or URLs,
and deep or huge trees exhaust memory. :func:`parse_xml` refuses all of that:

* a document with a DOCTYPE (internal or external subset) is refused outright, before parsing (the bytes
  must be UTF-8, so the declaration cannot hide in another encoding) and again after it (libxml2's view);
* entities are never resolved or expanded, and no DTD or other resource is loaded, from the network or disk;
* the input is bounded in bytes, libxml2's default depth and text-node limits stay on (``huge_tree`` off),
  and the number of elements is bounded.

Every refusal raises :class:`XmlRefused` naming what was refused; callers map it to their own answer.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from lxml import etree  # type: ignore[import-untyped]

from gateway.errors import GatewayError

MAX_BYTES = 16 * 1024 * 1024
MAX_ELEMENTS = 200_000

# The XML declaration's encoding, if any (it must come first, so the start of the document suffices).
_DECLARED = re.compile(rb"""^\s*<\?xml[^>]*?encoding\s*=\s*["']([A-Za-z0-9._-]+)["']""")
_UTF8_NAMES = frozenset({"utf-8", "utf8", "us-ascii", "ascii"})


class XmlRefused(GatewayError):
    """Untrusted XML was refused: malformed, a DTD or entities, not UTF-8, or too big."""


def _parser() -> etree.XMLParser:
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False,
                           huge_tree=False, remove_blank_text=False, remove_comments=False, collect_ids=False)


def _check_bytes(data: bytes, what: str, max_bytes: int) -> None:
    if len(data) > max_bytes:
        raise XmlRefused(f"the {what} is {len(data)} bytes; at most {max_bytes} are accepted")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in data[:4]:
        raise XmlRefused(f"the {what} is not UTF-8 (UTF-16/32 XML is refused)")
    declared = _DECLARED.match(data[:200])
    if declared and declared.group(1).decode().lower() not in _UTF8_NAMES:
        raise XmlRefused(f"the {what} declares encoding {declared.group(1).decode()!r}; only UTF-8 is accepted")
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise XmlRefused(f"the {what} has a DTD (DOCTYPE/ENTITY declaration); XML with a DTD is refused")


def _check_tree(root: etree._Element, what: str, max_elements: int) -> None:
    docinfo = root.getroottree().docinfo
    if docinfo.internalDTD is not None or docinfo.externalDTD is not None or docinfo.doctype:
        raise XmlRefused(f"the {what} has a DTD (DOCTYPE); XML with a DTD is refused")
    for count, node in enumerate(root.iter(), start=1):
        if isinstance(node, etree._Entity):
            raise XmlRefused(f"the {what} uses an entity reference (&{node.name};); entities are refused")
        if count > max_elements:
            raise XmlRefused(f"the {what} has more than {max_elements} elements")


def write_records(tag: str, attributes: Mapping[str, str], records: Sequence[Mapping[str, Any]],
                  heads: Sequence[tuple[str, Mapping[str, str]]] = ()) -> bytes:
    """``<tag …><head …/>…<record><field name="k">v</field>…</record>…</tag>`` as UTF-8 with a declaration (the
    writer escapes every value; nothing here comes from a template). ``heads`` are empty elements with
    attributes, written before the records (e.g. a batch's ``<snapshot>``)."""
    root = etree.Element(tag, **attributes)
    for name, values in heads:
        etree.SubElement(root, name, **values)
    for record in records:
        node = etree.SubElement(root, "record")
        for name, value in record.items():
            etree.SubElement(node, "field", name=str(name)).text = "" if value is None else str(value)
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


def parse_xml(data: bytes, what: str = "XML document", *, max_bytes: int = MAX_BYTES,
              max_elements: int = MAX_ELEMENTS) -> etree._Element:
    """The root element of ``data``, parsed safely; :class:`XmlRefused` names what was refused."""
    _check_bytes(data, what, max_bytes)
    try:
        root = etree.fromstring(data, parser=_parser())
    except etree.XMLSyntaxError as exc:
        raise XmlRefused(f"the {what} is not well-formed XML ({exc})") from exc
    if root is None:
        raise XmlRefused(f"the {what} is empty")
    _check_tree(root, what, max_elements)
    return root
