"""Tests for gateway.config and gateway.settings: one TOML file, every problem with its path, all at once.

Configs are written into ``tmp_path`` from a text like the demo's: two SQL sources, one credit-platform
target, the repository's mapping files by absolute path and a token file beside the config.
"""

from __future__ import annotations

import dataclasses
import shutil
from importlib.metadata import entry_points
from pathlib import Path
from typing import ClassVar

import pytest

from gateway.config import load_config
from gateway.domain.datasets import CREDIT_LIST, DATASETS
from gateway.errors import ConfigError
from gateway.mapping import InboundMapping, OutboundMapping
from gateway.pipeline.config import DaemonSettings, RetrySettings

ROOT = Path(__file__).resolve().parents[2]
MAPPINGS = (ROOT / "mappings").as_posix()
TOKEN = "cfg-test-token-4711"

TEMPLATE = """\
[gateway]
instance = "test"
department_code = "11320500014117422K"
department_name = "苏州市市场监督管理局"
region_code = "320500"

[store]
url = "sqlite:///spool/gateway.db"

[daemon]
log_format = "text"
log_level = "error"

[sources.penalties]
type = "sql"
url = "sqlite:///department.db"
table = "xzcf"
key_columns = ["id"]
update_column = "gxsj"
mapping = "{mappings}/department-penalty.toml"
poll_interval_s = 5
batch_size = 1000

[sources.licences]
type = "sql"
url = "sqlite:///department.db"
table = "xzxk"
key_columns = ["id"]
update_column = "gxsj"
mapping = "{mappings}/department-license.toml"
poll_interval_s = 5
batch_size = 1000

[targets.t]
type = "credit_platform"
url = "http://127.0.0.1:8999/api/v1/upload"
token_file = "sandbox.token"
datasets = {{ penalty = "{mappings}/platform-2019-penalty.toml", license = "{mappings}/platform-2019-license.toml" }}
batch_size = 250
max_in_flight = 2
personal_ids = "mask"
external = false

[targets.t.retry]
initial_s = 0.1
max_s = 2.0
jitter_s = 0.1
max_attempts = 30

[targets.t.circuit]
failure_threshold = 8
reset_s = 0.5
"""
GOOD = TEMPLATE.format(mappings=MAPPINGS)


def write_config(tmp_path: Path, text: str, name: str = "credit-gateway.toml") -> Path:
    (tmp_path / "sandbox.token").write_text(TOKEN + "\n", encoding="utf-8")
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def edit(old: str, new: str, text: str = GOOD) -> str:
    """``text`` with ``old`` replaced once; fails loudly if ``old`` is not there (so the edit is real)."""
    assert old in text, old
    return text.replace(old, new, 1)


def config_errors(tmp_path: Path, text: str) -> ConfigError:
    path = write_config(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.source == str(path)
    return caught.value


def problem_at(error: ConfigError, path: str) -> str:
    """The message of the problem at ``path`` (fails listing all problems when there is none)."""
    found = [p.message for p in error.problems if p.path == path]
    assert found, f"no problem at {path}; got:\n{error}"
    return found[0]


def installed(group: str) -> list[str]:
    return sorted(ep.name for ep in entry_points(group=group))


class TestGoodConfig:
    def test_loads(self, tmp_path: Path) -> None:
        """The demo-like config loads with both sources and the target."""
        config = load_config(write_config(tmp_path, GOOD))
        assert set(config.sources) == {"penalties", "licences"}
        assert set(config.targets) == {"t"}
        assert isinstance(config.sources["penalties"].mappings["penalty"], InboundMapping)
        assert isinstance(config.targets["t"].mappings["license"], OutboundMapping)

    def test_routes(self, tmp_path: Path) -> None:
        """Each dataset a target maps is routed to it."""
        config = load_config(write_config(tmp_path, GOOD))
        assert config.routes() == {"penalty": ["t"], "license": ["t"]}

    def test_settings_are_typed(self, tmp_path: Path) -> None:
        """Values come through typed; unset ones take their defaults."""
        config = load_config(write_config(tmp_path, GOOD))
        target = config.targets["t"]
        assert (target.batch_size, target.max_in_flight, target.retry.max_attempts) == (250, 2, 30)
        defaults = {f.name: f.default for f in dataclasses.fields(RetrySettings)}
        assert target.retry.multiplier == defaults["multiplier"]
        assert config.daemon.log_format == "text"

    def test_token_is_a_secret_not_shown(self, tmp_path: Path) -> None:
        """The token read from the file is registered as a secret and not in the config's repr."""
        config = load_config(write_config(tmp_path, GOOD))
        assert TOKEN in config.secrets
        assert TOKEN not in repr(config)

    def test_token_from_environment(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """`token_env` reads the token from the named environment variable."""
        monkeypatch.setenv("CG_TEST_TOKEN", "from-env-1234")
        text = edit('token_file = "sandbox.token"', 'token_env = "CG_TEST_TOKEN"')
        config = load_config(write_config(tmp_path, text))
        assert "from-env-1234" in config.secrets

    def test_relative_paths_are_resolved_from_the_config_directory(self, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
        """Mapping files, the token file and the store are found beside the config, whatever the cwd."""
        home = tmp_path / "etc"
        shutil.copytree(ROOT / "mappings", home / "maps")
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        monkeypatch.chdir(elsewhere)
        config = load_config(write_config(home, TEMPLATE.format(mappings="maps")))
        assert Path(config.sources["penalties"].mappings["penalty"].path).resolve() == \
            (home / "maps" / "department-penalty.toml").resolve()
        assert Path(config.targets["t"].mappings["penalty"].path).resolve() == \
            (home / "maps" / "platform-2019-penalty.toml").resolve()
        assert TOKEN in config.secrets
        assert config.store_url() == f"sqlite:///{(home / 'spool' / 'gateway.db').resolve()}"

    def test_absolute_store_url_is_kept(self, tmp_path: Path) -> None:
        """An absolute SQLite path and a PostgreSQL URL are not rewritten."""
        absolute = f"sqlite:///{tmp_path / 'x.db'}"
        config = load_config(write_config(tmp_path, edit('url = "sqlite:///spool/gateway.db"', f'url = "{absolute}"')))
        assert config.store_url() == absolute
        pg = "postgresql://gw@db.example/gateway"
        config = load_config(write_config(tmp_path, edit('url = "sqlite:///spool/gateway.db"', f'url = "{pg}"')))
        assert config.store_url() == pg

    def test_full_ids_allowed_on_an_internal_target(self, tmp_path: Path) -> None:
        """personal_ids = "full" is fine when the target is not external."""
        text = edit('personal_ids = "mask"', 'personal_ids = "full"')
        assert load_config(write_config(tmp_path, text)).targets["t"].personal_ids == "full"


class TestProblems:
    def test_unknown_section(self, tmp_path: Path) -> None:
        """A section the gateway does not know is named."""
        error = config_errors(tmp_path, "[deamon]\nheartbeat_s = 1\n" + GOOD)
        assert "unknown section" in problem_at(error, "deamon")

    def test_unknown_setting_lists_the_known_ones(self, tmp_path: Path) -> None:
        """`daemon.max_concurency` is named and every known daemon setting is listed."""
        error = config_errors(tmp_path, edit("[daemon]\n", "[daemon]\nmax_concurency = 4\n"))
        message = problem_at(error, "daemon.max_concurency")
        assert all(f.name in message for f in dataclasses.fields(DaemonSettings))

    def test_wrong_type_of_common_setting(self, tmp_path: Path) -> None:
        """`targets.t.batch_size = "x"` is named with what was expected."""
        error = config_errors(tmp_path, edit("batch_size = 250", 'batch_size = "x"'))
        assert "'x'" in problem_at(error, "targets.t.batch_size")

    @pytest.mark.parametrize(("old", "new", "path"), [
        ("log_level = \"error\"", "log_level = \"error\"\nheartbeat_s = \"fast\"", "daemon.heartbeat_s"),
        ("initial_s = 0.1", "initial_s = true", "targets.t.retry.initial_s"),
        ("reset_s = 0.5", "reset_s = -1", "targets.t.circuit.reset_s"),
        ("poll_interval_s = 5", "poll_interval_s = 0", "sources.penalties.poll_interval_s"),
        ('log_format = "text"', 'log_format = "xml"', "daemon.log_format"),
    ])
    def test_wrong_types_and_values(self, tmp_path: Path, old: str, new: str, path: str) -> None:
        """Wrong types, non-positive numbers and values outside the choices are named by path."""
        problem_at(config_errors(tmp_path, edit(old, new)), path)

    @pytest.mark.parametrize("url", ["ftp://example.gov.cn/upload", "example.gov.cn/upload", "http://"])
    def test_bad_url(self, tmp_path: Path, url: str) -> None:
        """`targets.t.url` that is not an http(s) URL is named."""
        error = config_errors(tmp_path, edit('url = "http://127.0.0.1:8999/api/v1/upload"', f'url = "{url}"'))
        assert "expected an http(s) URL" in problem_at(error, "targets.t.url")

    def test_unknown_sink_type_lists_installed(self, tmp_path: Path) -> None:
        """An unknown target type lists the installed sink adapters."""
        error = config_errors(tmp_path, edit('type = "credit_platform"', 'type = "kafka"'))
        message = problem_at(error, "targets.t.type")
        assert "kafka" in message
        assert all(name in message for name in installed("credit_gateway.sinks"))
        assert "credit_platform" in message

    def test_unknown_source_type_lists_installed(self, tmp_path: Path) -> None:
        """An unknown source type lists the installed source adapters."""
        error = config_errors(tmp_path, edit('type = "sql"', 'type = "oracle"'))
        message = problem_at(error, "sources.penalties.type")
        assert all(name in message for name in installed("credit_gateway.sources"))
        assert "sql" in message

    def test_missing_token_env_names_the_variable(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """A token environment variable that is not set is named (and nothing else about it is shown)."""
        monkeypatch.delenv("CG_NO_SUCH_TOKEN", raising=False)
        error = config_errors(tmp_path, edit('token_file = "sandbox.token"', 'token_env = "CG_NO_SUCH_TOKEN"'))
        assert "CG_NO_SUCH_TOKEN" in problem_at(error, "targets.t.token_env")

    def test_missing_token_file(self, tmp_path: Path) -> None:
        """A token file that does not exist is named."""
        error = config_errors(tmp_path, edit('token_file = "sandbox.token"', 'token_file = "nope.token"'))
        assert "nope.token" in problem_at(error, "targets.t.token_file")

    def test_full_ids_on_external_target(self, tmp_path: Path) -> None:
        """personal_ids = "full" on an external target is refused."""
        error = config_errors(tmp_path, edit('personal_ids = "mask"\nexternal = false',
                                             'personal_ids = "full"\nexternal = true'))
        problem_at(error, "targets.t.personal_ids")

    def test_no_envelope_on_an_external_target(self, tmp_path: Path) -> None:
        """An external target without an envelope (profile none) is refused at its envelope.profile."""
        error = config_errors(tmp_path, edit("external = false", "external = true"))
        assert "external = false" in problem_at(error, "targets.t.envelope.profile")
        error = config_errors(tmp_path, edit("external = false", 'external = true\nenvelope = { profile = "none" }'))
        problem_at(error, "targets.t.envelope.profile")

    def test_mapping_file_that_does_not_exist(self, tmp_path: Path) -> None:
        """A mapping path that does not exist is named with the file."""
        error = config_errors(tmp_path, edit("department-penalty.toml", "department-penalty-v2.toml"))
        assert "department-penalty-v2.toml" in problem_at(error, "sources.penalties.mapping")

    def test_inbound_mapping_used_for_a_target(self, tmp_path: Path) -> None:
        """A target dataset pointing at an inbound mapping is refused."""
        error = config_errors(tmp_path, edit("platform-2019-penalty.toml", "department-penalty.toml"))
        assert "outbound" in problem_at(error, "targets.t.datasets.penalty")

    def test_outbound_mapping_used_for_a_source(self, tmp_path: Path) -> None:
        """A source pointing at an outbound mapping is refused."""
        error = config_errors(tmp_path, edit("department-penalty.toml", "platform-2019-penalty.toml"))
        assert "inbound" in problem_at(error, "sources.penalties.mapping")

    def test_mapping_of_another_dataset(self, tmp_path: Path) -> None:
        """`penalty = <licence mapping>` is refused: the mapping maps another dataset."""
        error = config_errors(tmp_path, edit("platform-2019-penalty.toml", "platform-2019-license.toml"))
        assert "license" in problem_at(error, "targets.t.datasets.penalty")

    def test_broken_mapping_problems_are_passed_on(self, tmp_path: Path) -> None:
        """Problems inside a mapping file reach the config error, naming the mapping file and its key."""
        broken = (ROOT / "mappings" / "department-penalty.toml").read_text(encoding="utf-8").replace(
            'from = "cfyj"', 'from = "cfyj"\ntransform = ["shout"]')
        (tmp_path / "broken.toml").write_text(broken, encoding="utf-8")
        (tmp_path / "codes").mkdir()
        shutil.copy(ROOT / "mappings" / "codes" / "department-codes.toml", tmp_path / "codes")
        error = config_errors(tmp_path, edit(f"{MAPPINGS}/department-penalty.toml", "broken.toml"))
        message = problem_at(error, "sources.penalties.mapping")
        assert "broken.toml" in message and "fields.legal_basis.transform" in message

    def test_dataset_read_but_routed_nowhere(self, tmp_path: Path) -> None:
        """A dataset a source reads but no target receives is reported at the source's mapping."""
        text = edit(f', license = "{MAPPINGS}/platform-2019-license.toml"', "")
        assert "license" in problem_at(config_errors(tmp_path, text), "sources.licences.mapping")

    def test_missing_required_gateway_setting(self, tmp_path: Path) -> None:
        """gateway.department_code is required."""
        error = config_errors(tmp_path, edit('department_code = "11320500014117422K"\n', ""))
        problem_at(error, "gateway.department_code")

    def test_file_not_found(self, tmp_path: Path) -> None:
        """A missing config file is a ConfigError naming it."""
        with pytest.raises(ConfigError, match="not found") as caught:
            load_config(tmp_path / "absent.toml")
        assert "absent.toml" in str(caught.value)

    def test_invalid_toml_names_the_line(self, tmp_path: Path) -> None:
        """A TOML syntax error carries its line number."""
        lines = GOOD.splitlines()
        lines.insert(3, "department_name = ")
        error = config_errors(tmp_path, "\n".join(lines))
        assert "line 4" in str(error)

    def test_not_utf8(self, tmp_path: Path) -> None:
        """A GBK-saved config is refused with the byte offset."""
        path = tmp_path / "gbk.toml"
        data = GOOD.encode("gbk")
        path.write_bytes(data)
        with pytest.raises(ConfigError, match="UTF-8") as caught:
            load_config(path)
        assert f"byte {data.index('苏'.encode('gbk'))}" in str(caught.value)

    def test_retry_that_is_not_a_table(self, tmp_path: Path) -> None:
        """`retry = 5` instead of a [retry] table is a ConfigError at targets.t.retry, not a crash."""
        text = edit("[targets.t.retry]\ninitial_s = 0.1\nmax_s = 2.0\njitter_s = 0.1\nmax_attempts = 30\n", "")
        text = edit("external = false", "external = false\nretry = 5", text)
        assert any(p.path.startswith("targets.t.retry") for p in config_errors(tmp_path, text).problems)

    def test_typo_of_a_common_target_setting_lists_it_as_known(self, tmp_path: Path) -> None:
        """`batchsize` on a target is unknown; the known list includes batch_size, the setting meant."""
        error = config_errors(tmp_path, edit("batch_size = 250", "batchsize = 250"))
        assert "batch_size" in problem_at(error, "targets.t.batchsize")


class TestAllProblemsTogether:
    FOUR: ClassVar[dict[str, tuple[str, str]]] = {"bogus": ("", "[bogus]\nx = 1\n"),
            "daemon.max_concurency": ("[daemon]\n", "[daemon]\nmax_concurency = 4\n"),
            "targets.t.batch_size": ("batch_size = 250", 'batch_size = "x"'),
            "targets.t.url": ('url = "http://127.0.0.1:8999/api/v1/upload"', 'url = "ftp://x"')}

    def four_mistakes(self) -> str:
        text = GOOD
        for old, new in self.FOUR.values():
            text = new + text if not old else edit(old, new, text)
        return text

    def test_every_mistake_is_reported_in_one_error(self, tmp_path: Path) -> None:
        """Four different mistakes all appear, each with its path, in one ConfigError."""
        error = config_errors(tmp_path, self.four_mistakes())
        assert set(self.FOUR) <= {p.path for p in error.problems}
        assert all(path in str(error) for path in self.FOUR)

    def test_four_mistakes_yield_four_problems(self, tmp_path: Path) -> None:
        """Four mistakes yield exactly four problems: no follow-on noise."""
        error = config_errors(tmp_path, self.four_mistakes())
        assert sorted(p.path for p in error.problems) == sorted(self.FOUR), str(error)

    def test_broken_target_does_not_claim_datasets_are_unrouted(self, tmp_path: Path) -> None:
        """A target with a bad URL still receives its datasets: no 'no target receives it' on the sources."""
        error = config_errors(tmp_path, edit('url = "http://127.0.0.1:8999/api/v1/upload"', 'url = "ftp://x"'))
        assert [p.path for p in error.problems] == ["targets.t.url"], str(error)

    def test_gateway_problem_does_not_hide_the_others(self, tmp_path: Path) -> None:
        """A missing gateway.department_code and a bad target URL are reported together."""
        text = edit('department_code = "11320500014117422K"\n', "")
        text = edit('url = "http://127.0.0.1:8999/api/v1/upload"', 'url = "ftp://x"', text)
        paths = {p.path for p in config_errors(tmp_path, text).problems}
        assert {"gateway.department_code", "targets.t.url"} <= paths

    def test_problems_in_two_sources_and_a_target(self, tmp_path: Path) -> None:
        """Problems in different sources and the target are all collected."""
        text = edit("batch_size = 1000", "batch_size = 0")
        text = edit('table = "xzxk"', 'table = "xzxk; drop table x"', text)
        text = edit("max_in_flight = 2", "max_in_flight = -1", text)
        paths = {p.path for p in config_errors(tmp_path, text).problems}
        assert {"sources.penalties.batch_size", "sources.licences.table", "targets.t.max_in_flight"} <= paths


class TestExampleConfig:
    def test_the_shipped_example_loads(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """config.example.toml is valid as shipped, once `certs init` has made the PKI it names."""
        from gateway.certs import init_dev_pki

        shutil.copy(ROOT / "config.example.toml", tmp_path / "credit-gateway.toml")
        shutil.copytree(ROOT / "mappings", tmp_path / "mappings")
        init_dev_pki(tmp_path / "certs", ["rsa"])
        monkeypatch.setenv("CG_PROVINCE_TOKEN", "example-token")
        config = load_config(tmp_path / "credit-gateway.toml")
        province = config.targets["province"]
        assert province.external and province.sealing.profile == "cms" and province.sealing.require_signed_receipts
        assert set(config.sources) == {"penalties", "licences"}


class TestPersonalKeys:
    def test_pseudonymised_list_keys_may_go_to_an_external_target(self, tmp_path: Path) -> None:
        """credit_list keys carry pseudonyms of ID numbers, not the numbers: lists may be routed to partners."""
        text = edit("external = false", "external = true\nenvelope = { profile = \"none\" }")
        text = edit('penalty = "', f'credit_list = "{MAPPINGS}/partner-credit_list.toml", penalty = "', text)
        error = config_errors(tmp_path, text)
        assert [p.path for p in error.problems] == ["targets.t.envelope.profile"], str(error)  # only the seal

    def test_a_key_that_still_holds_an_id_number_is_refused_on_an_external_target(
            self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """A dataset whose keys hold ID numbers as they are (no pseudonyms) may not go to an external target."""
        monkeypatch.setitem(DATASETS, "credit_list", dataclasses.replace(CREDIT_LIST, pseudonymised_key=False))
        text = edit("external = false", "external = true\nenvelope = { profile = \"none\" }")
        text = edit('penalty = "', f'credit_list = "{MAPPINGS}/partner-credit_list.toml", penalty = "', text)
        error = config_errors(tmp_path, text)
        assert "ID number" in problem_at(error, "targets.t.datasets.credit_list")
        assert not any(p.path == "targets.t.datasets.penalty" for p in error.problems)

    def test_such_a_key_is_allowed_on_an_internal_target(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """The refusal is about external routes: the department's own systems may have such keys."""
        monkeypatch.setitem(DATASETS, "credit_list", dataclasses.replace(CREDIT_LIST, pseudonymised_key=False))
        text = edit('penalty = "', f'credit_list = "{MAPPINGS}/partner-credit_list.toml", penalty = "')
        config = load_config(write_config(tmp_path, text))
        assert "credit_list" in config.targets["t"].mappings
