"""Keys and the patterns that drop them: one layout, one matching rule everywhere.

``KeyBuilder`` builds ``prefix:{page:version:scope}:section:params``;
``KeyBuilder.pattern`` names a section's keys (one scope, or all); a
``KeyPattern`` matches keys the way Redis's ``SCAN MATCH`` matches its glob,
and survives the trip through the invalidation channel.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.crc import key_slot

from batchpage import RequestContext, Scope, Section
from batchpage.extend import KeyBuilder, KeyPattern

KEYS = KeyBuilder(prefix="shop", page="home", version="v1")
USER = Section(name="forYou", source=lambda ctx: 1, cache=None, scope=Scope.USER)
SHARED = Section(name="featured", source=lambda ctx: 1, cache=None)
LOCALE = Section(name="byLocale", source=lambda ctx: 1, cache=None, scope=lambda ctx: "fr")
OTHER = Section(name="forYouToo", source=lambda ctx: 1, cache=None, scope=Scope.USER)


def redis_glob_matches(glob: str, key: str) -> bool:
    """Redis's glob (``*``, ``?``, ``[...]``, ``\\x``), as a regular expression."""
    out, i = [], 0
    while i < len(glob):
        char = glob[i]
        if char == "\\" and i + 1 < len(glob):
            out.append(re.escape(glob[i + 1]))
            i += 2
            continue
        out.append({"*": ".*", "?": "."}.get(char, re.escape(char)))
        i += 1
    return re.fullmatch("".join(out), key, re.DOTALL) is not None


texts = st.text(min_size=0, max_size=12)
users = st.text(min_size=1, max_size=80)


@given(st.lists(texts, min_size=1, max_size=4), texts)
def test_a_pattern_matches_as_its_glob_does(parts: list[str], key: str) -> None:
    """``matches`` is ``SCAN MATCH`` of ``glob()``, whatever characters the parts hold."""
    parts = [parts[0], *(p or "x" for p in parts[1:])]
    pattern = KeyPattern(parts)
    for candidate in (key, "".join(parts) + key, parts[0] + key + "".join(parts[1:])):
        assert pattern.matches(candidate) == redis_glob_matches(pattern.glob(), candidate)


@given(st.lists(texts, min_size=1, max_size=4))
def test_a_pattern_survives_the_channel(parts: list[str]) -> None:
    """What ``glob()`` publishes, ``from_glob`` reads back as the same pattern."""
    pattern = KeyPattern([parts[0], *(p or "x" for p in parts[1:])])
    assert KeyPattern.from_glob(pattern.glob()) == pattern


def test_a_message_of_an_earlier_version_is_a_prefix() -> None:
    """Earlier versions published a plain prefix: it still drops what it named."""
    assert KeyPattern.from_glob("bp:{home:v1}:offers:") == KeyPattern.prefix("bp:{home:v1}:offers:")
    assert KeyPattern.from_glob("*") == KeyPattern.prefix("")


def test_patterns_refuse_what_they_cannot_mean() -> None:
    with pytest.raises(ValueError, match="at least one"):
        KeyPattern(())
    with pytest.raises(ValueError, match="first part"):
        KeyPattern(("a", ""))
    with pytest.raises(TypeError, match="one str"):
        KeyPattern("abc")
    with pytest.raises(TypeError, match="KeyPattern or a str"):
        KeyPattern.of(3)  # type: ignore[arg-type]


@given(users, users, st.dictionaries(st.sampled_from("abc"), st.integers(), max_size=2))
def test_a_section_pattern_matches_its_keys_in_every_scope_and_nothing_else(
    user: str, other: str, params: dict[str, int]
) -> None:
    """``pattern(section)``: every user's key of that section, no key of another section."""
    ctx = RequestContext(user_id=user, params=params)
    mine = KeyBuilder(prefix="shop", page="home", version="v1")
    everyone = mine.pattern(USER.name)
    own = mine.pattern(USER.name, mine.user_part(user))
    key = mine.key_for(USER, ctx)
    assert everyone.matches(key)
    assert everyone.matches(key + ":lock")
    assert own.matches(key)
    assert mine.pattern(OTHER.name).matches(key) is False
    assert mine.pattern(SHARED.name).matches(key) is False
    other_key = mine.key_for(USER, RequestContext(user_id=other, params=params))
    assert own.matches(other_key) is (mine.user_part(other) == mine.user_part(user))
    for elsewhere in (
        KeyBuilder(prefix="shop", page="home", version="v10"),
        KeyBuilder(prefix="shop", page="homes", version="v1"),
        KeyBuilder(prefix="shops", page="home", version="v1"),
    ):
        assert not everyone.matches(elsewhere.key_for(USER, ctx))
    assert redis_glob_matches(everyone.glob(), key)


def test_one_scope_is_one_slot() -> None:
    """A pattern of one scope names the hash tag, so one cluster node; every scope, none."""
    ctx = RequestContext(user_id="42")
    one = KEYS.pattern(USER.name, KEYS.user_part("42"))
    assert one.is_prefix
    assert one.hash_tag == "home:v1:uv-42"
    assert key_slot(b"{" + one.hash_tag.encode() + b"}") == key_slot(
        KEYS.key_for(USER, ctx).encode()
    )
    assert KEYS.pattern(USER.name).hash_tag is None
    assert KeyPattern.prefix("a:{}:b").hash_tag is None
    assert KeyPattern.prefix("a:{x").hash_tag is None


def test_the_scopes_of_a_page() -> None:
    """Global, anonymous, user and custom scopes: each its own tag, the section after it."""
    anonymous = RequestContext()
    user = RequestContext(user_id="42")
    assert KEYS.key_for(SHARED, user) == "shop:{home:v1:g}:featured:-"
    assert KEYS.key_for(USER, anonymous) == "shop:{home:v1:anon}:forYou:-"
    assert KEYS.key_for(USER, user) == "shop:{home:v1:uv-42}:forYou:-"
    assert KEYS.key_for(LOCALE, user) == "shop:{home:v1:cv-fr}:byLocale:-"
    assert KEYS.page_prefix == "shop:{home:v1:"
    assert all(KEYS.key_for(s, user).startswith(KEYS.page_prefix) for s in (SHARED, USER, LOCALE))


def test_a_failing_scope_function_is_no_key() -> None:
    """``key`` answers None (the section goes uncached); ``key_for`` raises."""

    def broken(ctx: RequestContext) -> str:
        raise LookupError("no segment")

    section = Section(name="bySegment", source=lambda ctx: 1, cache=None, scope=broken)
    assert KEYS.key(section, RequestContext()) is None
    with pytest.raises(LookupError):
        KEYS.key_for(section, RequestContext())
