"""The apps' shared service, in-process: settings, the fault hook, the rollout key, /offers."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from examples.service.faults import Fault, apply_faults, parse_faults
from examples.service.legacy import offers_section
from examples.service.request import (
    check_user_id,
    rollout_reply,
    session_user,
    sign_in_request,
)
from examples.service.rollout_feed import apply_setting
from examples.service.settings import Settings, SettingsError

from batchpage import Aggregator, InvalidParameter, RequestContext, Rollout, Section

NAMES = ("a", "b", "c")


# -- settings ----------------------------------------------------------------


def test_empty_environment_gives_the_embedded_defaults() -> None:
    """No variables: embedded MongoDB, seeded, memory cache, everyone on the batch."""
    settings = Settings.from_env({})
    assert settings.embedded
    assert settings.seeds
    assert settings.redis_url is None
    assert settings.rollout_percent == 100
    assert settings.faults == ""
    assert settings.now is None


def test_environment_is_read() -> None:
    """Each variable reaches its setting."""
    settings = Settings.from_env(
        {
            "MONGODB_URL": "mongodb://db:27017",
            "REDIS_URL": "redis://cache:6379/0",
            "BATCHPAGE_SEED": "auto",
            "BATCHPAGE_PAGE_TIMEOUT": "0.3",
            "ROLLOUT_PERCENT": "12.5",
            "BATCHPAGE_EXAMPLE_NOW": "2026-11-23T21:00:00Z",
        }
    )
    assert not settings.embedded
    assert not settings.seeds  # a real database is seeded only when asked
    assert settings.page_timeout == 0.3
    assert settings.rollout_percent == 12.5
    assert settings.now == datetime(2026, 11, 23, 21, tzinfo=UTC)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ROLLOUT_PERCENT": "150"}, "rollout_percent must be between 0 and 100"),
        ({"ROLLOUT_PERCENT": "half"}, "ROLLOUT_PERCENT must be a number"),
        ({"BATCHPAGE_PAGE_TIMEOUT": "0"}, "page_timeout must be a positive number"),
        ({"BATCHPAGE_PRODUCTS": "many"}, "BATCHPAGE_PRODUCTS must be an integer"),
        ({"BATCHPAGE_SEED": "maybe"}, "BATCHPAGE_SEED must be auto, 1 or 0"),
        ({"BATCHPAGE_EXAMPLE_NOW": "yesterday"}, "BATCHPAGE_EXAMPLE_NOW must be ISO-8601"),
    ],
)
def test_bad_environment_names_the_variable(env: dict[str, str], message: str) -> None:
    """A bad value fails at start-up with a message naming it."""
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)


# -- faults ------------------------------------------------------------------


def test_faults_parse() -> None:
    """error, hang and delay:<n>ms / <n>s, per section."""
    assert parse_faults("a=error, b=hang,c=delay:250ms", NAMES) == {
        "a": Fault("error"),
        "b": Fault("hang"),
        "c": Fault("delay", 0.25),
    }
    assert parse_faults("c=delay:2s", NAMES) == {"c": Fault("delay", 2.0)}
    assert parse_faults("", NAMES) == {}


@pytest.mark.parametrize(
    "spec", ["zzz=error", "a", "a=explode", "a=delay:fast", "a=error,a=hang", "a=delay:90s"]
)
def test_bad_faults_fail_start_up(spec: str) -> None:
    """An unknown section or fault, a repeat, or a huge delay is refused."""
    with pytest.raises(ValueError, match="faults"):
        parse_faults(spec, NAMES)


def section(name: str, value: Any) -> Section:
    async def source(ctx: RequestContext) -> Any:
        return value

    return Section(name=name, source=source, timeout=0.5)


@pytest.mark.anyio
async def test_faulted_sections_misbehave_as_told() -> None:
    """error fails, hang times out, delay answers late; the others are untouched."""
    sections = apply_faults(
        [section("a", 1), section("b", 2), section("c", 3), section("d", 4)],
        parse_faults("a=error,b=hang,c=delay:10ms", ("a", "b", "c", "d")),
    )
    async with Aggregator(sections, page="homepage") as agg:
        page = await agg.fetch()
    assert page.sections == {"a": None, "b": None, "c": 3, "d": 4}
    assert [(e.section, e.code.value) for e in page.errors] == [
        ("a", "SOURCE_ERROR"),
        ("b", "TIMEOUT_ERROR"),
    ]


def test_faulted_sections_are_not_cached() -> None:
    """A fault applies to every request, so the faulted section's cache is off."""
    from batchpage import CachePolicy

    cached = Section(name="a", source=lambda ctx: 1, cache=CachePolicy())
    (faulted,) = apply_faults([cached], {"a": Fault("error")})
    assert faulted.cache is None
    assert faulted.is_async


# -- the rollout key -----------------------------------------------------------


def test_rollout_key_sets_percentage_and_kill_switch() -> None:
    """A number sets the percentage (and revives); 'off' kills."""
    rollout = Rollout(50)
    apply_setting(rollout, "off")
    assert not rollout.enabled
    apply_setting(rollout, " 12.5 ")
    assert (rollout.enabled, rollout.percentage) == (True, 12.5)
    apply_setting(rollout, "OFF")
    assert not rollout.enabled


@pytest.mark.parametrize("raw", ["", "lots", "-1", "101", "nan"])
def test_bad_rollout_key_is_refused(raw: str) -> None:
    """Anything but 0..100 or 'off' is a ValueError and changes nothing."""
    rollout = Rollout(50)
    with pytest.raises(ValueError, match="rollout key"):
        apply_setting(rollout, raw)
    assert (rollout.enabled, rollout.percentage) == (True, 50)


# -- /offers -------------------------------------------------------------------


def test_offers_filter_chooses_the_section() -> None:
    """featured=true is featuredOffers, flashSale=true flashSales."""
    assert offers_section({"featured": "true"}) == "featuredOffers"
    assert offers_section({"flashSale": "true", "limit": "3"}) == "flashSales"


@pytest.mark.parametrize(
    "params", [{}, {"featured": "true", "flashSale": "true"}, {"featured": "1"}]
)
def test_offers_filter_must_be_exactly_one(params: dict[str, str]) -> None:
    """No filter, both, or another value is a 400 naming the filter."""
    with pytest.raises(InvalidParameter) as caught:
        offers_section(params)
    assert caught.value.field in {"featured", "flashSale"}


# -- the homepage's request rules (examples/service/request.py) -----------------


@pytest.mark.parametrize("raw", ["u1", "a" * 128, "user.name@example-1_x"])
def test_a_user_id_of_safe_characters_signs_in(raw: str) -> None:
    """1 to 128 letters, digits, '_', '.', '@' and '-'."""
    assert check_user_id(raw) == raw


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("", "userId must be a non-empty string"),
        (42, "userId must be a non-empty string"),
        (None, "userId must be a non-empty string"),
        ("a" * 129, "userId must be at most 128 characters"),
        ("a\x01b", "userId may hold only"),
        ("a:b", "userId may hold only"),
        ("a*", "userId may hold only"),
        ("a b", "userId may hold only"),
        ("é", "userId may hold only"),
    ],
)
def test_a_bad_user_id_is_refused_naming_the_field(raw: object, message: str) -> None:
    """Empty, not a string, over-long, control characters, ':' and '*' are refused."""
    with pytest.raises(InvalidParameter, match=message) as caught:
        check_user_id(raw)
    assert caught.value.field == "userId"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"", "body"),
        (b"not json", "body"),
        (b"[]", "body"),
        (b'{"userId": "u1", "admin": true}', "body"),
        (b'{"userId": "a:b"}', "userId"),
        (b"\xff", "body"),
    ],
)
def test_a_bad_sign_in_body_is_a_400_naming_the_field(body: bytes, field: str) -> None:
    """The sign-in body is exactly {"userId": "..."}."""
    with pytest.raises(InvalidParameter) as caught:
        sign_in_request(body)
    assert caught.value.field == field


def test_a_session_with_an_odd_user_is_anonymous() -> None:
    """Whatever a session holds that is not a valid user id reads as anonymous."""
    assert session_user({}) is None
    assert session_user({"userId": "u1"}) == "u1"
    assert session_user({"userId": "a:b"}) is None
    assert session_user({"userId": ["u1"]}) is None


@pytest.mark.parametrize(("percentage", "use_batch"), [(100, True), (0, False)])
def test_rollout_reply_says_which_path(percentage: float, use_batch: bool) -> None:
    """/rollout answers the decision in the body and the X-Batch-Rollout header."""
    reply = rollout_reply(Rollout(percentage), "u7")
    assert reply.status == 200
    assert json.loads(reply.body) == {
        "userId": "u7",
        "useBatch": use_batch,
        "percentage": float(percentage),
        "enabled": True,
    }
    assert reply.header("x-batch-rollout") == ("batch" if use_batch else "legacy")
    assert reply.header("cache-control") == "private, no-store"
    assert reply.header("vary") == "Cookie"
