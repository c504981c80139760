"""Optional dependencies, imported where used, with an error that names the extra."""

from __future__ import annotations

import importlib
from types import ModuleType


def require(module: str, *, extra: str, what: str) -> ModuleType:
    """``import module``, or an ``ImportError`` saying which extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"{what} needs {module.split('.')[0]}: pip install 'batchpage[{extra}]'"
        ) from exc
