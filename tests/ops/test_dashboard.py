"""The dashboard in headless Chromium (selenium, Debian's chromium and chromium-driver): log in, every page shows
the figures the store holds for a small demo run (read here with sqlite3), a wrong token is refused, no ID number
appears unmasked. Screenshots are saved under the test's tmp directory (the path is printed)."""

from __future__ import annotations

import datetime as dt
import http.client
import json
import os
import shutil
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gateway.clock import CHINA, china_today
from gateway.domain.datasets import DATASETS
from gateway.domain.identifiers import mask_id
from gateway.web.dashboard import Dashboard
from gateway.web.pages import Pages
from tests.support.dashboard_helpers import READ_TOKEN, Scenario, ServerThread, make_scenario, serving, unmasked_ids

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.support import expected_conditions as ec  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM_ARGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1280,900", "--lang=zh-CN")
PAGES = ("", "/timeliness", "/quarantine", "/lists", "/sanctions", "/certificates", "/log", "/record")


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    return make_scenario(tmp_path_factory.mktemp("dashboard"))


@pytest.fixture(scope="module")
def server(scenario: Scenario) -> Iterator[ServerThread]:
    with serving(scenario.config) as running:
        yield running


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("screenshots")
    print(f"dashboard screenshots in {directory}")
    return directory


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver is None:
        if os.environ.get("CG_NO_BROWSER") == "1":
            pytest.skip("CG_NO_BROWSER=1 and no chromium")
        pytest.fail("chromium and chromium-driver are missing: run tests/ensure-deps.sh (or make test)")
    options = Options()
    options.binary_location = chromium
    for arg in (*CHROMIUM_ARGS, f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(arg)
    chrome = webdriver.Chrome(options=options, service=Service(executable_path=driver))
    try:
        yield chrome
    finally:
        chrome.quit()


def wait(browser: WebDriver, css: str) -> None:
    WebDriverWait(browser, 15).until(ec.presence_of_element_located((By.CSS_SELECTOR, css)))


def login(browser: WebDriver, url: str, token: str) -> None:
    browser.delete_all_cookies()
    browser.get(f"{url}/dashboard")
    wait(browser, "form#login")
    browser.find_element(By.ID, "token").send_keys(token)
    browser.find_element(By.ID, "submit").click()


@pytest.fixture
def page(browser: WebDriver, server: ServerThread) -> WebDriver:
    """The browser, logged in with the read token, on the overview."""
    login(browser, server.url, READ_TOKEN)
    wait(browser, "main#page-overview")
    return browser


def rows(browser: WebDriver, css: str) -> list[list[str]]:
    return [[td.text for td in tr.find_elements(By.TAG_NAME, "td")]
            for tr in browser.find_elements(By.CSS_SELECTOR, f"table.{css} tbody tr")
            if not tr.find_elements(By.CSS_SELECTOR, "td.empty")]


def goto(browser: WebDriver, url: str, path: str, css: str, query: dict[str, str] | None = None) -> None:
    browser.get(f"{url}/dashboard{path}" + (f"?{urllib.parse.urlencode(query)}" if query else ""))
    wait(browser, css)


def month_span(day: dt.date) -> tuple[float, float]:
    first = day.replace(day=1)
    nxt = dt.date(first.year + first.month // 12, first.month % 12 + 1, 1)
    return (dt.datetime.combine(first, dt.time(), CHINA).timestamp(),
            dt.datetime.combine(nxt, dt.time(), CHINA).timestamp())


class TestAccess:
    def test_wrong_token_is_refused(self, browser: WebDriver, server: ServerThread) -> None:
        """A wrong token gets the form again with an error and no session; the pages still redirect to login."""
        login(browser, server.url, "not-a-token-at-all-0000")
        wait(browser, "#login-error")
        assert browser.find_element(By.ID, "login-error").text == "令牌无效"
        assert "cg_session" not in {c["name"] for c in browser.get_cookies()}
        browser.get(f"{server.url}/dashboard/quarantine")
        wait(browser, "form#login")

    def test_session_cookie_and_csrf(self, server: ServerThread) -> None:
        """The form's cookie and the session's are HttpOnly and SameSite=Strict; a login without the form's CSRF
        token is refused (403) even with a good token; logout needs the session's CSRF token."""
        host, port = urllib.parse.urlsplit(server.url).netloc.split(":")

        def call(method: str, path: str, body: str = "", cookie: str = "") -> tuple[int, Any]:
            conn = http.client.HTTPConnection(host, int(port), timeout=10)
            try:
                conn.request(method, path, body=body, headers={
                    "Content-Type": "application/x-www-form-urlencoded", "Cookie": cookie})
                response = conn.getresponse()
                response.read()
                return response.status, response.headers
            finally:
                conn.close()

        _, form = call("GET", "/dashboard/login")
        set_cookie = form.get("Set-Cookie") or ""
        assert "HttpOnly" in set_cookie and "SameSite=Strict" in set_cookie and "Secure" not in set_cookie
        form_token = set_cookie.split(";")[0].split("=", 1)[1]
        good = urllib.parse.urlencode({"token": READ_TOKEN, "csrf": form_token})
        assert call("POST", "/dashboard/login", good)[0] == 403  # no form cookie: a cross-site post
        bad = urllib.parse.urlencode({"token": READ_TOKEN, "csrf": "x" * 43})
        assert call("POST", "/dashboard/login", bad, f"cg_form={form_token}")[0] == 403
        status, done = call("POST", "/dashboard/login", good, f"cg_form={form_token}")
        assert status == 303 and done.get("Location") == "/dashboard"
        session = next(c for c in done.get_all("Set-Cookie") or [] if c.startswith("cg_session="))
        assert "HttpOnly" in session and "SameSite=Strict" in session
        sid = session.split(";")[0].split("=", 1)[1]
        assert call("GET", "/dashboard", cookie=f"cg_session={sid}")[0] == 200
        assert call("POST", "/dashboard/logout", "csrf=wrong", f"cg_session={sid}")[0] == 403
        assert call("GET", "/api/v1/status")[0] == 401  # the API still wants its bearer token

    def test_secure_cookie_under_tls(self) -> None:
        """With TLS the cookies are also Secure."""
        response = web.Response()
        dashboard = Dashboard(Pages(None, None, frozenset()), lambda _given: None, secure=True)  # type: ignore[arg-type]
        dashboard._cookie(response, "cg_session", "x")
        assert response.cookies["cg_session"]["secure"] and response.cookies["cg_session"]["samesite"] == "Strict"


class TestPages:
    def test_overview_per_target_and_source(self, page: WebDriver, scenario: Scenario, shots: Path) -> None:
        """Backlog, delivered today and this month, dead letters per target; rows read and quarantined per
        source: as the store holds them."""
        page.save_screenshot(str(shots / "overview.png"))
        shown = {r[0]: r for r in rows(page, "targets")}
        since, until = month_span(china_today())
        for target, backlog, dead in scenario.query(
                "SELECT target, sum(state IN ('pending', 'leased')), sum(state = 'dead') FROM cg_outbox "
                "GROUP BY target"):
            accepted = scenario.query("SELECT coalesce(sum(accepted), 0) FROM cg_receipts WHERE target = ? AND "
                                      "received_at >= ? AND received_at < ?", target, since, until)[0][0]
            assert shown[target][1] == str(backlog) and shown[target][6] == str(dead)
            assert shown[target][2] == str(accepted) == shown[target][3]  # the demo ran today
        sources = {r[0]: r for r in rows(page, "sources")}
        for source, read, quarantined in scenario.query(
                "SELECT source, sum(rows), sum(quarantined) FROM cg_intake GROUP BY source"):
            assert sources[source][2:4] == [str(read), str(quarantined)]
        assert page.find_elements(By.CSS_SELECTOR, "svg.chart rect")  # delivered per day
        assert 'src="http' not in page.page_source and 'href="http' not in page.page_source  # no outside asset

    def test_timeliness_for_a_month(self, page: WebDriver, server: ServerThread, scenario: Scenario,
                                    shots: Path) -> None:
        """Records per department and dataset decided in the chosen month; the rate; the late records listed."""
        month = scenario.query("SELECT substr(decision_date, 1, 7) m FROM cg_records WHERE dataset IN ('penalty', "
                               "'license') GROUP BY m ORDER BY count(*) DESC, m DESC LIMIT 1")[0][0]
        goto(page, server.url, "/timeliness", "table.timeliness", {"month": month})
        page.save_screenshot(str(shots / "timeliness.png"))
        expected: dict[tuple[str, str], int] = {}
        for dataset, payload in scenario.query("SELECT dataset, payload FROM cg_records WHERE decision_date LIKE ? "
                                               "AND dataset IN ('penalty', 'license')", month + "-%"):
            key = (DATASETS[dataset].label.split(" ")[0], json.loads(payload).get("authority") or "")
            expected[key] = expected.get(key, 0) + 1
        shown = rows(page, "timeliness")
        assert {(r[0], r[1]): int(r[2]) for r in shown} == expected
        for r in shown:
            on_time, late = int(r[3]), int(r[4])
            assert r[7] == (f"{on_time / (on_time + late) * 100:.1f}%" if on_time + late else "-")
        decided = {k for (k,) in scenario.query("SELECT record_key FROM cg_records WHERE decision_date LIKE ?",
                                                month + "-%")}
        listed = {r[2] for r in rows(page, "late")}
        assert listed and {mask_id(k) if len(k) == 18 else k for k in decided} >= listed

    def test_quarantine_grouped_by_reason(self, page: WebDriver, server: ServerThread, scenario: Scenario,
                                          shots: Path) -> None:
        """The counts per reason add up to every reason of the open entries."""
        goto(page, server.url, "/quarantine", "table.quarantine")
        page.save_screenshot(str(shots / "quarantine.png"))
        reasons = sum(len(json.loads(r)) for (r,) in scenario.query(
            "SELECT reasons FROM cg_quarantine WHERE state = 'open'"))
        assert sum(int(r[4]) for r in rows(page, "quarantine")) == reasons > 0

    def test_credit_lists_and_conflicts(self, page: WebDriver, server: ServerThread, scenario: Scenario) -> None:
        """Entries per list in the ledger, and the red/black conflicts held back."""
        goto(page, server.url, "/lists", "table.lists")
        shown = {r[0]: r for r in rows(page, "lists")}
        for code, active, held in scenario.query(
                "SELECT list_code, sum(active), sum(held) FROM cg_list_entries GROUP BY list_code"):
            assert shown[code][7] == str(active) and shown[code][8] == str(held)
        held = scenario.query("SELECT record_key, held_by FROM cg_list_entries WHERE held = 1")
        assert [(r[0], r[1]) for r in rows(page, "conflicts")] == held and held

    def test_sanctions(self, page: WebDriver, server: ServerThread, scenario: Scenario, shots: Path) -> None:
        """Every case in the ledger is listed; open, answered and overdue count them by state."""
        goto(page, server.url, "/sanctions", "table.cases")
        page.save_screenshot(str(shots / "sanctions.png"))
        cases = {json.loads(p)["case_id"] for (p,) in scenario.query(
            "SELECT payload FROM cg_records WHERE dataset = 'sanction_case'")}
        shown = rows(page, "cases")
        assert {r[0] for r in shown} == cases and cases
        counts = rows(page, "sanction-counts")[0]
        assert counts == [str(sum(1 for r in shown if r[3] == state)) for state in ("办理中", "已反馈", "已逾期")]
        assert counts[1] != "0"  # the demo's case was answered

    def test_certificates_and_calendar(self, page: WebDriver, server: ServerThread, scenario: Scenario) -> None:
        """The gateway's certificate with its days left; the calendar's cover."""
        from cryptography import x509

        goto(page, server.url, "/certificates", "table.certificates")
        cert = x509.load_pem_x509_certificate((scenario.workdir / "certs/rsa/gateway.crt").read_bytes())
        row = next(r for r in rows(page, "certificates") if r[0] == "targets.sandbox.envelope.cert")
        assert abs(int(row[4]) - (cert.not_valid_after_utc - dt.datetime.now(dt.UTC)).days) <= 1
        cover = rows(page, "calendar")[0]
        assert int(cover[2]) == (dt.date.fromisoformat(cover[1]) - china_today()).days

    def test_sync_log_filtered_by_target(self, page: WebDriver, server: ServerThread, scenario: Scenario,
                                         shots: Path) -> None:
        """Filtering the sync log by target shows exactly that target's events."""
        goto(page, server.url, "/log", "table.events")
        page.find_element(By.ID, "f-target").send_keys("sandbox")
        page.find_element(By.CSS_SELECTOR, "form.filters button").click()
        WebDriverWait(page, 15).until(ec.url_contains("target=sandbox"))
        wait(page, "table.events")
        page.save_screenshot(str(shots / "log.png"))
        shown = rows(page, "events")
        expected = scenario.query("SELECT count(*) FROM cg_events WHERE target = 'sandbox'")[0][0]
        assert len(shown) == expected > 0 and all(r[2] == "sandbox" for r in shown)

    def test_record_lineage(self, page: WebDriver, server: ServerThread, scenario: Scenario, shots: Path) -> None:
        """A natural person's penalty: source row, ID number masked, each target's state and receipt."""
        key, payload, version = next((k, json.loads(p), v) for k, p, v in scenario.query(
            "SELECT record_key, payload, version FROM cg_records WHERE dataset = 'penalty' ORDER BY id")
            if json.loads(p).get("id_no"))
        goto(page, server.url, "/record", "table.deliveries", {"dataset": "penalty", "key": key})
        page.save_screenshot(str(shots / "record.png"))
        fields = dict((r[0], r[1]) for r in rows(page, "payload"))
        assert fields["id_no"] == mask_id(payload["id_no"]) != payload["id_no"]
        source, source_key = scenario.query("SELECT source, source_key FROM cg_records WHERE dataset = 'penalty' "
                                            "AND record_key = ?", key)[0]
        assert rows(page, "origin")[0][:2] == [source, source_key]
        expected = {(t, state, receipt or "") for t, state, receipt in scenario.query(
            "SELECT o.target, o.state, r.receipt_id FROM cg_outbox o LEFT JOIN cg_receipts r ON r.batch_id = "
            "o.batch_id WHERE o.dataset = 'penalty' AND o.record_key = ? AND o.version = ?", key, version)}
        shown = {(r[1], r[2], r[3]) for r in rows(page, "deliveries") if r[0] == str(version)}
        assert shown == expected and any(state == "delivered" and receipt for _, state, receipt in expected)


class TestMaskingAndLanguage:
    def test_no_id_number_unmasked_on_any_page(self, page: WebDriver, server: ServerThread,
                                               scenario: Scenario) -> None:
        """No page, the lineage of every natural person's record included, shows an ID number as it is."""
        raw = scenario.raw_ids()
        assert raw
        keys = [k for k, p in scenario.query("SELECT record_key, payload FROM cg_records WHERE dataset = 'penalty'")
                if json.loads(p).get("id_no")]
        visits = [(p, None) for p in PAGES] + [("/record", {"dataset": "penalty", "key": k}) for k in keys]
        for path, query in visits:
            goto(page, server.url, path, "main", query)
            source = page.page_source
            assert not unmasked_ids(source), path
            assert not any(number in source for number in raw), path

    def test_english_switch(self, page: WebDriver, server: ServerThread, shots: Path) -> None:
        """The page is Chinese by default; the switch turns it English and back."""
        assert page.find_element(By.CSS_SELECTOR, "header nav a.active").text == "总览"
        page.find_element(By.ID, "lang").click()
        WebDriverWait(page, 15).until(
            lambda b: b.find_element(By.CSS_SELECTOR, "header nav a.active").text == "Overview")
        page.save_screenshot(str(shots / "overview-en.png"))
        page.find_element(By.ID, "lang").click()
        WebDriverWait(page, 15).until(lambda b: b.find_element(By.CSS_SELECTOR, "header nav a.active").text == "总览")
