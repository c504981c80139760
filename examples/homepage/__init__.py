"""The seed's homepage over MongoDB: data, queries and batchpage sections.

* :mod:`.mongo`: where the database is (``MONGODB_URL`` or an embedded
  nx-27017 on a loopback port) and the client to reach it;
* :mod:`.data`: the five collections, seeded deterministically, and their indexes;
* :mod:`.queries`: the six queries, returning JSON-ready dicts;
* :mod:`.sources`: the six :class:`batchpage.Section` s, and the same queries
  for the legacy endpoints.

Seed a real MongoDB with ``python -m examples.homepage seed``.
"""
