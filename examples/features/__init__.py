"""Small runnable examples, one feature each.

Run one from the repository root: ``python -m examples.features.NAME``;
``tests/examples/test_feature_examples.py`` runs them all.

* ``seed_page``: six slow sections as one batch, against calling them in turn;
* ``invalidation``: drop one user's entry, a whole section, or every entry (version);
* ``streaming``: sections as they complete, as NDJSON lines;
* ``custom_scope``: one cache entry per customer segment, not per user;
* ``sync_source``: a blocking function as a source, and what a hung one costs;
* ``metrics``: Prometheus metrics of a page;
* ``layered_redis``: two instances sharing Redis behind their memory (needs ``REDIS_URL``).
"""
