"""Section definitions are validated when they are made, with errors that name the field."""

import functools
import inspect
from collections.abc import AsyncIterator, Iterator
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


# -- callables that could never serve a request -------------------------------


def two_args(ctx: RequestContext, extra: int) -> int:
    return extra


def keyword_only(*, ctx: RequestContext) -> int:
    return 1


@pytest.mark.parametrize(
    ("bad", "shown"),
    [
        (lambda: 1, "<lambda>()"),
        (two_args, "two_args(ctx, extra)"),
        (keyword_only, "keyword_only(*, ctx)"),
    ],
)
def test_a_source_that_cannot_take_the_context_is_refused(bad: Any, shown: str) -> None:
    """A source is called as source(ctx): one that cannot be is refused, with its signature."""
    with pytest.raises(TypeError) as info:
        Section(name="a", source=bad)
    assert str(info.value) == (
        f"source must take one positional argument (the RequestContext), not {shown}"
    )


def generator(ctx: RequestContext) -> Iterator[int]:
    yield 1


async def async_generator(ctx: RequestContext) -> AsyncIterator[int]:
    yield 1


class GeneratorCallable:
    def __call__(self, ctx: RequestContext) -> Iterator[int]:
        yield 1


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (generator, "generator is a generator function"),
        (async_generator, "async_generator is an async generator function"),
        (GeneratorCallable(), "GeneratorCallable.__call__ is a generator function"),
        (functools.partial(generator), "partial object is a generator function"),
    ],
)
def test_a_generator_source_is_refused(bad: Any, message: str) -> None:
    """A generator function never returns the value it yields: refused, not a SOURCE_ERROR later."""
    with pytest.raises(TypeError, match=f"^source must return its value, not yield it: {message}$"):
        Section(name="a", source=bad)


@pytest.mark.parametrize(
    "good",
    [
        lambda ctx, extra=1: 1,  # extra parameters with defaults
        lambda *args: 1,
        lambda ctx, /: 1,
        functools.partial(two_args, extra=2),
        str,  # a builtin without an inspectable signature: trusted
        AsyncCallable(),
    ],
)
def test_sources_callable_with_one_argument_are_accepted(good: Any) -> None:
    """Whatever can bind one positional argument is a source, and so is what cannot be inspected."""
    Section(name="a", source=good)


def test_builtins_without_a_signature_are_accepted() -> None:
    """Some builtins cannot be inspected; they are trusted rather than refused."""
    with pytest.raises(ValueError, match="no signature"):
        inspect.signature(str)
    assert not Section(name="a", source=str).is_async


async def async_fallback(ctx: RequestContext) -> list[int]:
    return []


async def async_scope(ctx: RequestContext) -> str:
    return "x"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"fallback": lambda: ["none"]},
            "fallback must take one positional argument (the RequestContext), not <lambda>()",
        ),
        (
            {"fallback": async_fallback},
            "fallback must be a value or a plain function (ctx) -> value, "
            "not an async one: async_fallback",
        ),
        (
            {"fallback": generator},
            "fallback must return its value, not yield it: generator is a generator function",
        ),
        (
            {"scope": lambda: "x"},
            "scope must take one positional argument (the RequestContext), not <lambda>()",
        ),
        (
            {"scope": async_scope},
            "scope must be a plain function (ctx) -> str, not an async one: async_scope",
        ),
    ],
)
def test_fallback_and_scope_functions_are_checked_like_sources(
    kwargs: dict[str, Any], message: str
) -> None:
    """A fallback or scope function is called with the context and not awaited: checked here."""
    with pytest.raises(TypeError) as info:
        Section(name="a", source=source, **kwargs)
    assert str(info.value) == message


def test_fallback_values_are_not_checked() -> None:
    """A fallback that is not callable is a value, whatever it is."""
    values: list[object] = [[], None, 0, "x", {"a": 1}]
    for value in values:
        assert Section(name="a", source=source, fallback=value).fallback == value


# -- the aggregator's own arguments -------------------------------------------


def test_page_is_required() -> None:
    """Two aggregators on one default page name would share cache keys: there is no default."""
    with pytest.raises(TypeError, match="page"):
        Aggregator([Section(name="a", source=source)])  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"page": 3}, TypeError, "page must be a str, not 3"),
        ({"page": "a b"}, ValueError, "page must be 1 to 64 letters"),
        ({"version": None}, TypeError, "version must be a str, not None"),
        ({"key_prefix": "a:b"}, ValueError, "key_prefix must be 1 to 64 letters"),
        ({"page_timeout": "1"}, TypeError, "page_timeout must be seconds"),
        ({"page_timeout": 0}, ValueError, "page_timeout must be positive"),
        ({"fail_fast": "yes"}, TypeError, "fail_fast must be a bool, not 'yes'"),
        ({"fail_fast": 1}, TypeError, "fail_fast must be a bool, not 1"),
        ({"executor": 50}, TypeError, "executor must be an Executor or None, not 50"),
        ({"cache": {}}, TypeError, r"cache must be a Cache \(MemoryCache, RedisCache, ...\)"),
        ({"serializer": "json"}, TypeError, "serializer must have dumps"),
    ],
)
def test_aggregator_arguments_are_checked_at_construction(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    """Each argument that would fail on the first request (or never) is refused, by name."""
    arguments: dict[str, Any] = {"page": "home", **kwargs}
    with pytest.raises(error, match=message):
        Aggregator([Section(name="a", source=source)], **arguments)


def test_one_section_instead_of_a_list_is_refused() -> None:
    """A lone Section is not a list of them: the error says so."""
    with pytest.raises(TypeError, match="not one Section"):
        Aggregator(Section(name="a", source=source), page="home")  # type: ignore[arg-type]
