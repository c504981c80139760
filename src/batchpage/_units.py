"""Time arguments: seconds as ``float`` or a ``timedelta``."""

from __future__ import annotations

import math
from datetime import timedelta

Seconds = float | int | timedelta


def to_seconds(value: Seconds, *, name: str) -> float:
    """Convert and check a duration; the error names the argument."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be seconds (a number) or a timedelta, not {value!r}")
    else:
        seconds = float(value)
    if math.isnan(seconds):
        raise ValueError(f"{name} must not be NaN")
    return seconds


def positive_seconds(value: Seconds, *, name: str) -> float:
    seconds = to_seconds(value, name=name)
    if seconds <= 0:
        raise ValueError(f"{name} must be positive, got {seconds!r}")
    return seconds


def non_negative_seconds(value: Seconds, *, name: str) -> float:
    seconds = to_seconds(value, name=name)
    if seconds < 0:
        raise ValueError(f"{name} must be non-negative, got {seconds!r}")
    return seconds
