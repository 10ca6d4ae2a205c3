"""Mapping files: ops-editable TOML compiled once into plain functions.

Two kinds of mapping:

* ``inbound``: a source row (column → value) becomes a canonical :class:`~gateway.records.Record`.
* ``outbound``: a canonical record becomes a target's record (e.g. the 2019 ``CF_*``/``XK_*`` names).

Each ``[fields.NAME]`` table takes a source (``from = "column"`` or ``value = "constant"``), an optional
``default``, ``transform`` steps from a whitelist, ``date_format``, ``unit`` (元 ↔ 万元), ``split``/``join``
for lists, ``codes`` (a code table, optionally with effective dates), ``required`` and ``required_if``.
Nothing is evaluated: every step is a named function chosen at compile time. Every problem names the
file and the TOML path; :func:`load_mapping` collects them all before raising.

The package is read in four parts: :mod:`~gateway.mapping.steps` (the whitelisted steps and date parsers),
:mod:`~gateway.mapping.codes` (code tables), :mod:`~gateway.mapping.model` (the compiled mappings) and
:mod:`~gateway.mapping.compile` (the compiler and TOML loading); :mod:`~gateway.mapping.fast` writes an
inbound mapping out as one generated function. :func:`load_mapping` is the two together.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from gateway.mapping import fast
from gateway.mapping.compile import Mapping_, load, mapping_files, mapping_version, source_columns
from gateway.mapping.model import InboundMapping, MappedRow, OutboundMapping
from gateway.mapping.steps import MappingError

__all__ = ["InboundMapping", "MappedRow", "MappingError", "OutboundMapping", "fast", "load_mapping", "mapping_files",
           "mapping_version", "source_columns"]


def load_mapping(path: str | Path) -> Mapping_:
    """Load and compile one mapping file (an inbound one also gets its generated function); raise ConfigError
    listing every problem with its TOML path."""
    compiled = load(path)
    if isinstance(compiled, InboundMapping):
        compiled = dataclasses.replace(compiled, fast=fast.compile_fast(compiled))
    return compiled
