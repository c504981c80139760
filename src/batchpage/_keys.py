"""Cache keys, ``prefix:{page:version:scope}:section:params``, and the patterns that drop them.

:class:`KeyBuilder` owns the whole key: the configured parts, the scope of a
section for a request (global, a user, a custom scope value) and the typed
parameters. Anything that came from a request is escaped or hashed
(``_escape``), so no input can forge another key, inject a Redis glob, or
grow a key without bound.

The ``{page:version:scope}`` hash tag decides the Redis Cluster slot: one
user's keys of a page share a slot (so do the global keys), and different
users' keys spread over every shard. A page reads at most one slot per
scope it touches (global, the user, a custom scope value).

Because the scope sits inside the tag, the keys of one section across
every scope are not one literal prefix; invalidation names them with a
:class:`KeyPattern` (literal pieces with anything between them), which the
memory layer, the invalidation log and Redis's ``SCAN MATCH`` apply alike.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import attrs

from ._context import RequestContext
from ._escape import escape, params_token
from ._scope import Scope

if TYPE_CHECKING:
    from ._section import Section

logger = logging.getLogger("batchpage")

_PART = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_GLOB_SPECIAL = re.compile(r"([*?\[\]\\])")

ANONYMOUS = "anon"
GLOBAL = "g"


def glob_escape(text: str) -> str:
    """``text`` as a literal in a Redis glob (``SCAN MATCH``, ``KEYS``)."""
    return _GLOB_SPECIAL.sub(r"\\\1", text)


def check_part(value: object, name: str) -> None:
    """Check a configured key part (page, version, prefix); the error names the argument."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, not {value!r}")
    if _PART.fullmatch(value) is None:
        raise ValueError(f"{name} must be 1 to 64 letters, digits, '_', '.' or '-', got {value!r}")


def _check_part(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    check_part(value, attribute.name)


def _parts(value: Iterable[str]) -> tuple[str, ...]:
    if isinstance(value, str):
        raise TypeError("parts must be a sequence of str, not one str (use KeyPattern.prefix)")
    parts = tuple(value)
    if not parts:
        raise ValueError("a KeyPattern needs at least one part")
    for part in parts:
        if not isinstance(part, str):
            raise TypeError(f"a KeyPattern's parts must be str, not {part!r}")
    if any(not part for part in parts[1:]):
        raise ValueError("only a KeyPattern's first part may be empty")
    return parts


@attrs.frozen
class KeyPattern:
    """The keys an invalidation drops: literal ``parts`` in order, anything between and after.

    A key matches when it starts with ``parts[0]`` and the other parts follow
    in order, each after the one before; any run of characters (none
    included) may stand between them and after the last. As a Redis glob:
    each part escaped, joined and ended by ``*``. ``KeyPattern.prefix(p)``
    is every key starting with ``p``; ``KeyPattern.prefix("")`` is every key.

    A cache that can only drop by prefix may drop :attr:`literal_prefix`:
    more than asked, never less.
    """

    parts: tuple[str, ...] = attrs.field(converter=_parts)

    @classmethod
    def prefix(cls, prefix: str) -> KeyPattern:
        """Every key that starts with ``prefix`` (a literal: no character is special)."""
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, not {prefix!r}")
        return cls((prefix,))

    @classmethod
    def of(cls, target: KeyPattern | str) -> KeyPattern:
        """``target`` as a pattern: a str is a literal prefix (what ``invalidate`` took before)."""
        if isinstance(target, KeyPattern):
            return target
        if isinstance(target, str):
            return cls.prefix(target)
        raise TypeError(f"an invalidation target must be a KeyPattern or a str, not {target!r}")

    @property
    def literal_prefix(self) -> str:
        """What every matching key starts with."""
        return self.parts[0]

    @property
    def is_prefix(self) -> bool:
        """Whether this is a plain prefix (one part)."""
        return len(self.parts) == 1

    def matches(self, key: str) -> bool:
        """Whether ``key`` is one of the keys this pattern names."""
        parts = self.parts
        if not key.startswith(parts[0]):
            return False
        at = len(parts[0])
        for part in parts[1:]:
            found = key.find(part, at)
            if found < 0:
                return False
            at = found + len(part)
        return True

    def glob(self) -> str:
        """The pattern as a Redis glob, for ``SCAN MATCH`` (and the invalidation channel)."""
        return "*".join(map(glob_escape, self.parts)) + "*"

    @classmethod
    def from_glob(cls, text: str) -> KeyPattern:
        """The pattern :meth:`glob` wrote; text that is not one is a literal prefix.

        Earlier versions published plain prefixes on the invalidation
        channel: such a message (no unescaped ``*`` at its end) still means
        "every key starting with it".
        """
        parts: list[str] = []
        current: list[str] = []
        i, n = 0, len(text)
        while i < n:
            char = text[i]
            if char == "\\" and i + 1 < n:
                current.append(text[i + 1])
                i += 2
                continue
            if char == "*":
                parts.append("".join(current))
                current = []
                i += 1
                continue
            if char in "?[]\\":
                return cls.prefix(text)  # not a glob this module wrote
            current.append(char)
            i += 1
        if current or not parts or any(not p for p in parts[1:]):
            return cls.prefix(text)
        return cls(parts)

    @property
    def hash_tag(self) -> str | None:
        """The Redis Cluster hash tag every matching key has, if one is fixed.

        Then every matching key is in that tag's one slot. ``None`` when the
        literal prefix does not hold a whole, non-empty ``{...}``.
        """
        head = self.parts[0]
        start = head.find("{")
        if start < 0:
            return None
        end = head.find("}", start + 1)
        if end <= start + 1:
            return None
        return head[start + 1 : end]

    def __str__(self) -> str:
        return self.glob()


@attrs.frozen(kw_only=True)
class KeyBuilder:
    """Builds every cache key of one page; ``version`` bumps make every old key unreachable.

    One place owns the layout ``prefix:{page:version:scope}:section:params``:
    :meth:`key` for a section and a request, :meth:`pattern` for what an
    invalidation drops.
    """

    prefix: str = attrs.field(default="batchpage", validator=_check_part)
    page: str = attrs.field(default="page", validator=_check_part)
    version: str = attrs.field(default="v1", validator=_check_part)

    @property
    def page_prefix(self) -> str:
        """Every key of this page and version starts with this (any scope, any section)."""
        return f"{self.prefix}:{{{self.page}:{self.version}:"

    # -- the parts ----------------------------------------------------------

    @staticmethod
    def params_part(params: Mapping[str, Any]) -> str:
        """One typed, bounded token for the parameters.

        What :attr:`~batchpage.RequestContext.params_key` holds.
        """
        return params_token(params)

    @staticmethod
    def user_part(user_id: str | None) -> str:
        """The scope part of a personal section: ``anon``, or ``u`` and the escaped user id."""
        return ANONYMOUS if user_id is None else "u" + escape(user_id)

    @staticmethod
    def custom_part(value: str) -> str:
        """The scope part for a custom scope function's value: ``c`` and the escaped value."""
        return "c" + escape(value)

    def scope_part(self, section: Section, ctx: RequestContext) -> str:
        """Whose value ``section`` is for this request; raises what a scope function raises."""
        scope = section.scope
        if scope is Scope.GLOBAL:
            return GLOBAL
        if scope is Scope.USER:
            return self.user_part(ctx.user_id)
        assert callable(scope)
        return self.custom_part(str(scope(ctx)))

    # -- keys ---------------------------------------------------------------

    def build(self, section: str, scope: str, params: str) -> str:
        """The key from its parts (already escaped): the layout, in one place."""
        return f"{self.prefix}:{{{self.page}:{self.version}:{scope}}}:{section}:{params}"

    def key_for(self, section: Section, ctx: RequestContext) -> str:
        """The cache key of ``section`` for this request; raises if its scope function does."""
        return self.build(section.name, self.scope_part(section, ctx), ctx.params_key)

    def key(self, section: Section, ctx: RequestContext) -> str | None:
        """The section's key, or ``None`` (not cached this time) if its scope function fails.

        A scope decides whose entry a value is: without it the value is
        fetched and served, never shared. One failing section never fails the page.
        """
        try:
            scope = self.scope_part(section, ctx)
        except Exception:
            logger.exception("section %r: scope function failed; not cached", section.name)
            return None
        return self.build(section.name, scope, ctx.params_key)

    def pattern(self, section: str, scope: str | None = None) -> KeyPattern:
        """The keys of ``section``: of one scope part (from the ``*_part`` methods), or of all.

        One scope is a literal prefix (one slot on a cluster); every scope is
        ``prefix:{page:version:*}:section:*``. Scope parts hold neither ``}``
        nor ``:``, and a section name no ``:``, so neither matches another
        section's keys. Each key's lock (``key:lock``) matches too.
        """
        head = f"{self.prefix}:{{{self.page}:{self.version}:"
        if scope is not None:
            return KeyPattern.prefix(f"{head}{scope}}}:{section}:")
        return KeyPattern((head, f"}}:{section}:"))
