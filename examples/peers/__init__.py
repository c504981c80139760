"""The homepage as a team writes it today, for the benchmarks to race batchpage against.

The same six MongoDB queries (:mod:`examples.homepage.queries`) in one
endpoint: ``asyncio.gather`` over them, each under ``asyncio.wait_for`` with
the example's section timeout, each cached by cashews in memory with the
example's freshness, and the page returned as JSON. FastAPI
(:mod:`.fastapi_app`) and Django (:mod:`.django_asgi`) serve it, with the
same session middleware as the examples, on the same server as the
examples. It is benchmark material, not an example to copy: no stale
serving, no single-flight, no circuit breaker, no deadline for the page.
"""
