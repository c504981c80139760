"""How section values become bytes: JSON by default, never pickle.

A page on the wire is JSON, and it is assembled from each section's stored
bytes without decoding them again; so a serializer must write JSON text. Plug
in another one for speed (orjson) or for types ``json`` does not know.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Serializer(Protocol):
    """Encodes a section value as UTF-8 JSON bytes, and decodes it back."""

    def dumps(self, value: Any, /) -> bytes: ...

    def loads(self, data: bytes, /) -> Any: ...


class JsonSerializer:
    """The standard library's ``json``, compact; ``default`` encodes other types."""

    __slots__ = ("_decoder", "_encoder")

    def __init__(self, *, default: Callable[[Any], Any] | None = None) -> None:
        self._encoder = json.JSONEncoder(
            separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=default
        )
        self._decoder = json.JSONDecoder()

    def dumps(self, value: Any, /) -> bytes:
        return self._encoder.encode(value).encode()

    def loads(self, data: bytes, /) -> Any:
        return self._decoder.decode(data.decode())
