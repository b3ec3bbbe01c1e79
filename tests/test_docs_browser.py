"""The OpenAPI page in a real browser with every request outside the service blocked (no internet).

Headless Chromium (Debian's) driven by Playwright loads /docs (Swagger UI) from the service alone and shows
the operations. Skipped when no Chromium executable or no playwright package exists;
never runs ``playwright install`` (it would download a browser).
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import pytest
from conftest import free_port

pytestmark = pytest.mark.browser


def _chromium() -> str | None:
    for candidate in (os.environ.get("CDS_TEST_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                      shutil.which("chromium-browser"), shutil.which("google-chrome")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


CHROMIUM = _chromium()
if CHROMIUM is None:
    pytest.skip("no Chromium executable (apt-get install chromium, or set CDS_TEST_CHROMIUM)",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
OPERATIONS = {("GET", "/cds-services"), ("POST", "/cds-services/{service_id}"),
              ("POST", "/cds-services/{service_id}/feedback"), ("GET", "/health"), ("GET", "/ready")}


@pytest.fixture(scope="module")
def base_url(tmp_path_factory):
    import uvicorn

    from cds_service.app import create_app
    from cds_service.config import Settings

    settings = Settings(data_dir=tmp_path_factory.mktemp("data"), trusted_issuers={}, redis_url=None,
                        database_url=None, log_level="WARNING")
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning",
                                           access_log=False, lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail("the service did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def offline_page(base_url):
    """A page whose every request to anywhere but the service is aborted and recorded."""
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 1000})
        blocked: list[str] = []

        def only_the_service(route):
            if route.request.url.startswith(base_url + "/"):
                route.continue_()
            else:
                blocked.append(route.request.url)
                route.abort()

        context.route("**/*", only_the_service)
        page = context.new_page()
        page.set_default_timeout(20_000)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.blocked, page.errors = blocked, errors
        yield page
        context.close()
        browser.close()


def test_swagger_ui_shows_the_operations_offline(offline_page, base_url):
    page = offline_page
    page.goto(base_url + "/docs")
    page.wait_for_selector(".opblock-summary-path")
    shown = set(zip(page.locator(".opblock-summary-method").all_inner_texts(),
                    page.locator(".opblock-summary-path").evaluate_all(
                        "els => els.map(e => e.getAttribute('data-path'))"), strict=True))
    assert OPERATIONS <= shown, shown
    assert page.locator(".info .title").inner_text().startswith("Neurosarcoidosis CDS Hooks service")
    # the hook call: its service id is a choice among the real services, its errors are OperationOutcomes
    page.locator('.opblock-post:has([data-path="/cds-services/{service_id}"]) .opblock-summary').first.click()
    operation = page.locator('.opblock-post.is-open').first
    # the block renders after the click: wait for its parts instead of reading them at once
    sync_api.expect(operation.locator("select option", has_text="neurosarcoidosis-order-select")).to_have_count(1)
    sync_api.expect(operation.locator(".responses-table").first).to_contain_text("412")
    responses = operation.locator(".responses-table").first.inner_text()
    assert "412" in responses and "422" not in responses and "OperationOutcome" in page.content()
    assert page.locator(".btn.authorize").count() == 1  # the bearer JWT scheme
    assert page.blocked == [] and page.errors == []


def test_there_is_no_redoc_page_that_would_reach_a_cdn(base_url):
    import httpx

    assert httpx.get(base_url + "/redoc", timeout=10).status_code == 404
