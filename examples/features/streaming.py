"""Streaming: each section as soon as it is ready, fastest first, then the page's summary.

``Aggregator.stream()`` yields each :class:`~batchpage.SectionResult` as it
completes, cached ones first; ``PageEndpoint.ndjson()`` is the same as the
lines an HTTP client reads (``GET /page/stream``: one JSON document per line,
then ``{"errors", "metadata", "status"}``). A client renders the quick
sections while the slow one is still on its way.
Run: ``python -m examples.features.streaming``.
"""

from __future__ import annotations

import contextlib
import time

import anyio

from batchpage import Aggregator, RequestContext, Section
from batchpage.contrib.http import PageEndpoint


def after(seconds: float, value: object) -> Section:
    """A section whose source answers ``value`` after ``seconds``."""

    async def source(ctx: RequestContext) -> object:
        await anyio.sleep(seconds)
        return value

    return Section(name=f"after{int(seconds * 1000)}ms", source=source, timeout=1.0)


SECTIONS = [after(0.3, ["slow"]), after(0.1, ["medium"]), after(0.0, ["instant"])]


async def main() -> None:
    async with Aggregator(SECTIONS, page="stream-demo") as agg:
        start = time.perf_counter()
        async with contextlib.aclosing(agg.stream(RequestContext())) as results:
            async for result in results:
                ms = (time.perf_counter() - start) * 1000
                print(f"{result.name:<12} at {ms:5.0f} ms: {result.value}")

        print("\nAs NDJSON, the lines of GET /stream-demo/stream:")
        endpoint = PageEndpoint(agg)
        async with contextlib.aclosing(endpoint.ndjson(endpoint.parse(""))) as lines:
            async for line in lines:
                print(line.decode().rstrip())


if __name__ == "__main__":
    anyio.run(main)
