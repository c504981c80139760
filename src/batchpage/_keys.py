"""Cache keys: ``prefix:{page:version}:section:scope:params``.

Anything that came from a request (user id, custom scope, parameter values)
is either a short run of safe characters or replaced by a hash, so no input
can forge another key, inject a Redis glob, or grow a key without bound. The
``{page:version}`` hash tag puts one page's keys in one Redis Cluster slot,
so a page is read with one MGET.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

import attrs

_SAFE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_SAFE_ATOM = re.compile(r"[A-Za-z0-9_.,-]{1,32}")
_PART = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def _hash(text: str) -> str:
    return "h-" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def escape(value: str) -> str:
    """A key part for untrusted text: ``v-<text>`` when safe, else ``h-<hash>``."""
    if _SAFE.fullmatch(value):
        return "v-" + value
    return _hash(value)


def check_part(value: object, name: str) -> None:
    """Check a configured key part (page, version, prefix); the error names the argument."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, not {value!r}")
    if _PART.fullmatch(value) is None:
        raise ValueError(f"{name} must be 1 to 64 letters, digits, '_', '.' or '-', got {value!r}")


def _check_part(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    check_part(value, attribute.name)


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


ANONYMOUS = "anon"


@attrs.frozen(kw_only=True)
class KeyBuilder:
    """Builds the keys of one page; ``version`` bumps make every old key unreachable."""

    prefix: str = attrs.field(default="batchpage", validator=_check_part)
    page: str = attrs.field(default="page", validator=_check_part)
    version: str = attrs.field(default="v1", validator=_check_part)

    @property
    def page_prefix(self) -> str:
        """Every key of this page and version starts with this."""
        return f"{self.prefix}:{{{self.page}:{self.version}}}:"

    @staticmethod
    def params_part(params: Mapping[str, Any]) -> str:
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

    @staticmethod
    def user_part(user_id: str | None) -> str:
        """The scope part of a personal key: ``anon``, or ``u`` and the escaped id."""
        return "anon" if user_id is None else "u" + escape(user_id)

    def section_prefix(self, section: str, scope: str | None = None) -> str:
        """The prefix of a section's keys, for one scope part or for all of them."""
        if scope is None:
            return f"{self.page_prefix}{section}:"
        return f"{self.page_prefix}{section}:{scope}:"

    def key(self, section: str, scope: str, params: str) -> str:
        """A whole key from parts already made safe (:meth:`params_part`, ...)."""
        return f"{self.page_prefix}{section}:{scope}:{params}"
