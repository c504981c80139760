"""Error codes a page reports, and the exceptions batchpage raises.

The exception tree::

    BatchpageError
    ├── AggregatorNotRunning      (RuntimeError: fetch outside ``async with``)
    ├── InvalidationIncomplete    (RuntimeError: a cache layer missed an invalidation)
    ├── InvalidParameter          (ValueError: a request's parameter is malformed: HTTP 400)
    └── UnknownSectionError       (ValueError: a requested section is not defined)

A *section* failure is never raised: it becomes a :class:`SectionError` in the
page's ``errors`` list, so that one failing source never fails the page.
"""

from __future__ import annotations

import enum

import attrs


class ErrorCode(enum.StrEnum):
    """Why a section has no value of its own; the ``code`` of an error entry."""

    #: The section's timeout or the page deadline passed before the source answered.
    TIMEOUT_ERROR = "TIMEOUT_ERROR"
    #: The source raised an exception (details go to the log, not the client).
    SOURCE_ERROR = "SOURCE_ERROR"
    #: The section's circuit breaker is open: the source was not called.
    CIRCUIT_OPEN = "CIRCUIT_OPEN"
    #: Cancelled because the page no longer needed it (fail-fast, shutdown).
    CANCELLED = "CANCELLED"
    #: The source answered with a value the serializer cannot encode.
    SERIALIZATION_ERROR = "SERIALIZATION_ERROR"


@attrs.frozen
class SectionError:
    """One entry of a page's ``errors``: safe to show to clients.

    ``message`` never carries a traceback, a hostname or a credential; the full
    exception is logged where it happened.
    """

    section: str
    code: ErrorCode
    message: str

    def to_dict(self) -> dict[str, str]:
        """The entry as it is on the wire: ``{"section", "code", "message"}``."""
        return {"section": self.section, "code": self.code.value, "message": self.message}


class BatchpageError(Exception):
    """Base class of every exception batchpage raises."""


class AggregatorNotRunning(BatchpageError, RuntimeError):
    """The aggregator was used outside ``async with``; it owns background work."""


class InvalidationIncomplete(BatchpageError, RuntimeError):
    """A cache layer (Redis) could not be reached: its old entries may come back.

    The layers that could be reached were invalidated; retry the call.
    """


# A requested name comes from the caller, perhaps from a URL: a message (and
# the log line it ends up in) shows a bounded part of it.
_ECHO_CHARS = 64
_ECHO_NAMES = 5


def echo(value: object) -> str:
    """``repr(value)``, cut after 64 characters: for messages that quote input."""
    text = repr(value)
    return text if len(text) <= _ECHO_CHARS else text[:_ECHO_CHARS] + "…"


def echo_all(values: list[str]) -> str:
    """The first few of ``values``, each cut by :func:`echo`, and how many more."""
    shown = ", ".join(echo(v) for v in values[:_ECHO_NAMES])
    more = len(values) - _ECHO_NAMES
    return f"{shown} and {more} more" if more > 0 else shown


class UnknownSectionError(BatchpageError, ValueError):
    """A page was asked for a section it does not define.

    The message shows the first few names, each cut short; ``names`` holds
    them all, in full.
    """

    def __init__(self, names: list[str]) -> None:
        self.names = names
        super().__init__(f"unknown section(s): {echo_all(names)}")


class InvalidParameter(BatchpageError, ValueError):
    """A request's parameter is missing, malformed or out of range (HTTP ``400``).

    ``field`` is the parameter's wire name; ``message`` is safe to show and
    never echoes the offending value. Raised by the parsers of
    :mod:`batchpage.contrib.http` (and by an application's own).
    """

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")

    def to_dict(self) -> dict[str, dict[str, str]]:
        """The error body: ``{"error": {"field": ..., "message": ...}}``."""
        return {"error": {"field": self.field, "message": self.message}}
