"""The demo page in a real browser (Debian's Chromium via Playwright) against the real app."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from examples.homepage.sources import SECTION_NAMES
from playwright.sync_api import Browser, Page, sync_playwright

from http_servers import AppServer

CHROMIUM = "/usr/bin/chromium"
SECTIONS = SECTION_NAMES

# What the probe of this machine found Chromium needs as root in a closed network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} is missing: ./scripts/test installs Debian's chromium with apt")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context()
    page = context.new_page()
    yield page
    context.close()


def open_demo(page: Page, server: AppServer) -> None:
    page.goto(server.url + "/")
    page.wait_for_selector("body[data-loaded=true]", timeout=30_000)


def test_the_demo_page_streams_all_six_sections(
    page: Page, http_apps: dict[str, AppServer], tmp_path: Path
) -> None:
    """Opening the page streams every section into its card, with its cache status."""
    open_demo(page, http_apps["fastapi"])
    for name in SECTIONS:
        card = page.locator(f'[data-section="{name}"]')
        assert card.get_attribute("data-state") == "ready", name
        assert card.locator("li").count() >= 1, name
        assert card.locator(".badge").inner_text().split(" ")[0] in {"HIT", "MISS", "STALE"}
    assert page.locator("#summary").inner_text().startswith("streamed; first section after")
    page.screenshot(path=str(tmp_path / "demo.png"), full_page=True)


def test_the_demo_page_loads_one_batch(page: Page, http_apps: dict[str, AppServer]) -> None:
    """In batch mode the page makes one /homepage request and fills every card."""
    open_demo(page, http_apps["fastapi"])
    page.select_option("#mode", "batch")
    page.fill("#limit", "3")
    page.fill("#user", "u1")
    with page.expect_response(lambda r: "/homepage?" in r.url) as response:
        page.click("#signin button[type=submit]")
    page.wait_for_function("document.querySelectorAll('[data-state=ready]').length === 6")
    assert page.locator("#who").get_attribute("data-user") == "u1"
    assert response.value.status == 200
    assert "userId" not in response.value.url  # the identity is the session cookie
    assert response.value.headers["cache-control"] == "private, no-store"
    assert page.locator("#summary").inner_text().startswith("HTTP 200, one request")
    for name in SECTIONS:
        assert page.locator(f'[data-section="{name}"] li').count() <= 3


def test_a_failed_section_shows_its_error_and_the_rest_still_render(
    page: Page, faulty_http_apps: dict[str, AppServer]
) -> None:
    """A failing source marks its own card; the other sections still show their items."""
    open_demo(page, faulty_http_apps["fastapi"])
    failed = page.locator("[data-state=error]")
    assert failed.count() >= 1
    assert failed.first.locator(".error").inner_text() != ""
    assert page.locator("[data-state=ready]").count() >= 1
