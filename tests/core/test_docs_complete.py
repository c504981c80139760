"""Every public name has a docstring and a place in the API reference (docs/api.md).

Public: each name in the ``__all__`` of ``batchpage``, ``batchpage.extend`` and
the ``batchpage.contrib`` modules, and the public methods and properties those
classes define. A data name's docstring is its ``#:`` comment where it is
assigned, as Sphinx reads it (``docs/conf.py`` looks there too).
"""

from __future__ import annotations

import enum
import functools
import importlib
import inspect
import re
import sys
from pathlib import Path

import pytest
from sphinx.errors import PycodeError
from sphinx.pycode import ModuleAnalyzer

ROOT = Path(__file__).resolve().parents[2]
API = ROOT / "docs" / "api.md"

MODULES = [
    "batchpage",
    "batchpage.extend",
    "batchpage.contrib.http",
    "batchpage.contrib.fastapi",
    "batchpage.contrib.django",
    "batchpage.contrib.prometheus",
    "batchpage.contrib.otel",
]


def public_names(module: str) -> list[str]:
    names: list[str] = importlib.import_module(module).__all__
    return names


def public_members(cls: type) -> list[str]:
    """The methods and properties a class defines itself (enum values and fields aside)."""
    members = []
    for name, value in vars(cls).items():
        if name.startswith("_"):
            continue
        if isinstance(cls, enum.EnumMeta) and name in cls.__members__:
            continue
        if isinstance(value, staticmethod | classmethod | property) or inspect.isfunction(value):
            members.append(name)
    return members


def own_doc(value: object) -> str | None:
    if isinstance(value, staticmethod | classmethod):
        value = value.__func__
    if isinstance(value, property):
        value = value.fget
    if inspect.isclass(value):
        doc = vars(value).get("__doc__")
        return doc if isinstance(doc, str) else None
    return getattr(value, "__doc__", None)


def comment_doc(name: str) -> list[str]:
    """The ``#:`` comment above ``name`` in the batchpage module that assigns it."""
    for module in sorted(m for m in sys.modules if m.startswith("batchpage")):
        try:
            docs = ModuleAnalyzer.for_module(module).find_attr_docs()
        except PycodeError:
            continue
        if any(line.strip() for line in docs.get(("", name), [])):
            return list(docs[("", name)])
    return []


@functools.cache
def documented_in_api() -> tuple[set[str], dict[str, bool]]:
    """The names docs/api.md documents, and for each class whether all its members come too."""
    names: set[str] = set()
    all_members: dict[str, bool] = {}
    current: str | None = None
    lines = API.read_text().splitlines()
    for i, line in enumerate(lines):
        match = re.match(r"^(\s*)\.\. auto(\w+):: (\S+)", line)
        if match is None:
            continue
        indent, kind, target = match.groups()
        if indent:  # a member, nested in its class's directive
            assert current is not None, f"api.md:{i + 1}: {target} is nested in no class"
            names.add(f"{current}.{target}")
            continue
        names.add(target)
        if kind in {"class", "exception"}:
            current = target
            options = []
            for following in lines[i + 1 :]:
                if not following.startswith("   :"):
                    break
                options.append(following.strip())
            all_members[target] = ":no-members:" not in options
        else:
            current = None
    return names, all_members


def everything() -> list[tuple[str, str]]:
    """(module, name) of every public name, methods as ``Class.method``."""
    out = []
    for module in MODULES:
        mod = importlib.import_module(module)
        for name in public_names(module):
            out.append((module, name))
            obj = getattr(mod, name)
            if inspect.isclass(obj):
                out.extend((module, f"{name}.{member}") for member in public_members(obj))
    return out


def lookup(module: str, dotted: str) -> object:
    obj: object = importlib.import_module(module)
    parts = dotted.split(".")
    for part in parts[:-1]:
        obj = getattr(obj, part)
    return vars(obj)[parts[-1]] if len(parts) > 1 else getattr(obj, parts[-1])


PUBLIC = everything()
IDS = [f"{module}:{name}" for module, name in PUBLIC]


@pytest.mark.parametrize(("module", "name"), PUBLIC, ids=IDS)
def test_every_public_name_has_a_docstring(module: str, name: str) -> None:
    """A function, class, method or property says what it is for; a data name has #: text."""
    obj = lookup(module, name)
    if callable(obj) or isinstance(obj, property | staticmethod | classmethod):
        doc = own_doc(obj) or ""
    else:
        doc = "\n".join(comment_doc(name))
    assert doc.strip(), f"{module}.{name} has no docstring"


@pytest.mark.parametrize(("module", "name"), PUBLIC, ids=IDS)
def test_every_public_name_is_in_the_api_reference(module: str, name: str) -> None:
    """docs/api.md names it, or documents its class with all members."""
    names, all_members = documented_in_api()
    full = f"{module}.{name}"
    if full in names:
        return
    owner = full.rpartition(".")[0]
    message = f"{full} is not in docs/api.md: add it where a reader would look for it"
    assert "." in name, message
    assert all_members.get(owner), message


def test_every_module_is_introduced_in_the_api_reference() -> None:
    """Each public module's docstring heads its part of the reference."""
    names, _ = documented_in_api()
    for module in [*MODULES, "batchpage.contrib"]:
        assert module in names, f"docs/api.md has no automodule for {module}"


def test_the_api_reference_documents_nothing_private() -> None:
    """No name in docs/api.md has a private part (it would not be found by users)."""
    names, _ = documented_in_api()
    private = sorted(n for n in names if any(p.startswith("_") for p in n.split(".")))
    assert not private
