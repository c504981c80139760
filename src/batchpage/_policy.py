"""How long a section's value may be served from cache."""

from __future__ import annotations

import math

import attrs

from ._units import Seconds, non_negative_seconds, positive_seconds


def _fresh(value: Seconds) -> float:
    return positive_seconds(value, name="fresh")


def _stale(value: Seconds) -> float:
    return non_negative_seconds(value, name="stale")


def _stale_if_error(value: Seconds) -> float:
    return non_negative_seconds(value, name="stale_if_error")


def _jitter(value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise TypeError(f"jitter must be a fraction between 0 and 0.5, not {value!r}")
    if not 0.0 <= value <= 0.5:
        raise ValueError(f"jitter must be between 0 and 0.5, got {value!r}")
    return float(value)


@attrs.frozen(kw_only=True)
class CachePolicy:
    """Freshness windows of a cached section, in seconds (or ``timedelta``).

    An entry of age ``a`` is:

    * ``a < fresh``: served as ``HIT``;
    * ``fresh <= a < fresh + stale``: served at once as ``STALE`` and refreshed
      once in the background (stale-while-revalidate);
    * ``a >= fresh + stale`` (the *expiry*): a ``MISS``, fetched from the source.

    ``stale_if_error`` is RFC 5861's window, counted like ``stale`` from the end
    of freshness and independent of it: when a fetch fails, an entry younger
    than ``fresh + stale_if_error`` stands in for the failed value.

    ``jitter`` shortens each written entry's windows by a random fraction up to
    this much, so that sections written together do not expire together.
    """

    fresh: float = attrs.field(default=180.0, converter=_fresh)
    stale: float = attrs.field(default=120.0, converter=_stale)
    stale_if_error: float = attrs.field(default=0.0, converter=_stale_if_error)
    jitter: float = attrs.field(default=0.1, converter=_jitter)

    @property
    def expiry(self) -> float:
        """Age at which the entry is no longer served without an error."""
        return self.fresh + self.stale

    @property
    def retention(self) -> float:
        """How long a store must keep the entry: the longest window that may use it."""
        return self.fresh + max(self.stale, self.stale_if_error)
