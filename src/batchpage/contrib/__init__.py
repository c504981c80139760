"""Glue to the world around a page: HTTP frameworks, metrics and traces.

Each module needs its extra, and importing one without it says which:

* :mod:`batchpage.contrib.http`: HTTP without a framework (parameters,
  headers, ETags, NDJSON); no extra;
* :mod:`batchpage.contrib.fastapi` (``batchpage[fastapi]``) and
  :mod:`batchpage.contrib.django` (``batchpage[django]``): its replies as
  each framework's responses;
* :mod:`batchpage.contrib.prometheus` (``batchpage[prometheus]``) and
  :mod:`batchpage.contrib.otel` (``batchpage[otel]``): observers for metrics
  and traces.
"""
