"""``credit-gateway adapters``: the installed adapters and their settings, run as a real process."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60, check=False)


class TestAdapters:
    def test_lists_every_installed_adapter(self, tmp_path: Path) -> None:
        """Each registered source and sink is listed with its role and entry point; no config is read."""
        done = cli("adapters", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        lines = [line.split() for line in done.stdout.splitlines()[1:]]
        assert ["source", "platform_lists", "adapters.platform.lists:PlatformListsSource"] in lines
        assert ["sink", "credit_platform", "adapters.platform.upload:CreditPlatformSink"] in lines
        assert ["sink", "national_frontdb", "adapters.national.frontdb:NationalFrontDbSink"] in lines
        assert len(lines) == 8

    def test_describe_prints_settings(self, tmp_path: Path) -> None:
        """describe prints each setting with its type, default (or required) and help, for the source and the sink."""
        done = cli("adapters", "describe", "file_drop", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert "source file_drop (adapters.file_drop:FileDropSource)" in done.stdout
        assert "sink file_drop (adapters.file_drop:FileDropSink)" in done.stdout
        rows = {cols[0]: cols[1:3] for cols in (re.split(r"\s{2,}", line) for line in done.stdout.splitlines())
                if len(cols) > 2}
        assert rows["inbox"] == rows["directory"] == ["string", "required"]
        assert rows["done_dir"] == ["string", '"done"'] and rows["patterns"][0] == "list of strings"

    def test_describe_one_role(self, tmp_path: Path) -> None:
        """--role sink leaves the source of the same name out."""
        done = cli("adapters", "describe", "sql", "--role", "sink", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert "sink sql" in done.stdout and "source sql" not in done.stdout
        assert "password_env" in done.stdout and "update_column" not in done.stdout

    def test_unknown_name_lists_the_installed(self, tmp_path: Path) -> None:
        """An unknown adapter exits 1 naming the installed ones."""
        done = cli("adapters", "describe", "ftp", cwd=tmp_path)
        assert done.returncode == 1
        assert "unknown adapter 'ftp'; installed: credit_platform, file_drop" in done.stderr
