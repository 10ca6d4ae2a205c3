"""Tests for gateway.testing.department_db and rows: the sample database, its broken rows and later changes."""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import sqlite3
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.domain.identifiers import check_resident_id, check_uscc, id_check_char, uscc_check_char
from gateway.testing.department_db import (
    INVALID_KINDS,
    SampleResult,
    SampleSpec,
    apply_changes,
    create_department_db,
    insert_rows,
    main,
    same_gxsj_rows,
)
from gateway.testing.rows import COLUMNS, PLACEHOLDER_USCC, PLATFORM_NAME_LIMIT, format_gxsj

TODAY = dt.date(2026, 3, 1)
NOW = dt.datetime(2026, 3, 1, 9, 30, 15, 123456, tzinfo=dt.UTC)
TABLES = ("xzcf", "xzxk")
TEXT = {"xzcf": "wfss", "xzxk": "xknr"}
KNOWN_CFLB = {f"{i:02d}" for i in range(1, 14)} | {"99"}
GXSJ = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{6}$")
SLASH_DATE = re.compile(r"^\d{4}/\d{2}/\d{2}$")


# ---------------------------------------------------------------- helpers


@contextlib.contextmanager
def opened(path: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    try:
        yield conn
    finally:
        conn.close()


def rows(path: Path, table: str, where: str = "1 = 1", args: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    with opened(path) as conn:
        return [dict(r) for r in conn.execute(f"SELECT * FROM {table} WHERE {where} ORDER BY id", args)]


def row(path: Path, table: str, row_id: int) -> dict[str, Any]:
    return rows(path, table, "id = ?", (row_id,))[0]


def day(value: str) -> dt.date:
    return dt.datetime.strptime(value, "%Y/%m/%d").date()


def problems(r: dict[str, Any], table: str, today: dt.date) -> set[str]:
    """Which invalid kinds a row shows, judged independently of the generator."""
    found: set[str] = set()
    code = r["tyshxydm"]
    if r["xdr_lb"] not in ("1", "2", "3") or (table == "xzcf" and not set(r["cflb"].split(",")) <= KNOWN_CFLB):
        found.add("unknown_code")
    if code == PLACEHOLDER_USCC:
        found.add("placeholder_uscc")
    elif code and code[17] != uscc_check_char(code[:17]):
        found.add("bad_uscc")
    if r["xdr_lb"] in ("1", "3") and not code:
        found.add("uscc missing")
    for number in (r["zjhm"], r["fddbr_zjhm"]):
        if number and check_resident_id(number, today=today) is not None:
            found.add("bad_id")
    if not r["xdr_mc"] or not r[TEXT[table]]:
        found.add("missing_required")
    if day(r["jdrq"]) > today:
        found.add("future_date")
    if len(r["xdr_mc"]) > PLATFORM_NAME_LIMIT:
        found.add("platform_reject")
    return found


def expected(result: SampleResult, table: str, row_id: int) -> set[str]:
    kind = result.invalid[table].get(row_id)
    return {kind} if kind else set()


@pytest.fixture
def db(tmp_path: Path) -> SampleResult:
    """A small database with many broken rows (10 %), decided around TODAY."""
    spec = SampleSpec(licences=700, penalties=700, invalid_fraction=0.1, seed=7, today=TODAY)
    return create_department_db(tmp_path / "dept.db", spec)


def valid_rows(result: SampleResult, table: str) -> list[dict[str, Any]]:
    ids = result.valid_ids(table) - set(result.invalid[table])
    return [r for r in rows(result.path, table) if r["id"] in ids]


# ---------------------------------------------------------------- create_department_db


class TestCreateDepartmentDb:
    def test_counts(self, tmp_path: Path) -> None:
        """Each table has exactly the requested number of rows, ids 1..n."""
        result = create_department_db(tmp_path / "d.db", SampleSpec(licences=120, penalties=340, today=TODAY))
        with opened(result.path) as conn:
            assert tuple(conn.execute("SELECT count(*), min(id), max(id) FROM xzxk").fetchone()) == (120, 1, 120)
            assert tuple(conn.execute("SELECT count(*), min(id), max(id) FROM xzcf").fetchone()) == (340, 1, 340)
        assert (result.licences, result.penalties) == (120, 340)

    def test_replaces_existing_file(self, tmp_path: Path) -> None:
        """Creating again at the same path replaces the old database."""
        path = tmp_path / "d.db"
        create_department_db(path, SampleSpec(licences=50, penalties=50, today=TODAY))
        create_department_db(path, SampleSpec(licences=5, penalties=6, today=TODAY))
        assert len(rows(path, "xzxk")) == 5 and len(rows(path, "xzcf")) == 6

    def test_deterministic_for_seed(self, tmp_path: Path) -> None:
        """The same seed and day give identical rows and invalid sets; another seed does not."""
        spec = SampleSpec(licences=300, penalties=300, seed=11, today=TODAY)
        a = create_department_db(tmp_path / "a.db", spec)
        b = create_department_db(tmp_path / "b.db", spec)
        c = create_department_db(tmp_path / "c.db", SampleSpec(licences=300, penalties=300, seed=12, today=TODAY))
        for table in TABLES:
            assert rows(a.path, table) == rows(b.path, table)
            assert rows(a.path, table) != rows(c.path, table)
        assert a.invalid == b.invalid

    def test_schema_uses_local_columns(self, db: SampleResult) -> None:
        """Columns are exactly the department's local names, amounts REAL, the rest TEXT."""
        with opened(db.path) as conn:
            for table in TABLES:
                info = {r["name"]: r["type"] for r in conn.execute(f"PRAGMA table_info({table})")}
                assert list(info) == ["id", *COLUMNS[table], "gxsj"]
                assert {c for c, t in info.items() if t == "REAL"} == ({"fkje", "mswfsd"} if table == "xzcf" else set())

    def test_gxsj_index(self, db: SampleResult) -> None:
        """Each table has an index on (gxsj, id) and a watermark query uses it."""
        with opened(db.path) as conn:
            for table in TABLES:
                (index,) = [r["name"] for r in conn.execute(f"PRAGMA index_list({table})")]
                assert [r["name"] for r in conn.execute(f"PRAGMA index_info({index})")] == ["gxsj", "id"]
                plan = " ".join(str(r[3]) for r in conn.execute(
                    f"EXPLAIN QUERY PLAN SELECT * FROM {table} WHERE gxsj > ? ORDER BY gxsj, id", ("2025",)))
                assert index in plan

    def test_wal_mode(self, db: SampleResult) -> None:
        """The finished database is in WAL mode, so the gateway can read while the department writes."""
        with opened(db.path) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"

    def test_gxsj_format_and_past(self, db: SampleResult) -> None:
        """Every gxsj is UTC with microseconds, before TODAY and not before the decision date."""
        for table in TABLES:
            for r in rows(db.path, table):
                assert GXSJ.match(r["gxsj"]), r["gxsj"]
                assert r["gxsj"] < TODAY.isoformat()
        for r in valid_rows(db, "xzcf") + valid_rows(db, "xzxk"):
            assert r["gxsj"][:10] >= day(r["jdrq"]).isoformat()

    def test_organisation_usccs_valid(self, db: SampleResult) -> None:
        """Organisations (91…) and 个体工商户 (92…) in valid rows carry correct check characters."""
        for table in TABLES:
            for r in valid_rows(db, table):
                code = r["tyshxydm"]
                if r["xdr_lb"] == "2":
                    assert code == "" and r["fddbr"] == ""
                    continue
                assert code[:2] == ("91" if r["xdr_lb"] == "1" else "92")
                assert code[17] == uscc_check_char(code[:17]) and check_uscc(code, strict_org_code=True) is None
                assert r["fddbr"] and r["fddbr_zjlx"] == "01"

    def test_deciding_bodies(self, db: SampleResult) -> None:
        """Four deciding bodies, each with a valid government-organ USCC (11…320500…)."""
        with opened(db.path) as conn:
            bodies = set(conn.execute("SELECT cfjg, cfjgdm FROM xzcf UNION SELECT xkjg, xkjgdm FROM xzxk"))
        assert len(bodies) == 4
        for _, code in bodies:
            assert code.startswith("11320500") and check_uscc(code) is None

    def test_person_ids_valid(self, db: SampleResult) -> None:
        """Natural persons carry '01' + a valid resident ID; legal representatives' IDs are valid too."""
        for table in TABLES:
            for r in valid_rows(db, table):
                number = r["zjhm"] if r["xdr_lb"] == "2" else r["fddbr_zjhm"]
                if r["xdr_lb"] == "2":
                    assert r["zjlx"] == "01"
                assert number[17] == id_check_char(number[:17])
                assert check_resident_id(number, today=TODAY) is None
                assert number[:6] in {"320505", "320506", "320507", "320508", "320509", "320571"}
                assert 1950 <= int(number[6:10]) <= 2004

    def test_natural_person_fraction(self, tmp_path: Path) -> None:
        """About natural_person_fraction of the rows are 自然人."""
        spec = SampleSpec(licences=0, penalties=4000, invalid_fraction=0, natural_person_fraction=0.3, today=TODAY)
        result = create_department_db(tmp_path / "d.db", spec)
        share = sum(r["xdr_lb"] == "2" for r in rows(result.path, "xzcf")) / 4000
        assert 0.26 < share < 0.34

    def test_decision_numbers_unique(self, db: SampleResult) -> None:
        """Decision numbers are unique per table and look like 苏市监罚〔2025〕12号."""
        for table, col in (("xzcf", "cfjdswh"), ("xzxk", "xkjdswh")):
            numbers = [r[col] for r in rows(db.path, table)]
            assert len(set(numbers)) == len(numbers)
            assert all(re.match(r"^苏\w+〔20\d\d〕\d+号$", n) for n in numbers)

    def test_decision_dates_within_three_years(self, db: SampleResult) -> None:
        """Valid rows were decided before TODAY and within the last ~3 years; dates use slashes."""
        for table in TABLES:
            dates = [day(r["jdrq"]) for r in valid_rows(db, table)]
            assert max(dates) < TODAY and min(dates) >= TODAY - dt.timedelta(days=3 * 366)
            assert (max(dates) - min(dates)).days > 2 * 365

    def test_dates_consistent(self, db: SampleResult) -> None:
        """处罚有效期/公示截止期 and 有效期至 are not before the decision; 长期 licences use 2099/12/31."""
        for r in rows(db.path, "xzcf"):
            assert SLASH_DATE.match(r["cfyxq"]) and day(r["cfyxq"]) >= day(r["jdrq"])
            assert r["gsjzq"] == "" or day(r["gsjzq"]) >= day(r["jdrq"])
        licences = rows(db.path, "xzxk")
        for r in licences:
            assert r["yxqz"] == r["jdrq"] and day(r["yxqzi"]) > day(r["yxqz"])
        assert any(r["yxqzi"] == "2099/12/31" for r in licences)

    def test_penalty_amounts_match_content(self, db: SampleResult) -> None:
        """fkje is set exactly when 罚款 (03) is a category, within 200-500000 元, and cfnr states it."""
        for r in valid_rows(db, "xzcf"):
            codes = r["cflb"].split(",")
            assert 1 <= len(codes) <= 3 and set(codes) <= KNOWN_CFLB
            if "03" in codes:
                assert 200 <= r["fkje"] <= 500_000
                assert f"罚款人民币{r['fkje']:.0f}元" in r["cfnr"]
            else:
                assert r["fkje"] is None
            assert (r["mswfsd"] is not None) == ("04" in codes)
            assert bool(r["zkdxzz"]) == bool({"06", "08"} & set(codes))

    def test_mostly_round_fines(self, db: SampleResult) -> None:
        """Many fines are round numbers (multiples of 1000)."""
        fines = [r["fkje"] for r in valid_rows(db, "xzcf") if r["fkje"] is not None]
        assert sum(f % 1000 == 0 for f in fines) / len(fines) > 0.5

    def test_texts_realistic(self, db: SampleResult) -> None:
        """违法事实 is 30-200 characters, legal bases cite a law, names look like Suzhou subjects."""
        for r in valid_rows(db, "xzcf"):
            assert 30 <= len(r["wfss"]) <= 200, r["wfss"]
            assert r["cfyj"].startswith("《") and "》第" in r["cfyj"]
            assert r["ly"] in {"特种设备", "安全生产", "消防", "食品", "药品", "价格", "广告", "其他"}
            assert r["sxyzcd"] in {"1", "2", "3"} and r["zt"] in {"0", "1", "2", "3"}
        for r in valid_rows(db, "xzxk"):
            if r["xdr_lb"] == "1":
                assert r["xdr_mc"].endswith("公司") and r["xdr_mc"][:2] in ("苏州", "江苏")
            assert r["xklb"] in {"1", "2", "3", "4", "5", "9"} and r["xknr"]

    def test_rejects_bad_spec(self) -> None:
        """Fractions outside 0..1 and negative counts are refused."""
        with pytest.raises(ValueError, match="between 0 and 1"):
            SampleSpec(invalid_fraction=1.5)
        with pytest.raises(ValueError, match="negative"):
            SampleSpec(penalties=-1)


# ---------------------------------------------------------------- invalid rows


class TestInvalidRows:
    def test_default_fraction_evenly_spread(self, tmp_path: Path) -> None:
        """The default 2 % of each table is broken, the kinds differing in count by at most one."""
        result = create_department_db(tmp_path / "d.db", SampleSpec(licences=1500, penalties=1400, today=TODAY))
        for table, count in (("xzxk", 1500), ("xzcf", 1400)):
            kinds = Counter(result.invalid[table].values())
            assert sum(kinds.values()) == round(count * 0.02)
            assert set(kinds) == set(INVALID_KINDS)
            assert max(kinds.values()) - min(kinds.values()) <= 1

    def test_each_row_broken_exactly_as_recorded(self, db: SampleResult) -> None:
        """Every invalid row shows exactly its recorded kind and every other row shows none."""
        for table in TABLES:
            for r in rows(db.path, table):
                assert problems(r, table, TODAY) == expected(db, table, r["id"]), r

    def test_kinds_broken_as_named(self, db: SampleResult) -> None:
        """Spot checks per kind: wrong check char, placeholder, future date, '77'/'8', > 200 chars."""
        for table in TABLES:
            for row_id, kind in db.invalid[table].items():
                r = row(db.path, table, row_id)
                if kind == "bad_uscc":
                    assert "check character" in (check_uscc(r["tyshxydm"]) or "")
                elif kind == "placeholder_uscc":
                    assert r["tyshxydm"] == "00000000000000000X"
                elif kind == "future_date":
                    assert day(r["jdrq"]) > TODAY
                elif kind == "unknown_code":
                    assert r["xdr_lb"] == "8" or "77" in r.get("cflb", "").split(",")
                elif kind == "bad_id":
                    assert r["xdr_lb"] == "2" and r["zjhm"][17] != id_check_char(r["zjhm"][:17])
                elif kind == "platform_reject":
                    assert len(r["xdr_mc"]) > 200 and r["xdr_mc"].endswith("）")

    def test_both_unknown_code_variants(self, db: SampleResult) -> None:
        """Unknown codes appear both as cflb '77' and as xdr_lb '8' among penalties."""
        broken = [row(db.path, "xzcf", i) for i, k in db.invalid["xzcf"].items() if k == "unknown_code"]
        assert any("77" in r["cflb"].split(",") for r in broken)
        assert any(r["xdr_lb"] == "8" for r in broken)

    def test_valid_ids(self, db: SampleResult) -> None:
        """valid_ids is every id except the invalid ones, platform_reject rows included."""
        for table, count in (("xzcf", db.penalties), ("xzxk", db.licences)):
            rejected = {i for i, k in db.invalid[table].items() if k != "platform_reject"}
            platform = set(db.invalid[table]) - rejected
            assert db.valid_ids(table) == set(range(1, count + 1)) - rejected
            assert platform and platform <= db.valid_ids(table)
        with pytest.raises(ValueError, match="unknown table"):
            db.valid_ids("nope")

    def test_zero_fraction(self, tmp_path: Path) -> None:
        """invalid_fraction=0 gives no broken rows."""
        spec = SampleSpec(licences=200, penalties=200, invalid_fraction=0, today=TODAY)
        result = create_department_db(tmp_path / "d.db", spec)
        assert result.invalid == {"xzxk": {}, "xzcf": {}}
        assert all(not problems(r, t, TODAY) for t in TABLES for r in rows(result.path, t))


class TestAgainstGatewayMapping:
    def test_department_mappings_agree(self, db: SampleResult) -> None:
        """The gateway's own department mappings accept the valid rows and reject the broken ones."""
        from gateway.mapping import load_mapping

        for table, name in (("xzcf", "department-penalty.toml"), ("xzxk", "department-license.toml")):
            mapping: Any = load_mapping(Path(__file__).parents[2] / "mappings" / name)
            for r in rows(db.path, table):
                kind = db.invalid[table].get(r["id"])
                if kind != "platform_reject":  # the gateway's own length limit decides these
                    accepted = mapping.map_row(r, TODAY).record is not None
                    assert accepted == (kind is None), (kind, mapping.map_row(r, TODAY).problems)


# ---------------------------------------------------------------- apply_changes


class TestApplyChanges:
    def test_touch_bumps_gxsj_only(self, db: SampleResult) -> None:
        """touch changes gxsj to now and nothing else."""
        before = row(db.path, "xzcf", 5)
        apply_changes(db.path, table="xzcf", ids=[5], change="touch", now=NOW)
        after = row(db.path, "xzcf", 5)
        assert after["gxsj"] == "2026-03-01 09:30:15.123456"
        assert {k: v for k, v in after.items() if k != "gxsj"} == {k: v for k, v in before.items() if k != "gxsj"}

    def test_edit_changes_content(self, db: SampleResult) -> None:
        """edit rewrites cfnr/xknr (once, not piling up notes) and bumps gxsj."""
        for table, col in (("xzcf", "cfnr"), ("xzxk", "xknr")):
            valid_id = min(db.valid_ids(table) - set(db.invalid[table]))
            original = row(db.path, table, valid_id)[col]
            apply_changes(db.path, table=table, ids=[valid_id], change="edit", now=NOW)
            apply_changes(db.path, table=table, ids=[valid_id], change="edit", now=NOW + dt.timedelta(seconds=1))
            edited = row(db.path, table, valid_id)
            assert edited[col] == original + "（更正于2026-03-01 09:30:16.123456）"
            assert edited["gxsj"] == "2026-03-01 09:30:16.123456"

    @pytest.mark.parametrize(("change", "status"), [("revoke", "1"), ("object", "2"), ("repair", "3")])
    def test_status_changes(self, db: SampleResult, change: str, status: str) -> None:
        """revoke / object / repair set zt to 1 / 2 / 3 and bump gxsj on every given id."""
        apply_changes(db.path, table="xzxk", ids=iter([3, 4, 9]), change=change, now=NOW)
        changed = rows(db.path, "xzxk", "gxsj = ?", (format_gxsj(NOW),))
        assert [r["id"] for r in changed] == [3, 4, 9] and {r["zt"] for r in changed} == {status}

    def test_default_now_is_utc_now(self, db: SampleResult) -> None:
        """Without now, gxsj is the current UTC time with microseconds."""
        start = dt.datetime.now(dt.UTC)
        apply_changes(db.path, table="xzcf", ids=[1], change="touch")
        stamp = row(db.path, "xzcf", 1)["gxsj"]
        assert GXSJ.match(stamp) and format_gxsj(start) <= stamp <= format_gxsj(dt.datetime.now(dt.UTC))

    def test_aware_non_utc_now_stored_as_utc(self, db: SampleResult) -> None:
        """A Beijing-time now is stored as the same instant in UTC."""
        beijing = dt.datetime(2026, 3, 1, 17, 30, 15, 123456, tzinfo=dt.timezone(dt.timedelta(hours=8)))
        apply_changes(db.path, table="xzcf", ids=[2], change="touch", now=beijing)
        assert row(db.path, "xzcf", 2)["gxsj"] == "2026-03-01 09:30:15.123456"

    def test_fix_makes_invalid_rows_valid(self, db: SampleResult) -> None:
        """fix repairs every kind of broken row so that no problem remains."""
        for table in TABLES:
            ids = sorted(db.invalid[table])
            apply_changes(db.path, table=table, ids=ids, change="fix", now=NOW)
            for r in rows(db.path, table, f"id IN ({','.join('?' * len(ids))})", tuple(ids)):
                assert problems(r, table, TODAY) == set(), (db.invalid[table][r["id"]], r)
                assert r["gxsj"] == format_gxsj(NOW)

    def test_fix_keeps_valid_rows(self, db: SampleResult) -> None:
        """fix on a valid row changes nothing but gxsj."""
        valid_id = min(db.valid_ids("xzcf") - set(db.invalid["xzcf"]))
        before = row(db.path, "xzcf", valid_id)
        apply_changes(db.path, table="xzcf", ids=[valid_id], change="fix", now=NOW)
        assert row(db.path, "xzcf", valid_id) == before | {"gxsj": format_gxsj(NOW)}

    def test_fix_moves_future_dates_together(self, db: SampleResult) -> None:
        """A future decision date moves to the day before now, the row's other dates by the same shift."""
        row_id = next(i for i, k in db.invalid["xzcf"].items() if k == "future_date")
        before = row(db.path, "xzcf", row_id)
        apply_changes(db.path, table="xzcf", ids=[row_id], change="fix", now=NOW)
        after = row(db.path, "xzcf", row_id)
        assert day(after["jdrq"]) == TODAY - dt.timedelta(days=1)
        assert day(after["cfyxq"]) - day(after["jdrq"]) == day(before["cfyxq"]) - day(before["jdrq"])

    def test_rejects_unknown_change_and_table(self, db: SampleResult) -> None:
        """Unknown changes and tables raise ValueError and change nothing."""
        before = rows(db.path, "xzcf")
        with pytest.raises(ValueError, match="unknown change"):
            apply_changes(db.path, table="xzcf", ids=[1], change="delete")
        with pytest.raises(ValueError, match="unknown table"):
            apply_changes(db.path, table="users", ids=[1], change="touch")
        assert rows(db.path, "xzcf") == before


# ---------------------------------------------------------------- insert_rows / same_gxsj_rows


class TestInsertRows:
    def test_appends_after_max_id(self, db: SampleResult) -> None:
        """New rows get the ids after the current maximum, which are returned."""
        ids = insert_rows(db.path, table="xzcf", count=25, seed=1, gxsj=NOW)
        assert ids == list(range(db.penalties + 1, db.penalties + 26))
        assert [r["id"] for r in rows(db.path, "xzcf", "id > ?", (db.penalties,))] == ids

    def test_appended_rows_valid(self, db: SampleResult) -> None:
        """Appended rows are valid, recently decided, and keep decision numbers unique."""
        for table, col in (("xzcf", "cfjdswh"), ("xzxk", "xkjdswh")):
            ids = insert_rows(db.path, table=table, count=300, seed=3, today=TODAY, gxsj=NOW)
            new = rows(db.path, table, "id >= ?", (ids[0],))
            for r in new:
                assert problems(r, table, TODAY) == set(), r
                assert TODAY - dt.timedelta(days=8) <= day(r["jdrq"]) < TODAY
            numbers = [r[col] for r in rows(db.path, table)]
            assert len(set(numbers)) == len(numbers)

    def test_gxsj_default_now(self, db: SampleResult) -> None:
        """Without gxsj, the appended rows carry the current UTC time."""
        start = format_gxsj(dt.datetime.now(dt.UTC))
        ids = insert_rows(db.path, table="xzxk", count=3, seed=1)
        stamps = {row(db.path, "xzxk", i)["gxsj"] for i in ids}
        assert len(stamps) == 1 and start <= stamps.pop() <= format_gxsj(dt.datetime.now(dt.UTC))

    def test_deterministic_for_seed(self, tmp_path: Path) -> None:
        """The same seed appends the same rows to equal databases."""
        spec = SampleSpec(licences=10, penalties=10, today=TODAY)
        paths = [create_department_db(tmp_path / f"{n}.db", spec).path for n in "ab"]
        for path in paths:
            insert_rows(path, table="xzcf", count=20, seed=5, today=TODAY, gxsj=NOW)
        assert rows(paths[0], "xzcf") == rows(paths[1], "xzcf")


class TestSameGxsjRows:
    def test_rows_share_one_timestamp(self, db: SampleResult) -> None:
        """All inserted rows carry exactly the given gxsj, and only they do."""
        ids = same_gxsj_rows(db.path, table="xzcf", count=40, gxsj=NOW)
        assert len(ids) == 40
        assert [r["id"] for r in rows(db.path, "xzcf", "gxsj = ?", ("2026-03-01 09:30:15.123456",))] == ids

    def test_rows_valid(self, db: SampleResult) -> None:
        """The rows are valid and their decision numbers do not collide with existing ones."""
        ids = same_gxsj_rows(db.path, table="xzxk", count=50, gxsj=NOW)
        for r in rows(db.path, "xzxk", "id >= ?", (ids[0],)):
            assert problems(r, "xzxk", TODAY) == set()
        numbers = [r["xkjdswh"] for r in rows(db.path, "xzxk")]
        assert len(set(numbers)) == len(numbers)


# ---------------------------------------------------------------- CLI


class TestCli:
    def test_prints_one_line_summary(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """The CLI creates the database and prints one summary line."""
        path = tmp_path / "cli.db"
        assert main([str(path), "--licences", "30", "--penalties", "40", "--invalid-fraction", "0.1"]) == 0
        out = capsys.readouterr().out
        assert out.count("\n") == 1 and "30 licences" in out and "40 penalties" in out and "7 invalid" in out
        assert len(rows(path, "xzcf")) == 40
