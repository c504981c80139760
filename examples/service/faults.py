"""A test and operations hook: make chosen sections fail, hang or slow down. Off by default.

``BATCHPAGE_EXAMPLE_FAULTS`` (or Django's ``HOMEPAGE_FAULTS``) is read once at
start-up: a comma list of ``section=fault``, where a fault is

* ``error``: the source raises at once;
* ``hang``: the source never answers (the section's timeout cuts it);
* ``delay:<n>ms`` (or ``delay:<n>s``): the source answers after ``n``.

For example ``featuredEvents=hang,flashSales=error,newArrivals=delay:300ms``.
This is how the tests make a real server (a real section over a real
database) misbehave, without a mock; operators can use it to rehearse a
degraded page. A faulted section is never cached, so every request sees
the fault, and a warning at start-up says faults are on.

The demo page's run-time switch (:mod:`examples.service.demo`, only with
``BATCHPAGE_DEMO_FAULTS=1``) uses the same faults, changed while the server
runs.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any, Literal

import anyio
import attrs

from batchpage import RequestContext, Section

logger = logging.getLogger("examples.service")

_DELAY = re.compile(r"delay:([0-9]+(?:\.[0-9]+)?)(ms|s)")
MAX_DELAY = 60.0


class FaultInjected(RuntimeError):
    """What an ``error`` fault raises (the page reports a ``SOURCE_ERROR``)."""


@attrs.frozen
class Fault:
    kind: Literal["error", "hang", "delay"]
    seconds: float = 0.0  #: the delay, for ``delay``

    @property
    def spec(self) -> str:
        """As written in a fault list: ``error``, ``hang``, ``delay:250ms``."""
        if self.kind == "delay":
            return f"delay:{self.seconds * 1000:g}ms"
        return self.kind


def parse_fault(what: str) -> Fault:
    """One fault: ``error``, ``hang`` or ``delay:<n>ms`` (``<n>s``); else a ``ValueError``."""
    if what in ("error", "hang"):
        return Fault(what)  # type: ignore[arg-type]  # narrowed by the test
    match = _DELAY.fullmatch(what)
    if match is None:
        raise ValueError(f"faults: {what!r} must be error, hang or delay:<n>ms")
    seconds = float(match[1]) / (1000 if match[2] == "ms" else 1)
    if seconds > MAX_DELAY:
        raise ValueError(f"faults: a delay must be at most {MAX_DELAY:g} s, got {what!r}")
    return Fault("delay", seconds)


def parse_faults(spec: str, sections: Collection[str]) -> dict[str, Fault]:
    """``"name=fault,..."`` as a mapping; an unknown section or fault is a ``ValueError``."""
    faults: dict[str, Fault] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, sep, what = item.partition("=")
        if not sep or name not in sections:
            raise ValueError(
                f"faults: {item!r} must be section=fault, section one of {', '.join(sections)}"
            )
        if name in faults:
            raise ValueError(f"faults: {name} is given twice")
        faults[name] = parse_fault(what)
    return faults


async def inject(fault: Fault, name: str) -> None:
    """Misbehave as ``fault`` says: raise, never return, or return after the delay."""
    if fault.kind == "error":
        raise FaultInjected(f"fault injected into {name}")
    if fault.kind == "hang":
        await anyio.sleep_forever()
    await anyio.sleep(fault.seconds)


def faulty_source(section: Section, fault_of: Callable[[], Fault | None]) -> Any:
    """The section's source, misbehaving whenever ``fault_of()`` (asked at each call) says so."""
    source = section.source

    async def faulty(ctx: RequestContext) -> Any:
        fault = fault_of()
        if fault is not None:
            await inject(fault, section.name)
        result = source(ctx)
        if section.is_async:
            result = await result
        return result

    faulty.__name__ = faulty.__qualname__ = section.name
    return faulty


def _always(fault: Fault) -> Callable[[], Fault]:
    return lambda: fault


def apply_faults(sections: Iterable[Section], faults: Mapping[str, Fault]) -> list[Section]:
    """The sections with their faults wired in (and their caching off)."""
    out: list[Section] = []
    for section in sections:
        fault = faults.get(section.name)
        if fault is None:
            out.append(section)
            continue
        logger.warning("FAULT INJECTED into section %s: %s", section.name, fault)
        source = faulty_source(section, _always(fault))
        out.append(attrs.evolve(section, source=source, cache=None))
    return out
