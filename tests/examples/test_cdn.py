"""A CDN in front, for real: Debian's varnishd with the shipped VCL before the FastAPI app.

``examples/varnish/homepage.vcl`` runs unchanged but for its backend's port
(``tests/varnish_server.py``), in front of the FastAPI example under
uvicorn over the session's seeded MongoDB (``tests/http_servers.py``), all
on loopback. Clients speak HTTP to Varnish; nothing is a mock.

What the origin did is read from the origin itself: uvicorn's access log
(``AppServer.requests``) lists every request it answered, with its status,
so "the origin saw one request" is the app's own account, exact per URL
and method, and shows which of Varnish's refreshes were conditional (304).
(Varnish's counters, ``varnishstat``, are summed from its worker threads
lazily and may lag a request; the log does not.) Varnish's ``X-Cache``
header (set by the VCL) and ``Age`` say what the cache did.

The app is started with a short ``max-age`` and ``stale-while-revalidate``
(``BATCHPAGE_CDN_MAX_AGE``, ``BATCHPAGE_CDN_SWR``) so that freshness and
grace run out within a test, and with one section slowed down
(``featuredEvents=delay:600ms``, never cached by the app), so that every
page the origin computes takes at least :data:`DELAY`: an answer faster
than that did not wait for the origin, and a stream's last section comes
:data:`DELAY` after its first. Each test asks for URLs of its own (a
``limit`` no other test uses), so tests share the servers, not objects.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Iterator
from typing import Any, Final

import attrs
import httpx
import pytest
from examples.service.settings import Settings, SettingsError

from http_servers import AppServer, app_environment, running_servers, sign_in
from mongo_server import SeededMongo
from processes import alive, descendants, process
from varnish_server import HOMEPAGE_VCL, VarnishServer, with_backend_port

pytestmark = [pytest.mark.http, pytest.mark.mongo]

#: The origin's max-age and stale-while-revalidate of public answers, in seconds.
MAX_AGE: Final = 3
SWR: Final = 3
#: featuredEvents' delay at the origin: every page the app computes takes at least this long.
DELAY: Final = 0.6
PUBLIC: Final = f"public, max-age={MAX_AGE}, stale-while-revalidate={SWR}"
PERSONAL: Final = "private, no-store"

_limits = itertools.count(1)


def new_limit() -> int:
    """A ``limit`` no other test of this module asks for: URLs of the test's own."""
    limit = next(_limits)
    assert limit <= 50, "more URLs than limits"
    return limit


@attrs.frozen
class Cdn:
    origin: AppServer
    varnish: VarnishServer

    def client(self) -> httpx.Client:
        """A client of Varnish (each has its own cookie jar)."""
        return self.varnish.client()

    def origin_client(self) -> httpx.Client:
        """A client of the app itself, for its answers without a cache between."""
        return self.origin.client()

    def origin_saw(self, target: str, method: str = "GET") -> list[int]:
        """The statuses the origin answered ``method target`` with, in order."""
        return [s for m, t, s in self.origin.requests() if (m, t) == (method, target)]


@pytest.fixture(scope="module")
def cdn(homepage_mongo: SeededMongo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cdn]:
    directory = tmp_path_factory.mktemp("cdn")
    env = app_environment(
        homepage_mongo,
        BATCHPAGE_CDN_MAX_AGE=str(MAX_AGE),
        BATCHPAGE_CDN_SWR=str(SWR),
        BATCHPAGE_EXAMPLE_FAULTS=f"featuredEvents=delay:{DELAY * 1000:.0f}ms",
        # The delay must fit: a page is whole (public), never partial.
        BATCHPAGE_SECTION_TIMEOUT="5",
        BATCHPAGE_PAGE_TIMEOUT="8",
    )
    origin = AppServer("fastapi", env, directory, label="cdn-origin", access_log=True)
    with running_servers([origin]):
        varnish = VarnishServer(directory, origin.port)
        varnish.start()
        try:
            varnish.wait_until_ready()
            yield Cdn(origin, varnish)
        finally:
            varnish.stop()


def eventually(predicate: Callable[[], bool], *, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"still false after {timeout:g} s")
        time.sleep(0.02)


def sleep_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.monotonic()))


def featured_products(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    return response.json()["sections"]["featuredProducts"]


def cached_object(response: httpx.Response) -> str:
    """The id of the backend fetch that stored the object a hit was served from."""
    ids = response.headers["X-Varnish"].split()
    assert len(ids) == 2, f"not a hit: X-Varnish {ids}"
    return ids[1]


# -- (a) anonymous pages are served from Varnish within max-age ---------------


def test_an_anonymous_page_is_served_by_varnish_within_its_max_age(cdn: Cdn) -> None:
    url = f"/homepage?limit={new_limit()}"
    with cdn.client() as client:
        first = client.get(url)
        filled = time.monotonic()
        assert first.status_code == 200, first.text
        assert first.headers["Cache-Control"] == PUBLIC
        assert (first.headers["X-Cache"], first.headers["Age"]) == ("MISS", "0")

        time.sleep(1.1)
        # Cookies that identify nobody (analytics, consent) are stripped: still the shared page.
        second = client.get(url, headers={"Cookie": "_ga=GA1.2.3.4; consent=all"})
        assert time.monotonic() - filled < MAX_AGE, "too slow to test freshness"
        assert second.headers["X-Cache"] == "HIT"
        assert 1 <= int(second.headers["Age"]) < MAX_AGE  # the object ages in the cache
        assert second.content == first.content  # the very bytes, metadata included

    assert cdn.origin_saw(url) == [200]  # one request reached the app


def test_campaign_parameters_and_parameter_order_share_one_object(cdn: Cdn) -> None:
    limit = new_limit()
    with cdn.client() as client:
        first = client.get(f"/homepage?limit={limit}")
        assert first.headers["X-Cache"] == "MISS"
        for variant in (
            f"/homepage?utm_source=mail&limit={limit}&gclid=abc",
            f"/homepage?limit={limit}&utm_campaign=spring&utm_medium=email",
        ):
            again = client.get(variant)
            assert again.headers["X-Cache"] == "HIT", variant
            assert again.content == first.content
    assert cdn.origin_saw(f"/homepage?limit={limit}") == [200]
    assert not [t for _, t, _ in cdn.origin.requests() if "utm_" in t or "gclid" in t]


# -- (b) stale-while-revalidate is Varnish's grace ---------------------------


def test_stale_while_revalidate_is_served_as_grace_then_ends(cdn: Cdn) -> None:
    in_grace = f"/homepage?limit={new_limit()}"
    past_grace = f"/homepage?limit={new_limit()}"
    with cdn.client() as client:
        kept = client.get(past_grace)
        kept_at = time.monotonic()
        first = client.get(in_grace)
        filled_at = time.monotonic()
        assert (kept.headers["X-Cache"], first.headers["X-Cache"]) == ("MISS", "MISS")

        # Past max-age, within stale-while-revalidate: the stale object at once...
        sleep_until(filled_at + MAX_AGE + 0.5)
        start = time.monotonic()
        stale = client.get(in_grace)
        took = time.monotonic() - start
        assert stale.headers["X-Cache"] == "STALE"
        assert MAX_AGE <= int(stale.headers["Age"]) < MAX_AGE + SWR
        assert stale.content == first.content
        assert took < DELAY  # it did not wait for the origin, which takes DELAY at least

        # ...while one background fetch revalidates it: Varnish sends the object's ETag,
        # the app answers 304 (nothing changed), and the object is fresh again.
        eventually(lambda: cdn.origin_saw(in_grace) == [200, 304])
        fresh = client.get(in_grace)
        assert fresh.headers["X-Cache"] == "HIT"
        assert int(fresh.headers["Age"]) < MAX_AGE
        assert fresh.headers["ETag"] == first.headers["ETag"]
        assert cached_object(fresh) != cached_object(stale)  # a new object

        # Past max-age + stale-while-revalidate, nothing stale is served: the request waits
        # for the origin (a conditional fetch, as the object is kept for its ETag).
        sleep_until(kept_at + MAX_AGE + SWR + 0.5)
        start = time.monotonic()
        late = client.get(past_grace)
        assert time.monotonic() - start >= DELAY
        assert late.status_code == 200
        assert late.headers["X-Cache"] == "MISS"
        assert late.content == kept.content
    assert cdn.origin_saw(past_grace) == [200, 304]
    assert cdn.origin_saw(in_grace) == [200, 304]


# -- (c) personal pages are never stored or shared ---------------------------


def test_personal_pages_are_never_stored_nor_served_to_anyone_else(cdn: Cdn) -> None:
    url = f"/homepage?limit={new_limit()}&sections=featuredProducts,newArrivals"
    # The origin's own answer for each identity, with no cache between.
    truth: dict[str | None, Any] = {}
    with cdn.origin_client() as origin:
        truth[None] = featured_products(origin.get(url))
        for user in ["u1", *(f"u{n}" for n in range(3, 13))]:
            sign_in(origin, user)
            truth[user] = featured_products(origin.get(url))
    # Another user with favourites of their own: a page neither anonymous nor u1's.
    taken = (truth[None], truth["u1"])
    other = next(u for u in truth if u not in (None, "u1") and truth[u] not in taken)
    assert truth["u1"] != truth[None]  # u1 has favourites: the page really is personal

    with cdn.client() as u1, cdn.client() as anonymous, cdn.client() as someone:
        sign_in(u1, "u1")  # POST /session through Varnish: passed, its Set-Cookie kept
        mine = u1.get(url)
        assert mine.headers["Cache-Control"] == PERSONAL
        assert mine.headers["X-Cache"] == "PASS"
        assert featured_products(mine) == truth["u1"]

        # Nothing of u1's was stored: the anonymous visitor misses and gets the shared page.
        theirs = anonymous.get(url)
        assert theirs.headers["X-Cache"] == "MISS"
        assert theirs.headers["Cache-Control"] == PUBLIC
        assert featured_products(theirs) == truth[None]
        assert anonymous.get(url).headers["X-Cache"] == "HIT"

        # A signed-in user never gets the stored anonymous page, nor u1's.
        sign_in(someone, other)
        for client, user in ((someone, other), (u1, "u1")):
            page = client.get(url)
            assert page.headers["X-Cache"] == "PASS"
            assert featured_products(page) == truth[user], user

        # A forged session cookie is passed too (only the app can check its signature),
        # and the app answers it as anonymous.
        forged = anonymous.get(url, headers={"Cookie": "batchpage_session=forged; _ga=1"})
        assert forged.headers["X-Cache"] == "PASS"
        assert featured_products(forged) == truth[None]

        # Signed out (DELETE /session through Varnish), u1 shares the anonymous page again.
        sign_in(u1, None)
        back = u1.get(url)
        assert back.headers["X-Cache"] == "HIT"
        assert featured_products(back) == truth[None]

    assert cdn.origin_saw("/session", "POST").count(200) >= 2
    assert cdn.origin_saw("/session", "DELETE") == [200]


# -- (d) If-None-Match: 304 through Varnish ---------------------------------


def test_if_none_match_gives_304_through_varnish(cdn: Cdn) -> None:
    url = f"/homepage?limit={new_limit()}"
    with cdn.client() as client:
        page = client.get(url)
        etag = page.headers["ETag"]
        assert etag.startswith('W/"')

        # Anonymous: Varnish answers the revalidation itself, from the stored object.
        for header in (etag, f'W/"other", {etag}', "*"):
            not_modified = client.get(url, headers={"If-None-Match": header})
            assert not_modified.status_code == 304, header
            assert not_modified.content == b""
            assert not_modified.headers["ETag"] == etag
            assert not_modified.headers["X-Cache"] == "HIT"
        changed = client.get(url, headers={"If-None-Match": 'W/"older"'})
        assert changed.status_code == 200
        assert changed.content == page.content
    assert cdn.origin_saw(url) == [200]

    # Signed in: passed to the app, which answers the 304 itself.
    with cdn.client() as u1:
        sign_in(u1, "u1")
        mine = u1.get(url)
        assert mine.headers["X-Cache"] == "PASS"
        again = u1.get(url, headers={"If-None-Match": mine.headers["ETag"]})
        assert again.status_code == 304
        assert again.headers["X-Cache"] == "PASS"
        assert again.headers["Cache-Control"] == PERSONAL
    assert cdn.origin_saw(url)[-2:] == [200, 304]


# -- (e) the legacy endpoints ------------------------------------------------


def legacy_urls(limit: int) -> list[str]:
    # Parameters in sorted order: the VCL sorts them, and the origin's log shows what it got.
    return [
        f"/products/featured?limit={limit}",
        f"/products/new-arrivals?limit={limit}",
        f"/stores/featured?limit={limit}",
        f"/events/featured?limit={limit}",
        f"/offers?featured=true&limit={limit}",
        f"/offers?flashSale=true&limit={limit}",
    ]


def test_legacy_endpoints_are_cached_for_anonymous_visitors(cdn: Cdn) -> None:
    urls = legacy_urls(new_limit())
    with cdn.client() as client:
        first = {url: client.get(url) for url in urls}
        for url, response in first.items():
            assert response.status_code == 200, (url, response.text)
            assert response.headers["Cache-Control"] == PUBLIC, url
            assert response.headers["X-Cache"] == "MISS", url
        for url in urls:
            again = client.get(url)
            assert again.headers["X-Cache"] == "HIT", url
            assert again.content == first[url].content, url
    for url in urls:
        assert cdn.origin_saw(url) == [200], url
    # featured=true and flashSale=true are two objects, not one /offers.
    assert first[urls[4]].content != first[urls[5]].content


def test_a_signed_in_users_featured_products_are_not_shared(cdn: Cdn) -> None:
    url = f"/products/featured?limit={new_limit()}"
    with cdn.origin_client() as origin:
        truth_anonymous = origin.get(url).json()["data"]
        sign_in(origin, "u1")
        truth_u1 = origin.get(url).json()["data"]
    assert truth_u1 != truth_anonymous

    with cdn.client() as u1, cdn.client() as anonymous:
        sign_in(u1, "u1")
        mine = u1.get(url)
        assert mine.headers["Cache-Control"] == PERSONAL
        assert mine.headers["X-Cache"] == "PASS"
        assert mine.json()["data"] == truth_u1

        theirs = anonymous.get(url)
        assert theirs.headers["X-Cache"] == "MISS"  # nothing of u1's was stored
        assert theirs.json()["data"] == truth_anonymous
        assert anonymous.get(url).headers["X-Cache"] == "HIT"

        again = u1.get(url)  # and u1 never gets the stored anonymous answer
        assert again.headers["X-Cache"] == "PASS"
        assert again.json()["data"] == truth_u1


def test_what_the_app_does_not_mark_public_is_not_stored(cdn: Cdn) -> None:
    # The demo page says nothing about caching (Varnish alone would keep it 120 s);
    # /rollout and GET /session are no-store.
    with cdn.client() as client:
        for url in ("/", "/rollout?x=cdn", "/session"):
            for _ in range(2):
                response = client.get(url)
                assert response.status_code == 200, url
                assert response.headers["X-Cache"] == "PASS", url
            assert cdn.origin_saw(url) == [200, 200], url


# -- the stream ---------------------------------------------------------------


def test_the_stream_is_passed_and_streams_through(cdn: Cdn) -> None:
    url = f"/homepage/stream?limit={new_limit()}"
    with cdn.client() as client:
        for _ in range(2):
            arrivals: list[tuple[float, dict[str, Any]]] = []
            with client.stream("GET", url) as response:
                assert response.status_code == 200
                assert response.headers["Content-Type"].startswith("application/x-ndjson")
                assert response.headers["X-Cache"] == "PASS"
                assert response.headers["Cache-Control"] == "no-store"
                for line in response.iter_lines():
                    if line:
                        arrivals.append((time.monotonic(), json.loads(line)))
            sections = [item["section"] for _, item in arrivals[:-1]]
            assert sorted(sections) == sorted(
                [
                    "featuredProducts",
                    "newArrivals",
                    "featuredStores",
                    "featuredEvents",
                    "featuredOffers",
                    "flashSales",
                ]
            )
            assert arrivals[-1][1]["status"] == 200
            # The delayed section comes last, DELAY after the others: Varnish passed each
            # line on as it came, rather than the whole body at the end.
            events = next(t for t, item in arrivals if item.get("section") == "featuredEvents")
            assert sections[-1] == "featuredEvents"
            assert events - arrivals[0][0] >= DELAY / 2
    assert cdn.origin_saw(url) == [200, 200]  # never stored


# -- the VCL, the settings, the process ----------------------------------------


def test_the_cdn_settings_come_from_the_environment() -> None:
    assert Settings().public_cache_control == "public, max-age=60, stale-while-revalidate=120"
    settings = Settings.from_env({"BATCHPAGE_CDN_MAX_AGE": "2", "BATCHPAGE_CDN_SWR": "0"})
    assert settings.public_cache_control == "public, max-age=2, stale-while-revalidate=0"
    with pytest.raises(SettingsError, match="BATCHPAGE_CDN_SWR must be an integer"):
        Settings.from_env({"BATCHPAGE_CDN_SWR": "1.5"})
    with pytest.raises(SettingsError, match="cdn_max_age must be"):
        Settings.from_env({"BATCHPAGE_CDN_MAX_AGE": "-1"})


def test_the_tests_run_the_shipped_vcl_with_only_the_port_changed(cdn: Cdn) -> None:
    shipped = HOMEPAGE_VCL.read_text().splitlines()
    running = cdn.varnish.vcl_path.read_text().splitlines()
    changed = [(a, b) for a, b in zip(shipped, running, strict=True) if a != b]
    assert changed == [('    .port = "8000";', f'    .port = "{cdn.origin.port}";')]
    assert '.host = "127.0.0.1";' in HOMEPAGE_VCL.read_text()
    with pytest.raises(ValueError, match="one `backend default`"):
        with_backend_port("vcl 4.1;\n", 1234)


def test_varnishd_leaves_nothing_running(
    cdn: Cdn, tmp_path_factory: pytest.TempPathFactory
) -> None:
    varnish = VarnishServer(tmp_path_factory.mktemp("cdn-stop"), cdn.origin.port)
    varnish.start()
    try:
        varnish.wait_until_ready()
        assert varnish.process is not None
        manager = process(varnish.process.pid)
        assert manager is not None
        procs = [manager, *descendants(manager.pid)]
        assert len(procs) >= 2, "varnishd runs its cache in a child process"
    finally:
        varnish.stop()
    assert [p for p in procs if alive(p)] == []  # the manager and its cache process
