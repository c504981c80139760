"""What an aggregator counts about its own work."""

from __future__ import annotations

import attrs


@attrs.define
class AggregatorStats:
    """Counters of the aggregator's own work (the executor and caches count theirs)."""

    pages: int = 0
    refreshes: int = 0
    refresh_failures: int = 0
    #: another instance held the lock or refreshed first, or the breaker was open
    refreshes_skipped: int = 0
    refreshes_dropped: int = 0  #: not started: the background bound was full
    shared_fetches: int = 0  #: misses answered by another caller's fetch
    serialization_errors: int = 0
    writes_dropped: int = 0  #: fetched values not stored: an invalidation won, or the cache refused
