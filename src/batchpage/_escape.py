"""Untrusted text as cache-key parts: short runs of safe characters, or a hash.

Anything that came from a request (user id, custom scope value, parameter
values) passes through here before it reaches a key, so no input can forge
another key, inject a Redis glob or a hash tag, or grow a key without bound.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

_SAFE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_SAFE_ATOM = re.compile(r"[A-Za-z0-9_.,-]{1,32}")


def _hash(text: str) -> str:
    return "h-" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def escape(value: str) -> str:
    """A key part for untrusted text: ``v-<text>`` when safe, else ``h-<hash>``."""
    if _SAFE.fullmatch(value):
        return "v-" + value
    return _hash(value)


def _typed(value: Any) -> str:
    """A parameter value as text that keeps its type: ``i.10`` is not ``s.10``."""
    if isinstance(value, bool):  # before int: True == 1
        return "b.1" if value else "b.0"
    if isinstance(value, int):
        return f"i.{value}"
    if isinstance(value, str):
        return f"s.{value}"
    if isinstance(value, float):
        return f"f.{value!r}"
    if value is None:
        return "n"
    if isinstance(value, tuple | list | frozenset):
        items = sorted(map(_typed, value)) if isinstance(value, frozenset) else map(_typed, value)
        return f"{type(value).__name__[0]}.[" + ",".join(items) + "]"
    raise TypeError(f"a parameter value must be str, int, float, bool or None, not {value!r}")


def params_token(params: Mapping[str, Any]) -> str:
    """One token for the parameters that change a section's value.

    Typed: ``{"limit": 10}``, ``{"limit": "10"}``, ``{"limit": 10.0}`` and
    ``{"flag": True}`` against ``{"flag": 1}`` are different keys, because a
    source may answer them differently. Normalise at the edge (parse the
    query into the types the sources expect) to share entries.
    """
    if not params:
        return "-"
    pairs = [(str(k), _typed(params[k])) for k in sorted(params)]
    if len(pairs) <= 4 and all(
        _SAFE_ATOM.fullmatch(k) and _SAFE_ATOM.fullmatch(v) for k, v in pairs
    ):
        return "v-" + "&".join(f"{k}={v}" for k, v in pairs)
    # '&' or '=' inside a value must not forge another set of parameters.
    return _hash(json.dumps(pairs, ensure_ascii=False))
