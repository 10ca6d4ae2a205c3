"""The documentation is tested: its generated blocks are up to date, and every command it shows runs.

Shell examples are fenced ```sh (commands only) or ```console (``$ `` before each command, then its output).
Every ``credit-gateway …`` command in README.md and docs/*.md is parsed by the real argument parser; the
read-only ones run for real, as processes, in a small demo's work directory; the ones that change the store
run against a copy of it (``certs init`` in an empty directory); the ones that need a running daemon, a server
or a file the demo does not make (``run``, ``sandbox``, another config) are checked to parse, and their ``--help``
to exit 0. The admin API examples run against the demo's gateway running with an admin API.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import re
import shlex
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from gateway.cli import build_parser, command_words
from gateway.cli import docs as gendocs
from gateway.cli.datasets import split_label
from gateway.demo import run_demo
from gateway.domain.datasets import DATASETS
from tests.ops.test_cli import COLUMNS, VALID, stop, wait_until

ROOT = Path(__file__).resolve().parents[2]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\S*)\n(.*?)^```", re.M | re.S)

NEEDS_A_SERVER = {"run", "sandbox", "demo", "dashboard"}
DOC_ADMIN_URL = "http://127.0.0.1:8472"  # the admin examples of docs/operations.md run against a live API
EXAMPLE_BATCH = "b-0123"  # in docs/operations.md; the test gives it the id of a batch the demo's sandbox signed
READ_TOKEN, OPERATOR_TOKEN = "docs-read-token-7c1e9a", "docs-operator-token-4b8d2f"
ADMIN_TOML = """
[admin]
port = 0
[admin.tokens.dashboard]
role = "read"
token_file = "dashboard.token"
[admin.tokens.ops]
role = "operator"
token_file = "ops.token"
"""
MAKES_NEW_FILES = {("certs", "init")}  # run in an empty directory
# They change the store or write a file: they run in a copy of the demo's directory.
CHANGES_THE_DIRECTORY = {("spool", "evidence"), ("spool", "retry"), ("spool", "replay"), ("quarantine", "replay"),
                         ("quarantine", "resolve"), ("lists", "reconcile"), ("report", "monthly"),
                         ("sources", "audit")}
# Commands that exit 1 on the demo's store, and why (exit 1 = "unhealthy or not found", never a usage error).
EXIT_1 = {
    "health": "the demo's daemon has stopped, so its heartbeat is stale",
    "records show": "the record keys in the examples come from another run",
    "inbound show": "the demo receives no pushed batches",
    "quarantine show": "the small demo quarantines no rows, so entry 1 does not exist",
}


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced block."""
    return FENCE.findall(text)


def command_lines(lang: str, body: str) -> Iterator[str]:
    """The shell lines of a block: every line of ```sh, the ``$ `` lines of ```console; continuations joined."""
    joined = body.replace("\\\n", " ")
    for line in joined.splitlines():
        if lang == "console":
            if line.startswith("$ "):
                yield line[2:]
        elif lang == "sh":
            yield line


def argv_of(line: str) -> list[str] | None:
    """The arguments after ``credit-gateway`` (environment assignments before it, pipes and ``&`` after it
    dropped); None when the line runs something else."""
    words = shlex.split(line, comments=True)
    while words and re.fullmatch(r"[A-Z_]+=.*", words[0]):
        words.pop(0)
    if not words or words[0] != "credit-gateway":
        return None
    words = words[1:]
    for end in ("|", "&", ">", "&&"):
        if end in words:
            words = words[: words.index(end)]
    return words


def env_of(line: str) -> dict[str, str]:
    """The environment assignments before ``credit-gateway``; the admin token placeholder ``…`` becomes the
    operator token of the live API."""
    env = {}
    for word in shlex.split(line, comments=True):
        if not re.fullmatch(r"[A-Z_]+=.*", word):
            break
        name, _, value = word.partition("=")
        env[name] = OPERATOR_TOKEN if value == "…" else value
    return env


def documented_commands() -> list[tuple[str, list[str], dict[str, str]]]:
    found = []
    for path in DOC_FILES:
        for lang, body in fenced_blocks(path.read_text(encoding="utf-8")):
            for line in command_lines(lang, body):
                argv = argv_of(line)
                if argv is not None:
                    found.append((f"{path.relative_to(ROOT)}: {line.strip()}", argv, env_of(line)))
    return found


COMMANDS = documented_commands()


def words(argv: list[str]) -> list[str]:
    """The command and sub-command, without the options before them (``-c FILE``)."""
    return command_words(argv)[:2]


def runs_for_real(argv: list[str], workdir: Path) -> bool:
    if words(argv)[0] in NEEDS_A_SERVER or ("--admin-url" in argv and DOC_ADMIN_URL not in argv):
        return False
    outputs = {argv[i + 1] for i, w in enumerate(argv[:-1]) if w in ("-o", "--output", "--receipt", "--dir")}
    files = [w for w in argv if not w.startswith("-") and w not in outputs and (
        ("/" in w and not w.startswith("http")) or re.search(r"\.(toml|zip|crt|csv|key|token)$", w))]
    return all((workdir / f).exists() for f in files)


def signed_batch(workdir: Path) -> str:
    """A batch the demo delivered to the sandbox, which signs its receipts."""
    with contextlib.closing(sqlite3.connect(workdir / "spool" / "gateway.db")) as conn:
        row = conn.execute("SELECT id FROM cg_batches WHERE target = 'sandbox' AND state = 'done' ORDER BY id "
                           "LIMIT 1").fetchone()
    assert row is not None
    return str(row[0])


def gateway(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CG_")}
    return subprocess.run([sys.executable, "-m", "gateway", *argv], cwd=cwd, env={**clean, **(env or {})},
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small demo's work directory, with what the README's walk-through copies and exports into it."""
    work = tmp_path_factory.mktemp("docs") / "demo-run"
    assert run_demo(work, licences=20, penalties=20) == 0
    shutil.copytree(ROOT / "mappings", work / "mappings")
    shutil.copy(work / "mappings" / "department-penalty.toml", work / "mappings" / "my-penalty.toml")
    with (work / "rows.csv").open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(VALID)
    return work


@pytest.fixture(scope="module")
def admin_api(workdir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """A copy of the demo's directory with its gateway running (`credit-gateway run`) and the admin API on a
    free port: the admin examples run against it with the URL in the docs replaced by the real one."""
    work = tmp_path_factory.mktemp("admin") / "demo-run"
    shutil.copytree(workdir, work)
    config = work / "credit-gateway.toml"
    text = config.read_text(encoding="utf-8")
    for old, new in (('log_format = "text"', 'log_format = "json"'), ('log_level = "error"', 'log_level = "info"')):
        text = text.replace(old, new)
    text = text.partition("\n[admin]")[0]  # the demo's own [admin] (last in its config): this one replaces it
    config.write_text(text + ADMIN_TOML, encoding="utf-8")
    (work / "dashboard.token").write_text(READ_TOKEN, encoding="utf-8")
    (work / "ops.token").write_text(OPERATOR_TOKEN, encoding="utf-8")
    log_path = work / "gateway.log"
    log = log_path.open("w", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CG_")}
    process = subprocess.Popen([sys.executable, "-m", "gateway", "run"], cwd=work, env=env, stdout=log,
                               stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: "admin API listening" in log_path.read_text(encoding="utf-8"), process, "admin API")
        line = next(x for x in log_path.read_text(encoding="utf-8").splitlines() if "admin API listening" in x)
        yield work, str(orjson.loads(line)["url"])
    finally:
        assert stop(process, log) == 0


class TestGeneratedBlocks:
    def test_configuration_and_mappings_are_up_to_date(self) -> None:
        """docs/configuration.md and docs/mappings.md hold what `make docs` would write."""
        assert gendocs.stale(ROOT / "docs", gendocs.blocks()) == []

    def test_a_changed_setting_makes_the_block_stale(self, tmp_path: Path) -> None:
        """The check sees a difference: a block edited by hand is out of date, and rewriting fixes it."""
        shutil.copytree(ROOT / "docs", tmp_path / "docs")
        page = tmp_path / "docs" / "configuration.md"
        page.write_text(page.read_text(encoding="utf-8").replace("| `max_concurrency` | integer | `8`",
                                                                 "| `max_concurrency` | integer | `9`"),
                        encoding="utf-8")
        assert gendocs.stale(tmp_path / "docs", gendocs.blocks()) == ["configuration.md"]
        assert gendocs.write(tmp_path / "docs", gendocs.blocks()) == ["configuration.md"]
        assert gendocs.stale(tmp_path / "docs", gendocs.blocks()) == []

    def test_make_docs_check_exits_1_on_a_stale_page(self, tmp_path: Path) -> None:
        """`python -m gateway.cli.docs --check` is what `make docs` users and CI can run."""
        shutil.copytree(ROOT / "docs", tmp_path / "docs")
        ok = subprocess.run([sys.executable, "-m", "gateway.cli.docs", "--check", "--docs", str(tmp_path / "docs")],
                            capture_output=True, text=True, check=False)
        assert ok.returncode == 0, ok.stderr
        page = tmp_path / "docs" / "mappings.md"
        page.write_text(page.read_text(encoding="utf-8").replace("| `fine_wan` |", "| `fine_yuan` |"),
                        encoding="utf-8")
        late = subprocess.run([sys.executable, "-m", "gateway.cli.docs", "--check", "--docs", str(tmp_path / "docs")],
                              capture_output=True, text=True, check=False)
        assert late.returncode == 1 and "mappings.md" in late.stderr

    def test_missing_markers_are_an_error(self) -> None:
        """A page that lost its markers is not silently left alone."""
        with pytest.raises(ValueError, match="generated: settings"):
            gendocs.replace_block("# Configuration\n", "settings", "x\n")

    def test_every_settings_dataclass_is_documented(self) -> None:
        """Every dataclass whose fields use setting(...) in gateway/ and adapters/ has a section."""
        declared = set()
        for top in ("gateway", "adapters"):
            for path in (ROOT / top).rglob("*.py"):
                text = path.read_text(encoding="utf-8")
                for match in re.finditer(r"^class (\w+):\n(?:    .*\n|\n)*?    \w+: [^=\n]+ = setting\(", text, re.M):
                    declared.add(match.group(1))
        documented = {section.cls.__name__ for section in gendocs.all_sections()}
        assert len(declared) >= 20
        assert declared <= documented, declared - documented

    def test_every_dataset_and_field_is_in_the_table(self) -> None:
        """Each canonical field appears with its standard identifier."""
        text = (ROOT / "docs" / "mappings.md").read_text(encoding="utf-8")
        for dataset in DATASETS.values():
            assert f"### `{dataset.name}`" in text
            for spec in dataset.fields:
                _, identifier = split_label(spec.label)
                shown = re.escape(f"`{identifier}`" if identifier else "-")
                assert re.search(rf"\| `{spec.name}` \| [^|]* \| {shown} \|", text), (dataset.name, spec.name)


class TestShellExamples:
    def test_examples_are_marked_consistently(self) -> None:
        """Every block names its language, and commands are only in sh or console blocks (else they would
        escape the tests below)."""
        stray = [f"{path.name}: {line}" for path in DOC_FILES
                 for lang, body in fenced_blocks(path.read_text(encoding="utf-8")) if lang not in ("sh", "console")
                 for line in body.splitlines() if re.match(r"(\$ )?([A-Z_]+=\S* )*credit-gateway ", line)]
        assert stray == []
        unmarked = [path.name for path in DOC_FILES for lang, _ in fenced_blocks(path.read_text(encoding="utf-8"))
                    if not lang]
        assert unmarked == []

    def test_there_are_commands_to_check(self) -> None:
        """The extraction finds the README's walk-through and the pages' examples."""
        readme = [c for c, _, _ in COMMANDS if c.startswith("README.md")]
        assert len(readme) >= 8 and len(COMMANDS) >= 50

    @pytest.mark.parametrize(("where", "argv", "env"), COMMANDS, ids=[c for c, _, _ in COMMANDS])
    def test_parses(self, where: str, argv: list[str], env: dict[str, str]) -> None:
        """The real parser takes the command: every sub-command and flag exists, every value is valid."""
        try:
            build_parser().parse_args(argv)
        except SystemExit as exc:
            pytest.fail(f"{where}: does not parse (exit {exc.code})")

    @pytest.mark.parametrize(("where", "argv", "env"), COMMANDS, ids=[c for c, _, _ in COMMANDS])
    def test_runs(self, where: str, argv: list[str], env: dict[str, str], workdir: Path, tmp_path: Path,
                  request: pytest.FixtureRequest) -> None:
        """Run for real in the demo's directory (a copy when it changes the store; the admin examples against
        the demo's gateway running with its admin API); else its --help exits 0."""
        cwd, url = request.getfixturevalue("admin_api") if DOC_ADMIN_URL in argv else (workdir, "")
        if not runs_for_real(argv, cwd):
            done = gateway([*words(argv), "--help"], workdir)
            assert done.returncode == 0, done.stderr
            return
        argv = [{DOC_ADMIN_URL: url, EXAMPLE_BATCH: signed_batch(workdir)}.get(w, w) for w in argv]
        if not url and tuple(words(argv)) in CHANGES_THE_DIRECTORY:
            cwd = tmp_path / "copy"
            shutil.copytree(workdir, cwd)
        elif not url and tuple(words(argv)) in MAKES_NEW_FILES:
            cwd = tmp_path
        done = gateway(argv, cwd, env)
        reason = next((why for prefix, why in EXIT_1.items() if " ".join(words(argv)).startswith(prefix)), None)
        assert "Traceback" not in done.stderr, done.stderr
        assert done.returncode == (1 if reason else 0), f"{where}\n{done.stdout}\n{done.stderr}"


def parser_for(path: list[str]) -> argparse.ArgumentParser:
    """The parser of a (sub-)command, e.g. ["spool", "list"]."""
    parser = build_parser()
    for name in path:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[name]
    return parser


def synopses() -> list[tuple[str, list[str], list[str]]]:
    """(synopsis, command words, flags) of the command table in docs/operations.md."""
    rows = []
    table = [line for line in (ROOT / "docs" / "operations.md").read_text(encoding="utf-8").splitlines()
             if line.startswith("| `")]
    for line in table:
        for synopsis in re.findall(r"`([a-z]+(?: [a-z]+)?(?: [^`]*)?)`", line.split(" | ")[0]):
            path = re.match(r"[a-z]+(?: (?!-)[a-z]+)?", synopsis)
            assert path
            rows.append((synopsis, path.group(0).split(), re.findall(r"--[a-z-]+", synopsis)))
    assert len(rows) >= 15
    return rows


class TestCommandTable:
    @pytest.mark.parametrize(("synopsis", "path", "flags"), synopses(), ids=[s for s, _, _ in synopses()])
    def test_every_flag_in_the_synopsis_exists(self, synopsis: str, path: list[str], flags: list[str]) -> None:
        """The command table of docs/operations.md names real commands and real flags."""
        parser = parser_for(path)
        known = {o for action in parser._actions for o in action.option_strings}
        assert set(flags) <= known, set(flags) - known


class TestDatasetsCommand:
    def test_lists_every_dataset(self, tmp_path: Path) -> None:
        """`credit-gateway datasets` names each dataset with its key."""
        done = gateway(["datasets"], tmp_path)
        assert done.returncode == 0, done.stderr
        for dataset in DATASETS.values():
            assert re.search(rf"^{dataset.name}\s.*{re.escape(' + '.join(dataset.key_fields))}", done.stdout, re.M)

    def test_show_prints_fields_with_identifiers(self, tmp_path: Path) -> None:
        """`datasets show penalty` prints fine_wan with CF_NR_FK, required fields and code tables."""
        done = gateway(["datasets", "show", "penalty"], tmp_path)
        assert done.returncode == 0, done.stderr
        assert re.search(r"^fine_wan\s+罚款金额（万元）\s+CF_NR_FK\s+decimal$", done.stdout, re.M)
        assert re.search(r"^decision_no\s+\S+\s+CF_WSH\s+key\s+text ≤ 128$", done.stdout, re.M)
        assert re.search(r"^penalty_types\s.*yes\s+list of: 警告 / 通报批评", done.stdout, re.M)

    def test_show_json_is_the_dataset(self, tmp_path: Path) -> None:
        """--json gives every field with its rules, in the dataset's order."""
        done = gateway(["datasets", "show", "credit_list", "--json"], tmp_path)
        assert done.returncode == 0, done.stderr
        data = orjson.loads(done.stdout)
        dataset = DATASETS["credit_list"]
        assert data["key_fields"] == list(dataset.key_fields)
        assert [f["name"] for f in data["fields"]] == [f.name for f in dataset.fields]
        id_no = next(f for f in data["fields"] if f["name"] == "id_no")
        assert id_no["personal_id"] and id_no["key"] and id_no["identifier"] == "SFZH"

    def test_unknown_dataset_is_a_usage_error(self, tmp_path: Path) -> None:
        """A misspelt dataset exits 2 and lists the known ones."""
        done = gateway(["datasets", "show", "penalties"], tmp_path)
        assert done.returncode == 2 and "penalty" in done.stderr


class TestAdminFlagsAfterTheCommand:
    @pytest.mark.parametrize("argv", [["quarantine", "list", "--admin-url", "http://127.0.0.1:9", "--token-file", "t"],
                                      ["quarantine", "--admin-url", "http://127.0.0.1:9", "--token-file", "t", "list"],
                                      ["spool", "retry", "--all", "--admin-url", "http://127.0.0.1:9"]])
    def test_either_position_parses(self, argv: list[str]) -> None:
        """The admin flags are taken after the leaf command as well as before it (docs/operations.md's examples)."""
        args = build_parser().parse_args(argv)
        assert args.admin_url == "http://127.0.0.1:9"

    def test_config_after_the_leaf_command(self) -> None:
        """`spool list -c FILE` names the config as `-c FILE spool list` does."""
        assert build_parser().parse_args(["spool", "list", "-c", "x.toml"]).config == "x.toml"
        assert build_parser().parse_args(["-c", "x.toml", "spool", "list"]).config == "x.toml"
