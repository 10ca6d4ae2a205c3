"""Control characters in text values: refused wherever text enters or leaves the gateway.

A department table or a dropped file may carry NUL, ESC, BEL or other C0 controls (U+0000-U+001F), DEL (U+007F)
and C1 controls (U+0080-U+009F, typically GBK text decoded as Latin-1). None of them belongs in a published
record: the platform shows them as garbage or refuses the batch, and a PostgreSQL TEXT column cannot hold NUL.
TAB, LF and CR are allowed in free text (contents, facts, remarks: :func:`is_free_text`), nowhere else.
"""

from __future__ import annotations

import re

# Text fields this long or unlimited are free text (a paragraph, not a name or a number): TAB/LF/CR allowed.
FREE_TEXT_MIN_LEN = 500

_ANY_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_CONTROL_BUT_LINES = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def is_free_text(max_len: int) -> bool:
    """A text field of ``max_len`` characters (0: no limit) holds free text."""
    return max_len == 0 or max_len >= FREE_TEXT_MIN_LEN


def control_reason(value: str, free_text: bool = False) -> str | None:
    """Why ``value`` is refused (the first control character and its position, from 1), None if it is not.

    The message never quotes the value: it may be an ID number."""
    if value.isprintable():  # nearly every value: one pass in C; isprintable is also False for spaces but " "
        return None
    found = (_CONTROL_BUT_LINES if free_text else _ANY_CONTROL).search(value)
    if found is None:
        return None
    return f"control character U+{ord(found.group()):04X} at position {found.start() + 1} of {len(value)}"


def escape_controls(value: str) -> str:
    """``value`` with every control character written as an escape (``\\x00``): for the keys of rejected rows,
    which are stored, logged and shown (a PostgreSQL column cannot hold NUL; a terminal obeys ESC)."""
    if value.isprintable():
        return value
    return _ANY_CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", value)
