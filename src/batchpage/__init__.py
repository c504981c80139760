"""batchpage: one batch response for a page's many slow section calls.

Sources run in parallel under timeouts, results sit in a layered cache with
stale-while-revalidate, and one failing section never fails the page.

The names here are the everyday API. Extension points (the ``Cache``
protocol, ``Entry``, ``Serializer``, ``KeyBuilder``) are in
:mod:`batchpage.extend`; HTTP glue is in :mod:`batchpage.contrib`.
"""

from contextlib import suppress as _suppress

from ._aggregator import Aggregator
from ._breaker import BreakerPolicy, BreakerState
from ._context import RequestContext
from ._errors import (
    AggregatorNotRunning,
    BatchpageError,
    ErrorCode,
    InvalidationIncomplete,
    InvalidParameter,
    SectionError,
    UnknownSectionError,
)
from ._executor import Executor, ExecutorStats
from ._layered import LayeredCache, LayeredCacheStats
from ._memory import MemoryCache
from ._orjson import OrjsonSerializer
from ._policy import CachePolicy
from ._redis import RedisCache, RedisCacheStats
from ._result import CacheStatus, PageResult, SectionResult
from ._rollout import Rollout
from ._scope import Scope
from ._section import NO_FALLBACK, Section, Source
from ._serializer import JsonSerializer
from ._stats import AggregatorStats

__all__ = [
    "NO_FALLBACK",
    "Aggregator",
    "AggregatorNotRunning",
    "AggregatorStats",
    "BatchpageError",
    "BreakerPolicy",
    "BreakerState",
    "CachePolicy",
    "CacheStatus",
    "ErrorCode",
    "Executor",
    "ExecutorStats",
    "InvalidParameter",
    "InvalidationIncomplete",
    "JsonSerializer",
    "LayeredCache",
    "LayeredCacheStats",
    "MemoryCache",
    "OrjsonSerializer",
    "PageResult",
    "RedisCache",
    "RedisCacheStats",
    "RequestContext",
    "Rollout",
    "Scope",
    "Section",
    "SectionError",
    "SectionResult",
    "Source",
    "UnknownSectionError",
]

__version__ = "0.1.0.dev0"

# Reprs and docs say ``batchpage.X``, not ``batchpage._module.X``.
for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith("batchpage."):
        with _suppress(AttributeError, TypeError):  # e.g. type aliases
            _obj.__module__ = "batchpage"
del _name, _obj
