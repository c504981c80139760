"""The public surface is exactly what ``__all__`` says, and says ``batchpage.X``."""

import batchpage


def test_all_is_sorted_and_complete() -> None:
    """Every public name is exported, sorted, and nothing private leaks."""
    exported = set(batchpage.__all__)
    public = {n for n in dir(batchpage) if not n.startswith("_")} - {"contrib", "extend"}
    assert exported == public
    assert batchpage.__all__ == sorted(batchpage.__all__, key=lambda n: (not n.isupper(), n))


def test_exported_classes_report_the_package_module() -> None:
    """Reprs and docs show ``batchpage.Section``, not the private module."""
    for name in batchpage.__all__:
        obj = getattr(batchpage, name)
        if isinstance(obj, type):
            assert obj.__module__ == "batchpage", name


def test_core_imports_no_web_framework_or_driver() -> None:
    """Importing the core pulls in neither FastAPI, Django, pymongo nor redis."""
    import subprocess
    import sys

    code = (
        "import sys, batchpage; "
        "bad = [m for m in ('fastapi','django','starlette','pymongo','redis') if m in sys.modules];"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_core_imports_only_its_declared_dependencies() -> None:
    """Every module-level import of the core is the stdlib, batchpage, or a declared dependency.

    A package that happens to be installed beside batchpage (sniffio came with
    httpx) must not stand in for one a user's ``pip install batchpage`` lacks.
    """
    import ast
    import sys
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    declared = {
        d.split(">")[0].split("=")[0].split("[")[0].strip() for d in project["dependencies"]
    }
    allowed = set(sys.stdlib_module_names) | declared | {"batchpage"}
    offenders = []
    for path in sorted((root / "src" / "batchpage").glob("*.py")):
        for node in ast.parse(path.read_text()).body:  # module level only: lazy imports are opt-in
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] not in allowed]
    assert offenders == []


def test_extension_points_live_in_batchpage_extend() -> None:
    """The protocols and types a backend builds on are apart from the everyday names."""
    import batchpage.extend

    everyday = set(batchpage.__all__)
    extend = set(batchpage.extend.__all__)
    assert extend == {n for n in dir(batchpage.extend) if not n.startswith("_")} - {"annotations"}
    assert batchpage.extend.__all__ == sorted(batchpage.extend.__all__)
    assert everyday.isdisjoint(extend)
    assert {"Cache", "Entry", "Serializer", "KeyBuilder"} <= extend
    assert {"Attempt", "CircuitBreaker"}.isdisjoint(everyday | extend)  # internals stay private
    for name in batchpage.extend.__all__:
        obj = getattr(batchpage.extend, name)
        if isinstance(obj, type):
            assert obj.__module__ == "batchpage.extend", name


def _import_without(blocked: str, statement: str) -> str:
    """Run ``statement`` in a fresh interpreter where ``blocked`` cannot be imported."""
    import subprocess
    import sys

    code = f"import sys; sys.modules[{blocked!r}] = None\n{statement}"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode != 0
    return out.stderr.strip().splitlines()[-1]


def test_a_missing_extra_is_named() -> None:
    """Using an optional part without its extra says which extra to install."""
    assert _import_without("starlette", "import batchpage.contrib.fastapi").endswith(
        "batchpage.contrib.fastapi needs starlette: pip install 'batchpage[fastapi]'"
    )
    assert _import_without("django", "import batchpage.contrib.django").endswith(
        "batchpage.contrib.django needs django: pip install 'batchpage[django]'"
    )
    redis = "import batchpage; batchpage.RedisCache.from_url('redis://127.0.0.1:1')"
    assert _import_without("redis", redis).endswith(
        "RedisCache needs redis: pip install 'batchpage[redis]'"
    )
