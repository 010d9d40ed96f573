"""/ops/ and the admin driven in a real headless browser (Debian's chromium + chromedriver via selenium).

Every test fails on a JavaScript error or a console error (the browser log at SEVERE), and on any request to
anything but the live server (the performance log's network events). Screenshots land in docs/ops/.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client, override_settings
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from apps.endorsements.models import Endorsement
from apps.ops.tests.conftest import ops_world  # noqa: F401 - the fixture, shared with the client tests

pytestmark = pytest.mark.django_db(transaction=True)
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SCREENSHOTS = Path(settings.BASE_DIR) / "docs" / "ops"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1366,900",
)


@pytest.fixture
def browser(live_server) -> Iterator[webdriver.Chrome]:
    for binary in (CHROMIUM, CHROMEDRIVER):
        assert shutil.which(binary), f"{binary} is missing: .ci/run installs Debian's chromium and chromium-driver"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.implicitly_wait(0)
    try:
        yield driver
        assert_clean(driver, live_server.url)
    finally:
        driver.quit()


def assert_clean(driver: webdriver.Chrome, origin: str) -> None:
    """No JavaScript/console error, no request off the machine, since the last call."""
    errors = [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == [], errors
    requested = set()
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            requested.add(message["params"]["request"]["url"])
    foreign = sorted(u for u in requested if not u.startswith((origin, "data:", "about:", "blob:")))
    assert foreign == [], f"requests off the machine: {foreign}"
    assert requested, "the performance log recorded no request at all: the check above would prove nothing"


def log_in(driver: webdriver.Chrome, base: str, username: str, password: str, next_path: str) -> None:
    driver.get(f"{base}/admin/login/?next={next_path}")
    driver.find_element(By.ID, "id_username").send_keys(username)
    driver.find_element(By.ID, "id_password").send_keys(password)
    driver.find_element(By.CSS_SELECTOR, "input[type=submit]").click()


def full_page_screenshot(driver: webdriver.Chrome, name: str) -> None:
    """The whole page at laptop width (1366 px), saved under docs/ops/."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1366, max(900, int(height) + 40))
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(SCREENSHOTS / name))
    driver.set_window_size(1366, 900)


def text(driver: webdriver.Chrome, element_id: str) -> str:
    """The element's text, read in one script call (the panels are swapped while the page refreshes)."""
    value = driver.execute_script(
        "var e = document.getElementById(arguments[0]); return e ? e.textContent.trim() : null;", element_id
    )
    assert value is not None, f"no element #{element_id}"
    return str(value)


def attribute(driver: webdriver.Chrome, element_id: str, name: str) -> str | None:
    return driver.execute_script(  # type: ignore[no-any-return]
        "var e = document.getElementById(arguments[0]); return e ? e.getAttribute(arguments[1]) : null;",
        element_id,
        name,
    )


@override_settings(OPS_REFRESH_SECONDS=1)
def test_operator_sees_every_panel_follows_failed_and_watches_a_batch(browser, live_server, ops_world):  # noqa: F811
    staff = ops_world["staff"]
    staff.is_superuser = True  # the FAILED link opens the endorsement changelist
    staff.save()
    log_in(browser, live_server.url, "operator", "op-pass-123", "/ops/")
    WebDriverWait(browser, 10).until(ec.presence_of_element_located((By.ID, "panels")))
    assert browser.current_url == f"{live_server.url}/ops/"

    # Each panel, with the figures of the seeded data.
    assert text(browser, "outbox-pending") == "3"
    assert text(browser, "outbox-dead") == "1"
    assert text(browser, "attention-FAILED") == "2"
    assert text(browser, "attention-ON_HOLD_FUNDS") == "1"
    assert text(browser, "attention-ON_HOLD_REVIEW") == "1"
    assert text(browser, "funnel-RECEIVED") == "4"
    assert text(browser, "funnel-ACTIVE") == "3"
    assert text(browser, "chart-total") == "11"
    assert browser.execute_script("return document.querySelectorAll('#panel-chart rect.bar-fill').length") == 24
    assert text(browser, "low-balance-count") == "1"
    assert text(browser, f"low-balance-{ops_world['lean'].pk}") == "₹500.00"
    assert text(browser, "circuit-sandbox-rest") == "closed"
    assert text(browser, "job-ledger.verify") == "failed"
    assert text(browser, "queue-endorsements") == "0"
    assert text(browser, "conflicts-count") == "1"
    bar = f"batch-{ops_world['batch'].pk}"
    assert attribute(browser, bar, "value") == "25.00"
    full_page_screenshot(browser, "dashboard.png")

    # The page refreshes itself: two more rows of the batch reach ACTIVE and the bar moves, no reload.
    marker = browser.execute_script("window.__same_page = true; return window.__same_page;")
    assert marker is True
    rows = ops_world["batch_rows"]
    Endorsement.objects.filter(pk__in=[rows[0].pk, rows[1].pk]).update(status="ACTIVE")
    WebDriverWait(browser, 10).until(lambda d: attribute(d, bar, "value") == "75.00")
    assert browser.execute_script("return window.__same_page === true;")
    # One snapshot per refresh: the funnel moved with the bar.
    assert (
        browser.execute_script(
            "return document.getElementById('funnel-ACTIVE').textContent.trim() + '/' + "
            "document.getElementById(arguments[0]).getAttribute('value')",
            bar,
        )
        == "5/75.00"
    )
    full_page_screenshot(browser, "dashboard-batch-progress.png")

    # FAILED opens the admin list filtered to the two FAILED endorsements.
    browser.find_element(By.ID, "attention-FAILED").click()
    WebDriverWait(browser, 10).until(ec.url_contains("status__exact=FAILED"))
    result_rows = browser.find_elements(By.CSS_SELECTOR, "#result_list tbody tr")
    assert len(result_rows) == 2
    assert all("failed" in row.text.lower() for row in result_rows)
    assert all("₹2,071.23" in row.text for row in result_rows)  # money in rupees, never paise
    full_page_screenshot(browser, "admin-failed-endorsements.png")

    # The endorsement page: money in rupees, its history, ledger and insurer-exchange sections together.
    result_rows[0].find_element(By.CSS_SELECTOR, "th a").click()
    WebDriverWait(browser, 10).until(ec.url_contains("/change/"))
    page = browser.find_element(By.ID, "content").text
    assert "₹2,071.23" in page
    assert "207123" not in page
    for section in ("Ledger entries and holds of this endorsement", "Insurer exchanges of this endorsement"):
        assert section in page
    full_page_screenshot(browser, "admin-endorsement.png")


def test_anonymous_and_non_staff_are_redirected_to_the_login(browser, live_server, django_user_model):
    browser.get(f"{live_server.url}/ops/")
    assert browser.current_url == f"{live_server.url}/admin/login/?next=/ops/"
    django_user_model.objects.create_user("clerk", password="pw-12345678", is_staff=False)
    client = Client()
    assert client.login(username="clerk", password="pw-12345678")
    browser.add_cookie(
        {"name": settings.SESSION_COOKIE_NAME, "value": client.cookies[settings.SESSION_COOKIE_NAME].value}
    )
    browser.get(f"{live_server.url}/ops/")
    assert browser.current_url == f"{live_server.url}/admin/login/?next=/ops/"
    assert browser.find_elements(By.ID, "panels") == []


@pytest.fixture
def asgi_server(transactional_db) -> Iterator[str]:
    """The whole app under uvicorn, as `make run` serves it (ADR 0050), in a thread of this process (so it sees
    the test database and settings), static files served as the live server serves them; its base URL. A hub of
    its own, stopped after the test."""

    from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

    from apps.common.asgi import BodyLimitASGIHandler
    from apps.common.testing import uvicorn_in_thread
    from apps.live import hub as hub_module

    previous, hub_module.hub = hub_module.hub, hub_module.EventHub()
    app = ASGIStaticFilesHandler(BodyLimitASGIHandler())  # what config.asgi serves, plus the static files
    try:
        with uvicorn_in_thread(app, timeout_graceful_shutdown=1) as port:
            yield f"http://127.0.0.1:{port}"
    finally:
        hub_module.hub.stop()
        hub_module.hub = previous


@pytest.fixture
def asgi_browser(asgi_server) -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.implicitly_wait(0)
    try:
        yield driver
        assert_clean(driver, asgi_server)
    finally:
        driver.quit()


@override_settings(OPS_REFRESH_SECONDS=600)  # no poll during the test: only the live feed can refresh the panels
def test_under_asgi_the_dashboard_lists_every_partners_events_live_and_refreshes_on_them(
    asgi_browser, asgi_server, django_user_model
):
    from apps.live.tests.test_stream import STATUSES, record
    from apps.partners.tests.factories import PartnerFactory

    django_user_model.objects.create_user("operator", password="op-pass-123", is_staff=True)
    acme, other = PartnerFactory(name="acme"), PartnerFactory(name="other")
    log_in(asgi_browser, asgi_server, "operator", "op-pass-123", "/ops/")
    WebDriverWait(asgi_browser, 10).until(ec.presence_of_element_located((By.ID, "panels")))
    WebDriverWait(asgi_browser, 10).until(lambda d: text(d, "live-status") == "live")
    assert attribute(asgi_browser, "panels", "data-refreshed") is None

    record(acme.pk, None, STATUSES[:2], oid="a-1")
    record(other.pk, None, STATUSES[:1], oid="o-1")

    WebDriverWait(asgi_browser, 10).until(lambda d: attribute(d, "live-feed", "data-received") == "3")
    items = asgi_browser.execute_script(
        "return Array.prototype.map.call(document.querySelectorAll('#live-events li'), function (li) {"
        " return li.textContent; });"
    )
    assert [item.split(" · ")[1:3] for item in items] == [  # newest first
        [STATUSES[0], f"partner {other.pk}"],
        [STATUSES[1], f"partner {acme.pk}"],
        [STATUSES[0], f"partner {acme.pk}"],
    ]
    # The events refreshed the panels (the poll is 10 minutes away), once for the burst or twice, not per event.
    WebDriverWait(asgi_browser, 10).until(lambda d: attribute(d, "panels", "data-refreshed") is not None)
    full_page_screenshot(asgi_browser, "dashboard-live-feed.png")
