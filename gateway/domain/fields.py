"""The shape of a canonical dataset: its fields (:class:`FieldSpec`) and the dataset itself (:class:`Dataset`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One canonical field: its type, label, standard identifier and static rules."""

    name: str
    label: str
    kind: str = "text"  # text | date | decimal | list | code
    required: bool = False
    max_len: int = 0
    codes: tuple[str, ...] = ()
    check: str = ""  # uscc | item_code (14 digits) | check_icode (USCC + 1–5) | region (GB/T 2260)
    personal_id: bool = False  # masked on routes that do not allow personal ID numbers


@dataclass(frozen=True, slots=True)
class Dataset:
    """A canonical dataset: fields, natural key and validation."""

    name: str
    label: str
    fields: tuple[FieldSpec, ...]
    key_fields: tuple[str, ...]
    date_field: str  # the decision date: drives the 7-working-day deadline
    # Record keys carry keyed pseudonyms of the key's personal ID numbers, not the numbers (domain.subject_keys).
    pseudonymised_key: bool = False

    @property
    def personal_key(self) -> bool:
        """True when a record key can hold a personal ID number (route masking covers fields, not keys)."""
        if self.pseudonymised_key:
            return False
        by_name = self.by_name()
        return any(by_name[k].personal_id for k in self.key_fields if k in by_name)

    def field(self, name: str) -> FieldSpec:
        return self.by_name()[name]

    def by_name(self) -> Mapping[str, FieldSpec]:
        return {f.name: f for f in self.fields}

    @property
    def personal_id_fields(self) -> frozenset[str]:
        return frozenset(f.name for f in self.fields if f.personal_id)
