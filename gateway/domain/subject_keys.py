"""Record keys without personal ID numbers: keyed pseudonyms of the ID numbers in natural keys.

A dataset whose natural key names a natural person by ID number (``credit_list``: list code + USCC + ID
number) sets ``pseudonymised_key``: its record key carries ``p`` + the first 32 hex digits (128 bits) of
HMAC-SHA256(secret, ID number) in place of the number, e.g. ``RED-2026||p3f9a…``. Route masking covers fields,
not keys, and the key reaches every target (``recordKey``, receipts, logs, evidence): a keyed pseudonym is the
same for one subject every time, so versions, conflicts and read-backs still find it, but it cannot be
reversed by anyone without the secret (an unkeyed hash could: ID numbers are a small, structured space).
128 bits make a collision between two subjects negligible (about 10⁻²¹ for a billion subjects).

The secret is 32 random bytes made once per store and kept in its ``cg_meta`` table
(:meth:`gateway.store.lists.ListsMixin.key_secret`): every gateway instance on one store gets the same one
without anything to configure or copy, and it lives beside the ledger, which holds the ID numbers themselves,
so whoever can read it could read them anyway. :class:`KeySecret` holds it and never shows it: ``repr`` and
``str`` give only a fingerprint, it is not JSON-serialisable, and it is no ``str`` that a log call could
carry. The ``p`` prefix keeps the pseudonym one alphanumeric token, so the log redactor's ID-number pattern
(18 characters not glued to letters or digits) can never mistake part of it for an ID number.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Mapping

from gateway.domain.datasets import Dataset, natural_key
from gateway.records import FieldValue, make_key

META_NAME = "subject_key_secret"  # the cg_meta row holding the secret (base64)
PREFIX = "p"
HEX_DIGITS = 32  # 128 bits of the HMAC
SECRET_BYTES = 32
_LABEL = b"credit-gateway subject id v1\x00"  # domain separation: the same secret may key other things later


class KeySecretMissing(ValueError):
    """A record of a dataset with pseudonymised keys was mapped without the store's key secret."""


class KeySecret:
    """The per-store secret that keys ID-number pseudonyms; it shows only its fingerprint."""

    __slots__ = ("_key", "_mac")

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("a key secret needs at least 16 bytes")
        self._key = key
        self._mac = hmac.new(key, _LABEL, hashlib.sha256)

    @classmethod
    def generate(cls) -> KeySecret:
        """A fresh random secret (a throw-away one for ``mapping test``)."""
        return cls(secrets.token_bytes(SECRET_BYTES))

    @classmethod
    def from_stored(cls, text: str) -> KeySecret:
        """The secret from its ``cg_meta`` form (base64); ValueError when that is damaged."""
        try:
            return cls(base64.b64decode(text, validate=True))
        except (binascii.Error, ValueError):
            raise ValueError(f"cg_meta.{META_NAME} is damaged: expected base64 of at least 16 bytes") from None

    @staticmethod
    def new_stored() -> str:
        """A new random secret in its ``cg_meta`` form."""
        return base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()

    def pseudonym(self, id_no: str) -> str:
        """``p`` + 32 hex digits, the same for the same ID number (stripped, upper case) under one secret."""
        mac = self._mac.copy()
        mac.update(id_no.strip().upper().encode())
        return PREFIX + mac.hexdigest()[:HEX_DIGITS]

    @property
    def fingerprint(self) -> str:
        """8 hex digits that tell two secrets apart (every instance on one store shows the same) and reveal
        nothing about the secret or any ID number."""
        mac = self._mac.copy()
        mac.update(b"\x00fingerprint")
        return mac.hexdigest()[:8]

    def __repr__(self) -> str:
        return f"KeySecret(fingerprint={self.fingerprint})"

    __str__ = __repr__

    def __reduce__(self) -> tuple[type[KeySecret], tuple[bytes]]:
        """Picklable for the mapping worker processes: the bytes travel in the pipe, never as text."""
        return (KeySecret, (self._key,))


def record_key(dataset: Dataset, fields: Mapping[str, FieldValue], secret: KeySecret | None) -> str:
    """The record key of a record's fields: its natural key, with ID numbers pseudonymised where the dataset
    says so (:class:`KeySecretMissing` when that needs a secret and none was given: never the number instead)."""
    parts = natural_key(dataset, fields)
    if not dataset.pseudonymised_key:
        return make_key(*parts)
    if secret is None:
        raise KeySecretMissing(f"{dataset.name} record keys pseudonymise ID numbers: the store's key secret "
                               "is needed to map its records")
    personal = dataset.personal_id_fields
    return make_key(*(secret.pseudonym(part) if name in personal and part else part
                      for name, part in zip(dataset.key_fields, parts, strict=True)))


def is_pseudonym(part: str) -> bool:
    """True for a key part made by :meth:`KeySecret.pseudonym`."""
    return len(part) == 1 + HEX_DIGITS and part.startswith(PREFIX) and all(c in "0123456789abcdef" for c in part[1:])
