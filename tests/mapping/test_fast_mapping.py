"""Tests for gateway.mapping.fast: every inbound mapping's generated function against the interpreted path.

The interpreted path (:meth:`InboundMapping.reference`) is the oracle: for every row — the sample department
database's, thousands of mutated ones, rows of a mapping file that uses every feature — both paths must give
the same fields (names, order, types, values), operation, key, problems (order and messages) and ledger entry,
or raise the same exception. Mapping files that try to smuggle code into the generated source must map like
any other and run nothing.
"""

from __future__ import annotations

import datetime as dt
import pickle
import random
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from gateway.domain.subject_keys import KeySecret
from gateway.errors import ConfigError, Problem
from gateway.mapping import InboundMapping, load_mapping, show, source_columns
from gateway.mapping import fast as fastmap
from gateway.pipeline import workers as cpu
from gateway.testing.department_db import SampleResult, SampleSpec, create_department_db
from gateway.testing.national import TABLES as NATIONAL_TABLES
from gateway.testing.national import supervision_rows
from gateway.testing.rows import PLACEHOLDER_USCC, make_uscc
from tests.support.helpers import MAPPINGS, read_rows

TODAY = dt.date(2025, 6, 1)
SECRET = KeySecret(bytes(range(32)))
INBOUND = sorted(p.name for p in MAPPINGS.glob("*.toml") if 'kind = "inbound"' in p.read_text(encoding="utf-8"))
TABLES = {"department-penalty.toml": "xzcf", "department-license.toml": "xzxk"}
# the supervision actions' department tables: rows from gateway.testing.national (10% broken in named ways)
SUPERVISION = {f"department-{ds.replace('_', '-')}.toml": ds for ds in NATIONAL_TABLES}
FUZZ_ROWS = 3000
COMPANY, ORGAN = make_uscc("91", "320505", "MA1B3N1N"), make_uscc("11", "320500", "01411742")


def inbound(path: Path | str) -> InboundMapping:
    mapping = load_mapping(path)
    assert isinstance(mapping, InboundMapping)
    assert mapping.fast is not None
    return mapping


def outcome(mapping: InboundMapping, row: dict[str, Any]) -> tuple[Any, ...]:
    """Everything a row's mapping gives, comparable across the two paths (types included: 1 == Decimal(1))."""
    try:
        mapped = mapping.map_row(row, TODAY, "src", "row-1", secret=SECRET)
        entry = mapping.map_entry(row, TODAY, "src", "row-1", secret=SECRET)
    except Exception as exc:  # the same exception on both paths is part of the contract
        return ("raised", type(exc).__name__, str(exc))
    fields = None if mapped.record is None else [(k, type(v).__name__, repr(v))
                                                 for k, v in mapped.record.fields.items()]
    return mapped, fields, [(p.path, p.message) for p in mapped.problems], entry


def assert_same(mapping: InboundMapping, rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    reference = mapping.reference()
    assert reference.fast is None
    results = []
    for i, row in enumerate(rows):
        fast, slow = outcome(mapping, row), outcome(reference, row)
        assert fast == slow, f"row {i}: {row!r}"
        results.append(fast)
    return results


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> tuple[SampleResult, dict[str, list[dict[str, Any]]]]:
    path = tmp_path_factory.mktemp("fastmap") / "department.db"
    result = create_department_db(path, SampleSpec(licences=700, penalties=700, invalid_fraction=0.1, today=TODAY,
                                                   natural_person_fraction=0.3))
    return result, {table: read_rows(path, table) for table in ("xzcf", "xzxk")}


# ---------------------------------------------------------------- rows for every inbound mapping


def _text(value: Any, rng: random.Random, formats: tuple[str, ...]) -> Any:
    """A canonical value as a department column might hold it (dates in one of the field's formats)."""
    if isinstance(value, dt.date):
        return value.strftime(rng.choice(formats or ("%Y-%m-%d",)))
    if isinstance(value, list):
        return rng.choice(["；", ",", "、"]).join(value)
    return str(value)


def rows_for(name: str, rows: dict[str, list[dict[str, Any]]], seed: int = 1) -> list[dict[str, Any]]:
    """Sample rows a mapping reads: the department's own tables, or for the platform's and the feedback's
    mappings rows carrying the sample's canonical values under the mapping's columns."""
    if name in TABLES:
        return [{k: v for k, v in r.items() if k not in ("id", "gxsj")} for r in rows[TABLES[name]]]
    if name in SUPERVISION:
        return [{k: v for k, v in r.items() if k != "_broken"}
                for r in supervision_rows(SUPERVISION[name], 300, seed=seed, day=TODAY - dt.timedelta(days=30))]
    mapping, rng = inbound(MAPPINGS / name), random.Random(seed)
    department = {table: inbound(MAPPINGS / file).reference() for file, table in TABLES.items()}
    canonical = [m.record.fields for table, source in department.items()
                 for r in rows[table] if (m := source.map_row(r, TODAY)).record]
    specs, formats = mapping.dataset.by_name(), {plan.name: plan.formats for plan in mapping.plans}
    columns = [(plan.name, plan.column) for plan in mapping.plans if plan.column] + list(mapping.plain)
    made = []
    for i, fields in enumerate(canonical):
        row: dict[str, Any] = {}
        for field, column in columns:
            spec = specs[field]
            if field in fields:
                row[column] = _text(fields[field], rng, formats.get(field, ()))
            elif spec.kind in ("code", "list"):
                row[column] = rng.choice(spec.codes)
            elif spec.kind == "date":
                day = fields.get("decision_date", TODAY) - dt.timedelta(days=rng.randint(-9, 400))
                row[column] = _text(day, rng, formats.get(field, ()))
            elif spec.check == "uscc":
                row[column] = fields.get("authority_code")
            else:
                row[column] = f"{field[:3].upper()}{i}"[:spec.max_len or None] if spec.kind == "text" else str(i)
        plan = mapping.operation_plan
        if plan is not None and plan.column:
            row[plan.column] = rng.choice([*(plan.table.entries if plan.table else ["upsert", "revoke"]), None, ""])
        made.append(row)
    return made


class TestSampleRows:
    @pytest.mark.parametrize("name", INBOUND)
    def test_every_sample_row_maps_the_same_on_both_paths(self, name: str, sample: Any) -> None:
        """Valid and broken sample rows give identical records, problems, keys and ledger entries."""
        results = assert_same(inbound(MAPPINGS / name), rows_for(name, sample[1]))
        accepted = sum(r[0].record is not None for r in results if r[0] != "raised")
        assert accepted > 100 and len(results) - accepted > 10  # both outcomes are compared, not just one

    def test_the_deliberately_broken_penalties_are_among_the_rejects(self, sample: Any) -> None:
        """The fast path rejects exactly the rows sampledata broke on purpose (platform_reject's names are longer
        than the dataset's 200 characters too)."""
        result, rows = sample
        mapping = inbound(MAPPINGS / "department-penalty.toml")
        rejected = {r["id"] for r in rows["xzcf"]
                    if mapping.map_row(r, TODAY, secret=SECRET).record is None}
        assert rejected == set(result.invalid["xzcf"])

    def test_a_small_date_cache_is_emptied_and_refilled(self, sample: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        """Past its limit the date cache starts again; what it returns does not change."""
        monkeypatch.setattr(fastmap, "_DATE_CACHE", 3)
        mapping = inbound(MAPPINGS / "department-penalty.toml")
        assert_same(mapping, rows_for("department-penalty.toml", sample[1])[:300])
        assert mapping.fast is not None
        caches = [v for k, v in mapping.fast.__globals__.items() if k.startswith("dates")]
        assert caches and all(len(c) <= 3 for c in caches)


# ---------------------------------------------------------------- a mapping file using every feature

RICH = """
[mapping]
kind = "inbound"
dataset = "penalty"

[operation]
from = "op"
default = "revoke"  # a default that is not an operation is refused at load (TestOptionTypes)

[codes.category]
"1" = "法人及非法人组织"
"2" = "自然人"
"3" = "个体工商户"
[codes.kinds]
_unknown = "keep"
"01" = "警告"
"03" = "罚款"
"06" = [ { value = "暂扣许可证件", from = 2021-07-15 }, { value = "暂扣许可证", until = 2021-07-14 } ]
[codes.severity]
"1" = "一般"
"0" = ""
"9" = [ { value = "严重", until = 2021-07-14 } ]  # in effect before the 15th only, never without a date

[fields.decision_no]
from = "no"
transform = ["remove_spaces", "upper"]
[fields.subject_name]
from = "name"
transform = []
default = "无名"
[fields.subject_category]
from = "cat"
codes = "category"
default = "1"
[fields.uscc]
from = "uscc"
transform = ["halfwidth", "strip", "upper"]
[fields.legal_rep]
from = "rep"
transform = "collapse_spaces"
[fields.id_type]
from = "idt"
[fields.id_no]
from = "idn"
transform = ["strip", "lower", "halfwidth"]
required_if = { subject_category = ["自然人"] }
[fields.violation_type]
value = 12
[fields.violation_facts]
from = "facts"
required = true
[fields.legal_basis]
value = "《条例》"
[fields.penalty_types]
from = "kinds"
split = "/|"
codes = "kinds"
[fields.content]
from = "content"
transform = ["strip", "collapse_spaces", "lower"]
[fields.fine_wan]
from = "fine"
unit = "wan_to_yuan"
default = "0"
[fields.confiscated_wan]
from = "conf"
[fields.decision_date]
from = "date"
date_format = ["%Y%m%d", "%Y-%m-%d", "%d.%m.%Y", "%Y-%m-%d %H:%M:%S"]
[fields.valid_until]
from = "until"
default = "2099-12-31"
[fields.publicity_end]
value = 2030-01-01
[fields.authority]
from = "auth"
[fields.authority_code]
from = "code"
[fields.data_source]
from = "auth"
[fields.data_source_code]
value = "@ORGAN@"
[fields.severity]
from = "sev"
codes = "severity"
[fields.withdraw_reason]
from = "why"
[fields.domain]
value = ""
[fields.region_code]
value = 320500
""".replace("@ORGAN@", ORGAN)
RICH_COLUMNS = ("op", "no", "name", "cat", "uscc", "rep", "idt", "idn", "facts", "kinds", "content", "fine", "conf",
                "date", "until", "auth", "code", "sev", "why")


def rich_rows(n: int, seed: int = 3) -> list[dict[str, Any]]:
    """Rows for RICH: mostly each column's first (valid) value, otherwise any of its odd ones."""
    rng = random.Random(seed)
    values: dict[str, list[Any]] = {
        "op": ["upsert", "revoke", " withdraw ", "", None, "x"],
        "no": [f" 苏 罚 〔2021〕 {i} 号 " for i in range(1, 30)],
        "name": ["苏州某某有限公司", "  ", None, "张三"],
        "cat": ["1", "2", "3", " 2 ", "", None, "7"],
        "uscc": [COMPANY, "９１３２", PLACEHOLDER_USCC, None, " " + COMPANY.lower()],
        "rep": ["李  四", "王 五 ", None],
        "idt": ["护照号", "身份证", "", None, "驾照"],
        "idn": ["E1234567", "11010519491231002x", "１１０１０５１９４９１２３１００２Ｘ", None],
        "facts": ["事实", "", None],
        "kinds": ["01/03", "06", "06|01", "99", "", None, "01//03", ["01", "06"]],
        "content": ["  罚款 5000 元 ", "WARNING  Given", None],
        "fine": ["1,000", 12.5, 3, "-1", "abc", None, "", Decimal("0.5")],
        "conf": [None, "7", float("nan"), True],
        "date": ["20210714", "2021-07-15", "15.07.2021", "2021-07-15 08:00:00", "2030-01-01", "bad", None,
                 dt.date(2021, 7, 14), dt.datetime(2021, 7, 16, 9, 0)],
        "until": ["2026-01-01", "2020-01-01", "", None, "2026/01/01"],
        "auth": ["苏州市市场监督管理局", None],
        "code": [ORGAN, ORGAN.lower(), "123"],
        "sev": ["1", "0", "9", "5", None],
        "why": ["信用修复", "其他-整改", "公示期满", "x", None],
    }
    return [{c: (v[0] if rng.random() < 0.9 else rng.choice(v)) for c, v in values.items() if rng.random() > 0.02}
            for _ in range(n)]


class TestEveryFeature:
    def test_a_mapping_using_every_feature_maps_the_same(self, tmp_path: Path) -> None:
        """Defaults, constants, every transform, strptime formats, units, dated and kept codes, lists, conditions,
        an operation without a code table and with an invalid default: identical on both paths."""
        (tmp_path / "rich.toml").write_text(RICH, encoding="utf-8")
        results = assert_same(inbound(tmp_path / "rich.toml"), rich_rows(2000))
        assert any(r[0] != "raised" and r[0].record is not None for r in results)
        assert {p for r in results if r[0] != "raised" for p, _ in r[2]} >= {
            "operation", "penalty_types", "fine_wan", "decision_date", "id_no", "violation_facts", "severity"}


# ---------------------------------------------------------------- fuzz


def _fullwidth(value: Any) -> Any:
    return value.translate({ord(c): ord(c) + 0xFEE0 for c in "0123456789ABCDEFXx"}) if isinstance(value, str) else "１"


MUTATIONS: list[Callable[[random.Random, Any], Any]] = [
    lambda rng, v: None,
    lambda rng, v: "",
    lambda rng, v: rng.choice(["  ", "\t\u3000\n", "\u00a0"]),
    lambda rng, v: _fullwidth(v),
    lambda rng, v: rng.choice([0, 7, -3, 2**40, 1.0, 12.5, -0.0, float("inf"), float("nan"), True]),
    lambda rng, v: rng.choice([Decimal("1.50"), Decimal("-2"), Decimal("NaN"), Decimal("1E+3")]),
    lambda rng, v: rng.choice([dt.date(2024, 2, 29), dt.datetime(2024, 3, 1, 12, 30), dt.date(2099, 1, 1)]),
    lambda rng, v: "长" * rng.choice([51, 129, 201, 2001, 4001]),
    lambda rng, v: rng.choice(["2024/13/01", "2024-02-30", "20240230", "31/12/2024", "2024/1/5", "２０２４/01/05",
                               "2024/01/05 12:00:00", "9999/12/31", "0000/01/01", "24/1/5", "2024-1-5", "2024..01",
                               "2024/99999999999999999999/1", "2024/01/05/"]),
    lambda rng, v: rng.choice(["99", "X", "0 1", "其他", "其他-说明", "01,99", "03；；04", " 3 ", "正常", "|"]),
    lambda rng, v: rng.choice([PLACEHOLDER_USCC, "无", "/", "--", "NULL", "91320500MA1B3N1N2m", "9132050OMA1B3N1N2M"]),
    lambda rng, v: rng.choice(["11010519491231002x", "110105194912310021", "11010519491231002", "110105209912310023",
                               "990105194912310021"]),
    lambda rng, v: bytes(rng.randrange(256) for _ in range(rng.randint(1, 12))).decode("gbk", errors="replace"),
    lambda rng, v: "苏州市市场监督管理局".encode("gbk").decode("latin-1"),
    lambda rng, v: rng.choice([["03", "01"], ["罚款"], [], {"a": 1}, ("01",), [["x"]]]),
    lambda rng, v: f"{v}|{v}" if isinstance(v, str) else "a|b",
    # control characters inside a value (issue 17, 4), and the allowed TAB/LF/CR of free text
    lambda rng, v: (v if isinstance(v, str) and v else "其他-") + rng.choice(["\x00", "\x1b", "\x07", "\x7f", "\x85",
                                                                              "\t", "\r\n", "\x9f"]) + "x",
]


def mutate(rng: random.Random, row: dict[str, Any], columns: list[str]) -> dict[str, Any]:
    row = dict(row)
    for _ in range(rng.randint(1, 4)):
        column, kind = rng.choice(columns), rng.random()
        if kind < 0.08:
            row.pop(column, None)
        elif kind < 0.12:
            row[f"extra_{rng.randint(0, 9)}"] = rng.choice(["x", None, 1])
        else:
            row[column] = rng.choice(MUTATIONS)(rng, row.get(column))
    return row


class TestFuzz:
    @pytest.mark.parametrize("name", INBOUND)
    def test_mutated_rows_map_the_same(self, name: str, sample: Any) -> None:
        """Thousands of rows with values of every wrong shape: identical outcomes, exceptions included."""
        rng = random.Random(f"fastmap:{name}")
        base = rows_for(name, sample[1])
        columns = sorted(source_columns(MAPPINGS / name))
        rows = [mutate(rng, rng.choice(base), columns) for _ in range(FUZZ_ROWS)]
        results = assert_same(inbound(MAPPINGS / name), rows)
        problems = {p for r in results if r[0] != "raised" for p, _ in r[2]}
        assert len(problems) > 10  # the mutations reach many fields' checks

    def test_mutated_rows_of_the_feature_mapping_map_the_same(self, tmp_path: Path) -> None:
        (tmp_path / "rich.toml").write_text(RICH, encoding="utf-8")
        rng = random.Random("fastmap:rich")
        rows = [mutate(rng, row, list(RICH_COLUMNS)) for row in rich_rows(FUZZ_ROWS, seed=5)]
        assert_same(inbound(tmp_path / "rich.toml"), rows)

    def test_a_twenty_digit_month_is_a_problem_of_the_field(self) -> None:
        """Not an OverflowError out of the whole page: the date field names it."""
        row = {"jdrq": "2024/99999999999999999999/1"}
        for mapping in (inbound(MAPPINGS / "department-penalty.toml"),
                        inbound(MAPPINGS / "department-penalty.toml").reference()):
            problems = {p.path: p.message for p in mapping.map_row(row, TODAY).problems}
            assert "does not match date format" in problems["decision_date"]


# ---------------------------------------------------------------- the pipeline: map_rows and the worker


class TestPipeline:
    def test_map_rows_gives_the_reference_entries_and_rejects(self, sample: Any) -> None:
        """Ledger entries (canonical JSON, digest) and rejects are byte for byte the reference's."""
        mapping = inbound(MAPPINGS / "department-penalty.toml")
        rows = [(str(r["id"]), {k: v for k, v in r.items() if k != "id"}, ()) for r in sample[1]["xzcf"]]
        rows[0] = (rows[0][0], rows[0][1], (Problem("read", "undecodable"),))  # a read problem wins
        fast = cpu.map_rows(mapping, "src", rows, TODAY)
        assert fast == cpu.map_rows(mapping.reference(), "src", rows, TODAY)
        assert len(fast[0]) > 500 and fast[1][0].problems[0].path == "read"

    def test_the_worker_compiles_the_fast_path_once_per_version(self, sample: Any) -> None:
        """What a worker process runs: the mapping compiled by path, with its generated function, cached."""
        path = str(MAPPINGS / "department-penalty.toml")
        mapping = inbound(path)
        rows = [(str(r["id"]), {k: v for k, v in r.items() if k != "id"}, ()) for r in sample[1]["xzcf"][:300]]
        cpu._COMPILED.clear()
        first = cpu._map_in_worker(path, mapping.version, "src", rows, TODAY, None)
        version, cached = cpu._COMPILED[path]
        assert version == mapping.version and isinstance(cached, InboundMapping) and cached.fast is not None
        assert cpu._map_in_worker(path, mapping.version, "src", rows, TODAY, None) == first
        assert cpu._COMPILED[path] == (mapping.version, cached)
        assert first == cpu.map_rows(mapping.reference(), "src", rows, TODAY)
        assert pickle.loads(pickle.dumps((first, rows))) == (first, rows)  # what crosses the pipe


# ---------------------------------------------------------------- mapping files trying to inject code


EVIL = [
    'x"); __import__("pathlib").Path(SENTINEL).touch(); ("',
    "x'); __import__('pathlib').Path(SENTINEL).touch(); ('",
    'a\n__import__("pathlib").Path(SENTINEL).touch()\n',
    "\\\n__import__('pathlib').Path(SENTINEL).touch() #",
    '"""\n__import__("pathlib").Path(SENTINEL).touch()\n"""',
    "{__import__('pathlib').Path(SENTINEL).touch()}",
]


def evil_mapping(sentinel: Path) -> tuple[str, list[str]]:
    """A penalty mapping whose every column name, code, code value and default is an injection attempt (the
    operation's default must be an operation: anything else is refused at load, TestOptionTypes)."""
    evil = [e.replace("SENTINEL", repr(str(sentinel))) for e in EVIL]
    q = [e.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") for e in evil]  # TOML basic strings
    text = f"""
[mapping]
kind = "inbound"
dataset = "penalty"
[operation]
from = "{q[0]}"
codes = "ops"
default = "withdraw"
[codes.ops]
"{q[3]}" = "revoke"
"{q[1]}" = "{q[4]}"
[codes.category]
"{q[5]}" = "法人及非法人组织"
"{q[1]}" = "{q[0]}"
[fields.decision_no]
from = "{q[1]}"
[fields.subject_name]
from = "{q[2]}"
[fields.subject_category]
from = "{q[3]}"
codes = "category"
[fields.uscc]
from = "{q[4]}"
transform = ["strip", "upper"]
[fields.violation_type]
from = "{q[5]}"
required_if = {{ subject_category = ["{q[0]}"] }}
[fields.violation_facts]
value = "{q[0]}"
[fields.legal_basis]
from = "missing{q[0]}"
default = "{q[2]}"
[fields.penalty_types]
value = "罚款"
[fields.content]
from = "{q[1]}"
[fields.decision_date]
from = "date"
date_format = ["{q[3]}", "%Y-%m-%d"]
[fields.valid_until]
from = "date"
[fields.legal_rep]
from = "{q[2]}"
[fields.authority]
from = "{q[2]}"
[fields.authority_code]
value = "{ORGAN}"
[fields.data_source]
from = "{q[2]}"
[fields.data_source_code]
value = "{ORGAN}"
"""
    return text, evil


class TestInjection:
    def test_code_in_names_codes_and_defaults_runs_nothing_and_maps_as_data(self, tmp_path: Path) -> None:
        sentinel = tmp_path / "PWNED"
        text, evil = evil_mapping(sentinel)
        (tmp_path / "evil.toml").write_text(text, encoding="utf-8")
        mapping = inbound(tmp_path / "evil.toml")
        row = {evil[0]: evil[3], evil[1]: " 罚〔2025〕1号 ", evil[2]: "某公司", evil[3]: evil[5],
               evil[4]: f" {COMPANY.lower()} ", evil[5]: "类型", "date": "2025-01-02"}
        mapped = mapping.map_row(row, TODAY)
        assert not sentinel.exists()
        assert outcome(mapping, row) == outcome(mapping.reference(), row)
        assert mapped.record is not None, mapped.problems
        fields = mapped.record.fields
        assert mapped.record.operation.value == "revoke"  # evil[3] is the ops code of "revoke"
        assert fields["decision_no"] == fields["content"] == "罚〔2025〕1号"
        assert fields["subject_name"] == fields["authority"] == "某公司"
        assert fields["subject_category"] == "法人及非法人组织"  # evil[5] is that category's code
        assert fields["uscc"] == COMPANY
        assert fields["violation_facts"] == evil[0]  # a constant
        assert fields["legal_basis"] == evil[2]  # the default (not stripped: defaults skip the steps)
        assert fields["decision_date"] == dt.date(2025, 1, 2)
        assert mapped.key == f"罚〔2025〕1号|{ORGAN}"
        source = fastmap.generated_source(mapping).split("# ---- names in the namespace")[0]
        assert "__import__" not in source and "pathlib" not in source and "PWNED" not in source
        assert not sentinel.exists()

    def test_evil_values_in_the_rows_stay_values(self, tmp_path: Path) -> None:
        """Every column of a row set to an injection attempt: both paths agree and nothing runs."""
        sentinel = tmp_path / "PWNED"
        text, evil = evil_mapping(sentinel)
        (tmp_path / "evil.toml").write_text(text, encoding="utf-8")
        mapping = inbound(tmp_path / "evil.toml")
        rng = random.Random(9)
        rows = [{c: rng.choice([*evil, None]) for c in [*evil, "date"]} for _ in range(200)]
        assert_same(mapping, rows)
        assert not sentinel.exists()

    def test_an_evil_field_name_is_a_config_error_naming_it(self, tmp_path: Path) -> None:
        """Field names must be the dataset's: anything else stops the load before any code is made."""
        sentinel = tmp_path / "PWNED"
        text, evil = evil_mapping(sentinel)
        text += f'[fields."{evil[1].replace(chr(34), chr(92) + chr(34))}"]\nfrom = "x"\n'
        (tmp_path / "evil.toml").write_text(text, encoding="utf-8")
        with pytest.raises(ConfigError) as caught:
            load_mapping(tmp_path / "evil.toml")
        assert any("not a field of dataset penalty" in p.message for p in caught.value.problems)
        assert not sentinel.exists()


# ---------------------------------------------------------------- the generated source


class TestGeneratedSource:
    @pytest.mark.parametrize("name", INBOUND)
    def test_the_source_is_the_same_every_time_and_names_no_column(self, name: str) -> None:
        first, second = inbound(MAPPINGS / name), inbound(MAPPINGS / name)
        text = fastmap.generated_source(first)
        assert text == fastmap.generated_source(second)
        source = text.split("# ---- names in the namespace")[0]
        compile(source, name, "exec")
        for column in source_columns(MAPPINGS / name):
            assert f"'{column}'" not in source and f'"{column}"' not in source
            assert f"= {column!r}" in text  # the legend says what col0… stand for

    def test_python_m_gateway_fastmap_prints_it(self, capsys: pytest.CaptureFixture[str]) -> None:
        assert show.main([str(MAPPINGS / "department-penalty.toml")]) == 0
        out = capsys.readouterr().out
        assert out.startswith("def map_row(row, today, secret):") and "# col0 = " in out
        assert show.main([str(MAPPINGS / "platform-2019-penalty.toml")]) == 2
