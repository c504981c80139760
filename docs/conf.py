"""Sphinx configuration: the Markdown pages of docs/ (MyST) and the API reference (autodoc).

Built by ``./scripts/docs`` with warnings as errors, ``nitpicky`` on, and
nothing fetched: no intersphinx (the build runs without a network), so types
of the standard library and of third-party packages are not linked; the
``nitpick_ignore_regex`` below names them. Every batchpage type must resolve.
"""

from __future__ import annotations

import enum
import sys
import warnings
from importlib.metadata import version as _version

from sphinx.application import Sphinx
from sphinx.errors import PycodeError
from sphinx.pycode import ModuleAnalyzer

import batchpage.extend  # noqa: F401

# Importing batchpage.extend renames its classes' __module__ to
# ``batchpage.extend`` (as importing batchpage does for the everyday names), so
# that signatures documented before the extension points are reached already
# say ``batchpage.extend.Entry``, the name under which Entry is documented.

# sphinx-autodoc-typehints calls a Sphinx API that Sphinx 10 removes; not ours to fix.
warnings.filterwarnings("ignore", message=".*sphinx_autodoc_typehints", category=Warning)

project = "batchpage"
author = "batchpage developers"
copyright = "batchpage developers"
release = _version("batchpage")
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx_autodoc_typehints",
]

source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "README.md"]

# -- MyST -------------------------------------------------------------------

# Headings get anchors as GitHub makes them, so links such as
# ``concepts.md#pageresult-and-the-wire-shape`` work on both.
myst_heading_anchors = 3

# -- autodoc ------------------------------------------------------------------

autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "undoc-members": False}
autodoc_inherit_docstrings = True
# sphinx-autodoc-typehints: evaluates the string annotations of
# ``from __future__ import annotations`` and attrs' generated __init__.
typehints_fully_qualified = False
always_document_param_types = True
typehints_document_rtype = True
typehints_use_signature = False
typehints_use_signature_return = False


def _comments(qualname: str) -> list[str]:
    """The ``#:`` comment of a data name or attribute where batchpage defines it.

    autodoc reads ``#:`` comments in the module that a name's ``__module__``
    names, which is ``batchpage`` (or ``batchpage.extend``) for the re-exported
    names; the comments are in the private modules that define them.
    """
    *owner, attr = qualname.split(".")
    key = (".".join(owner), attr)
    for module in sorted(m for m in sys.modules if m.startswith("batchpage.")):
        try:
            docs = ModuleAnalyzer.for_module(module).find_attr_docs()
        except PycodeError:
            continue
        if docs.get(key):
            return list(docs[key])
    return []


def _document_from_comments(
    app: Sphinx, what: str, name: str, obj: object, options: object, lines: list[str]
) -> None:
    if not name.startswith("batchpage."):
        return
    # A value's own __doc__ is its type's (str, int, UnionType): the comment is its doc.
    if what in {"data", "attribute"}:
        module = max((m for m in sys.modules if name.startswith(m + ".")), key=len)
        lines[:] = _comments(name.removeprefix(module + "."))
    # An enum's values, each with its comment, as a list under the class's docstring
    # (api.md documents enums with :no-members:).
    elif what == "class" and isinstance(obj, enum.EnumMeta):
        members: list[enum.Enum] = list(obj)
        lines.append("")
        for member in members:
            comment = " ".join(_comments(f"{obj.__qualname__}.{member.name}")).strip()
            value = f"``{member.name}`` (``{member.value!r}``)"
            lines.append(f"* {value}: {comment}" if comment else f"* {value}")
        lines.append("")


def setup(app: Sphinx) -> None:
    app.connect("autodoc-process-docstring", _document_from_comments)


# -- nitpicky -----------------------------------------------------------------

nitpicky = True
# No intersphinx (the build fetches nothing), so these cannot be linked:
nitpick_ignore_regex = [
    # the standard library (builtins such as int resolve by themselves)
    (r"py:.*", r"(collections\.abc|datetime|types|contextlib|enum|asyncio|multiprocessing)\..*"),
    (r"py:.*", r"typing\..*|Ellipsis"),
    # third-party packages: anyio, attrs, redis-py, Starlette, Django, prometheus-client,
    # OpenTelemetry
    (r"py:.*", r"(anyio|attr|attrs|redis|starlette|django|prometheus_client|opentelemetry)\..*"),
]
# Private types in the signatures of public methods that batchpage's own layers
# call (Executor.call, RedisCache.store): shown by name, documented nowhere.
nitpick_ignore = [
    ("py:class", "batchpage._breaker.CircuitBreaker"),
    ("py:class", "batchpage._executor.Attempt"),
    ("py:class", "batchpage._redis.Stored"),
    ("py:class", "ScopeKey"),  # Callable[[RequestContext], str]: a custom Scope
]

# -- HTML -------------------------------------------------------------------

html_theme = "furo"
html_title = f"batchpage {release}"
html_static_path: list[str] = []

# _keys.py names Section and RequestContext for mypy only (importing them there
# would be circular): the typehints extension cannot resolve them, and shows
# them by name.
suppress_warnings = ["sphinx_autodoc_typehints.forward_reference"]
