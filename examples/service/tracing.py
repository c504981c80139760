"""The examples' tracing switch: ``BATCHPAGE_OTEL=console`` prints each span.

Off by default. ``console`` sets up OpenTelemetry's SDK with a console
exporter (for a look at a page's spans); a real deployment configures its own
``TracerProvider`` and exporter, and batchpage's spans join its traces.
"""

from __future__ import annotations

import sys
from functools import cache

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

EXPORTERS = ("console",)


@cache
def tracer_for(exporter: str) -> trace.Tracer:
    """A tracer whose spans go to ``exporter`` (once per process: providers are global)."""
    if exporter not in EXPORTERS:
        raise ValueError(f"BATCHPAGE_OTEL must be one of {', '.join(EXPORTERS)}, got {exporter!r}")
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(out=sys.stdout)))
    return provider.get_tracer("batchpage.examples")
