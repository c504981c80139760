"""What the demo page (``GET /``) needs of the server: a simulated network, and a fault switch.

Both apps use these alike, so the page behaves the same against either.

Simulated network latency (on every server, off unless a request asks)
    A request with ``X-Simulated-Latency-Ms: <n>`` (an integer from 0 to
    :data:`MAX_SIMULATED_LATENCY_MS`) is answered ``n`` ms late: the server
    sleeps before handling it, as if the round trip of a phone network (the
    seed's ~300 ms per call) lay between the browser and the server. A
    missing header or ``0`` changes nothing. Any other value (not a plain
    integer, out of range, given twice) is a 400 naming the header, in the
    error shape of every 4xx. It is a simulation, and says so: its answers
    carry ``Server-Timing: simulatedLatency;dur=<n>`` and are
    ``Cache-Control: no-store``, so no cache keeps an answer that was slowed
    on purpose; the sleep happens before the request reaches the app, so the
    server's own cache, its keys and its statuses are those of any request.
    It slows only the request that asks, by at most two seconds: no more
    than a client that sends its request slowly could hold a connection.
    :class:`SimulatedLatency` is the ASGI middleware doing this; the FastAPI
    app adds it in ``create_app``, the Django app in its ``asgi`` module.

The run-time fault switch (only with ``BATCHPAGE_DEMO_FAULTS=1``)
    ``GET /demo/faults`` says which sections misbehave now and the state of
    each section's circuit breaker; ``POST /demo/faults`` with
    ``{"section": "featuredEvents", "fault": "error"}`` changes one (``error``,
    ``hang``, ``delay:<n>ms`` or ``none``). A fault applies to the section's
    query wherever it runs: its source in the batch page and the stream, and
    its legacy endpoint. The switch drops the section's cached entries, so
    the next request calls the (now faulty) source, and a stale value cannot
    hide the fault; errors and timeouts are not cached, so the fault shows
    on every request until it is switched off. The section's circuit breaker
    sees these failures like any others: after five in a row it stays open
    for 30 s (``CIRCUIT_OPEN``), also after the fault is switched off.

    Without the flag the routes do not exist (404). With it, anyone who can
    reach the server can break its page: it is for demo and rehearsal
    servers (``python -m examples.serve`` turns it on, on loopback), never
    production. The body must be ``application/json`` (a 415 otherwise),
    which a cross-site form cannot send without the browser asking first.
    The switch is per process: with several workers, each has its own.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from typing import Any, Final

import anyio
import attrs

from batchpage import Aggregator, InvalidationIncomplete, InvalidParameter, Section
from batchpage.contrib.http import Reply, error_reply, integer, json_reply
from examples.homepage.mongo import Database, Document
from examples.homepage.sources import LegacyQuery

from .faults import Fault, faulty_source, inject, parse_fault

logger = logging.getLogger("examples.service")

# -- simulated network latency ------------------------------------------------

SIMULATED_LATENCY_HEADER: Final = "X-Simulated-Latency-Ms"
#: The longest simulated latency a request may ask for, in milliseconds.
MAX_SIMULATED_LATENCY_MS: Final = 2000
_LATENCY = integer(0, MAX_SIMULATED_LATENCY_MS)
_LATENCY_KEY: Final = SIMULATED_LATENCY_HEADER.lower().encode("latin-1")

ASGIScope = MutableMapping[str, Any]
ASGIMessage = MutableMapping[str, Any]
ASGIReceive = Callable[[], Awaitable[ASGIMessage]]
ASGISend = Callable[[ASGIMessage], Awaitable[None]]
ASGIApp = Callable[[ASGIScope, ASGIReceive, ASGISend], Awaitable[None]]


def simulated_latency_ms(headers: Iterable[tuple[bytes, bytes]]) -> int:
    """The latency a request asks for (ASGI headers), 0 for none.

    Raises :class:`~batchpage.InvalidParameter` naming the header when its
    value is not a plain integer from 0 to :data:`MAX_SIMULATED_LATENCY_MS`
    or the header is given twice.
    """
    values = [value for name, value in headers if name.lower() == _LATENCY_KEY]
    if not values:
        return 0
    field = SIMULATED_LATENCY_HEADER
    if len(values) > 1:
        raise InvalidParameter(field, f"{field} must be given once")
    try:
        ms: int = _LATENCY(values[0].decode("ascii").strip())
    except (ValueError, UnicodeDecodeError):
        raise InvalidParameter(
            field, f"{field} must be an integer between 0 and {MAX_SIMULATED_LATENCY_MS}"
        ) from None
    return ms


class SimulatedLatency:
    """ASGI middleware: answer a request ``X-Simulated-Latency-Ms`` late (see the module doc).

    ``sleep`` is how it waits (``anyio.sleep``; tests may pass their own).
    """

    def __init__(
        self, app: ASGIApp, *, sleep: Callable[[float], Awaitable[None]] = anyio.sleep
    ) -> None:
        self.app = app
        self.sleep = sleep

    async def __call__(self, scope: ASGIScope, receive: ASGIReceive, send: ASGISend) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            ms = simulated_latency_ms(scope.get("headers", ()))
        except InvalidParameter as error:
            await _send_reply(send, error_reply(error))
            return
        if ms == 0:
            await self.app(scope, receive, send)
            return
        await self.sleep(ms / 1000)
        timing = f'simulatedLatency;dur={ms};desc="simulated network latency"'.encode()

        async def marked(message: ASGIMessage) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (name, value)
                    for name, value in message.get("headers", ())
                    if name.lower() != b"cache-control"
                ]
                headers += [(b"cache-control", b"no-store"), (b"server-timing", timing)]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, marked)


async def _send_reply(send: ASGISend, reply: Reply) -> None:
    headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in reply.headers]
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    await send({"type": "http.response.body", "body": reply.body})


# -- the run-time fault switch ----------------------------------------------------

DEMO_FAULTS_ENV: Final = "BATCHPAGE_DEMO_FAULTS"
_BODY_SHAPE = 'the body must be {"section": "...", "fault": "error|hang|delay:<n>ms|none"}'


def _names(names: Iterable[str]) -> tuple[str, ...]:
    return tuple(names)


@attrs.define
class FaultSwitch:
    """Which sections misbehave now; the sources and legacy queries ask it at each call."""

    sections: tuple[str, ...] = attrs.field(converter=_names)
    _faults: dict[str, Fault] = attrs.field(factory=dict, init=False)

    @property
    def faults(self) -> Mapping[str, Fault]:
        return dict(self._faults)

    def fault(self, section: str) -> Fault | None:
        return self._faults.get(section)

    def set(self, section: str, fault: Fault | None) -> None:
        if section not in self.sections:
            raise KeyError(section)
        if fault is None:
            self._faults.pop(section, None)
        else:
            self._faults[section] = fault
        logger.warning("demo fault switch: %s is now %s", section, fault.spec if fault else "none")

    def wrap_section(self, section: Section) -> Section:
        """The section, its source asking the switch first (its cache policy kept)."""
        name = section.name
        return attrs.evolve(section, source=faulty_source(section, lambda: self.fault(name)))

    def wrap_legacy(self, name: str, query: LegacyQuery) -> LegacyQuery:
        """A legacy endpoint's query, asking the switch first."""

        async def legacy(db: Database, limit: int, user_id: str | None) -> list[Document]:
            fault = self.fault(name)
            if fault is not None:
                await inject(fault, name)
            return await query(db, limit, user_id)

        return legacy


def parse_fault_request(body: bytes, sections: Iterable[str]) -> tuple[str, Fault | None]:
    """The section and fault of a ``POST /demo/faults`` body (``None``: no fault)."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise InvalidParameter("body", _BODY_SHAPE) from None
    if not isinstance(data, dict) or set(data) != {"section", "fault"}:
        raise InvalidParameter("body", _BODY_SHAPE)
    section, what = data["section"], data["fault"]
    names = tuple(sections)
    if not isinstance(section, str) or section not in names:
        raise InvalidParameter("section", f"section must be one of: {', '.join(names)}")
    if not isinstance(what, str):
        raise InvalidParameter("fault", "fault must be error, hang, delay:<n>ms or none")
    if what == "none":
        return section, None
    try:
        return section, parse_fault(what)
    except ValueError:
        raise InvalidParameter(
            "fault", "fault must be error, hang, delay:<n>ms (at most 60 s) or none"
        ) from None


def faults_reply(switch: FaultSwitch, aggregator: Aggregator) -> Reply:
    """``GET /demo/faults``: ``{"faults": {section: fault}, "breakers": {section: state}}``."""
    return json_reply(
        200,
        {
            "faults": {name: fault.spec for name, fault in switch.faults.items()},
            "breakers": {name: aggregator.breaker_state(name).value for name in switch.sections},
        },
    )


async def set_fault_reply(
    switch: FaultSwitch, aggregator: Aggregator, body: bytes, content_type: str | None
) -> Reply:
    """``POST /demo/faults``: set or clear one section's fault; answers as ``GET`` does."""
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type != "application/json":
        return json_reply(
            415,
            {"error": {"field": "Content-Type", "message": "the body must be application/json"}},
        )
    try:
        section, fault = parse_fault_request(body, switch.sections)
    except InvalidParameter as error:
        return error_reply(error)
    switch.set(section, fault)
    try:  # no cached value may hide the fault (nor outlive it)
        await aggregator.invalidate(section)
    except InvalidationIncomplete:
        logger.warning("demo fault switch: %s's cached entries were not all dropped", section)
    return faults_reply(switch, aggregator)
