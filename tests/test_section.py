"""Section definitions are validated when they are made, with errors that name the field."""

from datetime import timedelta
from typing import Any

import pytest

from batchpage import NO_FALLBACK, Aggregator, BreakerPolicy, CachePolicy, RequestContext, Section


async def source(ctx: RequestContext) -> int:
    return 1


def sync_source(ctx: RequestContext) -> int:
    return 1


class AsyncCallable:
    async def __call__(self, ctx: RequestContext) -> int:
        return 1


def test_defaults_are_sensible() -> None:
    """A bare section has a 1 s timeout, no fallback, no cache and a breaker."""
    s = Section(name="a", source=source)
    assert s.timeout == 1.0
    assert s.fallback is NO_FALLBACK
    assert not s.has_fallback
    assert s.cache is None
    assert s.breaker == BreakerPolicy()
    assert not s.required


@pytest.mark.parametrize("name", ["", "1abc", "a b", "a:b", "a*", "x" * 65, "é"])
def test_bad_names_are_rejected(name: str) -> None:
    """Names must be short and safe for JSON keys and cache keys."""
    with pytest.raises(ValueError, match="name"):
        Section(name=name, source=source)


def test_name_must_be_a_string() -> None:
    """A non-string name is a TypeError naming the field."""
    with pytest.raises(TypeError, match="name"):
        Section(name=3, source=source)  # type: ignore[arg-type]


@pytest.mark.parametrize("timeout", [0, -1, timedelta(0), float("nan")])
def test_non_positive_timeout_is_rejected(timeout: Any) -> None:
    """A timeout must be a positive duration."""
    with pytest.raises(ValueError, match="timeout"):
        Section(name="a", source=source, timeout=timeout)


def test_timeout_accepts_timedelta() -> None:
    """Durations may be given as timedelta."""
    assert Section(name="a", source=source, timeout=timedelta(milliseconds=250)).timeout == 0.25


def test_timeout_of_wrong_type_is_rejected() -> None:
    """A string timeout is a TypeError naming the field."""
    with pytest.raises(TypeError, match="timeout"):
        Section(name="a", source=source, timeout="1")  # type: ignore[arg-type]


def test_source_must_be_callable() -> None:
    """A non-callable source is rejected at construction."""
    with pytest.raises(TypeError, match="source"):
        Section(name="a", source=42)  # type: ignore[arg-type]


def test_async_detection() -> None:
    """Coroutine functions and async callables are async; plain functions are not."""
    assert Section(name="a", source=source).is_async
    assert Section(name="a", source=AsyncCallable()).is_async
    assert not Section(name="a", source=sync_source).is_async


def test_none_is_a_real_fallback() -> None:
    """``fallback=None`` means 'stand in with null', unlike no fallback."""
    assert Section(name="a", source=source, fallback=None).has_fallback


def test_cache_and_breaker_types_are_checked() -> None:
    """Wrong policy types are rejected with the field's name."""
    with pytest.raises(TypeError, match="cache"):
        Section(name="a", source=source, cache=180)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="breaker"):
        Section(name="a", source=source, breaker=5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="scope"):
        Section(name="a", source=source, scope="user")  # type: ignore[arg-type]


def test_sections_are_immutable() -> None:
    """A section cannot be changed after it is made."""
    s = Section(name="a", source=source)
    with pytest.raises(AttributeError):
        s.timeout = 3  # type: ignore[misc]


def test_duplicate_names_are_rejected_by_the_aggregator() -> None:
    """Two sections of one page cannot share a name."""
    with pytest.raises(ValueError, match="duplicate section name: 'a'"):
        Aggregator(
            [Section(name="a", source=source), Section(name="a", source=source)], page="section"
        )


def test_aggregator_needs_sections() -> None:
    """An empty page is a configuration error."""
    with pytest.raises(ValueError, match="at least one section"):
        Aggregator([], page="section")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"fresh": 0}, "fresh"),
        ({"fresh": -1}, "fresh"),
        ({"stale": -1}, "stale"),
        ({"stale_if_error": -0.5}, "stale_if_error"),
        ({"jitter": 0.9}, "jitter"),
    ],
)
def test_cache_policy_is_validated(kwargs: dict[str, Any], field: str) -> None:
    """Each bad window is rejected with the field's name."""
    with pytest.raises(ValueError, match=field):
        CachePolicy(**kwargs)


def test_cache_policy_defaults_follow_the_seed() -> None:
    """Fresh for 3 minutes, served stale until 5."""
    p = CachePolicy()
    assert (p.fresh, p.expiry, p.stale_if_error) == (180.0, 300.0, 0.0)
    assert CachePolicy(fresh=10, stale=5, stale_if_error=60).retention == 70.0


def test_breaker_policy_is_validated() -> None:
    """Thresholds below one and non-positive cool-downs are rejected."""
    with pytest.raises(ValueError, match="failure_threshold"):
        BreakerPolicy(failure_threshold=0)
    with pytest.raises(ValueError, match="reset_timeout"):
        BreakerPolicy(reset_timeout=0)


def test_page_is_required() -> None:
    """Two aggregators on one default page name would share cache keys: there is no default."""
    with pytest.raises(TypeError, match="page"):
        Aggregator([Section(name="a", source=source)])  # type: ignore[call-arg]
