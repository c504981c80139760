"""The demo page in a real browser (Debian's Chromium via Playwright) against the real apps.

The page races three ways of loading the homepage side by side (six legacy
calls in sequence, one ``/homepage`` batch, the ``/homepage/stream``) and
draws each as an SVG waterfall of the timings Chromium measured. The tests
run on servers with the demo's fault switch on (``demo_http_apps``), each
against FastAPI and Django (``demo_app``, which mends every fault before
and after). Every wait
is bounded. Screenshots are written to the test's ``tmp_path`` and their
paths printed (``pytest -s`` shows them).
"""

from __future__ import annotations

import itertools
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pytest
from examples.homepage.sources import SECTION_NAMES
from playwright.sync_api import Browser, Page, Request, sync_playwright

from http_servers import AppServer

pytestmark = [pytest.mark.http, pytest.mark.mongo]

CHROMIUM: Final = "/usr/bin/chromium"
SECTIONS: Final = SECTION_NAMES
#: Each lane and how many requests it makes.
LANES: Final = {"legacy": 6, "batch": 1, "stream": 1}
#: A race, even with a hanging section (the legacy call gives up after 5 s), ends by then.
RACE_TIMEOUT_MS: Final = 30_000
#: The seed's per-call network latency, and its query time per section (ms).
SEED_LATENCY_MS: Final = 300
SEED_QUERY_MS: Final = {
    "featuredProducts": 80,
    "newArrivals": 60,
    "featuredStores": 70,
    "featuredEvents": 50,
    "featuredOffers": 65,
    "flashSales": 75,
}

# What the probe of this machine found Chromium needs as root in a closed network.
CHROMIUM_ARGS: Final = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

#: Records when each card leaves its skeleton, per lane, by the page's own clock.
WATCH_CARDS: Final = """() => {
  window.shown = [];
  new MutationObserver((records) => {
    for (const record of records) {
      const card = record.target;
      if (!card.matches(".card") || card.dataset.state === "pending") continue;
      const lane = card.closest("[data-lane]").dataset.lane;
      window.shown.push({ lane, section: card.dataset.section, t: performance.now() });
    }
  }).observe(document.getElementById("lanes"),
             { subtree: true, attributes: true, attributeFilter: ["data-state"] });
}"""


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
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(RACE_TIMEOUT_MS)
    yield page
    context.close()


# -- helpers -----------------------------------------------------------------


def races(page: Page) -> int:
    """How many races the page has finished."""
    return int(page.evaluate("Number(document.body.dataset.races ?? 0)"))


def wait_for_race(page: Page, *, after: int = 0) -> None:
    """Wait (bounded) until the page has finished a race after the ``after``-th."""
    page.wait_for_function(
        f"Number(document.body.dataset.races ?? 0) > {after}", timeout=RACE_TIMEOUT_MS
    )


def open_demo(page: Page, server: AppServer, query: str = "") -> None:
    page.goto(server.url + "/" + query)
    wait_for_race(page)


def lane_times(page: Page, lane: str) -> tuple[float, float]:
    """A lane's time to its first section and to the full page (ms since the race began)."""
    root = page.locator(f'[data-lane="{lane}"]')
    first, full = root.get_attribute("data-first"), root.get_attribute("data-full")
    assert first is not None, f"{lane}: no section was shown"
    assert full is not None, f"{lane}: the page was not completed"
    return float(first), float(full)


def requests_of(page: Page, lane: str) -> list[dict[str, Any]]:
    """The waterfall's request bars of a lane: url, timing source, start and end (ms)."""
    result: list[dict[str, Any]] = page.eval_on_selector_all(
        f'[data-lane="{lane}"] svg.waterfall g.request',
        """bars => bars.map(g => ({
            url: g.dataset.url, timing: g.dataset.timing,
            start: Number(g.dataset.start), end: Number(g.dataset.end),
            rects: [...g.querySelectorAll("rect")].map(r => r.getAttribute("class")),
        }))""",
    )
    return result


def screenshot(page: Page, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=True)
    print(f"\nscreenshot: {path}")
    return path


def card_state(page: Page, lane: str, section: str) -> str | None:
    return page.locator(f'[data-lane="{lane}"] [data-section="{section}"]').get_attribute(
        "data-state"
    )


# -- the race ----------------------------------------------------------------------


def test_the_three_lanes_render_with_data_and_a_waterfall(
    page: Page, demo_app: AppServer, tmp_path: Path
) -> None:
    """Six calls in sequence, one batch, one stream: every card filled, every request drawn."""
    sent: list[Request] = []
    page.on("request", lambda request: sent.append(request))
    open_demo(page, demo_app)
    for lane, count in LANES.items():
        root = page.locator(f'[data-lane="{lane}"]')
        assert root.get_attribute("data-state") == "done", lane
        for name in SECTIONS:
            card = root.locator(f'[data-section="{name}"]')
            assert card.get_attribute("data-state") == "ready", (lane, name)
            assert card.locator("li").count() >= 1, (lane, name)
            badge = card.locator(".badge").inner_text()
            if lane == "legacy":
                assert badge.startswith("no cache"), badge  # the legacy calls have no cache
            else:
                assert badge.split(" ")[0] in {"HIT", "STALE", "MISS"}, badge
        bars = requests_of(page, lane)
        assert len(bars) == count, (lane, bars)
        for bar in bars:
            assert bar["timing"] == "resource-timing", bar  # the browser's own measurements
            assert "bar" in bar["rects"], bar
            assert len(bar["rects"]) >= 2, bar  # the whole request and its phases
            assert 0 <= bar["start"] < bar["end"], bar
        first, full = lane_times(page, lane)
        assert 0 < first <= full, (lane, first, full)
        assert root.locator("svg.waterfall .marker.full line").count() == 1
    legacy = requests_of(page, "legacy")
    assert [b["url"].split("?")[0] for b in legacy] == [
        "/products/featured",
        "/products/new-arrivals",
        "/stores/featured",
        "/events/featured",
        "/offers",
        "/offers",
    ]
    for before, after in itertools.pairwise(legacy):
        assert after["start"] >= before["end"] - 1, "the legacy calls are made one after another"
    for lane in ("batch", "stream"):  # one request, every section on its own row
        arrivals = page.locator(f'[data-lane="{lane}"] svg.waterfall g.arrival circle')
        assert arrivals.count() == len(SECTIONS)
    # The simulation is off unless asked for: no request carried its header.
    race_requests = [r for r in sent if r.resource_type == "fetch"]
    assert race_requests
    assert all("x-simulated-latency-ms" not in r.headers for r in race_requests)
    assert page.locator("#sim-tag").is_hidden()
    assert page.locator("#summary").inner_text().startswith("Batch: full page in")
    screenshot(page, tmp_path, f"demo-{demo_app.framework}.png")


@pytest.mark.parametrize(("fault", "code"), [("error", "SOURCE_ERROR"), ("hang", "TIMEOUT_ERROR")])
def test_a_failing_section_shows_its_error_and_every_other_card_renders(
    page: Page, demo_app: AppServer, fault: str, code: str, tmp_path: Path
) -> None:
    """The fault switch breaks one section: its card says why in every lane; the rest render."""
    open_demo(page, demo_app)
    before = races(page)
    page.select_option("#fault-section", "featuredStores")
    page.select_option("#fault-kind", fault)  # switched on the server, then a new race
    wait_for_race(page, after=before)
    for lane in LANES:
        root = page.locator(f'[data-lane="{lane}"]')
        broken = root.locator('[data-section="featuredStores"]')
        assert broken.get_attribute("data-state") == "error", lane
        assert code in broken.locator(".error").inner_text(), lane
        for name in SECTIONS:
            if name != "featuredStores":
                assert card_state(page, lane, name) == "ready", (lane, name)
                assert root.locator(f'[data-section="{name}"] li').count() >= 1, (lane, name)
    # The legacy call answered 503, drawn as a failed request; the page itself was a 200.
    failed = page.locator('[data-lane="legacy"] g.request.failed')
    assert failed.count() == 1
    assert "/stores/featured" in (failed.get_attribute("data-url") or "")
    assert page.locator('[data-lane="batch"] g.request.failed').count() == 0
    page.wait_for_function(
        "document.getElementById('fault-status').textContent.includes('featuredStores')"
    )
    if fault == "error":
        screenshot(page, tmp_path, f"demo-failing-{demo_app.framework}.png")


def test_the_streams_first_section_arrives_before_the_batch_completes(
    page: Page, demo_app: AppServer, tmp_path: Path
) -> None:
    """Under the seed's latencies (300 ms a call, 50 to 80 ms a query), the stream shows first.

    The simulation adds 300 ms to every request; the seed's query times are
    put on the six sources through the fault switch (which drops their cached
    entries, so the page is cold, as the seed measured it). The batch answers
    after the slowest section (80 ms), the stream's first line comes after the
    fastest (50 ms).
    """
    sent: list[Request] = []
    page.on("request", lambda request: sent.append(request))
    open_demo(page, demo_app, f"?latency={SEED_LATENCY_MS}")  # the simulation on from the start
    assert page.locator("#sim-tag").is_visible()
    page.evaluate(WATCH_CARDS)
    sent.clear()
    before = races(page)
    page.click("#fault-seed")
    # Skeletons while the lanes load.
    page.wait_for_selector('[data-lane="batch"] .card[data-state=pending] .skeleton')
    wait_for_race(page, after=before)

    shown: list[dict[str, Any]] = page.evaluate("window.shown")
    stream_first = min(e["t"] for e in shown if e["lane"] == "stream")
    batch_first = min(e["t"] for e in shown if e["lane"] == "batch")
    assert stream_first < batch_first, "the stream showed a section before the batch answered"
    assert len([e for e in shown if e["lane"] == "batch"]) == len(SECTIONS)
    # The page's own figures say the same.
    stream = lane_times(page, "stream")
    batch = lane_times(page, "batch")
    legacy = lane_times(page, "legacy")
    assert stream[0] < batch[1], (stream, batch)
    print(f"\nstream's first section {stream[0]:.0f} ms, batch complete {batch[1]:.0f} ms")
    assert batch[0] == batch[1]  # one answer: first section and full page at once
    assert batch[1] >= SEED_LATENCY_MS + max(SEED_QUERY_MS.values())
    # Six calls one after another: each pays the latency and its query.
    assert legacy[1] >= len(SECTIONS) * SEED_LATENCY_MS + sum(SEED_QUERY_MS.values())
    assert legacy[1] > 4 * batch[1], (legacy, batch)
    # Every request of the race asked for the simulated latency, and every bar shows it.
    race_requests = [r for r in sent if r.resource_type == "fetch" and "/demo/" not in r.url]
    assert len(race_requests) == sum(LANES.values())
    assert {r.headers.get("x-simulated-latency-ms") for r in race_requests} == {"300"}
    for lane in LANES:
        for bar in requests_of(page, lane):
            assert "sim" in bar["rects"], (lane, bar)
    assert "SIMULATION" in page.locator("#summary").inner_text()
    screenshot(page, tmp_path, f"demo-seed-latencies-{demo_app.framework}.png")


# -- sign-in and the switch's absence ---------------------------------------------


def test_signing_in_reloads_the_race_for_that_user(
    page: Page, demo_http_apps: dict[str, AppServer]
) -> None:
    """The sign-in field sets the session cookie; the batch page is then private."""
    open_demo(page, demo_http_apps["fastapi"])
    page.fill("#user", "u1")
    before = races(page)
    with page.expect_response(lambda r: "/homepage?" in r.url) as response:
        page.click("#signin button[type=submit]")
    wait_for_race(page, after=before)
    assert page.locator("#who").get_attribute("data-user") == "u1"
    assert response.value.status == 200
    assert "userId" not in response.value.url  # the identity is the session cookie
    assert response.value.headers["cache-control"] == "private, no-store"
    for lane in LANES:
        assert card_state(page, lane, "featuredProducts") == "ready"
    before = races(page)
    page.click("#signout")
    wait_for_race(page, after=before)
    assert page.locator("#who").get_attribute("data-user") == ""


def test_without_the_switch_the_fault_control_is_off(
    page: Page, http_apps: dict[str, AppServer]
) -> None:
    """On a server without BATCHPAGE_DEMO_FAULTS the page races on and says the switch is off."""
    open_demo(page, http_apps["django"])
    assert page.locator("#fault-kind").is_disabled()
    assert "BATCHPAGE_DEMO_FAULTS=1" in page.locator("#fault-status").inner_text()
    for lane in LANES:
        assert page.locator(f'[data-lane="{lane}"]').get_attribute("data-state") == "done"
