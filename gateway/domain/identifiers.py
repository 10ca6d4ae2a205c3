"""Validation and masking of the identifiers carried by public-credit records.

Two national standards matter here. The 统一社会信用代码 (unified social credit code, USCC) of
GB 32100-2015 is 18 characters from a 31-character alphabet without I, O, Z, S and V: position 1
is the registration authority, 2 the organisation category, 3-8 the administrative division
(digits), 9-17 an embedded GB 11714 organisation code (8 characters plus its own mod-11 check
character) and 18 a mod-31 check character over the first 17. The 居民身份证号码 (resident
identity number) of GB 11643-1999 is 6 address digits, an 8-digit birth date, a 3-digit sequence
number and an ISO 7064 MOD 11-2 check character (0-9 or X); Hong Kong, Macau and Taiwan residence
permits (810000/820000/830000) and the 9-prefixed foreigner permanent residence card use the same
layout and check. We do not use python-stdnum: its ``cn.uscc`` validator requires the first eight
USCC characters to be digits and so rejects real codes whose registration authority is a letter
(``Y…``, ``N…``, ``A…``), and its ``cn.ric`` checks address codes against a dated county table that
rejects abolished but still valid codes. Everything here is a pure function over precomputed
tables (it runs once per record field, millions of times per batch); the ``check_*`` functions
return ``None`` when the value is valid and otherwise a short English reason for the quarantine
log. Callers normalise (strip, upper-case) explicitly: lower case is reported, not corrected.
Reasons name the value checked, so pass log lines through :func:`mask_ids_in_text` (or mask the
number with :func:`mask_id`) before they leave the trusted zone.
"""

from __future__ import annotations

import datetime
import re
from typing import Final

__all__ = [
    "USCC_ALPHABET",
    "check_org_code",
    "check_resident_id",
    "check_uscc",
    "id_check_char",
    "is_placeholder",
    "mask_id",
    "mask_ids_in_text",
    "uscc_check_char",
]

# --- GB 32100-2015: unified social credit code -------------------------------------------------

USCC_ALPHABET: Final[str] = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_USCC_VALUE: Final[dict[str, int]] = {ch: i for i, ch in enumerate(USCC_ALPHABET)}
# W_i = 3^(i-1) mod 31: 1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28
_USCC_WEIGHTS: Final[tuple[int, ...]] = tuple(pow(3, i, 31) for i in range(17))
_USCC_LEN: Final = 18
_DIGITS: Final[frozenset[str]] = frozenset("0123456789")

# --- GB 11714-1997: organisation code (positions 9-17 of a USCC) -------------------------------

_ORG_VALUE: Final[dict[str, int]] = {ch: i for i, ch in enumerate("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ")}
_ORG_WEIGHTS: Final[tuple[int, ...]] = (3, 7, 9, 10, 5, 8, 4, 2)
_ORG_CHECK: Final[str] = "0123456789X0"  # index 11 - (S mod 11): 10 -> X, 11 -> 0
_ORG_LEN: Final = 9

# --- GB 11643-1999: resident identity number ---------------------------------------------------

_ID_VALUE: Final[dict[str, int]] = {str(d): d for d in range(10)}
_ID_WEIGHTS: Final[tuple[int, ...]] = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK: Final[str] = "10X98765432"  # indexed by S mod 11
_ID_LEN: Final = 18
_EARLIEST_BIRTH: Final = datetime.date(1880, 1, 1)
_CHINA_TZ: Final = datetime.timezone(datetime.timedelta(hours=8), "CST")
_PROVINCES: Final[frozenset[str]] = frozenset(
    [str(p) for p in range(11, 16)]  # 北京 天津 河北 山西 内蒙古
    + [str(p) for p in range(21, 24)]  # 辽宁 吉林 黑龙江
    + [str(p) for p in range(31, 38)]  # 上海 江苏 浙江 安徽 福建 江西 山东
    + [str(p) for p in range(41, 47)]  # 河南 湖北 湖南 广东 广西 海南
    + [str(p) for p in range(50, 55)]  # 重庆 四川 贵州 云南 西藏
    + [str(p) for p in range(61, 66)]  # 陕西 甘肃 青海 宁夏 新疆
    + ["71", "81", "82", "83"]  # 台湾; 香港 / 澳门 / 台湾 居住证
)
# Residence permits carry a fixed address code, not a district.
_PERMIT_ADDRESS: Final[dict[str, str]] = {"81": "810000", "82": "820000", "83": "830000"}

# --- placeholders and masking ------------------------------------------------------------------

# Compared after strip() and upper(); values a clerk types when the real identifier is unknown.
_PLACEHOLDER_TOKENS: Final[frozenset[str]] = frozenset(
    {"无", "空", "暂无", "没有", "未知", "不详", "不祥", "待定", "待补", "待补充", "未提供", "未填写"}
    | {"无编码", "无代码", "无号码", "略", "NULL", "NONE", "NIL", "NAN", "N/A", "NA", "UNKNOWN", "TBD"}
)
# A value made only of these (dashes, slashes, dots, stars...) is a placeholder.
_PLACEHOLDER_CHARS: Final[frozenset[str]] = frozenset("-‐‑–—―_/\\|.。·,，、*＊#?？~～…()（）[]【】 \u3000")
_SHOWN_MAX: Final = 40  # longer inputs are cut in reasons so one bad cell cannot flood a log

# An 18-character ID number not glued to other ASCII letters or digits. Not \b: CJK characters count
# as word characters, so "号码11010519491231002X的" would not match with \b.
_ID_IN_TEXT: Final[re.Pattern[str]] = re.compile(r"(?<![0-9A-Za-z])[0-9]{17}[0-9Xx](?![0-9A-Za-z])")


def _shown(value: str) -> str:
    """The value as quoted in a reason, cut when absurdly long."""
    return value if len(value) <= _SHOWN_MAX else value[:_SHOWN_MAX] + "…"


def _char_problem(ch: str, position: int) -> str:
    """Reason for a character outside the allowed set (1-based position)."""
    if ch.isascii() and ch.islower():
        return f"must be upper case (character {ch!r} at position {position})"
    return f"character {ch!r} at position {position} is not allowed"


def uscc_check_char(first17: str) -> str:
    """GB 32100 check character (position 18) for the first 17 characters of a USCC.

    Raises ValueError when ``first17`` is not 17 characters of :data:`USCC_ALPHABET`.
    """
    if len(first17) != _USCC_LEN - 1:
        raise ValueError(f"expected 17 characters, got {len(first17)}")
    total = 0
    for position, (ch, weight) in enumerate(zip(first17, _USCC_WEIGHTS, strict=True), start=1):
        value = _USCC_VALUE.get(ch)
        if value is None:
            raise ValueError(f"{first17!r}: character {ch!r} at position {position} is not allowed")
        total += value * weight
    return USCC_ALPHABET[(31 - total % 31) % 31]


def _org_code_problem(code9: str) -> str | None:
    """Reason a 9-character GB 11714 organisation code is invalid, without the value prefix."""
    if len(code9) != _ORG_LEN:
        return f"length {len(code9)}, expected {_ORG_LEN}"
    total = 0
    for position, (ch, weight) in enumerate(zip(code9, _ORG_WEIGHTS, strict=False), start=1):
        value = _ORG_VALUE.get(ch)
        if value is None:
            return _char_problem(ch, position)
        total += value * weight
    expected = _ORG_CHECK[11 - total % 11]
    actual = code9[8]
    if actual == expected:
        return None
    if actual == "x" and expected == "X":
        return "must be upper case (character 'x' at position 9)"
    return f"check character should be {expected}, not {actual}"


def check_org_code(code9: str) -> str | None:
    """None when ``code9`` is a valid GB 11714 organisation code (8 characters + check), else why not."""
    if is_placeholder(code9):
        return f"organisation code {_shown(code9)}: placeholder code"
    problem = _org_code_problem(code9)
    return None if problem is None else f"organisation code {_shown(code9)}: {problem}"


def check_uscc(code: str, *, strict_org_code: bool = False) -> str | None:
    """None when ``code`` is a valid unified social credit code, else a short reason.

    Checks the length, the alphabet, that positions 3-8 (administrative division) are digits and the
    check character. Positions 1 and 2 are checked only against the alphabet: the authority and
    category tables keep growing. The embedded organisation code (positions 9-17) is checked only
    with ``strict_org_code=True``; its check fails on some real codes, so by default it is left to
    the caller to warn about it (``check_org_code(code[8:17])``).
    """
    if is_placeholder(code):
        return f"USCC {_shown(code)}: placeholder code"
    if len(code) != _USCC_LEN:
        if code.strip() != code:
            return f"USCC {_shown(code)}: leading or trailing whitespace (strip it first)"
        return f"USCC {_shown(code)}: length {len(code)}, expected {_USCC_LEN}"
    total = 0
    for position, (ch, weight) in enumerate(zip(code, _USCC_WEIGHTS, strict=False), start=1):
        value = _USCC_VALUE.get(ch)
        if value is None:
            return f"USCC {code}: {_char_problem(ch, position)}"
        total += value * weight
    last = code[17]
    if last.isascii() and last.islower():
        return f"USCC {code}: {_char_problem(last, 18)}"
    division = code[2:8]
    if not _DIGITS.issuperset(division):
        return f"USCC {code}: administrative division code {division!r} (positions 3-8) must be digits"
    expected = USCC_ALPHABET[(31 - total % 31) % 31]
    if last != expected:
        return f"USCC {code}: check character should be {expected}, not {last}"
    if strict_org_code:
        problem = _org_code_problem(code[8:17])
        if problem is not None:
            return f"USCC {code}: embedded organisation code {code[8:17]} (positions 9-17): {problem}"
    return None


def is_placeholder(code: str) -> bool:
    """True for obvious junk typed where an identifier is unknown.

    After strip(): the empty string, words like 无 / 空 / 暂无 / NULL / N/A, strings of only dashes,
    slashes, dots or stars, one character repeated (``111111111111111111``) and all zeros followed
    by any one character (``00000000000000000X``).
    """
    value = code.strip()
    if not value:
        return True
    first = value[0]
    if len(value) > 1 and value == first * len(value):
        return True
    if first == "0" and not value[:-1].strip("0"):
        return True
    return value.upper() in _PLACEHOLDER_TOKENS or _PLACEHOLDER_CHARS.issuperset(value)


def id_check_char(first17: str) -> str:
    """GB 11643 check character (0-9 or X) for the first 17 digits of a resident ID number.

    Raises ValueError when ``first17`` is not 17 ASCII digits.
    """
    if len(first17) != _ID_LEN - 1:
        raise ValueError(f"expected 17 digits, got {len(first17)}")
    total = 0
    for position, (ch, weight) in enumerate(zip(first17, _ID_WEIGHTS, strict=True), start=1):
        value = _ID_VALUE.get(ch)
        if value is None:
            raise ValueError(f"character {ch!r} at position {position} is not a digit")
        total += value * weight
    return _ID_CHECK[total % 11]


def _address_problem(number: str) -> str | None:
    """Reason the address code (positions 1-6) of a structurally valid ID number is impossible."""
    if number[0] == "9":  # 外国人永久居留身份证: 9 + province + country code
        return None
    prefix = number[:2]
    if prefix not in _PROVINCES:
        return f"address code {number[:6]} has unknown province prefix {prefix}"
    permit = _PERMIT_ADDRESS.get(prefix)
    if permit is not None and number[:6] != permit:
        return f"address code {number[:6]} should be {permit} for a residence permit"
    return None


def _birth_date_problem(number: str, today: datetime.date | None) -> str | None:
    """Reason the birth date (positions 7-14) of a structurally valid ID number is impossible."""
    digits = number[6:14]
    try:
        birth = datetime.date(int(digits[:4]), int(digits[4:6]), int(digits[6:]))
    except ValueError:
        return "birth date (positions 7-14) is not a real date"
    if birth < _EARLIEST_BIRTH:
        return "birth date (positions 7-14) is before 1880-01-01"
    if today is None:
        today = datetime.datetime.now(_CHINA_TZ).date()
    if birth > today:
        return "birth date (positions 7-14) is in the future"
    return None


def check_resident_id(number: str, *, today: datetime.date | None = None) -> str | None:
    """None when ``number`` is a valid 18-character resident ID number, else a short reason.

    Checks digits, the province prefix of the address code (9xxxxx for the foreigner permanent
    residence card; 810000/820000/830000 for residence permits), the birth date (a real date, not
    before 1880-01-01, not after ``today``, default today in China) and the check character.
    15-digit legacy numbers and placeholders are rejected. A reason shows the number masked (:func:`mask_id`),
    whatever its shape: it goes to logs, the quarantine and the admin API.
    """
    if is_placeholder(number):
        return f"ID {_shown(number)}: placeholder number"
    if len(number) != _ID_LEN:
        if len(number) == 15 and _DIGITS.issuperset(number):
            return f"ID {_masked(number)}: 15-digit ID numbers are no longer valid; ask for the 18-digit number"
        if number.strip() != number:
            return f"ID {_masked(number)}: leading or trailing whitespace (strip it first)"
        return f"ID {_masked(number)}: length {len(number)}, expected {_ID_LEN}"
    total = 0
    for position, (ch, weight) in enumerate(zip(number, _ID_WEIGHTS, strict=False), start=1):
        value = _ID_VALUE.get(ch)
        if value is None:
            return f"ID {_masked(number)}: character {ch!r} at position {position} is not allowed"
        total += value * weight
    last = number[17]
    if last == "x":
        return f"ID {_masked(number)}: must be upper case (character 'x' at position 18)"
    problem = _address_problem(number) or _birth_date_problem(number, today)
    if problem is not None:
        return f"ID {_masked(number)}: {problem}"
    expected = _ID_CHECK[total % 11]
    if last != expected:
        return f"ID {_masked(number)}: check character should be {expected}, not {last}"
    return None


def _masked(number: str) -> str:
    """A malformed ID number as a reason shows it: masked, and cut when absurdly long."""
    return mask_id(number) if len(number) <= _SHOWN_MAX else mask_id(number[:_SHOWN_MAX]) + "…"


def mask_id(number: str) -> str:
    """Mask a personal ID number for public display.

    18 characters: keep the first 6 (region) and the last 4 (sequence and check), star the 8 birth
    date digits: ``110105********002X``. Other lengths (passports, permits): keep the first 2 and the
    last 2; 4 characters or fewer become all stars. Idempotent on already-masked values.
    """
    n = len(number)
    if n == _ID_LEN:
        return number[:6] + "********" + number[14:]
    if n <= 4:
        return "*" * n
    return number[:2] + "*" * (n - 4) + number[-2:]


def _mask_match(match: re.Match[str]) -> str:
    """Replacement for one candidate ID number found in text: masked only if its check char is valid."""
    candidate = match.group()
    if id_check_char(candidate[:17]) == candidate[17].upper():
        return mask_id(candidate)
    return candidate


def mask_ids_in_text(text: str) -> str:
    """Mask every 18-character resident ID number (valid check character) embedded in free text.

    Candidates are 17 digits plus a digit or X not adjacent to other ASCII letters or digits, so
    USCCs with letters and longer digit runs are left alone; an 18-digit USCC whose last digit
    happens to satisfy the ID check would be masked too (rare, and harmless).
    """
    return _ID_IN_TEXT.sub(_mask_match, text)
