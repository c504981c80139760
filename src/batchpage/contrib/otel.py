"""OpenTelemetry traces of an aggregator, through ``opentelemetry-api``.

::

    from batchpage.contrib.otel import OpenTelemetryObserver

    agg = Aggregator(sections, page="homepage", observers=[OpenTelemetryObserver()])

A span per page (``batchpage.page``) and, as its children, a span per section
(``batchpage.section``) with the cache status and error code as attributes
(``batchpage.cache``, ``batchpage.error_code``, ``batchpage.stand_in``). A
section's span is current while its source runs, so the source's own spans
(pymongo's, httpx's, with their instrumentations) nest under it. Sections
answered from the cache get a span too, as long as the lookup. Configure the
SDK (a ``TracerProvider`` and exporter) as for any application.
"""

from __future__ import annotations

from batchpage import PageResult, RequestContext, SectionResult
from batchpage._extras import require
from batchpage.extend import Observer

require("opentelemetry.trace", extra="otel", what="batchpage.contrib.otel")

from opentelemetry import context as otel_context  # noqa: E402
from opentelemetry import trace  # noqa: E402

__all__ = ["OpenTelemetryObserver"]


class _Open:
    """A span and the context token that made it current."""

    __slots__ = ("span", "token")

    def __init__(self, span: trace.Span, token: object) -> None:
        self.span = span
        self.token = token


class OpenTelemetryObserver(Observer):
    """An :class:`~batchpage.extend.Observer` that records spans with ``tracer``.

    ``tracer`` defaults to ``trace.get_tracer("batchpage")`` of the global
    provider, looked up per page so that a provider set later is used.
    """

    def __init__(self, tracer: trace.Tracer | None = None) -> None:
        self._tracer = tracer

    @property
    def tracer(self) -> trace.Tracer:
        """The tracer given, else the global provider's ``batchpage`` tracer as it is now."""
        return self._tracer if self._tracer is not None else trace.get_tracer("batchpage")

    def _start(self, name: str, attributes: dict[str, str]) -> _Open:
        span = self.tracer.start_span(name, attributes=attributes)
        token = otel_context.attach(trace.set_span_in_context(span))
        return _Open(span, token)

    @staticmethod
    def _end(opened: object) -> None:
        if isinstance(opened, _Open):
            try:
                otel_context.detach(opened.token)  # type: ignore[arg-type]
            finally:
                opened.span.end()

    def page_started(self, page: str, ctx: RequestContext) -> object:
        """Start and make current the page's span (whether it is personal, never who)."""
        attributes = {"batchpage.page": page}
        if ctx.user_id is not None:
            attributes["batchpage.personal"] = "true"  # whether, never who
        return self._start("batchpage.page", attributes)

    def page_finished(self, token: object, page: str, result: PageResult) -> None:
        """End the page's span with its status; a 503 marks it an error."""
        if isinstance(token, _Open):
            token.span.set_attribute("http.response.status_code", result.status_code)
            token.span.set_attribute("batchpage.partial_failure", result.partial_failure)
            if result.status_code >= 500:
                token.span.set_status(trace.StatusCode.ERROR)
        self._end(token)

    def section_started(self, page: str, section: str) -> object:
        """Start a child span, current while the source runs, so its own spans nest."""
        return self._start(
            "batchpage.section", {"batchpage.page": page, "batchpage.section": section}
        )

    def section_finished(self, token: object, page: str, result: SectionResult) -> None:
        """End the section's span (a cache hit gets one as long as the lookup) with its
        cache status and error code; a section with nothing to show marks it an error."""
        if not isinstance(token, _Open):  # answered from the cache: a span as long as the lookup
            span = self.tracer.start_span(
                "batchpage.section",
                attributes={"batchpage.page": page, "batchpage.section": result.name},
            )
            token = _Open(span, None)
        span = token.span
        span.set_attribute("batchpage.cache", result.cache.value)
        span.set_attribute("batchpage.stand_in", result.stand_in)
        if result.error is not None:
            span.set_attribute("batchpage.error_code", result.error.code.value)
            if result.unavailable:
                span.set_status(trace.StatusCode.ERROR, result.error.message)
        if token.token is None:
            span.end()
        else:
            self._end(token)
