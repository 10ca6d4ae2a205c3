"""Sample rows of the department's supervision-action tables (检查/处罚/强制/其他行为), in the column names and local
codes of ``mappings/department-{inspection,enforcement,coercion,other-action}.toml``.

:func:`supervision_rows` makes ``count`` rows of one table from a seed: most valid, and every ``broken_every``-th
one broken in one named way (the :data:`BREAKS` key it used is in the row's ``_broken`` column, which the mappings
do not read). Penalties name inspections of the same seed (``jcxwbh``), so an inspection and the penalty that
followed can be reported together.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable
from typing import Any, Final

from gateway.domain.identifiers import id_check_char
from gateway.testing.rows import make_uscc

TABLES: Final = {"inspection": "jcxw", "enforcement": "cfxw", "coercion": "qzxw", "other_action": "qtxw"}
BODY: Final = ("苏州市市场监督管理局", make_uscc("11", "320500", "01416015"))
ITEM_CODE: Final = "32050001001001"  # 监管事项目录编码 (14 digits)
CHECK_LIST_CODE: Final = BODY[1] + "1" + "0001"  # the organ's USCC, 1–5, then its own sequence
AREAS: Final = ("320505", "320506", "320507", "320508", "320509", "320581", "320583")
DAY0: Final = dt.date(2025, 3, 3)

Row = dict[str, Any]


def _company(rng: random.Random, n: int) -> tuple[str, str]:
    code8 = f"MA{rng.randrange(10**5):05d}" + rng.choice("ABCDEFGH")
    return f"苏州{n}号示例科技有限公司", make_uscc("91", rng.choice(AREAS), code8)


def _person(rng: random.Random) -> str:
    first17 = f"{rng.choice(AREAS)}19{rng.randint(60, 99)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}" \
              f"{rng.randrange(1000):03d}"
    return first17 + id_check_char(first17)


def _base(rng: random.Random, table: str, n: int, day: dt.date) -> Row:
    person = rng.random() < 0.2
    name, uscc = ("张某某", _person(rng)) if person else _company(rng, n)
    return {
        "jgsxbm": ITEM_CODE, "jcssqdbm": CHECK_LIST_CODE, "xwmc": f"{table} 行为 {n}",
        "xwbh": f"{table.upper()}-{day:%Y%m%d}-{n:06d}", "ssjg": BODY[0], "ssjgbm": BODY[1],
        "jgdxlx": "06" if person else "01", "jgdx": name, "xdr_mc": name, "xdr_xz": "2" if person else "1",
        "xdr_zjlx": "01" if person else "00", "xdr_bm": uscc, "zcdz": "苏州市姑苏区人民路 1 号",
        "xzqh": rng.choice(AREAS), "bssj": (day + dt.timedelta(days=rng.randint(0, 5))).strftime("%Y/%m/%d"),
        "bsry": "李某", "sczt": "0",
    }


def _inspection(rng: random.Random, n: int, day: dt.date) -> Row:
    return {"sjjh_id": f"PLAN-{day.year}-{n % 7}", "jcxs": f"0{rng.randint(1, 6)}", "jclb": "01", "jcfs": "01",
            "jcjg": f"0{rng.randint(1, 5)}", "jcsj": day.strftime("%Y/%m/%d"), "jcry": "王某，陈某",
            "zfzh": "32050001，32050002"}


def _enforcement(rng: random.Random, n: int, day: dt.date) -> Row:
    return {"jcxwbh": inspection_code(n, day), "ajly": "01", "wfss": "未按规定公示年度报告",
            "cfyj": "《市场主体登记管理条例》",
            "cfcx": "02", "sftz": "0", "lasj": (day - dt.timedelta(days=20)).isoformat(), "sfsx": "0", "sfzd": "0",
            "sffzsh": "1", "wsh": f"苏市监罚〔{day.year}〕{n}号", "jdrq": day.strftime("%Y/%m/%d"), "cfzl": "01,03",
            "fkje": str(rng.choice((2000, 5000, 10000))), "jg": "已执行"}


def _coercion(rng: random.Random, n: int, day: dt.date) -> Row:
    return {"qzyj": "《行政强制法》第二十二条", "wsh": f"苏市监强〔{day.year}〕{n}号", "qzzl": "01", "qzcslx": "03",
            "ksrq": day.isoformat(), "jsrq": (day + dt.timedelta(days=30)).isoformat(), "jg": "已解除"}


def _other(rng: random.Random, n: int, day: dt.date) -> Row:
    return {"sxly": "日常监管", "jgcs": "约谈", "jaqk": "已整改", "ksrq": day.isoformat()}


def inspection_code(n: int, day: dt.date) -> str:
    """The 检查行为编号 of inspection row ``n`` made for ``day`` (what its penalty names)."""
    return f"JCXW-{day:%Y%m%d}-{n:06d}"


_MAKERS: Final[dict[str, Callable[[random.Random, int, dt.date], Row]]] = {
    "jcxw": _inspection, "cfxw": _enforcement, "qzxw": _coercion, "qtxw": _other}
_DATE_COLUMN: Final = {"jcxw": "jcsj", "cfxw": "jdrq", "qzxw": "ksrq", "qtxw": "ksrq"}

# one way to break a row → (column, value, canonical field that must be named)
BREAKS: Final[dict[str, tuple[str, Any, str]]] = {
    "item_code_13_digits": ("jgsxbm", "3205000100100", "item_code"),
    "check_list_19th_char": ("jcssqdbm", BODY[1] + "9" + "0001", "check_list_code"),
    "check_list_bad_uscc": ("jcssqdbm", BODY[1][:17] + "0" + "1" + "0001", "check_list_code"),
    "unknown_region": ("xzqh", "329999", "area_number"),
    "unknown_object_type": ("jgdxlx", "99", "object_type"),
    "bad_subject_uscc": ("xdr_bm", "91110000600037341N", "subject_code"),
    "missing_subject": ("xdr_mc", "", "subject_name"),
}


def supervision_rows(dataset: str, count: int, *, seed: int = 1, broken_every: int = 10,
                     day: dt.date = DAY0) -> list[Row]:
    """``count`` department rows of ``dataset``'s table; row n is broken when ``n % broken_every == 1``."""
    table, rng = TABLES[dataset], random.Random(f"{seed}:{dataset}")  # noqa: S311 (sample data)
    rows = []
    for n in range(count):
        row = _base(rng, table, n, day) | _MAKERS[table](rng, n, day)
        if table == "jcxw":
            row["xwbh"] = inspection_code(n, day)
            row["bssj"] = (day + dt.timedelta(days=rng.randint(0, 5))).strftime("%Y/%m/%d")
        if broken_every and n % broken_every == 1:
            kind = list(BREAKS)[(n // broken_every) % len(BREAKS)]
            column, value, _field = BREAKS[kind]
            row[column], row["_broken"] = value, kind
        rows.append(row)
    return rows


def late_report(row: Row) -> Row:
    """The row with its 报送时间 a day before the action's date (a broken row: submitted before it happened)."""
    table = next(t for t, c in _DATE_COLUMN.items() if c in row and t in _MAKERS and _matches(row, t))
    happened = dt.date.fromisoformat(str(row[_DATE_COLUMN[table]]).replace("/", "-"))
    return row | {"bssj": (happened - dt.timedelta(days=1)).isoformat()}


def _matches(row: Row, table: str) -> bool:
    return {"jcxw": "jcjg", "cfxw": "jcxwbh", "qzxw": "qzzl", "qtxw": "jgcs"}[table] in row
