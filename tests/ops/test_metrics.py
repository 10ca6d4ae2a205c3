"""/metrics on the admin listener: a real run against the sandbox, scraped and checked against `status --json`."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from gateway.config import load_config
from gateway.daemon import Gateway
from gateway.operations import status_json
from gateway.sandbox.server import Sandbox
from gateway.store import Store, open_store
from gateway.web.admin import AdminServer
from gateway.web.metrics import render_metrics
from tests.conftest import TOKEN
from tests.ops.test_admin_api import READ_TOKEN, _admin_toml
from tests.support.helpers import SOURCE, failed_batch, make_department_db, write_config


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, by (name, sorted labels)."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return found[(name, tuple(sorted(labels.items())))]


class TestScrape:
    async def test_metrics_agree_with_status(self, tmp_path: Path, sandbox: Sandbox) -> None:
        """After a run with quarantined rows and deliveries, every figure /metrics shows is the one `status --json`
        shows; without a token the scrape is refused like the rest of the admin API."""
        sample = make_department_db(tmp_path, penalties=40, invalid_fraction=0.2)
        (tmp_path / "spool").mkdir()
        path = write_config(tmp_path, url=sandbox.url + "/api/v1/upload", db=sample.path, token=TOKEN)
        path.write_text(path.read_text(encoding="utf-8") + _admin_toml(tmp_path), encoding="utf-8")
        config = load_config(path)
        store = await open_store(config.store_url())
        try:
            async with Gateway(config, store) as gw:
                assert await gw.run_until_idle(120)
                await gw.beat()
            status = await status_json(store, config)
            async with AdminServer(config, config.admin, store) as server, aiohttp.ClientSession() as http:
                async with http.get(server.url + "/metrics") as resp:
                    assert resp.status == 401
                async with http.get(server.url + "/metrics", headers={"Authorization": f"Bearer {READ_TOKEN}"}) as resp:
                    assert resp.status == 200 and resp.content_type == "text/plain"
                    found = samples(await resp.text())
        finally:
            await store.aclose()
        check_against_status(found, status)

    async def test_failed_attempts_and_an_open_circuit(self, gateway_store: Store, tmp_path: Path) -> None:
        """A failed delivery attempt counts in cg_target_batches_failed_total; the heartbeat's open circuit is 2."""
        records = await failed_batch(gateway_store, tmp_path, "HTTP 503", dead=False)
        await gateway_store.reports.beat("m", 1, time.time(), {"state": "running", "targets": {
            "province": {"circuit": "open"}}})
        body, _ = await render_metrics(gateway_store, "m")
        found = samples(body.decode())
        assert value(found, "cg_target_batches_failed_total", target="province") == 1
        assert value(found, "cg_target_circuit_state", target="province") == 2
        assert value(found, "cg_target_backlog", target="province") == records
        assert value(found, "cg_target_oldest_pending_seconds", target="province") > 0


def check_against_status(found: dict[Any, float], status: dict[str, Any]) -> None:
    counts = status["counts"]
    assert value(found, "cg_source_rows_read_total", source=SOURCE) == counts["rows_read"] > 0
    quarantined = sum(counts["quarantine"].values())
    assert quarantined > 0, "the sample must quarantine rows for this test to mean anything"
    assert value(found, "cg_source_rows_quarantined_total", source=SOURCE) == counts["quarantine"]["mapping"]
    by_reason = sum(v for (name, labels), v in found.items()
                    if name == "cg_quarantine_entries" and ("state", "open") in labels)
    assert by_reason >= quarantined  # an entry counts once per distinct reason it has
    [target] = status["targets"]
    name = target["target"]
    for state in ("delivered", "rejected", "dead", "withheld"):
        assert value(found, "cg_target_records", target=name, state=state) == target[state]
    assert target["delivered"] > 0
    assert value(found, "cg_target_backlog", target=name) == target["backlog"] == 0
    assert value(found, "cg_dead_letters", target=name) == target["dead"]
    assert value(found, "cg_target_circuit_state", target=name) == 0  # closed
    [instance] = status["instances"]
    calendar = next(e for e in instance["state"]["expiries"] if e["kind"] == "calendar")
    assert value(found, "cg_days_left", kind="calendar", what=calendar["what"]) == calendar["days_left"]
    assert value(found, "cg_store_size_bytes") == status["store_bytes"] > 0
