"""A faster serializer on orjson (``pip install 'batchpage[orjson]'``), same JSON as the default.

orjson encodes dicts, lists, strings, numbers, UUIDs and enums itself, in
Rust; every other type goes through the very encodings of
:class:`~batchpage.JsonSerializer` (datetimes and dataclasses included: orjson
is told to pass them on, since its own way differs: it keeps a datetime's
offset, and writes a dataclass's ``__dict__``). A ``Decimal`` becomes an
``orjson.Fragment`` of its exact text.

What orjson refuses and ``json`` accepts (integers beyond 64 bits, dict keys
that are not strings, nesting deeper than 255) is written by ``json``, so both
serializers write the same JSON for every value; a value neither can encode
raises ``json``'s error (the type named).

Where the two differ, as documented in ``docs/cache.md``: orjson writes a
NaN or infinite *float* as ``null`` where ``json`` refuses it; and orjson
reads an integer beyond 64 bits back as a float.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._serializer import Encodings, JsonSerializer, chain


def _import_orjson() -> Any:
    try:
        import orjson
    except ImportError as exc:
        raise ModuleNotFoundError(
            "OrjsonSerializer needs orjson: pip install 'batchpage[orjson]'"
        ) from exc
    return orjson


class OrjsonSerializer:
    """orjson, compact, with the types and the wire results of :class:`JsonSerializer`.

    ``default`` is asked first about the values orjson leaves to it (see
    :class:`JsonSerializer`); UUIDs and enum members never reach it, since orjson
    writes them itself. Raises ``ModuleNotFoundError`` when orjson is not
    installed (``pip install 'batchpage[orjson]'``).
    """

    __slots__ = ("_default", "_dumps", "_encode_error", "_json", "_loads", "_option")

    def __init__(self, *, default: Callable[[Any], Any] | None = None) -> None:
        lib = _import_orjson()
        encodings: Callable[[Any], Any] = Encodings(lib.Fragment).default
        if default is not None:
            encodings = chain(default, encodings)
        self._default = encodings
        self._dumps: Callable[..., bytes] = lib.dumps
        self._loads: Callable[[bytes], Any] = lib.loads
        self._option: int = lib.OPT_PASSTHROUGH_DATETIME | lib.OPT_PASSTHROUGH_DATACLASS
        self._encode_error: type[Exception] = lib.JSONEncodeError
        self._json = JsonSerializer(default=default)

    def dumps(self, value: Any, /) -> bytes:
        """``value`` as compact UTF-8 JSON, byte for byte what :class:`JsonSerializer` writes."""
        try:
            return self._dumps(value, default=self._default, option=self._option)
        except self._encode_error:
            # What orjson refuses json may take (big ints, int keys, deep
            # nesting); what neither takes raises json's error, naming the type.
            return self._json.dumps(value)

    def loads(self, data: bytes, /) -> Any:
        """The JSON value of ``data`` (an integer beyond 64 bits comes back a float)."""
        try:
            return self._loads(data)
        except ValueError:
            # orjson refuses numbers beyond a double's range, which a Decimal
            # may write; json reads them (as infinities), or raises its error.
            return self._json.loads(data)
