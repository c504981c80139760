"""The request context every source receives."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import anyio
import attrs

from ._escape import params_token

_SCALARS = (str, int, float, bool, type(None))


def _freeze(params: Mapping[str, Any]) -> Mapping[str, Any]:
    if not isinstance(params, Mapping):
        raise TypeError(f"params must be a mapping of str to values, not {params!r}")
    frozen = dict(params)
    for name, value in frozen.items():
        if not isinstance(name, str):
            raise TypeError(f"params: a parameter name must be a str, not {name!r}")
        if isinstance(value, _SCALARS):
            continue
        if isinstance(value, tuple | list | frozenset) and all(
            isinstance(v, _SCALARS) for v in value
        ):
            continue
        raise TypeError(
            f"params[{name!r}] must be a str, int, float, bool, None, or a tuple, list or "
            f"frozenset of those, not {type(value).__name__}"
        )
    return frozen


def _check_user_id(_: object, __: attrs.Attribute[str | None], value: object) -> None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"user_id must be a str or None, not {value!r}")
    if value == "":
        raise ValueError("user_id must not be empty (None is anonymous)")


def _check_deadline(_: object, __: attrs.Attribute[float], value: object) -> None:
    # Compared with anyio's clock on every page: a str fails deep, a NaN never passes.
    if type(value) is float and value == value:  # the usual case, cheaply (NaN != NaN)
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"deadline must be a time on anyio's clock (a float), not {value!r}")
    if math.isnan(value):
        raise ValueError("deadline must not be NaN")


@attrs.frozen
class RequestContext:
    """What a source may know about the request it serves.

    ``params`` are the request's parameters that change what a source returns
    (``limit``, a locale, ...): they are part of every cache key, typed
    (``10`` and ``"10"`` are different keys), so keep them to what matters
    and parse them into the types the sources expect. ``deadline`` is the
    page's deadline on anyio's clock (``anyio.current_time()``), set by the
    aggregator; a source that calls a slow backend can pass
    :meth:`remaining` on as its own timeout.
    """

    user_id: str | None = attrs.field(default=None, validator=_check_user_id)
    params: Mapping[str, Any] = attrs.field(factory=dict, converter=_freeze)
    deadline: float = attrs.field(default=math.inf, validator=_check_deadline)
    # The params' cache-key token, computed once per context (see ``params_key``).
    _params_key: str | None = attrs.field(default=None, init=False, eq=False, repr=False)

    @property
    def is_anonymous(self) -> bool:
        """No user id: the request shares the ``anon`` entry of personal sections."""
        return self.user_id is None

    @property
    def params_key(self) -> str:
        """The parameters as one bounded, typed cache-key token."""
        key = self._params_key
        if key is None:
            key = params_token(self.params)
            object.__setattr__(self, "_params_key", key)
        return key

    def remaining(self) -> float:
        """Seconds left until the page deadline (``inf`` when there is none)."""
        return max(0.0, self.deadline - anyio.current_time())
