"""Cache keys: typed parameter tokens, bounded and unforgeable."""

from __future__ import annotations

import pytest

from batchpage.extend import InvalidationLog, KeyBuilder


@pytest.mark.parametrize(
    ("params", "token"),
    [
        ({}, "-"),
        ({"limit": 10}, "v-limit=i.10"),
        ({"limit": "10"}, "v-limit=s.10"),
        ({"flag": True}, "v-flag=b.1"),
        ({"flag": False}, "v-flag=b.0"),
        ({"x": None}, "v-x=n"),
        ({"ratio": 1.5}, "v-ratio=f.1.5"),
    ],
)
def test_readable_tokens_keep_each_value_type(params: dict[str, object], token: str) -> None:
    """Short safe values stay readable, with their type: i.10 is not s.10."""
    assert KeyBuilder.params_part(params) == token


def test_sequences_and_odd_values_are_hashed_by_type_and_order() -> None:
    """Tuples, lists and frozensets hash by type; a frozenset's order does not matter."""
    part = KeyBuilder.params_part
    assert part({"ids": (1, 2)}) != part({"ids": [1, 2]})
    assert part({"ids": (1, 2)}) != part({"ids": (2, 1)})
    assert part({"ids": frozenset({1, 2})}) == part({"ids": frozenset({2, 1})})
    assert all(part({"q": v}).startswith("h-") for v in [(1,), [1], frozenset({1})])
    assert part({"q": "a&b=c"}).startswith("h-")  # no forged second parameter
    assert len(part({"q": "x" * 10_000})) < 40


def test_a_value_of_another_type_is_refused() -> None:
    """A key never holds a repr that could change between runs."""
    with pytest.raises(TypeError, match="parameter value must be"):
        KeyBuilder.params_part({"q": object()})


def test_an_invalidation_log_remembers_what_covers_a_key() -> None:
    """A mark sees later invalidations of its key's prefixes, not of others."""
    log = InvalidationLog(size=4)
    mark = log.mark()
    assert not log.invalidated_since("p:a:1", mark)
    log.record("p:b:")
    assert not log.invalidated_since("p:a:1", mark)
    log.record("p:a:")
    assert log.invalidated_since("p:a:1", mark)
    assert not log.invalidated_since("p:a:1", log.mark())


def test_an_invalidation_log_that_forgot_assumes_the_worst() -> None:
    """Past its size, a mark older than every remembered entry counts as invalidated."""
    log = InvalidationLog(size=2)
    mark = log.mark()
    for prefix in ("x:", "y:", "z:"):
        log.record(prefix)
    assert log.invalidated_since("p:a:1", mark)  # "x:" was forgotten: it may have been p:
