"""A named source of one part of a page."""

from __future__ import annotations

import enum
import inspect
import re
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeAlias

import attrs

from ._breaker import BreakerPolicy
from ._context import RequestContext
from ._policy import CachePolicy
from ._scope import Scope, ScopeKey
from ._units import Seconds, positive_seconds

#: What a section calls for its value: ``async def source(ctx) -> value``, or a
#: plain function (run in a worker thread), given the :class:`RequestContext`.
Source: TypeAlias = Callable[[RequestContext], Awaitable[Any]] | Callable[[RequestContext], Any]


class _NoFallback(enum.Enum):
    """The type of :data:`NO_FALLBACK`: an enum, so that type checkers narrow it."""

    NO_FALLBACK = "NO_FALLBACK"

    def __repr__(self) -> str:
        return "NO_FALLBACK"


#: Sentinel: the section has no fallback (``None`` *is* a fallback: ``null``).
NO_FALLBACK: Final = _NoFallback.NO_FALLBACK

_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")


def _check_name(_: object, __: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str):
        raise TypeError(f"name must be a str, not {value!r}")
    if not value:
        raise ValueError("name must not be empty")
    if _NAME.fullmatch(value) is None:
        raise ValueError(
            f"name must start with a letter and hold at most 64 letters, digits, "
            f"'_', '.' or '-', got {value!r}"
        )


def _is_async(source: Callable[..., object]) -> bool:
    if inspect.iscoroutinefunction(source):
        return True
    call = getattr(source, "__call__", None)  # noqa: B004 - async callable objects
    return inspect.iscoroutinefunction(call)


def _describe(fn: Callable[..., object]) -> str:
    name = getattr(fn, "__qualname__", None)
    return name if isinstance(name, str) else f"{type(fn).__qualname__} object"


def _check_takes_ctx(fn: Callable[..., object], field: str) -> None:
    """Refuse a callable that cannot be called as ``fn(ctx)``: it would fail on every request."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # some builtins have no signature: trust them
        return
    try:
        signature.bind(None)
    except TypeError:
        # The parameters are what matters here; annotations only lengthen the line.
        bare = signature.replace(
            parameters=[
                p.replace(annotation=inspect.Parameter.empty) for p in signature.parameters.values()
            ],
            return_annotation=inspect.Signature.empty,
        )
        raise TypeError(
            f"{field} must take one positional argument (the RequestContext), "
            f"not {_describe(fn)}{bare}"
        ) from None


def _check_not_generator(fn: Callable[..., object], field: str) -> None:
    # A generator function returns a generator object: never the value, whatever it yields.
    # A class is called to make an instance; an instance is called through ``__call__``.
    call = None if isinstance(fn, type) else getattr(fn, "__call__", None)  # noqa: B004
    for candidate in (fn, call):
        if inspect.isasyncgenfunction(candidate):
            kind = "an async generator function"
        elif inspect.isgeneratorfunction(candidate):
            kind = "a generator function"
        else:
            continue
        raise TypeError(
            f"{field} must return its value, not yield it: {_describe(candidate)} is {kind}"
        )


def _check_source(_: object, __: attrs.Attribute[Source], value: Source) -> None:
    if not callable(value):
        raise TypeError(f"source must be callable, not {value!r}")
    _check_not_generator(value, "source")
    _check_takes_ctx(value, "source")


def _check_fallback(_: object, __: attrs.Attribute[Any], value: object) -> None:
    if not callable(value):
        return  # a value (None included) stands in as it is
    # The fallback is called where the page is joined, without awaiting.
    if _is_async(value):
        raise TypeError(
            f"fallback must be a value or a plain function (ctx) -> value, "
            f"not an async one: {_describe(value)}"
        )
    _check_not_generator(value, "fallback")
    _check_takes_ctx(value, "fallback")


def _timeout(value: Seconds) -> float:
    return positive_seconds(value, name="timeout")


def _check_cache(_: object, __: attrs.Attribute[CachePolicy | None], value: object) -> None:
    if value is not None and not isinstance(value, CachePolicy):
        raise TypeError(f"cache must be a CachePolicy or None, not {value!r}")


def _check_scope(_: object, __: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, Scope):
        return
    if not callable(value):
        raise TypeError(f"scope must be a Scope or a callable (ctx) -> str, not {value!r}")
    # Its result is part of every cache key: an awaitable's text differs on each call.
    if _is_async(value):
        raise TypeError(
            f"scope must be a plain function (ctx) -> str, not an async one: {_describe(value)}"
        )
    _check_not_generator(value, "scope")
    _check_takes_ctx(value, "scope")


def _check_breaker(_: object, __: attrs.Attribute[BreakerPolicy | None], value: object) -> None:
    if value is not None and not isinstance(value, BreakerPolicy):
        raise TypeError(f"breaker must be a BreakerPolicy or None, not {value!r}")


@attrs.frozen(kw_only=True)
class Section:
    """A named source of one part of a page, with its failure and cache rules.

    ``source(ctx)`` may be ``async def`` or a plain function; plain functions
    run in a worker thread so they cannot block the event loop. It is called
    with one positional argument, the :class:`RequestContext`, and returns its
    value: a callable that cannot take that argument, or a generator function,
    is refused here rather than failing on every request. ``timeout`` is in
    seconds (or a ``timedelta``). When the source fails, ``fallback`` (a value,
    or a plain function ``(ctx) -> value``) stands in; without one the value
    is ``null``. A failed ``required`` section with nothing to stand in makes
    the whole page a 503. ``cache=None`` means never cached; ``scope`` decides
    whose entry a cached value is. ``breaker=None`` turns the circuit breaker off.
    """

    name: str = attrs.field(validator=_check_name)
    source: Source = attrs.field(validator=_check_source)
    timeout: float = attrs.field(default=1.0, converter=_timeout)
    fallback: Any = attrs.field(default=NO_FALLBACK, validator=_check_fallback)
    required: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))
    cache: CachePolicy | None = attrs.field(default=None, validator=_check_cache)
    scope: Scope | ScopeKey = attrs.field(default=Scope.GLOBAL, validator=_check_scope)
    breaker: BreakerPolicy | None = attrs.field(factory=BreakerPolicy, validator=_check_breaker)
    #: Whether ``source`` is awaited in the event loop (else it runs in a worker thread).
    is_async: bool = attrs.field(init=False, eq=False, repr=False)

    @is_async.default
    def _detect_async(self) -> bool:
        return _is_async(self.source)

    @property
    def has_fallback(self) -> bool:
        """A fallback was given (``None`` counts: it stands in as ``null``)."""
        return self.fallback is not NO_FALLBACK

    @property
    def is_personal(self) -> bool:
        """Cached per user (``Scope.USER``), so ``invalidate(user_id=...)`` applies."""
        return self.scope is Scope.USER
