"""How section values become bytes: JSON by default, never pickle.

A page on the wire is JSON, and it is assembled from each section's stored
bytes without decoding them again; so a serializer must write JSON text.

Beyond what ``json`` knows (dict, list, tuple, str, int, float, bool, None),
the default serializer writes the types a Python service meets, the same way
as :class:`~batchpage.OrjsonSerializer`:

* ``datetime``: ISO 8601 in UTC with a trailing ``Z``
  (``2026-11-23T21:00:00Z``, ``...:00.123456Z`` when it has microseconds); a
  naive datetime is read as UTC, as pymongo returns them.
* ``date``: ``2026-11-23``; ``time``: ``21:00:00``, an aware one in UTC with
  ``Z`` (a naive time of day is a wall-clock time, not an instant: no zone).
* ``Decimal`` (and bson's ``Decimal128``): a JSON number with the decimal's
  exact text (``19.90`` stays ``19.90``, never rounded through a float); NaN
  and infinities are an error, as JSON has neither.
* ``UUID`` and bson's ``ObjectId``: their canonical strings.
* enum members: their value, itself encoded by these rules.
* dataclass and attrs instances: objects of their fields, recursively.
* ``set`` and ``frozenset``: arrays.
* bson's ``DatetimeMS``: as the datetime it stands for.

bson types are recognised by their module, so the core never imports bson
(nor pymongo) until a bson value shows up. These encodings run only for the
types ``json`` does not know itself (its ``default=``): a value of plain
dicts, lists and strings costs what ``json.dumps`` costs, plus one substring
search of the output (see :class:`JsonSerializer`).
"""

from __future__ import annotations

import dataclasses
import enum
import json
import re
import secrets
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any, Protocol, runtime_checkable
from uuid import UUID

import attrs


@runtime_checkable
class Serializer(Protocol):
    """Encodes a section value as UTF-8 JSON bytes, and decodes it back."""

    def dumps(self, value: Any, /) -> bytes:
        """``value`` as UTF-8 JSON: one value, the bytes a page is joined from.

        Raises ``TypeError`` (or ``ValueError``) for what it cannot encode:
        the section is then ``SERIALIZATION_ERROR``.
        """
        ...

    def loads(self, data: bytes, /) -> Any:
        """The value of :meth:`dumps`'s bytes (read for ``PageResult.sections``)."""
        ...


class UnsupportedType(TypeError):
    """A value of a type no encoding knows; the message names the type."""

    def __init__(self, value: object) -> None:
        cls = type(value)
        name = cls.__qualname__
        article = "an" if name[:1].lower() in "aeiou" else "a"
        where = "" if cls.__module__ == "builtins" else f" ({cls.__module__}.{name})"
        super().__init__(f"cannot encode {article} {name}{where} value")
        self.type = cls


def encode_failure(exc: BaseException) -> str:
    """What went wrong when a value could not be encoded, for the log."""
    if isinstance(exc, UnsupportedType):
        return str(exc)
    return f"value is not serializable ({type(exc).__name__}: {exc})"


# -- the encodings ---------------------------------------------------------

#: Any day: an aware time is moved to UTC on it, and the day dropped again.
_EPOCH_DAY = date(2000, 1, 1)


def encode_datetime(value: datetime) -> str:
    """ISO 8601 in UTC with ``Z``; naive is UTC (pymongo's convention)."""
    if value.tzinfo is None:
        return value.isoformat() + "Z"
    offset = value.utcoffset()
    if offset is None:  # a zone that gives no offset: naive, by Python's rules
        return value.replace(tzinfo=None).isoformat() + "Z"
    if offset:
        value = value.astimezone(UTC)
    # A zero offset is always written "+00:00": swapped for "Z" (cheaper than replace()).
    return value.isoformat()[:-6] + "Z"


def encode_time(value: time) -> str:
    """``HH:MM:SS[.ffffff]``; an aware time in UTC with ``Z``, a naive one as it is."""
    offset = value.utcoffset()
    if offset is None:
        return value.replace(tzinfo=None).isoformat()
    moment = datetime.combine(_EPOCH_DAY, value.replace(tzinfo=None)) - offset
    return moment.time().isoformat() + "Z"


def decimal_text(value: Decimal) -> str:
    """The decimal's exact text, which is always a valid JSON number when finite."""
    if not value.is_finite():
        raise ValueError(f"cannot encode Decimal({str(value)!r}): JSON has no NaN or Infinity")
    return str(value)


_COEFFICIENT_BITS = (1 << 113) - 1
_MAX_COEFFICIENT = 10**34 - 1


def decimal128_text(value: Any) -> str:
    """A bson ``Decimal128``'s exact text, as ``str(value.to_decimal())`` but 4x faster.

    IEEE 754-2008 decimal128, binary integer form: sign, 14 exponent bits
    (bias 6176), 113 coefficient bits. NaN, infinities and the rarer forms
    (combination bits ``11``, a coefficient beyond 34 digits) go to bson's own
    decoder. Built from text, the Decimal is exact whatever the context.
    """
    bits = int.from_bytes(value.bid, "little")
    high = bits >> 64
    coefficient = bits & _COEFFICIENT_BITS
    if (high >> 61) & 0b11 == 0b11 or coefficient > _MAX_COEFFICIENT:
        return decimal_text(value.to_decimal())
    sign = "-" if high >> 63 else ""
    return str(Decimal(f"{sign}{coefficient}E{((high >> 49) & 0x3FFF) - 6176}"))


def _fields(value: Any) -> dict[str, Any]:
    return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}


def _attrs_fields(value: Any) -> dict[str, Any]:
    return {a.name: getattr(value, a.name) for a in attrs.fields(type(value))}


Encoding = Callable[[Any], Any]


class Encodings:
    """The ``default=`` of a JSON encoder (:attr:`default`): the types json does not know.

    ``raw_number(text)`` returns what the encoder writes as ``text`` itself:
    how a ``Decimal`` becomes a JSON number without passing through a float.
    Exact types are looked up in a dict (one lookup for a datetime); subclasses,
    enums, dataclasses, attrs classes and bson types take the slower path
    (bson's exact types join the dict once seen).
    """

    __slots__ = ("_by_type", "_raw_number", "default")

    def __init__(self, raw_number: Callable[[str], Any]) -> None:
        self._raw_number = raw_number
        by_type: dict[type, Encoding] = {
            datetime: encode_datetime,
            date: date.isoformat,
            time: encode_time,
            Decimal: lambda value: raw_number(decimal_text(value)),
            UUID: str,
            set: list,
            frozenset: list,
        }
        self._by_type = by_type
        lookup = by_type.get
        other = self._other

        # A closure, not __call__: json and orjson call it once per such value.
        def default(value: Any) -> Any:
            encode = lookup(type(value))
            if encode is not None:
                return encode(value)
            return other(value)

        self.default: Encoding = default

    def _other(self, value: Any) -> Any:
        cls = type(value)
        if isinstance(value, enum.Enum):
            return value.value
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return _fields(value)
        if attrs.has(cls):
            return _attrs_fields(value)
        if cls.__module__.startswith("bson."):
            encode = self._bson(cls)
            if encode is not None:
                self._by_type[cls] = encode
                return encode(value)
        # Subclasses of the types above.
        if isinstance(value, datetime):
            return encode_datetime(value)
        if isinstance(value, date):
            return value.isoformat()
        if isinstance(value, time):
            return encode_time(value)
        if isinstance(value, Decimal):
            return self._raw_number(decimal_text(value))
        if isinstance(value, UUID):
            return str(value)
        if isinstance(value, set | frozenset):
            return list(value)
        if isinstance(value, float):  # orjson leaves float subclasses to default=
            return float(value)
        raise UnsupportedType(value)

    def _bson(self, cls: type) -> Encoding | None:
        """The encoding of one of bson's types, imported only now that one is here."""
        from bson import DatetimeMS, Decimal128, ObjectId

        raw_number = self._raw_number
        if issubclass(cls, ObjectId):
            return str
        if issubclass(cls, Decimal128):
            return lambda value: raw_number(decimal128_text(value))
        if issubclass(cls, DatetimeMS):
            # as_datetime() is naive UTC; out of datetime's range it raises.
            return lambda value: encode_datetime(value.as_datetime())
        return None


# -- json ------------------------------------------------------------------

# ``json`` cannot write a number from text: a float subclass's repr is ignored.
# So a Decimal is written as a string that no value can contain (a NUL, then
# this process's random token), and that string, quotes and all, is replaced
# by the decimal's text once the encoder is done. The token never leaves the
# process: every occurrence in the output is replaced.
_TOKEN = secrets.token_hex(8)
_RAW_PREFIX = f"\x00{_TOKEN}"
_RAW_MARK = f"\\u0000{_TOKEN}"
_RAW = re.compile(f'"\\\\u0000{_TOKEN}([^"]*)"')


def _raw_json_number(text: str) -> str:
    return _RAW_PREFIX + text


_JSON_ENCODINGS = Encodings(_raw_json_number).default


def chain(first: Callable[[Any], Any], then: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A ``default=`` that asks ``first``; what it refuses with ``TypeError`` goes to ``then``."""

    def default(value: Any) -> Any:
        try:
            return first(value)
        except TypeError:
            return then(value)

    return default


class JsonSerializer:
    """The standard library's ``json``, compact, plus the types listed in this module.

    ``default``, when given, is asked first about every value ``json`` does not
    know itself (datetimes, decimals, ... included): what it returns is
    encoded, built-in encodings applying to that in turn; a ``TypeError`` from
    it leaves the value to the built-in encodings. So it can override one
    type's encoding, or add types, and keeps the rest.
    """

    __slots__ = ("_chunks", "_decoder", "_encode")

    def __init__(self, *, default: Callable[[Any], Any] | None = None) -> None:
        encodings: Callable[[Any], Any] = _JSON_ENCODINGS
        if default is not None:
            encodings = chain(default, encodings)
        self._encode = json.JSONEncoder(
            separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=encodings
        ).encode
        # ``JSONEncoder.encode`` makes a C encoder, and a dict of markers
        # against circular values, on every call; this one is made once,
        # without markers: a value that contains itself ends in
        # RecursionError, an encoding failure all the same. A quarter faster
        # on a section of ten documents, and reentrant (a default= may call
        # dumps() itself). Python's own encoder where there is no C one.
        make: Callable[..., Callable[[Any, int], Iterable[str]]] | None
        make = getattr(json.encoder, "c_make_encoder", None)
        self._chunks: Callable[[Any, int], Iterable[str]] | None = None
        if make is not None:
            self._chunks = make(
                None, encodings, json.encoder.encode_basestring, None, ":", ",", False, False, False
            )
        self._decoder = json.JSONDecoder()

    def dumps(self, value: Any, /) -> bytes:
        """``value`` as compact UTF-8 JSON; ``TypeError`` names a type nothing encodes."""
        chunks = self._chunks
        text = "".join(chunks(value, 0)) if chunks is not None else self._encode(value)
        # One substring search (about 0.3 us for a 2 KB section): cheaper than
        # per-call state, and safe when a default= calls dumps() itself.
        if _RAW_MARK in text:
            text = _RAW.sub(r"\1", text)
        return text.encode()

    def loads(self, data: bytes, /) -> Any:
        """The JSON value of ``data`` (decimals come back as floats, datetimes as strings)."""
        return self._decoder.decode(data.decode())
