"""Publicity periods: the rule table, the repair check, 公示截止期, and the automatic withdrawal on the end date.

The rule tests are pure; the withdrawal tests run the gateway against three sandbox platforms (two public,
one internal) with a real department database and the store on SQLite and PostgreSQL, time injected.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import sqlite3
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.clock import china_today
from gateway.config import load_config
from gateway.domain.publicity import (
    DEFAULT_RULES,
    Duration,
    PublicitySettings,
    Rule,
    early_repair,
    parse_duration,
    parse_publicity,
    period_of,
    stamped,
)
from gateway.errors import ConfigError
from gateway.jobs import run_publicity
from gateway.store import Store, open_store
from gateway.testing.department_db import apply_changes
from tests.support.helpers import ledger, make_department_db, outbox, penalty_mapping, to_record
from tests.support.rules_helpers import (
    TABLE,
    deliver,
    key_of,
    pick_row,
    platforms,
    run_cli,
    set_decision,
    write_rules_config,
)

D = dt.date(2026, 3, 2)


def record(**fields: Any) -> dict[str, Any]:
    base = {"decision_date": D.isoformat(), "penalty_types": ["罚款"], "domain": "价格",
            "legal_basis": "《中华人民共和国价格法》第四十二条", "severity": "一般"}
    return {**base, **fields}


def settings(text: str) -> PublicitySettings:
    import tomllib

    value, problems = parse_publicity(tomllib.loads(text).get("publicity", {}))
    assert problems == []
    return value


class TestDurations:
    @pytest.mark.parametrize(("start", "duration", "end"), [
        (dt.date(2026, 3, 2), Duration(3, "month"), dt.date(2026, 6, 2)),
        (dt.date(2026, 1, 31), Duration(1, "month"), dt.date(2026, 2, 28)),
        (dt.date(2024, 2, 29), Duration(1, "year"), dt.date(2025, 2, 28)),
        (dt.date(2026, 11, 30), Duration(3, "month"), dt.date(2027, 2, 28)),
        (dt.date(2026, 3, 2), Duration(3, "year"), dt.date(2029, 3, 2)),
        (dt.date(2026, 12, 31), Duration(90, "day"), dt.date(2027, 3, 31)),
    ])
    def test_end_dates(self, start: dt.date, duration: Duration, end: dt.date) -> None:
        """A period ends on the same day number, or the last day of a shorter month."""
        assert duration.after(start) == end

    @pytest.mark.parametrize(("text", "value"), [("3 months", Duration(3, "month")), ("1 year", Duration(1, "year")),
                                                 ("90 days", Duration(90, "day")), ("3个月", Duration(3, "month")),
                                                 (" 1年 ", Duration(1, "year"))])
    def test_parse(self, text: str, value: Duration) -> None:
        """English and Chinese units are read."""
        assert parse_duration(text, "x") == (value, None)

    @pytest.mark.parametrize("text", ["3 weeks", "0 days", "three months", 3, ""])
    def test_refused(self, text: Any) -> None:
        """Anything else is a problem naming the key."""
        value, problem = parse_duration(text, "publicity.rules[0].min")
        assert value is None and problem is not None and problem.path == "publicity.rules[0].min"


class TestDefaultRules:
    def test_an_ordinary_penalty(self) -> None:
        """58号令: at least 3 months, at most 3 years from the decision date."""
        period = period_of(DEFAULT_RULES, "penalty", record())
        assert (period.min_end, period.max_end) == (dt.date(2026, 6, 2), dt.date(2029, 3, 2))
        assert "58号" in period.min_rule and "3 months" in period.min_rule and "3 years" in period.max_rule

    @pytest.mark.parametrize("domain", ["特种设备", "安全生产", "消防"])
    def test_special_fields_take_a_year(self, domain: str) -> None:
        """特种设备, 安全生产 and 消防 penalties: a minimum of 1 year."""
        period = period_of(DEFAULT_RULES, "penalty", record(domain=domain))
        assert period.min_end == dt.date(2027, 3, 2) and domain in period.min_rule

    def test_the_legal_basis_counts_too(self) -> None:
        """A penalty under the 消防法 is a 消防 penalty even without a domain."""
        period = period_of(DEFAULT_RULES, "penalty", record(domain=None,
                                                            legal_basis="《中华人民共和国消防法》第六十条第一款"))
        assert period.min_end == dt.date(2027, 3, 2) and "处罚依据" in period.min_rule

    def test_licences_have_no_rule(self) -> None:
        """No withdrawal rule for licences was found: none is made up."""
        assert period_of(DEFAULT_RULES, "license", record()).max_end is None

    def test_no_decision_date_no_period(self) -> None:
        assert period_of(DEFAULT_RULES, "penalty", record(decision_date=None)).min_end is None


TYPES = """
[[publicity.rules]]
name = "警告"
field = "penalty_types"
equals = ["警告", "通报批评"]
min = "3 months"
max = "1 year"
[[publicity.rules]]
name = "罚款"
field = "penalty_types"
equals = "罚款"
min = "6 months"
max = "3 years"
[[publicity.rules]]
name = "527号 严重失信"
field = "severity"
equals = "严重"
min = "6 months"
max = "3 years"
"""


class TestConfiguredRules:
    def test_several_penalty_types_take_the_longest(self) -> None:
        """A decision with 警告 and 罚款 gets the longer of both periods, each from its rule."""
        rules = settings(TYPES).rules
        both = period_of(rules, "penalty", record(penalty_types=["警告", "罚款"]))
        assert (both.min_end, both.max_end) == (dt.date(2026, 9, 2), dt.date(2029, 3, 2))
        warning = period_of(rules, "penalty", record(penalty_types=["警告"], severity="一般"))
        assert (warning.min_end, warning.max_end) == (dt.date(2026, 6, 2), dt.date(2027, 3, 2))
        assert warning.max_rule.startswith("警告")

    def test_severity_per_527(self) -> None:
        """Rules can key on severity (一般/严重, 发改办财金〔2019〕527号)."""
        severe = period_of(settings(TYPES).rules, "penalty", record(penalty_types=["警告"], severity="严重"))
        assert (severe.min_end, severe.max_end, severe.min_rule) == (dt.date(2026, 9, 2), dt.date(2029, 3, 2),
                                                                     "527号 严重失信, 6 months")

    def test_contains_matches_inside_text(self) -> None:
        """`contains` matches part of a value: ops write 特种设备 once for every law that mentions it."""
        rules = settings('[[publicity.rules]]\nname = "特种设备"\nfield = "legal_basis"\ncontains = ["特种设备"]\n'
                         'min = "1 year"\nmax = "3 years"\n').rules
        assert period_of(rules, "penalty", record(legal_basis="《中华人民共和国特种设备安全法》第八十四条")).min_end \
            == dt.date(2027, 3, 2)
        assert period_of(rules, "penalty", record()).min_end is None

    def test_maximum_never_below_minimum(self) -> None:
        rules = (Rule("a", min=Duration(1, "year")), Rule("b", max=Duration(6, "month")))
        period = period_of(rules, "penalty", record())
        assert period.max_end == period.min_end == dt.date(2027, 3, 2)

    def test_defaults_when_no_rules_are_given(self) -> None:
        assert settings("[publicity]\ncheck_s = 60\n").rules == DEFAULT_RULES

    def test_problems_name_their_paths(self) -> None:
        """Every mistake in the rules is reported with its TOML path."""
        import tomllib

        raw = tomllib.loads("""
[publicity]
enabled = "yes"
[[publicity.rules]]
field = "domian"
equals = ["消防"]
min = "3 weeks"
[[publicity.rules]]
name = "x"
dataset = "lists"
contains = "a"
max = "1 year"
colour = "red"
""")["publicity"]
        _value, problems = parse_publicity(raw)
        paths = {p.path for p in problems}
        assert {"publicity.enabled", "publicity.rules[0].name", "publicity.rules[0].field", "publicity.rules[0].min",
                "publicity.rules[1].dataset", "publicity.rules[1].field", "publicity.rules[1].colour"} <= paths


class TestRepairCheck:
    def test_refused_before_the_minimum(self) -> None:
        """A repair the day before the minimum period ends is refused, naming the rule and the date."""
        payload = record(domain="消防", withdraw_reason="信用修复")
        problem = early_repair(PublicitySettings(), "penalty", payload, dt.date(2027, 3, 1))
        assert problem is not None and problem.path == "withdraw_reason"
        assert "2027-03-02" in problem.message and "消防" in problem.message and "58号" in problem.message

    def test_allowed_on_the_day(self) -> None:
        payload = record(domain="消防", withdraw_reason="信用修复")
        assert early_repair(PublicitySettings(), "penalty", payload, dt.date(2027, 3, 2)) is None

    def test_other_withdrawals_are_not_repairs(self) -> None:
        assert early_repair(PublicitySettings(), "penalty", record(withdraw_reason="其他"), D) is None


class TestCanonicalForm:
    def test_status_code_3_is_a_repair(self, tmp_path: Path) -> None:
        """zt = 3 maps to withdraw with withdraw_reason 信用修复; zt = 0 leaves the field out."""
        sample = make_department_db(tmp_path, penalties=3)
        row = pick_row(sample.path)
        repaired = to_record({**row, "zt": "3"})
        assert (repaired.operation.value, repaired.fields.get("withdraw_reason")) == ("withdraw", "信用修复")
        assert "withdraw_reason" not in to_record(row).fields

    def test_publicity_end_is_the_maximum(self) -> None:
        """What goes out as 公示截止期 is the maximum end date (the department's own value is replaced)."""
        out = stamped(PublicitySettings(), "penalty", record(publicity_end="2026-04-01"))
        assert out["publicity_end"] == "2029-03-02"
        assert "publicity_end" not in stamped(PublicitySettings(set_publicity_end=False), "penalty", record())

    def test_targets_are_public_by_default_when_external(self, tmp_path: Path) -> None:
        """`public` defaults to `external`; `changes_only` must name one of the target's datasets."""
        sample = make_department_db(tmp_path, penalties=1)
        text = _config_text(tmp_path, sample.path)
        path = tmp_path / "c.toml"
        path.write_text(text, encoding="utf-8")
        config = load_config(path)
        assert config.targets["a"].public and not config.targets["b"].public and config.targets["c"].public
        assert config.routes()["penalty"] == ["a", "b"]  # c gets changes of what it holds, no new records
        path.write_text(text.replace('changes_only = []', 'changes_only = ["license"]', 1), encoding="utf-8")
        with pytest.raises(ConfigError) as caught:
            load_config(path)
        assert "targets.a.changes_only[0]" in str(caught.value)


def _config_text(tmp_path: Path, db: Path) -> str:
    """Targets: a external (sealed with CMS), b internal, c internal but public and changes-only."""
    from tests.support.helpers import MAPPINGS
    from tests.support.pki import make_ca

    ca = make_ca(tmp_path / "pki", "rsa")
    ours, peer = ca.issue("gateway"), ca.issue("platform")
    (tmp_path / "t.token").write_text("x" * 20, encoding="utf-8")
    target = ('[targets.{n}]\ntype = "credit_platform"\nurl = "http://127.0.0.1:1/api/v1/upload"\n'
              'token_file = "t.token"\ndatasets = {{ penalty = "{m}/platform-2019-penalty.toml" }}\n'
              'changes_only = {only}\n{more}\n')
    envelope = (f'external = true\n[targets.a.envelope]\nprofile = "cms"\nkey = "{ours.key_path}"\n'
                f'cert = "{ours.cert_path}"\npeer_cert = "{peer.cert_path}"\ntrusted_cas = ["{ca.root.cert_path}"]')
    return (f'[gateway]\ndepartment_code = "11320500014117422K"\ndepartment_name = "x"\n'
            f'[sources.s]\ntype = "sql"\nurl = "sqlite:///{db}"\ntable = "xzcf"\nkey_columns = ["id"]\n'
            f'update_column = "gxsj"\nmapping = "{MAPPINGS}/department-penalty.toml"\n'
            + target.format(n="a", m=MAPPINGS, only="[]", more=envelope)
            + target.format(n="b", m=MAPPINGS, only="[]", more="external = false")
            + target.format(n="c", m=MAPPINGS, only='["penalty"]', more="external = false\npublic = true"))


# ---------------------------------------------------------------- the automatic withdrawal, end to end

THREE = ("province", "city", "partner")
PUBLIC = ("province", "partner")


def _dated(tmp_path: Path, days_ago: int) -> tuple[Any, dict[str, Any]]:
    """A sample of 10 penalties: the picked one decided ``days_ago``, every other one 30 days ago (so the picked
    record is the only one whose publicity ends within the test)."""
    sample = make_department_db(tmp_path, penalties=10)
    picked = pick_row(sample.path)["id"]
    recent = (china_today() - dt.timedelta(days=30)).strftime("%Y/%m/%d")
    with contextlib.closing(sqlite3.connect(sample.path)) as conn, conn:
        conn.execute("UPDATE xzcf SET jdrq = ?, cfyxq = ?, gsjzq = '' WHERE id != ?", (recent, recent, picked))
    return sample, set_decision(sample.path, picked, china_today() - dt.timedelta(days=days_ago))


async def _published(tmp_path: Path, store_url: str, store: Store) -> tuple[Any, str, Any, Any]:
    """A sample delivered to three platforms; the picked record is still within its publicity period (its
    maximum end about three months ahead: the job is run as of dates up to then) and nothing else ends first."""
    sample, row = _dated(tmp_path, 1000)
    period = period_of(DEFAULT_RULES, "penalty", to_record(row).payload())
    assert period.max_end > china_today()
    return sample, key_of(row), row, period


class TestAutomaticWithdraw:
    async def test_fires_on_the_end_date_only_to_public_targets_once(
            self, tmp_path: Path, store_url: str, store: Store, capsys: pytest.CaptureFixture[str]) -> None:
        """Nothing the day before; on the end date a withdraw (公示期满) to the two public targets, which
        confirm it; the internal one keeps the record; later runs add nothing."""
        sample, key, row, period = await _published(tmp_path, store_url, store)
        async with platforms(tmp_path, THREE) as sandboxes:
            config = write_rules_config(tmp_path, store_url, sample.path, sandboxes, public=PUBLIC)
            await deliver(config, store)
            assert {n: sb.held(TABLE)[key][2]["CF_GSJZQ"] for n, sb in sandboxes.items()} == dict.fromkeys(
                THREE, period.max_end.isoformat())  # the maximum end goes out as 公示截止期

            before = await run_publicity(store, config, period.max_end - dt.timedelta(days=1))
            assert before.withdrawn == 0 and before.dated >= 10
            rows = len(await outbox(store))
            on_the_day = await run_publicity(store, config, period.max_end)
            assert (on_the_day.withdrawn, on_the_day.sent) == (1, dict.fromkeys(PUBLIC, 1))
            await deliver(config, store)
            held = {n: sb.held(TABLE)[key][:2] for n, sb in sandboxes.items()}
            assert held == {"province": (2, "withdraw"), "partner": (2, "withdraw"), "city": (1, "upsert")}

            for day in (period.max_end, period.max_end + dt.timedelta(days=30)):
                assert (await run_publicity(store, config, day)).withdrawn == 0
            apply_changes(sample.path, table="xzcf", ids=[row["id"]], change="touch")  # the row read again
            await deliver(config, store)
            assert len(await outbox(store)) == rows + 2 and (await ledger(store))[key]["version"] == 2

        [change] = [c for c in await store.history.list_changes(list(config.targets)) if c.record_key == key]
        assert (change.origin, change.reason, change.confirmed, len(change.deliveries)) == (
            "publicity", "公示期满", 2, 2)
        code, text = await run_cli(capsys, config, "publicity", "--today", str(period.max_end), "--json")
        report = orjson.loads(text)
        [made] = [r for r in report["withdrawn"] if r["record_key"] == key]
        assert code == 0 and made["confirmed"] == 2 and made["targets"] == dict.fromkeys(PUBLIC, "delivered")

    async def test_two_instances_withdraw_once(self, tmp_path: Path, store_url: str, store: Store) -> None:
        """Two gateways on one store running the job at the same time make one withdrawal."""
        sample, key, _row, period = await _published(tmp_path, store_url, store)
        async with platforms(tmp_path, THREE) as sandboxes:
            config = write_rules_config(tmp_path, store_url, sample.path, sandboxes, public=PUBLIC)
            await deliver(config, store)
            await run_publicity(store, config, period.max_end - dt.timedelta(days=1))  # periods computed
            other = await open_store(store_url)
            try:
                results = await asyncio.gather(run_publicity(store, config, period.max_end),
                                               run_publicity(other, config, period.max_end))
            finally:
                await other.aclose()
        assert sum(r.withdrawn for r in results) == 1
        assert sorted(r["target"] for r in await outbox(store, key) if r["version"] == 2) == sorted(PUBLIC)

    async def test_upcoming_withdrawals_are_listed(self, tmp_path: Path, store_url: str, store: Store,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
        """`publicity --due-within` lists what ends within the window, and nothing outside it."""
        sample, key, _row, period = await _published(tmp_path, store_url, store)
        async with platforms(tmp_path, THREE) as sandboxes:
            config = write_rules_config(tmp_path, store_url, sample.path, sandboxes, public=PUBLIC)
            await deliver(config, store)
            await run_publicity(store, config, period.max_end - dt.timedelta(days=20))
        inside = await store.publicity.report(list(config.targets), config.publicity.datasets,
                                              period.max_end - dt.timedelta(days=10), 10)
        outside = await store.publicity.report(list(config.targets), config.publicity.datasets,
                                               period.max_end - dt.timedelta(days=10), 9)
        assert [(r["record_key"], r["state"]) for r in inside["upcoming"]] == [(key, "upcoming")]
        assert outside["upcoming"] == [] and inside["undated"] == 0
        code, text = await run_cli(capsys, config, "publicity", "--today", str(period.max_end), "--due-within", "0")
        assert code == 0 and key in text and "due" in text and str(period.max_end) in text


class TestEndedBeforeSending:
    """A published state whose publicity is over by the day it is sent never reaches a public target."""

    async def test_a_backfilled_record_goes_to_the_internal_target_only(
            self, tmp_path: Path, store_url: str, store: Store, capsys: pytest.CaptureFixture[str]) -> None:
        """Read for the first time after its end (a backfill of old records): the internal target gets it, the
        public ones nothing; their outbox rows say withheld, `status` counts them and `records show` says why;
        the publicity job has nothing to withdraw; a later edit and an objection reach the internal target only,
        and `records changes` counts the objection settled (confirmed by one target, withheld from two)."""
        sample, row = _dated(tmp_path, 1200)
        key = key_of(row)
        async with platforms(tmp_path, THREE) as sandboxes:
            config = write_rules_config(tmp_path, store_url, sample.path, sandboxes, public=PUBLIC)
            await deliver(config, store)
            held = {n: set(sb.held(TABLE)) for n, sb in sandboxes.items()}
            assert key in held["city"] and len(held["city"]) >= 5
            assert held["province"] == held["partner"] == held["city"] - {key}  # only that record is withheld
            assert _states(await outbox(store, key)) == [
                ("city", 1, "delivered"), ("partner", 1, "withheld"), ("province", 1, "withheld")]
            status = {r["target"]: (r["withheld"], r["backlog"]) for r in await store.reports.target_status()}
            assert status == {"city": (0, 0), "partner": (1, 0), "province": (1, 0)}

            rows = len(await outbox(store))
            for _ in range(2):
                job = await run_publicity(store, config, china_today())
                assert (job.withdrawn, job.sent, job.waiting) == (0, {}, 0)
            assert len(await outbox(store)) == rows

            apply_changes(sample.path, table="xzcf", ids=[row["id"]], change="edit")
            await deliver(config, store)
            assert sandboxes["city"].held(TABLE)[key][:2] == (2, "upsert")
            assert all(key not in sandboxes[n].held(TABLE) for n in PUBLIC)
            assert [s for s in _states(await outbox(store, key)) if s[1] == 2] == [
                ("city", 2, "delivered"), ("partner", 2, "withheld"), ("province", 2, "withheld")]

            apply_changes(sample.path, table="xzcf", ids=[row["id"]], change="object")  # 异议: still published
            await deliver(config, store)
            assert sandboxes["city"].held(TABLE)[key][:2] == (3, "object")
            assert all(key not in sandboxes[n].held(TABLE) for n in PUBLIC)
        [change] = [c for c in await store.history.list_changes(list(config.targets)) if c.record_key == key]
        assert (change.version, change.operation, change.confirmed, change.withheld, change.unconfirmed) == (
            3, "object", 1, 2, False)
        assert change.summary() == "confirmed 1 of 3 target(s), 2 withheld (publicity ended)"
        code, text = await run_cli(capsys, config, "records", "show", "penalty", key)
        assert code == 0 and text.count("withheld") == 6 and text.count("publicity period over") == 6
        code, text = await run_cli(capsys, config, "status")
        assert code == 0 and "withheld" in text

    async def test_a_change_after_the_end_is_withheld_and_the_job_withdraws_the_published_version(
            self, tmp_path: Path, store_url: str, store: Store) -> None:
        """Sent the day before its end; edited and read again on the end date: the public target does not get the
        edit (it would publish the record again), and the publicity job then withdraws the version it holds."""
        sample, key, row, period = await _published(tmp_path, store_url, store)
        async with platforms(tmp_path, ("province",)) as sandboxes:
            config = write_rules_config(tmp_path, store_url, sample.path, sandboxes, public=("province",))
            province = sandboxes["province"]
            await deliver(config, store, today=period.max_end - dt.timedelta(days=1))
            assert province.held(TABLE)[key][:2] == (1, "upsert")

            apply_changes(sample.path, table="xzcf", ids=[row["id"]], change="edit")
            await deliver(config, store, today=period.max_end)
            assert _states(await outbox(store, key)) == [("province", 1, "delivered"), ("province", 2, "withheld")]
            assert province.held(TABLE)[key][:2] == (1, "upsert")  # until the job runs

            job = await run_publicity(store, config, period.max_end)
            assert (job.withdrawn, job.sent) == (1, {"province": 1})
            await deliver(config, store, today=period.max_end)
            assert province.held(TABLE)[key][:2] == (3, "withdraw")


def _states(rows: list[dict[str, Any]]) -> list[tuple[str, int, str]]:
    return sorted((r["target"], r["version"], r["state"]) for r in rows)


def test_mapping_has_the_reason_field() -> None:
    """The department mapping maps the status code to withdraw_reason."""
    assert any(name == "withdraw_reason" for name, _ in penalty_mapping().converters)


class TestWaiting:
    async def test_waits_while_an_internal_target_has_the_record_queued(
            self, tmp_path: Path, store_url: str, store: Store) -> None:
        """Due, but the internal target has not received its version yet: the withdrawal waits (it would
        supersede that version there), and is made once the internal target has it."""
        from gateway.daemon import Gateway
        from gateway.sandbox.server import Faults

        sample, key, _row, period = await _published(tmp_path, store_url, store)
        async with platforms(tmp_path, THREE) as sandboxes:
            config = write_rules_config(tmp_path, store_url, sample.path, sandboxes, public=PUBLIC)
            sandboxes["city"].set_faults(Faults(error_rate=1.0))
            async with Gateway(config, store) as gw:
                assert not await gw.run_until_idle(timeout_s=3)  # city keeps failing: its rows stay open
            waiting = await run_publicity(store, config, period.max_end)
            assert (waiting.withdrawn, waiting.waiting) == (0, 1)
            sandboxes["city"].set_faults(Faults())
            await store.reports.retry_now(target="city")
            await deliver(config, store)
            assert sandboxes["city"].held(TABLE)[key][:2] == (1, "upsert")
            done = await run_publicity(store, config, period.max_end)
            assert (done.withdrawn, done.waiting, done.sent) == (1, 0, dict.fromkeys(PUBLIC, 1))
