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
"""

from __future__ import annotations

import logging
import re
from collections.abc import Collection, Iterable, Mapping
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
        if what in ("error", "hang"):
            faults[name] = Fault(what)  # type: ignore[arg-type]  # narrowed by the test
            continue
        match = _DELAY.fullmatch(what)
        if match is None:
            raise ValueError(f"faults: {what!r} must be error, hang or delay:<n>ms")
        seconds = float(match[1]) / (1000 if match[2] == "ms" else 1)
        if seconds > MAX_DELAY:
            raise ValueError(f"faults: a delay must be at most {MAX_DELAY:g} s, got {what!r}")
        faults[name] = Fault("delay", seconds)
    return faults


def _faulty(section: Section, fault: Fault) -> Any:
    source = section.source

    async def faulty(ctx: RequestContext) -> Any:
        if fault.kind == "error":
            raise FaultInjected(f"fault injected into {section.name}")
        if fault.kind == "hang":
            await anyio.sleep_forever()
        await anyio.sleep(fault.seconds)
        result = source(ctx)
        if section.is_async:
            result = await result
        return result

    faulty.__name__ = faulty.__qualname__ = section.name
    return faulty


def apply_faults(sections: Iterable[Section], faults: Mapping[str, Fault]) -> list[Section]:
    """The sections with their faults wired in (and their caching off)."""
    out: list[Section] = []
    for section in sections:
        fault = faults.get(section.name)
        if fault is None:
            out.append(section)
            continue
        logger.warning("FAULT INJECTED into section %s: %s", section.name, fault)
        out.append(attrs.evolve(section, source=_faulty(section, fault), cache=None))
    return out
