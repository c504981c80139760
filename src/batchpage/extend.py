"""Extension points: what a new cache backend or serializer builds on.

Everyday code needs only the names of :mod:`batchpage`. This module is for
those who plug something in:

* :class:`Cache`: the protocol a cache layer implements (memory, Redis, and
  yours), with the rules every implementation keeps, held to them by the
  contract suite (``tests/redis/test_cache_contract.py``);
* :class:`Entry` and :class:`Freshness`: a cached value and its windows;
  :meth:`Entry.dumps`/:meth:`Entry.loads` are the format for a shared store,
  :func:`check_json` the check its payloads pass before they enter a page;
* :class:`InvalidationLog`: how a cache lets invalidation win over a fill in
  flight (the token of a lock marks a moment; a write after an invalidation
  of its key is refused);
* :class:`KeyBuilder`: the layout of cache keys, and :class:`KeyPattern`,
  the keys an invalidation drops (``Cache.invalidate`` takes one);
* :class:`Observer` and :class:`RefreshOutcome`: hooks for metrics, traces
  and logs (``batchpage.contrib.prometheus`` and ``.otel`` implement them);
* :class:`Serializer`: the protocol of a value encoder (JSON text, always).
"""

from __future__ import annotations

from contextlib import suppress as _suppress

from ._cache import Cache
from ._entry import Entry, Freshness, check_json
from ._invalidation import InvalidationLog
from ._keys import KeyBuilder, KeyPattern
from ._observer import Observer, RefreshOutcome
from ._serializer import Serializer

__all__ = [
    "Cache",
    "Entry",
    "Freshness",
    "InvalidationLog",
    "KeyBuilder",
    "KeyPattern",
    "Observer",
    "RefreshOutcome",
    "Serializer",
    "check_json",
]

for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith("batchpage._"):
        with _suppress(AttributeError, TypeError):
            _obj.__module__ = "batchpage.extend"
del _name, _obj
