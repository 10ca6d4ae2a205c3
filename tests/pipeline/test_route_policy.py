"""A route's field policy: `omit_fields` keeps fields away from a target; unknown names are config errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import load_config
from gateway.daemon import Gateway
from gateway.errors import ConfigError
from gateway.sandbox.server import Sandbox
from gateway.store import open_store
from tests.conftest import TOKEN
from tests.support.helpers import make_department_db, write_config


def _with_policy(path: Path, policy: str) -> Path:
    text = path.read_text(encoding="utf-8").replace("external = false", f"external = false\nomit_fields = {policy}")
    path.write_text(text, encoding="utf-8")
    return path


class TestOmitFields:
    async def test_omitted_fields_never_reach_the_target(self, tmp_path: Path, sandbox: Sandbox) -> None:
        """With remarks and the legal representative omitted, no held record has BZ or CF_FRDB."""
        sample = make_department_db(tmp_path, penalties=30)
        path = _with_policy(write_config(tmp_path, url=sandbox.upload_url, db=sample.path, token=TOKEN),
                            '["remarks", "legal_rep"]')
        config = load_config(path)
        store = await open_store(config.store_url())
        try:
            async with Gateway(config, store) as gw:
                assert await gw.run_until_idle(timeout_s=60)
        finally:
            await store.aclose()
        held = sandbox.held("XZCF")
        assert len(held) == 30
        assert not any("BZ" in data or "CF_FRDB" in data for _v, _op, data in held.values())
        assert all("CF_XDR_MC" in data for _v, _op, data in held.values())

    def test_unknown_field_is_a_config_error_with_its_path(self, tmp_path: Path) -> None:
        """A misspelt field name is refused with targets.NAME.omit_fields[i]."""
        sample = make_department_db(tmp_path, penalties=1)
        path = _with_policy(write_config(tmp_path, url="http://127.0.0.1:9/x", db=sample.path, token=TOKEN),
                            '["remarks", "remark"]')
        with pytest.raises(ConfigError) as caught:
            load_config(path)
        assert [p.path for p in caught.value.problems] == ["targets.platform.omit_fields[1]"]
